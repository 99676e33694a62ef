"""The web chat in a real browser (Debian's Chromium through Playwright): sign in, chat with the bundled
model, reload and find the conversation, stop a stream, create the first admin from the setup link,
run nothing a model wrote, and screenshots of the pages at desktop and phone widths, light and dark."""

from __future__ import annotations

import html
import re

import httpx
import pytest
from sqlalchemy import select

from llama2.providers.fake import FakeProvider
from llama2.serve.conversations import Conversations
from llama2.serve.store import Store, Usage
from llama2.serve.web.render import render_markdown
from llama2.serve.web.security import SESSION_COOKIE

from .conftest import ARTIFACTS, PASSWORD, scripted, serve, signed_in_page


def plain(text: str) -> str:
    """Whitespace-normalised text of Markdown as the page shows it (what `inner_text` reads)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", render_markdown(text))).split())


def assistant_text(page) -> str:
    return " ".join(page.locator('[data-role="assistant"]').last.inner_text().split())


def wait_idle(page) -> None:
    page.wait_for_selector('#composer[data-state="idle"]')


def test_sign_in_chat_with_the_bundled_model_and_find_it_after_a_reload(browser, web_server):
    page = signed_in_page(browser, web_server.url, "alice@example.com")
    options = page.locator('select[name="model"] option')
    assert options.first.get_attribute("value") == "default-chat"
    page.click("#settings-toggle")
    page.fill('input[name="temperature"]', "0")
    page.fill('input[name="max_tokens"]', "24")
    box = page.locator('textarea[name="message"]')
    box.fill("What is 2 + 3?")
    box.press("Shift+Enter")  # a new line, not a send
    box.type("Answer briefly.")
    assert box.input_value() == "What is 2 + 3?\nAnswer briefly."
    assert page.locator(".msg").count() == 0
    box.press("Enter")
    page.wait_for_selector('.msg-assistant[data-status="done"]')
    wait_idle(page)
    conversation_id = int(page.url.rsplit("/", 1)[1])

    messages = _messages(web_server, "alice@example.com", conversation_id)  # as kept, and as /v1 answers the same
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[0].content == "What is 2 + 3?\nAnswer briefly."
    key = web_server.store.create_key("alice@example.com")[1]
    reply = httpx.post(f"{web_server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json={
        "model": "default-chat", "messages": [{"role": "user", "content": messages[0].content}],
        "temperature": 0, "max_tokens": 24}).json()
    assert messages[1].content == reply["choices"][0]["message"]["content"] and messages[1].content.strip()
    assert assistant_text(page) == plain(messages[1].content)

    page.reload()
    link = page.locator(f'#conversation-list a[href="/c/{conversation_id}"]')
    assert link.inner_text() == "What is 2 + 3?"
    assert assistant_text(page) == plain(messages[1].content)
    page.goto(web_server.url + "/")
    page.click(f'#conversation-list a[href="/c/{conversation_id}"]')
    page.wait_for_url(f"{web_server.url}/c/{conversation_id}")
    assert page.locator(".user-text").first.inner_text() == "What is 2 + 3?\nAnswer briefly."
    page.context.close()


def test_keyboard_alone_signs_in_and_reaches_the_controls_with_visible_focus(browser, web_server):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(web_server.url + "/signin")
    # The email field takes the focus on arrival (autofocus, which Chromium applies at its next
    # rendering update, sometimes just after "load": typing earlier lost the first letters).
    page.wait_for_function("document.activeElement && document.activeElement.name === 'email'")
    page.keyboard.type("bob@example.com")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.name") == "password"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(web_server.url + "/")
    assert page.evaluate("document.activeElement.name") == "message"  # ready to type
    page.keyboard.press("Shift+Tab")  # back through the page: every stop shows where it is
    for _ in range(4):
        page.keyboard.press("Shift+Tab")
        assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    context.close()


def test_regenerate_edit_search_rename_settings_and_delete_in_the_page(browser, web_server):
    page = signed_in_page(browser, web_server.url, "bob@example.com")
    page.select_option('select[name="model"]', "echo")
    for text in ("alpha question", "beta question"):
        page.fill('textarea[name="message"]', text)
        page.keyboard.press("Enter")
        page.wait_for_function(f"() => document.querySelectorAll('.msg-assistant[data-status=\"done\"]').length >= "
                               f"{1 if text.startswith('alpha') else 2}")
        wait_idle(page)
    cid = int(page.url.rsplit("/", 1)[1])
    last = page.locator(".msg-assistant").last
    old_id = last.get_attribute("data-id")
    last.hover()
    last.locator('[data-action="regenerate"]').click()
    page.wait_for_function(f"() => {{ const a = [...document.querySelectorAll('.msg-assistant')].pop();"
                           f" return a.dataset.id !== '{old_id}' && a.dataset.status === 'done'; }}")
    assert page.locator(".msg").count() == 4

    first = page.locator(".msg-user").first
    first.hover()
    first.locator('[data-action="edit"]').click()
    editor = first.locator(".editor textarea")
    editor.fill("gamma question")
    editor.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('.msg').length === 2 && "
                           "document.querySelector('.msg-assistant').dataset.status === 'done'")
    wait_idle(page)
    assert assistant_text(page) == "gamma question"
    assert [m.content for m in _messages(web_server, "bob@example.com", cid)] == ["gamma question"] * 2

    page.click("#settings-toggle")
    page.fill('textarea[name="system_prompt"]', "Answer like a pirate.")
    page.locator('textarea[name="system_prompt"]').blur()
    page.wait_for_function("() => document.querySelector('#settings-status').textContent === 'Saved.'")
    bob = web_server.store.get_user("bob@example.com")
    assert Conversations(web_server.store).get(bob.id, cid).system_prompt == "Answer like a pirate."
    assert page.get_attribute("#export-md", "href") == f"/c/{cid}/export.md"

    item = page.locator(f'#conversation-list li[data-id="{cid}"]')
    item.hover()
    item.locator('[data-action="rename"]').click()
    page.keyboard.press("Control+A")
    page.keyboard.type("Pirate talk")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#title').textContent === 'Pirate talk'")
    page.fill("#search", "gamma")
    page.wait_for_function("() => document.querySelectorAll('#conversation-list li').length === 1")
    page.fill("#search", "no such words")
    page.wait_for_selector("#no-results:not([hidden])")
    page.fill("#search", "")
    page.wait_for_function(f"() => document.querySelector('#conversation-list li[data-id=\"{cid}\"]')")
    item.hover()
    item.locator('[data-action="delete"]').click()
    page.click('#confirm-delete button[value="delete"]')
    page.wait_for_url(web_server.url + "/")
    assert page.locator(f'#conversation-list li[data-id="{cid}"]').count() == 0
    page.context.close()


def test_stop_ends_the_generation_on_the_server(browser, web_server):
    page = signed_in_page(browser, web_server.url, "bob@example.com")
    page.select_option('select[name="model"]', "slow")
    page.fill('textarea[name="message"]', "Count for me")
    page.keyboard.press("Enter")
    page.wait_for_function("""() => {
        const answer = document.querySelector('[data-role="assistant"]');
        return answer && answer.textContent.includes('word5');
    }""")
    seen = assistant_text(page)
    page.wait_for_function(f"() => document.querySelector('[data-role=\"assistant\"]').textContent.length > {len(seen) + 10}")
    assert page.locator("#composer").get_attribute("data-state") == "streaming"  # it streams, word by word
    page.click("#stop")
    page.wait_for_selector('.msg-assistant[data-status="stopped"]')
    assert web_server.slow.closed.wait(5), "the provider's stream was not closed after the stop"
    pieces = web_server.slow.pieces
    assert pieces < 1000
    page.wait_for_timeout(300)
    assert web_server.slow.pieces == pieces  # nothing more is generated

    conversation_id = int(page.url.rsplit("/", 1)[1])
    page.reload()  # the partial answer was kept, marked stopped
    answer = page.locator(".msg-assistant").last
    assert answer.get_attribute("data-status") == "stopped"
    assert answer.locator('[data-role="assistant"]').inner_text().startswith("word0 word1 word2")
    [message] = [m for m in _messages(web_server, "bob@example.com", conversation_id) if m.role == "assistant"]
    assert message.status == "stopped" and message.content.startswith("word0 word1")
    with web_server.store.reading() as session:
        [usage] = session.scalars(select(Usage).where(Usage.model == "slow"))
    assert (usage.status, usage.user_email, usage.key_id, usage.endpoint) == (499, "bob@example.com", None, "web.chat")
    assert 0 < usage.completion_tokens <= pieces
    page.context.close()


def test_the_setup_link_creates_the_first_admin_once(browser, tmp_path):
    store = Store.open(tmp_path)
    with serve(store, [scripted("echo", "local:echo", FakeProvider())]) as (url, app):
        setup_path = app.state.web.setup.path  # what `llama2 serve` prints
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(url + "/signin")
        assert "setup link" in page.locator("main").inner_text()
        page.goto(url + setup_path)
        page.fill('input[name="email"]', "Admin@Example.com")
        page.fill('input[name="password"]', PASSWORD)
        page.fill('input[name="confirm"]', PASSWORD)
        page.click('button[type="submit"]')
        page.wait_for_url(url + "/")
        assert "admin@example.com" in page.locator(".who").inner_text()
        user = store.get_user("admin@example.com")
        assert user.role == "admin" and user.password_hash.startswith("$argon2id$")
        response = page.goto(url + setup_path)  # single use
        assert response.status == 404 and "not valid" in page.locator("main").inner_text()
        context.close()
    store.close()


def test_what_a_model_or_user_writes_runs_nothing(browser, web_server):
    page = signed_in_page(browser, web_server.url, "alice@example.com")
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    response = page.goto(web_server.url + "/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy
    page.select_option('select[name="model"]', "payload")
    assert page.locator("#model-badge").inner_text() == "External"
    assert "external" in page.locator('select[name="model"] option[value="payload"]').inner_text()
    page.fill('textarea[name="message"]', '<img src=x onerror="window.__pwned = \'user\'; alert(9)"> hello')
    page.keyboard.press("Enter")
    page.wait_for_selector('.msg-assistant[data-status="done"]')
    wait_idle(page)
    for _ in range(2):  # as streamed, then as rendered from the store after a reload
        page.wait_for_timeout(300)
        assert dialogs == []
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#thread script, #thread img, #thread iframe, #thread svg[onload]").count() == 0
        assert page.locator('#thread a[href^="javascript"]').count() == 0
        answer = page.locator('[data-role="assistant"]').last.inner_text()
        assert "<script>" in answer and "onerror" in answer  # shown as text
        assert "<img src=x" in page.locator(".user-text").last.inner_text()
        page.reload()
    page.context.close()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_screenshots_of_the_pages(browser, web_server, theme):
    """Sign-in and chat pages at desktop and phone width, saved under tests/artifacts/ for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    for width, (w, h) in {"desktop": (1280, 800), "phone": (390, 844)}.items():
        context = browser.new_context(viewport={"width": w, "height": h}, color_scheme=theme)
        page = context.new_page()
        page.goto(web_server.url + "/signin")
        page.screenshot(path=str(ARTIFACTS / f"web-signin-{width}-{theme}.png"))
        context.close()
        page = signed_in_page(browser, web_server.url, "root@example.com", viewport=(w, h), color_scheme=theme)
        page.select_option('select[name="model"]', "tutor")
        page.fill('textarea[name="message"]', "How do I add two numbers in Python?")
        page.keyboard.press("Enter")
        page.wait_for_selector('.msg-assistant[data-status="done"]')
        wait_idle(page)
        page.evaluate("document.activeElement.blur()")
        page.evaluate("document.querySelector('#thread').scrollTop = 0")
        page.screenshot(path=str(ARTIFACTS / f"web-chat-{width}-{theme}.png"))
        assert page.locator(".code-block .copy-code").count() == 1
        assert page.evaluate("document.documentElement.scrollWidth") <= w  # nothing spills sideways
        if width == "phone":
            page.click('[data-action="open-nav"]')
            page.wait_for_timeout(300)  # the list slides in
            page.screenshot(path=str(ARTIFACTS / f"web-chat-{width}-{theme}-list.png"))
        page.context.close()


def test_signing_out_ends_the_session_on_the_server(browser, web_server):
    page = signed_in_page(browser, web_server.url, "alice@example.com")
    [cookie] = [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]  # plain HTTP on loopback
    page.click('form[action="/signout"] button')
    page.wait_for_url(re.compile(r".*/signin$"))
    copied = httpx.get(f"{web_server.url}/api/conversations", cookies={SESSION_COOKIE: cookie["value"]})
    assert copied.status_code == 401  # the old cookie, replayed, is worth nothing
    page.context.close()


def _messages(web_server, email: str, conversation_id: int):
    return Conversations(web_server.store).messages(web_server.store.get_user(email).id, conversation_id)
