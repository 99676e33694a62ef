"""Checkpoint I/O without third-party runtimes: format detection, bit-exact round trips between
Meta, HF and GGUF, model-parallel split dims, atomic saves, and one-line errors for broken files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from llama2.cli.main import main
from llama2.errors import CheckpointError, ConfigError, UnknownModelError
from llama2.model.checkpoint import (
    detect_format,
    export_gguf,
    find_tokenizer,
    load_state,
    load_transformer,
    read_model_args,
    resolve_model_path,
    save_hf,
    save_meta,
)
from llama2.model.checkpoint.common import derive_ffn_shape
from llama2.model.checkpoint.hf import args_from_hf_config, hf_config, permute_from_hf, permute_to_hf
from llama2.model.config import PRESETS, ModelArgs, get_preset
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer


def random_model(preset: str = "tiny", seed: int = 0, **changes) -> Transformer:
    model = Transformer(get_preset(preset).replace(**changes))
    model.init_weights(torch.Generator().manual_seed(seed))
    return model


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name


@pytest.fixture
def meta_folder(tmp_path: Path, tiny_tokenizer_path: Path) -> Path:
    model = random_model()
    save_meta(model, model.args, tmp_path / "meta", tokenizer=tiny_tokenizer_path, num_shards=2)
    return tmp_path / "meta"


# ------------------------------------------------------------------------------------- detection


def test_detect_format_tells_the_three_layouts_apart(tmp_path, meta_folder, tiny_tokenizer_path):
    model = random_model()
    save_hf(model, model.args, tmp_path / "hf")
    export_gguf(model, model.args, tmp_path / "m.gguf", tokenizer=tiny_tokenizer_path, dtype="f32")
    assert detect_format(meta_folder) == "meta"
    assert detect_format(tmp_path / "hf") == "hf"
    assert detect_format(tmp_path / "m.gguf") == "gguf"


def test_detect_format_rejects_what_is_not_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    for path, problem in [
        (tmp_path / "missing", "no such file or folder"),
        (tmp_path / "empty", "not a checkpoint folder"),
        (tmp_path / "notes.txt", "not a checkpoint"),
    ]:
        with pytest.raises(CheckpointError, match=problem) as info:
            detect_format(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_resolve_model_path_accepts_existing_paths_only(tmp_path, meta_folder):
    assert resolve_model_path(str(meta_folder)) == meta_folder
    with pytest.raises(UnknownModelError, match="nowhere"):
        resolve_model_path(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------- Meta


def test_meta_shards_split_along_fairscale_dims(meta_folder):
    model = random_model()
    full = model.state_dict()
    shards = [torch.load(meta_folder / f"consolidated.0{r}.pth", weights_only=True) for r in range(2)]
    for name, dim in [
        ("tok_embeddings.weight", 1),
        ("layers.0.attention.wq.weight", 0),
        ("layers.0.attention.wk.weight", 0),
        ("layers.1.attention.wo.weight", 1),
        ("layers.1.feed_forward.w1.weight", 0),
        ("layers.1.feed_forward.w2.weight", 1),
        ("output.weight", 0),
    ]:
        for rank, shard in enumerate(shards):
            assert torch.equal(shard[name], full[name].chunk(2, dim=dim)[rank]), name
    for name in ("norm.weight", "layers.0.attention_norm.weight", "layers.1.ffn_norm.weight"):
        assert all(torch.equal(shard[name], full[name]) for shard in shards)
    # Each shard stores only its slice, not the whole storage it was cut from.
    assert (meta_folder / "consolidated.00.pth").stat().st_size < 0.6 * sum(t.numel() * 4 for t in full.values())


def test_meta_params_json_has_the_real_vocab_and_loads_with_mmap(meta_folder, tiny_tokenizer_path):
    params = json.loads((meta_folder / "params.json").read_text())
    assert params["vocab_size"] == 512 and params["n_kv_heads"] == 2
    assert read_model_args(meta_folder) == get_preset("tiny")
    assert find_tokenizer(meta_folder) == meta_folder / "tokenizer.model"
    assert (meta_folder / "tokenizer.model").read_bytes() == tiny_tokenizer_path.read_bytes()


def test_meta_vocab_minus_one_is_filled_from_the_tokenizer_in_the_parent(tmp_path, tiny_tokenizer_path):
    """Meta's download: tokenizer.model at the top, params.json with vocab_size -1 per model folder."""
    model = random_model("tiny-mha")
    save_meta(model, model.args, tmp_path / "llama-2-tiny")
    params_path = tmp_path / "llama-2-tiny" / "params.json"
    params = json.loads(params_path.read_text())
    params_path.write_text(json.dumps(params | {"vocab_size": -1}))
    shutil.copy(tiny_tokenizer_path, tmp_path / "tokenizer.model")
    assert find_tokenizer(tmp_path / "llama-2-tiny") == tmp_path / "tokenizer.model"
    assert read_model_args(tmp_path / "llama-2-tiny").vocab_size == 512
    (tmp_path / "tokenizer.model").unlink()
    with pytest.raises(CheckpointError, match="vocab_size is -1 and no tokenizer.model"):
        read_model_args(tmp_path / "llama-2-tiny")


def test_single_shard_load_keeps_weights_file_backed_and_casts_on_request(tmp_path):
    model = random_model()
    save_meta(model, model.args, tmp_path / "m")
    loaded = load_transformer(tmp_path / "m")
    assert loaded.tok_embeddings.weight.dtype == torch.float32
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    assert_same_state(loaded.state_dict(), model.state_dict())
    for dtype in (torch.bfloat16, "bf16", "bfloat16"):
        half = load_transformer(tmp_path / "m", dtype=dtype)
        assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    with pytest.raises(ConfigError, match="unknown dtype 'int8'"):
        load_transformer(tmp_path / "m", dtype="int8")


def test_save_meta_refuses_a_shard_count_that_does_not_divide_the_heads(tmp_path):
    model = random_model()
    with pytest.raises(CheckpointError, match="n_kv_heads 2"):
        save_meta(model, model.args, tmp_path / "m", num_shards=4)
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------------------------- HF


def test_rotary_permutation_is_inverted_exactly():
    weight = torch.arange(8 * 16 * 3, dtype=torch.float32).reshape(8 * 16, 3)
    permuted = permute_to_hf(weight, n_heads=8)
    assert not torch.equal(permuted, weight)
    assert torch.equal(permute_from_hf(permuted, n_heads=8), weight)
    # Per head, HF puts Meta's even rows (first of each rotary pair) in the first half.
    assert torch.equal(permuted[:8], weight[0:16:2])


@pytest.mark.parametrize("preset", ["7b", "13b", "70b", "tiny", "tiny-mha", "110m"])
def test_hf_config_round_trips_model_args(preset):
    args = get_preset(preset)
    config = hf_config(args, torch.bfloat16)
    back = args_from_hf_config(config)
    assert back.ffn_hidden_dim == args.ffn_hidden_dim == config["intermediate_size"]
    assert back.replace(multiple_of=args.multiple_of, ffn_dim_multiplier=args.ffn_dim_multiplier) == args
    if preset in ("7b", "13b", "70b"):
        assert (back.multiple_of, back.ffn_dim_multiplier) == (args.multiple_of, args.ffn_dim_multiplier)


def test_derive_ffn_shape_reaches_unusual_widths():
    for dim, width in [(64, 100), (4096, 14336), (512, 4096)]:
        multiple_of, multiplier = derive_ffn_shape(dim, width)
        assert ModelArgs(dim=dim, n_heads=4, multiple_of=multiple_of, ffn_dim_multiplier=multiplier).ffn_hidden_dim == width


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"model_type": "mistral"}, "model_type"),
        ({"tie_word_embeddings": True}, "tie_word_embeddings"),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope scaling 'linear'"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"hidden_size": None}, "bad field value"),
    ],
)
def test_hf_config_refuses_what_llama_2_is_not(change, problem):
    config = hf_config(get_preset("tiny"), torch.float32) | change
    with pytest.raises(CheckpointError, match=problem):
        args_from_hf_config(config, "x/config.json")


def test_hf_sharded_save_writes_an_index_and_permuted_q_k(tmp_path, tiny_tokenizer_path):
    model = random_model()
    files = save_hf(model, model.args, tmp_path / "hf", tokenizer=tiny_tokenizer_path, max_shard_size="100KB")
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((tmp_path / "hf" / s) in files for s in shards)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is False
    assert config["torch_dtype"] == config["dtype"] == "float32"
    key = "model.layers.0.self_attn.k_proj.weight"
    with safe_open(tmp_path / "hf" / index["weight_map"][key], framework="pt") as f:
        stored = f.get_tensor(key)
    wk = model.layers[0].attention.wk.weight.detach()
    assert torch.equal(stored, permute_to_hf(wk, n_heads=model.args.kv_heads))


@pytest.mark.parametrize(("preset", "shards", "dtype"), [("tiny", 2, torch.float32), ("tiny-mha", 1, torch.bfloat16)])
def test_meta_to_hf_to_meta_is_bit_exact(tmp_path, preset, shards, dtype):
    model = random_model(preset).to(dtype)
    save_meta(model, model.args, tmp_path / "a", num_shards=shards)
    args, state = load_state(tmp_path / "a")
    save_hf(state, args, tmp_path / "hf", max_shard_size="64KB")
    args_hf, state_hf = load_state(tmp_path / "hf")
    save_meta(state_hf, args_hf, tmp_path / "b", num_shards=shards)
    args_b, state_b = load_state(tmp_path / "b")
    assert_same_state(state_b, model.state_dict())
    assert args_b.ffn_hidden_dim == model.args.ffn_hidden_dim


def test_hf_to_meta_is_bit_exact(tmp_path, tiny_tokenizer_path):
    model = random_model("tiny", seed=3)
    save_hf(model, model.args, tmp_path / "hf", tokenizer=tiny_tokenizer_path)
    hf_model = load_transformer(tmp_path / "hf")
    save_meta(hf_model, hf_model.args, tmp_path / "meta", tokenizer=find_tokenizer(tmp_path / "hf"))
    assert_same_state(load_transformer(tmp_path / "meta").state_dict(), model.state_dict())
    assert Tokenizer(tmp_path / "meta" / "tokenizer.model").n_words == 512


# ------------------------------------------------------------------------------------- GGUF


@pytest.mark.parametrize(("dtype", "atol"), [("f32", 0.0), ("f16", 1e-3), ("bf16", 1e-2), ("q8_0", 2e-3)])
def test_gguf_export_reads_back(tmp_path, tiny_tokenizer_path, dtype, atol):
    model = random_model("tiny-mha")
    export_gguf(model, model.args, tmp_path / "m.gguf", tokenizer=tiny_tokenizer_path, dtype=dtype)
    args, state = load_state(tmp_path / "m.gguf")
    assert args == model.args.replace(multiple_of=args.multiple_of)
    for name, tensor in model.state_dict().items():
        assert torch.allclose(state[name].float(), tensor, rtol=0, atol=atol), name
        if tensor.dim() == 1:
            assert state[name].dtype == torch.float32  # norms stay f32, as llama.cpp expects


def test_gguf_metadata_and_vocabulary_follow_llama_cpp(tmp_path, tiny_tokenizer_path):
    model = random_model()
    export_gguf(model, model.args, tmp_path / "m.gguf", tokenizer=tiny_tokenizer_path, dtype="q8_0")
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    value = lambda key: reader.fields[key].contents()  # noqa: E731
    assert value("general.architecture") == "llama"
    assert value("llama.attention.head_count_kv") == 2 and value("llama.feed_forward_length") == 192
    assert value("llama.rope.dimension_count") == 16 and value("tokenizer.ggml.model") == "llama"
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    ours, theirs = Tokenizer(tiny_tokenizer_path), Tokenizer(tmp_path / "m.gguf")
    text = "Once upon a time, 1234 Grüße!"
    assert theirs.encode(text, bos=True, eos=False) == ours.encode(text, bos=True, eos=False)


def test_gguf_export_refuses_a_tokenizer_larger_than_the_embedding(tmp_path, tiny_tokenizer_path):
    model = random_model(vocab_size=256)
    with pytest.raises(CheckpointError, match="512 pieces"):
        export_gguf(model, model.args, tmp_path / "m.gguf", tokenizer=tiny_tokenizer_path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------- atomic saves


def test_interrupted_save_leaves_nothing_behind(tmp_path, monkeypatch):
    model = random_model()
    calls = []

    def failing_save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_save(obj, path, *args, **kwargs)

    real_save = torch.save
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        save_meta(model, model.args, tmp_path / "m", num_shards=2)
    assert list(tmp_path.iterdir()) == []


def test_existing_destination_is_kept_unless_overwrite(tmp_path):
    first, second = random_model(seed=1), random_model(seed=2)
    save_hf(first, first.args, tmp_path / "hf")
    with pytest.raises(CheckpointError, match="already exists"):
        save_hf(second, second.args, tmp_path / "hf")
    assert_same_state(load_transformer(tmp_path / "hf").state_dict(), first.state_dict())
    save_hf(second, second.args, tmp_path / "hf", overwrite=True)
    assert_same_state(load_transformer(tmp_path / "hf").state_dict(), second.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


# ------------------------------------------------------------------------------------- broken inputs


def _one_line_naming(error: pytest.ExceptionInfo, name: str) -> str:
    message = str(error.value)
    assert "\n" not in message and name in message, message
    return message


def test_truncated_shard(meta_folder):
    shard = meta_folder / "consolidated.01.pth"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CheckpointError) as error:
        load_transformer(meta_folder)
    assert "truncated or corrupt" in _one_line_naming(error, "consolidated.01.pth")


def test_missing_params_json(meta_folder):
    (meta_folder / "params.json").unlink()
    with pytest.raises(CheckpointError) as error:
        load_transformer(meta_folder)
    assert "missing" in _one_line_naming(error, "params.json")


def test_missing_shard(meta_folder):
    (meta_folder / "consolidated.00.pth").unlink()
    with pytest.raises(CheckpointError) as error:
        load_transformer(meta_folder)
    assert "consolidated.00.pth are missing" in _one_line_naming(error, "meta")


def test_wrong_shard_count_is_named(meta_folder):
    (meta_folder / "consolidated.01.pth").unlink()
    with pytest.raises(CheckpointError) as error:
        load_transformer(meta_folder)
    assert "one of 2 model-parallel shards" in _one_line_naming(error, "consolidated.00.pth")


def test_shape_mismatch_against_params(meta_folder):
    params_path = meta_folder / "params.json"
    params_path.write_text(json.dumps(json.loads(params_path.read_text()) | {"multiple_of": 256}))
    with pytest.raises(CheckpointError) as error:
        load_transformer(meta_folder)
    message = _one_line_naming(error, "consolidated.00.pth")
    assert "feed_forward.w" in message and "expected" in message


def test_unknown_params_key(meta_folder):
    params_path = meta_folder / "params.json"
    params_path.write_text(json.dumps(json.loads(params_path.read_text()) | {"use_scaled_rope": True}))
    with pytest.raises(CheckpointError) as error:
        read_model_args(meta_folder)
    assert "use_scaled_rope" in _one_line_naming(error, "params.json")


def test_tokenizer_larger_than_the_embedding(tmp_path, tiny_tokenizer_path):
    model = random_model(vocab_size=256)
    with pytest.raises(CheckpointError, match="512 pieces"):
        save_meta(model, model.args, tmp_path / "m", tokenizer=tiny_tokenizer_path)
    save_meta(model, model.args, tmp_path / "m")
    shutil.copy(tiny_tokenizer_path, tmp_path / "m" / "tokenizer.model")
    with pytest.raises(CheckpointError) as error:
        load_transformer(tmp_path / "m")
    assert "512 pieces" in _one_line_naming(error, "tokenizer.model")


def test_embedding_rows_disagree_with_the_tokenizer(tmp_path, tiny_tokenizer_path):
    """vocab_size -1 is taken from the tokenizer; an embedding of another size is named."""
    model = random_model(vocab_size=1024)
    save_meta(model, model.args, tmp_path / "m", tokenizer=tiny_tokenizer_path)
    params_path = tmp_path / "m" / "params.json"
    params_path.write_text(json.dumps(json.loads(params_path.read_text()) | {"vocab_size": -1}))
    with pytest.raises(CheckpointError) as error:
        load_transformer(tmp_path / "m")
    assert "tok_embeddings.weight" in _one_line_naming(error, "consolidated.00.pth")


def test_recomputed_rotary_buffers_in_old_checkpoints_are_ignored(tmp_path):
    """Llama 1's `rope.freqs` (Meta) and old exports' `rotary_emb.inv_freq` (HF) are not weights."""
    model = random_model()
    save_meta(model, model.args, tmp_path / "meta")
    save_hf(model, model.args, tmp_path / "hf")
    shard = tmp_path / "meta" / "consolidated.00.pth"
    torch.save(torch.load(shard, weights_only=True) | {"rope.freqs": torch.ones(8)}, shard)
    weights = tmp_path / "hf" / "model.safetensors"
    save_file(load_file(weights) | {"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)}, weights)
    for folder in ("meta", "hf"):
        assert_same_state(load_transformer(tmp_path / folder).state_dict(), model.state_dict())


def test_missing_and_unknown_tensors(tmp_path):
    model = random_model()
    state = model.state_dict()
    state["layers.0.attention.wq.bias"] = torch.zeros(64)
    del state["norm.weight"]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "params.json").write_text(json.dumps(model.args.to_params()))
    torch.save(state, tmp_path / "m" / "consolidated.00.pth")
    with pytest.raises(CheckpointError) as error:
        load_transformer(tmp_path / "m")
    message = _one_line_naming(error, "consolidated.00.pth")
    assert "missing 1 tensor(s): norm.weight" in message and "unknown 1 tensor(s): layers.0.attention.wq.bias" in message


def test_broken_hf_folders(tmp_path):
    model = random_model()
    save_hf(model, model.args, tmp_path / "hf", max_shard_size="100KB")
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    first, last = sorted(set(index["weight_map"].values()))[0], sorted(set(index["weight_map"].values()))[-1]
    data = (tmp_path / "hf" / first).read_bytes()
    (tmp_path / "hf" / first).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        load_transformer(tmp_path / "hf")
    _one_line_naming(error, first)
    (tmp_path / "hf" / last).unlink()
    with pytest.raises(CheckpointError) as error:
        load_transformer(tmp_path / "hf")
    assert f"lists {last}" in _one_line_naming(error, "model.safetensors.index.json")


def test_hf_shape_mismatch_names_the_tensor(tmp_path):
    model = random_model()
    save_hf(model, model.args, tmp_path / "hf")
    config_path = tmp_path / "hf" / "config.json"
    config_path.write_text(json.dumps(json.loads(config_path.read_text()) | {"intermediate_size": 256}))
    with pytest.raises(CheckpointError) as error:
        load_transformer(tmp_path / "hf")
    assert "mlp." in _one_line_naming(error, "model.safetensors")


def test_truncated_gguf(tmp_path, tiny_tokenizer_path):
    model = random_model()
    export_gguf(model, model.args, tmp_path / "m.gguf", tokenizer=tiny_tokenizer_path)
    data = (tmp_path / "m.gguf").read_bytes()
    (tmp_path / "m.gguf").write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError) as error:
        load_transformer(tmp_path / "m.gguf")
    _one_line_naming(error, "m.gguf")


# ------------------------------------------------------------------------------------- CLI


def test_convert_cli_chains_the_formats(tmp_path, tiny_tokenizer_path, capsys):
    assert main(["convert", "tiny", str(tmp_path / "hf"), "--to", "hf", "--seed", "7",
                 "--tokenizer", str(tiny_tokenizer_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "hf" and report["dtype"] == "f32" and str(tmp_path / "hf" / "config.json") in report["files"]
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "meta"), "--to", "meta", "--shards", "2"]) == 0
    assert "wrote meta checkpoint" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "meta"), str(tmp_path / "m.gguf"), "--to", "gguf", "--dtype", "f16"]) == 0
    assert main(["convert", str(tmp_path / "meta"), str(tmp_path / "bf16"), "--to", "hf", "--dtype", "bf16"]) == 0
    expected = random_model("tiny", seed=7).state_dict()
    assert_same_state(load_transformer(tmp_path / "meta").state_dict(), expected)
    assert {p.dtype for p in load_transformer(tmp_path / "bf16").parameters()} == {torch.bfloat16}
    assert read_model_args(tmp_path / "m.gguf").vocab_size == PRESETS["tiny"].args.vocab_size


def test_convert_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope"), str(tmp_path / "out"), "--to", "hf"]) == 1
    assert main(["convert", "tiny", str(tmp_path / "m.gguf"), "--to", "gguf"]) == 1
    assert main(["convert", "tiny", str(tmp_path / "out"), "--to", "meta", "--dtype", "q8_0"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("llama2: error:") for line in lines)
    assert "--tokenizer" in lines[1] and "q8_0" in lines[2]
