"""The Llama 2 transformer (LLAMA2.md §1.2): pre-norm RMSNorm, rotary embeddings on adjacent
pairs, grouped-query attention, SwiGLU feed-forward, untied output head.

`Transformer.forward(tokens, start_pos=0) -> logits` is the whole contract; caches are made by the
caller (`KVCache`), losses live with training and sampling with generation. Parameter names are
Meta's (`tok_embeddings`, `layers.N.attention.wq`, ...), so Meta checkpoints load by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from llama2.model.config import ModelArgs
from llama2.model.kv_cache import KVCache, causal_mask


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32 and cast back before the weight, as Meta and HF do."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 == self.weight.dtype:  # one fused op, no casts: the decode path in f32
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return F.rms_norm(x.float(), self.weight.shape, eps=self.eps).type_as(x) * self.weight


class Rope(NamedTuple):
    """Rotation tables for `apply_rope`, per position and pair `(B, T, 1, hd/2)`, in two forms:
    `rotation` as unit complex numbers (eager), `cos`/`sin` as `(cos, cos)`/`(-sin, sin)` pairs with
    a trailing dim of 2 (the real form, for torch.compile)."""

    rotation: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float) -> Rope:
    """The rotation tables (fp32) for integer `positions (B, T)`.

    Computed per call from the positions rather than read from a table: it costs T*hd/2
    multiplications, once per forward for all layers, works for any position up to the cache size,
    and leaves no buffer to materialise when the model is built on the `meta` device.
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    angles = positions.float()[:, :, None, None] * inv_freq  # (B, T, 1, hd/2)
    cos, sin = angles.cos(), angles.sin()
    return Rope(torch.complex(cos, sin), torch.stack((cos, cos), dim=-1), torch.stack((-sin, sin), dim=-1))


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate adjacent pairs (2i, 2i+1) of `x (B, T, H, hd)` by their angles, in fp32: Meta's
    complex multiplication `(a + ib)(cos + i sin)`. Eager runs it as one complex multiply (3x
    faster forward and backward on the CPU than the real form's four ops); under torch.compile,
    which generates no code for complex ops, and on MPS, in real arithmetic:
    (a, b) -> (a cos - b sin, b cos + a sin)."""
    pairs = x.float().unflatten(-1, (-1, 2))  # (B, T, H, hd/2, 2)
    if torch.compiler.is_compiling() or x.device.type == "mps":
        rotated = pairs * rope.cos + pairs.flip(-1) * rope.sin
    else:
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * rope.rotation)
    return rotated.flatten(-2).type_as(x)


class Attention(nn.Module):
    """`wqkv`, when set (`cpu_kernels.fuse_projections`, for inference), computes wq, wk and wv as one
    product over their stacked weights and replaces them. `decode_attention`, when set (the native
    CPU kernels), attends for one new token per row over the KV cache in place of `attend`."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.kv_heads, args.head_dim
        self.wq = nn.Linear(args.dim, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, args.dim, bias=False)
        self.wqkv: nn.Module | None = None
        self.decode_attention: Callable[..., torch.Tensor] | None = None

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values `(B, T, heads, hd)`."""
        batch, seqlen, _ = x.shape
        if self.wqkv is None:
            q, k, v = self.wq(x), self.wk(x), self.wv(x)
        else:
            kv_width = self.n_kv_heads * self.head_dim
            q, k, v = self.wqkv(x).split((self.n_heads * self.head_dim, kv_width, kv_width), dim=-1)
        return (q.view(batch, seqlen, self.n_heads, self.head_dim), k.view(batch, seqlen, self.n_kv_heads, self.head_dim),
                v.view(batch, seqlen, self.n_kv_heads, self.head_dim))

    def forward(
        self,
        x: torch.Tensor,
        rope: Rope,
        mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
        start_pos: int,
        positions: torch.Tensor | None,
    ) -> torch.Tensor:
        batch, seqlen, _ = x.shape
        q, k, v = self.project(x)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        if cache is None:
            keys, values = k.transpose(1, 2), v.transpose(1, 2)  # (B, n_kv, T, hd)
        else:
            cache.write(layer, k, v, start_pos, positions)
            kv_len = mask.shape[-1] if mask is not None else start_pos + seqlen
            keys, values = cache.read(layer, batch, kv_len)
        if (self.decode_attention is not None and cache is not None and seqlen == 1 and not torch.is_grad_enabled()
                and (mask is None or mask.shape[1] == 1)):
            out = self.decode_attention(q.transpose(1, 2), keys, values, mask)
        else:
            causal = mask is None and keys.shape[2] == seqlen and seqlen > 1
            out = attend(q.transpose(1, 2), keys.to(q.dtype), values.to(q.dtype), mask, causal)  # (B, nh, T, hd)
        return self.wo(out.transpose(1, 2).reshape(batch, seqlen, -1))


EXPLICIT_ATTENTION_MAX = 512 * 512  # query x key positions up to which CPU training multiplies attention out


def attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
           causal: bool) -> torch.Tensor:
    """Attention of `q (B, nh, T, hd)` over `keys`/`values (B, n_kv, S, hd)`, causal or under `mask`.

    PyTorch's fused kernel everywhere but one case: causal training on the CPU at short windows,
    where the fused (flash) kernel takes 1.8x the time of the plain product, softmax, product (bf16,
    batch 8 x 256 tokens, forward and backward: 19.7 against 11.0 ms per layer on the AMD EPYC of
    bench/README.md). That form keeps the (T, S) probabilities for the backward pass, so it is used
    only while T * S <= EXPLICIT_ATTENTION_MAX. Scores are formed in the inputs' dtype and normalised
    in fp32, as transformers' eager attention does.
    """
    repeats = q.shape[1] // keys.shape[1]
    if causal and q.device.type == "cpu" and torch.is_grad_enabled() and q.shape[2] * keys.shape[2] <= EXPLICIT_ATTENTION_MAX:
        if repeats > 1:
            keys, values = keys.repeat_interleave(repeats, dim=1), values.repeat_interleave(repeats, dim=1)
        seqlen = q.shape[2]
        future = torch.ones(seqlen, seqlen, dtype=torch.bool, device=q.device).triu(1)
        scores = (q @ keys.transpose(-1, -2)).float().mul_(q.shape[-1] ** -0.5).masked_fill_(future, float("-inf"))
        return scores.softmax(dim=-1).to(q.dtype) @ values
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=None if causal else mask, is_causal=causal,
                                          enable_gqa=repeats > 1)


class FeedForward(nn.Module):
    """SwiGLU: `w2(silu(w1 x) * w3 x)`; w1 is the gate, w3 the up projection. `w13`, when set
    (`cpu_kernels.fuse_projections`, for inference), computes w1 and w3 as one product."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)
        self.w13: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w13 is None:
            gate, up = self.w1(x), self.w3(x)
        else:
            gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args.dim, args.ffn_hidden_dim)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)

    def forward(self, x, rope, mask, cache, start_pos, positions) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), rope, mask, cache, self.layer_id, start_pos, positions)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(i, args) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)

    def forward(
        self,
        tokens: torch.Tensor,
        start_pos: int = 0,
        *,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits `(B, T, vocab)` in fp32 for `tokens (B, T)`.

        Without `positions`, token t of every row sits at `start_pos + t`. With `positions (B, T)`
        each row has its own (cached decoding of ragged batches, packed training sequences); then
        `mask (B, 1, T, S)` (True = attend) says which of the S keys each query sees, and with a
        cache S is how many cache slots are read.
        """
        return self.output(self.hidden_states(tokens, start_pos, cache=cache, positions=positions, mask=mask)).float()

    def hidden_states(
        self,
        tokens: torch.Tensor,
        start_pos: int = 0,
        *,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final-normed hidden states `(B, T, dim)`: `forward` without the output head, so the
        engine can project only the rows it samples from and a reward model can put its own head on."""
        batch, seqlen = tokens.shape
        contiguous = positions is None
        if contiguous:
            positions = torch.arange(start_pos, start_pos + seqlen, device=tokens.device).expand(batch, seqlen)
            if cache is not None and mask is None and start_pos > 0 and seqlen > 1:
                mask = causal_mask(positions, start_pos + seqlen)  # a chunk after cached positions
        rope = rope_angles(positions, self.args.head_dim, self.args.rope_theta)
        if contiguous:
            positions = None  # the cache writes one slice for all rows
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, rope, mask, cache, start_pos, positions)
        return self.norm(h)

    @classmethod
    def random(
        cls,
        args: ModelArgs,
        *,
        seed: int = 0,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> "Transformer":
        """A randomly initialised model of shape `args`, seeded, built directly on `device`."""
        with torch.device(device or "cpu"):
            model = cls(args)
        model.init_weights(torch.Generator(device=device or "cpu").manual_seed(seed))
        return model.to(dtype) if dtype is not None else model

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None, std: float = 0.02) -> None:
        """Random initialisation for training from scratch: N(0, std) for matrices, scaled by
        1/sqrt(2 * n_layers) on the projections that write into the residual stream (GPT-2's rule;
        the paper does not state Llama 2's), ones for norms."""
        residual_std = std / math.sqrt(2 * self.args.n_layers)
        for name, param in self.named_parameters():
            if param.dim() == 1:
                param.fill_(1.0)
            else:
                scale = residual_std if name.endswith(("wo.weight", "w2.weight")) else std
                param.normal_(0.0, scale, generator=generator)
