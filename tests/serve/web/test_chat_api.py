"""The chat page's API over HTTP: the model picker lists exactly the role's models (the names of
/v1/models), answers go through the gateway (same checks, same usage records), settings reach the
model, regenerate and edit-and-resend, search, rename, export, and failures kept in the history."""

from __future__ import annotations

import json
import re

import httpx
from sqlalchemy import select

from llama2.serve.store import Usage

from .conftest import PASSWORD, sign_in


def ask(client, conversation_id: int, text: str, model: str | None = None, path: str | None = None) -> list:
    """Send a message (or POST to `path`) and return the stream's events (JSON objects)."""
    body = {"message": text} if text is not None else {}
    if model:
        body["model"] = model
    with client.stream("POST", path or f"/api/conversations/{conversation_id}/messages", json=body,
                       headers={"X-CSRF-Token": client.csrf}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
    return [json.loads(line[len("data: "):]) for line in lines]


def new_conversation(client, **settings) -> int:
    response = client.write("POST", "/api/conversations", json=settings)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def picker(client) -> list[tuple[str, str]]:
    page = client.get("/").text
    select_html = re.search(r'<select id="model" name="model".*?</select>', page, re.S).group(0)
    return re.findall(r'<option value="([^"]+)" data-external="(true|false)"', select_html)


def test_the_picker_lists_exactly_the_models_of_the_role_as_v1_models_names_them(web_server):
    alice, root = sign_in(web_server.url, "alice@example.com"), sign_in(web_server.url, "root@example.com")
    for client, email in ((alice, "alice@example.com"), (root, "root@example.com")):
        key = web_server.store.create_key(email)[1]
        listed = httpx.get(f"{web_server.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).json()
        assert [name for name, _ in picker(client)] == [m["id"] for m in listed["data"]]
    assert "admins-only" not in dict(picker(alice)) and "admins-only" in dict(picker(root))
    assert dict(picker(alice))["payload"] == "true" and dict(picker(alice))["default-chat"] == "false"

    key = web_server.store.create_key("alice@example.com")[1]
    denied = httpx.post(f"{web_server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                        json={"model": "admins-only", "messages": [{"role": "user", "content": "hi"}]})
    assert denied.status_code == 403  # the API keeps the same rule
    refused = alice.write("POST", "/api/conversations", json={"model": "admins-only"})
    assert refused.status_code == 400 and "admins-only" not in refused.json()["error"]["message"].split("of:")[1]
    cid = new_conversation(alice, model="echo")
    assert alice.write("PATCH", f"/api/conversations/{cid}", json={"model": "admins-only"}).status_code == 400
    response = alice.write("POST", f"/api/conversations/{cid}/messages", json={"message": "hi", "model": "admins-only"})
    assert response.status_code == 400
    root_cid = new_conversation(root, model="admins-only")
    assert ask(root, root_cid, "for admins")[-1]["answer"]["content"] == "for admins"


def test_answers_go_through_the_gateway_with_the_conversations_settings(web_server):
    alice = sign_in(web_server.url, "alice@example.com")
    cid = new_conversation(alice, model="recorder", system_prompt="Be terse.", temperature=0.3, max_tokens=7)
    calls = len(web_server.recorder.calls)
    events = ask(alice, cid, "first question")
    assert [e.get("type", "error") for e in events] == ["start", "delta", "end"]
    start, end = events[0], events[-1]
    assert start["user_message"]["content"] == "first question" and start["conversation"]["title"] == "first question"
    assert start["answer"]["status"] == "streaming" and start["answer"]["external"] is False
    assert end["answer"]["status"] == "done" and end["answer"]["content"] == "recorded"
    assert end["answer"]["html"] == "<p>recorded</p>\n"
    [request] = web_server.recorder.calls[calls:]
    assert request.prompt == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "first question"}]
    assert (request.params.temperature, request.params.max_new_tokens) == (0.3, 7)

    alice.write("PATCH", f"/api/conversations/{cid}", json={"system_prompt": "", "temperature": None})
    ask(alice, cid, "second")
    request = web_server.recorder.calls[-1]
    assert request.prompt == [{"role": "user", "content": "first question"}, {"role": "assistant", "content": "recorded"},
                              {"role": "user", "content": "second"}]
    assert request.params.temperature == 1.0  # OpenAI's default, as /v1 uses

    with web_server.store.reading() as session:
        rows = session.scalars(select(Usage).where(Usage.model == "recorder", Usage.user_email == "alice@example.com"))
        rows = list(rows)
    assert len(rows) == 2 and {(r.endpoint, r.status, r.key_id) for r in rows} == {("web.chat", 200, None)}


def test_regenerate_and_edit_and_resend(web_server):
    alice = sign_in(web_server.url, "alice@example.com")
    cid = new_conversation(alice, model="echo")
    ask(alice, cid, "one")
    ask(alice, cid, "two")
    before = alice.get(f"/api/conversations/{cid}").json()["messages"]
    assert [m["content"] for m in before] == ["one", "one", "two", "two"]

    events = ask(alice, cid, None, path=f"/api/conversations/{cid}/regenerate")
    assert events[0]["user_message"] is None and events[-1]["answer"]["content"] == "two"
    after = alice.get(f"/api/conversations/{cid}").json()["messages"]
    assert [m["content"] for m in after] == ["one", "one", "two", "two"]
    assert after[3]["id"] != before[3]["id"] and after[:3] == before[:3]  # only the last answer is new

    first_id = before[0]["id"]
    events = ask(alice, cid, "ONE, edited", path=f"/api/conversations/{cid}/messages/{first_id}/edit")
    assert events[0]["user_message"]["id"] == first_id and events[-1]["answer"]["content"] == "ONE, edited"
    edited = alice.get(f"/api/conversations/{cid}").json()["messages"]
    assert [(m["role"], m["content"]) for m in edited] == [("user", "ONE, edited"), ("assistant", "ONE, edited")]
    answer_id = edited[1]["id"]
    refused = alice.write("POST", f"/api/conversations/{cid}/messages/{answer_id}/edit", json={"message": "x"})
    assert refused.status_code == 404  # only the user's own turns can be edited


def test_a_model_failure_is_kept_in_the_history_and_the_next_turn_still_works(web_server):
    alice = sign_in(web_server.url, "alice@example.com")
    cid = new_conversation(alice, model="broken")
    failed = alice.write("POST", f"/api/conversations/{cid}/messages", json={"message": "are you there?"})
    assert failed.status_code == 502 and "down" in failed.json()["error"]["message"]
    messages = alice.get(f"/api/conversations/{cid}").json()["messages"]
    assert [(m["role"], m["status"]) for m in messages] == [("user", "done"), ("assistant", "error")]
    assert "down" in messages[1]["error"]
    ask(alice, cid, "hello again", model="recorder")
    request = web_server.recorder.calls[-1]  # the failed turn is left out; the two questions become one
    assert request.prompt == [{"role": "user", "content": "are you there?\n\nhello again"}]
    assert "failed" in alice.get(f"/c/{cid}/export.md").text


def test_search_rename_delete_and_export(web_server):
    bob = sign_in(web_server.url, "bob@example.com")
    first = new_conversation(bob, model="echo")
    ask(bob, first, "Llamas are camelids. 100% true_fact")
    second = new_conversation(bob, model="echo", title="Shopping list")
    ask(bob, second, "eggs and milk")

    def search(query: str) -> list[int]:
        return [c["id"] for c in bob.get("/api/conversations", params={"q": query}).json()["data"]]

    assert search("CAMELIDS") == [first]  # in a message's text, any case
    assert search("shopping") == [second]  # in the title
    assert search("100%") == [first] and search("e_f") == [first]  # LIKE's wildcards are plain characters
    assert search("0%t") == [] and search("%") == [first]
    assert search("nothing like this") == []
    assert [c["id"] for c in bob.get("/api/conversations").json()["data"]][:2] == [second, first]  # newest first

    renamed = bob.write("PATCH", f"/api/conversations/{first}", json={"title": "  About llamas  "})
    assert renamed.json()["title"] == "About llamas"
    for bad in ({"title": ""}, {"title": None}, {"temperature": 3}, {"max_tokens": 0}, {"colour": "red"}):
        assert bob.write("PATCH", f"/api/conversations/{first}", json=bad).status_code == 400, bad

    markdown = bob.get(f"/c/{first}/export.md")
    assert markdown.headers["content-disposition"] == f'attachment; filename="conversation-{first}.md"'
    assert markdown.text.startswith("# About llamas\n") and "## User\n\nLlamas are camelids." in markdown.text
    assert "## Assistant (echo)\n\nLlamas are camelids." in markdown.text
    exported = bob.get(f"/c/{first}/export.json").json()
    shown = bob.get(f"/api/conversations/{first}").json()
    assert exported["title"] == "About llamas"
    assert exported["messages"] == [{k: v for k, v in m.items() if k != "html"} for m in shown["messages"]]

    assert bob.write("DELETE", f"/api/conversations/{second}").status_code == 204
    assert bob.get(f"/api/conversations/{second}").status_code == 404
    assert bob.get(f"/c/{second}").status_code == 404
    assert second not in search("")


def test_requests_without_a_session_are_401_and_pages_redirect_to_sign_in(web_server):
    anonymous = httpx.Client(base_url=web_server.url)
    assert anonymous.get("/api/conversations").status_code == 401
    assert anonymous.post("/api/conversations", json={}).status_code == 401
    response = anonymous.get("/")
    assert response.status_code == 303 and response.headers["location"] == "/signin"
    for bad_next in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        client = httpx.Client(base_url=web_server.url)
        page = client.get("/signin", params={"next": bad_next}).text
        fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
        response = client.post("/signin", data={**dict(fields), "email": "bob@example.com", "password": PASSWORD})
        assert response.headers["location"] == "/"  # never off this site
