"""`llama2 chat`: an interactive, streaming, multi-turn chat in the Llama 2 chat format.

Commands inside the chat: /system TEXT (set the system prompt and start over), /reset, /exit.
When standard input is not a terminal, each line is one user turn and answers are printed plainly.
"""

from __future__ import annotations

import argparse
import sys

from llama2.cli.common import DEFAULT_CHAT_MODEL, add_model_options, add_sampling_options, load_llama, sampling_kwargs

HELP = "commands: /system TEXT, /reset, /exit"


def register(subparsers) -> None:
    parser = subparsers.add_parser("chat", help="chat with a model", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(parser, default=DEFAULT_CHAT_MODEL)
    add_sampling_options(parser, max_new_tokens=512)
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--default-system-prompt", action="store_true",
                        help="use Meta's default system prompt (the paper's evaluation setup)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llama2.model.chat_format import DEFAULT_SYSTEM_PROMPT

    llama = load_llama(args)
    interactive = sys.stdin.isatty()
    system = args.system or (DEFAULT_SYSTEM_PROMPT if args.default_system_prompt else None)
    if interactive:
        note = "" if _is_chat_model(llama) else " — a base model, not chat-tuned: expect continuations, not answers"
        print(f"llama2 chat with {args.model}{note}\n{HELP}")
    dialog: list[dict] = []
    while True:
        line = _read_turn(interactive)
        if line is None or line.strip() == "/exit":
            return 0
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            dialog = []
            _say(interactive, "(conversation reset)")
            continue
        if text.startswith("/system"):
            system, dialog = text[len("/system"):].strip() or None, []
            _say(interactive, f"(system prompt {'set' if system else 'cleared'}; conversation reset)")
            continue
        if text.startswith("/"):
            _say(interactive, f"unknown command {text.split()[0]}; {HELP}")
            continue
        dialog.append({"role": "user", "content": text})
        messages = ([{"role": "system", "content": system}] if system else []) + dialog
        answer = _stream_answer(llama, messages, sampling_kwargs(args), interactive)
        dialog.append({"role": "assistant", "content": answer})


def _stream_answer(llama, messages, sampling, interactive: bool) -> str:
    if interactive:
        sys.stdout.write("assistant> ")
    parts = []
    for delta in llama.stream_chat(messages, **sampling):
        parts.append(delta.text)
        sys.stdout.write(delta.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(parts)


def _read_turn(interactive: bool) -> str | None:
    try:
        return input("you> ") if interactive else (sys.stdin.readline() or None)
    except EOFError:
        return None


def _say(interactive: bool, message: str) -> None:
    print(message, file=sys.stdout if interactive else sys.stderr)


def _is_chat_model(llama) -> bool:
    return "chat" in llama.name.lower()
