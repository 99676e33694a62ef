"""`llama2 report` end to end: result folders made by the real commands' code in, the HTML page,
Markdown and JSON out (atomically, at the paths given), a summary line of what was shown, and
one-line errors for folders that hold no results."""

from __future__ import annotations

import json

import pytest

from llama2.cli.main import main

from .test_report import make_benchmarks, make_study


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli-report")
    return make_benchmarks(tmp / "bench", tmp), make_study(tmp / "study", tmp)


def test_report_writes_html_markdown_and_json(tmp_path, capsys, results):
    bench, study = results
    out = tmp_path / "out"
    assert main(["report", str(bench), str(study), "-o", str(out / "report.html"), "--markdown", str(out / "report.md"),
                 "--json", str(out / "report.json"), "--title", "Open vs closed"]) == 0
    printed = capsys.readouterr().out
    assert "5 result folder(s), 6 model(s); sections: benchmarks, pairwise, ladder, cost" in printed
    assert f"wrote {out / 'report.html'}" in printed and f"wrote {out / 'report.json'}" in printed
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<title>Open vs closed</title>" in html and "<svg" in html
    assert (out / "report.md").read_text().startswith("# Open vs closed\n")
    content = json.loads((out / "report.json").read_text())
    assert content["title"] == "Open vs closed" and content["agreement"] is None and content["safety"] is None
    summary = json.loads((study / "summary.json").read_text())
    shown, stored = content["pairwise"]["studies"][0]["pairs"][0], summary["pairs"][0]
    assert shown["win"]["estimate"] == stored["result"]["win"]["estimate"]


def test_default_output_is_report_html_and_reruns_replace_it(tmp_path, monkeypatch, capsys, results):
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(results[1])]) == 0
    first = (tmp_path / "report.html").read_text()
    assert "sections: pairwise, ladder, cost" in capsys.readouterr().out
    assert main(["report", str(results[1]), "--title", "Again"]) == 0
    assert "<title>Again</title>" in (tmp_path / "report.html").read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temporary file left behind


def test_bad_folders_are_one_line_errors(tmp_path, capsys, results):
    (tmp_path / "empty").mkdir()
    for args, message in [
        ([str(tmp_path / "empty")], "not a results folder: expected summary.json from `llama2 eval run"),
        ([str(tmp_path / "nowhere")], "no such file or folder"),
        ([str(results[0]), str(results[0])], "is also in"),
    ]:
        assert main(["report", *args, "-o", str(tmp_path / "r.html")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("llama2: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "r.html").exists()
