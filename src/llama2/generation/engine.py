"""The one generation engine: batched, KV-cached sampling with streaming, used by the CLI, the
benchmarks, the server and RLHF sampling alike (DESIGN.md, "One engine").

Prompts of different lengths share a batch: the prompt block is right-padded and prefilled in one
forward pass, then every row decodes at its own position (`KVCache` rows are independent), so no
row ever attends to another row's padding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from llama2.errors import ContextLengthError, ConfigError
from llama2.generation.detokenize import IncrementalDecoder
from llama2.generation.sampling import RowSampling, sample_next
from llama2.generation.scoring import score_loglikelihood
from llama2.generation.stopping import StopStringChecker
from llama2.model.kv_cache import KVCache, causal_mask
from llama2.model.transformer import Transformer
from llama2.types import GenerationResult, SamplingParams, StreamDelta


def _no_text(tokens: list[int]) -> str:
    return ""


@dataclass
class _Sequence:
    """Book-keeping for one prompt while it decodes."""

    index: int
    prompt: list[int]
    params: SamplingParams
    max_new: int
    decoder: IncrementalDecoder
    stopper: StopStringChecker
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] = field(default_factory=list)
    shown: str = ""
    finish_reason: str | None = None

    def visible_text(self) -> str:
        return self.stopper.final_text if self.stopper.final_text is not None else self.decoder.text

    def result(self) -> GenerationResult:
        return GenerationResult(
            tokens=list(self.tokens),
            text=self.visible_text(),
            finish_reason=self.finish_reason or "length",
            prompt_tokens=len(self.prompt),
            logprobs=list(self.logprobs) if self.params.logprobs else None,
            top_logprobs=list(self.top_logprobs) if self.params.top_logprobs else None,
        )


class Engine:
    """Generation and scoring over one `Transformer`.

    `decode` turns token ids into text (the tokenizer's `decode`); without it results carry token
    ids only and stop strings cannot be used.
    """

    def __init__(
        self,
        model: Transformer,
        *,
        eos_id: int | None = None,
        decode=None,
        max_batch_size: int = 16,
    ) -> None:
        self.model = model
        self.eos_id = eos_id
        self.decode = decode
        self.max_batch_size = max_batch_size

    @property
    def max_seq_len(self) -> int:
        return self.model.args.max_seq_len

    @property
    def device(self) -> torch.device:
        return self.model.tok_embeddings.weight.device

    # ---- generation -------------------------------------------------------------------------

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[GenerationResult]:
        """Complete every prompt (token ids); results come back in prompt order."""
        results: dict[int, GenerationResult] = {}
        for batch in self._batches(prompts, params):
            for _ in self._decode(batch):
                pass
            results.update((seq.index, seq.result()) for seq in batch)
        return [results[i] for i in range(len(prompts))]

    def stream(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams]
    ) -> Iterator[StreamDelta]:
        """Yield text deltas as tokens arrive; each sequence's last delta carries its finish_reason.

        Deltas never split a multi-byte character and never show the start of a stop string.
        """
        for batch in self._batches(prompts, params):
            for stepped in self._decode(batch):
                for seq, token in stepped:
                    safe, _ = seq.stopper.update(seq.decoder.text)
                    if seq.finish_reason is not None:
                        safe = seq.visible_text()
                    delta, seq.shown = safe[len(seq.shown):], safe
                    if delta or seq.finish_reason is not None or token is not None:
                        tokens = [] if token is None else [token]
                        yield StreamDelta(seq.index, delta, tokens, seq.finish_reason)

    def _batches(self, prompts, params) -> Iterator[list[_Sequence]]:
        """Validate, then group prompts into batches of similar length (less padding)."""
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ConfigError(f"got {len(prompts)} prompts but {len(params)} sampling settings")
        sequences = [self._new_sequence(i, list(p), sp) for i, (p, sp) in enumerate(zip(prompts, params))]
        sequences.sort(key=lambda seq: len(seq.prompt))
        for start in range(0, len(sequences), self.max_batch_size):
            yield sequences[start : start + self.max_batch_size]

    def _new_sequence(self, index: int, prompt: list[int], params: SamplingParams) -> _Sequence:
        vocab = self.model.args.vocab_size
        if not prompt:
            raise ConfigError(f"prompt {index} is empty; give at least one token (usually BOS)")
        bad = next((t for t in prompt if not 0 <= t < vocab), None)
        if bad is not None:
            raise ConfigError(f"prompt {index} has token id {bad}, outside the vocabulary of {vocab}")
        room = self.max_seq_len - len(prompt)
        if room <= 0:
            raise ContextLengthError(
                f"prompt {index} is {len(prompt)} tokens; the context window holds {self.max_seq_len} "
                "including at least one new token — shorten the prompt"
            )
        if params.max_new_tokens is not None and params.max_new_tokens > room:
            raise ContextLengthError(
                f"prompt {index} ({len(prompt)} tokens) plus max_new_tokens {params.max_new_tokens} exceeds "
                f"the context window of {self.max_seq_len}; ask for at most {room} new tokens"
            )
        if params.stop and self.decode is None:
            raise ConfigError("stop strings need a tokenizer to decode text; this model has none")
        if params.temperature < 0 or not 0 < params.top_p <= 1 or params.top_k < 0:
            raise ConfigError("need temperature >= 0, 0 < top_p <= 1 and top_k >= 0")
        max_new = room if params.max_new_tokens is None else params.max_new_tokens
        return _Sequence(
            index=index,
            prompt=prompt,
            params=params,
            max_new=max_new,
            decoder=IncrementalDecoder(self.decode or _no_text, prompt[-1:]),
            stopper=StopStringChecker(params.stop),
        )

    @torch.inference_mode()
    def _decode(self, batch: list[_Sequence]) -> Iterator[list[tuple[_Sequence, int | None]]]:
        """Run one batch to completion, yielding after every step the (sequence, new token) pairs of
        the rows that were still active (token None for a row that just finished on EOS)."""
        device, size = self.device, len(batch)
        lengths = [len(seq.prompt) for seq in batch]
        cache = KVCache(
            self.model.args,
            size,
            max(n + seq.max_new for n, seq in zip(lengths, batch)),
            dtype=self.model.tok_embeddings.weight.dtype,
            device=device,
        )
        sampling = RowSampling.build(
            [seq.params.temperature for seq in batch],
            [seq.params.top_p for seq in batch],
            [seq.params.top_k for seq in batch],
            [seq.params.seed for seq in batch],
            device,
        )
        logits = self._prefill(batch, lengths, cache)
        positions = list(lengths)
        while True:
            next_tokens = sample_next(logits, sampling).tolist()
            stepped = self._accept(batch, next_tokens, logits)
            yield stepped
            if all(seq.finish_reason is not None for seq in batch):
                return
            logits = self._step(batch, next_tokens, positions, cache)

    def _prefill(self, batch: list[_Sequence], lengths: list[int], cache: KVCache) -> torch.Tensor:
        """One forward pass over the right-padded prompts; last-prompt-token logits `(B, V)`."""
        width = max(lengths)
        tokens = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            tokens[row, : len(seq.prompt)] = torch.tensor(seq.prompt)
        hidden = self.model.hidden_states(tokens.to(self.device), 0, cache=cache)
        last = hidden[torch.arange(len(batch), device=self.device), torch.tensor(lengths, device=self.device) - 1]
        return self.model.output(last).float()

    def _step(
        self, batch: list[_Sequence], next_tokens: list[int], positions: list[int], cache: KVCache
    ) -> torch.Tensor:
        """Feed each row's new token at its own position; finished rows idle in place.

        `positions[row]` is the row's next free cache slot; a finished row keeps rewriting its last
        slot, which nothing reads any more.
        """
        where = [min(p, cache.max_seq_len - 1) for p in positions]  # the slots the fed tokens occupy
        for row, seq in enumerate(batch):
            if seq.finish_reason is None:
                positions[row] += 1
        feed = torch.tensor(next_tokens, device=self.device)[:, None]
        if all(seq.finish_reason is None for seq in batch) and len(set(where)) == 1:
            return self.model(feed, where[0], cache=cache)[:, 0]
        pos = torch.tensor(where, device=self.device)[:, None]
        return self.model(feed, cache=cache, positions=pos, mask=causal_mask(pos, max(where) + 1))[:, 0]

    def _accept(
        self, batch: list[_Sequence], next_tokens: list[int], logits: torch.Tensor
    ) -> list[tuple[_Sequence, int | None]]:
        """Append each active row's token, record logprobs, and decide which rows finish."""
        want_logprobs = any(seq.params.logprobs or seq.params.top_logprobs for seq in batch)
        log_probs = torch.log_softmax(logits, dim=-1) if want_logprobs else None
        stepped = []
        for row, (seq, token) in enumerate(zip(batch, next_tokens)):
            if seq.finish_reason is not None:
                continue
            if token == self.eos_id:
                seq.finish_reason = "stop"
                stepped.append((seq, None))
                continue
            seq.tokens.append(token)
            seq.decoder.push(token)
            if log_probs is not None:
                self._record_logprobs(seq, log_probs[row], token)
            if seq.stopper.stops and seq.stopper.update(seq.decoder.text)[1]:
                seq.finish_reason = "stop"
            elif len(seq.tokens) >= seq.max_new:
                seq.finish_reason = "length"
            if seq.finish_reason is not None:
                seq.decoder.flush()
            stepped.append((seq, token))
        return stepped

    @staticmethod
    def _record_logprobs(seq: _Sequence, row_log_probs: torch.Tensor, token: int) -> None:
        if seq.params.logprobs:
            seq.logprobs.append(float(row_log_probs[token]))
        if seq.params.top_logprobs:
            values, ids = row_log_probs.topk(seq.params.top_logprobs)
            seq.top_logprobs.append(dict(zip(ids.tolist(), values.tolist())))

    # ---- scoring ----------------------------------------------------------------------------

    @torch.inference_mode()
    def loglikelihood(
        self, requests: Sequence[tuple[Sequence[int], Sequence[int]]], *, batch_tokens: int = 8192
    ) -> list[tuple[float, bool]]:
        """For each (context, continuation) pair of token-id lists: the summed log-probability of
        the continuation given the context, and whether greedy decoding would have produced it
        (lm-evaluation-harness's `loglikelihood` contract). Long requests are an error, never cut.
        Repeated inputs run once and shared prefixes are computed once (`scoring.py`)."""
        for i, (context, continuation) in enumerate(requests):
            if not context or not continuation:
                raise ConfigError(f"request {i}: context and continuation must both be non-empty")
            if len(context) + len(continuation) - 1 > self.max_seq_len:
                raise ContextLengthError(
                    f"request {i} needs {len(context) + len(continuation) - 1} positions; the context "
                    f"window holds {self.max_seq_len}"
                )
        return score_loglikelihood(self.model, requests, batch_tokens=batch_tokens, max_rows=self.max_batch_size * 4)
