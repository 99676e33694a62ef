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
