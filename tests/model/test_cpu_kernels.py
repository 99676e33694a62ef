"""oneDNN-packed weights (`model/cpu_kernels.py`): the same logits and greedy tokens as the unpacked
model, the dense weights back in the state dict (so a packed model saves), and the modes checked."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from llama2.api import Llama
from llama2.errors import ConfigError
from llama2.model.config import get_preset
from llama2.model.cpu_kernels import PackedLinear, onednn_available, onednn_speedup, pack_linears
from llama2.model.transformer import Transformer
from llama2.types import SamplingParams

pytestmark = pytest.mark.skipif(not onednn_available(Transformer.random(get_preset("tiny"))),
                                reason="this torch build has no oneDNN")


@pytest.fixture(scope="module")
def model():
    return Transformer.random(get_preset("tiny"), seed=5).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_model_gives_the_same_logits_and_greedy_tokens(model, dtype):
    plain = copy.deepcopy(model).to(dtype)
    packed = copy.deepcopy(plain)
    assert pack_linears(packed, "onednn")
    linears = [m for m in packed.modules() if isinstance(m, (nn.Linear, PackedLinear))]
    assert linears and all(isinstance(m, PackedLinear) for m in linears)
    layer = packed.layers[0]  # the products reading one input are fused, the others packed alone
    assert {name for name, _ in layer.named_children()} >= {"attention", "feed_forward"}
    assert {name for name, _ in layer.attention.named_children()} == {"wqkv", "wo"}
    assert {name for name, _ in layer.feed_forward.named_children()} == {"w13", "w2"}
    tokens = torch.randint(3, plain.args.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = plain(tokens), packed(tokens)
    tolerance = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)
    if dtype == torch.float32:
        greedy = SamplingParams(max_new_tokens=16, temperature=0)
        assert (Llama(packed, None).engine.generate([[1, 7, 9]], greedy)[0].tokens
                == Llama(plain, None).engine.generate([[1, 7, 9]], greedy)[0].tokens)


def test_a_packed_model_saves_its_dense_weights(model, tmp_path):
    packed = copy.deepcopy(model)
    pack_linears(packed, "onednn")
    state, original = packed.state_dict(), model.state_dict()
    assert state.keys() == original.keys()
    assert all(torch.equal(state[name], original[name]) for name in original)
    Llama(packed, None).save(tmp_path / "meta")
    reloaded = Llama.from_pretrained(str(tmp_path / "meta"), device="cpu", cpu_kernels="torch").model
    assert all(torch.equal(reloaded.state_dict()[name], original[name]) for name in original)


def test_modes(model):
    plain = copy.deepcopy(model)
    assert not pack_linears(plain, "torch") and not any(isinstance(m, PackedLinear) for m in plain.modules())
    with pytest.raises(ConfigError, match="unknown cpu_kernels 'mkl'; choose one of auto, onednn, torch"):
        pack_linears(plain, "mkl")
    with pytest.raises(ConfigError, match="cpu_kernels onednn needs a CPU model in float32 or bfloat16"):
        pack_linears(copy.deepcopy(model).half(), "onednn")
    assert onednn_speedup(model) > 0
    auto = copy.deepcopy(model)
    packed = pack_linears(auto, "auto")  # whichever is faster on this machine; the logits agree either way
    assert packed == any(isinstance(m, PackedLinear) for m in auto.modules())
    tokens = torch.tensor([[1, 5, 9, 13]])
    with torch.inference_mode():
        torch.testing.assert_close(auto(tokens), model(tokens), rtol=1e-5, atol=1e-5)
