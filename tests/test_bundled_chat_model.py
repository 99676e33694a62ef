"""The bundled chat model `default-chat` loads offline, answers in the chat format, and its model
card says how it was made and how it measures."""

import json
import math
from pathlib import Path

import pytest
import torch

from llama2.api import Llama
from llama2.cli.main import main
from llama2.data.chat_dataset import build_chat_dataset, prompt_of, score_replies
from llama2.model.checkpoint import bundled_model_path


@pytest.fixture(scope="module")
def chat():
    return Llama.from_pretrained("default-chat", dtype="float32", device="cpu")


def test_it_ships_beside_the_base_model_with_the_same_shape(chat):
    assert bundled_model_path("default-chat") is not None
    base = Llama.from_pretrained("default", dtype="float32", device="cpu")
    assert chat.args == base.args and chat.tokenizer.n_words == base.tokenizer.n_words


def test_it_answers_a_chat_prompt_and_stops_by_itself(chat):
    results = chat.chat([[{"role": "user", "content": "Hello!"}],
                         [{"role": "system", "content": "You are a helpful assistant."},
                          {"role": "user", "content": "What is 12 + 7?"}]], max_new_tokens=120, temperature=0)
    for result in results:
        assert result.text.strip() and result.finish_reason == "stop"  # it ended its turn with EOS
        assert "[INST]" not in result.text


def test_it_beats_the_base_model_on_heldout_prompts(chat):
    # A slice of the held-out split (unseen values, requests and framings), greedy, as bench/chat_model.py.
    records = build_chat_dataset(split="heldout")[:96]
    base = Llama.from_pretrained("default", dtype="float32", device="cpu")
    scores = {}
    for name, llama in (("base", base), ("chat", chat)):
        replies = [r.text for r in llama.chat([prompt_of(r) for r in records], max_new_tokens=100, temperature=0)]
        scores[name] = score_replies(records, replies)
    assert scores["chat"].task_accuracy > scores["base"].task_accuracy
    assert scores["chat"].refusal_rate > scores["base"].refusal_rate


def test_info_reports_how_it_was_made(capsys):
    assert main(["info", "default-chat", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)["training"]
    assert card["base_model"].startswith("default") and "build-chat" in card["dataset"]
    assert card["recipe"].startswith("recipes/sft-default-chat.yaml")
    assert card["heldout_task_accuracy"] > card["base_heldout_task_accuracy"]


def test_its_recipe_runs_two_steps_on_the_generated_data(tmp_path, capsys):
    # recipes/sft-default-chat.yaml as shipped, on 40 generated dialogs, cut to two small steps.
    data = tmp_path / "chat.jsonl"
    assert main(["data", "build-chat", str(data), "--count", "40"]) == 0
    capsys.readouterr()
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "sft-default-chat.yaml"
    assert main(["train", "sft", str(recipe), f"data={data}", f"output_dir={tmp_path / 'run'}", "epochs=null",
                 "max_steps=2", "batch_size=1", "eval_every=0", "val_fraction=0", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 2 and math.isfinite(summary["metrics"]["loss"])
    trained = Llama.from_pretrained(summary["model"], dtype="float32", device="cpu")
    base = Llama.from_pretrained("default", dtype="float32", device="cpu")
    assert not torch.equal(trained.model.output.weight, base.model.output.weight)
