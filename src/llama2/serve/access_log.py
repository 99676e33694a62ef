"""Keep one-time secrets out of the access log. The first admin's setup link, invitation links
(`/set-password?token=...`) and the SSO callback (`?code=...&state=...`) carry their secret in the
query string; uvicorn logs every request line, so anyone who can read the log could use an invitation
before its owner does. `RedactSecrets` replaces those values with `[redacted]` and leaves the rest of
the line as it was."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode

SECRET_PARAMETERS = frozenset({"token", "code", "state"})
REDACTED = "[redacted]"


def redact_path(path: str) -> str:
    """`path` with the values of the secret query parameters replaced; other parameters unchanged."""
    base, separator, query = path.partition("?")
    if not separator:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(name in SECRET_PARAMETERS for name, _ in pairs):
        return path
    kept = [(name, REDACTED if name in SECRET_PARAMETERS else value) for name, value in pairs]
    return f"{base}?{urlencode(kept, safe='[]')}"


class RedactSecrets(logging.Filter):
    """For uvicorn's access logger, whose record args are (client, method, path, http version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_path(args[2]), *args[3:])
        return True


def redact_access_log(logger_name: str = "uvicorn.access") -> None:
    """Install the filter once on uvicorn's access logger (after uvicorn has configured logging)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(existing, RedactSecrets) for existing in logger.filters):
        logger.addFilter(RedactSecrets())
