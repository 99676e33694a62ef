"""Our own engine behind the provider interface: `local:default` (the bundled model),
`local:/path/to/checkpoint` (Meta or Hugging Face folder, or .gguf) or `local:tiny` (a preset with
seeded random weights; give it a tokenizer with `tokenizer=PATH` to use text).

The engine is synchronous and one model must never run in two threads at once, so every call holds
an `asyncio.Lock` and runs in a worker thread: the event loop stays free for other providers and
users while the model computes. A list of requests becomes one engine call per (kind, sampling
settings) group, so a benchmark's thousand prompts are decoded in batches, not one by one.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from llama2.api import Llama
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
from llama2.providers.threads import iterate_in_thread
from llama2.types import SamplingParams, StreamDelta

LOAD_OPTIONS = ("dtype", "device", "seed", "tokenizer")


def is_preset(target: str) -> bool:
    """Whether `Llama.from_pretrained(target)` builds a preset rather than loading files."""
    return target.lower() in PRESETS and not Path(target).expanduser().exists()


class LocalProvider(Provider):
    """A `Llama` answering through the provider interface. Everything is supported."""

    def __init__(self, llama: Llama, *, spec: str, fingerprint: str) -> None:
        self.llama = llama
        self.spec = spec
        self.fingerprint = fingerprint
        self.capabilities = Capabilities(chat=True, text_completion=True, loglikelihood=True, streaming=True)
        self._lock = asyncio.Lock()

    @classmethod
    def from_spec(cls, spec: str, target: str, **options: object) -> "LocalProvider":
        """Load `target`. Options: dtype, device, seed (presets' weights), tokenizer (a path)."""
        unknown = sorted(set(options) - set(LOAD_OPTIONS))
        if unknown:
            raise ProviderError(
                f"{spec}: unknown option(s) {', '.join(unknown)}; local models take {', '.join(LOAD_OPTIONS)}"
            )
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
        return cls(llama, spec=spec, fingerprint=f"{digest}-{dtype}")

    @property
    def identity(self) -> str:
        return f"{self.spec}@{self.fingerprint}"

    # ---- generation -------------------------------------------------------------------------

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[Completion]:
        if not requests:
            return []
        async with self._lock:
            return await asyncio.to_thread(self._generate_batched, list(requests))

    def _generate_batched(self, requests: list[GenerateRequest]) -> list[Completion]:
        groups: dict[tuple[bool, SamplingParams], list[int]] = {}
        for i, request in enumerate(map(self._fit_to_window, requests)):
            groups.setdefault((request.is_chat, request.params), []).append(i)
        completions: list[Completion | None] = [None] * len(requests)
        for (is_chat, params), indices in groups.items():
            prompts = [requests[i].prompt for i in indices]
            start = time.perf_counter()
            if is_chat:
                results = self.llama.chat(prompts, **asdict(params))
            else:
                results = self.llama.generate(prompts, **asdict(params))
            latency = time.perf_counter() - start  # of the engine call that answered the group
            for i, result in zip(indices, results):
                completions[i] = Completion(
                    result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens,
                    latency_s=latency, logprobs=result.logprobs,
                )
        return completions  # type: ignore[return-value]

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
        async with self._lock:
            async for delta in iterate_in_thread(lambda: self._deltas(request)):
                yield delta

    def _deltas(self, request: GenerateRequest) -> Iterator[StreamDelta]:
        request = self._fit_to_window(request)
        if request.is_chat:
            source = self.llama.stream_chat(request.prompt, **asdict(request.params))
        else:
            prompt = self._tokenizer().encode(request.prompt, bos=True, eos=False)
            source = self.llama.engine.stream([prompt], request.params)
        for delta in source:
            if delta.text or delta.finish_reason is not None:
                yield StreamDelta(0, delta.text, delta.tokens, delta.finish_reason)

    # ---- scoring ----------------------------------------------------------------------------

    async def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """lm-eval's `loglikelihood`: trailing context whitespace moved to the continuation, then
        `Llama.loglikelihood` encodes each pair whole with BOS and splits it where the context ends."""
        if not requests:
            return []
        pairs = [move_trailing_space(r.context, r.continuation) for r in requests]
        async with self._lock:
            scores = await asyncio.to_thread(self.llama.loglikelihood, pairs)
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
            async with self._lock:
                scores = await asyncio.to_thread(self.llama.engine.loglikelihood, pairs)
            for i, (logprob, _) in zip(owners, scores):
                totals[i] += logprob
        return totals

    def _tokenizer(self) -> Tokenizer:
        if self.llama.tokenizer is None:
            raise ConfigError(
                f"{self.spec} has no tokenizer; give it one (tokenizer=PATH) or use a checkpoint that has one"
            )
        return self.llama.tokenizer
