"""Secrets and access policy of the server, with no HTTP in sight: API keys, passwords, rate limits.

- API keys are `sk-l2-` + an 8-character public id + 256 random bits. The id (`sk-l2-AbCd1234`) is the
  prefix shown in listings and used to revoke; the store keeps only the SHA-256 of the whole key,
  which is enough for a high-entropy secret (no slow hash needed: nothing to brute-force).
- Passwords are low-entropy, so they get scrypt (memory-hard) with a random salt; the parameters
  travel in the hash string (`scrypt$n$r$p$salt$hash`) so they can be raised later without breaking
  old hashes.
- `Authorizer` turns a presented key into a `KeyInfo` and decides, per request, whether its model
  list, requests-per-minute and tokens-per-day allow it, raising the typed errors the server maps to
  401/403/429.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from llama2.errors import AuthenticationError, ConfigError, PermissionDeniedError, RateLimitError

if TYPE_CHECKING:
    from llama2.serve.store import KeyInfo, Store

KEY_PREFIX = "sk-l2-"
KEY_ID_LENGTH = len(KEY_PREFIX) + 8  # token_urlsafe(6) is 8 characters
KEY_LENGTH = KEY_ID_LENGTH + 43  # token_urlsafe(32) is 43 characters

MIN_PASSWORD_LENGTH = 8
# scrypt cost: 2**14 x 8 x 128 B = 16 MiB and ~50 ms per hash (the interactive-login setting of RFC 7914 §2).
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_SALT_BYTES, SCRYPT_KEY_BYTES = 2**14, 8, 1, 16, 32
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


def hash_password(password: str) -> str:
    """`scrypt$n$r$p$salt$hash` (salt and hash base64) of a password of at least MIN_PASSWORD_LENGTH characters."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"password is too short: use at least {MIN_PASSWORD_LENGTH} characters")
    salt = secrets.token_bytes(SCRYPT_SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_KEY_BYTES)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)])


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches a `hash_password` string (constant-time); False for a malformed hash."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p), len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # maxmem: room for the 128*n*r bytes scrypt needs plus slack (OpenSSL's default cap is 32 MiB).
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * n * r + 2**20)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


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
