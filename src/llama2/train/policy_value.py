"""The PPO policy with its value head on one body (Llama 2 §3.2.3 does not describe its value
function; LLAMA2.md §5.2 lists it as unconfirmed).

`PolicyValueTransformer` is the chat model plus `value_head`, a `(1, dim)` projection with a bias
reading the same final hidden states as the next-token head: `V(s_t)` is read at the position
whose logits choose token t+1. Sharing the body costs one extra row of weights instead of a second
model (TRL's `AutoModelForCausalLMWithValueHead` does the same); the value loss is weighted by
`vf_coef` so it does not dominate the body's updates.

`forward(tokens, ...)` is `Transformer.forward` — logits — so the engine and everything else use it as
the plain model; `forward(tokens, values=True)` also returns the values `(B, T)`, in one pass
(under FSDP the root module's forward is what gathers its weights, so both come from `forward`).
`select` (positions `(B, R)`) applies both heads at those positions only: PPO needs the answer's
positions, and projecting the prompt's too through the vocabulary-wide head was wasted work.

Value head initialisation (`value_init`): `zero` (default) — every value starts at 0, which is the
mean of the whitened rewards, so the first advantages are the whitened rewards themselves; `normal`
— the weight drawn as a reward head's (N(0, 1/(dim+1))), bias 0.
"""

from __future__ import annotations

import torch
from torch import nn

from llama2.errors import ConfigError
from llama2.model.config import ModelArgs
from llama2.model.kv_cache import KVCache
from llama2.model.reward import initial_head
from llama2.model.transformer import Transformer

VALUE_PREFIX = "value_head."
VALUE_INITS = ("zero", "normal")


class PolicyValueTransformer(Transformer):
    """`Transformer` plus `value_head` `(1, dim)` with bias; see the module docstring."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__(args)
        self.value_head = nn.Linear(args.dim, 1, bias=True)

    def forward(
        self,
        tokens: torch.Tensor,
        start_pos: int = 0,
        *,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        values: bool = False,
        select: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits `(B, T, vocab)` in fp32; with `values=True` also the values `(B, T)` in fp32. With
        `select (B, R)` (positions in each row) only those: `(B, R, vocab)` and `(B, R)`."""
        hidden = self.hidden_states(tokens, start_pos, cache=cache, positions=positions, mask=mask)
        if select is not None:
            hidden = hidden.gather(1, select[..., None].expand(-1, -1, hidden.shape[-1]))
        logits = self.output(hidden).float()
        if not values:
            return logits
        return logits, self.value_head(hidden).squeeze(-1).float()


def initial_value_head(args: ModelArgs, init: str, *, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """`value_head.weight (1, dim)` and `value_head.bias (1,)` as `init` says (see the module docstring)."""
    if init == "zero":
        weight = torch.zeros(1, args.dim)
    elif init == "normal":
        weight = initial_head(args, generator)
    else:
        raise ConfigError(f"unknown value_init {init!r}; use one of {', '.join(VALUE_INITS)}")
    return {f"{VALUE_PREFIX}weight": weight, f"{VALUE_PREFIX}bias": torch.zeros(1)}


def policy_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state without the value head: a plain `Transformer`'s."""
    return {name: tensor for name, tensor in state.items() if not name.startswith(VALUE_PREFIX)}
