"""Training benchmark: tokens/s and peak memory of our training loop against Hugging Face
`transformers` (`LlamaForCausalLM` in a plain PyTorch loop), same weights, data, batch, sequence
length, precision and optimizer settings.

    python bench/train.py [--configs 20m 110m] [--dtypes fp32 bf16] [--batch 8] [--seq 256]
                          [--steps 6] [--warmup 2] [--rounds 3] [--threads 2] [--compile] [--json OUT]
    python bench/train.py --profile [--configs 20m] [--dtypes fp32] [--impl ours]   # where time goes

Both sides start from one Hugging Face folder of our seeded random initialisation (transformers
loads it with `from_pretrained`, ours with `init=FOLDER`, undoing the q/k permutation), read the
same token windows (our pretraining recipe's `batches(step)`, from a synthetic shard folder of a
random bigram language) and take the same AdamW steps (β 0.9/0.95, eps 1e-5, decay 0.1 on
matrices, warmup + cosine, clip 1.0): ours with the fused AdamW kernel its loop uses, transformers
with torch's default (multi-tensor) AdamW, as a plain loop has it. Ours is the real loop
(`llama2.train.loop.train`), its tokens/s as it logs them per step (data, forward, backward, clip,
update; checkpoint saves left out); transformers' is timed around the same work. Each (config, dtype, implementation) runs in a
fresh child process, so peak RSS (VmHWM) is its own; for ours it includes the final checkpoint
save. The loss of every step is compared across the two and the largest relative gap printed.

`--compile` adds rows with `torch.compile` on both sides (ours: the loop's `compile=true`, each
transformer block; transformers: `model.compile()`). bf16 rows are autocast with fp32 weights.

Our loop tells glibc's malloc to keep freed memory on the CPU (`train/cpu_allocator.py`); a plain
transformers loop does not. `--peer-keeps-freed-memory` adds rows where the transformers loop makes
the same call first, to show how much of the difference that setting is.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402  (bench/ is a folder of scripts, not a package)
    OtherLoad,
    machine_line,
    markdown_table,
    paired_median,
    peak_rss_mb,
    run_worker,
    synthetic_sentencepiece,
    wait_until_quiet,
)

SEED = 1234
DATA_TOKENS = 400_000
NOISY_CORES = 0.35  # other processes' average CPU use above which a run is repeated once
LOSS_TOLERANCE = {"fp32": 1e-4, "bf16": 3e-2}  # relative, per step, ours vs transformers


def model_args(name: str):
    from llama2.model.config import ModelArgs, get_preset

    if name == "20m":
        # 20.5M parameters: 8 layers of dim 384 (6 heads of 64) and an 8192-piece vocabulary.
        return ModelArgs(dim=384, n_layers=8, n_heads=6, vocab_size=8192, multiple_of=32, max_seq_len=1024)
    return get_preset(name)


# ---------------------------------------------------------------------------------------------- setup


def write_bigram_shards(folder: Path, vocab_size: int) -> None:
    """A shard folder of a random bigram language: each token has 4 possible successors."""
    import numpy as np

    from llama2.data.shards import Manifest, SplitInfo

    rng = np.random.default_rng(SEED)
    successors = rng.integers(3, vocab_size, size=(vocab_size, 4))
    choices = rng.integers(0, 4, size=DATA_TOKENS)
    tokens = np.empty(DATA_TOKENS, dtype=np.uint16)
    current = 3
    for i in range(DATA_TOKENS):
        current = successors[current, choices[i]]
        tokens[i] = current
    folder.mkdir(parents=True)
    split = DATA_TOKENS * 9 // 10
    tokens[:split].tofile(folder / "train-00000.bin")
    tokens[split:].tofile(folder / "val-00000.bin")
    (folder / "tokenizer.model").write_bytes(synthetic_sentencepiece(vocab_size))
    Manifest(dtype="uint16", vocab_size=vocab_size, bos_id=1, eos_id=2, tokenizer="tokenizer.model", seed=SEED,
             val_fraction=0.1, splits={"train": SplitInfo(("train-00000.bin",), split, 1),
                                       "val": SplitInfo(("val-00000.bin",), DATA_TOKENS - split, 1)},
             sources=()).save(folder)


def write_initial_weights(folder: Path, name: str) -> None:
    """Our seeded initialisation as a Hugging Face folder (q/k rows permuted for HF's rotary layout)."""
    import torch

    from llama2.model.checkpoint import save_hf
    from llama2.model.transformer import Transformer

    args = model_args(name)
    model = Transformer(args)
    model.init_weights(torch.Generator().manual_seed(SEED))
    save_hf(model, args, folder)


# ---------------------------------------------------------------------------------------------- workers


def recipe_settings(job: dict, output_dir: str) -> dict:
    return {
        "init": job["hf"], "data": job["data"], "output_dir": output_dir, "seed": SEED,
        "max_steps": job["warmup"] + job["steps"], "batch_size": job["batch"], "seq_len": job["seq"],
        "lr": 3e-4, "warmup_steps": 2, "log_every": 1, "tensorboard": False, "device": job["device"],
        "dtype": "bfloat16" if job["dtype"] == "bf16" else "float32", "compile": job["compile"],
    }


def run_ours(job: dict) -> dict:
    """The real loop; per-step tokens/s and losses come from its metrics.jsonl."""
    import torch

    from llama2.train.config import parse_config
    from llama2.train.loop import train
    from llama2.train.recipes.pretrain import Pretrain, PretrainConfig

    torch.set_num_threads(job["threads"])
    with tempfile.TemporaryDirectory() as output_dir:
        config = parse_config(PretrainConfig, recipe_settings(job, output_dir))
        train(Pretrain(config))
        records = [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]
    return {"losses": [r["loss"] for r in records], "tokens_per_s": [r["tokens_per_s"] for r in records]}


def run_transformers(job: dict) -> dict:
    """`LlamaForCausalLM` in a plain loop over the same batches, schedule and optimizer settings."""
    import torch
    import torch.nn.functional as F
    import transformers

    from llama2.train.config import parse_config
    from llama2.train.distributed import Runtime
    from llama2.train.optim import lr_at, param_groups, set_lr
    from llama2.train.recipes.pretrain import Pretrain, PretrainConfig

    torch.set_num_threads(job["threads"])
    if job["impl"] == "transformers-kept":
        from llama2.train.cpu_allocator import keep_freed_memory

        keep_freed_memory()
    transformers.logging.set_verbosity_error()
    device = torch.device(job["device"])
    model = transformers.LlamaForCausalLM.from_pretrained(job["hf"], dtype=torch.float32, attn_implementation="sdpa")
    model.to(device).train()
    if job["compile"]:
        model.compile()
    config = parse_config(PretrainConfig, recipe_settings(job, tempfile.mkdtemp()))
    data = Pretrain(config)
    runtime = Runtime(0, 1, 0, device)
    data.prepare(runtime)
    # torch's default AdamW (multi-tensor), as a plain loop has it; the same groups and settings.
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas, eps=config.eps)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=job["dtype"] == "bf16")
    losses, rates = [], []
    for step in range(config.max_steps):
        start = time.perf_counter()
        batch = data.batches(step, runtime)[0]
        tokens, targets = batch["tokens"].to(device), batch["targets"].to(device)
        set_lr(optimizer, lr_at(step, peak=config.lr, warmup_steps=config.warmup_steps, max_steps=config.max_steps))
        with autocast:
            logits = model(input_ids=tokens).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        rates.append(tokens.numel() / (time.perf_counter() - start))
    return {"losses": losses, "tokens_per_s": rates}


def worker(job: dict) -> None:
    import torch

    with OtherLoad() as others:
        result = run_ours(job) if job["impl"] == "ours" else run_transformers(job)
    result["foreign_cores"] = others.cores
    measured = result["tokens_per_s"][job["warmup"]:]
    result["median_tokens_per_s"] = statistics.median(measured)
    result["peak_mb"] = (torch.cuda.max_memory_allocated() / 1e6 if job["device"] == "cuda" else peak_rss_mb())
    print(json.dumps(result))


def profile(job: dict) -> None:
    """Run one worker under the PyTorch profiler and print where the CPU time went."""
    import torch

    with torch.profiler.profile() as prof:
        (run_ours if job["impl"] == "ours" else run_transformers)(job)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["20m", "110m"], help="20m, or any preset (110m, tiny, ...)")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6, help="measured steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds, each running every implementation of a row once, back to back (shared machines)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also rows with torch.compile on both sides")
    parser.add_argument("--peer-keeps-freed-memory", action="store_true",
                        help="also rows of transformers with malloc keeping freed memory, as our loop has it")
    parser.add_argument("--profile", action="store_true", help="profile one run (first config and dtype) instead")
    parser.add_argument("--impl", default="ours", choices=["ours", "transformers"], help="what --profile runs")
    parser.add_argument("--json", default=None, help="write all results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("need --rounds >= 1, --steps >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        jobs = []
        for name in args.configs:
            folder = Path(scratch) / name
            write_bigram_shards(folder / "data", model_args(name).vocab_size)
            write_initial_weights(folder / "hf", name)
            for dtype in args.dtypes:
                for compiled in [False, True] if args.compile else [False]:
                    for impl in ("ours", "transformers") + ("transformers-kept",) * args.peer_keeps_freed_memory:
                        jobs.append({"config": name, "dtype": dtype, "impl": impl, "compile": compiled,
                                     "hf": str(folder / "hf"), "data": str(folder / "data"), "batch": args.batch,
                                     "seq": args.seq, "steps": args.steps, "warmup": args.warmup,
                                     "threads": args.threads, "device": args.device})
        if args.profile:
            profile(next(job for job in jobs if job["impl"] == args.impl))
            return 0
        results = run_rounds(jobs, args.rounds)
    report(args, results)
    return 0


def run_rounds(jobs: list[dict], rounds: int) -> list[dict]:
    """Every job once per round, the implementations of a row back to back in an order that rotates
    from round to round. A job's result is its fastest round, with every round's tokens/s in
    `by_round`: on a shared host the machine's speed drifts between minutes, so a row's ratio is
    taken within each round (`paired_median`), never across rounds."""
    rows: dict[tuple, list[int]] = {}
    for index, job in enumerate(jobs):
        rows.setdefault((job["config"], job["dtype"], job["compile"]), []).append(index)
    found: list[dict | None] = [None] * len(jobs)
    for round_ in range(rounds):
        for row in rows.values():
            shift = round_ % len(row)
            for index in row[shift:] + row[:shift]:
                result = measure(jobs[index])
                kept = found[index] = found[index] or {**jobs[index], **result, "by_round": []}
                kept["by_round"].append(result["median_tokens_per_s"])
                if result["median_tokens_per_s"] > kept["median_tokens_per_s"]:
                    kept.update(result)
    return [kept for kept in found if kept is not None]


def measure(job: dict) -> dict:
    """One run in a fresh process (redone, once, when others were busy on the machine)."""
    label = f"{job['config']} {job['dtype']} {job['impl']}{' compile' if job['compile'] else ''}"
    for _attempt in range(2):
        wait_until_quiet(log=print)
        result = run_worker([sys.executable, __file__, "--worker", json.dumps(job)])
        print(f"  {label}: {result['median_tokens_per_s']:,.0f} tokens/s, peak {result['peak_mb']:,.0f} MB, "
              f"others used {result['foreign_cores']:.2f} cores", flush=True)
        if result["foreign_cores"] <= NOISY_CORES:
            break
    return result


def report(args: argparse.Namespace, results: list[dict]) -> None:
    rows, ok = [], True
    for ours in (r for r in results if r["impl"] == "ours"):
        theirs = next(r for r in results if r["impl"] == "transformers" and
                      all(r[k] == ours[k] for k in ("config", "dtype", "compile")))
        gap = max(abs(a - b) / abs(b) for a, b in zip(ours["losses"], theirs["losses"]))
        ok &= gap <= LOSS_TOLERANCE[ours["dtype"]]
        kept = [r for r in results if r["impl"] == "transformers-kept" and
                all(r[k] == ours[k] for k in ("config", "dtype", "compile"))]
        mode = f"{ours['dtype']}{' + compile' if ours['compile'] else ''}"
        for r in (theirs, *kept, ours):
            rows.append([f"{r['config']} {mode}", r["impl"], f"{r['median_tokens_per_s']:,.0f}",
                         f"{paired_median(r['by_round'], theirs['by_round']):.2f}x", f"{r['peak_mb']:,.0f}",
                         f"{r['losses'][-1]:.4f}", f"{gap:.1e}" if r is ours else ""])
        ok &= all(abs(a - b) / abs(b) <= LOSS_TOLERANCE[ours["dtype"]] for r in kept for a, b in zip(r["losses"], theirs["losses"]))
    print(f"\ntraining on {machine_line()}, {args.threads} threads, batch {args.batch} x seq {args.seq}, "
          f"median of {args.steps} steps after {args.warmup}, best of {args.rounds} round(s); ratios: median over rounds "
          f"of the ratio within a round; {datetime.date.today()}\n")
    print(markdown_table(["config", "impl", "tokens/s", "vs transformers", "peak MB", f"loss @ step {args.steps + args.warmup}",
                          "max loss gap"], rows))
    print(f"\nlosses {'agree' if ok else 'DISAGREE'} step by step (tolerance {LOSS_TOLERANCE})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
