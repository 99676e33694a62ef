"""Swapped CPU products (`model/cpu_kernels.py`): oneDNN's packed weights and our native float32
product give the same logits and greedy tokens as the plain model, put the dense weights back in
the state dict (so a swapped model saves), and the modes are checked. The native library itself
(`model/native.py`): against `F.linear` at awkward shapes, built once into its cache, and
refused with its reason where it cannot be built."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llama2.api import Llama
from llama2.errors import ConfigError
from llama2.model import native
from llama2.model.config import get_preset
from llama2.model.cpu_kernels import (PackedLinear, kernel_speedups, native_available, onednn_available,
                                      pack_linears)
from llama2.model.native import NativeLinear, NativeRMSNorm
from llama2.model.transformer import RMSNorm, Transformer
from llama2.types import SamplingParams

TINY = Transformer.random(get_preset("tiny"))
AVAILABLE = {"onednn": onednn_available(TINY), "native": native_available(TINY)}
CLASSES = {"onednn": PackedLinear, "native": NativeLinear}
# Skipped where this machine cannot build them (no C compiler), except under CI, which has one (it
# builds llama.cpp): there a missing library fails the tests.
needs_native = pytest.mark.skipif(not AVAILABLE["native"] and not os.environ.get("CI"),
                                  reason=f"native kernels unavailable: {native.unavailable_reason()}")


def kernel_params(*dtypes):
    """(kernel, dtype) pairs, each skipped where that kernel cannot run (native is float32 only)."""
    skips = {"onednn": pytest.mark.skipif(not AVAILABLE["onednn"], reason="this torch build has no oneDNN"),
             "native": needs_native}
    return [pytest.param(kernel, dtype, marks=skips[kernel], id=f"{kernel}-{str(dtype).removeprefix('torch.')}")
            for kernel in CLASSES for dtype in dtypes if kernel == "onednn" or dtype == torch.float32]


@pytest.fixture(scope="module")
def model():
    return Transformer.random(get_preset("tiny"), seed=5).eval()


@pytest.mark.parametrize("kernel, dtype", kernel_params(torch.float32, torch.bfloat16))
def test_swapped_model_gives_the_same_logits_and_greedy_tokens(model, kernel, dtype):
    plain = copy.deepcopy(model).to(dtype)
    swapped = copy.deepcopy(plain)
    assert pack_linears(swapped, kernel)
    linears = [m for m in swapped.modules() if isinstance(m, (nn.Linear, PackedLinear, NativeLinear))]
    assert linears and all(isinstance(m, CLASSES[kernel]) for m in linears)
    layer = swapped.layers[0]  # the products reading one input are fused, the others swapped alone
    assert {name for name, _ in layer.named_children()} >= {"attention", "feed_forward"}
    assert {name for name, _ in layer.attention.named_children()} == {"wqkv", "wo"}
    assert {name for name, _ in layer.feed_forward.named_children()} == {"w13", "w2"}
    norms = [m for m in swapped.modules() if isinstance(m, RMSNorm)]
    assert len(norms) == 2 * plain.args.n_layers + 1
    assert all(isinstance(m, NativeRMSNorm) for m in norms) == (kernel == "native")
    tokens = torch.randint(3, plain.args.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = plain(tokens), swapped(tokens)
    tolerance = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)
    if dtype == torch.float32:
        greedy = SamplingParams(max_new_tokens=16, temperature=0)
        prompts = [[1, 7, 9], [1, 4, 4, 4, 2, 11]]  # a batch of two: rows decode side by side
        got_tokens = [r.tokens for r in Llama(swapped, None).engine.generate(prompts, greedy)]
        assert got_tokens == [r.tokens for r in Llama(plain, None).engine.generate(prompts, greedy)]


@pytest.mark.parametrize("kernel, dtype", kernel_params(torch.float32))
def test_a_swapped_model_saves_its_dense_weights(model, kernel, dtype, tmp_path):
    swapped = copy.deepcopy(model)
    pack_linears(swapped, kernel)
    state, original = swapped.state_dict(), model.state_dict()
    assert state.keys() == original.keys()
    assert all(torch.equal(state[name], original[name]) for name in original)
    Llama(swapped, None).save(tmp_path / "meta")
    reloaded = Llama.from_pretrained(str(tmp_path / "meta"), device="cpu", cpu_kernels="torch").model
    assert all(torch.equal(reloaded.state_dict()[name], original[name]) for name in original)


def test_modes(model):
    plain = copy.deepcopy(model)
    assert not pack_linears(plain, "torch") and not any(isinstance(m, (PackedLinear, NativeLinear)) for m in plain.modules())
    with pytest.raises(ConfigError, match="unknown cpu_kernels 'mkl'; choose one of auto, native, onednn, torch"):
        pack_linears(plain, "mkl")
    if AVAILABLE["onednn"]:
        with pytest.raises(ConfigError, match="cpu_kernels onednn needs a CPU model in float32 or bfloat16"):
            pack_linears(copy.deepcopy(model).half(), "onednn")
    with pytest.raises(ConfigError, match="cpu_kernels native is unavailable: .*; use cpu_kernels auto or onednn"):
        pack_linears(copy.deepcopy(model).to(torch.bfloat16), "native")
    usable = [kernel for kernel, ok in AVAILABLE.items() if ok]
    assert all(speedup > 0 for speedup in kernel_speedups(model, usable).values())
    auto = copy.deepcopy(model)
    swapped = pack_linears(auto, "auto")  # whichever is fastest on this machine; the logits agree either way
    assert swapped == any(isinstance(m, (PackedLinear, NativeLinear)) for m in auto.modules())
    tokens = torch.tensor([[1, 5, 9, 13]])
    with torch.inference_mode():
        torch.testing.assert_close(auto(tokens), model(tokens), rtol=1e-5, atol=1e-5)


@needs_native
@pytest.mark.parametrize("rows", [1, 3, 8, 9, 37])
@pytest.mark.parametrize("out_features, in_features", [(45, 20), (96, 768), (33, 1)])
def test_native_product_equals_f_linear(rows, out_features, in_features):
    """Row counts around the 8-row tile and widths around the 32-output block, including a last
    block that is mostly padding, and leading batch dimensions kept."""
    generator = torch.Generator().manual_seed(rows * 1000 + out_features)
    weight = torch.randn(out_features, in_features, generator=generator)
    x = torch.randn(2, rows, in_features, generator=generator)
    linear = NativeLinear(weight)
    expected = (x.double() @ weight.double().T).float()
    rounding = 5e-6 * in_features ** 0.5  # float32 sums of in_features unit-scale products
    torch.testing.assert_close(linear(x), expected, rtol=1e-5, atol=rounding)
    torch.testing.assert_close(linear(x[:, :1].transpose(0, 1)), expected[:, :1].transpose(0, 1), rtol=1e-5, atol=rounding)
    assert torch.equal(linear.weight, weight)
    with pytest.raises(TypeError, match="NativeLinear multiplies float32 CPU tensors; got torch.bfloat16"):
        linear(x.to(torch.bfloat16))
    torch.testing.assert_close(copy.deepcopy(linear)(x), linear(x), rtol=0, atol=0)  # a swapped model can be copied
    traced = linear(x.requires_grad_())  # the forward runs in grad mode (as a packed model's does) ...
    torch.testing.assert_close(traced, expected, rtol=1e-5, atol=rounding)
    with pytest.raises(RuntimeError, match="NativeLinear is for inference and takes no gradient"):
        traced.sum().backward()  # ... but a backward through it says why it cannot, never a silent zero


@needs_native
def test_native_kernels_write_float32_whatever_the_default_dtype():
    weight, x = torch.randn(40, 24), torch.randn(5, 24)
    linear = NativeLinear(weight)
    q, k, v = torch.randn(2, 4, 1, 16), torch.randn(2, 4, 9, 16), torch.randn(2, 4, 9, 16)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        product, attended = linear(x), native.decode_attention(q, k, v, None)
    finally:
        torch.set_default_dtype(previous)
    assert product.dtype == attended.dtype == torch.float32
    torch.testing.assert_close(product, x @ weight.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attended, F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-5)


@needs_native
def test_the_library_is_built_once_into_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA2_KERNEL_CACHE", str(tmp_path))
    native.library.cache_clear()
    try:
        assert native.library() is not None
        built = list(tmp_path.glob("native_kernels-*.so"))
        assert len(built) == 1 and not [p for p in tmp_path.iterdir() if p not in built]  # no temporaries left
        stamp = built[0].stat().st_mtime_ns
        native.library.cache_clear()
        assert native.library() is not None and built[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt
    finally:
        native.library.cache_clear()


def test_without_a_compiler_native_is_refused_with_the_reason_and_auto_does_without(model, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA2_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler-here")
    native.library.cache_clear()
    try:
        assert native.library() is None
        assert native.unavailable_reason() == "CC=no-such-compiler-here is not a command on the PATH"
        with pytest.raises(ConfigError, match="cpu_kernels native is unavailable: CC=no-such-compiler-here"):
            pack_linears(copy.deepcopy(model), "native")
        auto = copy.deepcopy(model)
        pack_linears(auto, "auto")
        assert not any(isinstance(m, NativeLinear) for m in auto.modules())
    finally:
        native.library.cache_clear()


@needs_native
@pytest.mark.parametrize("heads, kv_heads, head_dim", [(12, 12, 64), (4, 2, 128), (8, 2, 16), (6, 3, 12)])
def test_native_decode_attention_equals_the_fused_kernel(heads, kv_heads, head_dim):
    """One query per row and head over cache views (slots beyond the read ones present, as in the
    cache), grouped-query heads, a head width off the 16-wide vectors, with and without a mask."""
    generator = torch.Generator().manual_seed(heads * 100 + head_dim)
    batch, slots, capacity = 3, 21, 40
    cache_k = torch.randn(batch, kv_heads, capacity, head_dim, generator=generator)
    cache_v = torch.randn(batch, kv_heads, capacity, head_dim, generator=generator)
    keys, values = cache_k[:, :, :slots], cache_v[:, :, :slots]
    q = torch.randn(batch, heads, 1, head_dim, generator=generator)
    mask = (torch.arange(slots) <= torch.tensor([20, 7, 13])[:, None])[:, None, None]  # rows at different positions
    for m in (None, mask):
        expected = F.scaled_dot_product_attention(q, keys, values, attn_mask=m, enable_gqa=kv_heads < heads)
        torch.testing.assert_close(native.decode_attention(q, keys, values, m), expected, rtol=1e-5, atol=1e-5)


@needs_native
def test_a_native_model_attends_natively_only_while_decoding(model):
    swapped = copy.deepcopy(model)
    pack_linears(swapped, "native")
    calls = []
    for module in swapped.modules():
        if getattr(module, "decode_attention", None) is not None:
            module.decode_attention = lambda *a, _f=module.decode_attention: calls.append(1) or _f(*a)
    greedy = SamplingParams(max_new_tokens=5, temperature=0)
    prompts = [[1, 7, 9], [1, 4, 4, 4, 2, 11]]
    got = [r.tokens for r in Llama(swapped, None).engine.generate(prompts, greedy)]
    assert got == [r.tokens for r in Llama(model, None).engine.generate(prompts, greedy)]
    assert len(calls) == 4 * swapped.args.n_layers  # 4 decode steps after each row's prefill; prefill uses attend


@needs_native
@pytest.mark.parametrize("dim", [768, 20])
def test_native_rms_norm_equals_the_norm_and_steps_aside_for_other_work(dim):
    """The same values as `RMSNorm` (widths on and off the 16-wide vectors); bfloat16 and inputs
    that need a gradient go to PyTorch's norm, so training through a swapped norm still works."""
    norm = RMSNorm(dim, 1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(dim) + 0.5)
    native_norm = NativeRMSNorm.replacing(norm)
    assert native_norm.weight is norm.weight and native_norm.state_dict().keys() == norm.state_dict().keys()
    x = torch.randn(3, 5, dim, generator=torch.Generator().manual_seed(dim))
    with torch.inference_mode():
        torch.testing.assert_close(native_norm(x), norm(x), rtol=1e-6, atol=1e-6)
        assert torch.equal(native_norm(x.to(torch.bfloat16)), norm(x.to(torch.bfloat16)))
    grad_input = x.clone().requires_grad_()
    native_norm(grad_input).sum().backward()
    assert grad_input.grad is not None and norm.weight.grad is not None
