"""What rejection sampling and safety context distillation share: answers sampled with the one
engine become SFT dialogs, and the SFT recipe fine-tunes on them on the one loop (LLAMA2.md §5.1,
§6.2).

These recipes drive the loop rather than plug into it: `run()` samples — every process its share of
the prompts, from a full copy of the model loaded on its device, so nothing is generated through
sharded layers — gathers the answers, writes the SFT data on the main process, and trains `SFT` on
it with `loop.train` (under torchrun: FSDP, as any recipe). Every stage writes into its own
folder and is skipped once complete, so running the same command again resumes: sampled data is
not sampled again, a finished fine-tuning is not repeated, an interrupted one continues from its
last checkpoint.

The SFT keys (`epochs`, `lr`, `batch_size`, `seq_len`, `lora.*`, `packing`, `system_prompt`, ...)
configure the fine-tuning stage; `data` names the prompts (`data.rl_prompts`), not dialogs.
`system_prompt` is used for sampling too, so the model is trained on the context it answered in.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama2.api import Llama
from llama2.atomic import write_text
from llama2.data.rl_prompts import RLPrompt, mix_prompts
from llama2.errors import DataError
from llama2.model.chat_format import SPECIAL_TAGS
from llama2.model.reward import is_reward_model
from llama2.train.checkpointing import latest_checkpoint
from llama2.train.distributed import Runtime, barrier, init_runtime, shutdown
from llama2.train.loop import TrainResult, compute_dtype, train
from llama2.train.recipes.finetune import FINAL_DIR, data_problems
from llama2.train.recipes.sft import SFT, SFTConfig
from llama2.train.rollouts import encode_prompts


@dataclass(kw_only=True)
class SampledSFTConfig(SFTConfig):
    """SFT keys for the fine-tuning stage, plus how answers are sampled and scored."""

    init: str = "default-chat"
    max_new_tokens: int = 128
    top_p: float = 1.0
    sample_batch_size: int = 16
    reward_batch_size: int = 16

    def problems(self, world_size: int) -> list[str]:
        found = super().problems(world_size)
        if self.format is not None:
            found.append("format does not apply here: data holds prompts, and the sampled dialogs are written as messages")
        if self.max_new_tokens < 1:
            found.append(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not 0.0 < self.top_p <= 1.0:
            found.append(f"top_p must lie in (0, 1], got {self.top_p}")
        for name in ("sample_batch_size", "reward_batch_size"):
            if getattr(self, name) < 1:
                found.append(f"{name} must be at least 1, got {getattr(self, name)}")
        return found


def optional_data_problems(key: str, value: Any) -> list[str]:
    return [] if value is None else data_problems(key, value)


def reward_model_problems(key: str, path: str | None) -> list[str]:
    """What is wrong with a reward-model key: a path that is not a reward model folder."""
    if path is None or is_reward_model(path):
        return []
    return [f"{key}: {path} is not a reward model folder; train one with `llama2 train reward` (its OUTPUT_DIR/model)"]


def trainable(text: str) -> bool:
    """Whether an answer can be an SFT target: not empty, and free of the chat format's tags."""
    return bool(text.strip()) and not any(tag in text for tag in SPECIAL_TAGS)


def sft_record(prompt: RLPrompt, answer: str, **info: Any) -> dict[str, Any]:
    """A `messages` SFT record: the prompt's dialog answered by `answer` (`info` kept beside it)."""
    return {"messages": [*prompt.messages, {"role": "assistant", "content": answer}], "id": prompt.id, **info}


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class SampledSFT(abc.ABC):
    """The shared driver: read prompts, sample with a loaded model, fine-tune on what is kept."""

    Config = SampledSFTConfig
    name = "sampled-sft"

    def __init__(self, config: SampledSFTConfig) -> None:
        self.config = config

    def run(self, runtime: Runtime | None = None) -> TrainResult:
        """Every stage, in order (see the module docstring); returns the last fine-tuning's result."""
        owns = runtime is None
        runtime = runtime or init_runtime(self.config.device)
        try:
            return self._run(runtime)
        finally:
            if owns:
                shutdown(runtime)

    @abc.abstractmethod
    def _run(self, runtime: Runtime) -> TrainResult:
        """The recipe's stages, on every rank."""

    def finalize(self, checkpoint: Path | None) -> Path:
        """OUTPUT_DIR/model, written by the last fine-tuning stage."""
        return Path(self.config.output_dir) / FINAL_DIR

    # ---- pieces the recipes assemble ------------------------------------------------------------

    def _prompts(self, data: Any, *, safety: bool) -> list[RLPrompt]:
        return mix_prompts(data, safety=safety, seed=self.config.seed)

    def _sampler(self, model: str | Path, runtime: Runtime) -> Llama:
        """A full copy of `model` on this rank's device, in the run's compute precision."""
        llama = Llama.from_pretrained(model, device=runtime.device, dtype=compute_dtype(self.config.dtype, runtime.device))
        llama.engine.max_batch_size = self.config.sample_batch_size
        return llama

    def _encode(self, llama: Llama, prompts: Sequence[RLPrompt]) -> list[list[int]]:
        """Prompt ids, refusing (with its id) a prompt that leaves no room for `max_new_tokens`."""
        assert llama.tokenizer is not None
        ids = encode_prompts(llama.tokenizer, [p.messages for p in prompts], system_prompt=self.config.system_prompt)
        room = llama.args.max_seq_len - self.config.max_new_tokens
        for prompt, row in zip(prompts, ids):
            if len(row) > room:
                raise DataError(f"prompt {prompt.id} is {len(row)} tokens; with max_new_tokens {self.config.max_new_tokens} "
                                f"it overflows the {llama.args.max_seq_len}-token window; shorten it or lower max_new_tokens")
        return ids

    def _fine_tune(self, data: Path, init: str | Path, folder: Path, runtime: Runtime) -> TrainResult:
        """SFT of `init` on the dialogs in `data`, in `folder` (checkpoints, metrics, `model/`);
        skipped when `folder/model` exists, resumed when checkpoints do."""
        final = folder / FINAL_DIR
        if final.is_dir():
            checkpoint = latest_checkpoint(folder / "checkpoints")
            step = int(checkpoint.name.rpartition("-")[2]) if checkpoint is not None else 0
            return TrainResult(step=step, checkpoint=checkpoint, metrics={}, main_process=runtime.is_main)
        values = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(SFTConfig)}
        values.update(data=str(data), init=str(init), output_dir=str(folder), format="messages")
        recipe = SFT(SFTConfig(**values))
        result = train(recipe, runtime)
        if runtime.is_main and result.checkpoint is not None:
            recipe.finalize(result.checkpoint)
        barrier(runtime)
        return result
