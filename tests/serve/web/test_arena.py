"""The blind arena: pairs drawn uniformly from the role's models, both answers streamed at once without
the models' names, one final owner-scoped vote behind CSRF, the names shown after it, failures and
stops kept; in the browser: ask, watch, vote with [data-vote], see the names; screenshots."""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from llama2.errors import ProviderError
from llama2.providers.base import Capabilities, GenerateRequest, Provider
from llama2.providers.fake import FakeProvider
from llama2.serve.arena_store import Arena
from llama2.serve.config import ModelEntry
from llama2.serve.models import ServedModel
from llama2.serve.store import Store, Usage
from llama2.serve.web import arena as arena_routes
from llama2.serve.web.arena import NotEnoughModelsError, draw_pair
from llama2.types import StreamDelta

from .conftest import ARTIFACTS, BrokenProvider, scripted, serve, sign_in, signed_in_page

ANSWERS = {
    "alpha": "**Mount Everest**, at 8,849 m, is the tallest mountain above sea level.\n\n"
             "| Mountain | Height |\n|---|---|\n| Everest | 8,849 m |\n| K2 | 8,611 m |",
    "beta": "Measured from its base on the sea floor, *Mauna Kea* is taller (about 10,200 m), but above sea "
            "level Everest wins:\n\n```python\nheights = {\"Everest\": 8849, \"K2\": 8611}\n"
            "print(max(heights, key=heights.get))\n```",
    "gamma": "Everest. <script>window.__pwned = 1</script> <img src=x onerror=\"window.__pwned = 2\">",
}
USER_MODELS = {"alpha", "beta", "gamma"}


class Chatty(Provider):
    """Streams a fixed answer a word at a time, `delay_s` apart; keeps when each stream ran and how it ended."""

    capabilities = Capabilities()

    def __init__(self, name: str, text: str, delay_s: float = 0.01) -> None:
        self.spec = f"local:{name}"
        self.text, self.delay_s = text, delay_s
        self.spans: list[tuple[float, float]] = []
        self.closed = threading.Event()

    async def generate(self, requests):
        raise ProviderError("streams only")

    async def stream(self, request: GenerateRequest):
        self.closed.clear()
        start, words = time.monotonic(), re.findall(r"\S+\s*", self.text)
        try:
            for i, word in enumerate(words):
                await asyncio.sleep(self.delay_s)
                yield StreamDelta(index=0, text=word, tokens=[i])
            yield StreamDelta(index=0, text="", finish_reason="stop", prompt_tokens=5, completion_tokens=len(words))
        finally:
            self.spans.append((start, time.monotonic()))
            self.closed.set()


@dataclass
class ArenaServer:
    url: str
    store: Store
    providers: dict[str, Chatty]


@pytest.fixture(scope="module")
def arena_server(tmp_path_factory) -> Iterator[ArenaServer]:
    from .conftest import PASSWORD

    store = Store.open(tmp_path_factory.mktemp("arena"))
    for email, role in (("alice@example.com", "user"), ("bob@example.com", "user"), ("root@example.com", "admin")):
        store.add_user(email, role=role, password=PASSWORD)
    providers = {name: Chatty(name, text) for name, text in ANSWERS.items()}
    models = [scripted("alpha", "local:alpha", providers["alpha"]),
              scripted("beta", "local:beta", providers["beta"]),
              scripted("gamma", "http://127.0.0.1:9/v1#gamma", providers["gamma"]),  # external
              scripted("admins-only", "local:admins-only", FakeProvider(), roles=("admin",)),
              scripted("broken", "local:broken", BrokenProvider(), roles=("admin",))]
    with serve(store, models) as (url, _):
        yield ArenaServer(url, store, providers)
    store.close()


@contextmanager
def pace(server: ArenaServer, delay_s: float) -> Iterator[None]:
    """The scripted models stream a word every `delay_s` seconds meanwhile (0.01 otherwise)."""
    for provider in server.providers.values():
        provider.delay_s = delay_s
    try:
        yield
    finally:
        for provider in server.providers.values():
            provider.delay_s = 0.01


def ask(client, question: str, **body) -> list[dict]:
    """Start a battle and return its stream's events (the raw text is checked for names too)."""
    with client.stream("POST", "/api/arena/battles", json={"message": question, **body},
                       headers={"X-CSRF-Token": client.csrf}) as response:
        assert response.status_code == 200, response.read()
        raw = response.read().decode()
    for name in ("alpha", "beta", "gamma", "admins-only"):
        assert f'"{name}"' not in raw  # no event names a model
    assert raw.rstrip().endswith("data: [DONE]")
    return [json.loads(line[6:]) for line in raw.split("\n\n") if line.startswith("data: {")]


def models_of(server: ArenaServer, email: str, battle_id: int) -> tuple[str, str]:
    battle = Arena(server.store).get(server.store.get_user(email).id, battle_id)
    return battle.model_a, battle.model_b


# ---- drawing pairs --------------------------------------------------------------------------------


def _served(name: str, spec: str | None = None) -> ServedModel:
    return ServedModel(ModelEntry(name, spec or f"local:{name}"), FakeProvider())


def test_pairs_are_uniform_over_ordered_pairs_of_different_models():
    models = [_served(n) for n in ("m1", "m2", "m3")] + [_served("ext", "http://127.0.0.1:9/v1#ext")]
    rng = random.Random(0)
    counts = Counter(draw_pair(models, rng) for _ in range(12_000))
    assert len(counts) == 12 and all(a != b for a, b in counts)  # every ordered pair, never a model with itself
    assert all(abs(n - 1000) < 120 for n in counts.values()), counts  # expected 1000 each, sd ~30
    local = Counter(draw_pair(models, rng, local_only=True) for _ in range(600))
    assert len(local) == 6 and not any("ext" in pair for pair in local)
    with pytest.raises(NotEnoughModelsError, match="two local models your role may use, and there is 1"):
        draw_pair(models[:1] + models[3:], rng, local_only=True)
    with pytest.raises(NotEnoughModelsError, match="there are none"):
        draw_pair([], rng)


def test_battles_draw_only_the_roles_models(arena_server):
    alice = sign_in(arena_server.url, "alice@example.com")
    pairs = []
    with pace(arena_server, 0):
        for n in range(8):
            start = ask(alice, f"Question {n}")[0]
            pairs.append(models_of(arena_server, "alice@example.com", start["battle"]["id"]))
        assert all(a != b and {a, b} <= USER_MODELS for a, b in pairs), pairs  # never admins-only nor broken
        for n in range(4):
            start = ask(alice, f"Local question {n}", local_only=True)[0]
            assert set(models_of(arena_server, "alice@example.com", start["battle"]["id"])) == {"alpha", "beta"}


def test_both_answers_stream_at_once_without_names_and_go_through_the_gateway(arena_server):
    alice = sign_in(arena_server.url, "alice@example.com")
    for provider in arena_server.providers.values():
        provider.spans.clear()
    events = ask(alice, "Which is the tallest mountain?", local_only=True)
    start, *rest = events
    assert start["type"] == "start" and start["question"]["content"] == "Which is the tallest mountain?"
    battle_id = start["battle"]["id"]
    model_a, model_b = models_of(arena_server, "alice@example.com", battle_id)
    texts = {"a": "", "b": ""}
    for event in rest:
        if event["type"] == "delta":
            texts[event["side"]] += event["text"]
    assert texts == {"a": ANSWERS[model_a], "b": ANSWERS[model_b]}
    order = [event["side"] for event in rest if event["type"] == "delta"]
    assert order.index("b") < len(order) - order[::-1].index("a") - 1  # interleaved: b began before a ended
    (a_start, a_end), (b_start, b_end) = (arena_server.providers[m].spans[-1] for m in (model_a, model_b))
    assert a_start < b_end and b_start < a_end  # the two generations overlapped in time
    ends = {event["side"]: event["answer"] for event in rest if event["type"] == "end"}
    assert {side: (a["status"], a["content"]) for side, a in ends.items()} == {
        "a": ("done", ANSWERS[model_a]), "b": ("done", ANSWERS[model_b])}
    assert "model" not in ends["a"] and "<strong>" in ends["a"]["html"] + ends["b"]["html"]

    hidden = alice.get(f"/api/arena/battles/{battle_id}").json()
    assert hidden["models"] is None and model_a not in json.dumps(hidden)
    page = alice.get(f"/arena/{battle_id}").text
    assert 'class="side-name" data-external="false"></span>' in page and f">{model_a}<" not in page
    with arena_server.store.reading() as session:
        usage = session.scalars(select(Usage).where(Usage.endpoint == "web.arena").order_by(Usage.id.desc())
                                .limit(2)).all()
    assert sorted((u.model, u.status, u.user_email, u.key_id) for u in usage) == sorted(
        [(model_a, 200, "alice@example.com", None), (model_b, 200, "alice@example.com", None)])


def test_a_vote_is_final_owner_scoped_csrf_checked_and_reveals_the_names(arena_server):
    alice, bob = sign_in(arena_server.url, "alice@example.com"), sign_in(arena_server.url, "bob@example.com")
    battle_id = ask(alice, "alice's secret question zebra")[0]["battle"]["id"]
    model_a, model_b = models_of(arena_server, "alice@example.com", battle_id)

    for method, path, body in (("GET", f"/arena/{battle_id}", None), ("GET", f"/api/arena/battles/{battle_id}", None),
                               ("POST", f"/api/arena/battles/{battle_id}/vote", {"vote": "a"})):
        response = bob.write(method, path, json=body) if body else bob.get(path)
        assert response.status_code == 404 and "zebra" not in response.text, (method, path)
    for path in (f"/api/conversations/{battle_id}", f"/c/{battle_id}", f"/c/{battle_id}/export.json"):
        assert alice.get(path).status_code == 404  # a battle is no chat: the chat routes cannot read its models
    assert "zebra" not in alice.get("/api/conversations").text

    for token in (None, "x" * 43, bob.csrf):  # none, made up, another session's
        headers = {} if token is None else {"X-CSRF-Token": token}
        for path, body in ((f"/api/arena/battles/{battle_id}/vote", {"vote": "a"}),
                           ("/api/arena/battles", {"message": "hi"})):
            response = alice.post(path, json=body, headers=headers)
            assert response.status_code == 403 and response.json()["error"]["code"] == "csrf_failed"
    assert alice.write("POST", f"/api/arena/battles/{battle_id}/vote", json={"vote": "best"}).status_code == 400

    voted = alice.write("POST", f"/api/arena/battles/{battle_id}/vote", json={"vote": "b"})
    assert voted.status_code == 200
    assert voted.json()["vote"] == "b" and voted.json()["models"] == {
        "a": {"name": model_a, "external": model_a == "gamma"}, "b": {"name": model_b, "external": model_b == "gamma"}}
    again = alice.write("POST", f"/api/arena/battles/{battle_id}/vote", json={"vote": "a"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "vote_refused"
    assert Arena(arena_server.store).get(arena_server.store.get_user("alice@example.com").id, battle_id).vote == "b"
    assert alice.get(f"/api/arena/battles/{battle_id}").json()["models"]["a"]["name"] == model_a
    assert f">{model_a}<" in alice.get(f"/arena/{battle_id}").text


def test_a_failed_answer_is_kept_and_the_battle_cannot_be_voted(arena_server, monkeypatch):
    monkeypatch.setattr(arena_routes, "draw_pair", lambda models, rng, local_only=False: ("alpha", "broken"))
    root = sign_in(arena_server.url, "root@example.com")
    events = ask(root, "Anyone there?")
    battle_id = events[0]["battle"]["id"]
    ends = {event["side"]: event["answer"] for event in events if event["type"] == "end"}
    assert ends["a"]["status"] == "done" and ends["b"]["status"] == "error"
    assert "the upstream model is down" in ends["b"]["error"]
    refused = root.write("POST", f"/api/arena/battles/{battle_id}/vote", json={"vote": "a"})
    assert refused.status_code == 409 and "cannot be judged" in refused.json()["error"]["message"]
    assert 'data-state="failed"' in root.get(f"/arena/{battle_id}").text


def test_closing_the_stream_stops_both_answers_which_can_still_be_judged(arena_server):
    with pace(arena_server, 0.05):
        alice = sign_in(arena_server.url, "alice@example.com")
        with alice.stream("POST", "/api/arena/battles", json={"message": "Take your time", "local_only": True},
                          headers={"X-CSRF-Token": alice.csrf}) as response:
            lines = response.iter_lines()
            start = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
            next(line for line in lines if '"delta"' in line)
        battle_id = start["battle"]["id"]
        assert all(arena_server.providers[m].closed.wait(5) for m in ("alpha", "beta"))
        arena = Arena(arena_server.store)
        alice_id = arena_server.store.get_user("alice@example.com").id
        deadline = time.monotonic() + 5
        while any(a.status == "streaming" for a in arena.get(alice_id, battle_id).answers.values()):
            assert time.monotonic() < deadline, "the stopped answers were not saved"
            time.sleep(0.05)
        answers = arena.get(alice_id, battle_id).answers
        assert {a.status for a in answers.values()} == {"stopped"}
        assert all(len(a.content) < len(ANSWERS[a.model]) for a in answers.values())
        with arena_server.store.reading() as session:  # each side's call is recorded as a hang-up (nginx's 499)
            usage = session.scalars(select(Usage).where(Usage.endpoint == "web.arena").order_by(Usage.id.desc())
                                    .limit(2)).all()
        assert sorted((u.model, u.status) for u in usage) == [("alpha", 499), ("beta", 499)]
        assert alice.write("POST", f"/api/arena/battles/{battle_id}/vote", json={"vote": "tie"}).status_code == 200


def test_with_fewer_than_two_models_the_page_says_so(tmp_path):
    from .conftest import PASSWORD

    store = Store.open(tmp_path)
    store.add_user("solo@example.com", password=PASSWORD)
    with serve(store, [scripted("echo", "local:echo", FakeProvider())]) as (url, _):
        client = sign_in(url, "solo@example.com")
        page = client.get("/arena").text
        assert 'id="arena-unavailable"' in page and "there is one" in page
        assert re.search(r'<textarea id="message" name="message"[^>]* disabled', page)
        refused = client.write("POST", "/api/arena/battles", json={"message": "hi"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "not_enough_models"
        assert Arena(store).list(store.get_user("solo@example.com").id) == []  # nothing kept
    store.close()


# ---- in the browser ---------------------------------------------------------------------------


def test_ask_watch_vote_and_see_the_names_in_the_browser(browser, arena_server):
    page = signed_in_page(browser, arena_server.url, "bob@example.com")
    page.click('a[href="/arena"]')  # the chat's sidebar leads here
    page.wait_for_url(arena_server.url + "/arena")
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    assert page.locator("[data-vote]").count() == 4 and not page.locator("#vote-bar").is_visible()
    box = page.locator('textarea[name="message"]')
    box.fill("Which is the tallest mountain?")
    box.press("Enter")
    page.wait_for_selector('#app[data-state="streaming"]')
    page.wait_for_function("""() => [...document.querySelectorAll('.side [data-role="assistant"]')]
                                    .every((answer) => answer.textContent.length > 0)""")  # both, while streaming
    page.wait_for_selector('#app[data-state="voting"]')
    battle_id = int(page.url.rsplit("/", 1)[1])
    model_a, model_b = models_of(arena_server, "bob@example.com", battle_id)
    answers = page.locator('[data-role="assistant"]')
    assert answers.count() == 2
    assert page.locator(".side-label").all_inner_texts() == ["Model A", "Model B"]
    assert page.locator(".side-name").all_inner_texts() == ["", ""]  # hidden
    assert not any(name in page.locator("body").inner_text() for name in USER_MODELS)  # nowhere on the page
    assert page.locator('.side[data-side="a"] [data-role="assistant"] strong, .side[data-side="a"] table, '
                        '.side[data-side="a"] .code-block, .side[data-side="b"] strong, .side[data-side="b"] table, '
                        '.side[data-side="b"] .code-block').count() > 0  # rendered as Markdown, like chat answers

    page.click("[data-vote=a]")
    page.wait_for_selector('#app[data-state="voted"]')
    assert page.locator(".side-name").all_inner_texts() == [model_a, model_b]
    assert page.locator("#verdict").inner_text() == "You preferred Model A."
    assert page.locator('.side[data-side="a"]').get_attribute("class") == "side chosen"
    assert page.locator("[data-vote=a]").get_attribute("aria-pressed") == "true"
    assert all(button.is_disabled() for button in page.locator("[data-vote]").all())
    bob_id = arena_server.store.get_user("bob@example.com").id
    assert Arena(arena_server.store).get(bob_id, battle_id).vote == "a"
    assert page.locator(f'#battle-list li[data-id="{battle_id}"] .vote-mark').get_attribute("data-vote-mark") == "a"
    assert dialogs == [] and page.evaluate("window.__pwned") is None

    page.reload()  # the stored battle, voted, names shown
    assert page.locator("#app").get_attribute("data-state") == "voted"
    assert page.locator(".side-name").all_inner_texts() == [model_a, model_b]
    page.click(".next-battle")
    page.wait_for_url(arena_server.url + "/arena")
    assert page.locator("#app").get_attribute("data-state") == "new"
    page.context.close()


def still(page) -> None:
    """No focus ring, no hover, no transition half-way: the page as it rests."""
    page.evaluate("document.activeElement.blur()")
    page.mouse.move(1, 1)
    page.wait_for_timeout(250)


def test_stop_in_the_browser_keeps_both_partial_answers_to_judge(browser, arena_server):
    page = signed_in_page(browser, arena_server.url, "bob@example.com")
    page.goto(arena_server.url + "/arena")
    with pace(arena_server, 0.05):
        page.check("#local-only")
        page.fill('textarea[name="message"]', "Slowly, please")
        page.keyboard.press("Enter")
        page.wait_for_function("""() => [...document.querySelectorAll('.side [data-role="assistant"]')]
                                        .every((answer) => answer.textContent.length > 0)""")
        page.keyboard.press("Escape")  # as the stop button
        page.wait_for_selector('#app[data-state="voting"]')
    battle_id = int(page.url.rsplit("/", 1)[1])
    answers = Arena(arena_server.store).get(arena_server.store.get_user("bob@example.com").id, battle_id).answers
    assert {a.status for a in answers.values()} == {"stopped"}
    for side, answer in answers.items():  # the page shows what the server kept
        pane = page.locator(f'.side[data-side="{side}"]')
        assert pane.get_attribute("data-status") == "stopped" and pane.locator(".status-label").is_visible()
        kept, shown = (" ".join(re.sub(r"[*_`#]", "", text).split())  # the page shows the Markdown rendered
                       for text in (answer.content, pane.locator("[data-role=assistant]").inner_text()))
        assert kept[:20] in shown
    page.click("[data-vote=tie]")
    page.wait_for_selector('#app[data-state="voted"]')
    page.context.close()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_screenshots_of_the_arena(browser, arena_server, theme):
    """The arena before and after a vote, at desktop and phone width, under tests/artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    for width, (w, h) in {"desktop": (1280, 800), "phone": (390, 844)}.items():
        page = signed_in_page(browser, arena_server.url, "alice@example.com", viewport=(w, h), color_scheme=theme)
        page.goto(arena_server.url + "/arena")
        page.screenshot(path=str(ARTIFACTS / f"web-arena-{width}-{theme}-new.png"))
        page.fill('textarea[name="message"]', "Which is the tallest mountain?")
        page.check("#local-only")
        page.keyboard.press("Enter")
        page.wait_for_selector('#app[data-state="voting"]')
        still(page)
        page.screenshot(path=str(ARTIFACTS / f"web-arena-{width}-{theme}.png"))
        assert page.evaluate("document.documentElement.scrollWidth") <= w  # nothing spills sideways
        page.click("[data-vote=b]")
        page.wait_for_selector('#app[data-state="voted"]')
        still(page)
        page.screenshot(path=str(ARTIFACTS / f"web-arena-{width}-{theme}-voted.png"))
        page.context.close()
