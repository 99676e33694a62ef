"""Scripted models and judges for the pairwise tests: answers of known lengths, and judges that read
the two replies out of the default template and decide by a rule (by length, by position, by a
favourite model's marker), or answer nonsense on cue."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

import llama2.providers.registry as registry
from llama2.providers.base import GenerateRequest
from llama2.providers.fake import FakeProvider

ANSWERS = {"fake:short": "ok", "fake:long": "a much longer answer, with several words in it",
           "fake:mid": "a medium answer"}


def replies(request: GenerateRequest) -> tuple[str, str]:
    """Reply A and reply B as the default judge template shows them."""
    text = request.prompt if isinstance(request.prompt, str) else request.prompt[-1]["content"]
    found = [re.search(rf"\[Reply {x}\]\n(.*?)\n\[End of reply {x}\]", text, re.S) for x in "AB"]
    assert all(found), "not a judge prompt of the default template"
    return found[0].group(1), found[1].group(1)  # type: ignore[union-attr]


def prefers_longer(request: GenerateRequest) -> str:
    """Likert: 2 (A better) / 6 (B better) for the longer reply, 4 when equally long."""
    a, b = replies(request)
    return "Reasoning...\nVerdict: [[2]]" if len(a) > len(b) else "Verdict: [[6]]" if len(b) > len(a) else "Verdict: [[4]]"


def always_first(request: GenerateRequest) -> str:
    """A judge with pure position bias: A is always much better."""
    return "A reads better.\nVerdict: [[1]]"


def likert_for(favourite: str, score_when_first: int) -> Callable[[GenerateRequest], str]:
    """Scores `score_when_first` when the favourite's answer is A and the mirrored score (8 - s)
    when it is B: a consistent judge."""
    def answer(request: GenerateRequest) -> str:
        a, _ = replies(request)
        return f"Verdict: [[{score_when_first if a == ANSWERS[favourite] else 8 - score_when_first}]]"
    return answer


def wtl_longer(request: GenerateRequest) -> str:
    a, b = replies(request)
    return "Verdict: [[A]]" if len(a) > len(b) else "Verdict: [[B]]" if len(b) > len(a) else "Verdict: [[tie]]"


def muddled_on(marker: str, inner: Callable[[GenerateRequest], str]) -> Callable[[GenerateRequest], str]:
    """`inner`'s verdict, except nonsense for prompts whose conversation contains `marker`."""
    def answer(request: GenerateRequest) -> str:
        return "I cannot decide." if marker in request.prompt[-1]["content"] else inner(request)
    return answer


class Killed(Exception):
    """Stands for the process being killed mid-run (any error the runner does not absorb)."""


class InterruptingJudge(FakeProvider):
    """Answers `after` calls, then raises `Killed`: the run stops there, as a killed process would."""

    def __init__(self, spec: str, answer, after: int) -> None:
        super().__init__(spec, answer=answer)
        self.after = after

    async def generate(self, requests):
        if len(self.calls) >= self.after:
            raise Killed
        return await super().generate(requests)


def write_prompt_set(path: Path, n: int = 4, *, multi_turn: bool = True) -> Path:
    """`n` single-turn prompts in two categories, plus one multi-turn one."""
    rows = [{"id": f"p{i}", "prompt": f"question number {i}?", "category": "alpha" if i % 2 else "beta"}
            for i in range(n)]
    if multi_turn:
        rows.append({"id": "m0", "category": "alpha", "messages": [
            {"role": "user", "content": "first turn"}, {"role": "assistant", "content": "an earlier reply"},
            {"role": "user", "content": "second turn"}]})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def providers(monkeypatch):
    """`providers["fake:x"] = provider` makes `load_provider("fake:x")` return it; fake:short,
    fake:long and fake:mid are there already (fixed answers). Other specs go to the real registry."""
    made: dict[str, FakeProvider] = {spec: FakeProvider(spec, answer=lambda r, text=text: text)
                                     for spec, text in ANSWERS.items()}
    real_load, real_canonical = registry.load_provider, registry.canonical_spec
    monkeypatch.setattr(registry, "load_provider",
                        lambda spec, **kw: made[spec] if spec.startswith("fake:") else real_load(spec, **kw))
    monkeypatch.setattr(registry, "canonical_spec",
                        lambda spec: spec if spec.startswith("fake:") else real_canonical(spec))
    return made
