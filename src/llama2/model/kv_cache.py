"""The key/value cache the engine allocates and passes into `Transformer.forward`.

Rows of the cache are independent sequences: each has its own positions, so rows of different
lengths can decode side by side, and sequences can join and leave a running batch (continuous
batching): a joining sequence is prefilled into a row view, a leaving one's row is overwritten by
the last row's (`move_row`), and the buffers grow when a longer sequence joins (`grow`).
Keys are stored after rotary embedding, as in Meta's code, so a cached key never needs re-rotating.
"""

from __future__ import annotations

import torch

from llama2.model.config import ModelArgs


class KVCache:
    """Buffers of shape `(n_layers, batch, n_kv_heads, max_seq_len, head_dim)` for keys and values."""

    def __init__(
        self,
        args: ModelArgs,
        batch_size: int,
        max_seq_len: int | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        zeroed: bool = True,
    ) -> None:
        """`zeroed=False` skips clearing the buffers, for callers that write every slot before
        reading it (scoring a fixed set of tokens); decoding keeps zeros, as idle rows read stale slots."""
        self.max_seq_len = max_seq_len or args.max_seq_len
        self.batch_size = batch_size
        shape = (args.n_layers, batch_size, args.kv_heads, self.max_seq_len, args.head_dim)
        make = torch.zeros if zeroed else torch.empty
        self.k = make(shape, dtype=dtype, device=device)
        self.v = make(shape, dtype=dtype, device=device)

    def write(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, start_pos: int, positions: torch.Tensor | None
    ) -> None:
        """Store new keys/values `(B, T, n_kv, hd)` at `start_pos..` or at per-row `positions (B, T)`."""
        batch = k.shape[0]
        if positions is None:
            end = start_pos + k.shape[1]
            self.k[layer, :batch, :, start_pos:end] = k.transpose(1, 2)
            self.v[layer, :batch, :, start_pos:end] = v.transpose(1, 2)
        else:
            rows = torch.arange(batch, device=k.device)[:, None]
            # Advanced indices around a slice put their dims first: the target view is (B, T, n_kv, hd).
            self.k[layer][rows, :, positions] = k.to(self.k.dtype)
            self.v[layer][rows, :, positions] = v.to(self.v.dtype)

    @classmethod
    def _wrap(cls, k: torch.Tensor, v: torch.Tensor) -> "KVCache":
        cache = cls.__new__(cls)
        cache.k, cache.v = k, v
        cache.batch_size, cache.max_seq_len = k.shape[1], k.shape[3]
        return cache

    def rows(self, start: int, stop: int) -> "KVCache":
        """A cache over rows `start..stop-1` sharing these buffers: prefilling it fills those rows."""
        return KVCache._wrap(self.k[:, start:stop], self.v[:, start:stop])

    def move_row(self, source: int, target: int, length: int) -> None:
        """Copy the first `length` slots of row `source` into row `target`."""
        self.k[:, target, :, :length] = self.k[:, source, :, :length]
        self.v[:, target, :, :length] = self.v[:, source, :, :length]

    def grow(self, batch_size: int, max_seq_len: int) -> None:
        """Enlarge the buffers to at least `batch_size` rows of `max_seq_len` slots, keeping the
        contents; new slots are zero (decoding reads idle slots through a mask, and 0 * NaN is NaN)."""
        batch_size, max_seq_len = max(batch_size, self.batch_size), max(max_seq_len, self.max_seq_len)
        if (batch_size, max_seq_len) == (self.batch_size, self.max_seq_len):
            return
        shape = (self.k.shape[0], batch_size, self.k.shape[2], max_seq_len, self.k.shape[4])
        for name in ("k", "v"):
            old = getattr(self, name)
            new = torch.zeros(shape, dtype=old.dtype, device=old.device)
            new[:, : self.batch_size, :, : self.max_seq_len] = old
            setattr(self, name, new)
        self.batch_size, self.max_seq_len = batch_size, max_seq_len

    def read(self, layer: int, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values `(B, n_kv, length, hd)` of the first `length` positions."""
        return self.k[layer, :batch, :, :length], self.v[layer, :batch, :, :length]


def causal_mask(positions: torch.Tensor, kv_len: int) -> torch.Tensor:
    """Boolean mask `(B, 1, T, kv_len)`: the query at position p sees cache slots 0..p of its own row."""
    slots = torch.arange(kv_len, device=positions.device)
    return (slots[None, None, :] <= positions[:, :, None])[:, None]
