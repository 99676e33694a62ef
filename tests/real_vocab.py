"""The real Llama 2 vocabulary, fetched at test time (its licence forbids committing it).

llama.cpp ships it as `models/ggml-vocab-llama-spm.gguf` (a vocab-only GGUF made from
Llama-2-7b-hf) with test vectors beside it: `.gguf.inp` holds texts separated by
`\\n__ggml_vocab_test__\\n`, `.gguf.out` one line of ids per text (no BOS, dummy prefix applied).
The files come from the directory in LLAMA2_LLAMA_VOCAB_DIR, or are unpacked from the
llama-cpp-python 0.3.36 sdist named by LLAMA2_LLAMA_CPP_SDIST. Without either, tests that need them
are skipped, except under CI (env var CI set), where that is a failure.
"""

from __future__ import annotations

import functools
import os
import tarfile
from pathlib import Path

import pytest

from llama2.model.tokenizer import Tokenizer

VOCAB_DIR_ENV = "LLAMA2_LLAMA_VOCAB_DIR"
SDIST_ENV = "LLAMA2_LLAMA_CPP_SDIST"
VOCAB_FILE = "ggml-vocab-llama-spm.gguf"
FILES = (VOCAB_FILE, VOCAB_FILE + ".inp", VOCAB_FILE + ".out")
_SDIST_DIR = "/vendor/llama.cpp/models/"
_SEPARATOR = "\n__ggml_vocab_test__\n"


def llama_vocab_dir(scratch: Path) -> Path:
    """Directory holding FILES; unpacks the sdist into `scratch` if needed. Skips or fails when unavailable."""
    configured = os.environ.get(VOCAB_DIR_ENV)
    if configured:
        missing = [name for name in FILES if not (Path(configured) / name).is_file()]
        if missing:
            pytest.fail(f"{VOCAB_DIR_ENV}={configured} lacks {', '.join(missing)}")
        return Path(configured)
    sdist = os.environ.get(SDIST_ENV)
    if sdist:
        return _unpack(Path(sdist), scratch / "llama-vocab")
    reason = (
        f"real Llama 2 vocabulary unavailable: set {VOCAB_DIR_ENV} to a directory with {', '.join(FILES)}, "
        f"or {SDIST_ENV} to llama-cpp-python 0.3.36's sdist "
        "(pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36)"
    )
    if os.environ.get("CI"):
        pytest.fail(reason + " (required when CI is set)")
    pytest.skip(reason)


def _unpack(sdist: Path, dest: Path) -> Path:
    if all((dest / name).is_file() for name in FILES):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {_SDIST_DIR + name: name for name in FILES}
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar:
                name = next((n for suffix, n in wanted.items() if member.name.endswith(suffix)), None)
                if name and member.isfile():
                    tmp = dest / (name + ".part")
                    tmp.write_bytes(tar.extractfile(member).read())
                    tmp.replace(dest / name)
                if all((dest / n).is_file() for n in FILES):
                    return dest
    except (OSError, tarfile.TarError) as exc:
        pytest.fail(f"{SDIST_ENV}={sdist}: cannot read the sdist ({exc})")
    where = _SDIST_DIR.strip("/")
    pytest.fail(f"{SDIST_ENV}={sdist}: no {VOCAB_FILE} (+ .inp/.out) under {where}; use llama-cpp-python 0.3.36's sdist")


def read_test_vectors(vocab_dir: Path) -> list[tuple[str, list[int]]]:
    """(text, expected ids without BOS) pairs from the `.inp` / `.out` files."""
    texts = (vocab_dir / FILES[1]).read_bytes().decode("utf-8").split(_SEPARATOR)
    assert texts[-1] == "", "the .inp file ends with a separator"
    lines = (vocab_dir / FILES[2]).read_bytes().decode("utf-8").split("\n")
    assert lines[-1] == "", "the .out file ends with a newline"
    assert len(texts) == len(lines), f"{len(texts) - 1} texts but {len(lines) - 1} id lines"
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts[:-1], lines[:-1])]


@functools.cache
def _load(path: Path) -> Tokenizer:
    return Tokenizer(path)


@pytest.fixture(scope="session")
def llama_vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory with the real vocabulary GGUF and its test vectors."""
    return llama_vocab_dir(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def llama_tokenizer(llama_vocab: Path) -> Tokenizer:
    """The real Llama 2 tokenizer, rebuilt from the GGUF (loaded once per session)."""
    return _load(llama_vocab / VOCAB_FILE)
