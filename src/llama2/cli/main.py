"""Entry point of the `llama2` command: builds the parser from the command modules and turns
typed errors into one line on stderr and a non-zero exit code."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from llama2.errors import Llama2Error

# Command groups, each a module in llama2.cli with `register(subparsers)`.
COMMAND_MODULES = ("info", "generate", "chat", "convert", "data", "train", "eval", "serve", "admin", "gatt", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llama2", description="Llama 2 end to end: run, convert, train, evaluate.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"llama2.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"llama2.cli.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except Llama2Error as error:
        print(f"llama2: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("llama2: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`llama2 ... --json | head`): say nothing more, and keep the
        # interpreter's final flush of stdout from raising again (Python's documented recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
