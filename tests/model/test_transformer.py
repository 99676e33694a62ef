import torch

from llama2.model.transformer import Transformer
from llama2.model.config import get_preset
from llama2.model.kv_cache import KVCache, causal_mask


def tokens(args, batch=2, length=12, seed=0):
    return torch.randint(0, args.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_cached_decoding_equals_a_full_forward():
    args = get_preset("tiny")
    model = Transformer.random(args).eval()
    seq = tokens(args)
    with torch.no_grad():
        full = model(seq)
        cache = KVCache(args, 2, 32)
        chunks = [model(seq[:, :5], 0, cache=cache), model(seq[:, 5:9], 5, cache=cache)]
        chunks += [model(seq[:, t : t + 1], t, cache=cache) for t in range(9, 12)]
    torch.testing.assert_close(torch.cat(chunks, 1), full, atol=1e-5, rtol=0)


def test_per_row_positions_decode_rows_of_different_lengths():
    args = get_preset("tiny-mha")
    model = Transformer.random(args, seed=1).eval()
    seq = tokens(args, length=10)
    with torch.no_grad():
        full = model(seq)
        cache = KVCache(args, 2, 16)
        model(seq[:, :6], 0, cache=cache)  # row 1 is treated as 4 tokens long from here on
        positions = torch.tensor([[6], [4]])
        step = model(torch.stack([seq[0, 6:7], seq[1, 4:5]]), cache=cache, positions=positions,
                     mask=causal_mask(positions, 7))
    torch.testing.assert_close(step[0, 0], full[0, 6], atol=1e-5, rtol=0)
    torch.testing.assert_close(step[1, 0], full[1, 4], atol=1e-5, rtol=0)


def test_packed_sequences_with_position_reset_and_block_mask_equal_separate_forwards():
    args = get_preset("tiny")
    model = Transformer.random(args, seed=2).eval()
    a, b = tokens(args, 1, 5, seed=3), tokens(args, 1, 7, seed=4)
    packed = torch.cat([a, b], 1)
    positions = torch.cat([torch.arange(5), torch.arange(7)])[None]
    doc = torch.tensor([0] * 5 + [1] * 7)
    mask = (doc[:, None] == doc[None, :]) & torch.ones(12, 12, dtype=torch.bool).tril()
    with torch.no_grad():
        out = model(packed, positions=positions, mask=mask[None, None])
        torch.testing.assert_close(out[:, :5], model(a), atol=1e-5, rtol=0)
        torch.testing.assert_close(out[:, 5:], model(b), atol=1e-5, rtol=0)


def test_logits_are_fp32_and_bf16_model_runs():
    args = get_preset("tiny")
    model = Transformer.random(args, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        out = model(tokens(args))
    assert out.dtype == torch.float32 and out.shape == (2, 12, args.vocab_size)
    assert torch.isfinite(out).all()


def test_meta_device_build_has_no_storage():
    from llama2.model.transformer import Transformer

    with torch.device("meta"):
        model = Transformer(get_preset("70b"))
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == get_preset("70b").n_params()


def test_rotary_complex_and_real_forms_agree_in_value_and_gradient():
    """Eager rotates by one complex multiply, torch.compile by the real form (inductor generates no
    code for complex ops): the same rotation, values and gradients to fp32 rounding."""
    from llama2.model.transformer import apply_rope, rope_angles

    positions = torch.tensor([[0, 1, 2, 700], [5, 6, 7, 8]])
    rope = rope_angles(positions, head_dim=8, theta=10000.0)
    x = torch.randn(2, 4, 3, 8, requires_grad=True)
    eager = apply_rope(x, rope)
    (grad_eager,) = torch.autograd.grad(eager.square().sum(), x)
    compiled = torch.compile(apply_rope, fullgraph=True, backend="aot_eager")(x, rope)  # traces the real form
    (grad_compiled,) = torch.autograd.grad(compiled.square().sum(), x)
    torch.testing.assert_close(compiled, eager, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad_compiled, grad_eager, atol=1e-5, rtol=0)
    # Meta's reference: (a + ib) * e^{i * pos * theta^(-2j/hd)}
    freqs = 1.0 / 10000.0 ** (torch.arange(0, 8, 2).float() / 8)
    meta = torch.view_as_real(torch.view_as_complex(x.detach().unflatten(-1, (-1, 2)))
                              * torch.polar(torch.ones(2, 4, 1, 4), positions[:, :, None, None] * freqs)).flatten(-2)
    torch.testing.assert_close(eager.detach(), meta, atol=1e-5, rtol=0)


def test_multiplied_out_training_attention_equals_the_fused_kernel():
    """CPU training at short windows multiplies attention out (`attend`); in fp32 it gives the
    fused kernel's outputs and gradients, with grouped-query heads too."""
    import torch.nn.functional as F

    from llama2.model.transformer import attend

    for kv_heads in (4, 2):
        q, k, v = (torch.randn(2, heads, 16, 8, requires_grad=True) for heads in (4, kv_heads, kv_heads))
        out = attend(q, k, v, None, causal=True)
        fused = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv_heads != 4)
        torch.testing.assert_close(out, fused, atol=1e-5, rtol=0)
        for mine, theirs in zip(torch.autograd.grad(out.square().sum(), (q, k, v)),
                                torch.autograd.grad(fused.square().sum(), (q, k, v))):
            torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
