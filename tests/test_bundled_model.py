"""The bundled default model loads offline and generates, and its model card is reported."""

import json

import pytest

from llama2.api import Llama
from llama2.cli.main import main
from llama2.model.checkpoint import bundled_model_path


@pytest.fixture(scope="module")
def default():
    return Llama.from_pretrained("default", dtype="float32")


def test_it_ships_in_the_package_with_a_tokenizer(default):
    assert bundled_model_path("default") is not None
    assert default.tokenizer is not None and default.tokenizer.n_words == default.args.vocab_size
    assert 1e6 < default.args.n_params() < 30e6


def test_golden_greedy_continuation(default):
    # Recorded from the shipped weights: catches any change to the model, loader, tokenizer or engine.
    [out] = default.generate("Once upon a time", max_new_tokens=12, temperature=0)
    assert out.tokens == [3986, 262, 3981, 13, 607, 3975, 661, 272, 269, 638, 3986, 361]
    assert out.text == ", a.\nThen said of the LORD, The"


def test_it_learned_its_corpus(default):
    # A trained model puts far more probability on the corpus's own phrasing than on a scramble.
    [(likely, _), (scrambled, _)] = default.loglikelihood(
        [("In the beginning God created", " the heaven and the earth."),
         ("In the beginning God created", " earth the and heaven the.")])
    assert likely > scrambled + 5


def test_info_reports_corpus_tokens_and_perplexity(capsys):
    assert main(["info", "default", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)["training"]
    assert card["tokens_seen"] > 1e6 and 1 < card["validation_perplexity"] < 100
    assert "public domain" in card["corpus"]


def test_convert_default_to_hf_and_back(tmp_path, default):
    assert main(["convert", "default", str(tmp_path / "hf"), "--to", "hf", "--dtype", "f32"]) == 0
    again = Llama.from_pretrained(tmp_path / "hf")
    [a] = again.generate("And God said", max_new_tokens=8, temperature=0)
    [b] = default.generate("And God said", max_new_tokens=8, temperature=0)
    assert a.tokens == b.tokens
