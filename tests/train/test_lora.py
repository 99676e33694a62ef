"""LoRA on the tiny seeded model: only adapters train, merging equals base + adapter, the config is
checked, and adapters move both ways through PEFT's folder format with PEFT's logits (fp32)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llama2.errors import CheckpointError, ConfigError
from llama2.model.checkpoint import save_hf
from llama2.model.config import get_preset
from llama2.model.transformer import Transformer
from llama2.train.lora import (
    LoraConfig,
    LoraLinear,
    apply_lora,
    load_lora_state_dict,
    load_peft_adapter,
    lora_state_dict,
    merge_lora,
    save_peft_adapter,
    trainable_parameters,
)

ALL_LINEAR = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
HF_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny(seed: int = 0) -> Transformer:
    return Transformer.random(get_preset("tiny"), seed=seed)


def tokens(batch: int = 2, length: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 512, (batch, length), generator=torch.Generator().manual_seed(seed))


def randomize_adapters(model: nn.Module, seed: int = 2, std: float = 0.1) -> None:
    """Non-zero A and B (B starts at zero), so the adapters change the output."""
    generator = torch.Generator().manual_seed(seed)
    state = {name: torch.randn(t.shape, generator=generator) * std for name, t in lora_state_dict(model).items()}
    load_lora_state_dict(model, state)


def logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids)


# ---------------------------------------------------------------------------------------------- training


def test_only_adapter_weights_change_when_training():
    model = apply_lora(tiny(), LoraConfig(r=4, targets=ALL_LINEAR), generator=torch.Generator().manual_seed(0))
    adapters = set(lora_state_dict(model))
    assert set(trainable_parameters(model)) == adapters and len(adapters) == 2 * 7 * 2
    before = {name: t.detach().clone() for name, t in model.state_dict().items()}
    optimizer = torch.optim.AdamW(trainable_parameters(model).values(), lr=1e-2)
    ids = tokens(4, 32)
    for _ in range(3):
        loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == adapters  # every adapter moved; every base weight is bit-identical


def test_fresh_adapters_leave_the_output_unchanged():
    base, ids = tiny(), tokens()
    adapted = apply_lora(tiny(), LoraConfig(targets=ALL_LINEAR + ("output",)))
    assert torch.equal(logits(base, ids), logits(adapted, ids))  # B starts at zero


def test_generator_seeds_the_adapter_init():
    make = lambda: apply_lora(tiny(), LoraConfig(), generator=torch.Generator().manual_seed(7))  # noqa: E731
    first, second = lora_state_dict(make()), lora_state_dict(make())
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert first["layers.0.attention.wq.lora_A"].abs().sum() > 0


def test_bf16_base_keeps_fp32_adapters_that_get_gradients():
    model = apply_lora(tiny(), LoraConfig(targets=("wq", "w2")), base_dtype=torch.bfloat16)
    adapters = trainable_parameters(model)
    assert {p.dtype for p in adapters.values()} == {torch.float32}
    assert {p.dtype for n, p in model.named_parameters() if n not in adapters} == {torch.bfloat16}
    out = model(tokens())
    out.float().square().mean().backward()
    assert out.isfinite().all()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in adapters.values())


# ---------------------------------------------------------------------------------------------- merge, state


def test_merged_model_equals_base_plus_adapters():
    base_keys = set(tiny().state_dict())
    model = apply_lora(tiny(), LoraConfig(r=4, alpha=8, targets=ALL_LINEAR + ("output",)))
    randomize_adapters(model)
    ids = tokens()
    expected = logits(model, ids)
    assert (expected - logits(tiny(), ids)).abs().max() > 0.1  # the adapters matter
    merged = merge_lora(model)
    assert not any(isinstance(m, LoraLinear) for m in merged.modules())
    assert all(type(merged.get_submodule(f"layers.0.attention.{name}")) is nn.Linear for name in ("wq", "wk", "wv", "wo"))
    assert set(merged.state_dict()) == base_keys
    fresh = Transformer(get_preset("tiny"))
    fresh.load_state_dict(merged.state_dict())  # strict: a normal checkpoint
    torch.testing.assert_close(logits(fresh, ids), expected, atol=1e-5, rtol=0)


def test_lora_state_dict_round_trip_and_mismatch():
    config = LoraConfig(r=4, targets=("wq", "wv"))
    source = apply_lora(tiny(), config)
    randomize_adapters(source)
    target = apply_lora(tiny(), config)
    load_lora_state_dict(target, lora_state_dict(source))
    assert torch.equal(logits(source, tokens()), logits(target, tokens()))
    with pytest.raises(CheckpointError, match="missing 4 adapter tensor"):
        load_lora_state_dict(apply_lora(tiny(), LoraConfig(r=4, targets=("wq", "wv", "wo"))), lora_state_dict(source))
    with pytest.raises(CheckpointError, match="expected .*another rank"):
        load_lora_state_dict(apply_lora(tiny(), LoraConfig(r=8, targets=("wq", "wv"))), lora_state_dict(source))


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 0}, "r must be a positive integer, got 0"),
        ({"r": -2}, "r must be a positive integer, got -2"),
        ({"alpha": 0}, "alpha must be a positive number"),
        ({"dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
        ({"targets": ()}, "targets must name at least one module"),
    ],
)
def test_bad_config_is_one_config_error_line(kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        LoraConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_unknown_target_names_it_and_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        apply_lora(tiny(), LoraConfig(targets=("wq", "q_proj", "wx")))
    message = str(info.value)
    assert "unknown LoRA target(s) q_proj, wx" in message and "output, w1, w2, w3, wk, wo, wq, wv" in message
    assert "\n" not in message


def test_targets_from_a_string_and_recipe_mapping():
    assert LoraConfig(targets="wq, wk,wv").targets == ("wq", "wk", "wv")
    config = LoraConfig.from_mapping({"r": 16, "alpha": 32, "targets": ["wq", "wv"]})
    assert (config.r, config.scaling, config.targets) == (16, 2.0, ("wq", "wv"))
    with pytest.raises(ConfigError, match=r"^lora: unknown key 'alpah' \(did you mean 'alpha'\?\)$"):
        LoraConfig.from_mapping({"r": 4, "alpah": 16})
    with pytest.raises(ConfigError, match="lora must be a mapping"):
        LoraConfig.from_mapping(True)
    with pytest.raises(ConfigError, match="lora: invalid LoRA config: r must be"):
        LoraConfig.from_mapping({"r": "8"})


def test_apply_twice_is_refused():
    model = apply_lora(tiny(), LoraConfig())
    with pytest.raises(ConfigError, match="already has LoRA adapters"):
        apply_lora(model, LoraConfig())


# ---------------------------------------------------------------------------------------------- PEFT parity


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory) -> Path:
    """The seeded tiny model exported as a Hugging Face folder by our converter."""
    folder = tmp_path_factory.mktemp("lora") / "hf"
    save_hf(tiny(), get_preset("tiny"), folder)
    return folder


def load_hf(folder: Path):
    transformers = pytest.importorskip("transformers", reason="transformers is in the [test] extra")
    return transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True).eval()


def test_our_adapter_loads_in_peft_with_equal_logits(hf_base, tmp_path):
    peft = pytest.importorskip("peft", reason="peft is in the [test] extra")
    config = LoraConfig(r=4, alpha=8, targets=ALL_LINEAR + ("output",))
    ours = apply_lora(tiny(), config)
    randomize_adapters(ours)
    save_peft_adapter(ours, config, tmp_path / "adapter", base_model_name_or_path=str(hf_base))
    settings = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert sorted(settings["target_modules"]) == sorted(HF_LINEAR + ["lm_head"])
    reference = peft.PeftModel.from_pretrained(load_hf(hf_base), tmp_path / "adapter").eval()
    ids = tokens()
    expected = logits(reference, ids).logits
    with reference.disable_adapter():
        assert (expected - logits(reference, ids).logits).abs().max() > 0.1  # the adapter is in use
    torch.testing.assert_close(logits(ours, ids), expected, atol=1e-4, rtol=0)


def test_peft_adapter_loads_in_ours_with_equal_logits(hf_base, tmp_path):
    peft = pytest.importorskip("peft", reason="peft is in the [test] extra")
    peft_config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=HF_LINEAR + ["lm_head"], task_type="CAUSAL_LM")
    reference = peft.get_peft_model(load_hf(hf_base), peft_config).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero too; make the adapters matter
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    reference.save_pretrained(tmp_path / "peft")
    ours = tiny()
    config = load_peft_adapter(ours, tmp_path / "peft")
    assert (config.r, config.alpha, set(config.targets)) == (4, 8, set(ALL_LINEAR) | {"output"})
    ids = tokens()
    torch.testing.assert_close(logits(ours, ids), logits(reference, ids).logits, atol=1e-4, rtol=0)
    merged = merge_lora(ours)  # the path of `convert --merge-lora`
    torch.testing.assert_close(logits(merged, ids), logits(reference, ids).logits, atol=1e-4, rtol=0)


def test_peft_folder_problems_are_checkpoint_errors(tmp_path):
    config = LoraConfig(r=4, targets=("wq",))
    ours = apply_lora(tiny(), config)
    save_peft_adapter(ours, config, tmp_path / "adapter", base_model_name_or_path=None)
    with pytest.raises(ConfigError, match="does not match the model's adapters"):
        save_peft_adapter(ours, LoraConfig(r=8, targets=("wq",)), tmp_path / "other", base_model_name_or_path=None)

    dora = tmp_path / "dora"
    shutil.copytree(tmp_path / "adapter", dora)
    settings = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps(settings | {"use_dora": True}))
    with pytest.raises(CheckpointError, match="unsupported option.*use_dora=True"):
        load_peft_adapter(tiny(), dora)

    (tmp_path / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="adapter_model.safetensors.*missing"):
        load_peft_adapter(tiny(), tmp_path / "adapter")
    with pytest.raises(CheckpointError, match="adapter_config.json: missing"):
        load_peft_adapter(tiny(), tmp_path / "nowhere")


def test_adapter_for_another_shape_is_refused(tmp_path):
    config = LoraConfig(r=4, targets=("wq",))
    ours = apply_lora(tiny(), config)
    save_peft_adapter(ours, config, tmp_path / "adapter", base_model_name_or_path=None)
    other = Transformer.random(get_preset("tiny").replace(dim=128, n_heads=8, n_kv_heads=4))
    with pytest.raises(CheckpointError, match="lora_A has shape \\[4, 64\\], expected \\[4, 128\\]"):
        load_peft_adapter(other, tmp_path / "adapter")
    assert not any(isinstance(m, LoraLinear) for m in other.modules())  # refused before any change


def test_meta_device_build_then_load_as_the_training_loop_does():
    """The loop builds on `meta`, allocates with `to_empty`, then loads a full CPU state."""
    config = LoraConfig(r=4, targets=("wq", "w3"))
    cpu = apply_lora(tiny(), config, generator=torch.Generator().manual_seed(0))
    randomize_adapters(cpu)
    with torch.device("meta"):
        model = apply_lora(Transformer(get_preset("tiny")), config)
    model.to_empty(device="cpu")
    model.load_state_dict(cpu.state_dict())  # strict: same keys, base names unchanged
    assert set(trainable_parameters(model)) == set(lora_state_dict(cpu))
    assert torch.equal(logits(model, tokens()), logits(cpu, tokens()))
