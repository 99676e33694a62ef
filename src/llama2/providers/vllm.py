"""vLLM in this process, for GPU users: `vllm:/path/to/hf-folder` (optional extra `llama2[gpu]`).

Prompts are token ids made by our tokenizer and chat format (`model/chat_format.py`), so a dialog
reaches vLLM exactly as it reaches our engine; vLLM's paged, continuously batched decoding then does
the work. Log-likelihoods use `prompt_logprobs`: the log-probability vLLM assigns to each prompt token
given the ones before it, plus the top-1 alternative for the greedy check (lm-eval's vLLM method).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama2.errors import ProviderError
from llama2.model.chat_format import encode_dialog
from llama2.model.checkpoint import detect_format, find_tokenizer, resolve_model_path
from llama2.model.tokenizer import Tokenizer
from llama2.providers.base import (
    Capabilities,
    Completion,
    GenerateRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    Provider,
)
from llama2.providers.fingerprint import checkpoint_fingerprint
from llama2.providers.remote import import_sdk, normalize_finish_reason
from llama2.providers.scoring import encode_pair, move_trailing_space, rolling_windows
from llama2.types import SamplingParams


class VLLMProvider(Provider):
    """A Hugging Face checkpoint served by `vllm.LLM`. `options` go to `vllm.LLM` as they are
    (dtype, tensor_parallel_size, gpu_memory_utilization, max_model_len, seed, ...)."""

    def __init__(self, spec: str, path: Path, **options: Any) -> None:
        self.vllm = import_sdk("vllm", "gpu")
        if detect_format(path) != "hf":
            raise ProviderError(
                f"{spec}: vLLM loads Hugging Face folders; convert first: llama2 convert {path} OUT --to hf"
            )
        tokenizer_path = find_tokenizer(path)
        if tokenizer_path is None:
            raise ProviderError(f"{spec}: {path} has no tokenizer.model; copy the model's tokenizer.model into it")
        self.spec = spec
        self.capabilities = Capabilities(chat=True, text_completion=True, loglikelihood=True, streaming=False)
        self.tokenizer = Tokenizer(tokenizer_path)
        self.fingerprint = checkpoint_fingerprint(path)
        self.llm = self.vllm.LLM(model=str(path), **options)
        self._lock = asyncio.Lock()

    @classmethod
    def from_spec(cls, spec: str, target: str, **options: Any) -> "VLLMProvider":
        import_sdk("vllm", "gpu")  # before the path: without vLLM, installing it is the first fix
        return cls(spec, resolve_model_path(target), **options)

    @property
    def identity(self) -> str:
        return f"{self.spec}@{self.fingerprint}"

    @property
    def max_model_len(self) -> int:
        return int(self.llm.llm_engine.model_config.max_model_len)

    async def _run(self, prompts: list[list[int]], params: Any) -> list[Any]:
        """One `LLM.generate` over token-id prompts, in a worker thread, one call at a time."""
        batch = [self.vllm.TokensPrompt(prompt_token_ids=p) for p in prompts]
        async with self._lock:
            return await asyncio.to_thread(self.llm.generate, batch, params, use_tqdm=False)

    def sampling(self, params: SamplingParams) -> Any:
        wants_logprobs = params.logprobs or params.top_logprobs
        return self.vllm.SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k or -1,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop),
            seed=params.seed,
            logprobs=params.top_logprobs if wants_logprobs else None,
        )

    def encode(self, request: GenerateRequest) -> list[int]:
        """Prompt token ids exactly as our engine would see them (BOS; Meta's chat format)."""
        if request.is_chat:
            return encode_dialog(self.tokenizer, request.prompt)
        return self.tokenizer.encode(request.prompt, bos=True, eos=False)

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[Completion]:
        if not requests:
            return []
        prompts = [self.encode(r) for r in requests]
        outputs = await self._run(prompts, [self.sampling(r.params) for r in requests])
        completions = []
        for request, output in zip(requests, outputs):
            sample = output.outputs[0]
            text = sample.text
            if request.is_chat and text.startswith(" "):  # the space of "[/INST] answer" is the format's
                text = text[1:]
            logprobs = None
            if request.params.logprobs and sample.logprobs:
                logprobs = [_value(step[token]) for step, token in zip(sample.logprobs, sample.token_ids)]
            completions.append(
                Completion(text, normalize_finish_reason(sample.finish_reason), len(output.prompt_token_ids),
                           len(sample.token_ids), logprobs=logprobs)
            )
        return completions

    async def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        """lm-eval's split (see `scoring`), scored by vLLM's prompt log-probabilities."""
        pairs = [encode_pair(self.tokenizer, *move_trailing_space(r.context, r.continuation)) for r in requests]
        for (context, continuation), request in zip(pairs, requests):
            if not continuation:
                raise ProviderError(f"{self.spec}: continuation {request.continuation!r} encodes to no tokens")
            needed = len(context) + len(continuation) + 1  # vLLM also generates one token
            if needed > self.max_model_len:
                raise ProviderError(f"{self.spec}: request needs {needed} tokens; the model holds {self.max_model_len}")
        return await self._score(pairs)

    async def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        owners, pairs = [], []
        for i, text in enumerate(texts):
            tokens = self.tokenizer.encode(text, bos=False, eos=False)
            # A window's prompt is its context and all its targets (at most max_len + 1 tokens), and
            # vLLM generates one token after it: max_len = max_model_len - 2, as lm-eval's vLLM model.
            for window in rolling_windows(tokens, self.tokenizer.bos_id, self.max_model_len - 2):
                owners.append(i)
                pairs.append(window)
        totals = [0.0] * len(texts)
        for i, score in zip(owners, await self._score(pairs) if pairs else []):
            totals[i] += score.logprob
        return totals

    async def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[Loglikelihood]:
        params = self.vllm.SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=1, detokenize=False)
        outputs = await self._run([c + x for c, x in pairs], params)
        scores = []
        for (context, continuation), output in zip(pairs, outputs):
            steps = output.prompt_logprobs[len(context):]  # entry i: log-probs at prompt position i
            values = [{token: _value(lp) for token, lp in step.items()} for step in steps]
            total = sum(v[token] for v, token in zip(values, continuation))
            greedy = all(v[token] >= max(v.values()) for v, token in zip(values, continuation))
            scores.append(Loglikelihood(total, greedy))
        return scores


def _value(logprob: Any) -> float:
    """vLLM's `Logprob` object (or a bare float in old versions) -> float."""
    return float(getattr(logprob, "logprob", logprob))
