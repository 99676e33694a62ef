"""A loopback HTTP server for wire-format tests: it records every request an SDK sends and answers
with the JSON or server-sent events a test scripts, in the vendor's real formats."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    """One request as it arrived: method, path, query, headers (lower-case names), JSON body."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict | None


@dataclass
class Reply:
    """A JSON body, or a list of SSE frames (already formatted, each ending in a blank line)."""

    status: int = 200
    body: dict | None = None
    events: list[str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def sse(data: dict | str, event: str | None = None) -> str:
    """One server-sent event frame."""
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


class WireServer:
    """`with WireServer(answer) as server:` serves `answer(seen) -> Reply` on 127.0.0.1:<free port>.

    `answer` may also be a list of replies, used in order (the last one repeats)."""

    def __init__(self, answer: Callable[[Seen], Reply] | list[Reply]) -> None:
        self.seen: list[Seen] = []
        self._answer = answer if callable(answer) else self._in_order(answer)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @staticmethod
    def _in_order(replies: list[Reply]) -> Callable[[Seen], Reply]:
        queue = list(replies)
        return lambda seen: queue.pop(0) if len(queue) > 1 else queue[0]

    def __enter__(self) -> "WireServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self._serve()

            def do_GET(self) -> None:
                self._serve()

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                seen = Seen(
                    self.command, url.path, parse_qs(url.query),
                    {k.lower(): v for k, v in self.headers.items()}, json.loads(raw) if raw else None,
                )
                server.seen.append(seen)
                reply = server._answer(seen)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.events is not None:
                    self.send_header("content-type", "text/event-stream")
                    self.end_headers()
                    for frame in reply.events:
                        self.wfile.write(frame.encode())
                        self.wfile.flush()
                    return
                data = json.dumps(reply.body or {}).encode()
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test asserts on `seen` instead."""

        return Handler


async def generate_and_close(provider, requests):
    """Answer `requests` and close the provider (its HTTP client) in the same event loop."""
    async with provider:
        return await provider.generate(requests)


async def stream_and_close(provider, request):
    """All stream deltas of one request, then close the provider in the same event loop."""
    async with provider:
        return [delta async for delta in provider.stream(request)]
