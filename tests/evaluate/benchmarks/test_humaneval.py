"""HumanEval: the release's JSONL, program assembly, sandboxed execution, and the pass@k estimator."""

from __future__ import annotations

import gzip
import shutil
from math import comb

import pytest

from llama2.errors import ConfigError, DataError
from llama2.evaluate.benchmarks.humaneval import STOP, HumanEval, build_program, pass_at_k, truncate
from llama2.evaluate.benchmarks.sandbox import SandboxLimits
from llama2.providers.fake import FakeProvider

from .drive import CHAT_API, COMPLETION_API, DATA, run

HUMANEVAL_DATA = DATA / "humaneval"


@pytest.mark.parametrize("n, c, k, expected", [
    (1, 1, 1, 1.0), (1, 0, 1, 0.0), (5, 2, 1, 0.4), (5, 2, 2, 1 - 3 / 10), (10, 3, 5, 1 - 21 / 252),
    (10, 0, 10, 0.0), (4, 1, 4, 1.0), (3, 3, 2, 1.0),
])
def test_pass_at_k_against_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_equals_the_binomial_formula_for_large_n():
    assert pass_at_k(200, 13, 100) == pytest.approx(1 - comb(187, 100) / comb(200, 100))
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_truncate_at_the_codex_stop_sequences():
    body = "    return x + y\n"
    assert STOP == ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
    for tail in ("\ndef other():\n    pass", "\nclass A:\n    pass", "\nif __name__ == '__main__':\n    x()",
                 "\nprint(add(1, 2))", "\n# a comment"):
        assert truncate(body + tail) == body
    assert truncate(body) == body


def test_program_is_prompt_completion_test_and_check():
    doc = {"prompt": "def f(x):\n    \"\"\"doc\"\"\"\n", "test": "def check(c):\n    assert c(1) == 2\n", "entry_point": "f"}
    assert build_program(doc, "    return x + 1\n\nprint(f(1))") == (
        "def f(x):\n    \"\"\"doc\"\"\"\n    return x + 1\n\n\ndef check(c):\n    assert c(1) == 2\n\n\ncheck(f)\n")
    chat = "Here it is:\n```python\ndef f(x):\n    return x + 1\n```\nDone."
    assert build_program(doc, chat).startswith("def f(x):\n    \"\"\"doc\"\"\"\n\ndef f(x):\n    return x + 1\n")


def test_canonical_solutions_pass_and_wrong_ones_fail_with_a_reason():
    task = HumanEval()
    samples = task.load(HUMANEVAL_DATA)
    assert [s.id for s in samples] == ["Test/0", "Test/1", "Test/2"]
    solutions = {s.doc["prompt"]: s.doc["canonical_solution"] for s in samples}
    provider = FakeProvider(answer=lambda r: solutions[r.prompt] + "\n\nprint('extra')\n", capabilities=COMPLETION_API)
    results = run(task, samples, provider)
    assert [r.metrics["pass@1"] for r in results] == [1.0, 1.0, 1.0]
    assert provider.calls[0].prompt == samples[0].doc["prompt"] and provider.calls[0].params.stop == STOP
    assert provider.calls[0].params.temperature == 0.0
    wrong = run(task, samples[:1], FakeProvider(answer=lambda r: "    return x - y\n", capabilities=COMPLETION_API))
    assert wrong[0].metrics["pass@1"] == 0.0
    assert wrong[0].extra["runs"][0]["status"] == "failed" and wrong[0].extra["runs"][0]["reason"] == "AssertionError"
    assert task.aggregate(results + wrong) == {"pass@1": 0.75}


def test_chat_answers_are_run_from_their_code_block():
    task = HumanEval()
    samples = task.load(HUMANEVAL_DATA)[1:2]
    answer = ("Sure:\n\n```python\nfrom typing import List\n\ndef running_max(numbers: List[int]) -> List[int]:\n"
              "    out, best = [], float('-inf')\n    for n in numbers:\n        best = max(best, n)\n"
              "        out.append(best)\n    return out\n```\n")
    provider = FakeProvider(answer=lambda r: answer, capabilities=CHAT_API)
    (result,) = run(task, samples, provider)
    (request,) = provider.calls
    assert request.prompt[0]["role"] == "user" and samples[0].doc["prompt"] in request.prompt[0]["content"]
    assert request.params.stop == () and result.metrics["pass@1"] == 1.0


def test_several_samples_give_pass_at_k_with_distinct_seeds():
    task = HumanEval(samples=4, temperature=0.8, ks=(1, 2), limits=SandboxLimits(timeout_s=5.0, cpu_s=1))
    samples = task.load(HUMANEVAL_DATA, limit=1)
    replies = iter(["    return x + y\n", "    return x * y\n", "    return y + x\n", "    while True: pass\n"])
    provider = FakeProvider(answer=lambda r: next(replies), capabilities=COMPLETION_API)
    (result,) = run(task, samples, provider)
    assert [r.params.seed for r in provider.calls] == [0, 1, 2, 3]
    assert {r.params.temperature for r in provider.calls} == {0.8}
    assert result.extra["passed"] == 2 and result.metrics["pass@1"] == pytest.approx(0.5)
    assert result.metrics["pass@2"] == pytest.approx(1 - comb(2, 2) / comb(4, 2))
    assert task.metrics == ("pass@1", "pass@2")


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="temperature"):
        HumanEval(samples=5)
    with pytest.raises(ConfigError, match="1..samples"):
        HumanEval(samples=2, temperature=0.8, ks=(1, 10))


def test_gzipped_release_file_loads_and_bad_data_is_reported(tmp_path):
    with pytest.raises(DataError, match="llama2 data fetch humaneval"):
        HumanEval().load(tmp_path)
    (tmp_path / "HumanEval.jsonl.gz").write_bytes(gzip.compress((HUMANEVAL_DATA / "HumanEval.jsonl").read_bytes()))
    assert len(HumanEval().load(tmp_path)) == 3
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(HUMANEVAL_DATA / "HumanEval.jsonl", broken)
    with open(broken / "HumanEval.jsonl", "a") as handle:
        handle.write('{"task_id": "Test/9", "prompt": "def g():\\n"}\n')
    with pytest.raises(DataError, match="record 4: missing string field 'canonical_solution'"):
        HumanEval().load(broken)
