import pytest

from llama2.errors import ConfigError
from llama2.model.config import PRESETS, ModelArgs, get_preset


@pytest.mark.parametrize(
    "name, published",
    [("7b", 6_738_415_616), ("13b", 13_015_864_320), ("70b", 68_976_648_192)],
)
def test_released_sizes_have_the_published_parameter_counts(name, published):
    # The paper rounds these to 6.74B, 13.02B and 68.98B; the exact counts follow from the shapes.
    assert get_preset(name).n_params() == published
    assert round(published / 1e9, 2) == {"7b": 6.74, "13b": 13.02, "70b": 68.98}[name]


@pytest.mark.parametrize("name, hidden", [("7b", 11008), ("13b", 13824), ("70b", 28672), ("34b", 22016)])
def test_ffn_hidden_size_follows_metas_rule(name, hidden):
    assert get_preset(name).ffn_hidden_dim == hidden


def test_gqa_only_on_34b_and_70b():
    assert {k for k, p in PRESETS.items() if p.args.kv_heads != p.args.n_heads and "tiny" not in k} == {
        "34b", "34b-chat", "70b", "70b-chat"}


def test_kv_cache_size_per_token_matches_the_paper_table():
    assert get_preset("7b").kv_cache_bytes_per_token(2) == 512 * 1024
    assert get_preset("70b").kv_cache_bytes_per_token(2) == 320 * 1024


def test_params_json_round_trip_fills_vocab_from_tokenizer():
    released = {"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-05, "vocab_size": -1}
    args = ModelArgs.from_params(released, vocab_size=32000)
    assert args == get_preset("7b")
    assert ModelArgs.from_params(args.to_params()) == args


def test_invalid_shapes_are_reported_together():
    with pytest.raises(ConfigError, match="not divisible.*n_kv_heads"):
        ModelArgs(dim=100, n_heads=3, n_kv_heads=2)


def test_unknown_params_key_and_unknown_preset():
    with pytest.raises(ConfigError, match="unknown keys in params.json: bogus"):
        ModelArgs.from_params({"dim": 64, "bogus": 1, "vocab_size": 10})
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        get_preset("huge")
