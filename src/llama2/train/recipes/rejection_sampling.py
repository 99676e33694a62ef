"""Rejection-sampling fine-tuning (Llama 2 §3.2.3; LLAMA2.md §5.1): `llama2 train rejection-sampling`.

Each iteration i = 1..`iterations`:
1. sample `k` answers per prompt from the latest model (iteration 1: `init`) at `temperature` —
   one number, or a schedule with one per iteration;
2. score them with the helpfulness reward model, and with `safety_reward_model` by the rule PPO
   uses (`train.rewards`): the safety score for prompts tagged unsafe (those of `safety_data`) or
   whose safety score says unsafe (σ < `safety_threshold`), else the helpfulness score;
3. keep each prompt's best answer and pool it with the earlier iterations': a prompt's target is
   the best answer of all iterations so far (`best_of.Pool`), the paper's fix for regressions;
4. fine-tune on the pool as SFT (the SFT keys), from the latest model (`finetune_from: latest`,
   the paper's "we fine-tune our model") or from `init` every time (`finetune_from: init`).

Answers that cannot be training targets never win: empty ones, ones holding a chat-format tag, and
ones cut off by `max_new_tokens` (an EOS learned mid-sentence teaches stopping mid-sentence). They
are still scored and counted in the curves.

Output under OUTPUT_DIR/iteration-N/: `samples.jsonl` (each prompt with its K answers and their
scores), `reward_vs_k.csv` and `reward_vs_k.png` (the mean max and median reward among k answers,
k = 1..K, the paper's Figure 7), `pool.jsonl` (the SFT data), and the SFT run (`checkpoints/`,
`metrics.jsonl`, `model/`). OUTPUT_DIR/reward_vs_k.png draws every iteration's curves together and
OUTPUT_DIR/model links to the last iteration's model. The paper does not state K (its figures sweep
1..100) nor the temperatures, beyond T ∈ [1.2, 1.3] being best for 10-100 samples from the RLHF
model, and moving as RLHF proceeds — hence a schedule.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from llama2.data.rl_prompts import RLPrompt
from llama2.errors import ConfigError, DataError
from llama2.progress import ProgressBar
from llama2.train.best_of import Candidate, Pool, best_candidate, plot, reward_vs_k, write_table
from llama2.train.distributed import Runtime, barrier
from llama2.train.loop import TrainResult
from llama2.train.recipes.finetune import FINAL_DIR
from llama2.train.recipes.sampled_sft import (
    SampledSFT,
    SampledSFTConfig,
    optional_data_problems,
    read_jsonl,
    reward_model_problems,
    sft_record,
    trainable,
    write_jsonl,
)
from llama2.train.rewards import RewardFunction
from llama2.train.rollouts import gather_objects, sample_responses, shard
from llama2.types import SamplingParams

SAMPLES_FILE = "samples.jsonl"
POOL_FILE = "pool.jsonl"


@dataclass(kw_only=True)
class RejectionSamplingConfig(SampledSFTConfig):
    """Rejection-sampling keys on top of the SFT and sampling keys; `data` (and `safety_data`) are prompts."""

    reward_model: str | None = None
    safety_reward_model: str | None = None
    safety_data: str | list[Any] | dict[str, Any] | None = None
    safety_threshold: float = 0.15
    iterations: int = 1
    k: int = 4
    temperature: float | list[Any] = 1.0
    finetune_from: Literal["latest", "init"] = "latest"

    def temperatures(self) -> list[float]:
        """The temperature of each iteration."""
        if isinstance(self.temperature, list):
            return [float(t) for t in self.temperature]
        return [float(self.temperature)] * self.iterations

    def problems(self, world_size: int) -> list[str]:
        found = super().problems(world_size) + optional_data_problems("safety_data", self.safety_data)
        found += reward_model_problems("reward_model", self.reward_model)
        found += reward_model_problems("safety_reward_model", self.safety_reward_model)
        if self.iterations < 1 or self.k < 1:
            found.append(f"iterations and k must be at least 1, got {self.iterations} and {self.k}")
        if not 0.0 < self.safety_threshold < 1.0:
            found.append(f"safety_threshold is a probability in (0, 1), got {self.safety_threshold}")
        numbers = all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in self.temperature) \
            if isinstance(self.temperature, list) else True
        if isinstance(self.temperature, list) and (len(self.temperature) != self.iterations or not numbers):
            found.append(f"temperature must be one number or a list of {self.iterations} numbers (one per iteration), "
                         f"got {self.temperature!r}")
        elif any(t <= 0 for t in self.temperatures()):
            found.append(f"temperatures must be positive (K greedy answers would all be the same), got {self.temperature!r}")
        return found


class RejectionSampling(SampledSFT):
    """The rejection-sampling driver (see the module docstring)."""

    Config = RejectionSamplingConfig
    name = "rejection-sampling"
    config: RejectionSamplingConfig

    def __init__(self, config: RejectionSamplingConfig, *, reward: RewardFunction | None = None) -> None:
        """`reward` replaces the config's reward models (a scripted `RewardFunction`, in tests)."""
        super().__init__(config)
        if reward is None and config.reward_model is None:
            raise ConfigError("rejection sampling needs a reward model: set reward_model (a folder from `llama2 train reward`)")
        self.reward = reward

    def _run(self, runtime: Runtime) -> TrainResult:
        config, out = self.config, Path(self.config.output_dir)
        prompts = self._prompts(config.data, safety=False)
        if config.safety_data is not None:
            prompts += self._prompts(config.safety_data, safety=True)
        pool, curves, model = Pool(), {}, config.init
        result = None
        for iteration, temperature in enumerate(config.temperatures(), start=1):
            folder = out / f"iteration-{iteration}"
            records = self._samples(iteration, temperature, model, prompts, folder, runtime)
            curves[f"iteration {iteration}"] = rows = reward_vs_k([[s["reward"] for s in r["samples"]] for r in records])
            improved = update_pool(pool, records, iteration)
            if runtime.is_main:
                self._report(iteration, folder, rows, curves, pool, improved, len(records))
                write_jsonl(folder / POOL_FILE, pool_records(pool, records))
            barrier(runtime)
            init = model if config.finetune_from == "latest" else config.init
            result = self._fine_tune(folder / POOL_FILE, init, folder, runtime)
            model = folder / FINAL_DIR
        if runtime.is_main:
            link(out / FINAL_DIR, Path(f"iteration-{config.iterations}") / FINAL_DIR)
        assert result is not None
        return result

    def _samples(self, iteration: int, temperature: float, model: str | Path, prompts: list[RLPrompt], folder: Path,
                 runtime: Runtime) -> list[dict[str, Any]]:
        """Every prompt with its K scored answers: read back when this iteration already sampled,
        else sampled (each rank its share) and written by the main process."""
        path = folder / SAMPLES_FILE
        if path.is_file():
            return read_jsonl(path)
        config = self.config
        mine = shard(len(prompts), runtime)
        local = [prompts[i] for i in mine]
        if runtime.is_main:
            print(f"{self.name}: iteration {iteration}: sampling {config.k} answers to each of {len(prompts)} prompts "
                  f"at temperature {temperature:g} from {model}", file=sys.stderr, flush=True)
        llama = self._sampler(model, runtime)
        params = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=temperature, top_p=config.top_p)
        with ProgressBar(f"iteration {iteration}: sampling", len(local), unit="prompts", enabled=runtime.is_main) as bar:
            answers = sample_responses(llama.engine, self._encode(llama, local), k=config.k, params=params,
                                       seed_key=(config.seed, iteration), prompt_numbers=list(mine), advance=bar.advance)
        del llama
        if runtime.device.type == "cuda":
            torch.cuda.empty_cache()
        reward = self._reward_function(runtime)
        flat = [(p, a) for p, group in zip(local, answers) for a in group]
        scores = reward([p.messages for p, _ in flat], [a.text for _, a in flat], [p.safety for p, _ in flat])
        records = []
        for i, (prompt, group) in enumerate(zip(local, answers)):
            samples = []
            for j, answer in enumerate(group):
                n = i * config.k + j
                sample = {"text": answer.text, "finished": answer.finished, "reward": float(scores.combined[n]),
                          "helpful": float(scores.helpful[n])}
                if scores.safety is not None:
                    sample["safety"] = float(scores.safety[n])
                samples.append(sample)
            records.append({**prompt.to_dict(), "temperature": temperature, "samples": samples})
        records = gather_objects(records, runtime)
        if runtime.is_main:
            write_jsonl(path, records)
        barrier(runtime)
        return records

    def _reward_function(self, runtime: Runtime) -> RewardFunction:
        """The plugged reward function, or the config's reward models loaded onto this rank's device (once)."""
        config = self.config
        if self.reward is None:
            assert config.reward_model is not None  # checked in __init__
            self.reward = RewardFunction.from_paths(config.reward_model, config.safety_reward_model, device=runtime.device,
                                                    threshold=config.safety_threshold, batch_size=config.reward_batch_size)
        return self.reward

    def _report(self, iteration: int, folder: Path, rows: list[dict[str, float]], curves: dict, pool: Pool,
                improved: int, prompts: int) -> None:
        write_table(rows, folder / "reward_vs_k.csv")
        plot({f"iteration {iteration}": rows}, folder / "reward_vs_k.png", title=f"Reward against K, iteration {iteration}")
        plot(curves, Path(self.config.output_dir) / "reward_vs_k.png", title="Reward against K (Llama 2, Figure 7)")
        mean = sum(c.reward for c in pool.best.values()) / max(len(pool), 1)
        first, last = rows[0], rows[-1]
        print(f"{self.name}: iteration {iteration}: reward with k=1 median {first['median']:.3f}, with k={last['k']} "
              f"max {last['max']:.3f}; {improved} of {prompts} prompts got a better target; pool of {len(pool)}, "
              f"mean reward {mean:.3f}", file=sys.stderr, flush=True)


def prompt_key(record: dict[str, Any]) -> str:
    """A prompt's identity: its dialog (ids may repeat across files; dialogs are what is answered)."""
    return json.dumps(record["messages"], sort_keys=True, ensure_ascii=False)


def update_pool(pool: Pool, records: list[dict[str, Any]], iteration: int) -> int:
    """Offer each prompt's best trainable answer of this iteration to the pool; returns how many won."""
    improved = 0
    for record in records:
        key = prompt_key(record)
        candidates = (Candidate(key, s["text"], s["reward"], iteration, j) for j, s in enumerate(record["samples"])
                      if s["finished"] and trainable(s["text"]))
        best = best_candidate(candidates)
        improved += best is not None and pool.offer(best)
    return improved


def pool_records(pool: Pool, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pool as SFT `messages` records (in prompt order), each with its reward and iteration."""
    out = []
    for record in records:
        chosen = pool.best.get(prompt_key(record))
        if chosen is not None:
            prompt = RLPrompt(record["id"], record["messages"], record.get("category"), record.get("safety", False))
            out.append(sft_record(prompt, chosen.response, reward=chosen.reward, iteration=chosen.iteration))
    if not out:
        raise DataError("no sampled answer can be a training target (all empty, cut off by max_new_tokens or holding "
                        "chat-format tags); raise max_new_tokens or check the model and prompts")
    return out


def link(path: Path, target: Path) -> None:
    """Point the symlink `path` at `target` (relative), replacing an older link atomically."""
    tmp = path.with_name(f".{path.name}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, path)
