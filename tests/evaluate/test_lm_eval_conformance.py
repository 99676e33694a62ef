"""Agreement with EleutherAI's lm-evaluation-harness on MMLU (issue 4, "How it is checked").

One tiny random-weight model, saved once as a Hugging Face folder, and one set of MMLU files in the
original release's layout are evaluated twice: by lm-eval — its HF backend (`HFLM`) running its own
`mmlu` task definitions — and by our runner over `local:<folder>`. The prompts, every per-choice
log-likelihood, every prediction and the accuracies must agree.

lm-eval's mmlu tasks read the Hub dataset `cais/mmlu`. Offline, each subject gets a task config that
includes lm-eval's own `mmlu_<subject>.yaml` (description, question template, answer choices,
`first_n` few-shot sampler, metric) and overrides only where the documents come from: `datasets`'
CSV builder over the same files ours reads, and a `process_docs` that turns a CSV row into
`cais/mmlu`'s fields. The prompt is therefore lm-eval's, not a copy of ours.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import random
import socket
from pathlib import Path

import pytest
import torch
import yaml

from llama2.api import Llama
from llama2.evaluate.benchmarks import get_task
from llama2.evaluate.cache import ResponseCache
from llama2.evaluate.runner import run_task
from llama2.model.config import get_preset
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer
from llama2.providers.base import Capabilities, LoglikelihoodRequest
from llama2.providers.registry import load_provider

SUBJECTS = ("anatomy", "high_school_mathematics")
LETTERS = ("A", "B", "C", "D")
TOLERANCE = 1e-4  # nats, per choice: both sides run the same fp32 weights on the same tokens
WORDS = ("the robot fox read books model language time little quick brown lazy dog capital France large "
         "which of following is true cell bone heart number prime sum angle").split()
# Rows that exercise the CSV layer: commas, quotes and a newline inside fields, spaces around the
# question (lm-eval strips the question, not the choices).
AWKWARD_ROWS = [
    ["  Which of the following is \"prime\", if any?  ", "seven, of course", "nine", "a \"large\" one", "none", "A"],
    ["Statement 1 | the heart is a cell.\nStatement 2 | a bone is large.", "True, True", "False, False",
     "True, False", "False, True", "D"],
]

# lm-eval's CSV documents -> cais/mmlu's fields (question, choices, answer index). `na_filter` is off
# in the builder so "None" or an empty cell stays text; str() keeps every field a string.
PROCESS_DOCS = '''
def process_docs(dataset):
    def convert(row):
        return {"question": str(row["question"]), "choices": [str(row[c]) for c in "ABCD"],
                "answer": "ABCD".index(row["letter"].strip())}
    return dataset.map(convert, remove_columns=dataset.column_names)
'''


def words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def write_mmlu(folder: Path) -> None:
    """`dev/{subject}_dev.csv` (5 shots) and `test/{subject}_test.csv` (4 questions), no header row."""
    rng = random.Random(4)
    for split, count in (("dev", 5), ("test", 4)):
        (folder / split).mkdir(parents=True)
        for subject in SUBJECTS:
            rows = [[words(rng, 4, 9) + "?", *(words(rng, 1, 3) for _ in LETTERS), rng.choice(LETTERS)]
                    for _ in range(count)]
            if split == "test":
                rows[:2] = AWKWARD_ROWS
            with open(folder / split / f"{subject}_{split}.csv", "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows(rows)


def write_lm_eval_tasks(folder: Path, data: Path, datasets_cache: Path) -> list[str]:
    """One lm-eval task per subject (`local_mmlu_<subject>`), each lm-eval's own mmlu config with
    the documents read from `data`; returns the task names."""
    import lm_eval.tasks

    mmlu_configs = Path(lm_eval.tasks.__file__).parent / "mmlu" / "default"
    folder.mkdir()
    (folder / "local_mmlu_docs.py").write_text(PROCESS_DOCS)
    names = []
    for subject in SUBJECTS:
        config = {
            "include": str(mmlu_configs / f"mmlu_{subject}.yaml"),
            "task": f"local_mmlu_{subject}",
            "dataset_path": "csv",
            "dataset_name": None,
            "dataset_kwargs": {
                "data_files": {"dev": str(data / "dev" / f"{subject}_dev.csv"),
                               "test": str(data / "test" / f"{subject}_test.csv")},
                "column_names": ["question", *LETTERS, "letter"],
                "na_filter": False,
                "cache_dir": str(datasets_cache),
            },
        }
        text = yaml.safe_dump(config) + "process_docs: !function local_mmlu_docs.process_docs\n"
        (folder / f"local_mmlu_{subject}.yaml").write_text(text)
        names.append(config["task"])
    return names


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Hub libraries told they are offline, and any TCP connection refused, so a download attempt
    fails the test instead of passing unnoticed."""
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"the conformance test must not reach the network (connect to {address})")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory, tiny_tokenizer_path) -> Path:
    """The `tiny` shape with random weights and the 512-piece tokenizer, as a Hugging Face folder.

    The context window is 512 instead of 256: a 5-shot prompt is ~370 tokens of this tokenizer. The
    weights are drawn wider than training's N(0, 0.02): at 0.02 the model ignores its context and
    answers "D" to every question, which would leave predictions and accuracy untested; at 0.3 the
    answers vary and the two harnesses still agree to ~2e-5.
    """
    args = dataclasses.replace(get_preset("tiny"), max_seq_len=512)
    model = Transformer(args)
    model.init_weights(torch.Generator().manual_seed(11), std=0.3)
    folder = tmp_path_factory.mktemp("conformance") / "hf"
    Llama(model, Tokenizer(tiny_tokenizer_path)).save(folder, format="hf")
    return folder


def run_lm_eval(hf_model: Path, tasks: Path, data: Path, tmp_path: Path) -> dict[str, list[dict]]:
    """lm-eval's per-sample records by subject, in document order."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    names = write_lm_eval_tasks(tasks, data, tmp_path / "datasets-cache")
    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    model = HFLM(pretrained=str(hf_model), device="cpu", dtype="float32", batch_size=8)
    out = lm_eval.simple_evaluate(model=model, tasks=names, num_fewshot=5, task_manager=manager,
                                  log_samples=True, bootstrap_iters=0)
    return {name.removeprefix("local_mmlu_"): sorted(out["samples"][name], key=lambda s: s["doc_id"]) for name in names}


def run_ours(hf_model: Path, data: Path, tmp_path: Path):
    """Our runner over `local:<folder>` on a fresh cache; returns the task (for its prompts) and the result."""
    task = get_task("mmlu")

    async def evaluate():
        async with load_provider(f"local:{hf_model}", device="cpu") as provider:
            with ResponseCache(tmp_path / "cache.sqlite") as cache:
                return await run_task(provider, task, cache=cache, data_dir=data)

    return task, asyncio.run(evaluate())


def test_mmlu_matches_lm_eval_sample_by_sample(hf_model, offline, tmp_path):
    data = tmp_path / "mmlu"
    write_mmlu(data)
    theirs = run_lm_eval(hf_model, tmp_path / "lm-eval-tasks", data, tmp_path)
    task, ours = run_ours(hf_model, data, tmp_path)

    assert ours.mode == "loglikelihood" and not ours.failures
    assert len({r.prediction for r in ours.samples}) > 1, "a model that always gives one answer tests too little"
    assert [r.sample_id for r in ours.samples] == [f"{s}/{i}" for s in SUBJECTS for i in range(4)]
    samples = {sample.id: sample for sample in task.load(data)}
    for result in ours.samples:
        subject, index = result.sample_id.split("/")
        record = theirs[subject][int(index)]
        # The prompt: lm-eval's (context, continuation) pairs are exactly our requests.
        requests = task.requests(samples[result.sample_id], "loglikelihood", Capabilities(loglikelihood=True))
        assert [LoglikelihoodRequest(*pair) for pair in record["arguments"]] == requests, result.sample_id
        their_logprobs = [logprob for logprob, _greedy in record["filtered_resps"]]
        assert result.extra["logprobs"] == pytest.approx(their_logprobs, abs=TOLERANCE), result.sample_id
        assert result.prediction == LETTERS[max(range(4), key=their_logprobs.__getitem__)], result.sample_id  # first of ties, as np.argmax
        assert result.metrics["acc"] == record["acc"], result.sample_id

    for subject in SUBJECTS:
        their_acc = sum(r["acc"] for r in theirs[subject]) / len(theirs[subject])
        assert ours.metrics[f"acc,subject={subject}"] == pytest.approx(their_acc)
    all_theirs = [r["acc"] for records in theirs.values() for r in records]
    assert ours.metrics["acc_micro"] == pytest.approx(sum(all_theirs) / len(all_theirs))
