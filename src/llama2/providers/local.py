"""Our own engine behind the provider interface: `local:default` (the bundled model),
`local:/path/to/checkpoint` (Meta or Hugging Face folder, or .gguf) or `local:tiny` (a preset with
seeded random weights; give it a tokenizer with `tokenizer=PATH` to use text).

One model must never compute in two threads at once, and many callers (a benchmark's thousand
prompts, the server's concurrent users) should share its forward passes: every call goes to the
model's `Scheduler`, whose one worker thread runs continuous batching over all submitted requests
and the scoring jobs between steps. The event loop never blocks on the model; results hop back to
it with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

from llama2.api import Llama, drop_format_space
from llama2.errors import ConfigError, ProviderError
from llama2.model.chat_format import encode_dialog
from llama2.model.checkpoint import resolve_model_path
from llama2.model.config import PRESETS
from llama2.model.tokenizer import Tokenizer
from llama2.providers.base import (
    Capabilities,
    Completion,
    GenerateRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    Provider,
)
from llama2.providers.fingerprint import checkpoint_fingerprint, weights_fingerprint
from llama2.providers.scoring import move_trailing_space, rolling_windows
from llama2.generation.scheduler import LoopSink, Scheduler, Sink
from llama2.types import GenerationResult, StreamDelta, TokenLogprob

LOAD_OPTIONS = ("dtype", "device", "seed", "tokenizer", "cpu_kernels")
SCHEDULER_OPTIONS = ("max_batch_size", "max_queue")
DEFAULT_MAX_QUEUE = 4096  # a benchmark submits its chunk at once; the server sets its own bound


def _result_sink(loop: asyncio.AbstractEventLoop, future: asyncio.Future) -> Sink:
    """A scheduler sink that resolves `future` (on its loop) with the result or the error."""

    def settle(event: object) -> None:
        if future.done() or not isinstance(event, (GenerationResult, BaseException)):
            return
        if isinstance(event, BaseException):
            future.set_exception(event)
        else:
            future.set_result(event)

    return LoopSink(loop, settle)


def is_preset(target: str) -> bool:
    """Whether `Llama.from_pretrained(target)` builds a preset rather than loading files."""
    return target.lower() in PRESETS and not Path(target).expanduser().exists()


class LocalProvider(Provider):
    """A `Llama` answering through the provider interface. Everything is supported."""

    def __init__(
        self,
        llama: Llama,
        *,
        spec: str,
        fingerprint: str,
        max_batch_size: int | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        self.llama = llama
        self.spec = spec
        self.fingerprint = fingerprint
        self.capabilities = Capabilities(chat=True, text_completion=True, loglikelihood=True, streaming=True)
        self.scheduler = Scheduler(llama.engine, max_batch_size=max_batch_size, max_queue=max_queue)

    @classmethod
    def from_spec(cls, spec: str, target: str, **options: object) -> "LocalProvider":
        """Load `target`. Options: dtype, device, seed (presets' weights), tokenizer (a path),
        cpu_kernels (auto, native, onednn or torch: `model/cpu_kernels.py`), and
        the scheduler's max_batch_size (rows decoding together) and max_queue (requests waiting)."""
        unknown = sorted(set(options) - set(LOAD_OPTIONS) - set(SCHEDULER_OPTIONS))
        if unknown:
            raise ProviderError(
                f"{spec}: unknown option(s) {', '.join(unknown)}; local models take "
                f"{', '.join(LOAD_OPTIONS + SCHEDULER_OPTIONS)}"
            )
        scheduling = {name: int(options.pop(name)) for name in SCHEDULER_OPTIONS if name in options}  # type: ignore[call-overload]
        tokenizer_path = options.pop("tokenizer", None)
        llama = Llama.from_pretrained(target, **options)  # type: ignore[arg-type]
        if tokenizer_path is not None:
            llama = Llama(llama.model, Tokenizer(str(tokenizer_path)), name=target)
        if is_preset(target):
            digest = weights_fingerprint(llama.model, llama.tokenizer)
        else:
            digest = checkpoint_fingerprint(resolve_model_path(target))
            if tokenizer_path is not None:
                digest += hashlib.blake2b(llama.tokenizer.model_proto, digest_size=4).hexdigest()
        dtype = str(next(llama.model.parameters()).dtype).removeprefix("torch.")
        return cls(llama, spec=spec, fingerprint=f"{digest}-{dtype}", **scheduling)

    @property
    def identity(self) -> str:
        return f"{self.spec}@{self.fingerprint}"

    # ---- generation -------------------------------------------------------------------------

    @property
    def context_window(self) -> int:
        return self.llama.args.max_seq_len

    def prompt_ids(self, request: GenerateRequest) -> list[int]:
        """The token ids the model sees: the Llama 2 chat format for a dialog, BOS + text otherwise."""
        if request.is_chat:
            return encode_dialog(self._tokenizer(), request.prompt)
        return self._tokenizer().encode(request.prompt, bos=True, eos=False)

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[Completion]:
        """Submit every request to the scheduler at once (all or none) and wait for all of them."""
        if not requests:
            return []
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in requests]
        start = time.perf_counter()
        items = []
        for request, future in zip(map(self._fit_to_window, requests), futures):
            items.append((self.prompt_ids(request), request.params, _result_sink(loop, future)))
        tickets = self.scheduler.submit_many(items)
        try:
            results = await asyncio.gather(*futures)
        finally:
            for ticket in tickets:
                ticket.cancel()  # a no-op for finished ones; frees the rows if the caller gave up
        completions = []
        for request, result in zip(requests, results):
            text = drop_format_space(result.text) if request.is_chat else result.text
            completions.append(Completion(
                text, result.finish_reason, result.prompt_tokens, result.completion_tokens,
                latency_s=time.perf_counter() - start, logprobs=result.logprobs,
                token_logprobs=self._token_logprobs(result.tokens, result.logprobs, result.top_logprobs),
            ))
        return completions

    def _fit_to_window(self, request: GenerateRequest) -> GenerateRequest:
        """`max_new_tokens` is a ceiling, as in OpenAI's API when it is left out and in lm-eval's
        `max_gen_toks`: a benchmark asking for 1024 new tokens of a 512-token model gets what fits
        and finish_reason "length". A prompt that does not fit stays an error (never cut)."""
        wanted = request.params.max_new_tokens
        if wanted is None:
            return request
        if request.is_chat:
            prompt_len = len(encode_dialog(self._tokenizer(), request.prompt))
        else:
            prompt_len = len(self._tokenizer().encode(request.prompt, bos=True, eos=False))
        room = self.llama.args.max_seq_len - prompt_len
        if 0 < room < wanted:
            return replace(request, params=replace(request.params, max_new_tokens=room))
        return request

    async def stream(self, request: GenerateRequest) -> AsyncIterator[StreamDelta]:
        """Deltas as the scheduler produces them. Leaving the loop early (a client that went away)
        cancels the request, which frees its row at the next step."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        request = self._fit_to_window(request)
        ticket = self.scheduler.submit(
            self.prompt_ids(request), request.params, LoopSink(loop, queue.put_nowait)
        )
        started = not request.is_chat
        try:
            while True:
                event = await queue.get()
                if isinstance(event, BaseException):
                    raise event
                if isinstance(event, GenerationResult):
                    return
                if not started and event.text:
                    event.text, started = drop_format_space(event.text), True
                event.index = 0
                if event.tokens and (event.logprobs is not None or event.top_logprobs is not None):
                    event.token_logprobs = self._token_logprobs(event.tokens, event.logprobs, event.top_logprobs)
                yield event
        finally:
            ticket.cancel()

    def _token_logprobs(
        self, ids: Sequence[int], logprobs: Sequence[float] | None, top: Sequence[dict[int, float]] | None
    ) -> list[TokenLogprob] | None:
        """The engine's per-token log-probabilities with each token's text, for OpenAI's logprobs."""
        if logprobs is None and top is None:
            return None
        tokenizer = self._tokenizer()

        def shown(token_id: int) -> tuple[str, bytes]:
            raw = tokenizer.token_bytes(token_id)
            return raw.decode("utf-8", errors="backslashreplace"), raw

        out = []
        for i, token_id in enumerate(ids):
            alternatives = top[i] if top is not None else {}
            logprob = logprobs[i] if logprobs is not None else alternatives.get(token_id, float("nan"))
            out.append(TokenLogprob(
                *shown(token_id), logprob, tuple((*shown(t), value) for t, value in alternatives.items())
            ))
        return out

    # ---- scoring ----------------------------------------------------------------------------

    async def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """lm-eval's `loglikelihood`: trailing context whitespace moved to the continuation, then
        `Llama.loglikelihood` encodes each pair whole with BOS and splits it where the context ends."""
        if not requests:
            return []
        pairs = [move_trailing_space(r.context, r.continuation) for r in requests]
        scores = await asyncio.wrap_future(self.scheduler.call(lambda: self.llama.loglikelihood(pairs)))
        return [Loglikelihood(logprob, greedy) for logprob, greedy in scores]

    async def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        """lm-eval's `loglikelihood_rolling`: each text scored in disjoint windows of the context
        length, the first conditioned on BOS (see `scoring.rolling_windows`)."""
        tokenizer = self._tokenizer()
        owners, pairs = [], []
        for i, text in enumerate(texts):
            tokens = tokenizer.encode(text, bos=False, eos=False)
            for window in rolling_windows(tokens, tokenizer.bos_id, self.llama.args.max_seq_len):
                owners.append(i)
                pairs.append(window)
        totals = [0.0] * len(texts)
        if pairs:
            scores = await asyncio.wrap_future(self.scheduler.call(lambda: self.llama.engine.loglikelihood(pairs)))
            for i, (logprob, _) in zip(owners, scores):
                totals[i] += logprob
        return totals

    async def aclose(self) -> None:
        self.scheduler.close()

    def _tokenizer(self) -> Tokenizer:
        if self.llama.tokenizer is None:
            raise ConfigError(
                f"{self.spec} has no tokenizer; give it one (tokenizer=PATH) or use a checkpoint that has one"
            )
        return self.llama.tokenizer
