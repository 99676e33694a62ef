#!/usr/bin/env python3
"""Build the English pretraining corpus of the bundled model from Debian packages, reproducibly.

    python scripts/build_corpus.py --out /work/cache/corpus [--sources kjv,devil,jargon,webster1913]
                                   [--sample src/llama2/assets/corpus/sample.jsonl]

Fetches each source's .deb with `apt-get download` (kept in --cache; no root install), unpacks it
with `dpkg-deb -x`, cleans the text into documents and writes OUT/corpus.jsonl (one
{"text", "source"} object per line) and OUT/sources.json (package versions, .deb hashes,
licences, counts). Needs a Debian-like system: apt-get, dpkg-deb, gzip.

Sources and licences (read from each package's copyright file):
  kjv          bible-kjv-text  King James Version (1611), one document per chapter.   public domain
  devil        dict-devil      Ambrose Bierce, The Devil's Dictionary (1911).         public domain
  jargon       dict-jargon     The Jargon File 4.4.7 (2003).                          public domain
  webster1913  dict-gcide      GCIDE entries whose every source tag is Webster's 1913 dictionary or its
                               1913 supplement (public domain); entries with any WordNet, contributor
                               (PJC, ...) or other tag are dropped, as GCIDE's own additions are GPL-2+.
  fortunes     fortunes        BSD fortune cookies: mixed authorship, many quotations of
                               copyrighted works; off by default, never for shipped models.
Dictionary entries and fortunes are grouped, in their original order, into documents of about
DOCUMENT_CHARS characters; the Bible is one document per chapter.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

DOCUMENT_CHARS = 3000
SAMPLE_BYTES = 1_000_000
# Whole KJV books that make the shipped sample, then The Devil's Dictionary fills it up.
SAMPLE_BOOKS = ("Genesis", "Ruth", "Esther", "Proverbs", "Ecclesiastes", "Jonah", "Mark", "John")

KJV_BOOKS = (
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth", "1 Samuel",
    "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles", "2 Chronicles", "Ezra", "Nehemiah", "Esther", "Job",
    "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon", "Isaiah", "Jeremiah", "Lamentations", "Ezekiel",
    "Daniel", "Hosea", "Joel", "Amos", "Obadiah", "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah",
    "Haggai", "Zechariah", "Malachi", "Matthew", "Mark", "Luke", "John", "Acts", "Romans", "1 Corinthians",
    "2 Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians", "1 Thessalonians",
    "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus", "Philemon", "Hebrews", "James", "1 Peter",
    "2 Peter", "1 John", "2 John", "3 John", "Jude", "Revelation",
)


@dataclass(frozen=True)
class Source:
    name: str
    package: str
    licence: str
    shippable: bool  # may a model or sample we distribute be trained on / contain it?
    read: Callable[[Path], Iterator[str]]  # unpacked package root -> documents


# --- The King James Version: bible-kjv-text's compressed verse file -------------------------------

def read_kjv(root: Path) -> Iterator[str]:
    """One document per chapter: "Book N" and then one verse per line (verse numbers dropped)."""
    text = _decompress_brs(root / "usr/lib/bible.data")
    verses = re.findall(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$", text, flags=re.M)
    books = list(dict.fromkeys(abbrev for abbrev, *_ in verses))
    if len(books) != len(KJV_BOOKS) or len(verses) != 31102:
        raise SystemExit(f"unexpected bible.data: {len(books)} books, {len(verses)} verses (expected 66, 31102)")
    names = dict(zip(books, KJV_BOOKS))
    chapter, lines = None, []
    for abbrev, number, _, verse in verses:
        if (abbrev, number) != chapter:
            if lines:
                yield "\n".join(lines)
            chapter, lines = (abbrev, number), [f"{names[abbrev]} {number}", ""]
        lines.append(verse.strip())
    yield "\n".join(lines)


def _decompress_brs(path: Path) -> str:
    """Chip Chapin's Bible Retrieval System data file: a header, a table of block offsets, then
    64 KiB blocks each compressed on its own with Unix `compress` (LZW) under one shared .Z header."""
    data = path.read_bytes()
    if not data.startswith(b"EC02Compressed Data File"):
        raise SystemExit(f"{path}: not a BRS 'EC02' compressed data file")
    n_blocks = struct.unpack(">I", data[0x58:0x5C])[0]
    offsets = struct.unpack(f">{n_blocks + 1}I", data[0x5C : 0x5C + 4 * (n_blocks + 1)])
    z_header = data[offsets[0] - 3 : offsets[0]]
    assert z_header[:2] == b"\x1f\x9d", "no Unix compress header before the first block"
    blocks = []
    for start, end in zip(offsets, offsets[1:]):
        result = subprocess.run(["gzip", "-dc"], input=z_header + data[start:end], capture_output=True, check=True)
        blocks.append(result.stdout)
    return b"".join(blocks).decode("ascii")


# --- dictd dictionaries (.index + .dict.dz) --------------------------------------------------------

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def dictd_entries(root: Path, name: str) -> list[str]:
    """The entries of a dictd database in file order (metadata entries `00-...` left out)."""
    data = gzip.open(root / f"usr/share/dictd/{name}.dict.dz").read()
    spans = set()
    for line in (root / f"usr/share/dictd/{name}.index").read_text(encoding="utf-8").splitlines():
        word, offset, length = line.split("\t")[:3]
        if not word.startswith("00"):
            spans.add((_b64(offset), _b64(length)))
    return [_decode(data[o : o + n]) for o, n in sorted(spans)]


def _b64(text: str) -> int:
    value = 0
    for char in text:
        value = value * 64 + _B64[char]
    return value


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")  # a few GCIDE entries carry Windows quotes


def read_devil(root: Path) -> Iterator[str]:
    return group(entry.strip("\n") for entry in dictd_entries(root, "devil"))


def read_jargon(root: Path) -> Iterator[str]:
    """Entries with `{cross reference}` braces removed and the body's 4-space indent taken off."""
    for document in group(_clean_jargon(entry) for entry in dictd_entries(root, "jargon")):
        yield document


def _clean_jargon(entry: str) -> str:
    entry = re.sub(r"\{([^{}]*)\}", r"\1", entry.strip("\n"))
    return re.sub(r"^ {1,4}", "", entry, flags=re.M)


# GCIDE source tags are lines holding only bracketed groups, e.g. "      [1913 Webster]".
_TAG_LINE = re.compile(r"^[ \t]*(?:\[[^\]\n]*\][ \t]*)+$", re.M)
_PUBLIC_DOMAIN_TAGS = {"[1913 Webster]", "[Webster 1913 Suppl.]", "[1913 Webster + Webster 1913 Suppl.]"}
# Inline marks of other sources: WordNet, the Century, or contributors' initials such as [PJC], [AS].
_OTHER_SOURCE = re.compile(r"\[[^\]\n]*(?:WordNet|Century|\b[A-Z]{2,4}\b(?!\.))[^\]\n]*\]")
_PRONUNCIATION = re.compile(r"[ \t]*\\[^\\\n]*\\")
# Respellings for pronunciation, e.g. "(h[add]d)" or "([a^]b`[a^]n*n[i^]sh"[u^]n)": dropped whole.
_RESPELLING = re.compile(r"[ \t]*\((?=[^()\n]*(?:\*|\[[^\]\s]{1,6}\]))[^()\n]*\)")
# GCIDE's ASCII spellings of accented letters ("['e]" is é, "[i^]" ĭ, "[imac]" ī) and of a few symbols.
_ACCENTS = {"'": "\u0301", "`": "\u0300", '"': "\u0308", "~": "\u0303", "=": "\u0304", "-": "\u0306", ".": "\u0307", ",": "\u0327"}
_SYMBOLS = {"ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "eth": "ð", "thorn": "þ", "deg": "°", "frac12": "½",
            "frac14": "¼", "frac34": "¾", "sect": "§", "pound": "£", "cced": "ç", "ntil": "ñ", "aum": "ä", "root": "√"}


def _accented(letter: str, mark: str) -> str:
    return unicodedata.normalize("NFC", letter + mark)


def read_webster1913(root: Path) -> Iterator[str]:
    """GCIDE entries sourced only from Webster's 1913 (public domain), cleaned to plain text."""
    return group(_clean_gcide(entry) for entry in dictd_entries(root, "gcide") if _is_webster_1913(entry))


def _is_webster_1913(entry: str) -> bool:
    tags = [line.strip() for line in _TAG_LINE.findall(entry)]
    return bool(tags) and all(tag in _PUBLIC_DOMAIN_TAGS for tag in tags) and not _OTHER_SOURCE.search(entry)


def _clean_gcide(entry: str) -> str:
    lines = entry.strip("\n").splitlines()
    start = next((i for i, line in enumerate(lines) if line[:1].strip()), 0)  # skip text spilled from before the headword
    entry = "\n".join(lines[start:])
    entry = _TAG_LINE.sub("", entry)
    entry = _PRONUNCIATION.sub("", entry)
    entry = _RESPELLING.sub("", entry)
    entry = re.sub(r"\{([^{}]*)\}", r"\1", entry)
    entry = re.sub(r"\[([`'\"~=.,-])([A-Za-z])\]", lambda m: _accented(m[2], _ACCENTS[m[1]]), entry)
    entry = re.sub(r"\[([A-Za-z])\^\]", lambda m: _accented(m[1], "\u0306"), entry)
    entry = re.sub(r"\[([A-Za-z])mac\]", lambda m: _accented(m[1], "\u0304"), entry)
    entry = re.sub(r"\[([A-Za-z]+[0-9]*)\]", lambda m: _SYMBOLS.get(m[1], m[0]), entry)
    entry = re.sub(r"^ {1,3}", "", entry, flags=re.M)
    return re.sub(r"\n{3,}", "\n\n", entry).strip("\n")


# --- fortunes --------------------------------------------------------------------------------------

def read_fortunes(root: Path) -> Iterator[str]:
    """Fortune files (`%`-separated cookies), grouped per file; the `.dat` indexes are skipped."""
    for path in sorted((root / "usr/share/games/fortunes").iterdir()):
        if path.is_file() and not path.is_symlink() and path.suffix != ".dat":
            cookies = re.split(r"^%$", path.read_text(encoding="utf-8", errors="replace"), flags=re.M)
            yield from group(c.strip("\n") for c in cookies)


def group(entries: Iterable[str], limit: int = DOCUMENT_CHARS) -> Iterator[str]:
    """Consecutive non-blank entries joined by blank lines into documents of about `limit` characters."""
    document: list[str] = []
    size = 0
    for entry in entries:
        if not entry.strip():
            continue
        document.append(entry)
        size += len(entry) + 2
        if size >= limit:
            yield "\n\n".join(document)
            document, size = [], 0
    if document:
        yield "\n\n".join(document)


SOURCES = {
    s.name: s
    for s in (
        Source("kjv", "bible-kjv-text", "public domain (King James Version, 1611)", True, read_kjv),
        Source("devil", "dict-devil", "public domain (Ambrose Bierce, The Devil's Dictionary, 1911)", True, read_devil),
        Source("jargon", "dict-jargon", "public domain (The Jargon File 4.4.7)", True, read_jargon),
        Source("webster1913", "dict-gcide", "public domain (Webster's Revised Unabridged Dictionary, 1913, as "
               "transcribed in GCIDE; GCIDE's own additions, GPL-2+, are dropped)", True, read_webster1913),
        Source("fortunes", "fortunes", "mixed authorship; fortune program BSD-licensed, many cookies quote "
               "copyrighted works", False, read_fortunes),
    )
}
DEFAULT_SOURCES = ("kjv", "devil", "jargon", "webster1913")


# --- fetching and writing --------------------------------------------------------------------------

def fetch_package(package: str, cache: Path) -> tuple[Path, Path]:
    """The package's .deb in `cache` (downloaded once) and the directory it is unpacked into."""
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob(f"{package}_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", package], cwd=cache, check=True)
        debs = sorted(cache.glob(f"{package}_*.deb"))
    deb = debs[-1]
    root = cache / "unpacked" / deb.stem
    if not root.is_dir():
        tmp = root.with_name(f".{root.name}.tmp")
        subprocess.run(["rm", "-rf", str(tmp)], check=True)
        tmp.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        os.replace(tmp, root)
    return deb, root


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def sample_records(records: list[dict], budget: int) -> list[dict]:
    """SAMPLE_BOOKS' chapters, then Devil's Dictionary documents, while they fit in `budget` bytes."""
    books = [r for r in records if r["source"] == "kjv" and _kjv_book(r["text"]) in SAMPLE_BOOKS]
    devil = [r for r in records if r["source"] == "devil"]
    chosen, size = [], 0
    for record in books + devil:
        line = len(json.dumps(record, ensure_ascii=False).encode()) + 1
        if size + line > budget:
            break
        chosen.append(record)
        size += line
    return chosen


def _kjv_book(chapter: str) -> str:
    """"Genesis" from a chapter document headed "Genesis 1"."""
    return chapter.split("\n", 1)[0].rsplit(" ", 1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for corpus.jsonl and sources.json")
    parser.add_argument("--cache", type=Path, default=None, help="where .debs are kept and unpacked (default OUT/debs)")
    parser.add_argument("--sources", default=",".join(DEFAULT_SOURCES), help=f"comma-separated, from {', '.join(SOURCES)}")
    parser.add_argument("--sample", type=Path, default=None, help="also write the shipped sample (public domain only) here")
    parser.add_argument("--sample-bytes", type=int, default=SAMPLE_BYTES)
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.sources.split(",") if n.strip()]
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        parser.error(f"unknown source(s) {', '.join(unknown)}; choose from {', '.join(SOURCES)}")
    cache = args.cache or args.out / "debs"
    records, described = [], []
    for name in names:
        source = SOURCES[name]
        deb, root = fetch_package(source.package, cache)
        documents = [{"text": text, "source": name} for text in source.read(root)]
        records.extend(documents)
        described.append({
            "name": name, "package": source.package, "deb": deb.name, "deb_sha256": sha256(deb),
            "licence": source.licence, "shippable": source.shippable, "documents": len(documents),
            "bytes": sum(len(d["text"].encode()) for d in documents),
        })
    write_jsonl(args.out / "corpus.jsonl", records)
    (args.out / "sources.json").write_text(json.dumps(described, indent=2) + "\n")

    print(f"{'source':<12} {'package':<15} {'documents':>10} {'bytes':>12}  licence")
    for d in described:
        print(f"{d['name']:<12} {d['package']:<15} {d['documents']:>10,} {d['bytes']:>12,}  {d['licence']}")
    print(f"{'total':<28} {sum(d['documents'] for d in described):>10,} {sum(d['bytes'] for d in described):>12,}")
    print(f"wrote {args.out / 'corpus.jsonl'} ({(args.out / 'corpus.jsonl').stat().st_size:,} bytes)")

    if args.sample:
        if not {"kjv", "devil"} <= set(names):
            parser.error("--sample needs the kjv and devil sources")
        sample = sample_records(records, args.sample_bytes)
        write_jsonl(args.sample, sample)
        print(f"wrote sample {args.sample}: {len(sample)} documents, {args.sample.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
