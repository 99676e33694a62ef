"""GGUF files for llama.cpp (architecture "llama"), written and read with the `gguf` package.

Conventions follow llama.cpp's own converter for Llama: tensor names `token_embd`, `blk.N.attn_q`,
..., `output`; the q/k rows in Meta's adjacent-pair rotary layout (llama.cpp's converter *undoes*
HF's permutation, and our weights are already in Meta's layout, so nothing is permuted); 1-D norm
weights always F32; a SentencePiece vocabulary as `tokenizer.ggml.model = "llama"`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np
import torch
from torch import nn

from llama2.errors import CheckpointError, ConfigError
from llama2.atomic import atomic_file
from llama2.model.checkpoint.common import (
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
)
from llama2.model.config import ModelArgs
from llama2.model.tokenizer import Tokenizer

ARCH = "llama"
GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0")
_QTYPES = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "bf16": gguf.GGMLQuantizationType.BF16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}
_FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}
_T = gguf.MODEL_TENSOR
_TOP_LEVEL = {"tok_embeddings.weight": _T.TOKEN_EMBD, "norm.weight": _T.OUTPUT_NORM, "output.weight": _T.OUTPUT}
_PER_LAYER = {
    "attention.wq.weight": _T.ATTN_Q,
    "attention.wk.weight": _T.ATTN_K,
    "attention.wv.weight": _T.ATTN_V,
    "attention.wo.weight": _T.ATTN_OUT,
    "feed_forward.w1.weight": _T.FFN_GATE,
    "feed_forward.w2.weight": _T.FFN_DOWN,
    "feed_forward.w3.weight": _T.FFN_UP,
    "attention_norm.weight": _T.ATTN_NORM,
    "ffn_norm.weight": _T.FFN_NORM,
}
_K = gguf.Keys


def gguf_name(name: str) -> str:
    """Meta parameter name -> llama.cpp tensor name (`layers.3.attention.wq.weight` -> `blk.3.attn_q.weight`)."""
    if name in _TOP_LEVEL:
        return gguf.TENSOR_NAMES[_TOP_LEVEL[name]] + ".weight"
    _, layer, suffix = name.split(".", 2)
    return gguf.TENSOR_NAMES[_PER_LAYER[suffix]].format(bid=int(layer)) + ".weight"


def _meta_names(n_layers: int) -> dict[str, str]:
    """llama.cpp tensor name -> Meta name for a model of `n_layers`."""
    names = list(_TOP_LEVEL) + [f"layers.{i}.{suffix}" for i in range(n_layers) for suffix in _PER_LAYER]
    return {gguf_name(name): name for name in names}


# ---------------------------------------------------------------------------------------------- write


def export_gguf(
    model_or_state: nn.Module | Mapping[str, torch.Tensor],
    args: ModelArgs,
    path: str | Path,
    *,
    tokenizer: Tokenizer | str | Path,
    dtype: str = "f16",
    name: str = "llama2",
    overwrite: bool = False,
) -> list[Path]:
    """Write one GGUF file llama.cpp runs: hyperparameters, the tokenizer's vocabulary, and the
    weights as `dtype` (f32, f16, bf16 or q8_0; norms stay f32, and a matrix whose rows do not
    divide into Q8_0's 32-value blocks falls back to f16, as llama.cpp's converter does).

    Tensors are converted and written one at a time, so memory stays at one tensor beyond the model.
    """
    if dtype not in _QTYPES:
        raise ConfigError(f"unknown GGUF dtype {dtype!r}; choose one of {', '.join(GGUF_DTYPES)}")
    path = Path(path)
    state = as_state_dict(model_or_state)
    check_state(state, args, "state to export")
    writer = gguf.GGUFWriter(None, ARCH)
    _add_hyperparameters(writer, args, name, dtype)
    _add_vocabulary(writer, checked_tokenizer(tokenizer, args), args.vocab_size)
    names = sorted(state, key=natural_key)
    qtypes = {n: _tensor_qtype(state[n], dtype) for n in names}
    for n in names:
        # Declared up front from shape and type alone (the numpy dtype is a placeholder once
        # raw_dtype is given), so the data can be encoded one tensor at a time below.
        block, type_size = gguf.GGML_QUANT_SIZES[qtypes[n]]
        nbytes = state[n].numel() // block * type_size
        writer.add_tensor_info(gguf_name(n), list(state[n].shape), np.dtype(np.float32), nbytes, raw_dtype=qtypes[n])
    with atomic_file(path, overwrite=overwrite) as tmp:
        try:
            writer.write_header_to_file(path=tmp)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for n in names:
                writer.write_tensor_data(_encode(state[n], qtypes[n]))
        finally:
            writer.close()
    return [path]


def _add_hyperparameters(writer: gguf.GGUFWriter, args: ModelArgs, name: str, dtype: str) -> None:
    """The `llama.*` keys llama.cpp reads for this architecture."""
    writer.add_name(name)
    writer.add_file_type(_FILE_TYPES[dtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(args.vocab_size)
    writer.add_context_length(args.max_seq_len)
    writer.add_embedding_length(args.dim)
    writer.add_block_count(args.n_layers)
    writer.add_feed_forward_length(args.ffn_hidden_dim)
    writer.add_head_count(args.n_heads)
    writer.add_head_count_kv(args.kv_heads)
    writer.add_rope_dimension_count(args.head_dim)
    writer.add_rope_freq_base(args.rope_theta)
    writer.add_layer_norm_rms_eps(args.norm_eps)


def _add_vocabulary(writer: gguf.GGUFWriter, tokenizer: Tokenizer, vocab_size: int) -> None:
    """The SentencePiece vocabulary, padded with unused `[PADn]` pieces up to the embedding's rows
    (llama.cpp requires one piece per row)."""
    pieces, scores, types = tokenizer.gguf_vocab()
    for i in range(len(pieces), vocab_size):
        pieces.append(f"[PAD{i}]".encode())
        scores.append(-10000.0)
        types.append(int(gguf.TokenType.UNUSED))
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(tokenizer.bos_id)
    writer.add_eos_token_id(tokenizer.eos_id)
    unk = tokenizer.sp.unk_id()
    if unk >= 0:
        writer.add_unk_token_id(unk)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(_adds_dummy_prefix(tokenizer))


def _adds_dummy_prefix(tokenizer: Tokenizer) -> bool:
    """Whether SentencePiece puts "▁" before the first word; llama.cpp must do the same."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(tokenizer.sp.serialized_model_proto())
    return proto.normalizer_spec.add_dummy_prefix


def _tensor_qtype(tensor: torch.Tensor, dtype: str) -> gguf.GGMLQuantizationType:
    if tensor.dim() == 1:
        return gguf.GGMLQuantizationType.F32
    if dtype == "q8_0" and tensor.shape[-1] % gguf.GGML_QUANT_SIZES[_QTYPES["q8_0"]][0]:
        return gguf.GGMLQuantizationType.F16
    return _QTYPES[dtype]


def _encode(tensor: torch.Tensor, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """`tensor (rows, cols)` as the bytes GGUF stores for `qtype`."""
    tensor = tensor.detach().cpu()
    if qtype == gguf.GGMLQuantizationType.F32:
        return tensor.float().contiguous().numpy()
    if qtype == gguf.GGMLQuantizationType.F16:
        return tensor.half().contiguous().numpy()
    if qtype == gguf.GGMLQuantizationType.BF16:
        bits = tensor.bfloat16().contiguous().view(torch.int16).numpy()
        return bits.view(np.uint8)
    return gguf.quants.quantize(tensor.float().contiguous().numpy(), qtype)


# ---------------------------------------------------------------------------------------------- read


def _open(path: Path) -> gguf.GGUFReader:
    try:
        return gguf.GGUFReader(path, "r")
    except Exception as error:  # the reader raises ValueError, IndexError, ... on bad files
        raise read_failure(path, error) from None


def _value(reader: gguf.GGUFReader, key: str, default: object = None) -> object:
    """A scalar or string metadata value."""
    field = reader.get_field(key)
    if field is None:
        return default
    part = field.parts[field.data[0]]
    if field.types[0] == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    return part.item()


def read_gguf_args(path: Path) -> ModelArgs:
    """`ModelArgs` from a llama-architecture GGUF's metadata."""
    reader = _open(path)
    arch = _value(reader, _K.General.ARCHITECTURE)
    if arch != ARCH:
        raise CheckpointError(f"{path}: architecture is {arch!r}; only {ARCH!r} GGUF files are supported")

    def need(key: str) -> object:
        value = _value(reader, key.format(arch=ARCH))
        if value is None:
            raise CheckpointError(f"{path}: missing metadata key {key.format(arch=ARCH)}")
        return value

    dim, n_heads = int(need(_K.LLM.EMBEDDING_LENGTH)), int(need(_K.Attention.HEAD_COUNT))
    n_kv = int(_value(reader, _K.Attention.HEAD_COUNT_KV.format(arch=ARCH), n_heads))
    vocab = _value(reader, _K.LLM.VOCAB_SIZE.format(arch=ARCH))
    if vocab is None:
        tokens = reader.get_field(_K.Tokenizer.LIST)
        if tokens is None:
            raise CheckpointError(f"{path}: neither {ARCH}.vocab_size nor a token list is present")
        vocab = len(tokens.data)
    multiple_of, multiplier = derive_ffn_shape(dim, int(need(_K.LLM.FEED_FORWARD_LENGTH)))
    try:
        return ModelArgs(
            dim=dim,
            n_layers=int(need(_K.LLM.BLOCK_COUNT)),
            n_heads=n_heads,
            n_kv_heads=None if n_kv == n_heads else n_kv,
            vocab_size=int(vocab),
            multiple_of=multiple_of,
            ffn_dim_multiplier=multiplier,
            norm_eps=_float32_value(need(_K.Attention.LAYERNORM_RMS_EPS)),
            rope_theta=_float32_value(_value(reader, _K.Rope.FREQ_BASE.format(arch=ARCH), 10000.0)),
            max_seq_len=int(need(_K.LLM.CONTEXT_LENGTH)),
        )
    except ConfigError as error:
        raise CheckpointError(f"{path}: {error}") from None


def _float32_value(value: object) -> float:
    """GGUF stores these as float32: 1e-5 comes back as 9.99999974e-06. Seven significant digits
    recover the decimal that was written."""
    return float(f"{float(value):.7g}")


def read_gguf_state(path: Path, args: ModelArgs) -> StateDict:
    """The weights as a Meta-named state dict; quantized tensors are dequantized to fp32, f16 and
    bf16 keep their dtype."""
    reader = _open(path)
    names = _meta_names(args.n_layers)
    shapes = expected_shapes(args)
    state: StateDict = {}
    unknown = []
    for tensor in reader.tensors:
        name = names.get(tensor.name)
        if name is None:
            unknown.append(tensor.name)
            continue
        try:
            state[name] = _decode(tensor)
        except Exception as error:
            raise read_failure(path, error) from None
        if state[name].shape != shapes[name]:
            raise CheckpointError(
                f"{path}: tensor {tensor.name} has shape {list(state[name].shape)}, expected "
                f"{list(shapes[name])} for {describe_args(args)}"
            )
    if unknown:
        raise CheckpointError(f"{path}: unknown tensor(s) {', '.join(unknown[:4])} for a Llama 2 model")
    check_keys(state.keys(), shapes.keys(), path)
    return state


def _decode(tensor: gguf.ReaderTensor) -> torch.Tensor:
    kind = tensor.tensor_type
    if kind in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return torch.from_numpy(np.array(tensor.data))
    if kind == gguf.GGMLQuantizationType.BF16:
        return torch.from_numpy(np.array(tensor.data).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(gguf.quants.dequantize(tensor.data, kind))
