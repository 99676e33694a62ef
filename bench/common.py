"""Helpers shared by the benchmarks in bench/: the machine's description, waiting for a quiet
machine, counting other processes' CPU use during a measurement, peak memory, read bandwidth, and
a synthetic Llama-sized tokenizer for checkpoint formats that insist on one.

The benchmarks run on small shared machines (2 cores here), where another process's test run can
halve a figure; every measurement therefore records how busy the rest of the machine was.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

# ---------------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo (lscpu's source) gives it, else the platform's guess."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """One line for a results table: CPU model, cores, memory."""
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return f"{cpu_model()}, {os.cpu_count()} cores, {pages * page_size / 2**30:.0f} GiB RAM"


# ---------------------------------------------------------------------------------------------- quiet


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies summed over all CPUs since boot (/proc/stat's first line)."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(window_s: float = 1.0) -> float:
    """How many cores were busy, on average, over the next `window_s` seconds.

    Unlike `os.getloadavg()`, whose one-minute average still carries a benchmark's own worker a
    minute after it exited, this sees the machine as it is now.
    """
    busy0, total0 = _cpu_jiffies()
    time.sleep(window_s)
    busy1, total1 = _cpu_jiffies()
    return (os.cpu_count() or 1) * (busy1 - busy0) / max(1, total1 - total0)


def wait_until_quiet(
    max_busy: float = 0.3, max_wait_s: float = 300.0, log: Callable[[str], None] = print
) -> float:
    """Block until fewer than `max_busy` cores are busy (or `max_wait_s` passes); returns the busy
    cores last seen, so the caller can record how quiet the machine was."""
    deadline = time.monotonic() + max_wait_s
    busy = busy_cores()
    announced = False
    while busy > max_busy and time.monotonic() < deadline:
        if not announced:
            log(f"  waiting for a quiet machine: {busy:.1f} cores busy, load average {os.getloadavg()[0]:.1f}")
            announced = True
        time.sleep(4.0)
        busy = busy_cores()
    if busy > max_busy:
        log(f"  still {busy:.1f} cores busy after {max_wait_s:.0f} s; measuring anyway")
    return busy


class OtherLoad:
    """Context manager: how many cores other processes kept busy, on average, during the block
    (all CPU time in /proc/stat minus this process's own, every thread included). Read `.cores`
    after the block; 0.1 or more means the timing inside is suspect on a small machine."""

    cores: float = 0.0

    def __enter__(self) -> "OtherLoad":
        self._busy, _ = _cpu_jiffies()
        self._own = _own_cpu_s()
        self._start = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        wall = max(time.monotonic() - self._start, 1e-9)
        busy_s = (_cpu_jiffies()[0] - self._busy) / os.sysconf("SC_CLK_TCK")
        self.cores = max(0.0, (busy_s - (_own_cpu_s() - self._own)) / wall)


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_worker(argv: list[str], env: dict[str, str] | None = None) -> dict:
    """Run a benchmark child that prints one JSON object as its last stdout line; return it."""
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise RuntimeError(f"benchmark worker failed with exit code {done.returncode}: {shlex.join(argv)[:300]}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------- memory


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB: VmHWM from /proc/self/status.

    Not `getrusage(...).ru_maxrss`: Linux carries the parent's high-water mark into a child across
    fork + exec, so a benchmark child started by a parent holding a model would report the parent's.
    """
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub-markdown table with padded columns (readable in a terminal, pastable into a README);
    the first column is left-aligned, the rest right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells: list[str]) -> str:
        padded = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(":" + "-" * (w + 1) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def read_bandwidth_gbs(threads: int, size_mb: int = 512, repeats: int = 7) -> dict[str, float]:
    """Best-of-`repeats` read bandwidth in GB/s over an fp32 buffer of `size_mb` MB with `threads`
    threads, two ways: `sum` (`torch.sum`, a pure streaming reduction) and `gemv` (the buffer as a
    `(rows, 768)` matrix times one vector, the access pattern of decoding one token). The larger
    is the better estimate of what the memory system delivers to a decoder."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = torch.ones(size_mb * 10**6 // 4 // 768 * 768)
        matrix, vector = data.view(-1, 768), torch.ones(768)
        probes = {"sum": data.sum, "gemv": lambda: torch.mv(matrix, vector)}
        found = {}
        for name, probe in probes.items():
            probe()  # fault the pages in
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                probe()
                best = min(best, time.perf_counter() - start)
            found[name] = data.numel() * 4 / best / 1e9
        return found
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------- models


def paired_median(mine: list[float], theirs: list[float]) -> float:
    """The median over rounds of mine / theirs within each round: the machine's speed drifts between
    minutes on a shared host, so a ratio is only taken between runs of the same round."""
    return statistics.median(a / b for a, b in zip(mine, theirs))


def small_model_args(max_seq_len: int = 2048):
    """The ~20M benchmark shape: 20.8M parameters, 10 layers of dim 384 (6 heads of 64) and the
    bundled model's 4096-piece vocabulary, so text tokenizes as the bundled chat model's does."""
    from llama2.model.config import ModelArgs

    return ModelArgs(dim=384, n_layers=10, n_heads=6, vocab_size=4096, multiple_of=32, max_seq_len=max_seq_len)


def write_small_model(folder: Path, *, seed: int, std: float = 0.02, max_seq_len: int = 2048) -> int:
    """`small_model_args` with seeded random weights (N(0, `std`)) and the bundled tokenizer, saved
    as a Hugging Face folder by our converter; returns the parameter count."""
    import torch

    from llama2.api import Llama
    from llama2.model.checkpoint.loading import bundled_model_path
    from llama2.model.tokenizer import Tokenizer
    from llama2.model.transformer import Transformer

    model = Transformer(small_model_args(max_seq_len))
    model.init_weights(torch.Generator().manual_seed(seed), std=std)
    Llama(model, Tokenizer(str(bundled_model_path("default") / "tokenizer.model"))).save(folder, format="hf")
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------- against TRL


def recipe_optimizer_settings(lr: float) -> dict:
    """Our fine-tuning recipes' optimizer keys as the TRL comparisons set them: AdamW β 0.9/0.95,
    eps 1e-5, decay 0.1 on matrices, no warmup, cosine to 10% of `lr`, clip 1.0 (`trl_optimizer_settings`
    is the same in TRL's terms)."""
    return {"lr": lr, "warmup_steps": 0, "min_lr_ratio": 0.1, "weight_decay": 0.1, "betas": [0.9, 0.95],
            "eps": 1e-5, "grad_clip": 1.0}


def trl_optimizer_settings(lr: float) -> dict:
    """`recipe_optimizer_settings` as `transformers.TrainingArguments` keys (TRL's configs take them),
    with the fused AdamW kernel our loop uses and nothing but training in the timed steps."""
    return {"learning_rate": lr, "lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
            "warmup_steps": 0, "weight_decay": 0.1, "adam_beta1": 0.9, "adam_beta2": 0.95, "adam_epsilon": 1e-5,
            "optim": "adamw_torch_fused", "max_grad_norm": 1.0, "gradient_accumulation_steps": 1,
            "gradient_checkpointing": False, "dataloader_num_workers": 0, "eval_strategy": "no",
            "save_strategy": "no", "logging_steps": 1, "report_to": "none", "disable_tqdm": True}


def loop_metrics(output_dir: str | Path) -> list[dict]:
    """The records of our loop's metrics.jsonl (one per step with `log_every: 1`)."""
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]


class LoopStepTimer:
    """Wall and CPU time (`.seconds`, `.cpu_seconds`) of each step of our loop running `recipe`,
    measured like `trl_step_timer`: from the start of a step (the loop asks the recipe for its
    batches) to the start of the next, the last one to the final checkpoint save, which is not
    timed. Patches `recipe.batches` and the loop's `save_checkpoint`; `close()` undoes the latter."""

    def __init__(self, recipe) -> None:
        from llama2.train import loop

        self.marks: list[tuple[float, float]] = []
        self.checkpointing = loop.checkpointing
        self.save = save = loop.checkpointing.save_checkpoint
        batches = recipe.batches

        def timed_batches(*args, **kwargs):
            self.mark()
            return batches(*args, **kwargs)

        def timed_save(*args, **kwargs):
            self.mark()
            return save(*args, **kwargs)

        recipe.batches = timed_batches
        loop.checkpointing.save_checkpoint = timed_save

    def mark(self) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def close(self) -> None:
        self.checkpointing.save_checkpoint = self.save

    @property
    def seconds(self) -> list[float]:
        return [b[0] - a[0] for a, b in zip(self.marks, self.marks[1:])]

    @property
    def cpu_seconds(self) -> list[float]:
        return [b[1] - a[1] for a, b in zip(self.marks, self.marks[1:])]


def trl_step_timer():
    """A `transformers.TrainerCallback` whose `.seconds` lists each optimizer step's wall time (from
    the previous step's end, or the start of training) and `.cpu_seconds` this process's CPU time
    over the same span (all threads; less sensitive than wall time to other processes on a busy
    machine). Built on call: importing transformers costs seconds."""
    import transformers

    class StepTimer(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.cpu_seconds: list[float] = []
            self.last = self.last_cpu = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.last, self.last_cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            now, cpu = time.perf_counter(), time.process_time()
            self.seconds.append(now - self.last)
            self.cpu_seconds.append(cpu - self.last_cpu)
            self.last, self.last_cpu = now, cpu

    return StepTimer()


def recording_trainer(trainer_class: type) -> type:
    """`trainer_class` (a TRL trainer) keeping each step's exact loss in `.step_losses` (its logs round to 4 decimals)."""

    class Recording(trainer_class):
        step_losses: list[float]

        def training_step(self, *args, **kwargs):
            loss = super().training_step(*args, **kwargs)
            self.__dict__.setdefault("step_losses", []).append(loss.item())
            return loss

    Recording.__name__ = f"Recording{trainer_class.__name__}"
    return Recording


# ---------------------------------------------------------------------------------------------- tokenizer


def synthetic_sentencepiece(vocab_size: int = 32000) -> bytes:
    """A serialized Llama-style SentencePiece ModelProto of `vocab_size` pieces: <unk>, <s>, </s>,
    the 256 byte pieces <0x00>..<0xFF>, then placeholder pieces; BPE with byte fallback.

    It tokenizes nothing usefully; it exists because GGUF files and HF folders carry a vocabulary
    and benchmarks on random weights feed token ids directly.
    """
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    piece_type = sp_pb2.ModelProto.SentencePiece
    proto = sp_pb2.ModelProto()
    proto.trainer_spec.model_type = sp_pb2.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = vocab_size
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id, proto.trainer_spec.eos_id = 0, 1, 2
    proto.trainer_spec.pad_id = -1
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = False
    specials = [("<unk>", piece_type.UNKNOWN), ("<s>", piece_type.CONTROL), ("</s>", piece_type.CONTROL)]
    for text, kind in specials:
        proto.pieces.add(piece=text, score=0.0, type=kind)
    for byte in range(256):
        proto.pieces.add(piece=f"<0x{byte:02X}>", score=0.0, type=piece_type.BYTE)
    for i in range(vocab_size - len(proto.pieces)):
        proto.pieces.add(piece=f"\u2581p{i}", score=-float(i), type=piece_type.NORMAL)
    return proto.SerializeToString()


def source_version() -> str:
    """The git commit of the code measured, marked when src/ has uncommitted changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=root, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"
    return (commit or "unknown") + (" + uncommitted changes in src/" if dirty else "")
