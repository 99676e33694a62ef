"""`llama2 generate PROMPT`: complete a text prompt, streamed to the terminal."""

from __future__ import annotations

import argparse
import itertools
import sys
import time

from llama2.cli.common import add_model_options, add_sampling_options, load_llama, print_json, sampling_kwargs


def register(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="complete a prompt", description=__doc__)
    parser.add_argument("prompt", help="text to complete ('-' reads standard input)")
    add_model_options(parser)
    add_sampling_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    llama = load_llama(args)
    sampling = sampling_kwargs(args)
    if args.json:
        started = time.perf_counter()
        result = llama.generate(prompt, **sampling)[0]
        seconds = time.perf_counter() - started
        print_json({
            "model": args.model,
            "prompt": prompt,
            "text": result.text,
            "tokens": result.tokens,
            "finish_reason": result.finish_reason,
            "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens},
            "seconds": round(seconds, 3),
        })
        return 0
    deltas = llama.stream(prompt, **sampling)
    first = next(deltas, "")  # raises on bad input before anything is printed
    for text in itertools.chain([prompt, first], deltas):
        sys.stdout.write(text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
