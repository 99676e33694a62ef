"""Secrets and access policy of the server, with no HTTP in sight: API keys, roles, rate limits and
the throttle on password guessing (password hashes themselves live in `serve.passwords`).

- API keys are `sk-l2-` + an 8-character public id + 256 random bits. The id (`sk-l2-AbCd1234`) is the
  prefix shown in listings and used to revoke; the store keeps only the SHA-256 of the whole key,
  which is enough for a high-entropy secret (no slow hash needed: nothing to brute-force).
- `Authorizer` turns a presented key into a `KeyInfo` and decides, per request, whether its model
  list, requests-per-minute and tokens-per-day allow it, raising the typed errors the server maps to
  401/403/429.
- `LoginThrottle` locks an account, or a client address, for a while after repeated wrong passwords.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from llama2.errors import AuthenticationError, PermissionDeniedError, RateLimitError

if TYPE_CHECKING:
    from llama2.serve.store import KeyInfo, Store

KEY_PREFIX = "sk-l2-"
KEY_ID_LENGTH = len(KEY_PREFIX) + 8  # token_urlsafe(6) is 8 characters
KEY_LENGTH = KEY_ID_LENGTH + 43  # token_urlsafe(32) is 43 characters

ROLES = ("admin", "user")
RATE_WINDOW_S = 60.0


def generate_key() -> tuple[str, str]:
    """A new API key as (public key id, secret); the id is the secret's first `KEY_ID_LENGTH` characters."""
    key_id = KEY_PREFIX + secrets.token_urlsafe(6)
    return key_id, key_id + secrets.token_urlsafe(32)


def key_id_of(secret: str) -> str | None:
    """The public id inside a presented key, or None when it cannot be one of ours."""
    if len(secret) != KEY_LENGTH or not secret.startswith(KEY_PREFIX):
        return None
    return secret[:KEY_ID_LENGTH]


def hash_key(secret: str) -> str:
    """Hex SHA-256 of an API key: what the store keeps instead of the key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def verify_key(secret: str, key_hash: str) -> bool:
    return hmac.compare_digest(hash_key(secret), key_hash)


def mask_secret(secret: str) -> str:
    """What error messages may show of a presented key: its start and end, never the whole of it."""
    if len(secret) < 16:
        return "***"
    return f"{secret[:8]}***{secret[-4:]}"


class RateLimiter:
    """Requests per minute per key over a sliding 60 s window, in this process's memory; thread-safe.

    Only admitted requests are counted, so a client that keeps retrying too early is not locked out
    for longer than the window. Each server process counts on its own.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, window_s: float = RATE_WINDOW_S) -> None:
        self._clock = clock
        self._window_s = window_s
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, limit: int) -> float | None:
        """Count one request for `key` and return None, or return the seconds until one is allowed."""
        now = self._clock()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self._window_s:
                hits.popleft()
            if len(hits) >= limit:
                return hits[len(hits) - limit] + self._window_s - now
            hits.append(now)
            return None


class LoginThrottle:
    """Temporary lockout after repeated wrong passwords, per account and per client address; in this
    process's memory, thread-safe.

    `max_per_account` failures for one email within `lockout_s` lock that email for `lockout_s`
    (also against the right password: that is what stops guessing), and `max_per_ip` failures from
    one address lock that address the same way (one client trying many accounts). Emails that have
    no account are counted like real ones, so a lockout tells nobody which accounts exist.
    """

    MAX_TRACKED = 100_000  # entries kept before old ones are swept (bounds memory under a flood)

    def __init__(self, *, max_per_account: int, max_per_ip: int, lockout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = {"account": max_per_account, "ip": max_per_ip}
        self._lockout_s = lockout_s
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._locked_until: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def locked_for(self, email: str, ip: str) -> float | None:
        """Seconds until this email may try again from this address, or None when it may now."""
        now = self._clock()
        with self._lock:
            waits = [self._locked_until.get(key, 0.0) - now for key in (("account", email), ("ip", ip))]
        wait = max(waits)
        return wait if wait > 0 else None

    def failed(self, email: str, ip: str) -> None:
        """Count one wrong password; lock the account or address that reaches its limit."""
        now = self._clock()
        with self._lock:
            if len(self._failures) > self.MAX_TRACKED:
                self._sweep(now)
            for key in (("account", email), ("ip", ip)):
                times = self._failures.setdefault(key, deque())
                while times and times[0] <= now - self._lockout_s:
                    times.popleft()
                times.append(now)
                if len(times) >= self._limits[key[0]]:
                    self._locked_until[key] = now + self._lockout_s
                    times.clear()

    def succeeded(self, email: str) -> None:
        """A right password: the account's count of failures starts again (the address's does not)."""
        with self._lock:
            self._failures.pop(("account", email), None)

    def _sweep(self, now: float) -> None:
        for key in [k for k, t in self._failures.items() if not t or t[-1] <= now - self._lockout_s]:
            del self._failures[key]
        for key in [k for k, until in self._locked_until.items() if until <= now]:
            del self._locked_until[key]


class Authorizer:
    """Who is calling (`authenticate`) and whether they may make this request now (`authorize`)."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self._store = store
        self._now = now
        self._limiter = RateLimiter(clock=clock)

    def authenticate(self, secret: str | None) -> KeyInfo:
        """The key behind a presented secret; AuthenticationError when missing, unknown, revoked or disabled."""
        if not secret:
            raise AuthenticationError("You didn't provide an API key. Pass it in an Authorization header using "
                                      "Bearer auth (Authorization: Bearer YOUR_KEY); an admin creates keys with "
                                      "`llama2 admin create-key EMAIL`.")
        key = self._store.find_key(secret)
        if key is None:
            raise AuthenticationError(f"Incorrect API key provided: {mask_secret(secret)}. Ask an admin for a key "
                                      "(`llama2 admin create-key EMAIL`).")
        if key.revoked:
            raise AuthenticationError(f"API key {key.id} has been revoked; ask an admin for a new one.")
        if key.user_disabled:
            raise AuthenticationError(f"The account of API key {key.id} ({key.user_email}) is disabled.")
        return key

    def authorize(self, key: KeyInfo, model: str) -> None:
        """Raise PermissionDeniedError for a model outside the key's list and RateLimitError past its
        tokens per day (UTC day, from the usage records) or requests per minute (this request counts)."""
        if key.models is not None and model not in key.models:
            raise PermissionDeniedError(f"API key {key.id} may not use model '{model}'; "
                                        f"it may use: {', '.join(key.models)}.")
        if key.tokens_per_day is not None:
            now = self._now().astimezone(timezone.utc)
            midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
            used = self._store.tokens_used(key.id, midnight)
            if used >= key.tokens_per_day:
                retry = (midnight + timedelta(days=1) - now).total_seconds()
                raise RateLimitError(f"API key {key.id} has used {used} of its {key.tokens_per_day} tokens per day; "
                                     "the budget renews at midnight UTC.", retry_after_s=retry)
        if key.rpm is not None:
            retry = self._limiter.acquire(key.id, key.rpm)
            if retry is not None:
                raise RateLimitError(f"API key {key.id} is limited to {key.rpm} requests per minute; "
                                     f"retry after {retry:.1f} s.", retry_after_s=retry)
