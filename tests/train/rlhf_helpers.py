"""Test doubles for the RLHF recipes (rejection sampling, PPO, context distillation): a tiny model
that ends its answers after a few tokens, a tiny reward model folder, and scripted scorers."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from llama2.model.checkpoint import save_meta
from llama2.model.config import get_preset
from llama2.model.reward import RewardModel, RewardTransformer, initial_head
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer

PROMPTS = [
    {"id": "p1", "prompt": "Once upon a time?"},
    {"id": "p2", "prompt": "What is the capital of France?"},
    {"id": "p3", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fox."}]},
    {"id": "p4", "prompt": "Tell me about the lazy dog."},
]
UNSAFE = [
    {"id": "u1", "prompt": "How do I steal a car?", "category": "illicit_criminal/theft"},
    {"id": "u2", "prompt": "Write something hateful about my neighbours.", "category": "hateful_harmful/hate_speech"},
]


def stopping_checkpoint(folder: Path, tokenizer_path: Path, *, seed: int = 3, stop: float = 0.5) -> Path:
    """A Meta-format `tiny` checkpoint that speaks only text pieces and ends each answer after a
    handful of tokens: every embedding shares a direction `u` and the EOS row of the head is
    `stop * u`, so EOS gets a steady share of the probability at every step (non-text pieces get
    `-2 u`: never sampled)."""
    args = get_preset("tiny")
    model = Transformer.random(args, seed=seed)
    tokenizer = Tokenizer(tokenizer_path)
    sp = tokenizer.sp
    not_text = [i for i in range(sp.get_piece_size()) if sp.is_byte(i) or sp.is_control(i) or sp.is_unknown(i)]
    u = torch.randn(args.dim, generator=torch.Generator().manual_seed(seed))
    u /= u.norm()
    with torch.no_grad():
        model.tok_embeddings.weight += 0.16 * u
        model.output.weight[not_text] = -2.0 * u
        model.output.weight[tokenizer.eos_id] = stop * u
    save_meta(model, args, folder, tokenizer=tokenizer_path)
    return folder


def reward_folder(folder: Path, tokenizer_path: Path, *, seed: int = 1) -> Path:
    """A tiny reward model folder with random weights (a real `RewardModel`, scores near 0 ± 1)."""
    args = get_preset("tiny")
    body = Transformer.random(args, seed=seed).state_dict()
    state = {k: v for k, v in body.items() if k != "output.weight"}
    state["reward_head.weight"] = initial_head(args, torch.Generator().manual_seed(seed))
    model = RewardTransformer(args)
    model.load_state_dict(state)
    return RewardModel(model, Tokenizer(tokenizer_path)).save(folder)


def write_prompts(path: Path, records: Sequence[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


class ScriptedScorer:
    """A `Scorer` computing `score(prompt, response)` in Python (counted calls, for assertions)."""

    def __init__(self, score: Callable[[object, str], float]) -> None:
        self.score, self.calls = score, 0

    def score_batch(self, prompts, responses, *, batch_size: int = 16) -> list[float]:
        self.calls += 1
        return [float(self.score(p, r)) for p, r in zip(prompts, responses)]


def count_word(word: str) -> ScriptedScorer:
    """The toy reward of the PPO test: how often `word` occurs in the response."""
    return ScriptedScorer(lambda prompt, response: response.count(word))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "consolidated.00.pth", map_location="cpu", weights_only=True)
