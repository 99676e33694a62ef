"""oneDNN matmuls for fp32 training on the CPU (recipe key `cpu_kernels`).

The inference side (`model/cpu_kernels.py`) explains why: on some CPUs PyTorch's default fp32
matmul (MKL) runs far below what the cores can do — on the AMD EPYC of bench/README.md oneDNN's
product is 2-2.5x faster forward and 1.5-2x in the two backward products, at the same fp32
precision (results differ by summation order, ~1e-6). Training cannot pack weights that change
every step, so here each `nn.Linear` of the model computes its forward and both gradients with
oneDNN's linear over the dense weight (`OneDNNLinear`, the class swapped in place: parameters,
names, state dict and optimizer are untouched).

`auto` (the default) measures both at the run's batch shape on this machine and uses oneDNN only
where it is faster; `onednn` always; `torch` never. Only fp32 runs in one process on the CPU
without `compile` use it (autocast, FSDP and inductor bring their own matmul choices).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llama2.model.cpu_kernels import SPEEDUP_NEEDED, best_time, onednn_linear


class _OneDNNLinearFunction(torch.autograd.Function):
    """`x @ weight.T` and its gradients, all three products through oneDNN."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return onednn_linear(x, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = onednn_linear(grad, weight.t().contiguous())  # (..., out) @ W = (..., in)
        if ctx.needs_input_grad[1]:
            rows_grad, rows_x = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
            grad_w = onednn_linear(rows_grad.t().contiguous(), rows_x.t().contiguous())  # (out, N) @ (N, in)
        return grad_x, grad_w


class OneDNNLinear(nn.Linear):
    """`nn.Linear` (no bias) whose forward and backward run through oneDNN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _OneDNNLinearFunction.apply(x, self.weight)


def use_onednn(model: nn.Module) -> int:
    """Swap every bias-free `nn.Linear` of `model` to `OneDNNLinear` in place; how many."""
    swapped = 0
    for module in model.modules():
        if type(module) is nn.Linear and module.bias is None:
            module.__class__ = OneDNNLinear
            swapped += 1
    return swapped


def faster_with_onednn(model: nn.Module, rows: int) -> bool:
    """Whether oneDNN beats `F.linear` by the margin `auto` asks for, at `rows` tokens a step."""
    return onednn_training_speedup(model, rows) >= SPEEDUP_NEEDED


@torch.no_grad()
def onednn_training_speedup(model: nn.Module, rows: int, *, repeats: int = 3) -> float:
    """How much faster oneDNN computes the forward product of the model's widest linear for `rows`
    tokens than `F.linear`, on random weights of its shape (the model may still be on `meta`)."""
    shapes = [(m.out_features, m.in_features) for m in model.modules() if isinstance(m, nn.Linear)]
    if not shapes:
        return 0.0
    out_features, in_features = max(shapes, key=lambda shape: shape[0] * shape[1])
    x, weight = torch.randn(rows, in_features), torch.randn(out_features, in_features)
    return best_time(lambda: F.linear(x, weight), repeats) / best_time(lambda: onednn_linear(x, weight), repeats)
