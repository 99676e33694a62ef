"""The shared progress bar: what it draws on a terminal, that it draws nothing elsewhere, and a
rate that counts only this run's work."""

from __future__ import annotations

import time
from types import SimpleNamespace

from llama2.progress import ProgressBar, _RateColumn


def test_a_terminal_bar_shows_count_rate_eta_and_extra_fields(capsys, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich draws as on a terminal
    monkeypatch.setenv("COLUMNS", "200")
    with ProgressBar("scoring", 4, unit="items", fields=("cost",)) as bar:
        assert bar.live
        bar.advance(3, cost="$0.25")
        bar.advance(1)
    err = capsys.readouterr().err
    assert "scoring" in err and "4/4" in err and "items/s" in err and "$0.25" in err and "ETA" in err


def test_nothing_is_drawn_when_disabled_or_not_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")
    with ProgressBar("quiet", 2, unit="items", enabled=False) as bar:
        bar.advance(2)
        assert not bar.live
    monkeypatch.delenv("FORCE_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    with ProgressBar("piped", 2, unit="items") as bar:  # pytest's captured stderr is not a terminal
        bar.advance(2)
        assert not bar.live
    assert capsys.readouterr().err == ""


def test_the_rate_counts_only_work_done_since_the_start():
    """A resumed job starts at 10 of 100: 20 more in 2 s is 10 per second, not 15."""
    task = SimpleNamespace(completed=30, fields={"initial": 10, "started": time.perf_counter() - 2.0})
    assert str(_RateColumn("steps").render(task)).startswith("10.0 steps/s")
    task.completed = 10
    assert str(_RateColumn("steps").render(task)) == ""  # nothing done yet: no rate rather than 0
