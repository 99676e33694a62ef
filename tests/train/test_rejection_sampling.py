"""Rejection sampling (LLAMA2.md §5.1): the argmax per prompt wins, pooled over iterations so a later
worse sample never replaces an earlier better one; the reward-vs-K curves equal brute force over
all k-subsets, their max never falls; the combined reward decides; a two-iteration run end to end."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from llama2.cli.main import main
from llama2.errors import ConfigError, DataError
from llama2.model.checkpoint import load_transformer
from llama2.train.best_of import Candidate, Pool, best_candidate, expected_max, expected_median, reward_vs_k
from llama2.train.config import load_config
from llama2.train.recipes.rejection_sampling import (
    RejectionSampling,
    RejectionSamplingConfig,
    pool_records,
    prompt_key,
    update_pool,
)
from llama2.train.rewards import RewardFunction

from .rlhf_helpers import PROMPTS, UNSAFE, ScriptedScorer, reward_folder, stopping_checkpoint, weights, write_prompts
from .torchrun import train_on_two_processes

REPO = Path(__file__).resolve().parents[2]


def record(messages_text: str, samples: list[tuple[str, float, bool]]) -> dict:
    return {"id": messages_text, "messages": [{"role": "user", "content": messages_text}],
            "samples": [{"text": t, "reward": r, "finished": f} for t, r, f in samples]}


# ---------------------------------------------------------------------------------------------- selection


def test_the_best_answer_of_each_prompt_wins_and_untrainable_ones_never_do():
    pool = Pool()
    records = [
        record("a", [("low", 0.1, True), ("best", 0.9, True), ("mid", 0.5, True)]),
        record("b", [("cut off but highest", 5.0, False), ("", 4.0, True), ("has [INST] in it", 3.0, True), ("ok", -1.0, True)]),
        record("c", [("", 1.0, True)]),  # nothing trainable: no target
    ]
    assert update_pool(pool, records, iteration=1) == 2
    assert {k: c.response for k, c in pool.best.items()} == {
        prompt_key(records[0]): "best", prompt_key(records[1]): "ok"}
    sft = pool_records(pool, records)
    assert [r["messages"][-1] for r in sft] == [{"role": "assistant", "content": "best"}, {"role": "assistant", "content": "ok"}]
    assert [r["reward"] for r in sft] == [0.9, -1.0]
    assert best_candidate([]) is None


def test_pooling_keeps_the_best_of_all_iterations():
    pool = Pool()
    update_pool(pool, [record("a", [("first", 0.8, True)]), record("b", [("first b", 0.1, True)])], iteration=1)
    update_pool(pool, [record("a", [("worse later", 0.3, True), ("tie", 0.8, True)]), record("b", [("better b", 0.7, True)])],
                iteration=2)
    best = {json.loads(k)[0]["content"]: (c.response, c.iteration) for k, c in pool.best.items()}
    assert best == {"a": ("first", 1), "b": ("better b", 2)}  # neither the worse sample nor the tie displaces iteration 1's
    assert pool.offer(Candidate("x", "new", float("-inf"), 3, 0)) and len(pool) == 3


def test_no_trainable_answer_at_all_is_a_clear_error():
    pool = Pool()
    records = [record("a", [("", 1.0, True), ("cut", 2.0, False)])]
    update_pool(pool, records, iteration=1)
    with pytest.raises(DataError, match="no sampled answer can be a training target"):
        pool_records(pool, records)


# ---------------------------------------------------------------------------------------------- Figure 7


def brute_force(rewards: list[float], k: int) -> tuple[float, float]:
    subsets = list(itertools.combinations(rewards, k))
    return float(np.mean([max(s) for s in subsets])), float(np.mean([np.median(s) for s in subsets]))


def test_reward_against_k_is_the_expectation_over_all_subsets_and_its_max_never_falls():
    rng = np.random.default_rng(0)
    per_prompt = [rng.normal(size=7).tolist() for _ in range(5)]
    rows = reward_vs_k(per_prompt)
    assert [r["k"] for r in rows] == list(range(1, 8))
    for row in rows:
        want = np.mean([brute_force(r, row["k"]) for r in per_prompt], axis=0)
        assert (row["max"], row["median"]) == pytest.approx(tuple(want), abs=1e-12)
    maxima = [r["max"] for r in rows]
    assert all(b >= a for a, b in zip(maxima, maxima[1:])) and maxima[-1] > maxima[0]
    assert rows[0]["max"] == pytest.approx(rows[0]["median"]) == pytest.approx(np.mean(per_prompt))
    assert rows[-1]["max"] == pytest.approx(np.mean([max(r) for r in per_prompt]))
    assert expected_max([3.0, 1.0, 2.0], 2) == pytest.approx((2 + 3 + 3) / 3)
    assert expected_median([4.0, 1.0, 2.0, 3.0], 2) == pytest.approx(np.mean([1.5, 2, 2.5, 2.5, 3, 3.5]))
    with pytest.raises(ValueError, match="same, positive number"):
        reward_vs_k([[1.0, 2.0], [1.0]])


# ---------------------------------------------------------------------------------------------- config


def test_temperature_schedule_and_keys_are_checked_whole(tmp_path, tiny_checkpoint):
    prompts = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    base = [f"init={tiny_checkpoint}", f"data={prompts}", f"output_dir={tmp_path / 'run'}", "max_steps=1"]
    config = load_config(RejectionSamplingConfig, None, [*base, "iterations=3", "temperature=[0.9,1.1,1.3]"])
    assert config.temperatures() == [0.9, 1.1, 1.3]
    assert load_config(RejectionSamplingConfig, None, [*base, "iterations=2"]).temperatures() == [1.0, 1.0]
    with pytest.raises(ConfigError) as error:
        load_config(RejectionSamplingConfig, None, [*base, "iterations=3", "temperature=[1.0,1.2]", "k=0",
                                                    "safety_data=missing.jsonl", "format=alpaca", f"reward_model={tmp_path}"])
    message = str(error.value)
    for part in ("list of 3 numbers", "k must be at least 1", "safety_data: missing.jsonl does not exist", "format does not apply",
                 "is not a reward model folder"):
        assert part in message


@pytest.mark.parametrize("name", ["rs-tiny", "rs-7b"])
def test_shipped_recipes_are_valid(name, tmp_path, tiny_checkpoint, tiny_tokenizer_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    rm = reward_folder(tmp_path / "rm", tiny_tokenizer_path)
    overrides = [f"output_dir={tmp_path}", f"data={prompts}", f"safety_data={prompts}", f"init={tiny_checkpoint}", "seq_len=256",
                 f"reward_model={rm}", f"safety_reward_model={rm}"]
    config = load_config(RejectionSamplingConfig, REPO / "recipes" / f"{name}.yaml", overrides, world_size=8 if "7b" in name else 1)
    assert config.reward_model and config.safety_reward_model and len(config.temperatures()) == config.iterations
    if "7b" in name:
        assert config.lr == 2e-5 and config.batch_size * config.grad_accum * 8 == 64  # SFT's settings (LLAMA2.md §3)


# ---------------------------------------------------------------------------------------------- end to end


def test_the_combined_reward_picks_the_target(tmp_path, tiny_tokenizer_path):
    """With a safety scorer, an unsafe-tagged prompt's target is the answer the safety score likes."""
    model = stopping_checkpoint(tmp_path / "model", tiny_tokenizer_path)
    data = write_prompts(tmp_path / "p.jsonl", PROMPTS[:1])
    unsafe = write_prompts(tmp_path / "u.jsonl", UNSAFE[:1])
    helpful = ScriptedScorer(lambda p, r: len(r))  # helpfulness likes long answers
    safe = ScriptedScorer(lambda p, r: 20.0 - 0.1 * len(r))  # safety likes short ones, and never finds one unsafe
    config = load_config(RejectionSamplingConfig, None, [
        f"init={model}", f"data={data}", f"safety_data={unsafe}", f"output_dir={tmp_path / 'run'}", "max_steps=1",
        "k=6", "max_new_tokens=12", "batch_size=2", "seq_len=128", "device=cpu", "dtype=float32", "tensorboard=false"])
    RejectionSampling(config, reward=RewardFunction(helpful, safe)).run()
    samples = [json.loads(line) for line in (tmp_path / "run" / "iteration-1" / "samples.jsonl").read_text().splitlines()]
    pool = {r["id"]: r for r in map(json.loads, (tmp_path / "run" / "iteration-1" / "pool.jsonl").read_text().splitlines())}
    for prompt in samples:
        eligible = [s for s in prompt["samples"] if s["finished"] and s["text"].strip()]
        chosen = pool[prompt["id"]]["messages"][-1]["content"]
        if prompt["safety"]:
            assert all(s["reward"] == s["safety"] for s in prompt["samples"])
            assert len(chosen) == min(len(s["text"]) for s in eligible)
        else:
            assert len(chosen) == max(len(s["text"]) for s in eligible)


def test_two_iterations_end_to_end_through_the_cli(tmp_path, tiny_tokenizer_path, capsys):
    model = stopping_checkpoint(tmp_path / "model", tiny_tokenizer_path)
    rm = reward_folder(tmp_path / "rm", tiny_tokenizer_path)
    data = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "run"
    argv = ["train", "rejection-sampling", f"init={model}", f"data={data}", f"reward_model={rm}", f"output_dir={out}",
            "iterations=2", "k=4", "temperature=[1.0,1.2]", "max_new_tokens=12", "max_steps=2", "batch_size=2",
            "seq_len=128", "lr=1e-3", "log_every=1", "tensorboard=false", "device=cpu", "dtype=float32", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == str(out / "model") and math.isfinite(summary["metrics"]["loss"])
    first, second = (out / f"iteration-{i}" for i in (1, 2))
    samples = [json.loads(line) for line in (second / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == len(PROMPTS) and all(len(s["samples"]) == 4 and s["temperature"] == 1.2 for s in samples)
    rows = (first / "reward_vs_k.csv").read_text().splitlines()
    assert rows[0] == "k,max,median" and len(rows) == 5
    assert (first / "reward_vs_k.png").read_bytes()[:4] == b"\x89PNG" and (out / "reward_vs_k.png").is_file()
    pools = [{r["id"]: r["reward"] for r in map(json.loads, (f / "pool.jsonl").read_text().splitlines())} for f in (first, second)]
    assert set(pools[0]) <= set(pools[1]) and all(pools[1][k] >= pools[0][k] for k in pools[0])  # pooled, never worse
    start, trained = weights(model), weights(second / "model")
    assert any(not torch.equal(start[k], trained[k]) for k in start)
    assert load_transformer(out / "model").args.n_layers == 2  # OUTPUT_DIR/model is the last iteration's

    assert main(argv) == 0  # everything is done: nothing is sampled or trained again
    assert json.loads(capsys.readouterr().out)["model"] == str(out / "model")


@pytest.mark.slow
def test_two_processes_sample_the_same_answers_and_fine_tune_under_fsdp(tmp_path, tiny_tokenizer_path):
    model = stopping_checkpoint(tmp_path / "model", tiny_tokenizer_path)
    rm = reward_folder(tmp_path / "rm", tiny_tokenizer_path)
    data = write_prompts(tmp_path / "prompts.jsonl", PROMPTS + UNSAFE)
    settings = [f"init={model}", f"data={data}", f"reward_model={rm}", "k=3", "max_new_tokens=12", "max_steps=2",
                "batch_size=1", "seq_len=128", "tensorboard=false", "device=cpu", "dtype=float32"]
    assert main(["train", "rejection-sampling", *settings, f"output_dir={tmp_path / 'single'}"]) == 0
    train_on_two_processes("rejection-sampling", [*settings, f"output_dir={tmp_path / 'fsdp'}"], timeout=600)
    single, sharded = ([json.loads(line) for line in (tmp_path / d / "iteration-1" / "samples.jsonl").read_text().splitlines()]
                       for d in ("single", "fsdp"))
    assert [[s["text"] for s in r["samples"]] for r in single] == [[s["text"] for s in r["samples"]] for r in sharded]
    assert (tmp_path / "fsdp" / "iteration-1" / "pool.jsonl").read_text() == (tmp_path / "single" / "iteration-1" / "pool.jsonl").read_text()
    assert load_transformer(tmp_path / "fsdp" / "model").args.n_layers == 2
