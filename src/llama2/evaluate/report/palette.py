"""One colour and one short label per model, the same in every plot and table of a report.

Colours follow the order in which models first appear in the inputs, from Okabe and Ito's
colour-blind-safe set (the paper's published figures are drawn in grey, never in a model's colour).
Labels shorten a spec to what tells models apart (`local:/models/llama-2-7b-chat` ->
`llama-2-7b-chat`, `http://host:8000/v1#vicuna` -> `vicuna`); where two specs would share a label,
both keep their full spec."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C6D31", "#6A3D9A",
          "#B2182B", "#1B7837", "#2166AC", "#762A83")
PUBLISHED_COLOR = "#8A8F98"
LOCAL_SCHEMES = ("local:", "vllm:")  # run in this process: no API bill


def model_table(specs: Iterable[str]) -> dict[str, dict[str, Any]]:
    """`{spec: {"label", "color", "local"}}` for the distinct specs, in order of first appearance."""
    ordered = list(dict.fromkeys(specs))
    labels = [short_label(spec) for spec in ordered]
    clashes = {label for label in labels if labels.count(label) > 1}
    return {spec: {"label": spec if label in clashes else label, "color": COLORS[i % len(COLORS)],
                   "local": is_local(spec)}
            for i, (spec, label) in enumerate(zip(ordered, labels))}


def short_label(spec: str) -> str:
    """A short name for a model spec (see the module docstring)."""
    if re.match(r"https?://", spec):
        return spec.partition("#")[2] or re.sub(r"^https?://", "", spec)
    scheme, sep, target = spec.partition(":")
    if sep and ("/" in target or "\\" in target):
        return re.split(r"[/\\]", target.rstrip("/\\"))[-1] or spec
    return spec


def is_local(spec: str) -> bool:
    """Whether the model ran in this process (our engine or vLLM), so its answers have no API price."""
    return spec.startswith(LOCAL_SCHEMES)
