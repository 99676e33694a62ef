"""The keys of `llama2 train ppo` (`recipes/ppo.py` says what each choice means), checked whole.

A loop step is one PPO mini-batch, so the run's `max_steps` is `iterations x ppo_epochs x
rollout_batch_size / mini-batch`, worked out when the config is resolved; checkpoints and held-out
evaluations fall between iterations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from llama2.train.recipes.finetune import FinetuneConfig
from llama2.train.recipes.sampled_sft import optional_data_problems, reward_model_problems


@dataclass(kw_only=True)
class PPOConfig(FinetuneConfig):
    """PPO keys on top of the fine-tuning keys; `data` (and `safety_data`, `val_data`) are prompts."""

    init: str = "default-chat"
    reward_model: str | None = None
    safety_reward_model: str | None = None
    safety_data: str | list[Any] | dict[str, Any] | None = None
    val_data: str | list[Any] | dict[str, Any] | None = None
    safety_threshold: float = 0.15
    iterations: int = 1
    rollout_batch_size: int = 512
    ppo_epochs: int = 1
    beta: float = 0.01
    kl: Literal["token", "sequence"] = "token"
    kl_target: float | None = None
    kl_horizon: int = 10000
    clip: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    value_init: Literal["zero", "normal"] = "zero"
    whiten: Literal["scalar", "vector", "none"] = "scalar"
    whiten_advantages: bool = True
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    patience: int = 0
    keep: Literal["best", "last"] = "best"
    sample_batch_size: int = 64
    rollout_scores: Literal["auto", "sampler", "recompute"] = "auto"
    reward_batch_size: int = 16
    lr: float = 1e-6
    min_lr_ratio: float = 1.0

    def steps_per_iteration(self, world_size: int) -> int:
        """Optimizer steps (mini-batches) per PPO iteration."""
        return self.ppo_epochs * self.rollout_batch_size // self.minibatch(world_size)

    def minibatch(self, world_size: int) -> int:
        accum = self.grad_accum or (self.global_batch_size // (self.batch_size * world_size) if self.global_batch_size else 1)
        return max(1, self.batch_size * accum * world_size)

    def problems(self, world_size: int) -> list[str]:
        found = [p for p in super().problems(world_size) if not p.startswith("give epochs")]
        found += optional_data_problems("safety_data", self.safety_data) + optional_data_problems("val_data", self.val_data)
        found += reward_model_problems("reward_model", self.reward_model)
        found += reward_model_problems("safety_reward_model", self.safety_reward_model)
        shape = self._batch_shape_problems(world_size)
        derived = not shape and self.max_steps == self.iterations * self.steps_per_iteration(world_size)
        if self.epochs is not None or (self.max_steps and not derived):  # a resolved config (--dry-run) may repeat it
            found.append("PPO counts iterations: set iterations (200-400 in the paper), not epochs or max_steps")
        found += shape + self._value_problems()
        if self.whiten == "vector" and self.reward_model is not None and self.safety_reward_model is None:
            found.append("whiten: vector whitens the (helpfulness, safety) pair; set safety_reward_model or use whiten: scalar")
        if self.patience and not self.eval_every:
            found.append("patience counts held-out evaluations: set eval_every (and val_data or val_fraction)")
        return found

    def _batch_shape_problems(self, world_size: int) -> list[str]:
        found, mini = [], self.minibatch(world_size)
        if self.iterations < 1 or self.ppo_epochs < 1:
            found.append(f"iterations and ppo_epochs must be at least 1, got {self.iterations} and {self.ppo_epochs}")
        if self.rollout_batch_size < 1 or self.rollout_batch_size % mini:
            found.append(f"rollout_batch_size {self.rollout_batch_size} must be a positive multiple of the mini-batch "
                         f"(batch_size x grad_accum x processes = {mini})")
            return found
        steps = self.steps_per_iteration(world_size)
        for name in ("eval_every", "save_every"):
            if getattr(self, name) % steps:
                found.append(f"{name} must be a multiple of the {steps} steps of an iteration (checkpoints and "
                             f"evaluations fall between iterations), got {getattr(self, name)}")
        return found

    def _value_problems(self) -> list[str]:
        found = []
        for name in ("beta", "vf_coef", "kl_horizon"):
            if getattr(self, name) < 0:
                found.append(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.clip <= 0 or self.value_clip <= 0:
            found.append(f"clip and value_clip must be positive, got {self.clip} and {self.value_clip}")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            found.append(f"gamma and lam must lie in [0, 1], got {self.gamma} and {self.lam}")
        if self.kl_target is not None and (self.kl_target <= 0 or self.kl_horizon <= 0):
            found.append(f"kl_target and kl_horizon must be positive, got {self.kl_target} and {self.kl_horizon}")
        if self.temperature <= 0 or not 0.0 < self.top_p <= 1.0:
            found.append(f"temperature must be positive and top_p in (0, 1], got {self.temperature} and {self.top_p}")
        if not 0.0 < self.safety_threshold < 1.0:
            found.append(f"safety_threshold is a probability in (0, 1), got {self.safety_threshold}")
        for name in ("max_new_tokens", "sample_batch_size", "reward_batch_size"):
            if getattr(self, name) < 1:
                found.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.patience < 0:
            found.append(f"patience must be 0 (never stop early) or more, got {self.patience}")
        return found

    def has_validation(self) -> bool:
        return self.val_fraction > 0 or self.val_data is not None

    def missing_validation(self) -> str:
        return "eval_every needs held-out prompts: set val_data (a prompt file) or val_fraction (e.g. 0.05), or eval_every=0"

    def resolved(self, world_size: int) -> "PPOConfig":
        config = super().resolved(world_size)
        config.max_steps = self.iterations * config.steps_per_iteration(world_size)
        return config
