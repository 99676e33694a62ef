"""What every checkpoint format shares: the state dict in Meta names, its expected shapes for a
`ModelArgs`, dtype names, and turning a library's read failure into one `CheckpointError` line.

In memory a checkpoint is always a `StateDict` with Meta's parameter names (`tok_embeddings.weight`,
`layers.N.attention.wq.weight`, ...) and Meta's rotary layout; each format module maps its own
names and layout onto that.
"""

from __future__ import annotations

import json

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from llama2.errors import CheckpointError, ConfigError
from llama2.model.config import ModelArgs
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer

StateDict = dict[str, torch.Tensor]

# Short names used by the CLI and GGUF, and Hugging Face's `torch_dtype` strings.
DTYPES: dict[str, torch.dtype] = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
HF_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
}


def expected_shapes(args: ModelArgs) -> dict[str, torch.Size]:
    """Parameter name -> shape of a `Transformer(args)`, built on the `meta` device (no memory)."""
    with torch.device("meta"):
        model = Transformer(args)
    return {name: tensor.shape for name, tensor in model.state_dict().items()}


def as_state_dict(model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> StateDict:
    """The tensors of a model (detached, no copies) or a mapping of Meta-named tensors."""
    if isinstance(model_or_state, nn.Module):
        return {name: tensor.detach() for name, tensor in model_or_state.state_dict().items()}
    return dict(model_or_state)


def checked_tokenizer(tokenizer: Tokenizer | str | Path, args: ModelArgs) -> Tokenizer:
    """The tokenizer, refused if it has ids the model's embedding has no row for (fewer pieces than
    rows is fine: vocabularies are often padded). A path is loaded (.model or .gguf)."""
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer(Path(tokenizer))
    if tok.n_words > args.vocab_size:
        source = tokenizer if not isinstance(tokenizer, Tokenizer) else "the tokenizer"
        raise CheckpointError(f"{source}: has {tok.n_words} pieces but the model only {args.vocab_size} embedding rows")
    return tok


def check_state(state: Mapping[str, torch.Tensor], args: ModelArgs, source: Path | str) -> None:
    """Raise one `CheckpointError` line unless `state` has exactly the keys and shapes of `args`."""
    shapes = expected_shapes(args)
    check_keys(state.keys(), shapes.keys(), source)
    for name, shape in shapes.items():
        if state[name].shape != shape:
            raise CheckpointError(
                f"{source}: tensor {name} has shape {list(state[name].shape)}, expected {list(shape)} "
                f"for {describe_args(args)}"
            )


def check_keys(found: Iterable[str], expected: Iterable[str], source: Path | str) -> None:
    """Missing and unknown tensor names, a few of each, in one line."""
    found, expected = set(found), set(expected)
    missing, unknown = sorted(expected - found, key=natural_key), sorted(found - expected, key=natural_key)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s): {_few(missing)}")
        if unknown:
            parts.append(f"unknown {len(unknown)} tensor(s): {_few(unknown)}")
        raise CheckpointError(f"{source}: {'; '.join(parts)} (is this a Llama 2 checkpoint of these params?)")


def describe_args(args: ModelArgs) -> str:
    return (
        f"dim={args.dim} n_layers={args.n_layers} n_heads={args.n_heads} n_kv_heads={args.kv_heads} "
        f"ffn={args.ffn_hidden_dim} vocab={args.vocab_size}"
    )


def natural_key(name: str) -> tuple:
    """Sort `layers.10` after `layers.9`."""
    return tuple(int(part) if part.isdigit() else part for part in name.split("."))


def _few(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def read_failure(path: Path, error: BaseException) -> CheckpointError:
    """A library's exception while reading `path` as one line: the file, and the library's first line."""
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return CheckpointError(f"{path}: cannot read ({type(error).__name__}: {first_line}); the file is truncated or corrupt")


def as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A torch dtype from itself or a name: f32/float32, f16/float16, bf16/bfloat16."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = DTYPES | {name: value for value, name in HF_DTYPE_NAMES.items()}
    if dtype.lower() not in names:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {', '.join(names)}")
    return names[dtype.lower()]


def cast_state(state: StateDict, dtype: torch.dtype | None) -> StateDict:
    """Cast every tensor to `dtype`, or to the embedding's dtype when None: a model has one dtype,
    and checkpoints that store norms in fp32 next to bf16 matrices are common."""
    target = dtype or state["tok_embeddings.weight"].dtype
    for name in list(state):
        if state[name].dtype != target:
            state[name] = state[name].to(target)
    return state


def derive_ffn_shape(dim: int, hidden_dim: int) -> tuple[int, float | None]:
    """`(multiple_of, ffn_dim_multiplier)` for which Meta's rule (LLAMA2.md §1.2) gives `hidden_dim`.

    Formats other than Meta's store only the result (`intermediate_size`), so the two knobs are
    recovered: no multiplier with `multiple_of` 256 (7B, 13B) or another power of two, then Meta's
    multipliers (1.3 with 4096 for 70B, 1.0 for Code Llama 34B), and as a last resort
    `multiple_of = hidden_dim`, which reproduces any width with a multiplier that brings Meta's base
    width down to at most it.
    """
    if hidden_dim <= 0:
        raise CheckpointError(f"feed-forward width must be positive, got {hidden_dim}")
    base = int(2 * (4 * dim) / 3)
    multiples = [256] + [2**k for k in range(12, -1, -1) if 2**k != 256]
    candidates = [(m, None) for m in multiples] + [(4096, 1.3), (256, 1.0)]
    candidates.append((hidden_dim, None if base <= hidden_dim else hidden_dim / base))
    for multiple_of, multiplier in candidates:
        width = int(multiplier * base) if multiplier is not None else base
        if width > 0 and multiple_of * math.ceil(width / multiple_of) == hidden_dim:
            return multiple_of, multiplier
    raise CheckpointError(f"feed-forward width {hidden_dim} cannot be expressed with Meta's SwiGLU rule for dim {dim}")


def read_json_object(path: Path, *, missing: str) -> dict:
    """A checkpoint's JSON settings file as a dict; `missing` says what the folder needs instead."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; {missing}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return value
