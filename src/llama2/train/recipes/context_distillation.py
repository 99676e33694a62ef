"""Safety context distillation (Llama 2 §4.2.4; LLAMA2.md §6.2): `llama2 train context-distillation`.

1. For each adversarial prompt (`data`; records tagged `"safety": false` are skipped), draw a safety
   preprompt (`safety_preprompts`: a template with adjectives such as "responsible", "respectful",
   "wise", plus the answer template of the prompt's risk category with `answer_templates`).
2. Sample the answer WITH the preprompt (in the system message or before the user turn:
   `placement`), and, independently, the model's own answer WITHOUT it.
3. Targeted CD (`targeted: true`, the paper's): keep the preprompted answer only where the safety
   reward model scores it higher than the answer without the preprompt (by more than `min_gain`).
   Context distillation helps answers that scored low but can hurt ones that scored high (vague
   answers, false refusals; the paper's Figure 16b). With `targeted: false` every answer is kept.
4. Fine-tune `init` on the kept answers WITHOUT the preprompt (prompt -> answer), as SFT.

Output: OUTPUT_DIR/cd/samples.jsonl (each prompt, its preprompt, both answers and scores, and
whether it was kept), cd/summary.json (how many were kept), cd/distilled.jsonl (the SFT data),
then the SFT run in OUTPUT_DIR (`checkpoints/`, `metrics.jsonl`, `model/`). Answers that cannot be
training targets (empty, cut off by `max_new_tokens`, holding a chat-format tag) are never kept.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from llama2.atomic import write_text
from llama2.data.rl_prompts import RLPrompt
from llama2.errors import ConfigError, DataError
from llama2.model.reward import RewardModel
from llama2.progress import ProgressBar
from llama2.train.distributed import Runtime, barrier
from llama2.train.loop import TrainResult
from llama2.train.recipes.sampled_sft import (
    SampledSFT,
    SampledSFTConfig,
    reward_model_problems,
    sft_record,
    trainable,
    write_jsonl,
)
from llama2.train.rewards import Scorer
from llama2.train.rollouts import Response, gather_objects, sample_responses, shard
from llama2.train.safety_preprompts import draw_preprompt, with_preprompt
from llama2.types import SamplingParams

CD_DIR = "cd"


@dataclass(kw_only=True)
class ContextDistillationConfig(SampledSFTConfig):
    """Context-distillation keys on top of the SFT and sampling keys; `data` holds adversarial prompts."""

    safety_reward_model: str | None = None
    placement: Literal["system", "user"] = "system"
    answer_templates: bool = True
    targeted: bool = True
    min_gain: float = 0.0
    temperature: float = 0.6
    top_p: float = 0.9

    def problems(self, world_size: int) -> list[str]:
        found = super().problems(world_size) + reward_model_problems("safety_reward_model", self.safety_reward_model)
        if self.temperature < 0:
            found.append(f"temperature must be 0 (greedy) or more, got {self.temperature}")
        if self.min_gain < 0:
            found.append(f"min_gain must be 0 or more, got {self.min_gain}")
        return found


@dataclass(frozen=True)
class Distilled:
    """One adversarial prompt's outcome: both answers, their safety scores, and whether it is kept."""

    prompt: RLPrompt
    preprompt: str
    with_preprompt: Response
    without: Response
    score_with: float
    score_without: float
    kept: bool

    def to_record(self) -> dict[str, Any]:
        return {**self.prompt.to_dict(), "preprompt": self.preprompt, "kept": self.kept,
                "with_preprompt": {"text": self.with_preprompt.text, "finished": self.with_preprompt.finished,
                                   "score": self.score_with},
                "without": {"text": self.without.text, "finished": self.without.finished, "score": self.score_without}}


def keep(answer: Response, score_with: float, score_without: float, *, targeted: bool, min_gain: float) -> bool:
    """Whether a preprompted answer becomes training data: it can be a target, and — targeted — the
    safety reward model prefers it to the answer without the preprompt by more than `min_gain`."""
    usable = answer.finished and trainable(answer.text)
    return usable and (not targeted or score_with - score_without > min_gain)


class ContextDistillation(SampledSFT):
    """The context-distillation driver (see the module docstring)."""

    Config = ContextDistillationConfig
    name = "context-distillation"
    config: ContextDistillationConfig

    def __init__(self, config: ContextDistillationConfig, *, scorer: Scorer | None = None) -> None:
        """`scorer` replaces the config's safety reward model (a scripted one, in tests)."""
        super().__init__(config)
        if scorer is None and config.safety_reward_model is None:
            raise ConfigError("context distillation needs the safety reward model: set safety_reward_model "
                              "(a folder from `llama2 train reward recipes/reward-safety-tiny.yaml`, say)")
        self.scorer = scorer

    def _run(self, runtime: Runtime) -> TrainResult:
        config, folder = self.config, Path(self.config.output_dir) / CD_DIR
        data = folder / "distilled.jsonl"
        if not data.is_file():
            prompts = self._prompts(config.data, safety=True)
            adversarial = [p for p in prompts if p.safety]
            if not adversarial:
                raise DataError("no prompt of data is adversarial (all are tagged \"safety\": false); context "
                                "distillation applies only to adversarial prompts")
            outcomes = gather_objects([o.to_record() for o in self._distil(adversarial, runtime)], runtime)
            if runtime.is_main:
                self._report(folder, outcomes, skipped=len(prompts) - len(adversarial))
            kept = [o for o in outcomes if o["kept"]]
            if not kept:  # on every rank: each has all outcomes
                raise DataError(f"context distillation kept none of {len(outcomes)} answers (see {folder / 'samples.jsonl'}): "
                                "nothing to fine-tune on; check the safety reward model, or lower min_gain")
            if runtime.is_main:  # last, as it marks the stage done
                write_jsonl(data, [distilled_record(o) for o in kept])
            barrier(runtime)
        return self._fine_tune(data, config.init, Path(config.output_dir), runtime)

    def _distil(self, prompts: list[RLPrompt], runtime: Runtime) -> list[Distilled]:
        """This rank's share of the prompts, each answered with and without its preprompt and scored."""
        config = self.config
        mine = shard(len(prompts), runtime)
        local = [prompts[i] for i in mine]
        preprompts = [draw_preprompt(random.Random(f"{config.seed}:{i}"), prompts[i].category, templates=config.answer_templates)
                      for i in mine]
        contexts = [RLPrompt(p.id, with_preprompt(p.messages, text, placement=config.placement), p.category, p.safety)
                    for p, text in zip(local, preprompts)]
        if runtime.is_main:
            print(f"{self.name}: answering {len(prompts)} adversarial prompts with and without a safety preprompt",
                  file=sys.stderr, flush=True)
        llama = self._sampler(config.init, runtime)
        params = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p)
        answers = {}
        for index, (label, dialogs) in enumerate((("with preprompt", contexts), ("without", local))):
            with ProgressBar(f"sampling {label}", len(dialogs), unit="prompts", enabled=runtime.is_main) as bar:
                answers[label] = [group[0] for group in sample_responses(
                    llama.engine, self._encode(llama, dialogs), k=1, params=params, seed_key=(config.seed, index),
                    prompt_numbers=list(mine), advance=bar.advance)]
        del llama
        if runtime.device.type == "cuda":
            torch.cuda.empty_cache()
        scorer = self._scorer(runtime)
        originals = [p.messages for p in local]  # both answers are judged as answers to the prompt as the user wrote it
        score_with, score_without = (
            scorer.score_batch(originals, [a.text for a in answers[label]], batch_size=config.reward_batch_size)
            for label in ("with preprompt", "without"))
        return [Distilled(p, text, a, b, s, t, keep(a, s, t, targeted=config.targeted, min_gain=config.min_gain))
                for p, text, a, b, s, t in zip(local, preprompts, answers["with preprompt"], answers["without"],
                                               score_with, score_without)]

    def _scorer(self, runtime: Runtime) -> Scorer:
        if self.scorer is None:
            assert self.config.safety_reward_model is not None  # checked in __init__
            self.scorer = RewardModel.from_pretrained(self.config.safety_reward_model, device=runtime.device)
        return self.scorer

    def _report(self, folder: Path, outcomes: list[dict[str, Any]], *, skipped: int) -> None:
        """samples.jsonl (every outcome) and summary.json (how many were kept, mean scores and gains)."""
        kept = [o for o in outcomes if o["kept"]]
        write_jsonl(folder / "samples.jsonl", outcomes)
        gains = [o["with_preprompt"]["score"] - o["without"]["score"] for o in outcomes]
        summary = {"adversarial_prompts": len(outcomes), "kept": len(kept), "skipped_not_adversarial": skipped,
                   "targeted": self.config.targeted, "min_gain": self.config.min_gain,
                   "mean_score_with_preprompt": _mean([o["with_preprompt"]["score"] for o in outcomes]),
                   "mean_score_without": _mean([o["without"]["score"] for o in outcomes]),
                   "mean_gain": _mean(gains), "mean_gain_kept": _mean([g for g, o in zip(gains, outcomes) if o["kept"]])}
        write_text(folder / "summary.json", json.dumps(summary, indent=2) + "\n")
        print(f"{self.name}: kept {len(kept)} of {len(outcomes)} preprompted answers"
              + (" (where the safety reward model preferred them)" if self.config.targeted else "")
              + (f"; {skipped} prompts not tagged adversarial were skipped" if skipped else ""), file=sys.stderr, flush=True)


def distilled_record(outcome: dict[str, Any]) -> dict[str, Any]:
    """The SFT record of a kept outcome: the prompt as the user wrote it, answered by the preprompted answer."""
    prompt = RLPrompt(outcome["id"], outcome["messages"], outcome["category"], outcome["safety"])
    gain = outcome["with_preprompt"]["score"] - outcome["without"]["score"]
    return sft_record(prompt, outcome["with_preprompt"]["text"], preprompt=outcome["preprompt"], gain=gain)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
