"""Recipe loading: YAML + overrides into a typed config, every problem reported in one ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama2.errors import ConfigError
from llama2.train.config import apply_overrides, load_config, parse_config
from llama2.train.recipes.pretrain import PretrainConfig

REPO = Path(__file__).resolve().parents[2]


def test_overrides_reach_nested_keys_and_parse_yaml_scalars() -> None:
    raw = {"model": {"preset": "tiny"}, "lr": 1.0}
    result = apply_overrides(raw, ["lr=3e-4", "model.n_layers=4", "compile=true", "betas=[0.8, 0.9]", "tokenizer=null"])
    assert result == {"model": {"preset": "tiny", "n_layers": 4}, "lr": 3e-4, "compile": True,
                      "betas": [0.8, 0.9], "tokenizer": None}
    assert raw == {"model": {"preset": "tiny"}, "lr": 1.0}  # the input is left alone


def test_override_must_be_key_value() -> None:
    with pytest.raises(ConfigError, match="not key=value"):
        apply_overrides({}, ["max_steps"])


def test_override_into_a_scalar_names_the_key() -> None:
    with pytest.raises(ConfigError, match="model is 'tiny', not a mapping"):
        apply_overrides({"model": "tiny"}, ["model.n_layers=4"])


def test_yaml_file_with_overrides(tmp_path: Path, tiny_settings) -> None:
    settings = tiny_settings()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("".join(f"{key}: {value}\n" for key, value in settings.items()) + "lr: 1e-3\n")
    config = load_config(PretrainConfig, recipe, ["max_steps=3", "grad_accum=2"])
    assert (config.lr, config.max_steps, config.grad_accum, config.model) == (1e-3, 3, 2, "tiny")
    assert isinstance(config.lr, float)


def test_every_problem_is_listed_at_once(tmp_path: Path, tiny_settings) -> None:
    settings = tiny_settings(data=str(tmp_path / "missing"), max_stepps=10, batch_size="eight", betas=[0.9])
    del settings["output_dir"]
    with pytest.raises(ConfigError) as caught:
        parse_config(PretrainConfig, settings, source="r.yaml")
    message = str(caught.value)
    assert message.startswith("r.yaml has 4 problems: ")
    assert "unknown key 'max_stepps' (did you mean 'max_steps'?)" in message
    assert "missing required key 'output_dir'" in message
    assert "batch_size must be an integer, got 'eight'" in message
    assert "betas must be a list of 2 numbers, got [0.9]" in message
    assert "\n" not in message


def test_value_problems_are_listed_together(tmp_path: Path, tiny_settings) -> None:
    settings = tiny_settings(data=str(tmp_path / "missing"), min_lr_ratio=2, lr=-1.0)
    with pytest.raises(ConfigError) as caught:
        parse_config(PretrainConfig, settings)
    message = str(caught.value)
    assert "3 problems" in message
    assert "min_lr_ratio must lie in [0, 1], got 2.0" in message
    assert "lr and eps must be positive" in message
    assert f"data: {tmp_path / 'missing'}: input not found" in message


def test_bools_are_not_numbers_and_ints_are_floats(tiny_settings) -> None:
    with pytest.raises(ConfigError, match="max_steps must be an integer, got True"):
        parse_config(PretrainConfig, tiny_settings(max_steps=True))
    assert parse_config(PretrainConfig, tiny_settings(lr=1)).lr == 1.0


def test_model_fields_are_checked(tiny_settings) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(PretrainConfig, tiny_settings(model={"preset": "tiny", "n_layer": 3, "dim": "wide"}))
    message = str(caught.value)
    assert "unknown key model.n_layer (did you mean 'n_layers'?)" in message
    assert "model.dim must be an integer, got 'wide'" in message


def test_model_vocabulary_comes_from_the_tokenizer(tiny_config) -> None:
    from llama2.train.recipes.pretrain import model_args, plan_data

    config = tiny_config(model={"dim": 32, "n_layers": 1, "n_heads": 2, "multiple_of": 16, "max_seq_len": 64})
    assert model_args(config, plan_data(config).vocab_size).vocab_size == 512


def test_model_smaller_than_tokenizer_is_refused(tiny_settings) -> None:
    with pytest.raises(ConfigError, match="the tokenizer has 512 pieces but the model only 256"):
        parse_config(PretrainConfig, tiny_settings(model={"preset": "tiny", "vocab_size": 256}))


def test_global_batch_must_divide(tiny_settings) -> None:
    config = parse_config(PretrainConfig, tiny_settings(global_batch_size=16), world_size=2)
    assert config.grad_accum == 2  # 16 / (4 per micro-batch x 2 processes)
    with pytest.raises(ConfigError, match="global_batch_size 12 is not a multiple of batch_size 4 x 2 process"):
        parse_config(PretrainConfig, tiny_settings(global_batch_size=12), world_size=2)
    with pytest.raises(ConfigError, match="grad_accum 3 disagrees with global_batch_size 16"):
        parse_config(PretrainConfig, tiny_settings(global_batch_size=16, grad_accum=3), world_size=2)


def test_seq_len_beyond_the_model_is_refused(tiny_settings) -> None:
    with pytest.raises(ConfigError, match="seq_len 512 exceeds the model's max_seq_len 256"):
        parse_config(PretrainConfig, tiny_settings(seq_len=512))


def test_corpus_without_tokenizer_is_refused(tmp_path: Path, tiny_settings) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text\n")
    with pytest.raises(ConfigError, match="is a corpus to tokenize: set tokenizer"):
        parse_config(PretrainConfig, tiny_settings(data=str(corpus)))


def test_eval_needs_a_validation_split(tiny_settings) -> None:
    with pytest.raises(ConfigError, match="eval_every is 5 but eval_batches is 0"):
        parse_config(PretrainConfig, tiny_settings(eval_every=5, eval_batches=0))


@pytest.mark.parametrize("name", ["pretrain-tiny", "pretrain-7b", "pretrain-13b", "pretrain-70b"])
def test_shipped_recipes_are_valid(name: str, shards: Path, tmp_path: Path) -> None:
    """Each recipe in recipes/ passes validation once its data exists (the paper sizes take 8 GPUs)."""
    overrides = [f"output_dir={tmp_path}"]
    if name != "pretrain-tiny":
        overrides += [f"data={shards}", "eval_every=0"]  # the test shards hold too few tokens for a 4096 window
    config = load_config(PretrainConfig, REPO / "recipes" / f"{name}.yaml", overrides, world_size=8)
    if name != "pretrain-tiny":
        tokens_per_step = config.batch_size * config.grad_accum * 8 * config.seq_len
        assert (tokens_per_step, config.seq_len, config.warmup_steps) == (4 * 1024 * 1024, 4096, 2000)
        assert config.lr == (1.5e-4 if name == "pretrain-70b" else 3e-4)
        assert (config.dtype, config.activation_checkpointing) == ("bfloat16", True)
