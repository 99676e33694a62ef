"""The reward model (Llama 2 §3.2.2; LLAMA2.md §4.2): the transformer with its next-token head
replaced by a scalar head, which reads the hidden state of the last token of prompt + response.

`RewardTransformer` is the module that trains (`llama2 train reward`): the body keeps Meta's
names (`tok_embeddings`, `layers.N...`, `norm`) and `output` gives way to `reward_head`, a bias-free
`(1, dim)` projection (the shape of Hugging Face's `LlamaForSequenceClassification.score`). The
sequence is the chat format's training encoding of the dialog plus the response — `<s>[INST] ...
[/INST] {response} </s>` — so the reward is read at the EOS that closes the response; the body
sees exactly what the chat model it starts from saw ("the RM knows what the chat model knows").

`RewardModel` is the public object: `from_pretrained(path)`, `score(prompt, response)`,
`score_batch(prompts, responses)`, `save(path)`. A prompt is a string (one user turn) or a dialog
ending with a user turn.

Folder format (`REWARD_FILE` marks it; every checkpoint of `llama2 train reward` is one, and so is
its OUTPUT_DIR/model):

    reward_model.json    {"format": "llama2-reward-model/1", ...}: how the scores were trained
    params.json          the transformer's shape, as in a Meta checkpoint
    tokenizer.model
    consolidated.00.pth  the body under Meta's names (no `output.weight`) and `reward_head.weight`
                         (1, dim): a plain `torch.save` dict of tensors
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llama2.atomic import atomic_folder
from llama2.errors import CheckpointError, DataError, DialogError, TokenizerError
from llama2.model.chat_format import encode_dialog, encode_dialog_for_training
from llama2.model.checkpoint import as_dtype, find_tokenizer, load_state, read_model_args
from llama2.model.checkpoint.common import check_keys, checked_tokenizer, describe_args, read_failure, read_json_object
from llama2.model.config import ModelArgs
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer
from llama2.types import Dialog

__all__ = [
    "REWARD_FILE",
    "WEIGHTS_FILE",
    "FORMAT",
    "HEAD",
    "PAD_ID",
    "Prompt",
    "RewardTransformer",
    "RewardModel",
    "as_dialog",
    "encode_response",
    "last_token_rewards",
    "pad_right",
    "initial_head",
    "initial_reward_state",
    "is_reward_model",
    "save_reward_model",
    "write_reward_files",
    "expected_reward_shapes",
]

REWARD_FILE = "reward_model.json"
WEIGHTS_FILE = "consolidated.00.pth"
PARAMS_FILE = "params.json"
FORMAT = "llama2-reward-model/1"
HEAD = "reward_head.weight"
# Right padding is never attended to by a real token (attention is causal and padding comes last),
# so any id works.
PAD_ID = 0
Prompt = str | Dialog


class RewardTransformer(Transformer):
    """`Transformer` whose `output` head is replaced by `reward_head` `(1, dim)`.

    `forward(tokens)` gives a score per position `(B, T)` in fp32; a sequence's reward is the score
    at its last token (`last_token_rewards`). Positions and masks work as in `Transformer`.
    """

    def __init__(self, args: ModelArgs) -> None:
        super().__init__(args)
        del self.output
        self.reward_head = nn.Linear(args.dim, 1, bias=False)

    def forward(
        self, tokens: torch.Tensor, *, positions: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.reward_head(self.hidden_states(tokens, positions=positions, mask=mask)).squeeze(-1).float()


def initial_head(args: ModelArgs, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh `reward_head.weight (1, dim)` from N(0, 1/(dim+1)), the scalar head init of OpenAI's
    lm-human-preferences: with RMS-normed hidden states of norm ~sqrt(dim), initial rewards are of
    order 1."""
    return torch.empty(1, args.dim).normal_(0.0, 1.0 / math.sqrt(args.dim + 1), generator=generator)


def last_token_rewards(model: nn.Module, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Rewards `(B,)` of right-padded rows `tokens (B, T)` of `lengths (B,)` real tokens each."""
    scores = model(tokens)  # (B, T)
    return scores.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)


def pad_right(rows: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ids as `(tokens (B, T), lengths (B,))`, padded at the end to the longest."""
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    tokens = torch.full((len(rows), int(lengths.max())), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return tokens.to(device), lengths.to(device)


def as_dialog(prompt: Prompt) -> Dialog:
    """A prompt as a dialog: a string is one user turn; a dialog is used as given."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def encode_response(tokenizer: Tokenizer, prompt: Prompt, response: str) -> tuple[list[int], int]:
    """`(ids, prompt_len)`: the chat-format ids of the prompt dialog answered by `response`, ending
    with the response's EOS, and how many of them are the prompt (`encode_dialog(prompt)`, which
    is their prefix), so `ids[prompt_len:]` are exactly the response's tokens.

    Earlier assistant turns of the prompt are prompt: only the final response is "the response"
    (the reward model's input, DPO's log-probabilities).
    """
    dialog = as_dialog(prompt)
    ids, _ = encode_dialog_for_training(tokenizer, [*dialog, {"role": "assistant", "content": response}])
    prompt_ids = encode_dialog(tokenizer, dialog)
    if ids[: len(prompt_ids)] != prompt_ids:  # holds for Llama-style vocabularies (see chat_format)
        raise TokenizerError("the tokenizer merges the prompt's end with the response; use a Llama-style SentencePiece tokenizer")
    return ids, len(prompt_ids)


class RewardModel:
    """A trained reward model with its tokenizer, ready to score responses.

    `info` is the folder's `reward_model.json` (how it was trained).
    """

    def __init__(self, model: RewardTransformer, tokenizer: Tokenizer, *, info: Mapping[str, Any] | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.info = dict(info or {})

    @property
    def args(self) -> ModelArgs:
        return self.model.args

    @property
    def device(self) -> torch.device:
        return self.model.reward_head.weight.device

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, dtype: str | torch.dtype | None = None, device: str | torch.device | None = None
    ) -> "RewardModel":
        """Load a reward model folder (see the module docstring); `dtype` defaults to the file's,
        `device` to CUDA when there is one, else the CPU."""
        folder = Path(path).expanduser()
        info = _read_info(folder)
        args = read_model_args(folder)
        tokenizer_path = find_tokenizer(folder)
        if tokenizer_path is None:
            raise CheckpointError(f"{folder}: no tokenizer.model in the reward model folder; copy the chat model's there")
        state = _read_weights(folder / WEIGHTS_FILE, args)
        target = as_dtype(dtype) or state["tok_embeddings.weight"].dtype
        state = {name: tensor.to(target) for name, tensor in state.items()}
        with torch.device("meta"):
            model = RewardTransformer(args)
        model.load_state_dict(state, assign=True, strict=True)
        device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), Tokenizer(tokenizer_path), info=info)

    def score(self, prompt: Prompt, response: str) -> float:
        """The reward of `response` to `prompt` (a string or a dialog ending with a user turn)."""
        return self.score_batch([prompt], [response])[0]

    @torch.inference_mode()
    def score_batch(self, prompts: Sequence[Prompt], responses: Sequence[str], *, batch_size: int = 16) -> list[float]:
        """Rewards of `responses[i]` to `prompts[i]`, in order; run `batch_size` at a time, sorted by
        length so rows of a batch are padded little. Right padding leaves every reward as it is alone."""
        if len(prompts) != len(responses):
            raise DataError(f"{len(prompts)} prompts but {len(responses)} responses; give one response per prompt")
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        encoded = [self._encode(i, prompt, response) for i, (prompt, response) in enumerate(zip(prompts, responses))]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        rewards = [0.0] * len(encoded)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            tokens, lengths = pad_right([encoded[i] for i in chunk], self.device)
            for i, reward in zip(chunk, last_token_rewards(self.model, tokens, lengths).tolist()):
                rewards[i] = reward
        return rewards

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the reward model folder (atomically)."""
        return save_reward_model(self.model, self.args, path, tokenizer=self.tokenizer, info=self.info, overwrite=overwrite)

    def _encode(self, index: int, prompt: Prompt, response: str) -> list[int]:
        if not isinstance(response, str):
            raise DataError(f"response {index} must be a string, got {type(response).__name__}")
        try:
            ids, _ = encode_response(self.tokenizer, prompt, response)
        except DialogError as exc:
            raise DataError(f"prompt {index}: {exc}") from exc
        if len(ids) > self.args.max_seq_len:
            raise DataError(f"prompt {index} with its response is {len(ids)} tokens, more than the model's max_seq_len "
                            f"{self.args.max_seq_len}; shorten the dialog or the response")
        return ids


def is_reward_model(path: str | os.PathLike) -> bool:
    """Whether `path` is a reward model folder (it has `reward_model.json`)."""
    return (Path(path).expanduser() / REWARD_FILE).is_file()


def initial_reward_state(
    path: str | os.PathLike, args: ModelArgs, *, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """fp32 weights to start a reward model from: a reward model folder's own, or a language model
    checkpoint's (Meta, HF or GGUF) body with a freshly initialised head (`initial_head`)."""
    if is_reward_model(path):
        return {name: tensor.float() for name, tensor in _read_weights(Path(path) / WEIGHTS_FILE, args).items()}
    _, state = load_state(path, args)
    body = {name: tensor.float() for name, tensor in state.items() if name != "output.weight"}
    return {**body, HEAD: initial_head(args, generator)}


def save_reward_model(
    model_or_state: nn.Module | Mapping[str, torch.Tensor],
    args: ModelArgs,
    folder: str | os.PathLike,
    *,
    tokenizer: Tokenizer | str | os.PathLike,
    info: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a reward model folder (atomically): the weights checked against `args`, params.json,
    the tokenizer and reward_model.json (`info` added to its `format`)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else dict(model_or_state)
    _check_weights(state, args, "reward model to save")
    tok = checked_tokenizer(tokenizer, args)
    folder = Path(folder).expanduser()
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        write_reward_files(tmp, args, tok, info)
        torch.save({name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}, tmp / WEIGHTS_FILE)
    return folder


def write_reward_files(folder: Path, args: ModelArgs, tokenizer: Tokenizer | Path, info: Mapping[str, Any] | None) -> None:
    """Everything of a reward model folder but its weights (training checkpoints add those)."""
    (folder / PARAMS_FILE).write_text(json.dumps(args.to_params(), indent=2) + "\n")
    if isinstance(tokenizer, Tokenizer):
        tokenizer.save(folder / "tokenizer.model")
    else:
        (folder / "tokenizer.model").write_bytes(Path(tokenizer).read_bytes())
    record = {"format": FORMAT, "reads": "the last token (EOS) of the chat-format prompt + response", **(info or {})}
    (folder / REWARD_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")


def expected_reward_shapes(args: ModelArgs) -> dict[str, torch.Size]:
    with torch.device("meta"):
        model = RewardTransformer(args)
    return {name: tensor.shape for name, tensor in model.state_dict().items()}


def _read_info(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such reward model folder")
    if not (folder / REWARD_FILE).is_file():
        raise CheckpointError(f"{folder}: not a reward model folder (no {REWARD_FILE}); train one with `llama2 train reward`, "
                              "whose OUTPUT_DIR/model and checkpoints are such folders")
    info = read_json_object(folder / REWARD_FILE, missing="")
    if info.get("format") != FORMAT:
        raise CheckpointError(f"{folder / REWARD_FILE}: format {info.get('format')!r} is not {FORMAT!r}")
    return info


def _read_weights(path: Path, args: ModelArgs) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; a reward model folder holds its weights there") from None
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ... on bad files
        raise read_failure(path, error) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors")
    if any("lora_" in name for name in state):
        raise CheckpointError(f"{path}: holds LoRA adapters, not merged weights; load the run's OUTPUT_DIR/model, "
                              "where they are merged in")
    _check_weights(state, args, path)
    return state


def _check_weights(state: Mapping[str, torch.Tensor], args: ModelArgs, source: Path | str) -> None:
    shapes = expected_reward_shapes(args)
    check_keys(state.keys(), shapes.keys(), source)
    for name, shape in shapes.items():
        if state[name].shape != shape:
            raise CheckpointError(f"{source}: tensor {name} has shape {list(state[name].shape)}, expected {list(shape)} "
                                  f"for {describe_args(args)}")
