"""Task fine-tuning data: seeded, correct (math recomputed from the question, every worked step
checked; code solutions pass their own tests in the HumanEval sandbox), held-out problems never in
the training set, and folders that the gsm8k and humaneval harnesses load."""

from __future__ import annotations

import json
import re

import pytest

from llama2.cli.main import main
from llama2.data.task_code import FAMILIES
from llama2.data.task_data import build_task, write_task
from llama2.data.task_math import NUM_FEWSHOT, question_prompt
from llama2.errors import DataError
from llama2.evaluate.benchmarks import data_dir_for
from llama2.evaluate.benchmarks.gsm8k import GSM8K, build_prompt, exemplars, extract_answer, reference_answer
from llama2.evaluate.benchmarks.humaneval import HumanEval, build_program
from llama2.evaluate.benchmarks.sandbox import run_program

# What each problem asks by its key's operation, recomputed here from the numbers in its question.
EXPECTED = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
            "add-sub": lambda a, b, c: a + b - c, "mul-add": lambda a, b, c: a * b + c}
STEP = re.compile(r"(\d+) ([-+×]) (\d+)( \+ 1)? = (\d+)")  # "4 + 5 + 1 = 10": a column with a carry


def _math_problems(data):
    """(question, held-out answer or None, training completion or None) of every built problem."""
    for record in data.heldout:
        yield record["question"], record["answer"], None
    for record in data.train:
        question = record["prompt"].rsplit("Q: ", 1)[1].removesuffix("\nA:")
        yield question, None, record["completion"]


@pytest.mark.parametrize("task", ["math", "code"])
def test_the_same_seed_gives_the_same_data_and_another_seed_other_data(task):
    first = build_task(task, n_train=40, n_eval=20, seed=1)
    assert build_task(task, n_train=40, n_eval=20, seed=1) == first
    other = build_task(task, n_train=40, n_eval=20, seed=2)
    assert other.train != first.train and other.heldout != first.heldout


@pytest.mark.parametrize("task", ["math", "code"])
def test_heldout_problems_are_distinct_and_never_in_the_training_set(task):
    data = build_task(task, n_train=3000, n_eval=80, seed=0)
    assert len(set(data.heldout_keys)) == len(data.heldout_keys)
    assert not set(data.heldout_keys) & set(data.train_keys)
    if task == "math":
        questions = {record["question"] for record in data.heldout}
        assert not any(record["prompt"].rsplit("Q: ", 1)[1].removesuffix("\nA:") in questions for record in data.train)
    else:
        signatures = {record["prompt"].split(">>>")[0] for record in data.heldout}
        assert not any(record["prompt"].split(">>>")[0] in signatures for record in data.train)


def test_math_answers_are_right_and_every_worked_step_is_true():
    data = build_task("math", n_train=400, n_eval=100, seed=0)
    operations = set()
    for key, (question, answer, completion) in zip(data.heldout_keys + data.train_keys, _math_problems(data)):
        operation, numbers = key.split(":")
        numbers = [int(n) for n in numbers.split(",")]
        assert [int(n) for n in re.findall(r"\d+", question)] == numbers, question
        operations.add(operation)
        worked = answer.rsplit("\n####", 1)[0] if answer is not None else completion
        assert STEP.search(worked), worked
        for a, op, b, carry, result in STEP.findall(worked):
            a, b = int(a), int(b)
            assert int(result) == {"+": a + b, "-": a - b, "×": a * b}[op] + bool(carry), worked
        expected = str(EXPECTED[operation](*numbers))
        if answer is not None:
            assert reference_answer(answer) == expected  # what the gsm8k harness compares with
        else:
            assert extract_answer(completion) == (expected, "strict")  # what it reads from an answer
    assert operations == set(EXPECTED)


def test_every_code_family_solution_passes_its_own_tests_in_the_sandbox():
    data = build_task("code", n_train=400, n_eval=80, seed=0)
    first_of_family = {}
    for key, record in zip(data.heldout_keys, data.heldout):
        first_of_family.setdefault(key.split(":")[1], record)
    assert set(first_of_family) == set(FAMILIES)
    for record in first_of_family.values():
        result = run_program(build_program(record, record["canonical_solution"]))
        assert result.status == "passed", (record["task_id"], result.reason)
    record = first_of_family["add"]
    wrong = record["canonical_solution"].replace("+", "-")
    assert run_program(build_program(record, wrong)).status == "failed"  # the tests do test


def test_training_records_are_the_harness_prompt_and_a_plain_completion():
    """What `template: text` trains: the prompt exactly as the harness sends it, then the continuation."""
    code = build_task("code", n_train=5, n_eval=5, seed=0)
    record = code.train[0]
    assert set(record) == {"prompt", "completion"}
    assert record["prompt"].startswith("def ") and record["prompt"].endswith('    """\n')
    assert record["completion"].startswith("    return ")
    math = build_task("math", n_train=5, n_eval=5, seed=0)
    for record in math.train:
        assert record["prompt"].endswith("\nA:") and record["completion"].startswith(" ")
        assert not record["completion"].startswith(" A:") and record["completion"].endswith(".")


def test_written_folders_load_through_the_gsm8k_and_humaneval_harnesses(tmp_path):
    write_task("math", tmp_path / "math", n_train=10, n_eval=12, seed=0)
    write_task("code", tmp_path / "code", n_train=10, n_eval=7, seed=0)
    samples = GSM8K().load(data_dir_for("gsm8k", tmp_path / "math"))
    assert len(samples) == 12 and all(s.doc["target"].isdigit() for s in samples)
    problems = HumanEval().load(data_dir_for("humaneval", tmp_path / "code"))
    assert [p.id for p in problems] == [f"llama2-code/{i}" for i in range(7)]
    manifest = json.loads((tmp_path / "code" / "task.json").read_text())
    assert manifest["benchmark"] == "humaneval" and manifest["heldout"] == 7


def test_cli_gives_a_share_of_math_problems_the_gsm8k_harness_prompt_and_the_rest_its_last_part(tmp_path, capsys):
    out = tmp_path / "math"
    argv = ["data", "build-task", "math", "--output", str(out), "--n-train", "40", "--n-eval", "2", "--few-shot-share", "0.5"]
    assert main([*argv, "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    few_shot = 0
    for line in (out / "train.jsonl").read_text().splitlines():
        record = json.loads(line)
        question = record["prompt"].rsplit("Q: ", 1)[1].removesuffix("\nA:")
        shots = build_prompt(question, exemplars()[:NUM_FEWSHOT])  # what `--tasks gsm8k --num-fewshot 2` sends
        assert record["prompt"] in (shots, question_prompt(question))
        few_shot += record["prompt"] == shots
    assert NUM_FEWSHOT == 2 and few_shot == manifest["train_prompted"] and 10 < few_shot < 30
    assert main(argv) == 1  # no --overwrite
    assert "exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--few-shot-share", "1", "--num-fewshot", "0"]) == 0
    capsys.readouterr()
    prompts = [json.loads(line)["prompt"] for line in (out / "train.jsonl").read_text().splitlines()]
    assert all(prompt.count("Q: ") == 1 for prompt in prompts)
    assert main([*argv, "--overwrite", "--num-fewshot", "9"]) == 1
    assert "from 0 to 8" in capsys.readouterr().err
    assert main(["data", "build-task", "code", "--output", str(tmp_path / "code"), "--few-shot-share", "0.5"]) == 1
    assert "math task only" in capsys.readouterr().err
    assert main(["data", "build-task", "code", "--output", str(tmp_path / "code"), "--num-fewshot", "2"]) == 1
    assert "math task only" in capsys.readouterr().err


def test_the_math_prompt_with_its_worked_answer_fits_the_bundled_chat_model():
    """NUM_FEWSHOT is the most exemplars for which every prompt and worked answer fit default-chat's context."""
    from llama2.model.checkpoint import find_tokenizer, read_model_args, resolve_model_path
    from llama2.model.tokenizer import Tokenizer

    path = resolve_model_path("default-chat")
    tokenizer, context = Tokenizer(find_tokenizer(path)), read_model_args(path).max_seq_len
    data = build_task("math", n_train=1, n_eval=300, seed=0)

    def longest(shots):
        prompts = [build_prompt(r["question"], exemplars()[:shots]) for r in data.heldout]
        answers = [r["answer"].rsplit("\n####", 1)[0] + f" The answer is {reference_answer(r['answer'])}." for r in data.heldout]
        return max(len(tokenizer.encode(f"{p} {a}", bos=True, eos=True)) for p, a in zip(prompts, answers))

    assert longest(NUM_FEWSHOT) <= context < longest(NUM_FEWSHOT + 1)


def test_asking_for_more_heldout_problems_than_exist_fails_clearly():
    with pytest.raises(DataError, match="distinct held-out problems.*lower --n-eval"):
        build_task("code", n_train=1, n_eval=500, seed=0)
