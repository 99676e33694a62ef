"""Password hashes: argon2id (checked with argon2-cffi's low-level API, independently of the hasher
object), scrypt hashes of older stores verified with hashlib and replaced at the next sign-in."""

from __future__ import annotations

import base64
import hashlib
import secrets

import pytest
from argon2 import PasswordHasher
from argon2.low_level import Type, verify_secret
from sqlalchemy import update

from llama2.errors import ConfigError
from llama2.serve.passwords import MAX_PASSWORD_LENGTH, hash_password, needs_rehash, verify_password
from llama2.serve.store import User


def scrypt_hash(password: str) -> str:
    """A hash as the store wrote them before argon2id (RFC 7914 parameters n=2**14, r=8, p=1)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32, maxmem=2**25)
    return "$".join(["scrypt", "16384", "8", "1", base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def test_new_hashes_are_argon2id_with_rfc_9106_parameters():
    encoded = hash_password("correct horse")
    assert encoded.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert verify_secret(encoded.encode(), b"correct horse", Type.ID)
    assert hash_password("correct horse") != encoded  # a fresh salt each time
    assert verify_password("correct horse", encoded) and not verify_password("correct horsE", encoded)
    assert not needs_rehash(encoded)


def test_legacy_scrypt_hashes_verify_and_ask_for_a_rehash():
    encoded = scrypt_hash("correct horse")
    assert verify_password("correct horse", encoded) and not verify_password("correct horsE", encoded)
    assert needs_rehash(encoded)
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("correct horse")
    assert verify_password("correct horse", weak) and needs_rehash(weak)  # argon2id, but weaker than today's


@pytest.mark.parametrize("malformed", ["", "plain", "bcrypt$1$2$3$x$y", "scrypt$x$8$1$AAAA$AAAA",
                                       "scrypt$16384$8$1$!!$AAAA", "$argon2id$v=19$m=65536,t=3,p=4$bad"])
def test_malformed_hashes_never_verify(malformed):
    assert not verify_password("correct horse", malformed)


def test_password_length_rules():
    with pytest.raises(ConfigError, match="at least 8 characters"):
        hash_password("short")
    with pytest.raises(ConfigError, match=f"at most {MAX_PASSWORD_LENGTH}"):
        hash_password("x" * (MAX_PASSWORD_LENGTH + 1))
    assert not verify_password("x" * (MAX_PASSWORD_LENGTH + 1), hash_password("x" * 8))


def test_a_sign_in_replaces_a_scrypt_hash_with_argon2id(store):
    store.add_user("old@example.com", password="irrelevant")
    with store.writing() as session:
        session.execute(update(User).where(User.email == "old@example.com").values(password_hash=scrypt_hash("legacy pass")))
    assert store.check_password("old@example.com", "wrong pass") is None
    assert store.get_user("old@example.com").password_hash.startswith("scrypt$")  # only a right password rehashes
    assert store.check_password("old@example.com", "legacy pass").email == "old@example.com"
    rehashed = store.get_user("old@example.com").password_hash
    assert rehashed.startswith("$argon2id$") and verify_secret(rehashed.encode(), b"legacy pass", Type.ID)
    assert store.check_password("old@example.com", "legacy pass") is not None
    assert store.get_user("old@example.com").password_hash == rehashed  # no rehash of a current hash
