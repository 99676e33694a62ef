"""The gateway under load and abuse, against a real server on loopback serving the tiny checkpoint:
64 concurrent streams through the official `openai` client, clients that hang up mid-stream,
overload turned into 429s, and a server killed mid-run that keeps every committed usage record."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import select

from llama2.generation.scheduler import Scheduler
from llama2.serve.app import build_gateway, create_app
from llama2.serve.config import ModelEntry, ServeConfig
from llama2.serve.gateway import Gateway
from llama2.serve.store import Store, Usage

from .running import running

PROMPTS = [[{"role": "user", "content": text}] for text in (
    "Once upon a time", "The cat", "Hello there", "def add(a, b):", "In the beginning", "A B C", "Why?", "Tell me more",
)]
URL_LINE = re.compile(r"(http://127\.0\.0\.1:\d+/v1)")


@dataclass
class Server:
    url: str
    key: str
    store: Store
    gateway: Gateway

    def scheduler(self, model: str) -> Scheduler:
        return self.gateway.models.get(model).provider.scheduler

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    """Two copies of the tiny model: `wide` batches 8 rows with room for 64 waiting; `narrow` decodes
    one request at a time with 2 waiting, so a stuck slot or an unbounded queue shows at once."""
    store = Store.open(tmp_path_factory.mktemp("robust"))
    store.add_user("load@example.com")
    key = store.create_key("load@example.com", name="load")[1]
    config = ServeConfig(models=(
        ModelEntry("wide", f"local:{tiny_checkpoint}", {"max_batch_size": 8, "max_queue": 64}),
        ModelEntry("narrow", f"local:{tiny_checkpoint}", {"max_batch_size": 1, "max_queue": 2}),
    ))
    gateway = build_gateway(config, store)
    with running(create_app(gateway, max_body_bytes=config.max_body_bytes)) as url:
        yield Server(url, key, store, gateway)


def statuses(store: Store, model: str) -> list[int]:
    """The status of every usage record of `model`, oldest first."""
    with store.engine.connect() as connection:
        return list(connection.scalars(select(Usage.status).where(Usage.model == model).order_by(Usage.id)))


def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll `condition` until it holds (True) or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_64_concurrent_streams_all_finish_and_equal_the_whole_answers(server):
    api = openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0)
    whole = [api.chat.completions.create(model="wide", messages=m, max_tokens=8, temperature=0) for m in PROMPTS]
    before = len(statuses(server.store, "wide"))

    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[str, list[str], int]:
        stream = await client.chat.completions.create(
            model="wide", messages=PROMPTS[i % len(PROMPTS)], max_tokens=8, temperature=0,
            stream=True, stream_options={"include_usage": True})
        text, reasons, tokens = [], [], 0
        async for chunk in stream:
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                text.append(choice.delta.content or "")
                if choice.finish_reason:
                    reasons.append(choice.finish_reason)
        return "".join(text), reasons, tokens

    async def all_of_them():
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0,
                                      timeout=60) as client:
            return await asyncio.gather(*(one(client, i) for i in range(64)), return_exceptions=True)

    results = asyncio.run(all_of_them())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    for i, (text, reasons, tokens) in enumerate(results):
        expected = whole[i % len(PROMPTS)].choices[0]
        assert (text, reasons) == (expected.message.content, [expected.finish_reason]), f"stream {i}"
        assert tokens == whole[i % len(PROMPTS)].usage.completion_tokens
    assert eventually(lambda: len(statuses(server.store, "wide")) == before + 64)
    assert statuses(server.store, "wide")[before:] == [200] * 64


def _hang_up_with_httpx(server: Server) -> None:
    body = {"model": "narrow", "messages": PROMPTS[0], "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, headers=server.headers(),
                      timeout=30) as response:
        assert response.status_code == 200
        events = 0
        for line in response.iter_lines():
            events += line.startswith("data: ")
            if events == 3:
                break  # leaving the block closes the connection with the answer half read


def _hang_up_with_openai(server: Server) -> None:
    api = openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0)
    stream = api.completions.create(model="narrow", prompt="Once upon a time", max_tokens=240, temperature=0,
                                    stream=True)
    for _ in itertools.islice(stream, 3):
        pass
    stream.close()  # closes the HTTP response with the answer half read


@pytest.mark.parametrize("hang_up", [_hang_up_with_httpx, _hang_up_with_openai], ids=["httpx", "openai"])
def test_clients_that_hang_up_mid_stream_free_their_slot(server, hang_up):
    """On the one-row model a client that closes its stream after three chunks frees the row at the
    next decode step, so the next request is served at once, and is logged with status 499."""
    scheduler = server.scheduler("narrow")
    started = time.monotonic()
    whole = httpx.post(server.url + "/v1/completions", headers=server.headers(), timeout=30,
                       json={"model": "narrow", "prompt": "Once upon a time", "max_tokens": 240, "temperature": 0})
    full_answer_s = time.monotonic() - started
    assert whole.json()["usage"]["completion_tokens"] == 240
    before = len(statuses(server.store, "narrow"))
    for _ in range(3):  # one row only: a slot left behind would hold every later request back
        hang_up(server)
        started = time.monotonic()
        assert eventually(lambda: scheduler.active == 0 and scheduler.queue_depth == 0, timeout_s=5.0)
        # freed at the next step, not when the abandoned answer would have been complete
        assert time.monotonic() - started < 0.75 * full_answer_s
    started = time.monotonic()
    reply = httpx.post(server.url + "/v1/completions", headers=server.headers(), timeout=10,
                       json={"model": "narrow", "prompt": "Hi", "max_tokens": 2, "temperature": 0})
    assert reply.status_code == 200 and time.monotonic() - started < 2.0
    # the hung-up requests are in the usage log as nginx logs them: status 499
    eventually(lambda: len(statuses(server.store, "narrow")) >= before + 4)
    assert sorted(statuses(server.store, "narrow")[before:]) == [200, 499, 499, 499]


def test_overload_is_429_with_retry_after_and_the_server_recovers(server):
    scheduler = server.scheduler("narrow")
    body = {"model": "narrow", "prompt": "Once upon a time", "max_tokens": 200, "temperature": 0}
    before = len(statuses(server.store, "narrow"))
    together = threading.Barrier(16)

    def fire(i: int) -> httpx.Response:
        together.wait()
        return httpx.post(server.url + "/v1/completions", headers=server.headers(), timeout=60,
                          json={**body, "stream": i % 2 == 1})

    with ThreadPoolExecutor(16) as pool:  # one row decoding, two waiting: the rest is turned away
        responses = list(pool.map(fire, range(16)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 429}, codes
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["code"] == "overloaded"
    assert eventually(lambda: scheduler.active == 0 and scheduler.queue_depth == 0)
    after = httpx.post(server.url + "/v1/completions", headers=server.headers(), timeout=10,
                       json={**body, "max_tokens": 2})
    assert after.status_code == 200
    eventually(lambda: len(statuses(server.store, "narrow")) >= before + 17)
    assert sorted(statuses(server.store, "narrow")[before:]) == sorted(codes + [200])


def _start_subprocess_server(checkpoint: Path, data_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`llama2 serve` in its own process; returns it once it has printed its URL."""
    command = [sys.executable, "-m", "llama2", "serve", "--model", f"tiny=local:{checkpoint}",
               "--port", "0", "--data-dir", str(data_dir)]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    found: list[str] = []

    def read() -> None:
        for line in process.stdout:  # keep draining, so the server never blocks on a full pipe
            if not found and (match := URL_LINE.search(line)):
                found.append(match.group(1))

    threading.Thread(target=read, daemon=True).start()
    if not eventually(lambda: bool(found) or process.poll() is not None, timeout_s=120):
        process.kill()
        pytest.fail(f"llama2 serve did not print its URL within 120 s; its log:\n{log.read_text()[-2000:]}")
    if not found:
        pytest.fail(f"llama2 serve exited with status {process.returncode} before printing its URL; "
                    f"its log:\n{log.read_text()[-2000:]}")
    return process, found[0]


def test_a_killed_server_keeps_every_committed_usage_record(tiny_checkpoint, tmp_path):
    """SIGKILL while requests are in flight: every request a client saw answered with a 200 is in
    the store afterwards. Whole answers only: the gateway commits their record before it sends
    them, while a stream's 200 goes out before its answer exists."""
    data_dir = tmp_path / "data"
    with Store.open(data_dir) as store:
        store.add_user("ops@example.com")
        key = store.create_key("ops@example.com")[1]
    process, url = _start_subprocess_server(tiny_checkpoint, data_dir, tmp_path / "serve.log")
    headers = {"Authorization": f"Bearer {key}"}
    ok = 0
    try:
        for _ in range(5):
            reply = httpx.post(url + "/completions", headers=headers, timeout=30,
                               json={"model": "tiny", "prompt": "Once", "max_tokens": 4})
            ok += reply.status_code == 200
        assert ok == 5

        answered: list[int] = []  # list.append is atomic: the workers share it without a lock

        def in_flight(i: int) -> int | None:
            """The status, or None when the kill cut the request off."""
            try:
                reply = httpx.post(url + "/completions", headers=headers, timeout=30,
                                   json={"model": "tiny", "prompt": "Once", "max_tokens": 2 + 8 * (i % 4)})
            except httpx.HTTPError:
                return None
            answered.append(reply.status_code)
            return reply.status_code

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(in_flight, i) for i in range(48)]
            assert eventually(lambda: len(answered) >= 8, timeout_s=60)
            process.send_signal(signal.SIGKILL)  # while other requests are still in flight
            outcomes = [f.result() for f in futures]
        ok += outcomes.count(200)
        assert set(outcomes) <= {200, None} and None in outcomes  # the kill did cut requests off
    finally:
        process.kill()
        process.wait(timeout=30)
    with Store.open(data_dir) as store:
        with store.engine.connect() as connection:
            recorded = list(connection.scalars(select(Usage.status).where(Usage.status == 200)))
    assert len(recorded) >= ok >= 5 + 8
