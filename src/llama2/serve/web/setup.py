"""The first start: a one-time setup link that lets its first visitor create the admin account.

When the store has no user, the server makes a random token (256 bits) and `llama2 serve` prints
`/setup?token=...`. The link works once: using it creates the admin and the token is gone (a new
start with still no users makes a new one). By default only a browser on the server's own machine
may open it (`web.setup_loopback_only`).
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class SetupToken:
    def __init__(self, token: str | None) -> None:
        self._token = token
        self._lock = threading.Lock()

    @classmethod
    def for_user_count(cls, users: int) -> SetupToken:
        """A fresh token when there are no users; an already-spent one otherwise."""
        return cls(secrets.token_urlsafe(32) if users == 0 else None)

    @property
    def pending(self) -> bool:
        return self._token is not None

    @property
    def path(self) -> str | None:
        """The setup page's path with the token, while it is unused."""
        return f"/setup?token={self._token}" if self._token else None

    def matches(self, presented: str | None) -> bool:
        token = self._token
        return bool(token and presented) and hmac.compare_digest(token.encode(), presented.encode())

    def redeem(self, presented: str | None, create: Callable[[], T]) -> T | None:
        """Run `create` (making the admin) if `presented` is the live token, one attempt at a time, and
        spend the token when it succeeds; None when the token is wrong or spent. An error in `create`
        (a bad email, say) leaves the token live for another try."""
        with self._lock:
            if not self.matches(presented):
                return None
            result = create()
            self._token = None
            return result
