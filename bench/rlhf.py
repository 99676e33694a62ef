"""RLHF benchmark: reward-model training pairs/s against TRL's `RewardTrainer`, and PPO samples/s
against TRL's `GRPOTrainer`, on the same exported model, data and settings.

    python bench/rlhf.py [--parts rm ppo] [--dtypes fp32 bf16] [--threads 2] [--json OUT]
                         [--rm-batch 8] [--rm-steps 10] [--rm-warmup 2]
                         [--rollout 32] [--minibatch 8] [--generations 4] [--new-tokens 48]
                         [--iterations 3] [--ppo-epochs 1]
    python bench/rlhf.py --quick                                 # fewer steps, to try it
    python bench/rlhf.py --profile --parts ppo [--impl ours|trl]   # where the time goes

Model: the ~20M benchmark shape (`common.small_model_args`: dim 384, 10 layers, the bundled 4096-piece
tokenizer), seeded random weights, written once as a Hugging Face folder by our converter. Ours
starts from that folder (`init=FOLDER`), TRL from `from_pretrained(FOLDER)`.

Reward model. Preference pairs from `llama2.data.chat_preferences` (helpfulness: worked arithmetic
and text tasks, four ratings). Our reward recipe (`RewardRecipe` through the real loop, margin
`small`) tokenizes them in the chat format; the rows of each of its steps (`batches(step)`) are handed
to TRL pre-tokenized (`chosen_ids`, `rejected_ids`, and `margin` = our m(r) of the pair's rating),
read in our order (`train_sampling_strategy="sequential"`). TRL's model is
`LlamaForSequenceClassification` (num_labels 1) whose `score` head is set to our freshly drawn
`reward_head` (the same seed), padded with `<unk>` (id 0, our pad) so that it reads the reward at the
closing EOS as ours does. Same AdamW settings and schedule (`common.recipe_optimizer_settings`),
no evaluation, no checkpoints while timed, no gradient checkpointing. Per-step losses are compared.

PPO. TRL 1.16 has no PPO trainer (`PPOTrainer` is gone from `trl` and `trl.experimental`), so the
peer is `GRPOTrainer`, the on-policy RL trainer it ships. One iteration on both sides: `--rollout`
answers of `--new-tokens` sampled tokens (temperature 1, top-p 1) to chat-format prompts, scored by
the same Python reward function of the answer's text, then `--ppo-epochs` passes in mini-batches of
`--minibatch` answers, one AdamW step each; β = 0.01, so both compute the frozen reference model's
log-probabilities, and both recompute the sampling policy's log-probabilities before the updates
(GRPO does when `steps_per_generation` > 1). Ours also computes values with its value head and GAE;
GRPO samples `--generations` answers per prompt and normalises rewards in each group. The prompts
are the same strings, so the same token ids (checked): ours gets each prompt `--generations` times.
Neither side can force the full length without changing its sampler (ours has no `min_new_tokens`),
so generation stops at EOS on both, and the table shows the mean tokens each side generated (a
random model rarely samples EOS). samples/s = answers / wall time of whole iterations (sampling,
scoring, reference and policy passes, updates), the first iteration left out as warm-up.

Timing: each optimizer step from its start to the next one's (ours: when the loop asks the recipe for
the step's batches, the last until the final checkpoint save, which is not timed; TRL: a callback at
each step's end), as wall time and as this process's CPU time (all threads): "per CPU-s" columns
divide by the latter, which another process on the machine disturbs far less than the wall clock.
Each (part, dtype, implementation) runs in a fresh child process; every run records the CPU the rest
of the machine used meanwhile ("other load", cores). A run with more than `--noisy-cores` (0.35) cores
of other load is redone once and the faster of the two kept.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402  (bench/ is a folder of scripts, not a package)
    LoopStepTimer,
    OtherLoad,
    loop_metrics,
    machine_line,
    markdown_table,
    peak_rss_mb,
    recipe_optimizer_settings,
    recording_trainer,
    run_worker,
    source_version,
    trl_optimizer_settings,
    trl_step_timer,
    wait_until_quiet,
    write_small_model,
)

SEED = 1234
NOISY_CORES = 0.35  # other processes' average CPU use above which a run is repeated once
LOSS_TOLERANCE = {"fp32": 1e-3, "bf16": 3e-2}  # relative, per step, ours vs TRL (reward model)
BETA = 0.01  # KL coefficient on both sides (the paper's for 7B/13B)
RM_SEQ = 512


def toy_reward(text: str) -> float:
    """The reward both PPO sides use: the share of letters among the answer's characters."""
    return sum(ch.isalpha() for ch in text) / max(1, len(text))


# ---------------------------------------------------------------------------------------------- data


def write_pairs(path: Path, count: int) -> None:
    from llama2.data.chat_preferences import build_preference_pairs

    pairs = build_preference_pairs(seed=SEED, split="train", model="helpfulness", count=count)
    path.write_text("".join(json.dumps(pair) + "\n" for pair in pairs))


def write_prompts(path: Path, count: int, repeat: int) -> list[str]:
    """`count` distinct single-turn prompts (the pairs' questions), each written `repeat` times (GRPO
    answers each prompt `repeat` times; ours then sees the same prompts as often). Returns them."""
    from llama2.data.chat_preferences import build_preference_pairs

    prompts: list[str] = []
    for pair in build_preference_pairs(seed=SEED + 1, split="train", model="helpfulness", count=4 * count):
        if isinstance(pair["prompt"], str) and pair["prompt"] not in prompts:
            prompts.append(pair["prompt"])
        if len(prompts) == count:
            break
    path.write_text("".join(json.dumps({"id": f"p{i}-{j}", "prompt": p}) + "\n"
                            for i, p in enumerate(prompts) for j in range(repeat)))
    return prompts


def rm_settings(job: dict, output_dir: str) -> dict:
    return {"init": job["hf"], "data": job["data"], "output_dir": output_dir, "seed": SEED,
            "max_steps": job["warmup"] + job["steps"], "batch_size": job["batch"], "seq_len": RM_SEQ,
            "margin": "small", **recipe_optimizer_settings(job["lr"]), "log_every": 1, "tensorboard": False,
            "device": "cpu", "dtype": "bfloat16" if job["dtype"] == "bf16" else "float32"}


def write_step_pairs(job: dict, path: Path) -> dict:
    """The pairs our reward recipe trains on at each step, in order, as TRL's pre-tokenized records
    (`chosen_ids`, `rejected_ids`, `margin`), to a JSON file. Returns a summary."""
    import torch

    from llama2.train.config import parse_config
    from llama2.train.distributed import Runtime
    from llama2.train.recipes.reward import RewardConfig, RewardRecipe

    recipe = RewardRecipe(parse_config(RewardConfig, rm_settings(job, tempfile.mkdtemp())))
    runtime = Runtime(0, 1, 0, torch.device("cpu"))
    recipe.prepare(runtime)
    records = []
    for step in range(recipe.config.max_steps):
        (batch,) = recipe.batches(step, runtime)
        tokens, lengths = batch["tokens"], batch["lengths"].tolist()
        half = len(lengths) // 2
        margins = recipe.margins[batch["strength"]].tolist()
        records += [{"chosen_ids": tokens[i, :lengths[i]].tolist(), "rejected_ids": tokens[half + i, :lengths[half + i]].tolist(),
                     "margin": margins[i]} for i in range(half)]
    path.write_text(json.dumps(records))
    sizes = [len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in records]
    return {"pairs": len(records), "mean_pair_tokens": sum(sizes) / len(sizes)}


# ---------------------------------------------------------------------------------------------- reward model


def rm_ours(job: dict) -> dict:
    from llama2.train.config import parse_config
    from llama2.train.loop import train
    from llama2.train.recipes.reward import RewardConfig, RewardRecipe

    with tempfile.TemporaryDirectory() as output_dir:
        recipe = RewardRecipe(parse_config(RewardConfig, rm_settings(job, output_dir)))
        timer = LoopStepTimer(recipe)
        try:
            train(recipe)
        finally:
            timer.close()
        records = loop_metrics(output_dir)
    return {"losses": [r["loss"] for r in records], "seconds": timer.seconds, "cpu_seconds": timer.cpu_seconds,
            "accuracy": records[-1]["accuracy"]}


def rm_trl(job: dict) -> dict:
    import datasets
    import torch
    import transformers
    import trl

    from llama2.model.reward import initial_head
    from llama2.model.checkpoint import read_model_args

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    dataset = datasets.Dataset.from_list(json.loads(Path(job["pairs"]).read_text()))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(job["hf"], num_labels=1, dtype=torch.float32)
    with torch.no_grad():  # our recipe's fresh head: `initial_reward_state` draws it from the run's seed
        model.score.weight.copy_(initial_head(read_model_args(job["hf"]), torch.Generator().manual_seed(SEED)))
    tokenizer = transformers.AutoTokenizer.from_pretrained(job["hf"])
    config = trl.RewardConfig(
        output_dir=tempfile.mkdtemp(), max_steps=job["warmup"] + job["steps"], per_device_train_batch_size=job["batch"],
        **trl_optimizer_settings(job["lr"]), bf16=job["dtype"] == "bf16", max_length=None, pad_token="<unk>",
        train_sampling_strategy="sequential", seed=SEED, use_cpu=True,
    )
    timer = trl_step_timer()
    trainer = recording_trainer(trl.RewardTrainer)(model=model, args=config, train_dataset=dataset,
                                                   processing_class=tokenizer, callbacks=[timer])
    trainer.train()
    accuracy = [h["accuracy"] for h in trainer.state.log_history if "accuracy" in h]
    return {"losses": trainer.step_losses, "seconds": timer.seconds, "cpu_seconds": timer.cpu_seconds,
            "accuracy": accuracy[-1] if accuracy else None,
            "versions": {"trl": trl.__version__, "transformers": transformers.__version__}}


# ---------------------------------------------------------------------------------------------- PPO


class ToyScorer:
    """`toy_reward` as our reward pipeline's `Scorer`."""

    def score_batch(self, prompts, responses, *, batch_size: int = 16) -> list[float]:
        return [toy_reward(text) for text in responses]


def ppo_ours(job: dict) -> dict:
    from llama2.train.config import parse_config
    from llama2.train.loop import train
    from llama2.train.recipes.ppo import PPO, PPOConfig
    from llama2.train.rewards import RewardFunction

    settings = {"init": job["hf"], "data": job["data"], "seed": SEED, "iterations": job["iterations"],
                "rollout_batch_size": job["rollout"], "batch_size": job["minibatch"], "ppo_epochs": job["ppo_epochs"],
                "max_new_tokens": job["new_tokens"], "temperature": 1.0, "top_p": 1.0, "beta": BETA,
                "sample_batch_size": job["rollout"], **recipe_optimizer_settings(job["lr"]), "log_every": 1,
                "tensorboard": False, "device": "cpu", "dtype": "bfloat16" if job["dtype"] == "bf16" else "float32"}
    with tempfile.TemporaryDirectory() as output_dir:
        recipe = PPO(parse_config(PPOConfig, {**settings, "output_dir": output_dir}), reward=RewardFunction(ToyScorer()))
        timer = LoopStepTimer(recipe)
        try:
            train(recipe)
        finally:
            timer.close()
        records = loop_metrics(output_dir)
    return {"seconds": timer.seconds, "cpu_seconds": timer.cpu_seconds, "tokens": [r["response_tokens"] for r in records],
            "reward": [r["reward"] for r in records], "losses": [r["loss"] for r in records]}


def ppo_trl(job: dict) -> dict:
    import datasets
    import torch
    import transformers
    import trl

    from llama2.model.tokenizer import Tokenizer
    from llama2.train.rollouts import encode_prompts

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    prompts = job["prompts"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(job["hf"])
    ours = encode_prompts(Tokenizer(Path(job["hf"]) / "tokenizer.model"), [[{"role": "user", "content": p}] for p in prompts])
    texts = [f"[INST] {p.strip()} [/INST]" for p in prompts]  # Meta's chat format; the tokenizer adds BOS
    same_ids = sum(tokenizer(text)["input_ids"] == ids for text, ids in zip(texts, ours))
    dataset = datasets.Dataset.from_list([{"prompt": text} for text in texts])
    model = transformers.AutoModelForCausalLM.from_pretrained(job["hf"], dtype=torch.float32)
    steps_per_generation = job["rollout"] // job["minibatch"]
    config = trl.GRPOConfig(
        output_dir=tempfile.mkdtemp(), max_steps=job["iterations"] * steps_per_generation * job["ppo_epochs"],
        per_device_train_batch_size=job["minibatch"], steps_per_generation=steps_per_generation,
        num_generations=job["generations"], num_iterations=job["ppo_epochs"], max_completion_length=job["new_tokens"],
        temperature=1.0, top_p=1.0, top_k=0, beta=BETA, **trl_optimizer_settings(job["lr"]),
        bf16=job["dtype"] == "bf16", shuffle_dataset=False, seed=SEED, use_cpu=True, log_completions=False,
    )

    def reward(prompts, completions, **kwargs) -> list[float]:
        return [toy_reward(text) for text in completions]

    timer = trl_step_timer()
    trainer = recording_trainer(trl.GRPOTrainer)(model=model, reward_funcs=[reward], args=config, train_dataset=dataset,
                                                 processing_class=tokenizer, callbacks=[timer])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    return {"seconds": timer.seconds, "cpu_seconds": timer.cpu_seconds, "tokens": [h["completions/mean_length"] for h in logs],
            "reward": [h["reward"] for h in logs], "losses": trainer.step_losses,
            "same_prompt_ids": f"{same_ids}/{len(prompts)}",
            "versions": {"trl": trl.__version__, "transformers": transformers.__version__}}


# ---------------------------------------------------------------------------------------------- workers

RUNNERS = {("rm", "ours"): rm_ours, ("rm", "trl"): rm_trl, ("ppo", "ours"): ppo_ours, ("ppo", "trl"): ppo_trl}


def worker(job: dict) -> None:
    import torch

    torch.set_num_threads(job["threads"])
    with OtherLoad() as others:
        result = RUNNERS[job["part"], job["impl"]](job)
    result["foreign_cores"] = others.cores
    result["peak_mb"] = peak_rss_mb()
    seconds, cpu = result["seconds"], result["cpu_seconds"]
    if job["part"] == "rm":
        result["rate"] = statistics.median(job["batch"] / s for s in seconds[job["warmup"]:])
        result["cpu_rate"] = statistics.median(job["batch"] / s for s in cpu[job["warmup"]:])
    else:  # whole iterations after the first: sampling and scoring fall in each iteration's first step
        per_iteration = len(seconds) // job["iterations"]
        result["rate"] = job["rollout"] * (job["iterations"] - 1) / sum(seconds[per_iteration:])
        result["cpu_rate"] = job["rollout"] * (job["iterations"] - 1) / sum(cpu[per_iteration:])
        result["iteration_seconds"] = [sum(seconds[i:i + per_iteration]) for i in range(0, len(seconds), per_iteration)]
    print(json.dumps(result))


def profile(job: dict) -> None:
    """Run one job under the PyTorch profiler and print where the CPU time went, per op."""
    import torch

    torch.set_num_threads(job["threads"])
    with torch.profiler.profile() as prof:
        RUNNERS[job["part"], job["impl"]](job)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=35, max_name_column_width=50))


def measure(job: dict) -> dict:
    """The fastest of `repeats` runs (a run with others busy on the machine is redone, once)."""
    label = f"{job['part']} {job['dtype']} {job['impl']}"
    unit = "pairs/s" if job["part"] == "rm" else "samples/s"
    best = None
    for _ in range(job["repeats"]):
        for _attempt in range(2):
            if job["max_wait"] > 0:
                wait_until_quiet(max_wait_s=job["max_wait"], log=print)
            env = {**os.environ, "OMP_NUM_THREADS": str(job["threads"]), "TOKENIZERS_PARALLELISM": "false"}
            result = run_worker([sys.executable, __file__, "--worker", json.dumps(job)], env=env)
            print(f"  {label}: {result['rate']:.2f} {unit} ({result['cpu_rate']:.2f} per CPU-second), peak "
                  f"{result['peak_mb']:,.0f} MB, others used {result['foreign_cores']:.2f} cores", flush=True)
            if best is None or result["rate"] > best["rate"]:
                best = result
            if result["foreign_cores"] <= job["noisy_cores"]:
                break
    return {**job, **best}


# ---------------------------------------------------------------------------------------------- report


def report(args: argparse.Namespace, results: list[dict], setup: dict) -> None:
    versions = next((r["versions"] for r in results if "versions" in r), {})
    print(f"\nRLHF on {machine_line()}, {args.threads} threads; TRL {versions.get('trl')}, transformers "
          f"{versions.get('transformers')}; commit {source_version()}; {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"  model: {setup['params'] / 1e6:.1f}M parameters (dim 384, 10 layers, vocabulary 4096), random weights, one HF folder")
    ok = True
    rm = [r for r in results if r["part"] == "rm"]
    if rm:
        summary = setup["rm"]
        print(f"\nReward model: batch {args.rm_batch} pairs, {summary['pairs']} pairs over {args.rm_warmup + args.rm_steps} steps "
              f"(mean {summary['mean_pair_tokens']:.0f} tokens per pair), lr {args.lr}, median of {args.rm_steps} steps "
              f"after {args.rm_warmup}\n")
        rows = []
        for dtype in args.dtypes:
            theirs = next(r for r in rm if r["impl"] == "trl" and r["dtype"] == dtype)
            ours = next(r for r in rm if r["impl"] == "ours" and r["dtype"] == dtype)
            gap = max(abs(a - b) / abs(b) for a, b in zip(ours["losses"], theirs["losses"]))
            ok &= gap <= LOSS_TOLERANCE[dtype] and len(ours["losses"]) == len(theirs["losses"])
            for r in (theirs, ours):
                rows.append([dtype, "TRL RewardTrainer" if r is theirs else "ours (RewardRecipe)", f"{r['rate']:.2f}",
                             f"{r['rate'] / theirs['rate']:.2f}x", f"{r['cpu_rate']:.2f}",
                             f"{r['cpu_rate'] / theirs['cpu_rate']:.2f}x", f"{r['peak_mb']:,.0f}", f"{r['losses'][0]:.4f}",
                             f"{r['losses'][-1]:.4f}", f"{gap:.1e}" if r is ours else "", f"{r['foreign_cores']:.2f}"])
        print(markdown_table(["dtype", "impl", "pairs/s", "vs TRL", "pairs/CPU-s", "vs TRL", "peak MB", "loss @1",
                              f"loss @{args.rm_warmup + args.rm_steps}", "max loss gap", "other load"], rows))
        print(f"\nreward-model losses {'agree' if ok else 'DISAGREE'} step by step (relative tolerance {LOSS_TOLERANCE})")
    ppo = [r for r in results if r["part"] == "ppo"]
    if ppo:
        trl_run = next(r for r in ppo if r["impl"] == "trl")
        print(f"\nPPO: {args.rollout} answers per iteration ({args.rollout // args.generations} prompts x {args.generations}), "
              f"{args.new_tokens} new tokens at most, mini-batch {args.minibatch}, {args.ppo_epochs} epoch(s), "
              f"{args.iterations} iterations (first left out); prompt ids equal on both sides: {trl_run['same_prompt_ids']}\n")
        rows = []
        for dtype in args.dtypes:
            theirs = next(r for r in ppo if r["impl"] == "trl" and r["dtype"] == dtype)
            ours = next(r for r in ppo if r["impl"] == "ours" and r["dtype"] == dtype)
            for r in (theirs, ours):
                rows.append([dtype, "TRL GRPOTrainer" if r is theirs else "ours (PPO)", f"{r['rate']:.2f}",
                             f"{r['rate'] / theirs['rate']:.2f}x", f"{r['cpu_rate']:.2f}",
                             f"{r['cpu_rate'] / theirs['cpu_rate']:.2f}x",
                             " / ".join(f"{s:.1f}" for s in r["iteration_seconds"]),
                             f"{statistics.mean(r['tokens']):.1f}", f"{r['peak_mb']:,.0f}", f"{r['foreign_cores']:.2f}"])
        print(markdown_table(["dtype", "impl", "samples/s", "vs TRL", "samples/CPU-s", "vs TRL", "s per iteration",
                              "tokens/answer", "peak MB", "other load"], rows))
    if args.json:
        from llama2.atomic import write_text

        write_text(Path(args.json), json.dumps({"args": vars(args), "setup": setup, "versions": versions,
                                                "results": results}, indent=2))


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["rm", "ppo"], choices=["rm", "ppo"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--rm-batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--rm-steps", type=int, default=None, help="timed steps (default 10, --quick 3)")
    parser.add_argument("--rm-warmup", type=int, default=2)
    parser.add_argument("--rollout", type=int, default=32, help="answers per PPO iteration")
    parser.add_argument("--minibatch", type=int, default=8, help="answers per optimizer step")
    parser.add_argument("--generations", type=int, default=4, help="GRPO's answers per prompt (ours: prompt repeats)")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--iterations", type=int, default=None, help="PPO iterations, the first untimed (default 3, --quick 2)")
    parser.add_argument("--ppo-epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="runs per row; the fastest counts")
    parser.add_argument("--max-wait", type=float, default=60.0, help="seconds to wait for a quiet machine per run (0: none)")
    parser.add_argument("--noisy-cores", type=float, default=NOISY_CORES,
                        help="other processes' CPU use (cores) above which a run is redone once")
    parser.add_argument("--quick", action="store_true", help="3 timed reward-model steps and 2 PPO iterations")
    parser.add_argument("--profile", action="store_true", help="profile one run (first part and dtype) instead")
    parser.add_argument("--impl", default="ours", choices=["ours", "trl"], help="what --profile runs")
    parser.add_argument("--json", default=None, help="write all results here (atomically)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rm_steps = args.rm_steps if args.rm_steps is not None else (3 if args.quick else 10)
    args.iterations = args.iterations if args.iterations is not None else (2 if args.quick else 3)
    if args.rollout % args.minibatch or args.rollout % args.generations or args.iterations < 2:
        parser.error("--rollout must be a multiple of --minibatch and --generations, and --iterations at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        setup = {"params": write_small_model(scratch / "hf", seed=SEED)}
        common = {"hf": str(scratch / "hf"), "threads": args.threads, "lr": args.lr, "repeats": args.repeats,
                  "max_wait": args.max_wait, "noisy_cores": args.noisy_cores}
        jobs = []
        if "rm" in args.parts:
            write_pairs(scratch / "pairs.jsonl", 4 * args.rm_batch * (args.rm_warmup + args.rm_steps))
            base = {**common, "part": "rm", "data": str(scratch / "pairs.jsonl"), "pairs": str(scratch / "steps.json"),
                    "batch": args.rm_batch, "steps": args.rm_steps, "warmup": args.rm_warmup}
            setup["rm"] = write_step_pairs({**base, "dtype": "fp32"}, scratch / "steps.json")
            jobs += [{**base, "dtype": dtype, "impl": impl} for dtype in args.dtypes for impl in ("trl", "ours")]
        if "ppo" in args.parts:
            distinct = args.iterations * args.rollout // args.generations
            prompts = write_prompts(scratch / "prompts.jsonl", distinct, args.generations)
            base = {**common, "part": "ppo", "data": str(scratch / "prompts.jsonl"), "prompts": prompts,
                    "rollout": args.rollout, "minibatch": args.minibatch, "generations": args.generations,
                    "new_tokens": args.new_tokens, "iterations": args.iterations, "ppo_epochs": args.ppo_epochs}
            jobs += [{**base, "dtype": dtype, "impl": impl} for dtype in args.dtypes for impl in ("trl", "ours")]
        if args.profile:
            profile(next(job for job in jobs if job["impl"] == args.impl))
            return 0
        results = [measure(job) for job in jobs]
    report(args, results, setup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
