"""The one generation engine: batched, KV-cached sampling with streaming, used by the CLI, the
benchmarks, the server and RLHF sampling alike (DESIGN.md, "One engine").

Prompts of different lengths share a batch: joining prompts are right-padded and prefilled in one
forward pass, then every row decodes at its own position (`KVCache` rows are independent), so no
row ever attends to another row's padding. Batches are continuous (`DecodeBatch`): a sequence that
finishes frees its row for a waiting one at the next step, both for a list of prompts here and for
the requests the server's scheduler (`scheduler.py`) admits as they arrive.
"""

from __future__ import annotations

from collections import deque
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
    """Book-keeping for one prompt while it decodes.

    `length` is how many of its tokens the KV cache holds; `pending` is the token sampled last and
    not yet fed (it goes into slot `length` at the next step).
    """

    index: int
    prompt: list[int]
    params: SamplingParams
    max_new: int
    decoder: IncrementalDecoder
    stopper: StopStringChecker
    generator: torch.Generator | None = None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] = field(default_factory=list)
    hidden: list[torch.Tensor] = field(default_factory=list)
    shown: str = ""
    finish_reason: str | None = None
    length: int = 0
    pending: int = 0
    cancelled: bool = False

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
            hidden_states=torch.stack(self.hidden) if self.hidden else None,
        )

    def delta(self, token: int | None) -> StreamDelta | None:
        """The text this step made safe to show (never a split character, never the start of a
        stop string), or None when the step showed nothing new and did not finish the sequence."""
        safe, _ = self.stopper.update(self.decoder.text)
        if self.finish_reason is not None:
            safe = self.visible_text()
        text, self.shown = safe[len(self.shown):], safe
        if not (text or self.finish_reason is not None or token is not None):
            return None
        tokens = [] if token is None else [token]
        delta = StreamDelta(self.index, text, tokens, self.finish_reason)  # type: ignore[arg-type]
        if token is not None and self.params.logprobs:
            delta.logprobs = self.logprobs[-1:]
        if token is not None and self.params.top_logprobs:
            delta.top_logprobs = self.top_logprobs[-1:]
        if self.finish_reason is not None:
            delta.prompt_tokens, delta.completion_tokens = len(self.prompt), len(self.tokens)
        return delta


Stepped = list[tuple[_Sequence, "int | None"]]


class Engine:
    """Generation and scoring over one `Transformer`.

    `decode` turns token ids into text (the tokenizer's `decode`); without it results carry token
    ids only and stop strings cannot be used. `keep_hidden_states` makes every result carry the
    final-normed hidden state each of its sampled tokens was drawn from (RLHF reads the policy's
    log-probabilities and values from them instead of running the policy over its answers again).
    """

    def __init__(
        self,
        model: Transformer,
        *,
        eos_id: int | None = None,
        decode=None,
        max_batch_size: int = 16,
        keep_hidden_states: bool = False,
    ) -> None:
        self.model = model
        self.eos_id = eos_id
        self.decode = decode
        self.max_batch_size = max_batch_size
        self.keep_hidden_states = keep_hidden_states

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
        sequences = self.sequences(prompts, params)
        for _ in self._run(sequences):
            pass
        return [seq.result() for seq in sequences]

    def stream(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams]
    ) -> Iterator[StreamDelta]:
        """Yield text deltas as tokens arrive; each sequence's last delta carries its finish_reason
        and token counts. Deltas never split a multi-byte character and never show the start of a
        stop string."""
        for stepped in self._run(self.sequences(prompts, params)):
            for seq, token in stepped:
                delta = seq.delta(token)
                if delta is not None:
                    yield delta

    def _run(self, sequences: list[_Sequence]) -> Iterator[Stepped]:
        """Decode all sequences with at most `max_batch_size` at a time: shortest prompts first, and
        a waiting one joins as soon as a row frees up (the same continuous batching the server's
        scheduler does), yielding every admission's and every step's (sequence, token) pairs."""
        waiting = deque(sorted(sequences, key=lambda seq: len(seq.prompt)))
        batch = DecodeBatch(self)
        while waiting or batch.rows:
            room = self.max_batch_size - len(batch.rows)
            if room and waiting:
                yield batch.admit([waiting.popleft() for _ in range(min(room, len(waiting)))])
            if batch.rows:
                yield batch.step()

    def sequences(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[_Sequence]:
        """Validated book-keeping for each prompt; every problem is raised before any decoding."""
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ConfigError(f"got {len(prompts)} prompts but {len(params)} sampling settings")
        return [self.new_sequence(i, list(p), sp) for i, (p, sp) in enumerate(zip(prompts, params))]

    def new_sequence(self, index: int, prompt: list[int], params: SamplingParams) -> _Sequence:
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
        if params.max_new_tokens is not None and params.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens is {params.max_new_tokens}; ask for at least 1 new token")
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed % 2**64)  # any int
        return _Sequence(
            index=index,
            prompt=prompt,
            params=params,
            max_new=room if params.max_new_tokens is None else params.max_new_tokens,
            decoder=IncrementalDecoder(self.decode or _no_text, prompt[-1:]),
            stopper=StopStringChecker(params.stop),
            generator=generator,
        )

    def accept(self, rows: list[_Sequence], next_tokens: list[int], hidden: torch.Tensor, logits: torch.Tensor) -> Stepped:
        """Append each row's token (sampled from `logits`, projected from `hidden`), record logprobs
        (and hidden states when kept), and decide which rows finish."""
        if self.keep_hidden_states:
            for row, seq in enumerate(rows):
                seq.hidden.append(hidden[row])
        want_logprobs = any(seq.params.logprobs or seq.params.top_logprobs for seq in rows)
        log_probs = torch.log_softmax(logits, dim=-1) if want_logprobs else None
        stepped: Stepped = []
        for row, (seq, token) in enumerate(zip(rows, next_tokens)):
            seq.pending = token
            if token == self.eos_id:
                seq.finish_reason = "stop"
                seq.decoder.flush()
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


class DecodeBatch:
    """The sequences decoding together and their KV cache (iteration-level scheduling, as Orca and
    vLLM do it): sequences join between steps (`admit` prefills them into free rows) and leave when
    they finish or are cancelled, the last row moving into the freed one so the active rows stay
    packed at the front and each step computes exactly them. The cache starts as large as the
    first sequences need and grows when a longer one joins."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rows: list[_Sequence] = []
        self.cache: KVCache | None = None
        self._sampling: RowSampling | None = None

    @torch.inference_mode()
    def admit(self, joining: list[_Sequence]) -> Stepped:
        """Prefill `joining` (right-padded, one forward pass) into the rows after the active ones and
        sample each one's first token. Sequences that finish at once (EOS, max_new_tokens 1) leave."""
        engine, start = self.engine, len(self.rows)
        self._reserve(start + len(joining), max(len(seq.prompt) + seq.max_new for seq in joining))
        assert self.cache is not None
        lengths = [len(seq.prompt) for seq in joining]
        tokens = torch.zeros((len(joining), max(lengths)), dtype=torch.long)
        for row, seq in enumerate(joining):
            tokens[row, : len(seq.prompt)] = torch.tensor(seq.prompt)
            seq.length = len(seq.prompt)
        view = self.cache.rows(start, start + len(joining))
        hidden = engine.model.hidden_states(tokens.to(engine.device), 0, cache=view)
        rows = torch.arange(len(joining), device=engine.device)
        last = hidden[rows, torch.tensor(lengths, device=engine.device) - 1]
        logits = engine.model.output(last).float()
        sampling = self._row_sampling(joining, engine.device)
        stepped = engine.accept(joining, sample_next(logits, sampling).tolist(), last, logits)
        self.rows += joining
        self._sampling = None
        self._drop_finished()
        return stepped

    @torch.inference_mode()
    def step(self) -> Stepped:
        """Feed every active row its pending token at its own position and sample the next one."""
        assert self.cache is not None and self.rows
        engine = self.engine
        feed = torch.tensor([seq.pending for seq in self.rows], device=engine.device)[:, None]
        where = [seq.length for seq in self.rows]
        if len(set(where)) == 1:
            hidden = engine.model.hidden_states(feed, where[0], cache=self.cache)[:, 0]
        else:
            pos = torch.tensor(where, device=engine.device)[:, None]
            hidden = engine.model.hidden_states(feed, cache=self.cache, positions=pos, mask=causal_mask(pos, max(where) + 1))[:, 0]
        logits = engine.model.output(hidden).float()
        for seq in self.rows:
            seq.length += 1
        if self._sampling is None:
            self._sampling = self._row_sampling(self.rows, engine.device)
        stepped = engine.accept(self.rows, sample_next(logits, self._sampling).tolist(), hidden, logits)
        self._drop_finished()
        return stepped

    def remove(self, seq: _Sequence) -> None:
        """Take `seq` out of the batch (finished or cancelled), freeing its row for the next step."""
        assert self.cache is not None
        row, last = self.rows.index(seq), len(self.rows) - 1
        if row != last:
            self.cache.move_row(last, row, self.rows[last].length)
            self.rows[row] = self.rows[last]
        self.rows.pop()
        self._sampling = None

    def _drop_finished(self) -> None:
        for seq in [seq for seq in self.rows if seq.finish_reason is not None]:
            self.remove(seq)

    def _reserve(self, rows: int, length: int) -> None:
        args, engine = self.engine.model.args, self.engine
        if self.cache is None:
            dtype = engine.model.tok_embeddings.weight.dtype
            self.cache = KVCache(args, rows, length, dtype=dtype, device=engine.device)
        elif rows > self.cache.batch_size or length > self.cache.max_seq_len:
            # Grow geometrically so a stream of ever-longer sequences costs few copies.
            grown = min(max(length, 2 * self.cache.max_seq_len), engine.max_seq_len)
            self.cache.grow(rows, grown if length > self.cache.max_seq_len else self.cache.max_seq_len)

    @staticmethod
    def _row_sampling(rows: list[_Sequence], device: torch.device) -> RowSampling:
        return RowSampling.of(
            [seq.params.temperature for seq in rows], [seq.params.top_p for seq in rows],
            [seq.params.top_k for seq in rows], [seq.generator for seq in rows], device,
        )
