"""Model shapes: `ModelArgs` and the preset table (LLAMA2.md §1.1).

Field names follow Meta's `params.json` so a released checkpoint's file maps onto `ModelArgs`
directly (its `vocab_size: -1` is filled in from the tokenizer at load time).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from llama2.errors import ConfigError


@dataclass(frozen=True)
class ModelArgs:
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None  # None means multi-head attention (n_kv_heads == n_heads)
    vocab_size: int = 32000
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 4096

    def __post_init__(self) -> None:
        problems = []
        if self.dim % self.n_heads:
            problems.append(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        elif self.head_dim % 2:
            problems.append(f"head_dim {self.head_dim} must be even for rotary embeddings")
        if self.n_heads % self.kv_heads:
            problems.append(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.kv_heads}")
        if self.vocab_size <= 0:
            problems.append(f"vocab_size must be positive, got {self.vocab_size} (set it from the tokenizer)")
        if min(self.dim, self.n_layers, self.n_heads, self.multiple_of, self.max_seq_len) <= 0:
            problems.append("dim, n_layers, n_heads, multiple_of and max_seq_len must be positive")
        if problems:
            raise ConfigError("invalid ModelArgs: " + "; ".join(problems))

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        """Meta's SwiGLU rule: 2/3 of 4*dim, scaled, rounded up to `multiple_of` (LLAMA2.md §1.2)."""
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    def n_params(self) -> int:
        """Exact parameter count: untied embedding and output, no biases."""
        hd, kv = self.head_dim, self.kv_heads
        attention = self.dim * (self.n_heads * hd) * 2 + self.dim * (kv * hd) * 2
        feed_forward = 3 * self.dim * self.ffn_hidden_dim
        norms = 2 * self.dim
        per_layer = attention + feed_forward + norms
        return 2 * self.vocab_size * self.dim + self.n_layers * per_layer + self.dim

    def kv_cache_bytes_per_token(self, bytes_per_value: int = 2) -> int:
        return 2 * self.n_layers * self.kv_heads * self.head_dim * bytes_per_value

    def replace(self, **changes: object) -> "ModelArgs":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_params(cls, params: dict, *, vocab_size: int | None = None) -> "ModelArgs":
        """Build from a Meta `params.json` dict; unknown keys are an error, not silently dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"unknown keys in params.json: {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
        values = dict(params)
        if values.get("vocab_size", -1) in (-1, None):
            if vocab_size is None:
                raise ConfigError("params.json has vocab_size -1 and no tokenizer was found to fill it in")
            values["vocab_size"] = vocab_size
        return cls(**values)

    def to_params(self) -> dict:
        """Meta `params.json` contents (defaults that Meta leaves out are left out too)."""
        params = {
            "dim": self.dim,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "multiple_of": self.multiple_of,
            "norm_eps": self.norm_eps,
            "vocab_size": self.vocab_size,
            "rope_theta": self.rope_theta,
            "max_seq_len": self.max_seq_len,
        }
        if self.n_kv_heads is not None and self.n_kv_heads != self.n_heads:
            params["n_kv_heads"] = self.n_kv_heads
        if self.ffn_dim_multiplier is not None:
            params["ffn_dim_multiplier"] = self.ffn_dim_multiplier
        return params


@dataclass(frozen=True)
class Preset:
    args: ModelArgs
    description: str


_7B = ModelArgs(dim=4096, n_layers=32, n_heads=32)
_13B = ModelArgs(dim=5120, n_layers=40, n_heads=40)
# Never released; shapes inferred from Code Llama 34B, which was initialised from it (LLAMA2.md §1.1).
_34B = ModelArgs(dim=8192, n_layers=48, n_heads=64, n_kv_heads=8, ffn_dim_multiplier=1.0)
_70B = ModelArgs(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, multiple_of=4096, ffn_dim_multiplier=1.3)

PRESETS: dict[str, Preset] = {
    "7b": Preset(_7B, "Llama 2 7B (released)"),
    "13b": Preset(_13B, "Llama 2 13B (released)"),
    "34b": Preset(_34B, "Llama 2 34B (not released; shape inferred from Code Llama 34B)"),
    "70b": Preset(_70B, "Llama 2 70B (released, grouped-query attention)"),
    "7b-chat": Preset(_7B, "Llama 2-Chat 7B (released)"),
    "13b-chat": Preset(_13B, "Llama 2-Chat 13B (released)"),
    "34b-chat": Preset(_34B, "Llama 2-Chat 34B (not released; shape inferred)"),
    "70b-chat": Preset(_70B, "Llama 2-Chat 70B (released, grouped-query attention)"),
    # Small shapes for tests, benchmarks and the bundled model.
    "tiny": Preset(
        ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=32, max_seq_len=256),
        "test size: 2 layers, grouped-query attention, 512-token vocabulary",
    ),
    "tiny-mha": Preset(
        ModelArgs(dim=64, n_layers=2, n_heads=4, vocab_size=512, multiple_of=32, max_seq_len=256),
        "test size: 2 layers, multi-head attention, 512-token vocabulary",
    ),
    "110m": Preset(
        ModelArgs(dim=768, n_layers=12, n_heads=12, vocab_size=32000, max_seq_len=1024),
        "llama2.c's 110M shape (134M here: the output head is untied, as in Llama 2)",
    ),
}


def get_preset(name: str) -> ModelArgs:
    """Look a preset up by name (case-insensitive), with the valid names in the error."""
    preset = PRESETS.get(name.lower())
    if preset is None:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return preset.args
