"""The gap report (`llama2.evaluate.report`) on real result folders, made by running the real
runner, pairwise study and ratings import on scripted models: each section appears only for the
inputs that feed it, every number shown equals its input (or the statistic recomputed from it), the
page is one self-contained file, and it renders in headless Chromium (screenshot in
tests/artifacts/report.png)."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import zlib
from pathlib import Path

import pytest

from llama2.errors import DataError
from llama2.evaluate.agreement import agreement_report, read_ratings
from llama2.evaluate.benchmarks import get_task
from llama2.evaluate.benchmarks.mmlu import SUBJECT_CATEGORY
from llama2.evaluate.cache import ResponseCache
from llama2.evaluate.judge import load_template
from llama2.evaluate.ladder import bradley_terry, read_votes
from llama2.evaluate.pairwise import PairwiseConfig, run_pairwise
from llama2.evaluate.prompts import load_prompts
from llama2.evaluate.ratings import export_tasks, import_ratings, write_ratings
from llama2.evaluate.report import build_report
from llama2.evaluate.report.content import SECTIONS
from llama2.evaluate.report.render import render_html, render_json, render_markdown, write_report
from llama2.evaluate.results import read_result, write_result
from llama2.evaluate.runner import run_task
from llama2.evaluate.safety import SafetyConfig, load_prompt_sets, run_safety
from llama2.evaluate.safety_judge import load_answer_template
from llama2.providers.base import Capabilities, GenerateRequest
from llama2.providers.fake import FakeProvider
from llama2.providers.prices import Price
from llama2.providers.remote import Answer, Piece, RemoteProvider
from llama2.providers.settings import ProviderSettings

from .pairwise_doubles import ANSWERS, replies, write_prompt_set
from .safety_doubles import REFUSAL_TEXT, adversarial_rows, borderline_rows, rating_judge, scripted_answer, write_set

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = "/usr/bin/chromium"
SUBJECTS = ("astronomy", "philosophy", "sociology", "marketing")  # one per MMLU category
PRICE = Price(input=2000.0, output=8000.0)  # $ per million tokens


# ---- result folders, made by the real code -------------------------------------------------------


def write_mmlu(folder: Path, per_subject: int = 16) -> Path:
    """MMLU's layout (dev/ and test/ CSVs without a header) for SUBJECTS; question i's answer is "ABCD"[i % 4]."""
    for split, n in (("dev", 5), ("test", per_subject)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        for subject in SUBJECTS:
            with open(folder / split / f"{subject}_{split}.csv", "w", newline="") as handle:
                csv.writer(handle).writerows([f"{subject} {split} question {i}?", "w", "x", "y", "z", "ABCD"[i % 4]]
                                             for i in range(n))
    return folder


def _question(text: str) -> tuple[str, int]:
    subject, number = re.findall(r"(\w+) test question (\d+)\?", text)[-1]
    return subject, int(number)


def scholar(request) -> float:
    """Right on every MMLU question but one in three, and on astronomy only half the time."""
    subject, number = _question(request.context)
    right = number % 3 != 0 and not (subject == "astronomy" and number % 2)
    return 0.0 if request.continuation == f" {'ABCD'[number % 4 if right else (number + 1) % 4]}" else -1.0


class PricedAPI(RemoteProvider):
    """A chat API on the real RemoteProvider machinery (accounting, prices): answers "B" to MMLU
    and "The answer is 7." to anything else, 40 prompt and 5 completion tokens each, at PRICE."""

    capabilities = Capabilities(chat=True, text_completion=False, loglikelihood=False)

    def __init__(self) -> None:
        super().__init__("openai:priced", "priced", ProviderSettings(prices={"priced": PRICE}))

    async def _answer(self, request: GenerateRequest) -> Answer:
        await asyncio.sleep(0.002)
        text = "B" if "multiple choice" in request.prompt[-1]["content"] else "The answer is 7."
        return Answer(text, "stop", 40, 5, "priced")

    async def _pieces(self, request):  # pragma: no cover - the runner never streams
        yield Piece("", "stop", 0, 0, "priced")


def make_benchmarks(out: Path, data: Path) -> Path:
    """`llama2 eval run`'s output folder: fake:scholar (log-likelihood) and openai:priced (generate)
    on MMLU and GSM8K."""
    mmlu = write_mmlu(data / "mmlu")
    gsm8k = Path(__file__).parent / "data" / "gsm8k"
    providers = [FakeProvider("fake:scholar", score=scholar, answer=lambda r: "#### 7"), PricedAPI()]

    async def run():
        with ResponseCache(data / "cache.sqlite") as cache:
            for provider in providers:
                for task, folder in (("mmlu", mmlu), ("gsm8k", gsm8k)):
                    write_result(out, await run_task(provider, get_task(task), cache=cache, data_dir=folder))

    asyncio.run(run())
    return out


def mixed_judge(request: GenerateRequest) -> str:
    """A 7-point judge that leans to the longer reply but with a seeded scatter per prompt and order,
    so the two orders sometimes disagree (ties) and the rates are not all 0 or 100%."""
    a, b = replies(request)
    draw = zlib.crc32(request.prompt[-1]["content"].encode()) % 7
    lean = -2 if len(a) > len(b) else 2 if len(b) > len(a) else 0
    return f"Verdict: [[{min(7, max(1, 4 + lean + draw - 3))}]]"


def make_study(out: Path, tmp: Path, judge=mixed_judge) -> Path:
    """A pairwise study of fake:short, fake:long and fake:mid on 9 prompts, judged by fake:judge."""
    import llama2.providers.registry as registry

    made = {spec: FakeProvider(spec, answer=lambda r, text=text: text) for spec, text in ANSWERS.items()}
    made["fake:judge"] = FakeProvider("fake:judge", answer=judge)
    items = load_prompts(write_prompt_set(tmp / "prompts.jsonl", 8))
    config = PairwiseConfig(["fake:short", "fake:long", "fake:mid"], "fake:judge", "likert7",
                            load_template(None, "likert7"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "load_provider", lambda spec, **kw: made[spec])
        patch.setattr(registry, "canonical_spec", lambda spec: spec)
        asyncio.run(run_pairwise(config, items, output=out, cache_path=tmp / "pairwise.sqlite"))
    return out


def make_ratings(study: Path, out: Path, tmp: Path) -> Path:
    """Blinded tasks exported from `study`, filled in by three raters who mostly prefer the longer
    answer (each with their own seeded doubts), imported to `out`."""
    export_tasks(study, tmp / "tasks", seed=0)
    with open(tmp / "tasks" / "tasks.csv", newline="") as handle:
        tasks = list(csv.DictReader(handle))
    files = []
    for rater in ("ann", "bob", "cyd"):
        rows = []
        for task in tasks:
            shift = (0, 1, 2, -1)[zlib.crc32(f"{rater}{task['item']}".encode()) % 4]
            longer_a = len(task["answer_a"]) > len(task["answer_b"])
            rows.append({**task, "rater": rater, "rating": str(2 + shift if longer_a else 6 - shift)})
        path = tmp / f"{rater}.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        files.append(path)
    write_ratings(out, import_ratings(files, scale="likert7", key=tmp / "tasks" / "key.csv"), "likert7")
    return out


def make_safety(out: Path, tmp: Path) -> Path:
    """`llama2 eval safety`'s folder: fake:model (unsafe on 3 of 10 adversarial prompts, refusing 2
    of 5 borderline ones) and fake:careful (refuses everything), judged by fake:judge."""
    import llama2.providers.registry as registry

    made = {"fake:model": FakeProvider("fake:model", answer=scripted_answer),
            "fake:careful": FakeProvider("fake:careful", answer=lambda r: REFUSAL_TEXT),
            "fake:judge": FakeProvider("fake:judge", answer=rating_judge)}
    sets = load_prompt_sets(write_set(tmp / "adversarial.jsonl", adversarial_rows()),
                            write_set(tmp / "borderline.jsonl", borderline_rows()))
    templates = {kind: load_answer_template(None, kind) for kind in ("rating", "refusal")}
    config = SafetyConfig(models=["fake:model", "fake:careful"], judge="fake:judge", templates=templates)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "load_provider", lambda spec, **kw: made[spec])
        patch.setattr(registry, "canonical_spec", lambda spec: spec)
        asyncio.run(run_safety(config, sets, output=out, cache_path=tmp / "safety.sqlite"))
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{"bench", "study", "rated", "safety"}: one folder of each kind, made once for the module."""
    tmp = tmp_path_factory.mktemp("report-inputs")
    study = make_study(tmp / "study", tmp)
    return {"bench": make_benchmarks(tmp / "bench", tmp), "study": study,
            "rated": make_ratings(study, tmp / "rated", tmp), "safety": make_safety(tmp / "safety", tmp)}


@pytest.fixture(scope="module")
def full(folders):
    """The report's content from all four folders, and its HTML, Markdown and JSON."""
    content = build_report([folders["bench"], folders["study"], folders["rated"], folders["safety"]],
                           title="Test report")
    return content, render_html(content), render_markdown(content), json.loads(render_json(content))


# ---- sections ----------------------------------------------------------------------------------


@pytest.mark.parametrize("given, present", [
    (("bench",), {"benchmarks", "cost"}),
    (("study",), {"pairwise", "ladder", "cost"}),
    (("rated",), {"pairwise", "ladder", "agreement"}),
    (("safety",), {"safety", "cost"}),
    (("bench", "study", "rated", "safety"), set(SECTIONS)),
])
def test_each_section_appears_only_for_its_inputs(folders, given, present):
    content = build_report([folders[name] for name in given])
    assert {name for name in SECTIONS if content[name]} == present
    html, markdown, as_json = render_html(content), render_markdown(content), json.loads(render_json(content))
    headings = {"benchmarks": "## Benchmarks", "pairwise": "## Pairwise comparisons", "ladder": "## Bradley-Terry ladder",
                "agreement": "## Agreement", "safety": "## Safety", "cost": "## Latency and cost"}
    for name in SECTIONS:
        assert (f'<section class="block" id="{name}">' in html) == (name in present), name
        assert (f'href="#{name}"' in html) == (name in present), name
        assert (headings[name] in markdown) == (name in present), name
        assert (as_json[name] is not None) == (name in present), name


def test_benchmark_scores_and_published_figures(full, folders):
    content, html, markdown, as_json = full
    tasks = {task["task"]: task for task in as_json["benchmarks"]["tasks"]}
    assert set(tasks) == {"mmlu", "gsm8k"}
    for result_folder in sorted(folders["bench"].glob("*/*")):
        stored = read_result(result_folder)
        (row,) = [r for r in tasks[stored.task]["rows"] if r["model"] == stored.spec]
        primary = stored.summary["primary"]
        assert (row["estimate"], row["low"], row["high"]) == (primary["estimate"], primary["low"], primary["high"])
        assert row["n_scored"] == stored.summary["n_scored"] and row["mode"] == stored.summary["mode"]
        shown = f"{100 * primary['estimate']:.1f}"
        interval = f"[{100 * primary['low']:.1f}, {100 * primary['high']:.1f}]"
        assert f"{shown}<span class=\"ci\">{interval}</span>" in html
        assert f"{shown} {interval}" in markdown
    # fake:scholar gets 2 in 3 right except astronomy's odd questions: not a made-up number
    scholar_mmlu = [r for r in tasks["mmlu"]["rows"] if r["model"] == "fake:scholar"][0]
    assert 0.4 < scholar_mmlu["estimate"] < 0.7 and scholar_mmlu["low"] < scholar_mmlu["estimate"] < scholar_mmlu["high"]

    published = {p["model"]: p for p in tasks["mmlu"]["published"]}
    assert published["GPT-4"] == {"model": "GPT-4", "value": 0.864, "source": "Table 4"}
    assert published["Llama 2 7B"]["value"] == 0.453 and tasks["gsm8k"]["published"][0]["value"] == 0.92
    assert {"model": "Llama 2 70B", "value": 0.568, "source": "Tables 4, 25"} in tasks["gsm8k"]["published"]
    assert [t["task"] for t in as_json["benchmarks"]["tasks"]] == ["gsm8k", "mmlu"]  # columns in this order
    assert ('<tr class="published"><td>GPT-4</td><td class="n">92.0<span class="ci">Table 4</span></td>'
            '<td class="n">86.4<span class="ci">Table 4</span></td></tr>') in html
    assert "| *GPT-4 (published)* | *92.0* (Table 4) | *86.4* (Table 4) |" in markdown
    assert "| *Falcon 7B (published)* | — | *26.2* (Table 3) |" in markdown
    assert "GPT-4 (Table 4)" in html and "● measured, with 95% CI · ◇ published in the paper (grey)" in html


def test_mmlu_breakdown_by_category_equals_the_samples(full, folders):
    content = full[0]
    (breakdown,) = content["benchmarks"]["breakdowns"]
    assert breakdown["task"] == "mmlu" and breakdown["groups"] == ["stem", "humanities", "social_sciences", "other"]
    stored = read_result(folders["bench"] / "fake-scholar" / "mmlu")
    for row in (r for r in breakdown["rows"] if r["model"] == "fake:scholar"):
        values = [s.metrics["acc"] for s in stored.samples() if SUBJECT_CATEGORY[s.group] == row["group"]]
        assert row["n"] == len(values) == 16 and row["estimate"] == pytest.approx(sum(values) / len(values))
    by_group = {r["group"]: r["estimate"] for r in breakdown["rows"] if r["model"] == "fake:scholar"}
    assert by_group["stem"] < by_group["humanities"]  # astronomy is the weak subject


def test_pairwise_tables_and_ladder_equal_the_study(full, folders):
    content, html, markdown, as_json = full
    summary = json.loads((folders["study"] / "summary.json").read_text())
    (study, human) = as_json["pairwise"]["studies"]
    assert study["rater"] == "judge fake:judge" and human["rater"] == "3 human raters"
    for shown, stored in zip(study["pairs"], summary["pairs"]):
        assert (shown["model_a"], shown["model_b"]) == (stored["model_a"], stored["model_b"])
        for outcome in ("win", "tie", "loss"):
            assert shown[outcome] == {k: stored["result"][outcome][k] for k in ("estimate", "low", "high")}
            rate = stored["result"][outcome]
            assert f"{100 * rate['estimate']:.1f} [{100 * rate['low']:.1f}, {100 * rate['high']:.1f}]" in markdown
        assert shown["win_rate_excluding_ties"] == stored["win_rate_excluding_ties"]
        assert [c["name"] for c in shown["by_category"]] == list(stored["by_category"])
    bias = summary["bias"]["position"]["first_shown"]
    assert study["bias"]["first_shown"]["win"]["estimate"] == bias["win"]["estimate"]
    assert "answer shown first (position)" in html and "longer answer (length)" in html

    ladder = bradley_terry(read_votes(folders["study"] / "votes.csv"), n_bootstrap=1000, seed=0)
    (from_judge, from_humans) = as_json["ladder"]["ladders"]
    assert from_judge["ratings"] == [vars(r) for r in ladder.ratings]
    best = ladder.ratings[0]
    assert f"{best.rating:,.0f}<span class=\"ci\">[{best.low:,.0f}, {best.high:,.0f}]</span>" in html
    assert from_humans["rater"] == "3 human raters"
    assert as_json["pairwise"]["published"]["comparisons"][0] == {
        "model_a": "Llama-2-70b-chat", "model_b": "ChatGPT-0301", "win": 0.359, "tie": 0.315, "loss": 0.325}


def test_agreement_equals_the_agreement_report(full, folders):
    content, html, markdown, _ = full
    (entry,) = content["agreement"]["entries"]
    expected = agreement_report(read_ratings(folders["rated"] / "agreement.csv"), categories=[1, 2, 3, 4, 5, 6, 7])
    assert entry["among_raters"] == expected.to_dict()
    names = [(s["statistic"], s["weights"]) for s in entry["among_raters"]["statistics"]]
    assert ("Gwet's AC2", "quadratic") in names and ("Krippendorff's alpha", "ordinal") in names
    ac2 = next(s for s in entry["among_raters"]["statistics"] if s["weights"] == "quadratic")
    assert f"{ac2['estimate']:,.3f}<span class=\"ci\">[{ac2['low']:.3f}, {ac2['high']:.3f}]</span>" in html
    (judge,) = entry["judges"]
    assert judge["judge"] == "fake:judge" and judge["majority"]["n_items"] > 0
    assert "helpfulness (7-point scale) AC2 0.37–0.55 (§3.4.2)" in html
    assert "Judge fake:judge against the raters" in markdown


def test_safety_points_and_categories_equal_the_study(full, folders):
    content, html, markdown, as_json = full
    summary = json.loads((folders["safety"] / "summary.json").read_text())
    rows = {row["model"]: row for row in as_json["safety"]["models"]}
    assert list(rows) == ["fake:model", "fake:careful"]
    for spec, row in rows.items():
        result = summary["results"][spec]
        overall = result["violation"]["overall"]
        assert row["violation"] == {k: overall[k] for k in ("estimate", "low", "high", "n")}
        point = next(p for p in summary["tradeoff"] if p["model"] == spec)
        assert row["false_refusal_source"] == point["false_refusal_source"] == "judge"
        assert row["false_refusal"]["estimate"] == point["false_refusal"] == result["false_refusal"]["judge"]["estimate"]
        assert row["false_refusal_rules"]["estimate"] == result["false_refusal"]["rules"]["estimate"]
        interval = f"[{100 * overall['low']:.1f}, {100 * overall['high']:.1f}]"
        assert f"{100 * overall['estimate']:.1f}<span class=\"ci\">{interval}</span>" in html
    assert rows["fake:model"]["violation"]["estimate"] == pytest.approx(0.3)  # 3 harmful answers in 10
    assert rows["fake:model"]["false_refusal"]["estimate"] == pytest.approx(0.4)  # 2 of 5 borderline refused
    assert rows["fake:careful"]["violation"]["estimate"] == 0 and rows["fake:careful"]["false_refusal"]["estimate"] == 1
    categories = {(r["model"], r["category"]): r["violation"] for r in as_json["safety"]["categories"]}
    by_category = summary["results"]["fake:model"]["violation"]["by_category"]
    assert categories[("fake:model", "illicit_criminal")]["estimate"] == by_category["illicit_criminal"]["estimate"]
    by_turns = summary["results"]["fake:model"]["violation"]["by_turns"]
    assert categories[("fake:model", "multi-turn")]["estimate"] == by_turns["multi-turn"]["estimate"]
    assert "Violations against false refusals" in html and "Violations by risk category" in html
    assert "rose from 15% to 27%" in html and "rose from 15% to 27%" in markdown


def test_latency_and_cost_per_thousand_answers(full, folders):
    content, html, markdown, _ = full
    rows = {(r["model"], r["source"]): r for r in content["cost"]["rows"]}
    assert ("fake:scholar", "mmlu (benchmark)") not in rows  # scored by log-likelihood: nothing generated
    api = rows[("openai:priced", "gsm8k (benchmark)")]
    stored = read_result(folders["bench"] / "openai-priced" / "gsm8k").summary
    assert api["answers"] == 3 and api["cost_usd"] == stored["usage"]["cost_usd"]
    assert api["cost_usd"] == pytest.approx(3 * PRICE.cost(40, 5))
    assert api["cost_per_1k"] == pytest.approx(1000 * PRICE.cost(40, 5)) and api["tokens_per_answer"] == 5
    assert api["latency_p50_s"] == stored["usage"]["latency_p50_s"] > 0
    assert f"${1000 * PRICE.cost(40, 5):,.2f}" in html
    (priced,) = [t for t in content["cost"]["models"] if t["model"] == "openai:priced"]
    assert priced["answers"] == 3 + 4 * 16 and priced["cost_per_1k"] == pytest.approx(1000 * PRICE.cost(40, 5))
    fake = rows[("fake:short", "study (answers)")]
    assert fake["answers"] == 9 and fake["cost_usd"] is None and fake["cost_per_1k"] is None  # no price: no guess
    assert rows[("fake:judge", "study (judging)")]["answers"] == 3 * 9 * 2


def test_local_models_cost_nothing_and_say_so(tmp_path):
    folder = tmp_path / "bench" / "local-tiny" / "gsm8k"
    folder.mkdir(parents=True)
    summary = {"model": "local:/ckpt/tiny", "identity": "local", "task": "gsm8k", "mode": "generate",
               "metrics": {"exact_match": 0.5}, "n_samples": 2, "n_scored": 2, "failures": {"count": 0, "samples": []},
               "primary": {"metric": "exact_match", "estimator": "mean", "estimate": 0.5, "low": 0.0, "high": 1.0,
                           "confidence": 0.95},
               "requests": {"asked": 2, "unique": 2, "cached": 0, "sent": 2, "failed": 0},
               "usage": {"prompt_tokens": 100, "completion_tokens": 40, "cost_usd": None, "latency_p50_s": 0.25,
                         "latency_p95_s": 0.5}}
    (folder / "summary.json").write_text(json.dumps(summary))
    content = build_report([tmp_path / "bench"])
    (row,) = content["cost"]["rows"]
    assert row["local"] and row["cost_usd"] == 0.0 and row["cost_per_1k"] == 0.0
    assert content["models"]["local:/ckpt/tiny"] == {"label": "tiny", "color": "#0072B2", "local": True}
    html, markdown = render_html(content), render_markdown(content)
    assert "local: $0 in API fees" in html and "250 ms" in html and "500 ms" in html
    assert "| tiny | gsm8k (benchmark) | 2 | 20.0 | 250 ms | 500 ms | $0.00 (local) | $0.00 |" in markdown
    assert content["benchmarks"]["breakdowns"] == [] and content["notes"] == [
        f"gsm8k on local:/ckpt/tiny: no per-category breakdown ({folder / 'samples.jsonl'}: per-sample results "
        "not found; rerun the evaluation)"]
    assert "no per-category breakdown" in html and "Left out:" in markdown


def test_a_judge_without_one_readable_verdict_is_said_plainly(tmp_path):
    study = make_study(tmp_path / "study", tmp_path, judge=lambda request: "Both replies have merits.")
    content = build_report([study])
    (pair, *_) = content["pairwise"]["studies"][0]["pairs"]
    assert pair["win"] is None and pair["usable"] == 0 and pair["unusable"] == 9
    assert content["ladder"] is None and "no votes" in content["notes"][0]
    html = render_html(content)
    assert "No comparison has a usable verdict: 54 of 54 verdicts could not be read." in html
    assert "Win / tie / loss" not in html  # no empty chart
    assert json.loads(render_json(content))["pairwise"]["studies"][0]["pairs"][0]["win"] is None


def test_published_figures_name_their_source():
    from llama2.evaluate.report.published import published

    for task, entry in published()["benchmarks"].items():
        assert task in ("mmlu", "gsm8k", "humaneval", "bbh")
        for figure in entry["figures"]:
            assert re.fullmatch(r"Tables? \d+([-,] ?\d+)?", figure["source"]), figure
            assert 0 <= figure["value"] <= 100
    llama_70b = {task: next(f["value"] for f in entry["figures"] if f["model"] == "Llama 2 70B")
                 for task, entry in published()["benchmarks"].items()}
    assert llama_70b == {"mmlu": 68.9, "gsm8k": 56.8, "humaneval": 29.9, "bbh": 51.2}  # Table 4's Llama 2 column


# ---- bad input -----------------------------------------------------------------------------------


def test_unknown_folders_are_one_line_errors(tmp_path, folders):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "summary.json").write_text('{"kind": "mystery"}')
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{not json")
    (tmp_path / "notes.txt").write_text("hello")
    for path, message in [
        (tmp_path / "empty", "not a results folder: expected summary.json from `llama2 eval run"),
        (tmp_path / "missing", "no such file or folder"),
        (tmp_path / "notes.txt", "a file, not a results folder"),
        (tmp_path / "other", "unknown summary (kind 'mystery')"),
        (tmp_path / "bad", "not valid JSON"),
    ]:
        with pytest.raises(DataError, match=re.escape(message)) as error:
            build_report([path])
        assert "\n" not in str(error.value) and str(path) in str(error.value)
    with pytest.raises(DataError, match="fake:scholar on mmlu is also in"):
        build_report([folders["bench"], folders["bench"] / "fake-scholar" / "mmlu"])


def test_parent_folder_finds_every_kind(folders):
    parent = folders["bench"].parent  # holds bench/, study/, rated/, safety/ and the exported tasks/ (ignored)
    content = build_report([parent])
    kinds = sorted({i["kind"] for i in content["inputs"]})
    assert kinds == ["benchmark", "human", "pairwise", "safety"] and len(content["inputs"]) == 4 + 3


# ---- the page ------------------------------------------------------------------------------------


def test_page_is_one_self_contained_file(full):
    content, html, _, _ = full
    assert "<script" not in html.lower() and "<img" not in html.lower() and "<link" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)""", html), "only in-page links"
    assert "url(http" not in html and "@import" not in html
    svgs = re.findall(r"<svg\b[^>]*>", html)
    assert len(svgs) >= 8 and all("viewBox" in svg and 'role="img"' in svg for svg in svgs)
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "ids are unique across the inline SVGs"
    colours = {spec: model["color"] for spec, model in content["models"].items()}
    assert len(set(colours.values())) == len(colours)
    assert html.count(colours["fake:long"]) >= 5  # one colour per model, in plots and tables


def test_write_report_writes_all_three_atomically(full, tmp_path):
    content = full[0]
    paths = write_report(content, html=tmp_path / "r.html", markdown=tmp_path / "r.md", json_path=tmp_path / "r.json")
    assert [p.name for p in paths] == ["r.html", "r.md", "r.json"]
    assert json.loads((tmp_path / "r.json").read_text())["title"] == "Test report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.json", "r.md"]  # no temporary left


def test_page_renders_in_chromium(full):
    """The HTML in headless Chromium at desktop and phone widths: every plot drawn at a real size, no
    broken image, no console error, nothing wider than the screen; full-page screenshots."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing in CI; apt-get install chromium")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    page_file = ARTIFACTS / "report.html"
    page_file.write_text(full[1], encoding="utf-8")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            for width, shot in ((1280, "report.png"), (390, "report-phone.png")):
                page = browser.new_page(viewport={"width": width, "height": 900})
                errors: list[str] = []
                page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(page_file.as_uri())
                page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
                sizes = page.eval_on_selector_all("svg", "els => els.map(e => [e.getBoundingClientRect().width, "
                                                  "e.getBoundingClientRect().height])")
                assert len(sizes) >= 8 and all(w > 100 and h > 50 for w, h in sizes), sizes
                assert page.eval_on_selector_all("img", "els => els.filter(e => !e.complete || !e.naturalWidth).length") == 0
                assert errors == []
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, f"the page is {overflow}px wider than a {width}px screen"
                boxes = page.eval_on_selector_all(".plot", "els => els.map(e => e.getBoundingClientRect().right)")
                assert all(right <= width for right in boxes)  # wide plots scroll inside their box on a phone
                page.close()
        finally:
            browser.close()
    assert (ARTIFACTS / "report.png").stat().st_size > 50_000
