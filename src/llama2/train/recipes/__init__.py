"""Training recipes by name: each is a class with a `Config` dataclass (a `TrainConfig`) and the
hooks the one loop calls (`llama2.train.loop.Recipe`). The CLI offers one subcommand per entry."""

from __future__ import annotations

from llama2.train.recipes.pretrain import Pretrain
from llama2.train.recipes.sft import SFT

RECIPES: dict[str, type] = {
    "pretrain": Pretrain,
    "sft": SFT,
}
