"""BIG-Bench Hard (Suzgun et al., 2022), 3-shot chain of thought, as the Llama 2 paper reports it.

Data: the layout the BBH repository publishes, `DATA/bbh/{task}.json` = {"examples": [{"input",
"target"}, ...]} and `DATA/cot-prompts/{task}.txt`, the official 3-shot CoT prompts (lines up to a
"-----" line are a header — the canary string — and are dropped). The paper's 23 tasks are 27 files:
logical_deduction and tracking_shuffled_objects come in three, five and seven objects; each file is
its own group here.

Prompt, as in the repository's released Codex outputs:

    {cot prompt}\\n\\nQ: {input}\\nA: Let's think step by step.

The model continues greedily until "\\n\\nQ:"; its answer is what follows "So the answer is" up to the
end of that line, less a final "."; exact match against the target. A multiple-choice answer that
starts with its option label, "(B) the red one", counts as "(B)" (targets of those tasks are labels).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from llama2.errors import DataError
from llama2.evaluate.benchmarks.aggregate import grouped_scores
from llama2.evaluate.benchmarks.base import Mode, Request, Response, Sample, SampleResult, Task
from llama2.evaluate.benchmarks.loading import greedy, missing_data, read_json, read_text, take_per_group, use_chat
from llama2.providers.base import Capabilities, Completion, GenerateRequest

TASKS = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "dyck_languages",
    "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
    "logical_deduction_seven_objects", "logical_deduction_three_objects", "movie_recommendation",
    "multistep_arithmetic_two", "navigate", "object_counting", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
    "word_sorting",
)
STOP = ("\n\nQ:",)
MAX_NEW_TOKENS = 1024
CHAT_INSTRUCTION = ("Answer the last question the way the examples do: think step by step, then end with "
                    "\"So the answer is ...\".\n\n")
_ANSWER = re.compile(r"the answer is\s*(.*)", re.IGNORECASE)
_OPTION = re.compile(r"^\([A-Z]\)")


def read_prompt(path: Path) -> str:
    """A cot-prompts file without its header (everything up to the "-----" line)."""
    text = read_text(path)
    lines = text.split("\n")
    if "-----" in lines:
        text = "\n".join(lines[lines.index("-----") + 1 :])
    return text.strip()


def build_prompt(cot_prompt: str, question: str) -> str:
    return f"{cot_prompt}\n\nQ: {question}\nA: Let's think step by step."


def extract_answer(completion: str) -> str:
    """The text after the first "So the answer is" to the end of its line, without a final "."; ""
    when the model never says it. "(C) blue" becomes "(C)"."""
    match = _ANSWER.search(completion)
    if not match:
        return ""
    answer = match.group(1).strip()
    answer = answer.removesuffix(".").strip()
    option = _OPTION.match(answer)
    return option.group(0) if option else answer


class BBH(Task):
    name = "bbh"
    modes = ("generate",)
    metrics = ("exact_match",)

    def __init__(self) -> None:
        self._prompts: dict[str, str] = {}

    def load(self, data_dir: Path, limit: int | None = None) -> list[Sample]:
        """Every `bbh/*.json` task (the 27 files of the release when complete) in name order; with
        `limit`, items are taken from the tasks in turn."""
        data_dir = Path(data_dir)
        files = sorted((data_dir / "bbh").glob("*.json"))
        if not files:
            raise missing_data(self.name, data_dir, "bbh/{task}.json")
        examples = {path.stem: self._examples(path) for path in files}
        samples = []
        for task, items in take_per_group(examples, limit).items():
            prompt_path = data_dir / "cot-prompts" / f"{task}.txt"
            if not prompt_path.is_file():
                raise missing_data(self.name, data_dir, f"cot-prompts/{task}.txt")
            self._prompts[task] = read_prompt(prompt_path)
            samples += [Sample(f"{task}/{i}", {"task": task, **item}, group=task) for i, item in enumerate(items)]
        return samples

    @staticmethod
    def _examples(path: Path) -> list[dict[str, str]]:
        data = read_json(path)
        examples = data.get("examples") if isinstance(data, dict) else None
        if not isinstance(examples, list):
            raise DataError(f"{path}: expected {{\"examples\": [{{\"input\": ..., \"target\": ...}}, ...]}}")
        for i, item in enumerate(examples):
            if not (isinstance(item, dict) and isinstance(item.get("input"), str) and isinstance(item.get("target"), str)):
                raise DataError(f"{path}: example {i} needs string fields 'input' and 'target'")
        return [{"input": item["input"], "target": item["target"]} for item in examples]

    def prompt(self, sample: Sample) -> str:
        task = sample.doc["task"]
        if task not in self._prompts:
            raise DataError(f"bbh: task {task!r} was not loaded; call load() with its data first")
        return build_prompt(self._prompts[task], sample.doc["input"])

    def requests(self, sample: Sample, mode: Mode, capabilities: Capabilities) -> list[Request]:
        prompt = self.prompt(sample)
        if use_chat(capabilities):
            return [GenerateRequest([{"role": "user", "content": CHAT_INSTRUCTION + prompt}], greedy(MAX_NEW_TOKENS))]
        return [GenerateRequest(prompt, greedy(MAX_NEW_TOKENS, stop=STOP))]

    def score(self, sample: Sample, mode: Mode, responses: Sequence[Response]) -> SampleResult:
        (completion,) = responses
        assert isinstance(completion, Completion)
        predicted = extract_answer(completion.text)
        target = sample.doc["target"].strip()
        extra = {"mode": "generate", "extraction": "text after 'So the answer is'", "completion": completion.text}
        return SampleResult(sample.id, {"exact_match": float(predicted == target)}, predicted, target, sample.group, extra)

    def aggregate(self, results: Sequence[SampleResult]) -> dict[str, float]:
        """`exact_match`: the average over tasks (each task weighs the same); `exact_match_micro`: the
        mean over all items (lm-eval's `bbh` group weighting); `exact_match,task=NAME` per task."""
        return grouped_scores(results, "exact_match", "task")
