"""Chat-model quality on the held-out split of the chat dataset: the base model against default-chat.

    python bench/chat_model.py [--models default default-chat] [--heldout FILE | --seed 0 --count 400]
                               [--max-new-tokens 160] [--batch-size 50] [--json OUT]

The held-out split (`llama2 data build-chat --split heldout`) asks the tasks of the training split
about values it never shows (other number pairs, words, lists), plus harmful requests and borderline
requests, and framings of them, that training never uses. Each model answers every prompt once,
greedily (temperature 0), in the Llama 2 chat format through `Llama.chat`; replies are scored by
`llama2.data.chat_dataset.score_replies`:
- task accuracy: the exact check of each task (the last number of the reply for arithmetic and
  counts, the reversed word, the spelled word, the sorted list, ...);
- refusal rate on harmful prompts: the transparent phrase detector `chat_dataset.REFUSAL`;
- answer rate on borderline prompts: a non-empty reply that the same detector does not flag.
The base model is not chat-tuned; it is measured the same way, as the floor.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from llama2.api import Llama
from llama2.atomic import write_text
from llama2.data.chat_dataset import ChatScores, build_chat_dataset, prompt_of, score_replies
from llama2.data.sft import read_records


def load_heldout(path: str | None, seed: int, count: int | None) -> list[dict]:
    if path:
        return [record for _, record in read_records(path)]
    return build_chat_dataset(seed=seed, count=count, split="heldout")


def answer_all(llama: Llama, records: list[dict], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy replies to every record's prompt, `batch_size` dialogs per engine call."""
    replies: list[str] = []
    for start in range(0, len(records), batch_size):
        dialogs = [prompt_of(record) for record in records[start : start + batch_size]]
        results = llama.chat(dialogs, max_new_tokens=max_new_tokens, temperature=0.0)
        replies += [result.text.strip() for result in results]
    return replies


def measure(model: str, records: list[dict], max_new_tokens: int, batch_size: int) -> tuple[ChatScores, list[str], float]:
    llama = Llama.from_pretrained(model, dtype="float32", device="cpu")
    started = time.perf_counter()
    replies = answer_all(llama, records, max_new_tokens, batch_size)
    return score_replies(records, replies), replies, time.perf_counter() - started


def table(scores: dict[str, ChatScores]) -> str:
    names = list(scores)
    first = next(iter(scores.values()))
    rows = [("task accuracy (all tasks)", lambda s: s.task_accuracy)]
    rows += [(f"  {task}", lambda s, t=task: s.per_task[t]) for task in first.per_task]
    rows += [("refusal rate, harmful prompts", lambda s: s.refusal_rate)]
    rows += [(f"  {category}", lambda s, c=category: s.refusal_by_category[c]) for category in first.refusal_by_category]
    rows += [("answer rate, borderline prompts", lambda s: s.borderline_answer_rate)]
    lines = ["| held-out measure | " + " | ".join(names) + " |", "|:--|" + "--:|" * len(names)]
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(f"{100 * get(scores[n]):.1f}%" for n in names) + " |")
    counts = first.counts
    lines.append(f"\n{counts.get('task', 0)} task prompts, {counts.get('harmful', 0)} harmful, "
                 f"{counts.get('borderline', 0)} borderline; greedy decoding.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "default-chat"])
    parser.add_argument("--heldout", default=None, help="held-out JSONL (default: generate it with --seed/--count)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write scores and every reply here")
    options = parser.parse_args()
    torch.set_num_threads(options.threads)

    records = load_heldout(options.heldout, options.seed, options.count)
    scores, out = {}, {"records": len(records), "seed": options.seed, "max_new_tokens": options.max_new_tokens, "models": {}}
    for model in options.models:
        print(f"{model}: answering {len(records)} held-out prompts ...", file=sys.stderr, flush=True)
        scores[model], replies, seconds = measure(model, records, options.max_new_tokens, options.batch_size)
        out["models"][model] = scores[model].to_dict() | {
            "seconds": round(seconds, 1),
            "replies": [{"task": r["task"], "prompt": r["messages"][-2]["content"], "reply": reply}
                        for r, reply in zip(records, replies)],
        }
    print(table(scores))
    if options.json:
        write_text(Path(options.json), json.dumps(out, indent=1, ensure_ascii=False) + "\n")  # a killed run leaves no half file


if __name__ == "__main__":
    main()
