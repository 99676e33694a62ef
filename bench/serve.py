"""Serving benchmark: `llama2 serve` against llama.cpp's OpenAI-compatible server
(`llama-cpp-python[server]`) on the same weights, driven by the official `openai` client with 1, 4
and 16 concurrent streams; throughput and latency side by side, with ratios.

    python bench/serve.py [--model default] [--gguf-dtype f32] [--concurrency 1 4 16]
                          [--rounds 2] [--min-requests 4] [--prompt-tokens 32 64] [--max-tokens 128]
                          [--repeats 3] [--threads 1 2] [--json OUT]
    python bench/serve.py --quick        # 64 new tokens, one round, one repeat, no waiting for quiet

Setup, in a scratch folder: the model (`--model`: the bundled `default`, or a checkpoint path) is
exported to GGUF (`Llama.save(..., format="gguf")`) for llama.cpp; prompts are spans of the bundled
corpus of `--prompt-tokens` tokens (BOS included) whose greedy continuation runs the full
`--max-tokens` without reaching EOS, first under our engine in-process, then under llama.cpp's
server (its warm-up pass), so that both sides generate exactly `--max-tokens` tokens per request
(each run reports the tokens it actually got, from the usage block or the finish reason).

The servers, one at a time (the other is stopped, so it takes no CPU), for each of `--threads`
(llama.cpp's n_threads and n_threads_batch; OMP/MKL threads for ours):
- llama.cpp: `python -m llama_cpp.server` through tests/llama_cpp_server.py (which switches off
  llama.cpp's extra buffer types: their AMX kernels crash on this project's CPUs), n_ctx = the
  model's context, default f16 KV cache (`--cpp-cache-type`), `interrupt_requests` off. That server
  holds ONE `llama_cpp.Llama` and a global lock: requests run one after another, whatever the
  concurrency (it has no parallel slots; llama.cpp's C++ `llama-server -np N` does, llama-cpp-python
  does not expose it). With `interrupt_requests` at its default (true), a request that arrives while
  another streams ENDS that stream early, so it is switched off here: every request runs to length.
- ours: `llama2 serve` with a config naming the model (`max_batch_size` = the highest concurrency),
  a user and an API key made with `llama2 admin` on a fresh data dir: continuous batching, so
  concurrent streams share each decode step.

Load: `openai.AsyncOpenAI`, streaming text completions (`/v1/completions`), temperature 0 (llama.cpp
also `repeat_penalty` 1.0: its server defaults to 1.1), `--max-tokens` new tokens. Each concurrency
level c sends max(`--min-requests`, `--rounds` * c) requests, c in flight at any time, each with a
different prompt. Per level: output tokens/s (completion tokens / wall time from the first request
sent to the last stream closed), requests/s, time to first token (request sent to first text
chunk) and inter-token latency (gaps between a stream's text chunks) at p50/p95. Each server gets a
warm-up pass first (every prompt once, then one burst at the highest concurrency). A level runs
`--repeats` times and the fastest undisturbed run counts: "other load" is the CPU the rest of the
machine used during the run (all CPU time minus this process's and the server's).

Why two thread counts: a server is more than its matrix kernels. Both are Python processes whose
event loop (HTTP, SSE, JSON, detokenizing) runs beside the compute threads, and the load generator
runs on the same machine; on 2 cores, 2 compute threads leave no core for the rest, and both
servers ran 1.4-3x slower than with 1 (bench/README.md, "Serving").
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402  (bench/ is a folder of scripts, not a package)
    OtherLoad,
    machine_line,
    markdown_table,
    source_version,
    wait_until_quiet,
)

REPO = Path(__file__).resolve().parents[1]
CPP_LAUNCHER = REPO / "tests" / "llama_cpp_server.py"
IMPLS = ("llama.cpp", "ours")
SEED = 1234
QUIET_CORES = 0.15  # other processes' mean CPU use (cores) below which a timed run counts as undisturbed
GGML_TYPE = {"f32": "0", "f16": "1"}  # llama.cpp's type_k / type_v codes
MODEL_NAME = "bench"
START_TIMEOUT_S = 180.0
QUICK = {"max_tokens": 64, "rounds": 1, "repeats": 1, "max_wait": 0.0}  # --quick's defaults
TARGET_STREAMS = 16  # the targets are stated at 16 concurrent streams

if TYPE_CHECKING:
    from llama2.api import Llama
    from llama2.model.tokenizer import Tokenizer


# ---------------------------------------------------------------------------------------------- prompts


@dataclass
class Prompt:
    text: str
    tokens: int  # BOS included, as both servers encode a text prompt


def candidate_prompts(tokenizer: "Tokenizer", count: int, low: int, high: int, rng: random.Random) -> list[Prompt]:
    """`count` distinct corpus spans of `low`..`high` tokens (BOS included), each starting at a word."""
    from llama2.data.corpus import sample_corpus_path

    with open(sample_corpus_path(), encoding="utf-8") as handle:
        words = [w for line in handle for w in json.loads(line)["text"].split()]
    found: dict[str, Prompt] = {}
    for _ in range(count * 50):
        if len(found) == count:
            break
        target = rng.randint(low, high)
        start = rng.randrange(len(words) - 4 * high)
        end = start + max(1, target // 2)
        text = " ".join(words[start:end])
        length = len(tokenizer.encode(text, bos=True, eos=False))
        while length < target:
            end += 1
            text = " ".join(words[start:end])
            length = len(tokenizer.encode(text, bos=True, eos=False))
        if low <= length <= high and text not in found:
            found[text] = Prompt(text, length)
    return list(found.values())


def run_to_length(llama: "Llama", prompts: list[Prompt], max_tokens: int) -> list[Prompt]:
    """The prompts whose greedy continuation under our engine fills `max_tokens` without EOS."""
    results = llama.generate([p.text for p in prompts], max_new_tokens=max_tokens, temperature=0.0)
    return [p for p, r in zip(prompts, results) if r.finish_reason == "length" and len(r.tokens) == max_tokens]


# ---------------------------------------------------------------------------------------------- servers


@dataclass
class Server:
    impl: str
    process: subprocess.Popen
    base_url: str  # .../v1
    api_key: str
    log_path: Path
    extra_body: dict = field(default_factory=dict)

    def cpu_seconds(self) -> float:
        """CPU time the server process (all its threads) has used so far."""
        with open(f"/proc/{self.process.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(server: Server, probe: str) -> None:
    """Poll `probe` until the server answers at all (any HTTP status) or its process exits."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{server.impl} server exited with code {server.process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(probe, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered (401 without a key, say): it is up
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"{server.impl} server not up within {START_TIMEOUT_S:.0f} s; see {server.log_path}")


def spawn(impl: str, command: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    """A server in its own session (so Ctrl-C reaches only this script, which then stops it)."""
    with open(log_path, "w") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=REPO)


def thread_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false"}


def start_llama_cpp(gguf: Path, n_ctx: int, threads: int, opts: argparse.Namespace, scratch: Path) -> Server:
    port = free_port()
    cache = GGML_TYPE[opts.cpp_cache_type]
    command = [sys.executable, str(CPP_LAUNCHER), "--model", str(gguf), "--model_alias", MODEL_NAME,
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
               "--n_threads", str(threads), "--n_threads_batch", str(threads),
               "--type_k", cache, "--type_v", cache, "--interrupt_requests", "false", "--verbose", "false"]
    log_path = scratch / "llama-cpp-server.log"
    server = Server("llama.cpp", spawn("llama.cpp", command, log_path, thread_env(threads)),
                    f"http://127.0.0.1:{port}/v1", "none", log_path, extra_body={"repeat_penalty": 1.0})
    wait_until_up(server, f"http://127.0.0.1:{port}/v1/models")
    return server


def llama2_cli(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "llama2", *args], input=stdin, capture_output=True, text=True,
                          cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"llama2 {' '.join(args[:2])} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def start_ours(spec: str, threads: int, opts: argparse.Namespace, scratch: Path) -> Server:
    """A fresh data dir with one user and key (made with `llama2 admin`), then `llama2 serve`."""
    data_dir = scratch / f"serve-data-{threads}"
    email = "bench@example.com"
    llama2_cli("admin", "add-user", email, "--password-stdin", "--data-dir", str(data_dir), stdin="bench-password\n")
    key = json.loads(llama2_cli("admin", "create-key", email, "--name", "bench", "--json", "--data-dir", str(data_dir)))["key"]
    config = scratch / "serve.yaml"
    batch = max(opts.concurrency)
    config.write_text(json.dumps({"models": {MODEL_NAME: {"spec": spec, "max_batch_size": batch, "max_queue": 1024}}}))
    port = free_port()
    command = [sys.executable, "-m", "llama2", "serve", "--config", str(config), "--host", "127.0.0.1",
               "--port", str(port), "--data-dir", str(data_dir)]
    log_path = scratch / "llama2-serve.log"
    server = Server("ours", spawn("ours", command, log_path, thread_env(threads)),
                    f"http://127.0.0.1:{port}/v1", key, log_path)
    wait_until_up(server, f"http://127.0.0.1:{port}/health")
    return server


# ---------------------------------------------------------------------------------------------- load


@dataclass
class Outcome:
    """One streamed request as the client saw it (times in seconds from the run's start)."""

    sent: float
    chunks: list[float]  # arrival of each chunk carrying text
    done: float
    finish_reason: str | None
    usage_tokens: int | None  # completion_tokens from a usage chunk, when the server sends one
    text: str


async def one_request(client, server: Server, prompt: Prompt, max_tokens: int, origin: float) -> Outcome:
    sent = time.perf_counter() - origin
    stream = await client.completions.create(
        model=MODEL_NAME, prompt=prompt.text, max_tokens=max_tokens, temperature=0.0, stream=True,
        stream_options={"include_usage": True}, extra_body=server.extra_body or None,
    )
    chunks, parts, finish, usage = [], [], None, None
    async for chunk in stream:
        now = time.perf_counter() - origin
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.text:
                chunks.append(now)
                parts.append(choice.text)
            if choice.finish_reason:
                finish = choice.finish_reason
    return Outcome(sent, chunks, time.perf_counter() - origin, finish, usage, "".join(parts))


async def drive(server: Server, prompts: list[Prompt], concurrency: int, max_tokens: int) -> tuple[float, list[Outcome]]:
    """Send one request per prompt, `concurrency` in flight; returns (wall seconds, outcomes)."""
    import httpx
    import openai

    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=600,
                                  http_client=httpx.AsyncClient(limits=limits, timeout=600)) as client:
        gate = asyncio.Semaphore(concurrency)
        origin = time.perf_counter()

        async def limited(prompt: Prompt) -> Outcome:
            async with gate:
                return await one_request(client, server, prompt, max_tokens, origin)

        outcomes = await asyncio.gather(*(limited(p) for p in prompts))
        return time.perf_counter() - origin, list(outcomes)


async def completion_tokens(server: Server, prompts: list[Prompt], max_tokens: int) -> list[tuple[int, int]]:
    """(prompt_tokens, completion_tokens) of each prompt, non-streaming, one at a time (the warm-up)."""
    import openai

    async with openai.AsyncOpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=600) as client:
        counts = []
        for prompt in prompts:
            reply = await client.completions.create(model=MODEL_NAME, prompt=prompt.text, max_tokens=max_tokens,
                                                    temperature=0.0, extra_body=server.extra_body or None)
            counts.append((reply.usage.prompt_tokens, reply.usage.completion_tokens))
        return counts


def tokens_of(outcome: Outcome, max_tokens: int, known: int) -> int:
    """Completion tokens of one stream: the usage chunk's count if sent (ours), else `max_tokens` for a
    stream that ended for length, else the same prompt's count from the non-streaming warm-up
    (greedy decoding repeats itself; llama-cpp-python's stream carries no usage)."""
    if outcome.usage_tokens is not None:
        return outcome.usage_tokens
    return max_tokens if outcome.finish_reason == "length" else known


def own_cpu_seconds() -> float:
    """CPU time of this process (the load generator: the openai client, SSE parsing), all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float:
    import numpy

    return float(numpy.percentile(values, q)) if values else float("nan")


def summarize(wall: float, outcomes: list[Outcome], counts: list[int]) -> dict:
    ttft = [o.chunks[0] - o.sent for o in outcomes if o.chunks]
    gaps = [b - a for o in outcomes for a, b in zip(o.chunks, o.chunks[1:])]
    return {
        "wall_s": wall, "requests": len(outcomes), "completion_tokens": sum(counts),
        "tokens_per_request": [min(counts), max(counts)], "tokens_per_s": sum(counts) / wall,
        "requests_per_s": len(outcomes) / wall,
        "ttft_ms": {"p50": 1e3 * percentile(ttft, 50), "p95": 1e3 * percentile(ttft, 95)},
        "itl_ms": {"p50": 1e3 * percentile(gaps, 50), "p95": 1e3 * percentile(gaps, 95)},
        "chunks": sum(len(o.chunks) for o in outcomes),
        "finish_reasons": sorted({str(o.finish_reason) for o in outcomes}),
    }


def measure_level(server: Server, prompts: list[Prompt], known: dict[str, int], concurrency: int,
                  opts: argparse.Namespace) -> dict:
    """Run one concurrency level `--repeats` times (up to 3x as many when disturbed); the fastest
    undisturbed run counts."""
    requests = max(opts.min_requests, opts.rounds * concurrency)
    chosen = [prompts[i % len(prompts)] for i in range(requests)]
    runs = []
    while sum(r["other_cores"] < QUIET_CORES for r in runs) < opts.repeats and len(runs) < 3 * opts.repeats:
        if runs and runs[-1]["other_cores"] >= QUIET_CORES:
            wait_until_quiet(max_wait_s=opts.max_wait)
        server_cpu, client_cpu = server.cpu_seconds(), own_cpu_seconds()
        with OtherLoad() as load:
            wall, outcomes = asyncio.run(drive(server, chosen, concurrency, opts.max_tokens))
        server_cores = (server.cpu_seconds() - server_cpu) / wall
        client_cores = (own_cpu_seconds() - client_cpu) / wall
        counts = [tokens_of(o, opts.max_tokens, known[p.text]) for o, p in zip(outcomes, chosen)]
        run = summarize(wall, outcomes, counts)
        run.update(server_cores=server_cores, client_cores=client_cores, other_cores=max(0.0, load.cores - server_cores))
        runs.append(run)
        print(f"    {run['tokens_per_s']:8.1f} tok/s  {run['requests_per_s']:6.2f} req/s  "
              f"TTFT p50 {run['ttft_ms']['p50']:7.1f} ms  ITL p50 {run['itl_ms']['p50']:6.1f} ms  "
              f"server {server_cores:.2f} cores, client {client_cores:.2f}, other {run['other_cores']:.2f}", flush=True)
    kept = [r for r in runs if r["other_cores"] < QUIET_CORES] or runs
    best = max(kept, key=lambda r: r["tokens_per_s"])
    return {**best, "concurrency": concurrency, "runs_tokens_per_s": [r["tokens_per_s"] for r in runs],
            "quiet_runs": sum(r["other_cores"] < QUIET_CORES for r in runs)}


def warm_up(server: Server, prompts: list[Prompt], opts: argparse.Namespace) -> list[tuple[int, int]]:
    """Every prompt once, non-streaming (their token counts), then one streamed burst at the highest
    concurrency (fills caches and thread pools before anything is timed)."""
    counts = asyncio.run(completion_tokens(server, prompts, opts.max_tokens))
    top = max(opts.concurrency)
    asyncio.run(drive(server, [prompts[i % len(prompts)] for i in range(top)], top, opts.max_tokens))
    return counts


# ---------------------------------------------------------------------------------------------- parent


def benchmark(opts: argparse.Namespace) -> int:
    import torch

    from llama2.api import Llama

    torch.set_num_threads(max(opts.threads))
    started = datetime.datetime.now().astimezone()
    command = shlex.join(["python", *sys.argv])
    print(f"{machine_line()}; {started:%Y-%m-%d %H:%M %Z}")
    print(f"$ {command}   (source: {source_version()})")
    target = opts.model.removeprefix("local:")
    spec = f"local:{target}"
    needed = max(max(opts.min_requests, opts.rounds * c) for c in opts.concurrency)
    results: dict[tuple[str, int, int], dict] = {}
    with tempfile.TemporaryDirectory(prefix="llama2-bench-serve-") as folder, ExitStack() as servers:
        scratch = Path(folder)
        llama = Llama.from_pretrained(target, device="cpu", dtype="float32")
        if llama.tokenizer is None:
            raise SystemExit(f"{spec}: the model has no tokenizer; the servers take text prompts")
        params = sum(p.numel() for p in llama.model.parameters())
        n_ctx = llama.args.max_seq_len
        if opts.prompt_tokens[1] + opts.max_tokens > n_ctx:
            raise SystemExit(f"--prompt-tokens {opts.prompt_tokens[1]} + --max-tokens {opts.max_tokens} exceeds the "
                             f"model's context of {n_ctx}")
        gguf = scratch / f"model-{opts.gguf_dtype}.gguf"
        llama.save(gguf, format="gguf", dtype=opts.gguf_dtype)
        rng = random.Random(SEED)
        print(f"{spec}: {params / 1e6:.1f}M parameters, context {n_ctx}; GGUF {opts.gguf_dtype} "
              f"{gguf.stat().st_size / 1e6:.0f} MB; choosing prompts ...", flush=True)
        pool = run_to_length(llama, candidate_prompts(llama.tokenizer, 3 * needed, *opts.prompt_tokens, rng),
                             opts.max_tokens)
        del llama
        if len(pool) < needed:
            raise SystemExit(f"only {len(pool)} corpus spans run {opts.max_tokens} tokens without EOS under greedy "
                             f"decoding; ask for fewer --max-tokens")
        print(f"  {len(pool)} prompts run to length under our engine", flush=True)

        prompts: list[Prompt] = []
        known: dict[str, int] = {}
        for threads, impl in [(t, i) for t in opts.threads for i in opts.impls]:
            print(f"{impl}, {threads} threads: starting the server ...", flush=True)
            if impl == "llama.cpp":
                server = start_llama_cpp(gguf, n_ctx, threads, opts, scratch)
            else:
                server = start_ours(spec, threads, opts, scratch)
            servers.callback(server.stop)
            if not prompts:
                # llama.cpp's warm-up also picks the prompts it too runs to length (near-ties in its
                # f16 cache can reach EOS where ours does not)
                counts = asyncio.run(completion_tokens(server, pool, opts.max_tokens))
                agree = [p for p, (_, n) in zip(pool, counts) if n == opts.max_tokens]
                prompts = (agree if len(agree) >= needed else pool)[:needed]
                mismatched = sum(pt != p.tokens for p, (pt, _) in zip(pool, counts))
                print(f"  {len(agree)}/{len(pool)} prompts also run to length under {impl}; "
                      f"{mismatched} prompt token counts differ from ours; using {len(prompts)}", flush=True)
            counts = warm_up(server, prompts, opts)
            known = {p.text: n for p, (_, n) in zip(prompts, counts)}
            for concurrency in opts.concurrency:
                wait_until_quiet(max_wait_s=opts.max_wait)
                print(f"  {impl}, {threads} threads, {concurrency} concurrent streams:", flush=True)
                results[(impl, threads, concurrency)] = measure_level(server, prompts, known, concurrency, opts)
            server.stop()
    print(render(results, opts, prompts, params, spec))
    if opts.json:
        report = {"date": started.isoformat(timespec="seconds"), "machine": machine_line(), "command": command,
                  "source": source_version(), "model": spec, "params": params,
                  "prompt_tokens": [p.tokens for p in prompts],
                  "settings": {k: v for k, v in vars(opts).items() if k != "json"},
                  "runs": [{"impl": impl, "threads": threads, **run} for (impl, threads, _), run in results.items()]}
        Path(opts.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {opts.json}")
    return 0


def render(results: dict, opts: argparse.Namespace, prompts: list[Prompt], params: int, spec: str) -> str:
    """The table (markdown, so it pastes into bench/README.md) and the two targets of the issue, per
    thread count."""
    one, top = min(opts.concurrency), max(opts.concurrency)
    rows = []
    for (impl, threads, c), run in sorted(results.items(), key=lambda item: (item[0][1], item[0][2], item[0][0])):
        peer = results.get(("llama.cpp", threads, c))
        alone = results.get((impl, threads, one))
        low, high = run["tokens_per_request"]
        rows.append([
            impl, str(threads), str(c), str(run["requests"]), str(low) if low == high else f"{low}-{high}",
            f"{run['tokens_per_s']:,.1f}", f"{run['requests_per_s']:.2f}",
            f"{run['ttft_ms']['p50']:,.1f}", f"{run['ttft_ms']['p95']:,.1f}",
            f"{run['itl_ms']['p50']:.1f}", f"{run['itl_ms']['p95']:.1f}",
            f"{run['tokens_per_s'] / peer['tokens_per_s']:.2f}x" if peer else "n/a",
            f"{run['tokens_per_s'] / alone['tokens_per_s']:.2f}x" if alone else "n/a",
            f"{run['server_cores']:.2f}", f"{run['client_cores']:.2f}", f"{run['other_cores']:.2f}",
        ])
    lengths = [p.tokens for p in prompts]
    lines = [f"\n{spec} ({params / 1e6:.1f}M parameters), streaming /v1/completions, prompts {min(lengths)}-"
             f"{max(lengths)} tokens, {opts.max_tokens} new tokens, temperature 0; llama.cpp on GGUF "
             f"{opts.gguf_dtype} with an {opts.cpp_cache_type} KV cache; best of {opts.repeats}; latencies in ms; "
             f"cores = CPU used during the run by the server, by this script's client, by everything else\n",
             markdown_table(["impl", "threads", "streams", "requests", "tokens/req", "output tok/s", "req/s", "TTFT p50",
                             "TTFT p95", "ITL p50", "ITL p95", "vs llama.cpp", f"vs own @{one}",
                             "server cores", "client cores", "other load"], rows)]
    for threads in opts.threads:
        ours_top, cpp_top = results.get(("ours", threads, top)), results.get(("llama.cpp", threads, top))
        ours_one = results.get(("ours", threads, one))
        if ours_top and cpp_top:
            ratio = ours_top["tokens_per_s"] / cpp_top["tokens_per_s"]
            verdict = f" (target >= 1x: {'met' if ratio >= 1 else 'NOT met'})" if top == TARGET_STREAMS else ""
            lines.append(f"\n{threads} threads: ours at {top} streams vs llama.cpp at {top}: {ratio:.2f}x output "
                         f"tokens/s{verdict}")
        if ours_top and ours_one and top != one:
            ratio = ours_top["tokens_per_s"] / ours_one["tokens_per_s"]
            verdict = f" (target >= 4x: {'met' if ratio >= 4 else 'NOT met'})" if (one, top) == (1, TARGET_STREAMS) else ""
            lines.append(f"{threads} threads: ours at {top} streams vs ours at {one}: {ratio:.2f}x output "
                         f"tokens/s{verdict}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="the bundled `default` (local:default) or a checkpoint path")
    parser.add_argument("--gguf-dtype", choices=("f32", "f16"), default="f32", help="llama.cpp's weights")
    parser.add_argument("--cpp-cache-type", choices=tuple(GGML_TYPE), default="f16",
                        help="llama.cpp's KV cache (f16 is its default; ours is fp32)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="streams in flight per level")
    parser.add_argument("--rounds", type=int, default=2, help="requests per level = max(--min-requests, rounds x streams)")
    parser.add_argument("--min-requests", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, nargs=2, default=[32, 64], metavar=("MIN", "MAX"),
                        help="prompt length range, BOS included")
    parser.add_argument("--max-tokens", type=int, default=128, help="new tokens per request (every prompt runs to length)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per level; the fastest undisturbed one counts")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="compute threads of each server; each count is a separate pair of servers")
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--max-wait", type=float, default=300, help="seconds to wait for a quiet machine per level")
    parser.add_argument("--quick", action="store_true",
                        help="a fast check: --max-tokens 64 --rounds 1 --repeats 1 --max-wait 0 (unless given)")
    parser.add_argument("--json", help="write the results here")
    if parser.parse_args(argv).quick:
        parser.set_defaults(**QUICK)
    opts = parser.parse_args(argv)
    low, high = opts.prompt_tokens
    if min(opts.concurrency + opts.threads) < 1 or opts.rounds < 1 or opts.min_requests < 1 or opts.repeats < 1 or opts.max_tokens < 1:
        parser.error("--concurrency, --threads, --rounds, --min-requests, --repeats and --max-tokens must be at least 1")
    if not 2 <= low <= high:
        parser.error("--prompt-tokens needs 2 <= MIN <= MAX")
    opts.concurrency = sorted(set(opts.concurrency))
    opts.threads = sorted(set(opts.threads))
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds like Ctrl-C: the servers are stopped
    try:
        return benchmark(opts)
    except KeyboardInterrupt:
        print("interrupted; the servers were stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
