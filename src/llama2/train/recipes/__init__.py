"""Training recipes by name: each is a class with a `Config` dataclass (a `TrainConfig`) and the
hooks the one loop calls (`llama2.train.loop.Recipe`), or — for the recipes that sample between
fine-tuning stages (rejection sampling, context distillation) — a `run()` that drives the loop once
per stage. The CLI offers one subcommand per entry."""

from __future__ import annotations

from llama2.train.recipes.context_distillation import ContextDistillation
from llama2.train.recipes.dpo import DPO
from llama2.train.recipes.ppo import PPO
from llama2.train.recipes.pretrain import Pretrain
from llama2.train.recipes.rejection_sampling import RejectionSampling
from llama2.train.recipes.reward import RewardRecipe
from llama2.train.recipes.sft import SFT

RECIPES: dict[str, type] = {
    "pretrain": Pretrain,
    "sft": SFT,
    "reward": RewardRecipe,
    "dpo": DPO,
    "rejection-sampling": RejectionSampling,
    "ppo": PPO,
    "context-distillation": ContextDistillation,
}
