"""The web chat under test: a real server on loopback (uvicorn in a thread) with the bundled chat model
and scripted models beside it, signed-in HTTP clients, and Debian's Chromium through Playwright.

Models of the shared server:
    default-chat  the bundled chat model (local)            echo     repeats the last user message (local)
    payload       answers with script/handler payloads      slow     streams a word every 20 ms, 1000 words
                  (external: an OpenAI-compatible URL)      broken   fails before its first word
    admins-only   echo, for the admin role only             recorder records every request it gets
    tutor         answers with Markdown: text, code, a table (for the screenshots)
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from llama2.errors import ProviderError
from llama2.providers.base import Capabilities, Completion, GenerateRequest, Provider
from llama2.providers.fake import FakeProvider
from llama2.serve.app import create_app
from llama2.serve.auth import Authorizer
from llama2.serve.config import ModelEntry, WebSettings
from llama2.serve.gateway import Gateway
from llama2.serve.metrics import Metrics
from llama2.serve.models import ModelPool, ServedModel
from llama2.serve.store import Store
from llama2.types import StreamDelta

from ..running import running

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
PAYLOAD = ('Answer: <script>window.__pwned = "script"; alert(1)</script> '
           '<img src=x onerror="window.__pwned = \'img\'; alert(2)"> '
           '<svg onload="window.__pwned = \'svg\'"></svg> [click](javascript:alert(3)) '
           '<a href="javascript:alert(4)">link</a> <iframe src="javascript:alert(5)"></iframe>')
TUTOR = """Use the `+` operator. A small **Python** function makes it reusable:

```python
def add(a: int, b: int) -> int:
    \"\"\"Return the sum of a and b.\"\"\"
    return a + b  # works for floats too


print(add(2, 3))  # 5
```

| a | b | add(a, b) |
|---|---|---|
| 2 | 3 | 5 |
| 1.5 | 2 | 3.5 |

- Integers stay exact; floats may round.
- For many numbers, use `sum([...])`."""


class SlowProvider(Provider):
    """Streams `word0 word1 ...` every 20 ms until closed; tells when its stream was closed."""

    spec = "local:slow"
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.pieces = 0

    async def generate(self, requests):
        raise ProviderError("slow streams only")

    async def stream(self, request: GenerateRequest):
        self.closed.clear()
        self.pieces = 0
        try:
            for i in range(1000):
                await asyncio.sleep(0.02)
                self.pieces += 1
                yield StreamDelta(index=0, text=f"word{i} ", tokens=[i])
            yield StreamDelta(index=0, text="", finish_reason="length", prompt_tokens=3, completion_tokens=1000)
        finally:
            self.closed.set()


class BrokenProvider(FakeProvider):
    async def generate(self, requests) -> list[Completion]:
        raise ProviderError("the upstream model is down", status=503)


@dataclass
class WebServer:
    url: str
    store: Store
    gateway: Gateway
    slow: SlowProvider
    recorder: FakeProvider


def make_gateway(store: Store, models: list[ServedModel]) -> Gateway:
    """A gateway as `build_gateway` makes one, over models built here (scripted ones included)."""
    return Gateway(store, Authorizer(store), ModelPool(models), Metrics(lambda: {}))


@contextmanager
def serve(store: Store, models: list[ServedModel], settings: WebSettings = WebSettings()) -> Iterator[tuple[str, FastAPI]]:
    """(base URL, app) of a server on loopback; `app.state.web.setup.path` is the setup link it would print."""
    app = create_app(make_gateway(store, models), max_body_bytes=1 << 20, web_settings=settings)
    with running(app) as url:
        yield url, app


def scripted(name: str, spec: str, provider: Provider, roles: tuple[str, ...] | None = None) -> ServedModel:
    return ServedModel(ModelEntry(name, spec, roles=roles), provider)


@pytest.fixture(scope="session")
def web_server(tmp_path_factory) -> Iterator[WebServer]:
    store = Store.open(tmp_path_factory.mktemp("web"))
    for email, role in (("alice@example.com", "user"), ("bob@example.com", "user"), ("root@example.com", "admin")):
        store.add_user(email, role=role, password=PASSWORD)
    (chat,) = ModelPool.load((ModelEntry("default-chat", "local:default-chat"),)).models.values()
    slow, recorder = SlowProvider(), FakeProvider(answer=lambda request: "recorded")
    models = [
        chat,
        scripted("echo", "local:echo", FakeProvider()),
        scripted("payload", "http://127.0.0.1:9/v1#payload", FakeProvider(answer=lambda request: PAYLOAD)),
        scripted("slow", "local:slow", slow),
        scripted("broken", "local:broken", BrokenProvider()),
        scripted("admins-only", "local:admins-only", FakeProvider(), roles=("admin",)),
        scripted("recorder", "local:recorder", recorder),
        scripted("tutor", "local:tutor", FakeProvider(answer=lambda request: TUTOR)),
    ]
    with serve(store, models) as (url, app):
        yield WebServer(url, store, app.state.gateway, slow, recorder)
    store.close()


# ---- HTTP clients -------------------------------------------------------------------------------


def form_fields(html: str) -> dict[str, str]:
    """The hidden inputs of a page's form (csrf_token, next, token)."""
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))


class Browserless(httpx.Client):
    """An HTTP client with a session, and the CSRF token the chat page gives it."""

    csrf: str = ""

    def write(self, method: str, url: str, **kwargs) -> httpx.Response:
        headers = {"X-CSRF-Token": self.csrf, **kwargs.pop("headers", {})}
        return self.request(method, url, headers=headers, **kwargs)


def sign_in(url: str, email: str, password: str = PASSWORD) -> Browserless:
    client = Browserless(base_url=url, timeout=30)
    response = client.post("/signin", data={**form_fields(client.get("/signin").text), "email": email,
                                            "password": password})
    assert response.status_code == 303, response.text
    client.csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', client.get("/").text).group(1)
    return client


# ---- the browser --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium under Playwright (never a downloaded browser); skipped without it, except in CI.

    Module-scoped: Playwright's sync API keeps an event loop running on the main thread while it is
    open, and any later test that calls `asyncio.run` would fail; it is closed with each module."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium", pytrace=False)
        pytest.skip(f"browser tests need {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


def signed_in_page(browser, url: str, email: str, *, viewport=(1280, 800), color_scheme: str = "light"):
    """A new browser context signed in as `email`, on the chat page."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, color_scheme=color_scheme)
    page = context.new_page()
    page.goto(url + "/signin")
    page.fill('input[name="email"]', email)
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_url(url + "/")
    return page
