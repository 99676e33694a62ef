"""`llama2 gatt`: Ghost Attention (Llama 2 §3.3). `build` samples GAtt training dialogs with a
model (the instruction in every user turn) and writes them as SFT JSONL, with the instruction kept
in turn 1 only and only the last reply trained. `measure` prints how often each model still
follows an instruction given once, at turns 2/4/6/... (the paper's table).

    llama2 gatt build --model default --output gatt.jsonl --count 20 --turns 4
    llama2 train sft recipes/sft-tiny.yaml data=gatt.jsonl output_dir=runs/gatt epochs=1
    llama2 gatt measure --model default --model runs/gatt/model --turns 2,4,6
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from llama2.cli.common import print_json

DEFAULT_MODEL = "default"


def register(subparsers) -> None:
    parser = subparsers.add_parser("gatt", help="Ghost Attention: build GAtt data; measure instruction adherence",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="gatt_command", metavar="COMMAND", required=True)

    build = commands.add_parser("build", help="sample GAtt training dialogs into SFT JSONL",
                                description="Sample replies with the instruction in every user turn; write training "
                                            "dialogs with it in turn 1 only and earlier replies untrained.")
    build.add_argument("--model", "-m", default=DEFAULT_MODEL, help="the model that samples the replies (default: the bundled one)")
    build.add_argument("--output", "-o", required=True, help="JSONL file to write (SFT messages format)")
    build.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    _add_common(build, split="train", temperature=0.7, max_new_tokens=64)
    build.add_argument("--turns", type=int, default=4, help="replies to sample per dialog (default 4)")
    build.set_defaults(func=run_build)

    measure = commands.add_parser("measure", help="print the adherence table of one or more models",
                                  description="Give the instruction once, roll the dialog on with the model's own "
                                              "replies, and judge each reply at the chosen turns (keyword judge).")
    measure.add_argument("--model", "-m", action="append", default=None,
                         help="a model to measure (repeat for a column per model; default: the bundled one)")
    # 48 new tokens a turn keeps six turns inside the bundled model's 512-token window.
    _add_common(measure, split="test", temperature=0.6, max_new_tokens=48)
    measure.add_argument("--turns", default="2,4,6", help="turns to judge, comma-separated (default 2,4,6)")
    measure.add_argument("--json", action="store_true", help="print the table as JSON")
    measure.set_defaults(func=run_measure)


def _add_common(parser: argparse.ArgumentParser, *, split: str, temperature: float, max_new_tokens: int) -> None:
    parser.add_argument("--dialogs", default=None,
                        help="user turns: JSONL/Parquet of {'turns': [...]} or SFT records (default: the shipped set)")
    parser.add_argument("--split", default=split, help=f"keep records of this split; 'all' keeps every record (default {split})")
    parser.add_argument("--count", type=int, default=None,
                        help="dialogs to use (default: all; more than the file holds reuses them with new instructions)")
    parser.add_argument("--constraints", default=None, help="JSON file of hobbies/languages/figures (default: the shipped lists)")
    parser.add_argument("--placement", choices=("user", "system"), default="user",
                        help="instruction in the first user message (default, as the paper) or in a system message")
    parser.add_argument("--seed", type=int, default=0, help="seed of the instructions and the sampling (default 0)")
    parser.add_argument("--max-new-tokens", "-n", type=int, default=max_new_tokens, help=f"longest reply (default {max_new_tokens})")
    parser.add_argument("--temperature", "-t", type=float, default=temperature, help=f"(default {temperature})")
    parser.add_argument("--top-p", type=float, default=0.9, help="(default 0.9)")
    parser.add_argument("--batch-size", type=int, default=16, help="dialogs per engine call (default 16)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: the checkpoint's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")


def run_build(args: argparse.Namespace) -> int:
    from llama2.progress import ProgressBar
    from llama2.train.recipes.ghost_attention import build_gatt_dialogs, planned_replies, write_gatt_jsonl

    users, instructions = _dialogs_and_instructions(args)
    llama = _load(args.model, args)
    started = time.perf_counter()
    with ProgressBar(f"gatt build {args.model}", planned_replies(users, args.turns), unit="replies") as bar:
        built = build_gatt_dialogs(llama, users, seed=args.seed, instructions=instructions, turns=args.turns,
                                   placement=args.placement, max_new_tokens=args.max_new_tokens,
                                   temperature=args.temperature, top_p=args.top_p, batch_size=args.batch_size,
                                   progress=bar.advance)
    if not built:
        from llama2.errors import DataError

        raise DataError("the model gave no usable reply in any dialog; nothing to write (try a higher --max-new-tokens)")
    path = write_gatt_jsonl(built, args.output, overwrite=args.overwrite)
    replies = sum(sum(m["role"] == "assistant" for m in d.messages) for d in built)
    short = sum(d.instruction.short for d in built)
    print(f"wrote {len(built)} GAtt dialogs ({replies} replies, the last of each trained; {short} short instructions) "
          f"to {path} in {time.perf_counter() - started:.1f}s"
          + (f"; {len(users) - len(built)} dialogs dropped (no usable first reply)" if len(built) < len(users) else ""))
    print(f"train on it: llama2 train sft recipes/sft-tiny.yaml data={path} epochs=1")
    return 0


def run_measure(args: argparse.Namespace) -> int:
    from llama2.progress import ProgressBar
    from llama2.train.recipes.ghost_attention import measure_adherence, planned_replies

    turns = _parse_turns(args.turns)
    users, instructions = _dialogs_and_instructions(args)
    models = args.model or [DEFAULT_MODEL]
    results = {}
    for name in models:
        llama = _load(name, args)
        with ProgressBar(f"gatt measure {name}", planned_replies(users, max(turns)), unit="replies",
                         enabled=not args.json) as bar:
            results[name] = measure_adherence(llama, users, instructions, turns, placement=args.placement,
                                              seed=args.seed, max_new_tokens=args.max_new_tokens,
                                              temperature=args.temperature, top_p=args.top_p,
                                              batch_size=args.batch_size, progress=bar.advance)
    if args.json:
        print_json({"judge": "keyword", "placement": args.placement, "dialogs": len(users), "seed": args.seed,
                    "models": {name: result.to_dict() for name, result in results.items()}})
        return 0
    print(f"instruction given once ({args.placement} turn 1); % of replies still following it, keyword judge; "
          f"{len(users)} dialogs, seed {args.seed}")
    print(format_table(results, turns))
    if any(r.judged[k] < len(users) for r in results.values() for k in turns):
        print("(x/n: n counts the dialogs that reached turn k; a dialog ends early when it runs out of user turns "
              "or the next turn would not fit the context window — lower --max-new-tokens to reach further)")
    return 0


def format_table(results: dict, turns: Sequence[int]) -> str:
    """One row per turn, one column per model: "12.5% (2/16)"; "n/a" where no dialog got that far."""
    header = ["turn", *results]
    rows = [[str(k), *(_cell(r.percent[k], r.adherent[k], r.judged[k]) for r in results.values())] for k in turns]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                     for row in [header, *rows])


def _cell(percent: float | None, adherent: int, judged: int) -> str:
    return "n/a" if percent is None else f"{percent:.1f}% ({adherent}/{judged})"


def _parse_turns(text: str) -> list[int]:
    from llama2.errors import ConfigError

    try:
        turns = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        turns = []
    if not turns or turns[0] < 1:
        raise ConfigError(f"--turns must list positive whole numbers, e.g. 2,4,6; got {text!r}")
    return turns


def _dialogs_and_instructions(args: argparse.Namespace):
    from llama2.errors import ConfigError
    from llama2.train.constraints import draw_instructions, load_constraints
    from llama2.train.recipes.ghost_attention import load_user_turns

    users = load_user_turns(args.dialogs, split=None if args.split == "all" else args.split)
    count = len(users) if args.count is None else args.count
    if count < 1:
        raise ConfigError(f"--count must be at least 1, got {count}")
    users = [users[i % len(users)] for i in range(count)]
    return users, draw_instructions(count, seed=args.seed, constraints=load_constraints(args.constraints))


def _load(name: str, args: argparse.Namespace):
    from llama2.api import Llama

    return Llama.from_pretrained(name, dtype=args.dtype, device=args.device)
