"""A scripted provider: the test double for everything above the provider layer.

It answers from functions the test supplies, records every call, and can be made to look like a
chat-only API (no completion, no log-likelihoods) so both evaluation modes are testable without a
model or a network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llama2.providers.base import (
    Capabilities,
    Completion,
    GenerateRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    Provider,
)


def _echo_last_message(request: GenerateRequest) -> str:
    return request.prompt if isinstance(request.prompt, str) else request.prompt[-1]["content"]


def _length_score(request: LoglikelihoodRequest) -> float:
    return -float(len(request.continuation))


class FakeProvider(Provider):
    """`answer(request) -> text` and `score(request) -> logprob` script the model; `calls` lists
    every request received, in order, so tests can check what was (not) asked again."""

    def __init__(
        self,
        spec: str = "fake:scripted",
        *,
        answer: Callable[[GenerateRequest], str] = _echo_last_message,
        score: Callable[[LoglikelihoodRequest], float] = _length_score,
        capabilities: Capabilities = Capabilities(loglikelihood=True),
    ) -> None:
        self.spec = spec
        self.capabilities = capabilities
        self._answer = answer
        self._score = score
        self.calls: list[GenerateRequest | LoglikelihoodRequest] = []

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[Completion]:
        self.calls.extend(requests)
        completions = []
        for request in requests:
            text = self._answer(request)
            prompt = request.prompt if isinstance(request.prompt, str) else " ".join(m["content"] for m in request.prompt)
            completions.append(Completion(text, "stop", len(prompt.split()), len(text.split())))
        return completions

    async def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        if not self.capabilities.loglikelihood:
            return await super().loglikelihood(requests)
        self.calls.extend(requests)
        return [Loglikelihood(self._score(r), is_greedy=False) for r in requests]
