"""`llama2 convert SRC DST --to hf|meta|gguf`: rewrite a checkpoint in another format.

SRC is a Meta or Hugging Face folder, a .gguf file, or a preset name (`tiny`, `7b`, ...) for a model
with seeded random weights. The tokenizer found next to SRC (or given with --tokenizer) is written
alongside; GGUF needs one, since llama.cpp reads the vocabulary from the file.

`--merge-lora ADAPTER` folds a LoRA adapter (PEFT's folder format, as `llama2 train sft` writes it
under each checkpoint's `adapter/`, or one trained with `peft` on the Hugging Face export) into the
weights first, so the output is a plain model:

    llama2 convert /models/llama-2-7b merged/ --to hf --merge-lora runs/sft/checkpoints/step-00000400/adapter
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llama2.cli.common import print_json

TARGETS = ("hf", "meta", "gguf")
DTYPE_CHOICES = ("f32", "f16", "bf16", "q8_0")


def register(subparsers) -> None:
    parser = subparsers.add_parser("convert", help="convert a checkpoint between Meta, Hugging Face and GGUF",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="checkpoint folder, .gguf file, or preset name (random weights)")
    parser.add_argument("dst", help="folder to write (hf, meta) or .gguf file")
    parser.add_argument("--to", required=True, choices=TARGETS, help="output format")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default=None,
                        help="weight type (default: the source's; q8_0 only for gguf)")
    parser.add_argument("--shards", type=int, default=1, help="model-parallel shards for --to meta (default 1)")
    parser.add_argument("--max-shard-size", default="2GB", help="largest safetensors file for --to hf (default 2GB)")
    parser.add_argument("--tokenizer", type=Path, default=None, help="tokenizer.model or .gguf to include")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights when SRC is a preset")
    parser.add_argument("--merge-lora", type=Path, default=None, metavar="ADAPTER",
                        help="fold this LoRA adapter folder (PEFT format) into the weights first")
    parser.add_argument("--force", action="store_true", help="replace DST if it exists")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llama2.api import Llama
    from llama2.errors import ConfigError
    from llama2.model.checkpoint import DTYPES, export_gguf, save_hf, save_meta

    if args.dtype == "q8_0" and args.to != "gguf":
        raise ConfigError(f"--dtype q8_0 is a GGUF type; --to {args.to} takes f32, f16 or bf16")
    load_dtype = DTYPES.get(args.dtype) if args.to != "gguf" else None
    llama = Llama.from_pretrained(args.src, dtype=load_dtype, device="cpu", seed=args.seed, cpu_kernels="torch")
    model = llama.model
    if args.merge_lora is not None:
        model = _merged(model, args.merge_lora)
    tokenizer = args.tokenizer or llama.tokenizer
    dtype_name = args.dtype or _short_name(model.tok_embeddings.weight.dtype)
    common = {"tokenizer": tokenizer, "overwrite": args.force}
    if args.to == "hf":
        files = save_hf(model, model.args, args.dst, max_shard_size=args.max_shard_size, **common)
    elif args.to == "meta":
        files = save_meta(model, model.args, args.dst, num_shards=args.shards, **common)
    else:
        if tokenizer is None:
            raise ConfigError(f"no tokenizer found next to {args.src}; GGUF needs one: pass --tokenizer PATH")
        files = export_gguf(model, model.args, args.dst, dtype=dtype_name, name=Path(args.dst).stem, **common)
    report = {
        "source": args.src,
        "format": args.to,
        "path": str(args.dst),
        "dtype": dtype_name,
        "files": [str(path) for path in files],
        "bytes": sum(path.stat().st_size for path in files),
        "tokenizer": str(args.tokenizer) if args.tokenizer else ("from the source" if tokenizer else None),
        "merged_lora": str(args.merge_lora) if args.merge_lora else None,
    }
    if args.json:
        print_json(report)
    else:
        print(f"wrote {args.to} checkpoint {args.dst} ({len(files)} files, {report['bytes'] / 1e6:.1f} MB, {dtype_name}) from {args.src}")
        if tokenizer is None:
            print("note: no tokenizer was found or given, so none was written")
    return 0


def _merged(model, adapter: Path):
    """The model with the adapter folded in, computed in fp32 and returned in the model's dtype."""
    from llama2.train.lora import load_peft_adapter, merge_lora

    dtype = model.tok_embeddings.weight.dtype
    model = model.float()
    load_peft_adapter(model, adapter)
    return merge_lora(model).to(dtype)


def _short_name(dtype) -> str:
    from llama2.model.checkpoint import DTYPES

    return next(name for name, value in DTYPES.items() if value == dtype)
