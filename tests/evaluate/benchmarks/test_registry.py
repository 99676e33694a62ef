"""Task names, data folders, and the fair `--limit` shared by grouped tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama2.errors import ConfigError, DataError
from llama2.evaluate.benchmarks import BENCHMARKS, data_dir_for, default_data_dir, get_task
from llama2.evaluate.benchmarks.loading import take_per_group


def test_every_benchmark_is_a_fresh_task_of_its_name():
    assert set(BENCHMARKS) == {"mmlu", "gsm8k", "bbh", "humaneval"}
    for name in BENCHMARKS:
        task = get_task(name)
        assert task.name == name and task.metrics and task is not get_task(name)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown task 'mmlu5'; choose from mmlu, gsm8k, bbh, humaneval or evals:"):
        get_task("mmlu5")


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMA2_DATA_DIR", str(tmp_path))
    assert default_data_dir("mmlu") == tmp_path / "mmlu" == data_dir_for("mmlu")
    monkeypatch.delenv("LLAMA2_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir("bbh") == Path(tmp_path / "home" / ".cache" / "llama2" / "data" / "bbh")


def test_data_dir_option_is_a_parent_or_the_folder_itself(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    assert data_dir_for("gsm8k", tmp_path) == tmp_path / "gsm8k"
    assert data_dir_for("mmlu", tmp_path) == tmp_path
    assert data_dir_for("evals:/x/y/eval.yaml#a", tmp_path) == Path("/x/y")


def test_missing_default_data_says_how_to_fetch(monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMA2_DATA_DIR", str(tmp_path))
    for name in BENCHMARKS:
        with pytest.raises(DataError, match=f"run `llama2 data fetch {name}` or pass --data-dir"):
            get_task(name).load(data_dir_for(name))


def test_take_per_group_round_robin():
    groups = {"a": [1, 2, 3], "b": [4], "c": [5, 6]}
    assert take_per_group(groups, None) == groups
    assert take_per_group(groups, 2) == {"a": [1], "b": [4]}
    assert take_per_group(groups, 5) == {"a": [1, 2], "b": [4], "c": [5, 6]}
    assert take_per_group(groups, 100) == groups
    assert take_per_group(groups, 0) == {}
    with pytest.raises(DataError, match="--limit"):
        take_per_group(groups, -1)
