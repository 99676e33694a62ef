"""The vLLM provider's own logic — prompt encoding, sampling settings, reading `prompt_logprobs` —
run against a stand-in `vllm` module whose `LLM` answers with our engine in vLLM's output shapes
(vLLM itself needs a GPU). Same weights, so every answer must equal the local provider's."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace

import pytest
import torch

from llama2.api import Llama
from llama2.errors import ProviderError
from llama2.providers.base import GenerateRequest, LoglikelihoodRequest
from llama2.providers.registry import load_provider
from llama2.providers.scoring import rolling_windows
from llama2.types import SamplingParams


@dataclass
class Logprob:
    """vLLM's `Logprob`: the value and the token's rank in the vocabulary (1 = argmax)."""

    logprob: float
    rank: int | None = None


class FakeSamplingParams:
    def __init__(self, **fields) -> None:
        self.fields = fields


class FakeLLM:
    """`vllm.LLM` over our engine: `generate(prompts, params, use_tqdm=False)` -> RequestOutputs."""

    def __init__(self, model: str, **options) -> None:
        self.llama = Llama.from_pretrained(model, device="cpu")
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=self.llama.args.max_seq_len))
        self.options = options

    def generate(self, prompts, params, use_tqdm=True):
        params = params if isinstance(params, list) else [params] * len(prompts)
        return [self._one(p["prompt_token_ids"], sp.fields) for p, sp in zip(prompts, params)]

    def _one(self, ids, fields):
        if fields.get("prompt_logprobs") is not None:
            return SimpleNamespace(prompt_token_ids=ids, prompt_logprobs=self._prompt_logprobs(ids))
        ours = SamplingParams(
            max_new_tokens=fields["max_tokens"], temperature=fields["temperature"], top_p=fields["top_p"],
            top_k=max(fields["top_k"], 0), seed=fields["seed"], stop=tuple(fields["stop"]),
            logprobs=fields["logprobs"] is not None,
        )
        [result] = self.llama.engine.generate([ids], ours)
        steps = [{t: Logprob(lp)} for t, lp in zip(result.tokens, result.logprobs)] if result.logprobs else None
        sample = SimpleNamespace(text=result.text, token_ids=result.tokens, finish_reason=result.finish_reason,
                                 logprobs=steps)
        return SimpleNamespace(prompt_token_ids=ids, outputs=[sample])

    @torch.no_grad()
    def _prompt_logprobs(self, ids):
        log_probs = torch.log_softmax(self.llama.model(torch.tensor([ids]))[0].float(), -1)
        steps = [None]
        for position, token in enumerate(ids[1:]):
            row = log_probs[position]
            best = int(row.argmax())
            rank = int((row > row[token]).sum()) + 1
            steps.append({token: Logprob(float(row[token]), rank), best: Logprob(float(row[best]), 1)})
        return steps


@pytest.fixture
def fake_vllm(monkeypatch):
    module = ModuleType("vllm")
    module.LLM, module.SamplingParams, module.TokensPrompt = FakeLLM, FakeSamplingParams, dict
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


@pytest.fixture(scope="module")
def hf_checkpoint(tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "tiny-hf"
    Llama.from_pretrained(tiny_checkpoint, device="cpu").save(folder, format="hf")
    return folder


@pytest.fixture(scope="module")
def local(tiny_checkpoint):
    return load_provider(f"local:{tiny_checkpoint}", device="cpu")


def test_generation_equals_our_engine(fake_vllm, hf_checkpoint, local):
    provider = load_provider(f"vllm:{hf_checkpoint}", gpu_memory_utilization=0.5)
    assert provider.llm.options == {"gpu_memory_utilization": 0.5}
    params = SamplingParams(max_new_tokens=10, temperature=0.0, stop=("\n",), logprobs=True)
    requests = [
        GenerateRequest("Once upon a time", params),
        GenerateRequest([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}], params),
    ]
    theirs = asyncio.run(provider.generate(requests))
    ours = asyncio.run(local.generate(requests))
    assert [(c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) for c in theirs] == [
        (c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) for c in ours
    ]
    assert theirs[0].logprobs == pytest.approx(ours[0].logprobs, abs=1e-4)


def test_scores_equal_our_engine(fake_vllm, hf_checkpoint, local):
    provider = load_provider(f"vllm:{hf_checkpoint}")
    request = GenerateRequest("The quick", SamplingParams(max_new_tokens=3, temperature=0))
    [greedy] = asyncio.run(local.generate([request]))
    requests = [
        LoglikelihoodRequest("Answer: ", "A"),
        LoglikelihoodRequest("The quick", greedy.text),
        LoglikelihoodRequest("", "Once upon a time"),
    ]
    theirs = asyncio.run(provider.loglikelihood(requests))
    ours = asyncio.run(local.loglikelihood(requests))
    assert [t.logprob for t in theirs] == pytest.approx([o.logprob for o in ours], abs=1e-4)
    assert [t.is_greedy for t in theirs] == [o.is_greedy for o in ours] == [False, True, False]
    assert provider.identity.startswith(f"vllm:{hf_checkpoint}@")


def test_rolling_windows_leave_room_for_the_generated_token(fake_vllm, hf_checkpoint, local):
    provider = load_provider(f"vllm:{hf_checkpoint}")
    text = " ".join(["Llama 2 is a family of pretrained and fine-tuned large language models."] * 30)
    tokens = local.llama.tokenizer.encode(text, bos=False, eos=False)
    windows = list(rolling_windows(tokens, 1, local.llama.args.max_seq_len - 2))
    assert len(windows) >= 3
    expected = sum(lp for lp, _ in local.llama.engine.loglikelihood(windows))
    theirs, empty = asyncio.run(provider.loglikelihood_rolling([text, ""]))
    assert (theirs, empty) == (pytest.approx(expected, rel=1e-5), 0.0)


def test_meta_folders_are_refused_with_the_conversion_to_run(fake_vllm, tiny_checkpoint):
    with pytest.raises(ProviderError, match="--to hf"):
        load_provider(f"vllm:{tiny_checkpoint}")
