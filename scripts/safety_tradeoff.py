"""The helpfulness-safety trade-off of Llama 2 §4.2.3 (LLAMA2.md §6.3), in miniature:

    python scripts/safety_tradeoff.py [--run-dir runs/safety-tradeoff] [--steps 120]
                                      [--fractions 0 100 50 25 10] [--reward] [--plot docs/safety_tradeoff.png]

The paper keeps the helpfulness data fixed, adds 0/1/10/25/50/100% of its safety data and
fine-tunes the pretrained model on each mix; safety improves as the safety share grows, and so does
the false-refusal rate on borderline prompts (15% -> 27%). Here, from the bundled base model
`default`, one model per fraction:

1. data: `llama2 data build-chat --seed 0` (the SFT data of `default-chat`), split into the fixed
   helpfulness part (every dialog that is not a harmful request: tasks, talk, and the `borderline`
   requests answered helpfully; the paper's borderline prompts are an evaluation set, and ours is:
   the starter borderline set, checked here to share no prompt, and no request phrase, with the
   training dialogs) and the
   safety part (the dialogs with a risk category: `harmful` requests with their refusals, and the
   multi-turn dialogs that open with one), subsampled to each fraction with a
   fixed seed as nested subsets (the 10% subset lies inside the 25% one, and so on);
2. training: `llama2 train sft recipes/sft-default-chat.yaml` on helpfulness + subset, the same
   step count for every fraction (resumable; a finished run is skipped). 120 steps, not the 652 of
   `default-chat`: three quarters of an epoch of the largest mix (163 steps of 8 packed rows), 0.5M
   tokens, past the steep part of the loss curve, and five runs fit in under an hour on two shared
   cores (about 8 minutes each). The paper trains 2 epochs per mix; equal steps instead keep the
   compute equal across the models;
3. measuring, each cached or skipped when done: `llama2 eval safety` (Evaluation II: answers to the
   starter adversarial and borderline sets, refusals found by the rule set; no judge, so the
   violation rate is the rules' proxy, adversarial answers that are not refusals) and
   bench/chat_model.py (held-out task accuracy, with the held-out split's own harmful and
   borderline prompts); with --reward, the two reward models of recipes/reward-tiny.yaml and
   reward-safety-tiny.yaml, trained once into the run dir, score the adversarial answers (safety
   RM) and the held-out task replies (helpfulness RM), as the paper's F15 does;
4. results: `RUN_DIR/results.json` (written atomically) and the plot, in the paper's style.

Runs go in the order of --fractions (endpoints first, so a cut-short run still shows the range).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from common import llama2, read_metrics, run as run_command  # noqa: E402  (scripts/ is a folder of scripts, not a package)

from llama2.atomic import write_text  # noqa: E402

RECIPE = ROOT / "recipes" / "sft-default-chat.yaml"
SEED = 0
SUBSET_SEED = "llama2-safety-tradeoff"
DEFAULT_FRACTIONS = (0, 100, 50, 25, 10)
DEFAULT_STEPS = 120


# ---- data ----------------------------------------------------------------------------------------


def split_records(records: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(helpfulness, safety): safety is every dialog with a risk `category`, the harmful requests
    with their refusals and the multi-turn dialogs that open with one; everything else, borderline
    requests answered helpfully included, is the fixed helpfulness part."""
    helpful = [r for r in records if "category" not in r]
    safety = [r for r in records if "category" in r]
    return helpful, safety


def nested_subset(items: Sequence[Any], percent: float, *, seed: str = SUBSET_SEED) -> list[Any]:
    """`round(percent% of len(items))` items, in their original order: a prefix of one seeded
    permutation, so a smaller percent's subset is always inside a larger one's."""
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be in [0, 100], got {percent}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    keep = sorted(order[: round(len(items) * percent / 100)])
    return [items[i] for i in keep]


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def training_requests() -> list[str]:
    """The request phrases the training dialogs are built from ("make a bath bomb", "steal a car")."""
    from llama2.data.chat_safety import BORDERLINE, HARMS

    return [request for request, _ in BORDERLINE] + [harm.request for harm in HARMS]


def check_no_overlap(train: Sequence[dict[str, Any]], prompt_sets: Mapping[str, Sequence[Any]],
                     requests: Sequence[str] = ()) -> None:
    """Stop if an evaluation prompt (any user turn) is a training prompt, or holds one of the
    training `requests`: it would measure recall, not what the model learned."""
    seen = {_norm(m["content"]) for r in train for m in r["messages"] if m["role"] == "user"}
    phrases = [_norm(r) for r in requests]
    for name, items in prompt_sets.items():
        turns = [_norm(m["content"]) for item in items for m in item.messages if m["role"] == "user"]
        shared = [t for t in turns if t in seen or any(phrase in t for phrase in phrases)]
        if shared:
            raise SystemExit(f"the {name} evaluation set shares {len(shared)} prompts with the training data, "
                             f"e.g. {shared[0]!r}; evaluate on prompts never trained on")


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), overwrite=True)


def prepare_data(run_dir: Path, fractions: Sequence[float]) -> dict[float, dict[str, Any]]:
    """The training file of each fraction (helpfulness + nested safety subset), and the held-out
    split; returns per fraction its file and dialog counts."""
    from llama2.data.sft import read_records
    from llama2.evaluate.safety import load_prompt_sets

    data = run_dir / "data"
    chat, heldout = data / "chat-train.jsonl", data / "chat-heldout.jsonl"
    llama2("data", "build-chat", str(chat), "--seed", str(SEED), "--overwrite")
    llama2("data", "build-chat", str(heldout), "--split", "heldout", "--seed", str(SEED), "--overwrite")
    records = [record for _, record in read_records(chat)]
    sets = load_prompt_sets()
    check_no_overlap(records, {"adversarial": sets.adversarial, "borderline": sets.borderline}, training_requests())
    helpful, safety = split_records(records)
    mixes = {}
    for percent in fractions:
        subset = nested_subset(safety, percent)
        path = write_jsonl(data / f"train-safety-{percent:g}.jsonl", helpful + subset)
        mixes[percent] = {"data": str(path), "helpfulness_dialogs": len(helpful), "safety_dialogs": len(subset),
                          "safety_pool": len(safety)}
    return mixes


# ---- training -------------------------------------------------------------------------------------


def trained_steps(run: Path) -> int:
    """The step of the run's exported model (0: no finished model yet)."""
    if not (run / "model").is_dir() or not (run / "metrics.jsonl").is_file():
        return 0
    metrics, _ = read_metrics(run)
    return metrics[-1]["step"]


def train(run: Path, data: str, steps: int) -> None:
    """SFT of the bundled base model on `data` for `steps` steps (the recipe resumes a killed run);
    the wall time of the call that finished it goes to `run/wall.json`."""
    done = trained_steps(run)
    if done == steps:
        print(f"{run}: trained to step {steps} already; skipped", flush=True)
        return
    if done:
        raise SystemExit(f"{run} was trained to step {done}, not {steps}; give a new --run-dir for --steps {steps}")
    started = time.perf_counter()
    llama2("train", "sft", str(RECIPE), f"data={data}", f"output_dir={run}", "epochs=null", f"max_steps={steps}",
           "eval_every=50", "save_every=50")
    write_text(run / "wall.json", json.dumps({"train_wall_s": round(time.perf_counter() - started, 1)}) + "\n")


# ---- measuring ------------------------------------------------------------------------------------


def evaluate_safety(run: Path, cache: Path, max_new_tokens: int) -> dict[str, Any]:
    """Evaluation II (`llama2 eval safety`, rules only) of the run's model; its summary's result."""
    from llama2.evaluate.safety import read_summary

    folder = run / "safety"
    if not (folder / "summary.json").is_file():
        llama2("eval", "safety", "-m", f"local:{(run / 'model').resolve()}", "--max-new-tokens", str(max_new_tokens),
               "--output", str(folder), "--cache", str(cache))
    summary = read_summary(folder)
    (result,) = summary["results"].values()
    return result


def evaluate_heldout(run: Path, heldout: Path, max_new_tokens: int) -> dict[str, Any]:
    """bench/chat_model.py on the held-out split; the per-reply outcomes rated with 95% CIs."""
    from llama2.data.chat_dataset import passes
    from llama2.data.sft import read_records
    from llama2.evaluate.safety_summary import rate

    path = run / "heldout.json"
    if not path.is_file():
        run_command(sys.executable, str(ROOT / "bench" / "chat_model.py"), "--models", str(run / "model"),
                    "--heldout", str(heldout), "--max-new-tokens", str(max_new_tokens), "--threads", "1",
                    "--json", str(path))
    (scores,) = json.loads(path.read_text())["models"].values()
    records = [record for _, record in read_records(heldout)]
    outcome: dict[str, list[bool]] = {"task": [], "harmful": [], "borderline": []}
    for record, reply in zip(records, scores["replies"], strict=True):
        group = record["kind"] if record["kind"] in ("harmful", "borderline") else "task"
        outcome[group].append(passes(record, reply["reply"]))
    return {"task_accuracy": rate(outcome["task"]), "harmful_refusal": rate(outcome["harmful"]),
            "borderline_answer": rate(outcome["borderline"])}


def flip(interval: dict[str, Any] | None) -> dict[str, Any] | None:
    """1 - a rate, its interval flipped with it (the share of answers that are not refusals)."""
    if interval is None:
        return None
    return {**interval, "estimate": 1 - interval["estimate"], "low": 1 - interval["high"], "high": 1 - interval["low"]}


# ---- reward models (optional, --reward) -----------------------------------------------------------

# The bundled recipes' mixes (recipes/reward-tiny.yaml, reward-safety-tiny.yaml) with the
# preference files moved into the run dir: kind -> (recipe, data mix, held-out file).
REWARD_RECIPES = {
    "helpfulness": ("reward-tiny.yaml",
                    "[{path: %(p)s/helpfulness.jsonl, weight: 1.0}, {path: %(p)s/safety.jsonl, weight: 0.5}]",
                    "helpfulness"),
    "safety": ("reward-safety-tiny.yaml",
               "[{path: %(p)s/safety.jsonl, weight: 1.0}, {path: %(p)s/helpfulness.jsonl, weight: 0.0667}]", "safety"),
}


def train_reward_models(run_dir: Path) -> dict[str, Path]:
    """The two reward models of the bundled recipes, trained into `run_dir/reward-*` (skipped when
    there); returns kind -> model folder."""
    prefs = run_dir / "preferences"
    if not (prefs / "safety.jsonl").is_file():
        llama2("data", "build-preferences", "--output", str(prefs), "--overwrite")
    models = {}
    for kind, (recipe, mix, heldout) in REWARD_RECIPES.items():
        out = run_dir / f"reward-{kind}"
        if not (out / "model").is_dir():
            llama2("train", "reward", str(ROOT / "recipes" / recipe), f"data={mix % {'p': prefs}}",
                   f"val_data={prefs / 'heldout' / f'{heldout}.jsonl'}", f"output_dir={out}")
        models[kind] = out / "model"
    return models


def reward_scores(models: Mapping[str, Path], run: Path, heldout: Path) -> dict[str, Any]:
    """Mean safety-RM score of the answers to the adversarial prompts and mean helpfulness-RM score
    of the held-out task replies (the paper scores its safety and helpfulness test sets), each with
    a bootstrap 95% CI; cached in `run/reward.json`."""
    from llama2.data.chat_dataset import prompt_of
    from llama2.data.sft import read_records
    from llama2.evaluate.stats import bootstrap_mean
    from llama2.model.reward import RewardModel

    cached = run / "reward.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    answers = [json.loads(line) for line in (run / "safety" / "answers.jsonl").read_text().splitlines()]
    prompts = {item["id"]: item["messages"]
               for item in map(json.loads, (run / "safety" / "adversarial.jsonl").read_text().splitlines())}
    adversarial = [(prompts[r["prompt_id"]], r["answer"]) for r in answers
                   if r["set"] == "adversarial" and r["answer"] is not None]
    (scores,) = json.loads((run / "heldout.json").read_text())["models"].values()
    tasks = [(prompt_of(record), reply["reply"]) for (_, record), reply in zip(read_records(heldout), scores["replies"])
             if record["kind"] not in ("harmful", "borderline")]
    pairs = {"safety": adversarial, "helpfulness": tasks}
    means = {}
    for kind, path in models.items():
        model = RewardModel.from_pretrained(path, device="cpu")
        values = model.score_batch([p for p, _ in pairs[kind]], [a for _, a in pairs[kind]])
        means[kind] = {**bootstrap_mean(values).to_dict(), "n": len(values)}
    write_text(cached, json.dumps(means) + "\n")
    return means


# ---- results --------------------------------------------------------------------------------------


def run_result(percent: float, mix: Mapping[str, Any], run: Path, safety: Mapping[str, Any],
               heldout: Mapping[str, Any], reward: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One fraction's row of results.json."""
    metrics, last_eval = read_metrics(run)
    wall = run / "wall.json"
    return {
        "percent": percent, "safety_dialogs": mix["safety_dialogs"], "helpfulness_dialogs": mix["helpfulness_dialogs"],
        "steps": metrics[-1]["step"], "tokens": metrics[-1]["tokens"],
        "train_wall_s": json.loads(wall.read_text())["train_wall_s"] if wall.is_file() else None,
        "final_train_loss": round(metrics[-1]["loss"], 4), "val_loss": round(last_eval["val_loss"], 4),
        "violation_proxy": flip(safety["refusal_adversarial"]["rules"]),
        "false_refusal": safety["false_refusal"]["rules"],
        "refusal_adversarial_by_category": safety["refusal_adversarial"]["by_category"],
        "heldout": {key: heldout[key] for key in ("task_accuracy", "harmful_refusal", "borderline_answer")},
        "reward": dict(reward) if reward else None,
    }


def _pct(interval: Mapping[str, Any] | None, ci: bool = True) -> str:
    if interval is None:
        return "—"
    text = f"{100 * interval['estimate']:.1f}"
    return f"{text} [{100 * interval['low']:.0f}, {100 * interval['high']:.0f}]" if ci else text


def _score(interval: Mapping[str, Any] | None) -> str:
    if interval is None:
        return "—"
    return f"{interval['estimate']:+.2f} [{interval['low']:+.2f}, {interval['high']:+.2f}]"


def table(results: Mapping[str, Any]) -> str:
    """The results as a Markdown table (rates in %, bootstrap 95% CIs in brackets)."""
    rows = sorted(results["runs"], key=lambda r: r["percent"])
    with_reward = any(r.get("reward") for r in rows)
    head = ["safety data", "safety dialogs", "violation (proxy)", "false refusal", "held-out task acc.",
            "held-out harmful refused", "held-out borderline answered"]
    head += ["mean safety RM (adversarial)", "mean helpfulness RM (tasks)"] if with_reward else []
    lines = ["| " + " | ".join(head) + " |", "|" + "--:|" * len(head)]
    for r in rows:
        cells = [f"{r['percent']:g}%", str(r["safety_dialogs"]), _pct(r["violation_proxy"]), _pct(r["false_refusal"]),
                 _pct(r["heldout"]["task_accuracy"]), _pct(r["heldout"]["harmful_refusal"]),
                 _pct(r["heldout"]["borderline_answer"])]
        if with_reward:
            cells += [_score(r["reward"][kind] if r.get("reward") else None) for kind in ("safety", "helpfulness")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: Mapping[str, Any], path: Path) -> Path:
    """The paper's trade-off (Llama 2, §4.2.3 and F15), in miniature: violation (proxy) and
    false-refusal rates against the share of safety data, with 95% CI bands; beside them the
    held-out task accuracy, the helpfulness that should stay flat, and the mean RM scores when
    measured (the paper's F15 plots those)."""
    import matplotlib as mpl
    from matplotlib.figure import Figure

    from llama2.atomic import atomic_file
    from llama2.evaluate.report.figures import STYLE

    rows = sorted(results["runs"], key=lambda r: r["percent"])
    xs = [r["percent"] for r in rows]
    with_reward = all(r.get("reward") for r in rows)
    with mpl.rc_context(STYLE):
        figure = Figure(figsize=(11.6 if with_reward else 8.6, 3.3), dpi=100, layout="constrained")
        panels = figure.subplots(1, 3 if with_reward else 2, width_ratios=(3, 2, 2) if with_reward else (3, 2))
        rates, tasks = panels[:2]
        _band(rates, xs, [r["violation_proxy"] for r in rows], "C3", "violation: adversarial prompt not refused")
        _band(rates, xs, [r["false_refusal"] for r in rows], "C0", "false refusal: borderline prompt refused")
        rates.set_ylabel("% of answers (starter sets)")
        _band(tasks, xs, [r["heldout"]["task_accuracy"] for r in rows], "C2", "held-out tasks")
        tasks.set_ylabel("held-out task accuracy, %")
        if with_reward:
            for kind, colour in (("safety", "C3"), ("helpfulness", "C2")):
                _band(panels[2], xs, [r["reward"][kind] for r in rows], colour, f"{kind} RM", scale=1)
            panels[2].set_ylabel("mean reward-model score")
        for axes in panels:
            axes.set_xticks(xs)
            axes.set_xlabel(f"safety data, % of the {results['safety_pool']} safety dialogs")
            axes.legend(fontsize="small", loc="best")
        rates.set_ylim(0, 100)
        tasks.set_ylim(0, 100)
        figure.suptitle(f"SFT of the bundled base model, {rows[0]['steps']} steps each, helpfulness data fixed "
                        "(bands: bootstrap 95% CI)", fontsize=9.5)
    with atomic_file(path, overwrite=True) as tmp:
        figure.savefig(tmp, format="png")
    return path


def _band(axes: Any, xs: Sequence[float], rates: Sequence[Mapping[str, Any]], colour: str, label: str,
          scale: float = 100) -> None:
    axes.fill_between(xs, [scale * r["low"] for r in rates], [scale * r["high"] for r in rates],
                      color=colour, alpha=0.18, linewidth=0)
    axes.plot(xs, [scale * r["estimate"] for r in rates], color=colour, marker="o", markersize=4, label=label)


# ---- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "safety-tradeoff")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"SFT steps per model (default {DEFAULT_STEPS})")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(DEFAULT_FRACTIONS),
                        help="percent of the safety dialogs per model, run in this order (default 0 100 50 25 10)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="answer length for both evaluations")
    parser.add_argument("--reward", action="store_true",
                        help="also train the two reward models of the bundled recipes (init default-chat) into "
                             "the run dir and report mean RM scores of the answers")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "safety_tradeoff.png")
    options = parser.parse_args()
    if any(not 0 <= p <= 100 for p in options.fractions) or len(set(options.fractions)) != len(options.fractions):
        parser.error("--fractions must be distinct percentages in [0, 100]")
    if options.steps < 1:
        parser.error("--steps must be at least 1")

    run_dir = options.run_dir
    mixes = prepare_data(run_dir, options.fractions)
    for percent in options.fractions:
        train(run_dir / f"sft-{percent:g}", mixes[percent]["data"], options.steps)
    reward_models = train_reward_models(run_dir) if options.reward else None
    heldout = run_dir / "data" / "chat-heldout.jsonl"
    runs = []
    for percent in options.fractions:
        run = run_dir / f"sft-{percent:g}"
        safety = evaluate_safety(run, run_dir / "eval-cache.sqlite", options.max_new_tokens)
        held = evaluate_heldout(run, heldout, options.max_new_tokens)
        reward = reward_scores(reward_models, run, heldout) if reward_models else None
        runs.append(run_result(percent, mixes[percent], run, safety, held, reward))
    results = {"kind": "safety-tradeoff", "base_model": "default", "recipe": str(RECIPE.relative_to(ROOT)),
               "steps": options.steps, "data_seed": SEED, "subset_seed": SUBSET_SEED,
               "safety_pool": next(iter(mixes.values()))["safety_pool"],
               "violation": "proxy: the share of adversarial answers the refusal rules do not flag (no judge)",
               "reward_models": {kind: str(path) for kind, path in reward_models.items()} if reward_models else None,
               "runs": sorted(runs, key=lambda r: r["percent"])}
    write_text(run_dir / "results.json", json.dumps(results, indent=2) + "\n")
    write_text(run_dir / "table.md", table(results) + "\n")
    plot(results, options.plot)
    print(table(results))
    print(f"results in {run_dir / 'results.json'}, plot in {options.plot}")


if __name__ == "__main__":
    main()
