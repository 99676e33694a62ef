"""llama2: the Llama 2 system end to end — model, training, evaluation and serving.

Public names are imported lazily so `import llama2` stays cheap and side-effect free.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "Llama": "llama2.api",
    "RewardModel": "llama2.model.reward",
    "ModelArgs": "llama2.model.config",
    "PRESETS": "llama2.model.config",
    "Transformer": "llama2.model.transformer",
    "KVCache": "llama2.model.kv_cache",
    "Tokenizer": "llama2.model.tokenizer",
    "encode_dialog": "llama2.model.chat_format",
    "Engine": "llama2.generation.engine",
    "Message": "llama2.types",
    "Dialog": "llama2.types",
    "SamplingParams": "llama2.types",
    "GenerationResult": "llama2.types",
    "errors": "llama2.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from llama2 import errors
    from llama2.api import Llama
    from llama2.generation.engine import Engine
    from llama2.model.chat_format import encode_dialog
    from llama2.model.config import PRESETS, ModelArgs
    from llama2.model.kv_cache import KVCache
    from llama2.model.reward import RewardModel
    from llama2.model.tokenizer import Tokenizer
    from llama2.model.transformer import Transformer
    from llama2.types import Dialog, GenerationResult, Message, SamplingParams


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llama2' has no attribute {name!r}")
    value = importlib.import_module(module)
    return value if name == "errors" else getattr(value, name)
