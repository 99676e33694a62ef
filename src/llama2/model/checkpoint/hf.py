"""Hugging Face `LlamaForCausalLM` folders (LLAMA2.md §1.7): `config.json`, safetensors shards with
an optional `model.safetensors.index.json`, HF parameter names, and q/k rows permuted for HF's
`rotate_half` rotary layout."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from llama2.errors import CheckpointError, ConfigError
from llama2.atomic import atomic_folder
from llama2.model.checkpoint.common import (
    HF_DTYPE_NAMES,
    StateDict,
    as_state_dict,
    checked_tokenizer,
    check_keys,
    check_state,
    derive_ffn_shape,
    describe_args,
    expected_shapes,
    natural_key,
    read_failure,
    read_json_object,
)
from llama2.model.config import ModelArgs
from llama2.model.tokenizer import Tokenizer

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

_TOP_LEVEL = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_PER_LAYER = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_FROM_HF_TOP = {hf: meta for meta, hf in _TOP_LEVEL.items()}
_FROM_HF_LAYER = {hf: meta for meta, hf in _PER_LAYER.items()}
_HF_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")
# Old HF exports carry the rotary inverse-frequency buffer; the model recomputes it.
_IGNORED_SUFFIX = "rotary_emb.inv_freq"


def hf_name(name: str) -> str:
    """Meta parameter name -> HF name."""
    if name in _TOP_LEVEL:
        return _TOP_LEVEL[name]
    _, layer, suffix = name.split(".", 2)
    return f"model.layers.{layer}.{_PER_LAYER[suffix]}"


def meta_name(name: str) -> str | None:
    """HF parameter name -> Meta name, or None for a name Llama 2 has no weight for."""
    if name in _FROM_HF_TOP:
        return _FROM_HF_TOP[name]
    match = _HF_LAYER_RE.fullmatch(name)
    if match and match.group(2) in _FROM_HF_LAYER:
        return f"layers.{match.group(1)}.{_FROM_HF_LAYER[match.group(2)]}"
    return None


def permute_to_hf(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder wq/wk rows `(n_heads*hd, dim)` from Meta's adjacent rotary pairs (2i, 2i+1) to HF's
    halves (i, i + hd/2): per head, the even rows come first, then the odd ones."""
    rows, cols = weight.shape
    return weight.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def permute_from_hf(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of `permute_to_hf`."""
    rows, cols = weight.shape
    return weight.reshape(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def _rotary_heads(name: str, args: ModelArgs) -> int | None:
    if name.endswith("attention.wq.weight"):
        return args.n_heads
    if name.endswith("attention.wk.weight"):
        return args.kv_heads
    return None


# ---------------------------------------------------------------------------------------------- config


def read_config(folder: Path) -> dict:
    return read_json_object(folder / CONFIG_FILE, missing="a Hugging Face checkpoint folder needs config.json")


def args_from_hf_config(config: Mapping, source: Path | str = CONFIG_FILE) -> ModelArgs:
    """`ModelArgs` from a `LlamaForCausalLM` config, refusing the options Llama 2 does not have.

    HF stores the feed-forward width itself (`intermediate_size`); Meta's `multiple_of` and
    `ffn_dim_multiplier` are derived so that `ModelArgs.ffn_hidden_dim` reproduces it.
    """
    if config.get("model_type", "llama") != "llama":
        raise CheckpointError(f"{source}: model_type is {config.get('model_type')!r}; only 'llama' checkpoints are supported")
    try:
        dim, n_heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        n_kv = int(config.get("num_key_value_heads") or n_heads)
        values = {
            "dim": dim,
            "n_layers": int(config["num_hidden_layers"]),
            "n_heads": n_heads,
            "n_kv_heads": None if n_kv == n_heads else n_kv,
            "vocab_size": int(config["vocab_size"]),
            "norm_eps": float(config.get("rms_norm_eps", 1e-6)),  # HF's LlamaConfig default
            "rope_theta": _rope_theta(config, source),
            "max_seq_len": int(config.get("max_position_embeddings", 2048)),
        }
        intermediate = int(config["intermediate_size"])
    except KeyError as error:
        raise CheckpointError(f"{source}: missing field {error.args[0]!r}") from None
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{source}: bad field value ({error})") from None
    unsupported = {
        "hidden_act": ("silu", config.get("hidden_act", "silu")),
        "attention_bias": (False, bool(config.get("attention_bias", False))),
        "mlp_bias": (False, bool(config.get("mlp_bias", False))),
        "tie_word_embeddings": (False, bool(config.get("tie_word_embeddings", False))),
        "head_dim": (dim // n_heads, config.get("head_dim") or dim // n_heads),
    }
    for key, (wanted, found) in unsupported.items():
        if found != wanted:
            raise CheckpointError(f"{source}: {key} is {found!r}; Llama 2 uses {wanted!r}")
    values["multiple_of"], values["ffn_dim_multiplier"] = derive_ffn_shape(dim, intermediate)
    try:
        args = ModelArgs(**values)
    except ConfigError as error:
        raise CheckpointError(f"{source}: {error}") from None
    assert args.ffn_hidden_dim == intermediate
    return args


def _rope_theta(config: Mapping, source: Path | str) -> float:
    """rope_theta from transformers 4.x (`rope_theta`, `rope_scaling`) or 5.x (`rope_parameters`)."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise CheckpointError(f"{source}: rope scaling {rope_type!r} is not supported; Llama 2 uses plain RoPE")
    return float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))


def hf_config(args: ModelArgs, dtype: torch.dtype, *, bos_id: int = 1, eos_id: int = 2) -> dict:
    """config.json for `LlamaForCausalLM`, readable by transformers 4.x (`torch_dtype`, `rope_theta`)
    and 5.x (`dtype`)."""
    dtype_name = HF_DTYPE_NAMES[dtype]
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": args.dim,
        "intermediate_size": args.ffn_hidden_dim,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.kv_heads,
        "head_dim": args.head_dim,
        "vocab_size": args.vocab_size,
        "max_position_embeddings": args.max_seq_len,
        "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta,
        "rope_scaling": None,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": None,
        "torch_dtype": dtype_name,
        "dtype": dtype_name,
    }


def tokenizer_config(tokenizer: Tokenizer, max_seq_len: int) -> dict:
    """A minimal tokenizer_config.json with which transformers' `LlamaTokenizer` loads tokenizer.model
    and, like Meta's `encode(bos=True)`, prepends `<s>` and appends nothing."""
    piece = tokenizer.sp.id_to_piece
    unk = tokenizer.sp.unk_id()
    return {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": piece(tokenizer.bos_id),
        "eos_token": piece(tokenizer.eos_id),
        "unk_token": piece(unk) if unk >= 0 else None,
        "pad_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_seq_len,
    }


# ---------------------------------------------------------------------------------------------- read


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files that hold the weights: those named by the index, else every *.safetensors."""
    index = folder / INDEX_FILE
    if not index.exists():
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{folder}: no *.safetensors files (pytorch_model.bin checkpoints are not supported)")
        return files
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{index}: not a valid safetensors index ({type(error).__name__}: {error})") from None
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{index}: lists {', '.join(missing)}, which is missing from the folder")
    return [folder / name for name in names]


def read_hf_state(folder: Path, args: ModelArgs) -> StateDict:
    """Read every shard into a Meta-named state dict, undoing HF's q/k permutation."""
    shapes = expected_shapes(args)
    state: StateDict = {}
    unknown: list[str] = []
    for path in weight_files(folder):
        try:
            with safe_open(path, framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    name = meta_name(key)
                    if name is None:
                        if not key.endswith(_IGNORED_SUFFIX):
                            unknown.append(key)
                        continue
                    tensor = handle.get_tensor(key)
                    if name in shapes and tensor.shape != shapes[name]:
                        raise CheckpointError(
                            f"{path}: tensor {key} has shape {list(tensor.shape)}, expected {list(shapes[name])} "
                            f"for config.json's {describe_args(args)}"
                        )
                    heads = _rotary_heads(name, args)
                    state[name] = permute_from_hf(tensor, heads) if heads else tensor
        except CheckpointError:
            raise
        except Exception as error:  # safetensors raises SafetensorError, OSError, ... on bad files
            raise read_failure(path, error) from None
    if unknown:
        raise CheckpointError(f"{folder}: unknown tensor(s) {', '.join(sorted(unknown, key=natural_key)[:4])} for a Llama 2 model")
    check_keys(state.keys(), shapes.keys(), folder)
    return state


# ---------------------------------------------------------------------------------------------- write


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string like "2GB" (10**9, as HF counts) or "500MiB" (2**20)."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", size, flags=re.IGNORECASE)
    if not match:
        raise CheckpointError(f"max_shard_size {size!r} is not a size like '2GB', '500MB' or a number of bytes")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** " KMGT".index(unit.upper() or " "))


def save_hf(
    model_or_state: nn.Module | Mapping[str, torch.Tensor],
    args: ModelArgs,
    folder: str | Path,
    *,
    tokenizer: Tokenizer | str | Path | None = None,
    max_shard_size: int | str = "2GB",
    overwrite: bool = False,
) -> list[Path]:
    """Write a folder `LlamaForCausalLM.from_pretrained` loads: config.json, safetensors shards of at
    most `max_shard_size` (with model.safetensors.index.json when more than one), q/k permuted, and
    tokenizer.model + tokenizer_config.json if a tokenizer is given. Returns the files written."""
    folder = Path(folder)
    state = as_state_dict(model_or_state)
    check_state(state, args, "state to save")
    tok = checked_tokenizer(tokenizer, args) if tokenizer is not None else None
    groups = _plan_shards(state, parse_size(max_shard_size))
    files = [SINGLE_FILE] if len(groups) == 1 else [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    written = [CONFIG_FILE, *files]
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        weight_map = {}
        for file, names in zip(files, groups):
            tensors = {hf_name(name): _to_hf_tensor(name, state[name], args) for name in names}
            save_file(tensors, tmp / file, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(tensors, file))
            del tensors
        if len(files) > 1:
            total = sum(t.numel() * t.element_size() for t in state.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
            written.append(INDEX_FILE)
        dtype = state["tok_embeddings.weight"].dtype
        ids = {"bos_id": tok.bos_id, "eos_id": tok.eos_id} if tok else {}
        (tmp / CONFIG_FILE).write_text(json.dumps(hf_config(args, dtype, **ids), indent=2) + "\n")
        if tok is not None:
            tok.save(tmp / "tokenizer.model")
            (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(tok, args.max_seq_len), indent=2) + "\n")
            written += ["tokenizer.model", "tokenizer_config.json"]
    return [folder / name for name in written]


def _plan_shards(state: StateDict, max_bytes: int) -> list[list[str]]:
    """Group tensors in name order into shards of at most `max_bytes` (a larger tensor gets its own)."""
    groups: list[list[str]] = [[]]
    used = 0
    for name in sorted(state, key=natural_key):
        size = state[name].numel() * state[name].element_size()
        if groups[-1] and used + size > max_bytes:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += size
    return groups


def _to_hf_tensor(name: str, tensor: torch.Tensor, args: ModelArgs) -> torch.Tensor:
    heads = _rotary_heads(name, args)
    tensor = permute_to_hf(tensor.detach(), heads) if heads else tensor.detach()
    return tensor.cpu().contiguous()
