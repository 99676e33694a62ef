"""The FastAPI application: routes, the OpenAI error handlers, and a request-size limit.

`build_gateway` does the slow, fallible start-up work (open and migrate the store, load every
model) so `llama2 serve` fails before the port opens; `create_app` only wires what exists.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llama2.serve import errors, web
from llama2.serve.auth import Authorizer
from llama2.serve.config import ServeConfig, WebSettings
from llama2.serve.gateway import Gateway
from llama2.serve.metrics import Metrics
from llama2.serve.models import ModelPool
from llama2.serve.routes import health, openai
from llama2.serve.secrets import SecretBox
from llama2.serve.store import Store, default_data_dir
from llama2.serve.upstream_keys import UpstreamKeys, takes_key


def build_gateway(config: ServeConfig, store: Store | None = None) -> Gateway:
    """Open the store (migrating it) and load every configured model, remote ones with the upstream
    keys stored for them (encrypted with the data dir's or $LLAMA2_SECRET_KEY's key)."""
    store = store or Store.open(config.data_dir, config.db)
    upstream_keys = UpstreamKeys(store, SecretBox(config.data_dir or default_data_dir()))
    try:
        models = ModelPool.load(config.models, upstream_keys.opened([m.name for m in config.models if takes_key(m)]))
    except BaseException:
        store.close()
        raise

    def scheduler_state() -> dict[str, tuple[int, int]]:
        return {
            name: (m.queue_depth or 0, m.active or 0)
            for name, m in models.models.items() if m.queue_depth is not None
        }

    return Gateway(store, Authorizer(store), models, Metrics(scheduler_state), log_content=config.log_content,
                   upstream_keys=upstream_keys)


def create_app(gateway: Gateway, *, max_body_bytes: int, web_settings: WebSettings = WebSettings()) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await gateway.models.aclose()
        gateway.store.close()

    app = FastAPI(
        title="llama2 gateway",
        summary="OpenAI-compatible API over local Llama 2 models and hosted ones",
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    errors.install(app)
    app.include_router(openai.router)
    app.include_router(health.router)
    web.install(app, gateway, web_settings)  # the web chat at /
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    return app


class BodySizeLimit:
    """Refuse bodies over `max_bytes` with 413 — by Content-Length when given, else while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen, refused = 0, False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes and not refused:
                    refused = True
                    await self._refuse(scope, receive, send)
                    return {"type": "http.disconnect"}  # the app stops reading; its answer is dropped
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = errors.error_response(
            413, f"The request body is larger than this server's limit of {self.max_bytes} bytes",
            code="request_too_large",
        )
        await response(scope, receive, send)

