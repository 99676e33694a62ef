"""Best-of-K selection for rejection sampling (Llama 2 §3.2.3; LLAMA2.md §5.1), and the reward
against K curves of the paper's Figure 7.

`Pool` keeps the best answer per prompt across iterations. Up to RLHF-V3 the paper selected only
among the latest iteration's samples, which caused regressions (a model that forgot how to rhyme);
later versions pooled the top samples of all earlier iterations. `Pool.offer` replaces a prompt's
answer only with a strictly higher reward, so a later iteration's worse sample never displaces an
earlier better one.

`reward_vs_k` gives, for k = 1..K, the mean over prompts of the maximum and the median reward among
k answers. The curve of "the first k samples" is one noisy draw of it; we report its expectation
over all k-subsets of the K answers, exactly, from order statistics: the j-th smallest of K values
is the m-th smallest of a random k-subset with probability C(j-1, m-1) C(K-j, k-m) / C(K, k).
Both curves are therefore smooth, and the maximum never falls as k grows.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llama2.atomic import atomic_file, write_text


@dataclass(frozen=True)
class Candidate:
    """An answer that may become a prompt's training target: its reward and where it came from."""

    key: str  # the prompt's identity (its dialog as JSON)
    response: str
    reward: float
    iteration: int
    sample: int


class Pool:
    """The best candidate per prompt over all iterations so far (see the module docstring)."""

    def __init__(self) -> None:
        self.best: dict[str, Candidate] = {}

    def offer(self, candidate: Candidate) -> bool:
        """Keep `candidate` if its prompt has none yet or a lower reward; returns whether it was kept."""
        held = self.best.get(candidate.key)
        if held is not None and held.reward >= candidate.reward:
            return False
        self.best[candidate.key] = candidate
        return True

    def __len__(self) -> int:
        return len(self.best)


def best_candidate(candidates: Iterable[Candidate]) -> Candidate | None:
    """The highest-reward candidate (the first of equals), or None when there is none."""
    best = None
    for candidate in candidates:
        if best is None or candidate.reward > best.reward:
            best = candidate
    return best


def order_statistic_weights(total: int, k: int, m: int) -> np.ndarray:
    """`(total,)`: the probability that the j-th smallest (j = 1..total) of `total` values is the
    m-th smallest of a uniformly random k-subset of them."""
    return np.array([math.comb(j - 1, m - 1) * math.comb(total - j, k - m) for j in range(1, total + 1)],
                    dtype=np.float64) / math.comb(total, k)


def expected_max(rewards: Sequence[float], k: int) -> float:
    """E[max of k answers drawn without replacement from `rewards`]."""
    ordered = np.sort(np.asarray(rewards, dtype=np.float64))
    return float(order_statistic_weights(len(ordered), k, k) @ ordered)


def expected_median(rewards: Sequence[float], k: int) -> float:
    """E[median of k answers drawn without replacement] (the mean of the middle two for even k)."""
    ordered = np.sort(np.asarray(rewards, dtype=np.float64))
    middle = [(k + 1) // 2] if k % 2 else [k // 2, k // 2 + 1]
    return float(np.mean([order_statistic_weights(len(ordered), k, m) @ ordered for m in middle]))


def reward_vs_k(rewards_per_prompt: Sequence[Sequence[float]]) -> list[dict[str, float]]:
    """Rows `{"k", "max", "median"}` for k = 1..K: the means over prompts of the expected maximum and
    median reward among k answers (Figure 7). Every prompt must have the same number K of rewards."""
    sizes = {len(r) for r in rewards_per_prompt}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"every prompt needs the same, positive number of rewards; got sizes {sorted(sizes)}")
    total = sizes.pop()
    return [{"k": k,
             "max": float(np.mean([expected_max(r, k) for r in rewards_per_prompt])),
             "median": float(np.mean([expected_median(r, k) for r in rewards_per_prompt]))}
            for k in range(1, total + 1)]


def write_table(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """The rows as CSV (k, max, median), atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["k", "max", "median"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({"k": r["k"], "max": f"{r['max']:.6g}", "median": f"{r['median']:.6g}"} for r in rows)
    return write_text(path, buffer.getvalue())


def plot(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: Path, *, title: str) -> Path:
    """A PNG of max (solid) and median (dashed) reward against k, one colour per curve label."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6, 4), dpi=120)
    axes = figure.add_subplot()
    for index, (label, rows) in enumerate(curves.items()):
        colour = f"C{index}"
        ks = [r["k"] for r in rows]
        axes.plot(ks, [r["max"] for r in rows], color=colour, marker="o", markersize=3, label=f"{label} max")
        axes.plot(ks, [r["median"] for r in rows], color=colour, linestyle="--", label=f"{label} median")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("N samples")
    axes.set_ylabel("reward model score")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    with atomic_file(path, overwrite=True) as tmp:
        figure.savefig(tmp, format="png")
    return path
