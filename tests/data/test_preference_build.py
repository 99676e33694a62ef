"""The miniature preference pairs: seeded, valid for the pair reader, every strength and safety label
where the kinds say, a wrong answer for every checkable task that fails the task's own check,
held-out prompts never in training; `llama2 data build-preferences`; and pairs turned into token
batches (chosen rows then rejected rows, the mask on the reply's tokens only)."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from llama2.cli.main import main
from llama2.data.chat_dataset import is_refusal
from llama2.data.chat_preferences import FILES, build_preference_pairs
from llama2.data.chat_tasks import CHECKS
from llama2.data.preference import STRENGTHS, pair_from_record, read_preferences
from llama2.data.preference_examples import build_preference_examples, collate_pairs, mix_preferences
from llama2.errors import DataError
from llama2.model.chat_format import encode_dialog
from llama2.model.tokenizer import Tokenizer


@pytest.mark.parametrize("model", ["helpfulness", "safety"])
def test_pairs_are_seeded_and_valid(model):
    first = build_preference_pairs(seed=0, model=model, count=200)
    assert first == build_preference_pairs(seed=0, model=model, count=200)
    assert first != build_preference_pairs(seed=1, model=model, count=200)
    for i, record in enumerate(first):
        pair = pair_from_record(record, where=f"record {i}")  # the reader accepts every record
        assert pair.chosen != pair.rejected
    assert set(Counter(r["strength"] for r in first)) == set(STRENGTHS)


def test_helpfulness_pairs_grade_how_wrong_the_rejected_reply_is():
    from llama2.data.chat_preferences import TASKS

    records = build_preference_pairs(seed=0, model="helpfulness", count=400)
    for record in records:
        kind, strength = record["kind"], record["strength"]
        assert strength in {"non_answer": {"significantly_better"}, "other_question": {"better"},
                            "wrong_answer": {"better", "significantly_better"},
                            "wrong_result": {"slightly_better"}, "unsure": {"negligibly_better"}}[kind]
        assert record["task"] in TASKS and "chosen_safe" not in record
    # A wrong result differs from the worked answer in one value only.
    wrong = [r for r in records if r["kind"] == "wrong_result"]
    assert wrong and all(len(set(r["chosen"].split()) ^ set(r["rejected"].split())) <= 4 for r in wrong)


def test_the_wrong_result_fails_the_tasks_own_check():
    from llama2.data.chat_preferences import _corrupt  # the near miss, checked against the task's check

    rng = random.Random(0)
    for answer, check in (("171", "last_number"), ("e-a-g-l-e", "contains"), ("3, 5, 9", "contains"), ("Yes", "yes_no")):
        near = _corrupt(answer, rng)
        assert near != answer and not CHECKS[check](near, answer, ())


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_task_has_correct_vs_wrong_answer_pairs(split):
    """Correctness-aware pairs (a right answer against a wrong one in the same shape) for every checkable
    task, graded, in both splits, the same for the same seed."""
    from llama2.data.chat_preferences import TASKS

    records = build_preference_pairs(seed=0, split=split, model="helpfulness", count=400 if split == "train" else 200)
    assert records == build_preference_pairs(seed=0, split=split, model="helpfulness",
                                             count=400 if split == "train" else 200)
    wrong = [r for r in records if r["kind"] == "wrong_answer"]
    assert {r["task"] for r in wrong} == set(TASKS)
    assert {r["strength"] for r in wrong} == {"better", "significantly_better"}


@pytest.mark.parametrize("heldout", [False, True])
def test_the_wrong_answer_fails_the_tasks_own_check(heldout):
    from llama2.data.chat_preferences import TASKS, _wrong_answer

    for task, generate in TASKS.items():
        rng = random.Random(f"wrong:{task}")
        for _ in range(60):
            sample = generate(rng, heldout)
            rejected, strength = _wrong_answer(task, sample, rng)
            check = CHECKS[sample.check]
            assert check(sample.turns[0][1], sample.answer, sample.reject)
            assert rejected != sample.turns[0][1] and not check(rejected, sample.answer, sample.reject), (task, rejected)
            assert strength in ("better", "significantly_better")


def test_wrong_answers_keep_the_replys_shape():
    records = build_preference_pairs(seed=0, model="helpfulness", count=400)
    for record in (r for r in records if r["kind"] == "wrong_answer"):
        chosen, rejected = record["chosen"], record["rejected"]
        assert chosen != rejected
        assert chosen.split()[:2] == rejected.split()[:2] or record["task"] == "compare_numbers"
        assert abs(len(chosen) - len(rejected)) <= 12, record


def test_safety_pairs_carry_the_papers_labels():
    records = build_preference_pairs(seed=0, model="safety", count=400)
    kinds = Counter(r["kind"] for r in records)
    assert set(kinds) == {"refusal_vs_compliance", "guideline_vs_bare_refusal", "both_unsafe", "answer_vs_false_refusal"}
    for r in records:
        labels = (r["chosen_safe"], r["rejected_safe"])
        if r["kind"] == "refusal_vs_compliance":
            assert labels == (True, False) and is_refusal(r["chosen"]) and not is_refusal(r["rejected"])
        elif r["kind"] == "both_unsafe":
            assert labels == (False, False) and r["strength"] == "negligibly_better"
        elif r["kind"] == "answer_vs_false_refusal":
            assert labels == (True, True) and r["category"] == "borderline"
            assert not is_refusal(r["chosen"]) and is_refusal(r["rejected"])  # the needless refusal is the worse one
        else:
            assert labels == (True, True) and len(r["chosen"]) > len(r["rejected"])
    assert not any(labels == (False, True) for labels in ((r["chosen_safe"], r["rejected_safe"]) for r in records))


def test_held_out_prompts_are_never_trained_on():
    for model in ("helpfulness", "safety"):
        train = {r["prompt"] for r in build_preference_pairs(seed=0, model=model, split="train")}
        heldout = build_preference_pairs(seed=0, model=model, split="heldout")
        assert not train & {r["prompt"] for r in heldout}
        assert len({(r["prompt"], r["chosen"], r["rejected"]) for r in heldout}) == len(heldout)


def test_build_preferences_writes_four_files(tmp_path, capsys):
    assert main(["data", "build-preferences", "--output", str(tmp_path / "prefs"), "--seed", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["files"]) == set(FILES.values())
    for name, strengths in result["files"].items():
        pairs = read_preferences(tmp_path / "prefs" / name)
        assert len(pairs) == sum(strengths.values())
    assert main(["data", "build-preferences", "--output", str(tmp_path / "prefs")]) == 1  # no silent overwrite
    assert "already exists" in capsys.readouterr().err


# ---- pairs -> tokens -------------------------------------------------------------------------------


@pytest.fixture
def pairs_file(tmp_path):
    records = [{"prompt": "Say yes.", "chosen": "yes", "rejected": "no, never", "strength": "slightly_better",
                "chosen_safe": True, "rejected_safe": False},
               {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                           {"role": "user", "content": "Name a fox."}], "chosen": "The quick brown fox.", "rejected": "A dog."}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_collated_pairs_mask_only_the_final_reply(pairs_file, tiny_tokenizer_path):
    tokenizer = Tokenizer(tiny_tokenizer_path)
    pairs = read_preferences(pairs_file)
    examples = build_preference_examples(tokenizer, pairs, 256)
    batch = collate_pairs(examples)
    assert batch["tokens"].shape[0] == 4 and batch["strength"].tolist() == [2, 1]
    assert batch["safe"].tolist() == [1, -1, 0, -1]  # chosen rows, then rejected rows
    for row, (example, reply) in enumerate([(examples[0], "yes"), (examples[1], "The quick brown fox."),
                                            (examples[0], "no, never"), (examples[1], "A dog.")]):
        ids = example.chosen if row < 2 else example.rejected
        assert ids[: example.prompt_len] == encode_dialog(tokenizer, pairs[row % 2].prompt)
        length = batch["lengths"][row].item()
        assert batch["tokens"][row, :length].tolist() == ids
        targets = batch["targets"][row][batch["loss_mask"][row]].tolist()
        assert targets == ids[example.prompt_len:] and targets[-1] == tokenizer.eos_id  # the reply and its EOS
        assert tokenizer.decode(targets[:-1]).strip() == reply  # earlier turns ("Hello!") are context, not reply


def test_long_pairs_error_or_are_dropped(pairs_file, tiny_tokenizer_path):
    tokenizer = Tokenizer(tiny_tokenizer_path)
    pairs = read_preferences(pairs_file)
    short, long = (example.length for example in build_preference_examples(tokenizer, pairs, 256))
    assert short < long  # the multi-turn pair is the longer
    message = rf"{pairs_file}:2: the pair is {long} tokens with its prompt, longer than seq_len {short}"
    with pytest.raises(DataError, match=message):
        build_preference_examples(tokenizer, pairs, short)
    with pytest.warns(UserWarning, match="dropped 1 of 2 preference pairs"):
        assert len(build_preference_examples(tokenizer, pairs, short, truncate="drop")) == 1


def test_mixing_weights_take_shares_of_each_file(tmp_path, pairs_file):
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "a", "rejected": "b"}) + "\n" for i in range(10)))
    mixed = mix_preferences({str(pairs_file): 2, str(other): 0.5}, seed=0)
    sources = Counter(p.source.split(":")[0] for p in mixed)
    assert sources == {str(pairs_file): 4, str(other): 5}
    assert mixed == mix_preferences({str(pairs_file): 2, str(other): 0.5}, seed=0)
