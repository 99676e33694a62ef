"""The one progress bar of every long job — training steps, sampled rollouts, benchmark requests,
GAtt replies, tokenized documents — so they all read the same way: what, how far (done/total), how
fast (units per second since the start), time elapsed and ETA, then whatever the job adds (loss,
running cost). Drawn with rich on stderr, and only on a terminal: in a log file or CI a bar is
noise, so callers print their own plain lines there (`live` says which)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text


class _RateColumn(ProgressColumn):
    """Units per second since the bar started, counting only this run's work (a resumed run starts
    part done). rich's own speed column needs several updates before it shows anything."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        elapsed = time.perf_counter() - task.fields["started"]
        done = task.completed - task.fields["initial"]
        rate = f"{done / elapsed:,.{1 if done / elapsed < 100 else 0}f} {self.unit}/s" if elapsed > 0 and done > 0 else ""
        return Text(rate, style="progress.data.speed")


class ProgressBar:
    """`with ProgressBar("sampling", 64, unit="replies") as bar: ... bar.advance(n)`.

    `fields` names extra text shown after the ETA (`bar.advance(n, cost="$0.01")` updates them);
    `completed` is where a resumed job starts. With `enabled=False`, or when stderr is not a
    terminal, nothing is drawn (`live` is False) and every call is a cheap no-op."""

    def __init__(self, description: str, total: int | None, *, unit: str, enabled: bool = True, completed: int = 0,
                 fields: tuple[str, ...] = (), transient: bool = False) -> None:
        self.console = Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        extra = [TextColumn(f"{{task.fields[{name}]}}") for name in fields]
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                             _RateColumn(unit), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), *extra,
                             console=self.console, disable=not self.live, transient=transient)
        self._task = self._bar.add_task(description, total=total, completed=completed, initial=completed,
                                        started=time.perf_counter(), **dict.fromkeys(fields, ""))

    def __enter__(self) -> "ProgressBar":
        return self.start()

    def start(self) -> "ProgressBar":
        if self.live:
            self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.live:
            self._bar.stop()
            self.live = False

    def advance(self, count: int = 1, **fields: Any) -> None:
        self._bar.update(self._task, advance=count, **fields)

    def update(self, completed: int, **fields: Any) -> None:
        """Set the count outright (a training loop knows its step) and any extra fields."""
        self._bar.update(self._task, completed=completed, **fields)

    def print(self, text: str) -> None:
        """A line above the bar (or a plain line when no bar is drawn)."""
        self.console.print(text, highlight=False, soft_wrap=True)
