"""Ghost Attention (LLAMA2.md §6.1): the data keeps the instruction only in turn 1 and trains only
the last reply; replies are sampled by the model with the instruction in every user turn; short
forms are half the instructions; the keyword judge and the adherence table; a two-step SFT run on
built data; the `llama2 gatt` commands end to end on the tiny checkpoint."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field

import pytest
import torch

import llama2.cli.main as cli_main
from llama2.api import Llama
from llama2.data.sft import read_sft
from llama2.data.sft_examples import build_examples
from llama2.errors import ConfigError, DataError
from llama2.model.chat_format import encode_dialog
from llama2.model.checkpoint import load_state
from llama2.model.config import get_preset
from llama2.model.tokenizer import Tokenizer
from llama2.train.constraints import (
    KINDS,
    Constraint,
    Instruction,
    draw_instructions,
    keyword_judge,
    language_followed,
    load_constraints,
)
from llama2.train.recipes.ghost_attention import (
    build_gatt_dialogs,
    load_user_turns,
    measure_adherence,
    training_dialog,
    with_instruction,
    write_gatt_jsonl,
)
from llama2.types import GenerationResult

USERS = [
    ["Hi there.", "What is a fox?", "Thanks.", "Bye."],
    ["Once upon a time?", "And then?"],
    ["What is the capital of France?", "Why?", "Really?"],
]
TENNIS = Constraint("hobby", "tennis", ("tennis", "racket"))
NAPOLEON = Constraint("figure", "Napoleon", ("napoleon", "bonaparte"))


def constraint(kind: str, name: str) -> Constraint:
    return next(c for c in load_constraints()[kind] if c.name == name)


def instruction(*constraints: Constraint, text: str = "Hobby: tennis.") -> Instruction:
    return Instruction(text, constraints, short=True)


@dataclass
class Recorder:
    """Wraps a chat model and records every `chat` call: the dialogs it saw and what came back."""

    inner: object
    calls: list[tuple[list, list[GenerationResult]]] = field(default_factory=list)

    @property
    def tokenizer(self):
        return self.inner.tokenizer

    @property
    def args(self):
        return self.inner.args

    def chat(self, dialogs, **sampling):
        results = self.inner.chat(dialogs, **sampling)
        self.calls.append(([list(d) for d in dialogs], results))
        return results


@dataclass
class Scripted:
    """A chat model whose reply to a dialog is `reply(dialog)`: the real tokenizer, no weights."""

    tokenizer: Tokenizer
    reply: object
    max_seq_len: int = 1024
    finish_reason: str = "stop"

    @property
    def args(self):
        return dataclasses.replace(get_preset("tiny"), max_seq_len=self.max_seq_len)

    def chat(self, dialogs, **sampling):
        return [GenerationResult([], self.reply(d), self.finish_reason, 0) for d in dialogs]


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_path) -> Tokenizer:
    return Tokenizer(tiny_tokenizer_path)


@pytest.fixture(scope="module")
def tiny_llama(tiny_checkpoint) -> Llama:
    return Llama.from_pretrained(str(tiny_checkpoint), device="cpu")


def turn_of(dialog) -> int:
    return sum(m["role"] == "user" for m in dialog)


# ---- building ----------------------------------------------------------------------------------


def test_gatt_data_keeps_the_instruction_in_turn_one_and_trains_only_the_last_reply(tok, tmp_path):
    model = Scripted(tok, lambda d: f"Reply {turn_of(d)}.")
    built = build_gatt_dialogs(model, USERS, seed=0)
    assert len(built) == len(USERS)
    for users, gatt in zip(USERS, built):
        text = gatt.instruction.text
        shown = [m["content"] for m in gatt.messages if m["role"] == "user"]
        assert shown == [with_instruction(users[0], text), *users[1:]]  # the instruction in turn 1 only
        answers = [m for m in gatt.messages if m["role"] == "assistant"]
        assert [a["content"] for a in answers] == [f"Reply {k + 1}." for k in range(len(users))]
        assert [a.get("train", True) for a in answers] == [False] * (len(users) - 1) + [True]
    # Through the SFT data path: the loss mask covers the last answer (and its EOS) and nothing else.
    path = write_gatt_jsonl(built, tmp_path / "gatt.jsonl")
    for dialog, gatt in zip(read_sft(path), built):
        (example,) = build_examples(tok, [dialog], seq_len=512)
        learned = [i for i, keep in zip(example.ids, example.loss_mask) if keep]
        assert learned[-1] == tok.eos_id
        assert tok.decode(learned[:-1]).strip() == gatt.messages[-1]["content"]


def test_system_placement_puts_the_instruction_in_a_system_message(tok):
    (gatt,) = build_gatt_dialogs(Scripted(tok, lambda d: "Fine."), USERS[1:2], seed=0, placement="system")
    assert gatt.messages[0] == {"role": "system", "content": gatt.instruction.text}
    assert [m["content"] for m in gatt.messages if m["role"] == "user"] == USERS[1]
    with pytest.raises(ConfigError, match="unknown placement"):
        training_dialog(["a"], ["b"], "c", placement="middle")


def test_replies_are_sampled_by_the_model_with_the_instruction_in_every_user_turn(tiny_llama):
    recorder = Recorder(tiny_llama)
    built = build_gatt_dialogs(recorder, USERS, seed=3, turns=3, max_new_tokens=6, batch_size=2)
    seen = {}  # first user message -> the dialogs the engine saw for it, by turn
    for dialogs, results in recorder.calls:
        assert len(dialogs) <= 2  # batched across dialogs, batch_size per call
        for dialog, result in zip(dialogs, results):
            seen.setdefault(dialog[0]["content"], {})[turn_of(dialog)] = (dialog, result)
    assert built, "the tiny model gave no reply at all"
    for gatt in built:
        text = gatt.instruction.text
        turns = seen[gatt.messages[0]["content"]]  # turn 1 as trained is turn 1 as sampled
        answers = [m["content"] for m in gatt.messages if m["role"] == "assistant"]
        for k, answer in enumerate(answers, start=1):
            dialog, result = turns[k]
            users = [m["content"] for m in dialog if m["role"] == "user"]
            assert all(u.startswith(text + "\n\n") for u in users)  # in EVERY user turn
            assert [m["content"] for m in dialog if m["role"] == "assistant"] == answers[: k - 1]  # its own replies
            assert answer and result.text.strip().startswith(answer)  # the engine's reply (trimmed if cut off)
        assert gatt.sampled == turns[len(answers)][0] + [{"role": "assistant", "content": answers[-1]}]
    assert max(sum(m["role"] == "assistant" for m in g.messages) for g in built) == 3


def test_sampling_is_seeded_and_rows_are_independent(tiny_llama):
    same = [USERS[0][:1]] * 4  # four identical prompts in one batch
    kwargs = dict(seed=1, instructions=[instruction(TENNIS)] * 4, max_new_tokens=8, temperature=1.0)
    replies = [g.messages[-1]["content"] for g in build_gatt_dialogs(tiny_llama, same, **kwargs)]
    assert replies == [g.messages[-1]["content"] for g in build_gatt_dialogs(tiny_llama, same, **kwargs)]
    assert len(set(replies)) > 1  # not one noise stream shared by every row
    state = torch.random.get_rng_state()
    build_gatt_dialogs(tiny_llama, same, **kwargs)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left as it was


def test_empty_replies_and_a_full_context_end_a_dialog_early(tok):
    built = build_gatt_dialogs(Scripted(tok, lambda d: "" if turn_of(d) == 2 else "Ok."), USERS, seed=0)
    assert [sum(m["role"] == "assistant" for m in g.messages) for g in built] == [1, 1, 1]
    assert build_gatt_dialogs(Scripted(tok, lambda d: ""), USERS, seed=0) == []
    # A window with room for turn 1 of the first dialog (plus 4 new tokens) but not for its turn 2.
    ins = instruction(TENNIS)
    first = encode_dialog(tok, [{"role": "user", "content": with_instruction(USERS[0][0], ins.text)}])
    cramped = Scripted(tok, lambda d: "Ok.", max_seq_len=len(first) + 4)
    (gatt,) = build_gatt_dialogs(cramped, USERS[:1], seed=0, instructions=[ins], max_new_tokens=4)
    assert sum(m["role"] == "assistant" for m in gatt.messages) == 1


def test_a_reply_cut_off_by_max_new_tokens_is_trimmed_to_its_last_sentence(tok):
    cut = Scripted(tok, lambda d: "One. Two! Three is cut", finish_reason="length")
    (gatt,) = build_gatt_dialogs(cut, USERS[1:2], seed=0, turns=1)
    assert gatt.messages[-1]["content"] == "One. Two!"


def test_bad_arguments_fail_with_a_clear_error(tok):
    model = Scripted(tok, lambda d: "Ok.")
    with pytest.raises(ConfigError, match="2 instructions"):
        build_gatt_dialogs(model, USERS, seed=0, instructions=draw_instructions(2, seed=0))
    with pytest.raises(ConfigError, match="turns must be"):
        build_gatt_dialogs(model, USERS, seed=0, turns=0)
    with pytest.raises(DataError, match=r"dialog 1: field 'turns': turn 0 must be non-empty"):
        build_gatt_dialogs(model, [["Hi"], [" "]], seed=0)


# ---- instructions ------------------------------------------------------------------------------


def test_instructions_are_seeded_combinations_and_half_are_short():
    drawn = draw_instructions(200, seed=1)
    assert drawn == draw_instructions(200, seed=1) and drawn != draw_instructions(200, seed=2)
    assert sum(i.short for i in drawn) == 100
    for ins in drawn:
        kinds = [c.kind for c in ins.constraints]
        assert 1 <= len(kinds) <= 3 and len(set(kinds)) == len(kinds)
        short = " ".join(f"{k.capitalize()}: {c.name}." for k, c in zip(kinds, ins.constraints))
        assert (ins.text == short) == ins.short
        assert all(c.name in ins.text for c in ins.constraints)
    assert {c.kind for i in drawn for c in i.constraints} == set(KINDS)
    assert {len(i.constraints) for i in drawn} == {1, 2, 3}


def test_built_data_uses_short_forms_in_about_half_the_dialogs(tok):
    users = load_user_turns()
    built = build_gatt_dialogs(Scripted(tok, lambda d: "Ok."), users, seed=5, turns=1)
    assert len(built) == len(users) == 40
    assert sum(g.instruction.short for g in built) == 20
    assert sum(bool(re.fullmatch(r"((Hobby|Language|Figure): [^.]+\. ?)+", g.instruction.text)) for g in built) == 20


def test_shipped_lists_and_user_turns():
    table = load_constraints()
    assert all(15 <= len(table[kind]) <= 30 for kind in KINDS)
    train, test = load_user_turns(split="train"), load_user_turns(split="test")
    assert (len(train), len(test)) == (40, 20) and not set(map(tuple, train)) & set(map(tuple, test))
    assert all(6 <= len(d) <= 8 for d in train + test)
    # No user turn gives a hobby or figure away (the judge would credit an echo of the user).
    for turn in (t for d in train + test for t in d):
        assert not any(keyword_judge(turn, instruction(c)) for kind in ("hobby", "figure") for c in table[kind])


def test_user_turns_from_any_sft_file_and_bad_records(tmp_path):
    path = tmp_path / "turns.jsonl"
    path.write_text(json.dumps({"turns": ["a", "b"], "split": "test"}) + "\n"
                    + json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                                               {"role": "user", "content": "z"}, {"role": "assistant", "content": "w"}]}) + "\n")
    assert load_user_turns(path, split=None) == [["a", "b"], ["x", "z"]]
    assert load_user_turns(path, split="train") == [["x", "z"]]
    path.write_text(json.dumps({"turns": ["fine", "[INST] no"]}) + "\n")
    with pytest.raises(DataError, match=r"turns\.jsonl:1: field 'turns': turn 1 contains the special tag"):
        load_user_turns(path)


# ---- judging and measuring ---------------------------------------------------------------------


@pytest.mark.parametrize("reply, constraints, expected", [
    ("I played tennis all morning.", (TENNIS,), True),
    ("My new RACKETS arrived!", (TENNIS,), True),
    ("I like to read in the evening.", (TENNIS,), False),
    ("Bonaparte would say: onward.", (NAPOLEON,), True),
    ("A napoleonic age.", (NAPOLEON,), False),  # whole words only
    ("As Napoleon, I say tennis is war.", (TENNIS, NAPOLEON), True),
    ("As Napoleon, I say chess is war.", (TENNIS, NAPOLEON), False),  # every constraint must hold
    ("", (TENNIS,), False),
])
def test_keyword_judge_on_hobbies_and_figures(reply, constraints, expected):
    assert keyword_judge(reply, instruction(*constraints)) is expected


@pytest.mark.parametrize("reply, language, expected", [
    ("Je suis très content de vous voir, et la journée est belle.", "French", True),
    ("Oui.", "French", True),
    ("I am very happy to see you, and the day is nice.", "French", False),
    ("Estoy muy contento de verte, y el día es bonito también.", "Spanish", True),
    ("Estoy muy contento de verte, y el día es bonito también.", "French", False),
    ("Ich bin sehr froh, und das Wetter ist schön.", "German", True),
    ("Le chat. The dog is in the house and it is big.", "French", False),
    ("1234 !!!", "French", False),
])
def test_keyword_judge_on_languages(reply, language, expected):
    assert language_followed(reply, constraint("language", language)) is expected
    assert keyword_judge(reply, instruction(constraint("language", language))) is expected


def test_measure_adherence_gives_the_percentage_at_each_turn(tok):
    # Replies mention tennis at turns 1-2 only, and the instruction is honoured nowhere after that.
    recorder = Recorder(Scripted(tok, lambda d: "Tennis!" if turn_of(d) <= 2 else "Hello."))
    users = [["a", "b", "c", "d"], ["e", "f", "g", "h"], ["i", "j"]]
    instructions = [instruction(TENNIS, text=f"You enjoy tennis ({n}).") for n in range(3)]
    result = measure_adherence(recorder, users, instructions, turns=(4, 2, 3))
    assert result.turns == (2, 3, 4)
    assert result.judged == {2: 3, 3: 2, 4: 2}  # the short dialog stops at turn 2
    assert result.percent == {2: 100.0, 3: 0.0, 4: 0.0}
    for dialogs, _ in recorder.calls:  # the instruction only in the first user turn
        for dialog in dialogs:
            users_seen = [m["content"] for m in dialog if m["role"] == "user"]
            assert users_seen[0].startswith("You enjoy tennis (") and not any("tennis" in u for u in users_seen[1:])
    assert [len(t) for t in result.transcripts] == [8, 8, 4]
    judge_calls = []
    measure_adherence(Scripted(tok, lambda d: "x"), users, instructions, turns=(2,),
                      judge=lambda reply, ins: judge_calls.append((reply, ins)) or True)
    assert judge_calls == [("x", ins) for ins in instructions]  # any callable judges
    assert measure_adherence(Scripted(tok, lambda d: "x"), users[2:], instructions[2:], turns=(6,)).percent == {6: None}
    with pytest.raises(ConfigError, match="turns must be positive"):
        measure_adherence(recorder, users, instructions, turns=(0, 2))


# ---- SFT on the data, and the commands ---------------------------------------------------------


def run_cli(monkeypatch, argv: list[str]) -> int:
    if "gatt" not in cli_main.COMMAND_MODULES:
        monkeypatch.setattr(cli_main, "COMMAND_MODULES", (*cli_main.COMMAND_MODULES, "gatt"))
    return cli_main.main(argv)


def test_two_steps_of_sft_on_built_gatt_data(tmp_path, tiny_checkpoint, tok, capsys):
    built = build_gatt_dialogs(Scripted(tok, lambda d: f"Reply number {turn_of(d)}."), USERS * 2, seed=0)
    path = write_gatt_jsonl(built, tmp_path / "gatt.jsonl")
    out = tmp_path / "run"
    code = cli_main.main(["train", "sft", f"init={tiny_checkpoint}", f"data={path}", f"output_dir={out}", "max_steps=2",
                          "batch_size=2", "seq_len=256", "lr=1e-3", "log_every=1", "tensorboard=false", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["step"] == 2 and torch.isfinite(torch.tensor(summary["metrics"]["loss"]))
    # The recipe trains the masks of the first test (last replies only), far fewer tokens than all replies.
    last_only = sum(sum(e.loss_mask) for e in build_examples(tok, read_sft(path), 256))
    every_reply = sum(sum(e.loss_mask) for e in build_examples(tok, [_all_trained(g.messages) for g in built], 256))
    assert f"{last_only} trained tokens" in captured.err and last_only < every_reply
    _, before = load_state(tiny_checkpoint)
    _, after = load_state(out / "model")
    assert any(not torch.equal(before[k].float(), after[k].float()) for k in before)


def _all_trained(messages):
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def test_gatt_commands_end_to_end(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    data = tmp_path / "gatt.jsonl"
    model = str(tiny_checkpoint)
    common = ["--count", "3", "--max-new-tokens", "6", "--device", "cpu"]
    assert run_cli(monkeypatch, ["gatt", "build", "--model", model, "--output", str(data), "--turns", "2", *common]) == 0
    assert "GAtt dialogs" in capsys.readouterr().out
    dialogs = read_sft(data)
    assert dialogs and all(sum(m["role"] == "assistant" for m in d.messages) <= 2 for d in dialogs)
    assert run_cli(monkeypatch, ["gatt", "build", "--model", model, "--output", str(data), *common]) == 1
    assert "exists" in capsys.readouterr().err  # no silent overwrite without --overwrite

    argv = ["gatt", "measure", "--model", model, "--model", model + "/", "--turns", "1,2", *common]
    assert run_cli(monkeypatch, [*argv, "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    first, second = table["models"].values()
    assert first == second  # same weights, same seeds: the same verdicts
    assert set(first) == {"1", "2"} and first["1"]["judged"] == 3
    assert all(row["percent"] is None or 0 <= row["percent"] <= 100 for row in first.values())
    assert run_cli(monkeypatch, argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["turn", model, model + "/"] and [line.split()[0] for line in lines[2:]] == ["1", "2"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"turns": []}) + "\n")
    assert run_cli(monkeypatch, ["gatt", "measure", "--model", model, "--dialogs", str(bad), *common]) == 1
    assert f"{bad}:1: field 'turns' must be a non-empty list" in capsys.readouterr().err
