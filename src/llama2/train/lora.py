"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): fine-tune a frozen
`Transformer` through low-rank updates of chosen projections, `W' = W + (alpha / r) * B @ A`.

`apply_lora` swaps each target `nn.Linear` (by leaf name: `wq`, `wk`, `wv`, `wo`, `w1`, `w2`, `w3`,
`output`) for a `LoraLinear` and freezes everything else; the base weight keeps its Meta name
(`layers.N.attention.wq.weight`) and the adapter adds `...wq.lora_A` `(r, in)` and `...wq.lora_B`
`(out, r)`. `merge_lora` folds the update back in and returns plain `nn.Linear`s, so the result saves
as an ordinary checkpoint. `save_peft_adapter` / `load_peft_adapter` speak PEFT's adapter folder for
a Hugging Face `LlamaForCausalLM`, including HF's rotary row order of q_proj/k_proj.

Our own module rather than PEFT itself: PEFT wraps Hugging Face models and renames parameters
(`base_layer`, per-adapter `ModuleDict`s), which would break Meta names, the meta-device build of
the training loop and FSDP wrapping by block. tests/train/test_lora.py checks that both give the
same logits on the same weights.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from llama2.atomic import atomic_folder
from llama2.errors import CheckpointError, ConfigError
from llama2.model.checkpoint.common import natural_key, read_failure, read_json_object
from llama2.model.checkpoint.hf import hf_name, meta_name, permute_from_hf, permute_to_hf
from llama2.model.config import ModelArgs
from llama2.model.transformer import Transformer
from llama2.train.config import did_you_mean

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."  # PeftModelForCausalLM -> LlamaForCausalLM
_PEFT_KEY = re.compile(r"(.+)\.(lora_A|lora_B|base_layer)\.weight")
# Options of PEFT's LoraConfig that change the computation; we support only their defaults.
_PEFT_DEFAULTS: dict[str, Any] = {
    "bias": "none", "use_dora": False, "use_rslora": False, "fan_in_fan_out": False, "lora_bias": False,
    "modules_to_save": None, "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {},
    "layer_replication": None, "target_parameters": None, "trainable_token_indices": None,
}


@dataclass(frozen=True)
class LoraConfig:
    """Rank `r`, scale `alpha` (the update is multiplied by alpha / r), dropout on the adapter's
    input, and the leaf names of the `nn.Linear`s to adapt. `targets` may be given as a list or a
    comma-separated string (`wq,wv`, as a `lora.targets=` override reads)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("wq", "wv")

    def __post_init__(self) -> None:
        targets = self.targets.split(",") if isinstance(self.targets, str) else list(self.targets)
        object.__setattr__(self, "targets", tuple(str(t).strip() for t in targets))
        problems = []
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            problems.append(f"r must be a positive integer, got {self.r!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            problems.append(f"alpha must be a positive number, got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            problems.append(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if not self.targets or not all(self.targets):
            problems.append(f"targets must name at least one module, e.g. [wq, wv], got {list(self.targets)}")
        if problems:
            raise ConfigError("invalid LoRA config: " + "; ".join(problems))

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, source: str = "lora") -> "LoraConfig":
        """From a recipe's `lora:` mapping; unknown keys are an error with the closest valid name."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source} must be a mapping like {{r: 8, alpha: 16, targets: [wq, wv]}}, got {raw!r}")
        known = ("r", "alpha", "dropout", "targets")
        unknown = [f"unknown key {key!r}{did_you_mean(str(key), known)}" for key in raw if key not in known]
        if unknown:
            raise ConfigError(f"{source}: " + "; ".join(unknown))
        try:
            return cls(**raw)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None


class LoraLinear(nn.Module):
    """`y = x W^T + b + (alpha / r) * dropout(x) A^T B^T` with `W`, `b` frozen (LoRA, eq. 3).

    `A (r, in)` starts kaiming-uniform and `B (out, r)` at zero, as in PEFT, so training starts
    from the base model exactly. The adapter is kept in at least fp32 even when the base is bf16:
    its gradients and optimizer state stay precise, and its output is cast to the base's dtype.
    """

    def __init__(
        self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, *, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.scaling = r, alpha / r
        self.weight = base.weight.requires_grad_(False)
        self.bias = base.bias.requires_grad_(False) if base.bias is not None else None
        factory = {"device": base.weight.device, "dtype": torch.promote_types(base.weight.dtype, torch.float32)}
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, r, **factory))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=generator)
        nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        low_rank = F.linear(F.linear(self.dropout(x).to(self.lora_A.dtype), self.lora_A), self.lora_B)  # (..., out)
        return out + (low_rank * self.scaling).to(out.dtype)

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """`W + (alpha / r) B @ A`, computed in fp32 (at least) and returned in `W`'s dtype."""
        delta = (self.lora_B @ self.lora_A) * self.scaling
        return (self.weight.to(delta.dtype) + delta).to(self.weight.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, scaling={self.scaling:g}"


# ---------------------------------------------------------------------------------------------- apply


def apply_lora(
    model: nn.Module,
    config: LoraConfig,
    *,
    base_dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Wrap every `nn.Linear` whose leaf name is in `config.targets` in a `LoraLinear` and freeze
    every other parameter; in place, and the same model is returned.

    `base_dtype` (e.g. bf16) casts the frozen model first, halving its memory; adapters stay fp32.
    `generator` seeds the `A` init (module order). Works on a `meta`-device model, whose adapters
    get their values later from a state dict.
    """
    if lora_modules(model):
        raise ConfigError("the model already has LoRA adapters; apply_lora once (or merge_lora first)")
    targets = _target_linears(model, config.targets)
    if base_dtype is not None:
        model.to(base_dtype)
    model.requires_grad_(False)
    for path, linear in targets.items():
        _set_submodule(model, path, LoraLinear(linear, config.r, config.alpha, config.dropout, generator=generator))
    return model


def _target_linears(model: nn.Module, targets: tuple[str, ...]) -> dict[str, nn.Linear]:
    """Module path -> `nn.Linear` for the targets, refusing names the model has no `nn.Linear` for."""
    linears = {path: m for path, m in model.named_modules() if isinstance(m, nn.Linear)}
    valid = sorted({path.rsplit(".", 1)[-1] for path in linears})
    unknown = [name for name in targets if name not in valid]
    if unknown:
        raise ConfigError(f"unknown LoRA target(s) {', '.join(unknown)}; this model's linear layers are {', '.join(valid)}")
    return {path: m for path, m in linears.items() if path.rsplit(".", 1)[-1] in targets}


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent), leaf, module)


def lora_modules(model: nn.Module) -> dict[str, LoraLinear]:
    """Module path (`layers.0.attention.wq`) -> its `LoraLinear`, in model order."""
    return {path: m for path, m in model.named_modules() if isinstance(m, LoraLinear)}


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Name -> parameter for those that require grad: after `apply_lora`, exactly the adapters."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold each adapter into its base weight and put a plain `nn.Linear` back in its place, so the
    model is an ordinary `Transformer` again (same state-dict keys as before `apply_lora`, every
    parameter trainable). In place; the same model is returned."""
    for path, adapted in lora_modules(model).items():
        with torch.device("meta"):
            linear = nn.Linear(adapted.in_features, adapted.out_features, bias=adapted.bias is not None)
        linear.weight = nn.Parameter(adapted.merged_weight())
        if adapted.bias is not None:
            linear.bias = nn.Parameter(adapted.bias.detach())
        _set_submodule(model, path, linear)
    return model.requires_grad_(True)


# ---------------------------------------------------------------------------------------------- state


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters alone, `{path}.lora_A (r, in)` and `{path}.lora_B (out, r)`, detached."""
    state = {}
    for path, m in lora_modules(model).items():
        state[f"{path}.lora_A"] = m.lora_A.detach()
        state[f"{path}.lora_B"] = m.lora_B.detach()
    return state


def load_lora_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "adapter state") -> None:
    """Copy `state` (as from `lora_state_dict`) into the model's adapters; every adapter must be
    there with its shape, and nothing else. Tensors are cast to the adapters' dtype."""
    expected = {name: tuple(t.shape) for name, t in lora_state_dict(model).items()}
    _check_adapter_state(state, expected, source)
    with torch.no_grad():
        for name, tensor in lora_state_dict(model).items():
            tensor.copy_(state[name])


def _check_adapter_state(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], source: str) -> None:
    if not expected:
        raise ConfigError("the model has no LoRA adapters to load into; call apply_lora first")
    missing = sorted(set(expected) - set(state), key=natural_key)
    unknown = sorted(set(state) - set(expected), key=natural_key)
    if missing or unknown:
        parts = [f"{label} {len(names)} adapter tensor(s): {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
                 for label, names in (("missing", missing), ("unknown", unknown)) if names]
        raise CheckpointError(f"{source}: {'; '.join(parts)} (were the adapters made with other targets?)")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise CheckpointError(f"{source}: {name} has shape {list(state[name].shape)}, expected {list(shape)} "
                                  "(another rank r, or another model size?)")


# ---------------------------------------------------------------------------------------------- PEFT


def _hf_module(path: str) -> str:
    """Meta module path -> HF module path (`layers.0.attention.wq` -> `model.layers.0.self_attn.q_proj`)."""
    return hf_name(f"{path}.weight").removesuffix(".weight")


def _rotary_heads(path: str, args: ModelArgs) -> int | None:
    """Heads whose rows HF permutes for its rotary layout: the output side (B) of wq and wk."""
    return {"wq": args.n_heads, "wk": args.kv_heads}.get(path.rsplit(".", 1)[-1])


def save_peft_adapter(
    model: Transformer,
    config: LoraConfig,
    out_dir: str | Path,
    *,
    base_model_name_or_path: str | None,
    overwrite: bool = False,
) -> Path:
    """Write the adapters as PEFT does for a `LlamaForCausalLM` (adapter_config.json and
    adapter_model.safetensors), atomically, so `PeftModel.from_pretrained(hf_model, out_dir)` on
    the HF export of the same base gives our logits. B of wq/wk is permuted like HF's q/k rows."""
    modules = lora_modules(model)
    adapted = {path.rsplit(".", 1)[-1] for path in modules}
    if not modules:
        raise ConfigError("the model has no LoRA adapters to save; call apply_lora first")
    if adapted != set(config.targets) or any(m.r != config.r or m.scaling != config.scaling for m in modules.values()):
        raise ConfigError(f"LoRA config (r={config.r}, alpha={config.alpha}, targets {','.join(config.targets)}) "
                          "does not match the model's adapters; pass the config they were made with")
    tensors = {}
    for path, m in modules.items():
        key = f"{_PEFT_PREFIX}{_hf_module(path)}"
        heads = _rotary_heads(path, model.args)
        lora_b = permute_to_hf(m.lora_B.detach(), heads) if heads else m.lora_B.detach()
        tensors[f"{key}.lora_A.weight"] = m.lora_A.detach().cpu().contiguous()
        tensors[f"{key}.lora_B.weight"] = lora_b.cpu().contiguous()
    peft_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": sorted({_hf_module(path).rsplit(".", 1)[-1] for path in modules}),
        "init_lora_weights": True,
        "inference_mode": True,
        **_PEFT_DEFAULTS,
    }
    out_dir = Path(out_dir)
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:
        save_file(tensors, tmp / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(peft_config, indent=2) + "\n")
    return out_dir


def load_peft_adapter(model: Transformer, adapter_dir: str | Path, *, base_dtype: torch.dtype | None = None) -> LoraConfig:
    """Read a PEFT LoRA adapter folder for a `LlamaForCausalLM` into `model` (a plain Transformer
    of the same shape): `apply_lora` with the folder's settings, then its weights, HF's q/k row
    order undone. Returns the config. Adapters saved with the base's output head
    (`lm_head.base_layer.weight`, PEFT's `save_embedding_layers`) also replace that weight."""
    adapter_dir = Path(adapter_dir)
    settings = read_json_object(adapter_dir / ADAPTER_CONFIG, missing="a PEFT adapter folder needs adapter_config.json")
    _check_peft_settings(settings, adapter_dir / ADAPTER_CONFIG)
    adapters, base_weights = _read_peft_weights(adapter_dir / ADAPTER_WEIGHTS, model.args)
    source = adapter_dir / ADAPTER_CONFIG
    try:
        config = LoraConfig(
            r=settings.get("r"), alpha=settings.get("lora_alpha"), dropout=settings.get("lora_dropout", 0.0),
            targets=sorted({name.rsplit(".", 2)[-2] for name in adapters}),
        )
    except ConfigError as error:
        raise CheckpointError(f"{source}: {error}") from None
    expected = {}
    for path, linear in _target_linears(model, config.targets).items():
        expected[f"{path}.lora_A"] = (config.r, linear.in_features)
        expected[f"{path}.lora_B"] = (linear.out_features, config.r)
    _check_adapter_state(adapters, expected, str(adapter_dir / ADAPTER_WEIGHTS))
    for name, tensor in base_weights.items():
        if tensor.shape != model.get_parameter(name).shape:
            raise CheckpointError(f"{adapter_dir / ADAPTER_WEIGHTS}: base weight for {name} has shape {list(tensor.shape)}, "
                                  f"expected {list(model.get_parameter(name).shape)}")
    apply_lora(model, config, base_dtype=base_dtype)
    load_lora_state_dict(model, adapters, source=str(adapter_dir / ADAPTER_WEIGHTS))
    with torch.no_grad():
        for name, tensor in base_weights.items():
            model.get_parameter(name).copy_(tensor)
    return config


def _check_peft_settings(settings: Mapping[str, Any], source: Path) -> None:
    """Refuse adapter kinds and options whose computation differs from plain LoRA."""
    if settings.get("peft_type") != "LORA":
        raise CheckpointError(f"{source}: peft_type is {settings.get('peft_type')!r}; only LORA adapters are supported")
    changed = [f"{key}={settings[key]!r}" for key, default in _PEFT_DEFAULTS.items()
               if settings.get(key) not in (default, None, {}, [])]
    if changed:
        raise CheckpointError(f"{source}: unsupported option(s) {', '.join(changed)}; only plain LoRA on every layer loads")


def _read_peft_weights(path: Path, args: ModelArgs) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """`(adapters, base weights)` in Meta names: `{path}.lora_A/B` with B of wq/wk back in Meta's
    rotary row order, and `{path}.weight` for base layers the adapter carries."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a PEFT adapter folder needs adapter_model.safetensors "
                              "(adapter_model.bin is not supported: re-save it with safe_serialization=True)")
    adapters, base_weights = {}, {}
    try:
        with safe_open(path, framework="pt", device="cpu") as handle:
            for key in handle.keys():
                match = _PEFT_KEY.fullmatch(key.removeprefix(_PEFT_PREFIX))
                meta = meta_name(f"{match.group(1)}.weight") if match and key.startswith(_PEFT_PREFIX) else None
                if meta is None:
                    raise CheckpointError(f"{path}: tensor {key} is not a LoRA weight of a Llama 2 module")
                module, kind = meta.removesuffix(".weight"), match.group(2)
                tensor = handle.get_tensor(key)
                heads = _rotary_heads(module, args)
                if kind == "base_layer":
                    base_weights[meta] = permute_from_hf(tensor, heads) if heads else tensor
                else:
                    adapters[f"{module}.{kind}"] = permute_from_hf(tensor, heads) if heads and kind == "lora_B" else tensor
    except CheckpointError:
        raise
    except Exception as error:  # safetensors raises SafetensorError, OSError, ... on bad files
        raise read_failure(path, error) from None
    return adapters, base_weights
