"""`Llama`: the public entry point — a model, its tokenizer and the engine, loaded by name or path."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from llama2.errors import ConfigError
from llama2.generation.engine import Engine
from llama2.model.chat_format import encode_dialog
from llama2.model.checkpoint import (
    as_dtype,
    export_gguf,
    find_tokenizer,
    load_transformer,
    resolve_model_path,
    save_hf,
    save_meta,
)
from llama2.model.config import PRESETS, ModelArgs
from llama2.model.cpu_kernels import InferenceKernels, pack_linears
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer
from llama2.types import Dialog, GenerationResult, SamplingParams, StreamDelta

def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Llama:
    """A loaded model ready to generate, chat, score and save.

    `Llama.from_pretrained("default")` is the bundled model; a path loads a Meta or Hugging Face
    checkpoint folder; a preset name (`7b`, `tiny`, ...) builds that shape with random weights
    (seeded), for tests and benchmarks — such a model has no tokenizer, so give it token ids.
    On the CPU `cpu_kernels` chooses the matmuls (`model/cpu_kernels.py`): `auto` takes our own
    float32 product (`native`, compiled on first use) or oneDNN's packed weights, whichever measures
    fastest on this machine, if faster than PyTorch's; `native` or `onednn` choose one; `torch` keeps
    PyTorch's (a model that will be changed in place — LoRA merged into it — must stay unswapped).
    """

    def __init__(self, model: Transformer, tokenizer: Tokenizer | None, *, name: str = "") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.engine = Engine(
            model,
            eos_id=tokenizer.eos_id if tokenizer else None,
            decode=tokenizer.decode if tokenizer else None,
        )

    @property
    def args(self) -> ModelArgs:
        return self.model.args

    @classmethod
    def from_pretrained(
        cls,
        path_or_preset: str | Path,
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        seed: int = 0,
        cpu_kernels: InferenceKernels = "auto",
    ) -> "Llama":
        name = str(path_or_preset)
        device = torch.device(device) if device is not None else default_device()
        dtype = as_dtype(dtype)
        if name.lower() in PRESETS and not Path(name).expanduser().exists():
            model = Transformer.random(PRESETS[name.lower()].args, seed=seed, dtype=dtype, device=device)
            pack_linears(model, cpu_kernels)
            return cls(model, None, name=name)
        path = resolve_model_path(name)
        model = load_transformer(path, dtype=dtype, device=device)
        pack_linears(model, cpu_kernels)
        tokenizer_path = find_tokenizer(path)
        return cls(model, Tokenizer(tokenizer_path) if tokenizer_path else None, name=name)

    # ---- generation -------------------------------------------------------------------------

    def generate(
        self,
        prompts: str | Sequence[int] | Sequence[str | Sequence[int]],
        *,
        max_new_tokens: int | None = 256,
        temperature: float = 0.6,
        top_p: float = 0.9,
        top_k: int = 0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        logprobs: bool = False,
        top_logprobs: int = 0,
        bos: bool = True,
    ) -> list[GenerationResult]:
        """Complete text prompts (BOS prepended) or token-id prompts (used as given).

        A single prompt may be passed bare; the result is always a list, one per prompt.
        """
        params = SamplingParams(max_new_tokens, temperature, top_p, top_k, seed, tuple(stop), logprobs, top_logprobs)
        return self.engine.generate(self._encode_prompts(prompts, bos), params)

    def stream(self, prompt: str | Sequence[int], **sampling) -> Iterator[str]:
        """Yield the completion of one prompt as text deltas (`sampling`: SamplingParams fields)."""
        bos = sampling.pop("bos", True)
        for delta in self.engine.stream(self._encode_prompts(prompt, bos), _sampling(**sampling)):
            if delta.text:
                yield delta.text

    def chat(
        self,
        dialogs: Dialog | Sequence[Dialog],
        *,
        system_prompt: str | None = None,
        **sampling,
    ) -> list[GenerationResult]:
        """Answer each dialog (ending with a user turn) in the Llama 2 chat format."""
        prompts = [encode_dialog(self._require_tokenizer(), d, system_prompt=system_prompt) for d in _dialogs(dialogs)]
        results = self.engine.generate(prompts, _sampling(**sampling))
        for result in results:
            result.text = drop_format_space(result.text)
        return results

    def stream_chat(self, dialog: Dialog, *, system_prompt: str | None = None, **sampling) -> Iterator[StreamDelta]:
        """Answer one dialog, streamed as deltas (the last carries the finish reason)."""
        prompt = encode_dialog(self._require_tokenizer(), dialog, system_prompt=system_prompt)
        started = False
        for delta in self.engine.stream([prompt], _sampling(**sampling)):
            if not started and delta.text:
                delta.text, started = drop_format_space(delta.text), True
            yield delta

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """Log-probability of each continuation given its context (text), and whether it is greedy.

        The pair is tokenized whole and split where the context ends, as lm-evaluation-harness does,
        so a leading space belongs to the continuation's first token."""
        tokenizer = self._require_tokenizer()
        pairs = []
        for context, continuation in requests:
            whole = tokenizer.encode(context + continuation, bos=True, eos=False)
            context_len = len(tokenizer.encode(context, bos=True, eos=False))
            pairs.append((whole[:context_len], whole[context_len:]))
        return self.engine.loglikelihood(pairs)

    # ---- saving -----------------------------------------------------------------------------

    def save(self, path: str | Path, format: str = "meta", *, dtype: str = "f32") -> Path:
        """Write the model as a Meta folder, a Hugging Face folder, or a GGUF file."""
        path = Path(path)
        if format == "meta":
            save_meta(self.model, self.args, path, tokenizer=self.tokenizer)
        elif format == "hf":
            save_hf(self.model, self.args, path, tokenizer=self.tokenizer)
        elif format == "gguf":
            export_gguf(self.model, self.args, path, tokenizer=self._require_tokenizer(), dtype=dtype)
        else:
            raise ConfigError(f"unknown format {format!r}; choose meta, hf or gguf")
        return path

    # ---- helpers ----------------------------------------------------------------------------

    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ConfigError(f"model {self.name!r} has no tokenizer; pass token ids instead of text")
        return self.tokenizer

    def _encode_prompts(self, prompts, bos: bool) -> list[list[int]]:
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        encoded = []
        for prompt in prompts:
            if isinstance(prompt, str):
                encoded.append(self._require_tokenizer().encode(prompt, bos=bos, eos=False))
            else:
                encoded.append([int(t) for t in prompt])
        return encoded


def _sampling(stop: Sequence[str] = (), **fields) -> SamplingParams:
    """SamplingParams from keyword arguments (the names of its fields), with stop as a tuple."""
    unknown = set(fields) - set(SamplingParams.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown sampling options: {', '.join(sorted(unknown))}")
    return SamplingParams(stop=tuple(stop), **fields)


def drop_format_space(text: str) -> str:
    """The chat format writes "[/INST] {answer}": the space before the answer is the format's."""
    return text[1:] if text.startswith(" ") else text


def _dialogs(dialogs) -> list[Dialog]:
    if dialogs and isinstance(dialogs[0], dict):
        return [dialogs]
    return list(dialogs)

