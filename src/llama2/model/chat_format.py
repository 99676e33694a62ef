"""The Llama 2 chat format, the one place it is written down (LLAMA2.md §1.5; Meta's `chat_completion`).

A dialog is `[system?], user, assistant, user, ...`. The system message is folded into the first
user turn; each finished (user, assistant) exchange is tokenized on its own as

    <s>[INST] {user} [/INST] {answer} </s>

and a final user turn as `<s>[INST] {user} [/INST]`, which the model completes. Messages are
`llama2.types.Message` dicts; `Dialog` is a list of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from llama2.errors import DialogError, TokenizerError
from llama2.types import Dialog, Message

if TYPE_CHECKING:
    from llama2.model.tokenizer import Tokenizer

__all__ = [
    "B_INST",
    "E_INST",
    "B_SYS",
    "E_SYS",
    "DEFAULT_SYSTEM_PROMPT",
    "SPECIAL_TAGS",
    "Message",
    "Dialog",
    "validate_dialog",
    "encode_dialog",
    "encode_dialog_for_training",
    "render_dialog",
]

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
SPECIAL_TAGS = (B_INST, E_INST, "<<SYS>>", "<</SYS>>")

# The system prompt of the launch code (meta-llama/llama 6d4c0c2) and of the paper's human
# evaluation [P T31], kept byte for byte: two spaces after "being safe." (Meta's later example script
# has one). It is never added on its own: pass it as `system_prompt`, as Meta's code has done since
# a971c41 removed the automatic default.
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
    "while being safe.  Your answers should not include any harmful, unethical, racist, sexist, "
    "toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased "
    "and positive in nature.\n\nIf a question does not make any sense, or is not factually coherent, "
    "explain why instead of answering something not correct. If you don't know the answer to a "
    "question, please don't share false information."
)

_ROLES = ("system", "user", "assistant")


def validate_dialog(dialog: Dialog, *, for_training: bool = False) -> None:
    """Raise DialogError unless `dialog` follows the chat format's rules.

    An optional system message comes first, then user and assistant turns alternate starting with
    the user. A dialog to answer ends with a user turn; a training dialog ends with an assistant
    turn. Contents are strings free of the special tags `SPECIAL_TAGS`.
    """
    _validate(dialog, last_roles=("assistant",) if for_training else ("user",))


def encode_dialog(tokenizer: Tokenizer, dialog: Dialog, *, system_prompt: str | None = None) -> list[int]:
    """Prompt token ids for a dialog ending with a user turn, exactly as Meta's `chat_completion`.

    `system_prompt` is used only when the dialog has no system message; pass DEFAULT_SYSTEM_PROMPT
    for the paper's setup. Where Meta's code answers a dialog containing a special tag with an error
    string, this raises DialogError, so the caller decides what to tell the user.
    """
    _validate(dialog, last_roles=("user",), system_prompt=system_prompt)
    *exchanges, (last_prompt, _) = _exchanges(dialog, system_prompt)
    ids = []
    for prompt, answer in exchanges:
        ids += tokenizer.encode(prompt + answer, bos=True, eos=True)
    return ids + tokenizer.encode(last_prompt, bos=True, eos=False)


def encode_dialog_for_training(
    tokenizer: Tokenizer, dialog: Dialog, *, system_prompt: str | None = None
) -> tuple[list[int], list[bool]]:
    """Token ids of a dialog ending with an assistant turn, and the SFT loss mask (LLAMA2.md §3).

    The ids are Meta's format, every exchange `<s> ... </s>`. The mask is True on each assistant
    answer's tokens and its EOS, False on BOS and the system/user/[INST] tokens: SFT trains on
    answers only. `encode_dialog(dialog[:-1])` is a prefix of the ids, so the model learns to continue
    exactly the prompt it will see at inference.
    """
    _validate(dialog, last_roles=("assistant",), system_prompt=system_prompt)
    ids: list[int] = []
    mask: list[bool] = []
    for prompt, answer in _exchanges(dialog, system_prompt):
        head = tokenizer.encode(prompt, bos=True, eos=False)
        full = tokenizer.encode(prompt + answer, bos=True, eos=True)
        # Holds for Llama's vocabulary: no piece spans the space between "[/INST]" and the answer.
        if full[: len(head)] != head:
            raise TokenizerError(
                f"the tokenizer merges '{E_INST}' with the answer after it, so the loss mask cannot split them; "
                "use a Llama-style SentencePiece tokenizer (split by whitespace)"
            )
        ids += full
        mask += [False] * len(head) + [True] * (len(full) - len(head))
    return ids, mask


def render_dialog(dialog: Dialog, *, system_prompt: str | None = None) -> str:
    """The dialog as text, BOS/EOS shown as "<s>"/"</s>" (for display and debugging).

    Accepts a dialog ending with a user turn (the prompt) or with an assistant turn (a whole
    training example); the text is what the tokens of encode_dialog (or its training twin) spell.
    """
    _validate(dialog, last_roles=("user", "assistant"), system_prompt=system_prompt)
    return "".join(
        f"<s>{prompt}{answer}</s>" if answer is not None else f"<s>{prompt}"
        for prompt, answer in _exchanges(dialog, system_prompt)
    )


def _exchanges(dialog: Dialog, system_prompt: str | None) -> list[tuple[str, str | None]]:
    """(prompt, answer) text per exchange: `[INST] u [/INST]` and ` a `; answer None for the last user turn.

    As Meta, the system text is folded in before stripping, so only the outer ends are stripped.
    """
    if dialog[0]["role"] == "system":
        system, turns = dialog[0]["content"], dialog[1:]
    else:
        system, turns = system_prompt, dialog
    users = [m["content"] for m in turns[::2]]
    answers: list[str | None] = [m["content"] for m in turns[1::2]]
    answers += [None] * (len(users) - len(answers))
    if system is not None:
        users[0] = B_SYS + system + E_SYS + users[0]
    return [
        (f"{B_INST} {user.strip()} {E_INST}", None if answer is None else f" {answer.strip()} ")
        for user, answer in zip(users, answers)
    ]


def _validate(dialog: Dialog, *, last_roles: tuple[str, ...], system_prompt: str | None = None) -> None:
    if not isinstance(dialog, Sequence) or isinstance(dialog, str):
        raise DialogError(f"a dialog is a list of {{'role', 'content'}} messages, got {type(dialog).__name__}")
    if not dialog:
        raise DialogError("the dialog is empty; it needs at least one user message")
    if system_prompt is not None:
        _check_content("system_prompt", system_prompt)
    for i, message in enumerate(dialog):
        _check_message(i, message)
    start = 1 if dialog[0]["role"] == "system" else 0
    if start == len(dialog):
        raise DialogError("the dialog holds only a system message; add a user message after it")
    for i in range(start, len(dialog)):
        if dialog[i]["role"] == "system":
            raise DialogError(f"message {i}: a system message may only come first; fold it into the first one")
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if dialog[i]["role"] != expected:
            raise DialogError(
                f"message {i}: role is {dialog[i]['role']!r} but {expected!r} was expected; after an optional "
                "system message first, roles must alternate user/assistant starting with user"
            )
    last = dialog[-1]["role"]
    if last not in last_roles:
        wanted = " or ".join(f"'{r}'" for r in last_roles)
        raise DialogError(f"message {len(dialog) - 1}: the dialog ends with role {last!r}; it must end with {wanted}")


def _check_message(i: int, message: Message) -> None:
    if not isinstance(message, dict) or "role" not in message or "content" not in message:
        raise DialogError(f"message {i}: expected a dict with 'role' and 'content', got {message!r:.80}")
    role = message["role"]
    if role not in _ROLES:
        raise DialogError(f"message {i}: unknown role {role!r}; use one of {', '.join(_ROLES)}")
    _check_content(f"message {i}", message["content"])


def _check_content(where: str, content: object) -> None:
    if not isinstance(content, str):
        raise DialogError(f"{where}: content must be a string, got {type(content).__name__}")
    for tag in SPECIAL_TAGS:
        if tag in content:
            raise DialogError(f"{where}: content contains the special tag {tag!r}, reserved by the chat format; remove it")
