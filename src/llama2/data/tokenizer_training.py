"""Train a SentencePiece tokenizer the way Llama's was built (LLAMA2.md §1.3).

Llama's `tokenizer.model` records its trainer settings: BPE, numbers split into single digits,
unknown UTF-8 characters falling back to bytes, an identity normalizer that keeps whitespace as is,
a dummy prefix space, `<unk>`=0 `<s>`=1 `</s>`=2 and no pad piece. Those are fixed here; only the
vocabulary size, the input sample and the character coverage are choices.

SentencePiece reads "sentences": every non-blank line of every document is one. With more lines
than `max_sentences`, it keeps a uniform random sample of them (seeded, so training is repeatable).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from llama2.data.corpus import Document
from llama2.errors import DataError, TokenizerError
from llama2.model.tokenizer import Tokenizer

DEFAULT_MAX_SENTENCES = 10_000_000
DEFAULT_CHARACTER_COVERAGE = 0.99995  # Llama's; byte fallback covers the rarest characters
MAX_SENTENCE_BYTES = 4192  # Llama's; longer lines are left out of training (they are still encoded later)

LLAMA_TRAINER_SPEC = {
    "model_type": "bpe",
    "split_digits": True,
    "byte_fallback": True,
    "split_by_unicode_script": True,
    "split_by_number": True,
    "split_by_whitespace": True,
    "treat_whitespace_as_suffix": False,
    "allow_whitespace_only_pieces": True,
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "add_dummy_prefix": True,
    "unk_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "pad_id": -1,
    "hard_vocab_limit": True,
    "max_sentence_length": MAX_SENTENCE_BYTES,
}


@dataclass(frozen=True)
class TrainedTokenizer:
    """Where the model was written, its size, and how many lines were read (before sampling)."""

    path: Path
    vocab_size: int
    sentences: int


def train_tokenizer(
    documents: Iterable[str | Document],
    out: str | os.PathLike[str],
    *,
    vocab_size: int,
    max_sentences: int = DEFAULT_MAX_SENTENCES,
    character_coverage: float = DEFAULT_CHARACTER_COVERAGE,
    seed: int = 0,
    num_threads: int | None = None,
) -> TrainedTokenizer:
    """Train a Llama-style BPE model on the lines of `documents` and write it atomically to `out`."""
    if vocab_size < 1:
        raise TokenizerError(f"vocab_size must be positive, got {vocab_size}")
    if max_sentences < 1:
        raise TokenizerError(f"max_sentences must be positive, got {max_sentences}")
    if not 0 < character_coverage <= 1:
        raise TokenizerError(f"character_coverage must be in (0, 1], got {character_coverage}")
    lines = _LineCounter(documents)
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            vocab_size=vocab_size,
            character_coverage=character_coverage,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            num_threads=num_threads or os.cpu_count() or 1,
            minloglevel=2,
            **LLAMA_TRAINER_SPEC,
        )
    except RuntimeError as exc:
        if lines.count == 0:
            raise DataError("the corpus is empty: the inputs hold no non-blank lines to train a tokenizer on") from exc
        reason = str(exc).splitlines()[0].rpartition("] ")[2]  # drop SentencePiece's source location
        raise TokenizerError(f"cannot train a {vocab_size}-piece tokenizer on {lines.count} lines ({reason}); "
                             "lower --vocab-size or give more text") from exc
    path = Tokenizer.from_proto(model.getvalue()).save(Path(out))
    return TrainedTokenizer(path, vocab_size, lines.count)


class _LineCounter:
    """The non-blank lines of the documents, counting them as SentencePiece reads them."""

    def __init__(self, documents: Iterable[str | Document]) -> None:
        self.documents, self.count = documents, 0

    def __iter__(self) -> Iterator[str]:
        for document in self.documents:
            text = document.text if isinstance(document, Document) else document
            for line in text.splitlines():
                if line.strip():
                    self.count += 1
                    yield line
