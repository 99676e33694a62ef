"""A conversation as a file the user keeps: Markdown to read, JSON to process (the same fields the
API returns, without the rendered HTML)."""

from __future__ import annotations

from typing import Any

from llama2.serve.conversations import ConversationInfo, MessageInfo


def export_markdown(conversation: ConversationInfo, messages: list[MessageInfo]) -> str:
    """`# title`, the settings as a list, then one `## User` / `## Assistant (model)` section per turn."""
    lines = [f"# {conversation.title}", "", f"- Model: {conversation.model}",
             f"- Created: {conversation.created_at:%Y-%m-%d %H:%M} UTC"]
    if conversation.temperature is not None:
        lines.append(f"- Temperature: {conversation.temperature:g}")
    if conversation.max_tokens is not None:
        lines.append(f"- Max tokens: {conversation.max_tokens}")
    if conversation.system_prompt:
        lines += ["", "## System", "", conversation.system_prompt]
    for message in messages:
        if message.role == "user":
            heading = "## User"
        else:
            ended = {"stopped": ", stopped", "error": ", failed", "streaming": ", unfinished"}.get(message.status, "")
            heading = f"## Assistant ({message.model}{ended})"
        lines += ["", heading, "", message.content]
        if message.error:
            lines += ["", f"> Error: {message.error}"]
    return "\n".join(lines) + "\n"


def export_json(conversation: ConversationInfo, messages: list[MessageInfo]) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "title": conversation.title,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "temperature": conversation.temperature,
        "max_tokens": conversation.max_tokens,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
        "messages": [{"id": m.id, "role": m.role, "content": m.content, "model": m.model, "status": m.status,
                      "error": m.error, "created_at": m.created_at.isoformat()} for m in messages],
    }
