"""What a run reports: metrics.jsonl, metrics.csv and TensorBoard, a progress bar, and MFU.

Every logged step becomes one JSON object appended to `OUTPUT_DIR/metrics.jsonl` (`step`, `loss`,
`lr`, `tokens`, `tokens_per_s`, ... and `val_loss`/`val_ppl` on evaluation steps), the same row in
`metrics.csv` (the header grows when a new column appears) and scalars in
`OUTPUT_DIR/tensorboard`. On resume from step S, rows after S — logged by the interrupted run
after its last checkpoint — are dropped, so the files read as one uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from llama2.atomic import write_text
from llama2.model.config import ModelArgs
from llama2.progress import ProgressBar

JSONL_FILE = "metrics.jsonl"
CSV_FILE = "metrics.csv"

# Dense peak FLOP/s per GPU by (name fragment, precision), from the vendors' data sheets; the first
# fragment found in `torch.cuda.get_device_name()` wins, so more specific names come first.
GPU_PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    ("H200", {"bfloat16": 989e12, "float32": 67e12}),
    ("H100 PCIe", {"bfloat16": 756e12, "float32": 51e12}),
    ("H100", {"bfloat16": 989e12, "float32": 67e12}),
    ("A100", {"bfloat16": 312e12, "float32": 19.5e12}),
    ("A10G", {"bfloat16": 70e12, "float32": 31.2e12}),
    ("L40S", {"bfloat16": 362e12, "float32": 91.6e12}),
    ("L4", {"bfloat16": 121e12, "float32": 30.3e12}),
    ("RTX 4090", {"bfloat16": 165e12, "float32": 82.6e12}),
    ("RTX 3090", {"bfloat16": 71e12, "float32": 35.6e12}),
    ("V100", {"float32": 15.7e12}),
    ("T4", {"float32": 8.1e12}),
]


def flops_per_token(args: ModelArgs, seq_len: int) -> float:
    """Training FLOPs per token: 6 per matmul weight (forward 2, backward 4) plus attention.

    The input embedding is a lookup, so it is left out of N; the attention term counts QK^T and
    AV for a full (unmasked) context, `6 * 2 * n_layers * n_heads * head_dim * seq_len`, as in
    PaLM's appendix B and nanoGPT's `estimate_mfu`.
    """
    matmul_params = args.n_params() - args.vocab_size * args.dim
    attention = 12 * args.n_layers * args.n_heads * args.head_dim * seq_len
    return 6 * matmul_params + attention


def device_peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The device's dense peak FLOP/s at `dtype`, when it is a GPU we know; None otherwise."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    precision = "bfloat16" if dtype == torch.bfloat16 else "float32"
    for fragment, peaks in GPU_PEAK_FLOPS:
        if fragment in name:
            return peaks.get(precision)
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float | None, world_size: int = 1) -> float | None:
    """Model FLOPs utilisation: achieved over `world_size * peak_flops`; None without a peak."""
    if not peak_flops:
        return None
    return tokens_per_s * flops_per_token / (peak_flops * world_size)


class MetricsLogger:
    """Appends records to metrics.jsonl / metrics.csv / TensorBoard (only the main rank writes)."""

    def __init__(self, output_dir: Path, *, resume_step: int, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.jsonl_path, self.csv_path = output_dir / JSONL_FILE, output_dir / CSV_FILE
        self.columns: list[str] = []
        self.writer = None
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        records = _read_records(self.jsonl_path, resume_step)
        write_text(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in records))
        self.columns = _columns(records)
        write_text(self.csv_path, _csv_text(self.columns, records))
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=resume_step + 1)

    def log(self, record: dict[str, Any]) -> None:
        """Write one record (it must have `step`); None values are left out of it."""
        if not self.enabled:
            return
        record = {key: value for key, value in record.items() if value is not None}
        with self.jsonl_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        new = [key for key in record if key not in self.columns]
        if new:
            self.columns += new
            write_text(self.csv_path, _csv_text(self.columns, _read_records(self.jsonl_path, math.inf)))
        else:
            with self.csv_path.open("a", newline="") as f:
                csv.DictWriter(f, self.columns, lineterminator="\n").writerow(record)
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key.replace("val_", "val/", 1) if key.startswith("val_") else f"train/{key}",
                                           value, record["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressDisplay:
    """The training bar (steps, rate, ETA, then loss and tokens/s) on a terminal; one plain line per
    log step otherwise."""

    def __init__(self, *, total: int, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = ProgressBar("train", total, unit="steps", enabled=enabled, completed=start, fields=("stats",)).start()

    def update(self, step: int, record: dict[str, Any] | None) -> None:
        """Advance to `step` (1-based count of finished steps); `record` refreshes the numbers shown."""
        if not self.enabled:
            return
        stats = _summary(record) if record else None
        if self.bar.live:
            self.bar.update(step, **({"stats": stats} if stats else {}))
            if stats and "val_loss" in record:  # evaluations stay on screen above the bar
                self.bar.print(f"step {record['step']}: {stats}")
        elif stats:
            print(f"step {record['step']}: {stats}", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if self.enabled:
            self.bar.print(text)

    def close(self) -> None:
        self.bar.close()


class Stopwatch:
    """Tokens per second over the steps since the last `lap`, leaving out paused spans (eval, saves)."""

    def __init__(self) -> None:
        self.start, self.paused, self.tokens = time.perf_counter(), 0.0, 0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def pause(self) -> "_Pause":
        return _Pause(self)

    def lap(self) -> float:
        now = time.perf_counter()
        rate = self.tokens / max(now - self.start - self.paused, 1e-9)
        self.start, self.paused, self.tokens = now, 0.0, 0
        return rate


class _Pause:
    def __init__(self, watch: Stopwatch) -> None:
        self.watch = watch

    def __enter__(self) -> None:
        self.begin = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.watch.paused += time.perf_counter() - self.begin


def _summary(record: dict[str, Any]) -> str:
    parts = [f"loss {record['loss']:.4f}"] if "loss" in record else []
    if "val_loss" in record:
        parts.append(f"val {record['val_loss']:.4f}")
    if "tokens_per_s" in record:
        parts.append(f"{record['tokens_per_s']:,.0f} tok/s")
    if record.get("mfu") is not None:
        parts.append(f"MFU {100 * record['mfu']:.1f}%")
    return " | ".join(parts)


def _read_records(path: Path, up_to_step: float) -> list[dict[str, Any]]:
    """Complete records with `step <= up_to_step` (a line cut off by a kill is dropped)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", math.inf) <= up_to_step:
            records.append(record)
    return records


def _columns(records: list[dict[str, Any]]) -> list[str]:
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(record))
    return list(columns)


def _csv_text(columns: list[str], records: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    if columns:
        writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


