"""Every failure becomes OpenAI's error shape here, and only here (STYLE.md: one place at the edge).

Upstream failures keep their meaning for the client: an upstream 429 stays a 429 with Retry-After
(the client's SDK backs off), a timeout is a 504, anything else from upstream a 502. Messages are
the typed errors' one-liners, which never carry an upstream key (`providers.remote` scrubs them).
"""

from __future__ import annotations

import logging
import math

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from llama2.errors import (
    ConfigError,
    ContextLengthError,
    DialogError,
    Llama2Error,
    OverloadedError,
    ProviderError,
    RateLimitError,
    ServeError,
    UnsupportedError,
)
from llama2.serve.protocol import InvalidRequestError, error_body

log = logging.getLogger("llama2.serve")


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   retry_after_s: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))} if retry_after_s is not None else None
    return JSONResponse(error_body(status, message, param=param, code=code), status_code=status, headers=headers)


def status_of(exc: BaseException) -> int:
    """The HTTP status an exception becomes (also what the usage log records)."""
    return _classify(exc)[0]


def _classify(exc: BaseException) -> tuple[int, str | None, str | None, float | None]:
    """(status, param, code, retry_after_s)."""
    if isinstance(exc, RateLimitError):
        return 429, None, exc.code, exc.retry_after_s
    if isinstance(exc, InvalidRequestError):
        return 400, exc.param, exc.code, None
    if isinstance(exc, ServeError):
        return exc.status, None, exc.code, None
    if isinstance(exc, OverloadedError):
        return 429, None, "overloaded", exc.retry_after_s
    if isinstance(exc, ContextLengthError):
        return 400, "messages", "context_length_exceeded", None
    if isinstance(exc, DialogError):
        return 400, "messages", "invalid_dialog", None
    if isinstance(exc, (ConfigError, UnsupportedError)):
        return 400, None, "invalid_request_error", None
    if isinstance(exc, ProviderError):
        if exc.status == 429:
            return 429, None, "upstream_rate_limited", exc.retry_after_s or 1.0
        if exc.status == 504:
            return 504, None, "upstream_timeout", None
        if exc.status in (400, 413, 422):  # the request itself was refused upstream (content filter, ...)
            return 400, None, "upstream_rejected", None
        return 502, None, "upstream_error", None
    return 500, None, "internal_error", None


def exception_response(exc: BaseException) -> JSONResponse:
    status, param, code, retry_after = _classify(exc)
    if status == 500:
        log.error("internal error: %s", exc, exc_info=exc)
        message = "The server had an error while processing your request; the log has the details"
        if isinstance(exc, Llama2Error):
            message = str(exc)
    else:
        message = str(exc)
    return error_response(status, message, param=param, code=code, retry_after_s=retry_after)


def validation_response(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 becomes OpenAI's 400, naming the first bad field."""
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        where = first.get("loc", ("body", "?"))[-1]
        return error_response(400, f"the body is not valid JSON (at character {where})", code="invalid_json")
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    message = first.get("msg", "invalid request body")
    if param:
        message = f"{param}: {message}"
    return error_response(400, message, param=param, code="invalid_request_error")


def install(app) -> None:
    """Register the handlers that turn every exception into the OpenAI shape."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(exc)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        message = f"Unknown path {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return error_response(exc.status_code, message, code=code)

    @app.exception_handler(Llama2Error)
    async def _ours(request: Request, exc: Llama2Error) -> JSONResponse:
        return exception_response(exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        """A bug: answered as OpenAI's 500 (Starlette then re-raises it, so it is logged)."""
        return exception_response(exc)
