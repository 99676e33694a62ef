"""Find and read the result folders named on the report's command line, telling each kind by its files.

A path may be:
- a benchmark output folder (`llama2 eval run --output DIR`: `DIR/<model>/<task>/summary.json`),
  one model's folder in it, or one `<model>/<task>` folder;
- a pairwise study (`llama2 eval pairwise --output DIR`: `summary.json` with `"kind": "pairwise"`);
- a human-ratings folder (`llama2 eval ratings import --output DIR`: `"kind": "human"`);
- a safety study (`"kind": "safety"`);
- a folder holding any of these in its subfolders (searched a few levels down).
Anything else is a DataError naming the path and what was expected. Benchmark results are keyed by
model and task: the same pair given twice (say, two runs of one model) is an error rather than a
silent choice between them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama2.errors import DataError
from llama2.evaluate.results import SUMMARY_FILE, StoredResult, read_result

KINDS = ("pairwise", "human", "safety")
_MAX_DEPTH = 3  # how far below a given folder result folders are looked for
_EXPECTED = ("a results folder: expected summary.json from `llama2 eval run --output DIR` (DIR/<model>/<task>/), "
             "`llama2 eval pairwise`, `llama2 eval ratings import` or `llama2 eval safety`")


@dataclass(frozen=True)
class Study:
    """A pairwise study, a human-ratings import or a safety study: its folder and summary."""

    folder: Path
    kind: str
    summary: dict[str, Any]


@dataclass
class Inputs:
    """Everything the report was given, by kind, each list in the order found."""

    benchmarks: list[StoredResult] = field(default_factory=list)
    pairwise: list[Study] = field(default_factory=list)
    human: list[Study] = field(default_factory=list)
    safety: list[Study] = field(default_factory=list)
    sources: list[dict[str, str]] = field(default_factory=list)  # {"path", "kind", "what"} per folder read

    def empty(self) -> bool:
        return not (self.benchmarks or self.pairwise or self.human or self.safety)


def load_inputs(paths: list[Path | str]) -> Inputs:
    """Read every path (see the module docstring); DataError for a path that holds no results."""
    if not paths:
        raise DataError("no results given; name one or more result folders (from llama2 eval run, pairwise, "
                        "ratings import or safety)")
    inputs = Inputs()
    seen: dict[tuple[str, str], Path] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise DataError(f"{path}: no such file or folder; give {_EXPECTED}")
        if path.is_file():
            if path.name != SUMMARY_FILE:
                raise DataError(f"{path}: a file, not {_EXPECTED}")
            path = path.parent
        found = _collect(path, inputs, seen, depth=0)
        if not found:
            raise DataError(f"{path}: not {_EXPECTED}")
    return inputs


def _collect(folder: Path, inputs: Inputs, seen: dict[tuple[str, str], Path], depth: int) -> int:
    """Add what `folder` holds to `inputs`; returns how many result folders were read."""
    summary = _summary(folder)
    if summary is not None:
        return _add(folder, summary, inputs, seen)
    if depth >= _MAX_DEPTH:
        return 0
    return sum(_collect(child, inputs, seen, depth + 1) for child in sorted(folder.iterdir())
               if child.is_dir() and not child.name.startswith("."))


def _add(folder: Path, summary: dict[str, Any], inputs: Inputs, seen: dict[tuple[str, str], Path]) -> int:
    kind = summary.get("kind")
    if kind in KINDS:
        study = Study(folder, kind, summary)
        {"pairwise": inputs.pairwise, "human": inputs.human, "safety": inputs.safety}[kind].append(study)
        inputs.sources.append({"path": str(folder), "kind": kind, "what": _describe(study)})
        return 1
    if kind is None and {"model", "task", "primary"} <= set(summary):
        result = read_result(folder)
        key = (result.spec, result.task)
        if key in seen:
            raise DataError(f"{folder}: {result.spec} on {result.task} is also in {seen[key]}; give only one run "
                            "of each model and task")
        seen[key] = folder
        inputs.benchmarks.append(result)
        inputs.sources.append({"path": str(folder), "kind": "benchmark",
                               "what": f"{result.task} on {result.spec} ({summary.get('n_scored', 0)} samples scored)"})
        return 1
    raise DataError(f"{folder / SUMMARY_FILE}: unknown summary (kind {kind!r}); give {_EXPECTED}")


def _summary(folder: Path) -> dict[str, Any] | None:
    path = folder / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error}); rerun the command that wrote it") from None
    if not isinstance(summary, dict):
        raise DataError(f"{path}: not a results summary (a JSON object); give {_EXPECTED}")
    return summary


def _describe(study: Study) -> str:
    s = study.summary
    models = ", ".join(s.get("models") or [])
    if study.kind == "pairwise":
        judge = (s.get("judge") or {}).get("spec")
        return f"pairwise study of {models} on {s.get('prompts', {}).get('count', '?')} prompts, " + \
            (f"judged by {judge}" if judge else "answers only (no judge)")
    if study.kind == "human":
        return f"human ratings of {models}: {s.get('ratings', '?')} ratings by {len(s.get('raters', []))} rater(s)"
    return f"safety study of {models}"
