"""MMLU (Hendrycks et al., 2021), 5-shot, as the Llama 2 paper reports it (Table 3/19).

Data: the original release's layout, `DATA/dev/{subject}_dev.csv` (the few-shot examples) and
`DATA/test/{subject}_test.csv`, CSV without a header row, columns question, A, B, C, D, answer.

Prompt, character for character as lm-eval's `mmlu` task builds it (its default template and
`first_n` few-shot sampler), which is the original evaluate.py's format except that lm-eval strips the
question and writes "about abstract algebra" where evaluate.py's format_subject wrote "about  abstract
algebra" (two spaces):

    The following are multiple choice questions (with answers) about {subject}.\\n\\n
    {dev question}\\nA. ...\\nB. ...\\nC. ...\\nD. ...\\nAnswer: {letter}\\n\\n      (x 5, dev order)
    {test question}\\nA. ...\\nB. ...\\nC. ...\\nD. ...\\nAnswer:

Log-likelihood mode (the paper's protocol) scores the continuations " A" .. " D" and predicts the
argmax. Generate mode (chat APIs) asks once and takes the first standalone letter A-D of the answer.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from statistics import fmean

from llama2.errors import DataError
from llama2.evaluate.benchmarks.aggregate import grouped_scores
from llama2.evaluate.benchmarks.base import Mode, Request, Response, Sample, SampleResult, Task
from llama2.evaluate.benchmarks.loading import greedy, missing_data, take_per_group, use_chat
from llama2.providers.base import Capabilities, Completion, GenerateRequest, Loglikelihood, LoglikelihoodRequest

LETTERS = ("A", "B", "C", "D")
CHAT_INSTRUCTION = ("Answer the last question. Reply with only the letter (A, B, C or D) of the correct answer.\n\n")
GENERATE_EXTRACTION = "first standalone letter A-D in the answer"
_LETTER = re.compile(r"\b([ABCD])\b")

# Subject -> category, as the MMLU paper groups them (and lm-eval's mmlu_stem/humanities/... groups).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "stem": (
        "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
        "college_computer_science", "college_mathematics", "college_physics", "computer_security",
        "conceptual_physics", "electrical_engineering", "elementary_mathematics", "high_school_biology",
        "high_school_chemistry", "high_school_computer_science", "high_school_mathematics",
        "high_school_physics", "high_school_statistics", "machine_learning",
    ),
    "humanities": (
        "formal_logic", "high_school_european_history", "high_school_us_history", "high_school_world_history",
        "international_law", "jurisprudence", "logical_fallacies", "moral_disputes", "moral_scenarios",
        "philosophy", "prehistory", "professional_law", "world_religions",
    ),
    "social_sciences": (
        "econometrics", "high_school_geography", "high_school_government_and_politics",
        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
        "human_sexuality", "professional_psychology", "public_relations", "security_studies", "sociology",
        "us_foreign_policy",
    ),
    "other": (
        "business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging",
        "management", "marketing", "medical_genetics", "miscellaneous", "nutrition", "professional_accounting",
        "professional_medicine", "virology",
    ),
}
SUBJECT_CATEGORY = {subject: category for category, subjects in CATEGORIES.items() for subject in subjects}


def description(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def format_example(doc: dict, *, with_answer: bool) -> str:
    """One question block; shots end with " {letter}\\n\\n", the question asked ends at "Answer:"."""
    text = doc["question"].strip() + "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, doc["choices"]))
    return text + "\nAnswer:" + (f" {doc['answer']}\n\n" if with_answer else "")


def few_shot_prefix(subject: str, shots: Sequence[dict]) -> str:
    return description(subject) + "".join(format_example(shot, with_answer=True) for shot in shots)


def read_csv(path: Path) -> list[dict]:
    """Rows of an MMLU CSV file as docs {question, choices, answer}; the csv module handles the commas,
    quotes and newlines inside fields."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: cannot read as CSV ({error}); fetch the data again") from error
    docs = []
    for lineno, row in enumerate(rows, 1):
        if len(row) != 6:
            raise DataError(f"{path}: row {lineno} has {len(row)} columns; expected 6 (question,A,B,C,D,answer), no header")
        answer = row[5].strip()
        if answer not in LETTERS:
            raise DataError(f"{path}: row {lineno} has answer {row[5]!r}; expected one of A, B, C, D")
        docs.append({"question": row[0], "choices": row[1:5], "answer": answer})
    return docs


def extract_letter(text: str) -> str | None:
    """The first A, B, C or D standing alone ("B", "(B)", "B." and "Answer: B" count; "Bob" does not)."""
    match = _LETTER.search(text)
    return match.group(1) if match else None


class MMLU(Task):
    """MMLU k-shot (k=5 by default). `load` keeps each subject's few-shot prefix on the task, so
    `requests` needs only the sample; every question of a subject shares that prefix."""

    name = "mmlu"
    modes = ("loglikelihood", "generate")
    metrics = ("acc",)

    def __init__(self, num_fewshot: int = 5) -> None:
        self.num_fewshot = num_fewshot
        self._prefix: dict[str, str] = {}
        self._num_shots: dict[str, int] = {}

    def load(self, data_dir: Path, limit: int | None = None) -> list[Sample]:
        """Subjects are the `test/*_test.csv` files in name order; with `limit`, questions are taken
        from the subjects in turn (see `take_per_group`). Fewer than `num_fewshot` dev rows use all
        there are (fetched data may lack some; each result's extra says how many shots it had)."""
        data_dir = Path(data_dir)
        test_files = sorted((data_dir / "test").glob("*_test.csv"))
        if not test_files:
            raise missing_data(self.name, data_dir, "test/{subject}_test.csv")
        tests = {path.name.removesuffix("_test.csv"): read_csv(path) for path in test_files}
        samples = []
        for subject, docs in take_per_group(tests, limit).items():
            shots = self._shots(data_dir, subject)
            self._prefix[subject], self._num_shots[subject] = few_shot_prefix(subject, shots), len(shots)
            samples += [Sample(f"{subject}/{i}", {"subject": subject, **doc}, group=subject) for i, doc in enumerate(docs)]
        return samples

    def _shots(self, data_dir: Path, subject: str) -> list[dict]:
        if self.num_fewshot == 0:
            return []
        dev = data_dir / "dev" / f"{subject}_dev.csv"
        if not dev.is_file():
            raise missing_data(self.name, data_dir, f"dev/{subject}_dev.csv")
        return read_csv(dev)[: self.num_fewshot]

    def context(self, sample: Sample) -> str:
        """The prompt up to and including the final "Answer:" (lm-eval's context string)."""
        subject = sample.doc["subject"]
        if subject not in self._prefix:
            raise DataError(f"mmlu: subject {subject!r} was not loaded; call load() with its data first")
        return self._prefix[subject] + format_example(sample.doc, with_answer=False)

    def requests(self, sample: Sample, mode: Mode, capabilities: Capabilities) -> list[Request]:
        context = self.context(sample)
        if mode == "loglikelihood":
            return [LoglikelihoodRequest(context, f" {letter}") for letter in LETTERS]
        if use_chat(capabilities):
            return [GenerateRequest([{"role": "user", "content": CHAT_INSTRUCTION + context}], greedy(16))]
        return [GenerateRequest(context, greedy(4, stop=("\n",)))]

    def score(self, sample: Sample, mode: Mode, responses: Sequence[Response]) -> SampleResult:
        extra: dict = {"mode": mode, "shots": self._num_shots[sample.doc["subject"]]}
        if mode == "loglikelihood":
            logprobs = [r.logprob for r in responses if isinstance(r, Loglikelihood)]
            assert len(logprobs) == len(LETTERS), "one log-likelihood per choice"
            predicted = LETTERS[max(range(len(LETTERS)), key=logprobs.__getitem__)]  # first of ties, as argmax
            extra["logprobs"] = logprobs
        else:
            (completion,) = responses
            assert isinstance(completion, Completion)
            predicted = extract_letter(completion.text) or ""
            extra |= {"extraction": GENERATE_EXTRACTION, "completion": completion.text}
        correct = float(predicted == sample.doc["answer"])
        return SampleResult(sample.id, {"acc": correct}, predicted, sample.doc["answer"], sample.group, extra)

    def aggregate(self, results: Sequence[SampleResult]) -> dict[str, float]:
        """`acc`: the macro average over subjects (each subject weighs the same); `acc_micro`: the mean
        over questions (the original evaluate.py's "Average accuracy" and lm-eval's `mmlu` group score);
        `acc,category=stem|humanities|social_sciences|other`: mean over that category's questions;
        `acc,subject=NAME`: each subject's accuracy."""
        scores = grouped_scores(results, "acc", "subject")
        by_category: dict[str, list[float]] = {}
        for result in results:
            if result.group in SUBJECT_CATEGORY:
                by_category.setdefault(SUBJECT_CATEGORY[result.group], []).append(result.metrics["acc"])
        return scores | {f"acc,category={name}": fmean(values) for name, values in sorted(by_category.items())}
