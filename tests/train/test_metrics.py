"""FLOPs and MFU arithmetic, and the metrics files across a resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from llama2.model.config import get_preset
from llama2.train.metrics import MetricsLogger, device_peak_flops, flops_per_token, mfu


def test_flops_per_token_counts_matmuls_and_attention() -> None:
    args = get_preset("7b")
    # 6 * (6,738,415,616 - 32000 * 4096 embedding lookups) + 12 * 32 layers * 4096 * 4096 positions.
    assert flops_per_token(args, 4096) == 6 * 6_607_343_616 + 12 * 32 * 4096 * 4096


def test_mfu_needs_a_peak() -> None:
    assert mfu(1000.0, 1e9, None) is None
    assert mfu(1000.0, 1e9, 4e12, world_size=2) == pytest.approx(0.125)
    assert device_peak_flops(torch.device("cpu"), torch.bfloat16) is None


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_csv_grows_a_column_when_a_new_metric_appears(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, resume_step=0, enabled=True, tensorboard=False)
    logger.log({"step": 1, "loss": 2.0})
    logger.log({"step": 2, "loss": 1.5, "val_loss": 1.7})
    logger.log({"step": 3, "loss": 1.2})
    rows = read_csv(tmp_path / "metrics.csv")
    assert rows == [{"step": "1", "loss": "2.0", "val_loss": ""}, {"step": "2", "loss": "1.5", "val_loss": "1.7"},
                    {"step": "3", "loss": "1.2", "val_loss": ""}]


def test_resume_drops_rows_after_the_checkpoint_and_cut_lines(tmp_path: Path) -> None:
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (1, 2, 3, 4)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 5, "lo')  # killed mid-write
    logger = MetricsLogger(tmp_path, resume_step=2, enabled=True, tensorboard=False)
    logger.log({"step": 3, "loss": 0.3})
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}, {"step": 3, "loss": 0.3}]
    assert [row["step"] for row in read_csv(tmp_path / "metrics.csv")] == ["1", "2", "3"]


def test_only_the_main_rank_writes(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, resume_step=0, enabled=False, tensorboard=True)
    logger.log({"step": 1, "loss": 1.0})
    logger.close()
    assert list(tmp_path.iterdir()) == []
