"""`llama2 info [MODEL]`: shape, parameter count and memory of a preset, a checkpoint or the bundled model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llama2.cli.common import print_json

# Bytes per parameter of each storage format (GGUF block formats include their scales).
BYTES_PER_PARAM = {"float32": 4.0, "bfloat16/float16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
GIB = 1024**3


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="parameter count and memory of a model", description=__doc__)
    parser.add_argument("model", nargs="?", default=None, help="preset (7b, 70b, ...), checkpoint path or 'default'; "
                        "without it, lists the presets")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run)


def describe(name: str) -> dict:
    """Everything `info` reports about one model, without loading its weights."""
    from llama2.model.checkpoint import read_model_args, resolve_model_path
    from llama2.model.config import PRESETS

    training = None
    if name.lower() in PRESETS and not Path(name).expanduser().exists():
        args, source = PRESETS[name.lower()].args, f"preset: {PRESETS[name.lower()].description}"
    else:
        path = resolve_model_path(name)
        args, source = read_model_args(path), str(path)
        card = path / "training.json"
        if card.is_file():
            training = json.loads(card.read_text())
    n_params = args.n_params()
    return {
        "model": name,
        "source": source,
        "args": args.to_params() | {"n_kv_heads": args.kv_heads, "head_dim": args.head_dim, "ffn_hidden_dim": args.ffn_hidden_dim},
        "parameters": n_params,
        "weights_bytes": {fmt: int(n_params * size) for fmt, size in BYTES_PER_PARAM.items()},
        "kv_cache_bytes_per_token_fp16": args.kv_cache_bytes_per_token(2),
        "kv_cache_bytes_full_context_fp16": args.kv_cache_bytes_per_token(2) * args.max_seq_len,
        "training": training,
    }


def run(args: argparse.Namespace) -> int:
    from llama2.model.config import PRESETS

    if args.model is None:
        rows = [{"name": k, "parameters": p.args.n_params(), "description": p.description} for k, p in PRESETS.items()]
        if args.json:
            print_json(rows)
        else:
            for row in rows:
                print(f"{row['name']:<10} {_count(row['parameters']):>8}  {row['description']}")
        return 0
    info = describe(args.model)
    if args.json:
        print_json(info)
        return 0
    a = info["args"]
    print(f"{info['model']}  ({info['source']})")
    print(f"  parameters      {info['parameters']:,} ({_count(info['parameters'])})")
    print(f"  shape           dim {a['dim']}, {a['n_layers']} layers, {a['n_heads']} heads "
          f"({a['n_kv_heads']} key/value), head_dim {a['head_dim']}, ffn {a['ffn_hidden_dim']}, vocab {a['vocab_size']}")
    print(f"  context         {a['max_seq_len']} tokens, rope theta {a['rope_theta']:g}, norm eps {a['norm_eps']:g}")
    print("  weights memory  " + ", ".join(f"{fmt} {_size(b)}" for fmt, b in info["weights_bytes"].items()))
    print(f"  KV cache fp16   {_size(info['kv_cache_bytes_per_token_fp16'])}/token, "
          f"{_size(info['kv_cache_bytes_full_context_fp16'])} per sequence at full context")
    if info["training"]:
        for key, value in info["training"].items():
            print(f"  {key:<15} {value}")
    return 0


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def _size(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n / 1024:.1f} KiB"
