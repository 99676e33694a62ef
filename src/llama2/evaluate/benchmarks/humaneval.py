"""HumanEval (Chen et al., 2021): functional correctness of generated Python, pass@k.

Data: the release's `HumanEval.jsonl.gz` (or `.jsonl`) in DATA, records {task_id, prompt,
canonical_solution, test, entry_point}.

A completion model continues the prompt (signature + docstring) and stops at the Codex paper's stop
sequences ("\\ndef ", "\\nclass ", "\\nif __name__", "\\nprint(", "\\n#"), cut again here in case a
backend honours fewer stop strings; the program `prompt + completion + test + check(entry_point)`
then runs in the subprocess sandbox (`sandbox.py`). A chat model is asked to complete the function
and answer with a code block; the block is extracted and run after the prompt (so the prompt's
imports and helpers stay defined and a full function it wrote replaces the stub).

The Llama 2 paper reports pass@1 at temperature 0.1 and pass@100 at 0.8 over many samples; the
default here is one greedy sample (pass@1). `HumanEval(samples=n, temperature=t, ks=(1, 10, ...))`
draws n samples per problem (seeds 0..n-1, so every request is distinct for the cache) and reports
the unbiased pass@k estimator of Chen et al. (2021, §2.1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from llama2.errors import ConfigError, DataError
from llama2.evaluate.benchmarks.base import Mode, Request, Response, Sample, SampleResult, Task
from llama2.evaluate.benchmarks.loading import greedy, missing_data, read_jsonl, require_fields, take_first, use_chat
from llama2.evaluate.benchmarks.sandbox import SandboxLimits, run_program
from llama2.providers.base import Capabilities, Completion, GenerateRequest

STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
MAX_NEW_TOKENS = 512
CHAT_INSTRUCTION = ("Complete the following Python function. Answer with the complete function (with any imports "
                    "it needs) in one ```python code block.\n\n")
_CODE_BLOCK = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k samples passes) from n samples of which c passed:
    1 - C(n-c, k) / C(n, k), computed as a product to stay exact for large n (Chen et al., 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    failing = 1.0
    for i in range(n - c + 1, n + 1):
        failing *= 1.0 - k / i
    return 1.0 - failing


def truncate(completion: str, stops: Sequence[str] = STOP) -> str:
    """The completion up to the first stop sequence."""
    cut = min((i for i in (completion.find(s) for s in stops) if i >= 0), default=len(completion))
    return completion[:cut]


def build_program(doc: dict, completion: str) -> str:
    """The script the sandbox runs: the prompt, the model's code, the tests and the call of `check`.
    An answer holding a ``` code block (a chat answer) contributes that block, on a new line; any
    other text is a continuation of the prompt, cut at the stop sequences."""
    block = _CODE_BLOCK.search(completion)
    body = "\n" + block.group(1) if block else truncate(completion)
    return f"{doc['prompt']}{body}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"


class HumanEval(Task):
    name = "humaneval"
    modes = ("generate",)

    def __init__(self, samples: int = 1, temperature: float = 0.0, top_p: float = 0.95,
                 ks: Sequence[int] = (1,), limits: SandboxLimits = SandboxLimits()) -> None:
        if samples < 1 or any(not 1 <= k <= samples for k in ks):
            raise ConfigError(f"humaneval: every k of pass@k must lie in 1..samples (samples={samples}, ks={list(ks)})")
        if samples > 1 and temperature == 0:
            raise ConfigError("humaneval: several samples per problem need a temperature above 0 (the paper: 0.8 for pass@100)")
        self.samples, self.temperature, self.top_p, self.ks, self.limits = samples, temperature, top_p, tuple(ks), limits
        self.metrics = tuple(f"pass@{k}" for k in self.ks)

    def load(self, data_dir: Path, limit: int | None = None) -> list[Sample]:
        data_dir = Path(data_dir)
        path = next((p for p in (data_dir / "HumanEval.jsonl.gz", data_dir / "HumanEval.jsonl") if p.is_file()), None)
        if path is None:
            raise missing_data(self.name, data_dir, "HumanEval.jsonl.gz")
        samples = []
        for i, record in enumerate(read_jsonl(path)):
            require_fields(record, FIELDS, f"{path}: record {i + 1}")
            samples.append(Sample(record["task_id"], {name: record[name] for name in FIELDS}))
        if len({s.id for s in samples}) != len(samples):
            raise DataError(f"{path}: task_id values repeat; each problem needs its own")
        return take_first(samples, limit)

    def requests(self, sample: Sample, mode: Mode, capabilities: Capabilities) -> list[Request]:
        chat = use_chat(capabilities)
        params = greedy(MAX_NEW_TOKENS, stop=() if chat else STOP)
        if self.samples > 1:
            params = replace(params, temperature=self.temperature, top_p=self.top_p)
        prompt = sample.doc["prompt"]
        if chat:
            prompt = [{"role": "user", "content": f"{CHAT_INSTRUCTION}```python\n{prompt}```"}]
        if self.samples == 1:
            return [GenerateRequest(prompt, params)]
        return [GenerateRequest(prompt, replace(params, seed=seed)) for seed in range(self.samples)]

    def score(self, sample: Sample, mode: Mode, responses: Sequence[Response]) -> SampleResult:
        runs = []
        for response in responses:
            assert isinstance(response, Completion)
            result = run_program(build_program(sample.doc, response.text), self.limits)
            runs.append({"status": result.status, "reason": result.reason, "duration_s": round(result.duration_s, 3)})
        passed = sum(run["status"] == "passed" for run in runs)
        metrics = {f"pass@{k}": pass_at_k(len(runs), passed, k) for k in self.ks}
        extra = {"mode": "generate", "samples": len(runs), "passed": passed, "runs": runs}
        return SampleResult(sample.id, metrics, responses[0].text, sample.doc["canonical_solution"], None, extra)
