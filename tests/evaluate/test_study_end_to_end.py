"""A whole pairwise study offline, as a team would run it, through the commands: two local models and
a third behind llama.cpp's OpenAI-compatible server answer the same prompts, one of our own local
models judges every pair in both orders, three people's ratings come back from files, the ladder,
agreement and the gap report are made from it all, and the report renders in headless Chromium.

The bundled models are far too small to judge well: what is checked is that every step ran on real
models and real servers and that each number in the report is the one its step computed."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from llama2.cli.main import main

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PROMPTS = [
    {"id": "capital", "category": "factual", "prompt": "What is the capital of France?"},
    {"id": "sum", "category": "reasoning", "prompt": "What is 12 plus 7?"},
    {"id": "poem", "category": "writing", "prompt": "Write one line about the sea."},
    {"id": "follow-up", "category": "factual", "messages": [
        {"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "An apple."},
        {"role": "user", "content": "And a colour?"}]},
]
RATERS = ("ann", "bob", "cho")


@pytest.mark.slow
def test_a_whole_study_from_answers_to_the_report(tmp_path, llama_cpp_url, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    models = ["local:default", "local:default-chat", f"{llama_cpp_url}/v1#tiny"]
    study, tasks, rated = tmp_path / "study", tmp_path / "tasks", tmp_path / "rated"

    arguments = ["eval", "pairwise", "--prompts", str(prompts), "--judge", "local:default-chat", "--mode", "wtl",
                 "--max-new-tokens", "12", "--output", str(study), "--cache", str(tmp_path / "cache.sqlite")]
    for model in models:
        arguments += ["-m", model]
    assert main(arguments) == 0
    summary = json.loads((study / "summary.json").read_text())
    pairs = len(models) * (len(models) - 1) // 2
    assert summary["judge"]["requests"]["asked"] == 2 * pairs * len(PROMPTS)  # both orders of every pair
    assert all(summary["answers"][m]["answered"] == len(PROMPTS) for m in models)
    judgments = [json.loads(line) for line in (study / "judgments.jsonl").read_text().splitlines()]
    assert len(judgments) == 2 * pairs * len(PROMPTS) and all(j["raw"] is not None for j in judgments)

    assert main(arguments) == 0  # a rerun is answered from the cache: nothing asked again
    assert json.loads((study / "summary.json").read_text())["judge"]["requests"]["cached"] == 2 * pairs * len(PROMPTS)

    assert main(["eval", "ratings", "export", str(study), "-o", str(tasks), "--seed", "1", "--scale", "wtl"]) == 0
    with open(tasks / "tasks.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == pairs * len(PROMPTS)
    for number, rater in enumerate(RATERS):  # people who mostly prefer the longer answer, each in their own way
        with open(tmp_path / f"{rater}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            for index, row in enumerate(rows):
                longer = "A" if len(row["answer_a"]) >= len(row["answer_b"]) else "B"
                vote = "tie" if (index + number) % 5 == 0 else longer
                writer.writerow({**row, "rater": rater, "rating": vote})
    assert main(["eval", "ratings", "import", *(str(tmp_path / f"{r}.csv") for r in RATERS),
                 "--key", str(tasks / "key.csv"), "--scale", "wtl", "-o", str(rated)]) == 0
    human = json.loads((rated / "summary.json").read_text())
    assert human["ratings"] == len(RATERS) * pairs * len(PROMPTS)

    capsys.readouterr()
    assert main(["eval", "ladder", str(rated / "votes.csv"), "--json"]) == 0
    ladder = json.loads(capsys.readouterr().out)
    assert sorted(r["model"] for r in ladder["ratings"]) == sorted(models)
    assert main(["eval", "agreement", str(rated / "agreement.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)

    report = tmp_path / "report.html"
    assert main(["report", str(study), str(rated), "-o", str(report), "--json", str(tmp_path / "report.json")]) == 0
    content = json.loads((tmp_path / "report.json").read_text())
    text = json.dumps(content)
    assert all(model in text for model in models)
    _renders_in_chromium(report)


def _renders_in_chromium(report: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing in CI; apt-get install chromium")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(report.as_uri())
            page.screenshot(path=str(ARTIFACTS / "study-report.png"), full_page=True)
            sizes = page.eval_on_selector_all("svg", "els => els.map(e => [e.getBoundingClientRect().width, "
                                              "e.getBoundingClientRect().height])")
            assert sizes and all(w > 100 and h > 50 for w, h in sizes), sizes
            assert errors == []
        finally:
            browser.close()
