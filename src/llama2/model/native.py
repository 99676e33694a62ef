"""Our own float32 kernels for CPU inference (`cpu_kernels="native"`), built on first use.

Decoding multiplies 1 to 8 rows by each weight: a read of the weights with little arithmetic, where
oneDNN's products pay a fixed ~11 µs per call and reach 30-40 GB/s at 8 rows on the AMD EPYC of
bench/README.md. `native_kernels.c` holds the weight in column blocks (32 outputs x K, the 32 side by
side for each k) so that every row of x is a broadcast times two contiguous vectors: 1.1-1.7x
oneDNN's speed at 1 and 8 rows there, and level with it at 256 (prefill). Its second kernel is
decoding's attention — one query per row and head over the KV cache — which PyTorch's fused kernel
sets up problem by problem (96 per layer at batch 8): 2x faster there, +13% tokens/s at batch 8.
The third is RMSNorm in one call (+2% at batch 1).

The C file is compiled once per source, compiler and CPU with `-O3 -march=native -fopenmp` into
`$LLAMA2_KERNEL_CACHE` (default `~/.cache/llama2/kernels`), atomically, and loaded with ctypes; it
shares PyTorch's OpenMP runtime (libgomp) and thread count. Without a C compiler (or `CC`) the
library is simply unavailable — `library()` is None, `unavailable_reason()` says why — and
`cpu_kernels="auto"` uses oneDNN instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from llama2.model.transformer import RMSNorm

SOURCE = Path(__file__).with_name("native_kernels.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
LIBS = ("-lm",)
_reason: list[str] = []  # why the library is unavailable, once `library()` has failed


def cache_dir() -> Path:
    """Where built libraries are kept: `$LLAMA2_KERNEL_CACHE`, else the user's cache directory."""
    if os.environ.get("LLAMA2_KERNEL_CACHE"):
        return Path(os.environ["LLAMA2_KERNEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llama2" / "kernels"


def _cpu_identity() -> str:
    """What `-march=native` compiles for: a library built on one CPU may not run on another (a home
    directory shared between machines)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags", "Features"))}))
    except OSError:
        return platform.processor() or platform.machine()


def _compiler() -> tuple[str | None, str]:
    """The C compiler to build with (`CC`, else cc, gcc or clang on the PATH), or None and why not."""
    if os.environ.get("CC"):
        named = os.environ["CC"]
        return (named, "") if shutil.which(named.split()[0]) else (None, f"CC={named} is not a command on the PATH")
    found = next((name for name in ("cc", "gcc", "clang") if shutil.which(name)), None)
    return found, "" if found else "no C compiler on the PATH (install gcc, or set CC)"


@lru_cache(maxsize=None)
def library() -> ctypes.CDLL | None:
    """The compiled product, building it on first use; None when it cannot be built here."""
    compiler, why_not = _compiler()
    if compiler is None:
        _reason.append(why_not)
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(FLAGS + LIBS).encode(), compiler.encode(),
                                     _cpu_identity().encode(), torch.__version__.encode()])).hexdigest()[:16]
    target = cache_dir() / f"native_kernels-{key}.so"
    try:
        if not target.exists():
            _build(compiler, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as exc:
        detail = str(exc).strip().splitlines()
        _reason.append(f"building {SOURCE.name} with {compiler} failed: {detail[-1] if detail else type(exc).__name__}")
        return None
    lib.native_linear_f32.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    lib.native_linear_f32.restype = None
    lib.native_block_size.restype = ctypes.c_int
    lib.native_decode_attention_f32.argtypes = ([ctypes.c_void_p] * 5 + [ctypes.c_int64] * 7
                                                + [ctypes.c_float, ctypes.c_int])
    lib.native_decode_attention_f32.restype = ctypes.c_int
    lib.native_rms_norm_f32.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2 + [ctypes.c_float]
    lib.native_rms_norm_f32.restype = None
    return lib


def _build(compiler: str, target: Path) -> None:
    """Compile into a temporary file beside `target`, then rename: a concurrent build or a crash never
    leaves a half-written library where the next process would load it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        result = subprocess.run([*compiler.split(), *FLAGS, str(SOURCE), "-o", str(built), *LIBS],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise subprocess.SubprocessError(result.stderr or f"{compiler} exited with {result.returncode}")
        os.replace(built, target)


def unavailable_reason() -> str | None:
    """Why `library()` is None, or None when it loads."""
    return None if library() is not None else (_reason[-1] if _reason else "unavailable")


def _loaded() -> ctypes.CDLL:
    """The library, for callers that cannot do without it."""
    lib = library()
    if lib is None:
        raise RuntimeError(f"the native kernels are unavailable: {unavailable_reason()}")
    return lib


class NativeLinear(nn.Module):
    """`nn.Linear` (float32, no bias) over a column-blocked weight, for inference (no gradient).
    Its state dict gives the dense `(out, in)` weight back, so a model using it saves and exports."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        block = _loaded().native_block_size()
        padded = torch.cat([weight.detach(), weight.new_zeros(-self.out_features % block, self.in_features)])
        self.blocked = padded.float().view(-1, block, self.in_features).transpose(1, 2).contiguous()
        self._register_state_dict_hook(_dense_weight_into_state)

    @property
    def weight(self) -> torch.Tensor:
        """The dense `(out, in)` weight, rebuilt on each access (for saving, not for the hot path)."""
        return self.blocked.transpose(1, 2).reshape(-1, self.in_features)[: self.out_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.device.type != "cpu":
            raise TypeError(f"NativeLinear multiplies float32 CPU tensors; got {x.dtype} on {x.device}")
        if x.requires_grad and torch.is_grad_enabled():
            return _NoBackward.apply(x, self)
        return self.product(x)

    def product(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.detach().reshape(-1, self.in_features).contiguous()
        out = torch.empty(rows.shape[0], self.out_features, dtype=torch.float32)
        library().native_linear_f32(rows.data_ptr(), self.blocked.data_ptr(), out.data_ptr(), rows.shape[0],
                                    self.out_features, self.in_features, torch.get_num_threads())
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, native=float32"


class _NoBackward(torch.autograd.Function):
    """A native product inside an autograd graph: the forward runs, and a backward through it fails
    with a message — the product has no gradient, and dropping it silently would train nothing."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, linear: NativeLinear) -> torch.Tensor:
        return linear.product(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> None:
        raise RuntimeError("NativeLinear is for inference and takes no gradient; load the model with "
                           "cpu_kernels='torch' to train it or to differentiate through it")


def _dense_weight_into_state(module: NativeLinear, state: dict, prefix: str, _metadata) -> None:
    state[prefix + "weight"] = module.weight


def decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention of one query per row and head, `q (B, H, 1, hd)`, over `keys`/`values (B, n_kv, S, hd)`
    read in place from a KV cache (float32, each slot's `hd` values contiguous, the same strides for
    both), under `mask (B, 1, 1, S)` (True = attend) or none; `(B, H, 1, hd)` like
    `F.scaled_dot_product_attention`. Decoding's attention: PyTorch's fused kernel sets up each of
    the B * H one-query problems separately, which at batch 8 costs more than reading the cache."""
    lib = _loaded()
    batch, heads, _, head_dim = q.shape
    kv_heads, slots = keys.shape[1], keys.shape[2]
    if (keys.stride() != values.stride() or keys.stride(3) != 1 or keys.stride(2) != head_dim
            or q.dtype != torch.float32 or keys.dtype != torch.float32 or values.dtype != torch.float32):
        raise ValueError("decode_attention reads float32 cache views whose slots are contiguous; got "
                         f"{q.dtype}/{keys.dtype} with key strides {keys.stride()}")
    queries = q.contiguous()
    allowed = None if mask is None else mask.reshape(batch, slots).to(torch.uint8).contiguous()
    out = torch.empty(batch, heads, 1, head_dim, dtype=torch.float32)
    failed = lib.native_decode_attention_f32(
        queries.data_ptr(), keys.data_ptr(), values.data_ptr(), None if allowed is None else allowed.data_ptr(),
        out.data_ptr(), batch, heads, kv_heads, slots, head_dim, keys.stride(0), keys.stride(1),
        head_dim ** -0.5, torch.get_num_threads())
    if failed:
        raise MemoryError(f"decode_attention could not allocate {slots} scores per thread")
    return out


class NativeRMSNorm(RMSNorm):
    """`RMSNorm` by the native kernel for float32 inference on the CPU (one call instead of the six
    small ops PyTorch's CPU norm runs, 25 times per decoding step of the 110m model); the same weight
    and state dict, and PyTorch's norm for anything else (other dtypes, inputs that need a gradient)."""

    @classmethod
    def replacing(cls, norm: RMSNorm) -> "NativeRMSNorm":
        native_norm = cls(norm.weight.shape[0], norm.eps)
        native_norm.weight = norm.weight
        return native_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lib = library()
        if (lib is None or x.dtype != torch.float32 or self.weight.dtype != torch.float32 or x.device.type != "cpu"
                or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))):
            return super().forward(x)
        rows = x.contiguous()
        out = torch.empty(x.shape, dtype=torch.float32)
        lib.native_rms_norm_f32(rows.data_ptr(), self.weight.data_ptr(), out.data_ptr(), rows.numel() // x.shape[-1],
                                x.shape[-1], self.eps)
        return out
