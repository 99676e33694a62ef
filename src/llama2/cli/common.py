"""Options and output helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_MODEL = "default"  # the bundled base model: continues text
DEFAULT_CHAT_MODEL = "default-chat"  # the bundled model after SFT: answers in the chat format


def add_model_options(parser: argparse.ArgumentParser, *, default: str = DEFAULT_MODEL) -> None:
    parser.add_argument("--model", "-m", default=default,
                        help="checkpoint folder (Meta or Hugging Face), preset name, 'default' (the bundled base model) "
                             f"or 'default-chat' (the bundled chat model); default: {default}")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: the checkpoint's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def add_sampling_options(parser: argparse.ArgumentParser, *, max_new_tokens: int = 256) -> None:
    parser.add_argument("--max-new-tokens", "-n", type=int, default=max_new_tokens)
    parser.add_argument("--temperature", "-t", type=float, default=0.6, help="0 means greedy (default 0.6, as Meta)")
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--top-k", type=int, default=0, help="0 disables top-k")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def sampling_kwargs(args: argparse.Namespace) -> dict:
    return {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "seed": args.seed,
        "stop": tuple(args.stop),
    }


def load_llama(args: argparse.Namespace):
    from llama2.api import Llama

    return Llama.from_pretrained(args.model, dtype=args.dtype, device=args.device)


def print_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
