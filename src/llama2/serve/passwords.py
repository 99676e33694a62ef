"""Password hashes: argon2id for every new one, and the scrypt hashes that older stores hold.

- New hashes are argon2id with argon2-cffi's defaults (RFC 9106's second recommended option: 64 MiB,
  3 passes, 4 lanes), as a PHC string (`$argon2id$v=19$m=65536,t=3,p=4$salt$hash`) that carries its
  own parameters, so they can be raised later and old hashes still verify.
- Hashes written before argon2id (`scrypt$n$r$p$salt$hash`) still verify; `needs_rehash` says so,
  and the store replaces them with argon2id at the next successful sign-in, when the password is at hand.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from llama2.errors import ConfigError

MIN_PASSWORD_LENGTH = 8
# Long enough for any passphrase or manager-made password; an upper bound keeps a request from
# making the server hash megabytes (argon2 reads the whole input on every pass).
MAX_PASSWORD_LENGTH = 1024


@functools.cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


def check_new_password(password: str) -> None:
    """ConfigError naming the rule a new password breaks, if any."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"password is too short: use at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ConfigError(f"password is too long: use at most {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str) -> str:
    """The argon2id PHC string of a password that passes `check_new_password`."""
    check_new_password(password)
    return _hasher().hash(password)


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches an argon2id or legacy scrypt hash; False for a malformed hash."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    if encoded.startswith("scrypt$"):
        return _verify_scrypt(password, encoded)
    try:
        return _hasher().verify(encoded, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(encoded: str) -> bool:
    """True for a hash that is not argon2id with today's parameters (scrypt, or weaker argon2)."""
    if not encoded.startswith("$argon2id$"):
        return True
    try:
        return _hasher().check_needs_rehash(encoded)
    except InvalidHashError:
        return True


def _verify_scrypt(password: str, encoded: str) -> bool:
    """`scrypt$n$r$p$salt$hash` (salt and hash base64), as the store wrote before argon2id."""
    try:
        _, n, r, p, salt, digest = encoded.split("$")
        expected = base64.b64decode(digest, validate=True)
        n_, r_, p_ = int(n), int(r), int(p)
        # maxmem: room for the 128*n*r bytes scrypt needs plus slack (OpenSSL's default cap is 32 MiB).
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt, validate=True), n=n_, r=r_, p=p_,
                                dklen=len(expected), maxmem=256 * n_ * r_ + 2**20)
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)
