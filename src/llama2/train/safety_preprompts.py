"""Safety preprompts for context distillation (Llama 2 §4.2.4; LLAMA2.md §6.2).

The paper generates preprompts automatically from templates with adjectives typically associated
with safe behaviour ("responsible", "respectful", "wise"), e.g. "You are a safe and responsible
assistant", and the generic "The following is a discussion between a human and a knowledgeable and
empathetic assistant..." (its Tables 13 and 39). With the risk category of a prompt known, it adds
an *answer template*: the steps a good answer to that category takes (for "False Information /
Disinformation": refute it, give sourced context, point to further reading) — templates score
higher on the safety reward model than generic preprompts (its Figure 16a).

`draw_preprompt(rng, category)` gives one: a generic template filled with distinct adjectives,
followed by the category's answer template when there is one. Categories are matched on their
first part (`illicit_criminal/weapons` -> `illicit_criminal`), the risk categories of
`data.chat_safety` plus misinformation. The answer templates follow the paper's guideline for safe
responses: first address immediate safety concerns, then explain the risk, then help where possible.
"""

from __future__ import annotations

import random

from llama2.errors import ConfigError
from llama2.types import Dialog

ADJECTIVES = ("responsible", "respectful", "wise", "safe", "honest", "careful", "thoughtful", "empathetic",
              "knowledgeable", "ethical", "kind", "caring")

TEMPLATES = (  # {a}: "a" or "an", as the first adjective needs
    "You are {a} {0} and {1} assistant.",
    "You are {a} {0}, {1} and {2} assistant. Never give an answer that is harmful, unethical, insensitive or dangerous; "
    "when a request is unsafe, say why and offer a safe alternative.",
    "The following is a discussion between a human and {a} {0} and {1} assistant. The assistant's answers do not include "
    "any harmful, unethical or socially biased content, and move the conversation in a positive direction.",
    "The following user question has been flagged as possibly unsafe. Answer as {a} {0} and {1} assistant would: "
    "safely and positively.",
)

ANSWER_TEMPLATES = {
    "illicit_criminal": "The request may involve an illegal or criminal activity. In your answer: 1) if anyone may be in "
                        "danger, address that first; 2) explain that the activity is illegal and how it harms people; "
                        "3) offer a safe, legal way to meet the need behind the request.",
    "hateful_harmful": "The request may ask for hateful or harmful content. In your answer: 1) do not write content that "
                       "demeans or endangers anyone; 2) explain the harm it would do; 3) offer a respectful way to "
                       "address the concern behind the request.",
    "unqualified_advice": "The request asks for advice that needs a qualified professional (medical, legal or "
                          "financial). In your answer: 1) address any immediate risk to health or safety; 2) explain "
                          "why a professional should be consulted; 3) give general, safe information and say where "
                          "qualified help can be found.",
    "misinformation": "The request may spread false information. In your answer: 1) refute the misinformation; 2) give "
                      "accurate context from reliable sources; 3) point to where to read more.",
}
PLACEMENTS = ("system", "user")


def answer_template(category: str | None) -> str | None:
    """The answer template of a risk category (matched on its first `/`-separated part), if any."""
    return ANSWER_TEMPLATES.get((category or "").split("/", 1)[0].strip().lower())


def draw_preprompt(rng: random.Random, category: str | None = None, *, templates: bool = True) -> str:
    """A generic preprompt with distinct adjectives, plus the category's answer template (`templates`)."""
    template = rng.choice(TEMPLATES)
    adjectives = rng.sample(ADJECTIVES, 3)
    text = template.format(*adjectives, a=_article(adjectives[0]))
    steps = answer_template(category) if templates else None
    return f"{text} {steps}" if steps else text


def with_preprompt(dialog: Dialog, preprompt: str, *, placement: str = "system") -> Dialog:
    """The dialog as the model answers it with the preprompt: in the system message (before an
    existing one's text) or prefixed to the last user turn, one blank line apart."""
    if placement not in PLACEMENTS:
        raise ConfigError(f"unknown placement {placement!r}; use one of {', '.join(PLACEMENTS)}")
    messages = [dict(m) for m in dialog]
    if placement == "system":
        if messages[0]["role"] == "system":
            messages[0]["content"] = f"{preprompt}\n\n{messages[0]['content']}"
            return messages  # type: ignore[return-value]
        return [{"role": "system", "content": preprompt}, *messages]  # type: ignore[list-item]
    messages[-1]["content"] = f"{preprompt}\n\n{messages[-1]['content']}"
    return messages  # type: ignore[return-value]


def _article(word: str) -> str:
    """"an" before a vowel sound (the h of "honest" is silent), else "a"."""
    return "an" if word[0] in "aeiou" or word.startswith("hon") else "a"
