"""Faster CPU products for inference (`Llama.from_pretrained(..., cpu_kernels=...)`).

PyTorch's default CPU matmul goes through MKL, whose matrix-vector and small-batch products — every
decode step — read the weights well below the memory bandwidth on some CPUs: about 15 GB/s against
42 GB/s for a plain sum on the AMD EPYC (Zen 4) of bench/README.md, where oneDNN's product over a
weight reordered once into its blocked layout runs 1.7x faster at one row and 2-3x at 8 or more,
and our own float32 product (`native.py`, compiled on first use) faster again at 1 to 32 rows.
On other CPUs MKL wins at one row (Sapphire Rapids in f32). So `auto` times the candidates on the
model's own weights, on this machine, and takes the fastest where it beats MKL; `native` and
`onednn` choose one outright; `torch` never swaps.

Swapping replaces every `nn.Linear` of the model by a `PackedLinear` (oneDNN) or a `NativeLinear`
that holds only its own layout of the weight (no extra memory); its state dict gives the dense
weight back, so a swapped model still saves and exports. The native choice also gives each
attention layer the native decoding attention (`Attention.decode_attention`) and swaps the norms
for `NativeRMSNorm`s (same weights). The products that read the same input are fused first (wq,
wk, wv into `wqkv`; w1, w3 into `w13`): one call over stacked weights instead of three or two saves
a call's fixed cost and streams a longer weight, which decoding (a few hundred small products per
token) feels. It is for inference: a swapped weight takes no gradient. Results
differ from the unswapped model's only by summation order (about 1e-6 relative in f32).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from llama2.errors import ConfigError
from llama2.model import native
from llama2.model.native import NativeLinear, NativeRMSNorm
from llama2.model.transformer import Attention, FeedForward, RMSNorm

CpuKernels = Literal["auto", "onednn", "torch"]  # training's `cpu_kernels` choice (train/cpu_matmul.py)
InferenceKernels = Literal["auto", "native", "onednn", "torch"]  # loading's: native adds our own product
CPU_KERNELS = get_args(InferenceKernels)
PACK_BATCH_HINT = 64  # oneDNN picks its blocked layout for this many rows; the fastest at 1-256 rows in our sweep
CALIBRATION_BYTES = 256e6  # time over at least this much weight (when the model has it), so it comes from memory
SPEEDUP_NEEDED = 1.05  # `auto` swaps only for a kernel at least this much faster than MKL


class PackedLinear(nn.Module):
    """`nn.Linear` (no bias) over a oneDNN-packed weight; see the module docstring."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_BATCH_HINT)
        self._register_state_dict_hook(_dense_weight_into_state)

    @property
    def weight(self) -> torch.Tensor:
        """The dense `(out, in)` weight, unpacked on each access (for saving, not for the hot path)."""
        return self.packed.to_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return onednn_linear(x, self.packed)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed=oneDNN"


def onednn_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`x @ weight.T` by oneDNN, over a packed or a dense `(out, in)` weight."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")


def _dense_weight_into_state(module: PackedLinear, state: dict, prefix: str, _metadata) -> None:
    state[prefix + "weight"] = module.weight


FUSED = {Attention: ("wqkv", ("wq", "wk", "wv")), FeedForward: ("w13", ("w1", "w3"))}


def fuse_projections(model: nn.Module, kernel: Callable[[torch.Tensor], nn.Module] = PackedLinear) -> None:
    """Replace the linears that read the same input (`FUSED`) by one `kernel` product over their
    stacked weights; the state dict still names each one's weight (`_split_into_state`)."""
    for module in model.modules():
        if type(module) not in FUSED:
            continue
        fused_name, names = FUSED[type(module)]
        parts = [getattr(module, name) for name in names]
        if not all(type(part) is nn.Linear for part in parts):  # an adapter or another kernel owns it
            continue
        stacked = torch.cat([part.weight.detach() for part in parts])
        for name in names:
            delattr(module, name)
        setattr(module, fused_name, kernel(stacked))
        sizes = [part.out_features for part in parts]
        module._register_state_dict_hook(partial(_split_into_state, fused_name, names, sizes))


def _split_into_state(fused_name: str, names: tuple[str, ...], sizes: list[int], module: nn.Module, state: dict,
                      prefix: str, _metadata) -> None:
    stacked = state.pop(prefix + fused_name + ".weight")
    for name, part in zip(names, stacked.split(sizes)):
        state[prefix + name + ".weight"] = part


def onednn_available(model: nn.Module) -> bool:
    """Whether this torch build can pack the model's weights: CPU, f32 or bf16, oneDNN present."""
    weight = next((m.weight for m in model.modules() if isinstance(m, nn.Linear)), None)
    return (weight is not None and weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.bfloat16)
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def native_available(model: nn.Module) -> bool:
    """Whether our own product can serve the model: CPU, float32, the library built here."""
    weight = next((m.weight for m in model.modules() if isinstance(m, nn.Linear)), None)
    return (weight is not None and weight.device.type == "cpu" and weight.dtype == torch.float32
            and native.library() is not None)


KERNELS: dict[str, Callable[[torch.Tensor], nn.Module]] = {"native": NativeLinear, "onednn": PackedLinear}


def pack_linears(model: nn.Module, mode: InferenceKernels = "auto") -> bool:
    """Swap the model's linears for `NativeLinear`s or `PackedLinear`s as `mode` says (`CPU_KERNELS`),
    and for native its norms and decoding attention too; True if swapped."""
    if mode not in CPU_KERNELS:
        raise ConfigError(f"unknown cpu_kernels {mode!r}; choose one of {', '.join(CPU_KERNELS)}")
    if mode == "native" and not native_available(model):
        reason = native.unavailable_reason() or "it needs a CPU model in float32"
        raise ConfigError(f"cpu_kernels native is unavailable: {reason}; use cpu_kernels auto or onednn")
    if mode == "onednn" and not onednn_available(model):
        raise ConfigError("cpu_kernels onednn needs a CPU model in float32 or bfloat16 and a torch build with "
                          "oneDNN; use cpu_kernels auto or torch")
    kernel = fastest_kernel(model) if mode == "auto" else mode
    if kernel == "torch":
        return False
    if any(type(m) is nn.Linear and m.bias is not None for m in model.modules()):
        raise ConfigError(f"cpu_kernels {kernel} swaps the bias-free linears of a Llama model only; use cpu_kernels torch")
    make = KERNELS[kernel]
    fuse_projections(model, make)
    if kernel == "native":
        for module in list(model.modules()):
            if isinstance(module, Attention):
                module.decode_attention = native.decode_attention
            for name, child in list(module.named_children()):
                if type(child) is RMSNorm:
                    setattr(module, name, NativeRMSNorm.replacing(child))
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, make(child.weight))
    # The rest (embeddings, norms) may still be views of a memory-mapped checkpoint, which would keep
    # the whole mapping, dense weights included, resident: copy them out so it is let go.
    for param in model.parameters():
        param.data = param.data.clone()
    return True


def fastest_kernel(model: nn.Module) -> str:
    """`auto`'s choice: the kernel whose one-row products (decoding) run fastest on the model's own
    weights here, if it beats `F.linear` by `SPEEDUP_NEEDED`; else "torch"."""
    candidates = [name for name, usable in (("native", native_available), ("onednn", onednn_available)) if usable(model)]
    if not candidates:
        return "torch"
    speedups = kernel_speedups(model, candidates)
    best = max(speedups, key=speedups.get)
    return best if speedups[best] >= SPEEDUP_NEEDED else "torch"


@torch.inference_mode()
def kernel_speedups(model: nn.Module, kernels: list[str], *, repeats: int = 3) -> dict[str, float]:
    """How much faster one-row products run through each of `kernels` than through `F.linear`, timed
    on the model's own weights in the order a decoding step reads them (every matrix of successive
    layers: a call's fixed cost counts as it does in decoding), at least `CALIBRATION_BYTES` of them
    where the model has that many, so they stream from memory as in decoding."""
    weights, total = [], 0.0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            weights.append(module.weight.detach())
            total += module.weight.numel() * module.weight.element_size()
            if total >= CALIBRATION_BYTES:
                break
    if not weights:
        return dict.fromkeys(kernels, 0.0)
    rows = {width: torch.randn(1, width, dtype=weights[0].dtype) for width in {w.shape[1] for w in weights}}
    inputs = [rows[w.shape[1]] for w in weights]
    dense = best_time(lambda: [F.linear(x, w) for x, w in zip(inputs, weights)], repeats)
    speedups = {}
    for name in kernels:
        swapped = [KERNELS[name](w) for w in weights]
        speedups[name] = dense / best_time(lambda: [linear(x) for x, linear in zip(inputs, swapped)], repeats)
        swapped = []  # let this kernel's copies go before the next kernel's are made
    return speedups


def best_time(run: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` timed calls of `run`, after one untimed."""
    run()  # warm-up: first-call set-up, not weight traffic
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best
