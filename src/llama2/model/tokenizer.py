"""The Llama 2 tokenizer: SentencePiece BPE with byte fallback, 32k pieces (LLAMA2.md §1.3).

Like Meta's `llama/tokenizer.py`, SentencePiece itself adds no special tokens: `encode` prepends
BOS / appends EOS only when asked. A tokenizer comes from a SentencePiece `tokenizer.model` or from
the `tokenizer.ggml.*` vocabulary of a GGUF file, rebuilt into the SentencePiece model it was made
from (BPE, byte fallback, identity normalizer, dummy prefix, whitespace kept as is).
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from llama2.atomic import write_bytes
from llama2.errors import TokenizerError

_Piece = sp_pb2.ModelProto.SentencePiece
# GGUF token types and SentencePiece piece types, name for name (llama.cpp copied SentencePiece's).
_GGUF_TO_SP = {
    gguf.TokenType.NORMAL: _Piece.NORMAL,
    gguf.TokenType.UNKNOWN: _Piece.UNKNOWN,
    gguf.TokenType.CONTROL: _Piece.CONTROL,
    gguf.TokenType.USER_DEFINED: _Piece.USER_DEFINED,
    gguf.TokenType.UNUSED: _Piece.UNUSED,
    gguf.TokenType.BYTE: _Piece.BYTE,
}
_SP_TO_GGUF = {sp_type: gguf_type for gguf_type, sp_type in _GGUF_TO_SP.items()}
_GGUF_MAGIC = b"GGUF"


class Tokenizer:
    """SentencePiece processor plus Meta's explicit BOS/EOS handling.

    `Tokenizer(path)` reads a SentencePiece `.model` file or a `.gguf` file (told apart by the
    file's magic bytes). `pad_id` is -1: Llama has no pad token.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        proto = gguf_to_model_proto(path) if _is_gguf(path) else _read_bytes(path)
        self._load(proto, source=str(path))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Load a SentencePiece `tokenizer.model` file."""
        return cls._from_proto(_read_bytes(Path(path)), source=str(path))

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Load the vocabulary stored in a GGUF file's `tokenizer.ggml.*` keys."""
        return cls._from_proto(gguf_to_model_proto(Path(path)), source=str(path))

    @classmethod
    def from_proto(cls, proto: bytes) -> Tokenizer:
        """Load a serialized SentencePiece ModelProto."""
        return cls._from_proto(proto, source="<serialized model proto>")

    @classmethod
    def _from_proto(cls, proto: bytes, source: str) -> Tokenizer:
        tokenizer = cls.__new__(cls)
        tokenizer._load(proto, source)
        return tokenizer

    def _load(self, proto: bytes, source: str) -> None:
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(proto)
        except (RuntimeError, OSError) as exc:
            raise TokenizerError(f"{source}: not a valid SentencePiece model ({exc}); pass a tokenizer.model or .gguf") from exc
        if self.sp.bos_id() < 0 or self.sp.eos_id() < 0:
            raise TokenizerError(f"{source}: tokenizer defines no BOS or EOS piece; Llama needs both (<s>, </s>)")

    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    @property
    def pad_id(self) -> int:
        return self.sp.pad_id()

    @property
    def n_words(self) -> int:
        return self.sp.vocab_size()

    @property
    def model_proto(self) -> bytes:
        """The serialized SentencePiece ModelProto (the bytes of a `tokenizer.model` file)."""
        return self.sp.serialized_model_proto()

    def encode(self, text: str, *, bos: bool, eos: bool) -> list[int]:
        """Token ids of `text`, with BOS prepended / EOS appended when asked (Meta's `encode`)."""
        if not isinstance(text, str):
            raise TokenizerError(f"encode expects a str, got {type(text).__name__}")
        ids = self.sp.encode(text)
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`; control tokens (BOS, EOS) decode to nothing, byte pieces to UTF-8."""
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.n_words:
                valid = f"0..{self.n_words - 1}"
                raise TokenizerError(f"token id {i} is out of range for a vocabulary of {self.n_words} (valid: {valid})")
        return self.sp.decode(ids)

    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes one token stands for on its own: "▁" is a space, a byte-fallback piece
        `<0xE2>` is that byte, a control token (BOS, EOS) its piece text. For showing tokens one by
        one (OpenAI's logprobs); text is always decoded from whole id sequences."""
        piece = self.sp.id_to_piece(token_id)
        if self.sp.is_byte(token_id):
            return bytes([int(piece[3:-1], 16)])
        return piece.replace("\u2581", " ").encode("utf-8")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model as a SentencePiece file, atomically; a directory gets `tokenizer.model`."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.model"
        write_bytes(path, self.model_proto)
        return path

    def gguf_vocab(self) -> tuple[list[bytes], list[float], list[int]]:
        """Pieces (UTF-8), scores and `gguf.TokenType`s in id order: the `tokenizer.ggml.*` arrays."""
        model = sp_pb2.ModelProto.FromString(self.model_proto)
        pieces = [p.piece.encode("utf-8") for p in model.pieces]
        scores = [p.score for p in model.pieces]
        types = [_SP_TO_GGUF[p.type] for p in model.pieces]
        return pieces, scores, types


def gguf_to_model_proto(path: Path) -> bytes:
    """The serialized SentencePiece model behind a GGUF file's 'llama' (SentencePiece) vocabulary."""
    reader = _open_gguf(path)
    kind = _gguf_scalar(reader, "tokenizer.ggml.model", None)
    if kind != "llama":
        raise TokenizerError(f"{path}: tokenizer.ggml.model is {kind!r}, expected 'llama' (a SentencePiece vocabulary)")
    tokens, scores, types = (
        _gguf_array(reader, f"tokenizer.ggml.{key}", path) for key in ("tokens", "scores", "token_type")
    )
    if not len(tokens) == len(scores) == len(types) > 0:
        lengths = f"{len(tokens)}/{len(scores)}/{len(types)}"
        raise TokenizerError(f"{path}: tokenizer.ggml tokens/scores/token_type lengths {lengths} must be equal and > 0")
    model = sp_pb2.ModelProto()
    for i, (token, score, ttype) in enumerate(zip(tokens, scores, types)):
        if ttype not in _GGUF_TO_SP:
            raise TokenizerError(f"{path}: token {i} has unknown tokenizer.ggml.token_type {ttype}")
        try:
            model.pieces.add(piece=token.decode("utf-8"), score=score, type=_GGUF_TO_SP[ttype])
        except UnicodeDecodeError as exc:
            raise TokenizerError(f"{path}: token {i} is not valid UTF-8 ({exc})") from exc

    trainer = model.trainer_spec
    trainer.model_type = sp_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(tokens)
    trainer.byte_fallback = True
    trainer.split_digits = True
    trainer.pad_id = -1
    # llama.cpp's defaults for a 'llama' vocabulary whose file lacks the keys.
    for name, key, default in (("unk", "unknown_token_id", 0), ("bos", "bos_token_id", 1), ("eos", "eos_token_id", 2)):
        i = _gguf_scalar(reader, f"tokenizer.ggml.{key}", default)
        if not 0 <= i < len(tokens):
            raise TokenizerError(f"{path}: tokenizer.ggml.{key} {i} is outside the {len(tokens)}-token vocabulary")
        setattr(trainer, f"{name}_id", i)
        setattr(trainer, f"{name}_piece", model.pieces[i].piece)

    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = bool(_gguf_scalar(reader, "tokenizer.ggml.add_space_prefix", True))
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return model.SerializeToString()


def _open_gguf(path: Path) -> gguf.GGUFReader:
    try:
        return gguf.GGUFReader(path)
    except FileNotFoundError as exc:
        raise TokenizerError(f"{path}: tokenizer file not found; pass a tokenizer.model or .gguf file") from exc
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise TokenizerError(f"{path}: not a readable GGUF file ({exc})") from exc


def _gguf_scalar(reader: gguf.GGUFReader, key: str, default: object) -> object:
    field = reader.fields.get(key)
    if field is None:
        return default
    value = field.parts[field.data[0]]
    if field.types[0] == gguf.GGUFValueType.STRING:
        return bytes(value).decode("utf-8", errors="replace")
    return value[0].item()


def _gguf_array(reader: gguf.GGUFReader, key: str, path: Path) -> list:
    field = reader.fields.get(key)
    if field is None or field.types[0] != gguf.GGUFValueType.ARRAY:
        raise TokenizerError(f"{path}: GGUF file has no {key} array, so it holds no vocabulary")
    if field.types[-1] == gguf.GGUFValueType.STRING:
        return [bytes(field.parts[i]) for i in field.data]
    return [field.parts[i][0].item() for i in field.data]


def _is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == _GGUF_MAGIC
    except OSError:
        return False  # reported with the path by _read_bytes


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise TokenizerError(f"{path}: tokenizer file not found; pass a tokenizer.model or .gguf file") from exc
    except OSError as exc:
        raise TokenizerError(f"{path}: cannot read tokenizer file ({exc.strerror})") from exc
