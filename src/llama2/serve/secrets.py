"""Encryption at rest for secrets the server must keep (remote models' API keys set on the admin page).

AES-256-GCM (`cryptography`) with a fresh 96-bit nonce per value and the value's purpose as associated
data (a ciphertext moved to another row does not decrypt). The key is 32 random bytes, base64:

- `$LLAMA2_SECRET_KEY`, when set (put it in the service's environment or a secret manager; every
  server process sharing one database needs the same key), else
- `DATA_DIR/secret.key`, created on first use with mode 0600 and read from then on; a key file that
  others may read is refused.

A stored value is `v1.<key id>.<base64 nonce+ciphertext>`; the key id (8 hex digits of the key's
SHA-256) tells a value sealed under another key from a damaged one. Neither the key nor a plaintext
ever appears in a message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from llama2.errors import ConfigError

SECRET_KEY_ENV = "LLAMA2_SECRET_KEY"
KEY_FILE = "secret.key"
KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = "v1"
MAKE_KEY = "python -c \"import base64, secrets; print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())\""


class SecretBox:
    """Seals and opens short secrets with the server's key (see the module docstring for where it lives)."""

    def __init__(self, data_dir: Path, environ: Mapping[str, str] | None = None) -> None:
        self._file = Path(data_dir).expanduser() / KEY_FILE
        self._environ = os.environ if environ is None else environ
        self._key: bytes | None = None

    @property
    def source(self) -> str:
        """Where the key comes from, for the admin page and messages."""
        return f"${SECRET_KEY_ENV}" if self._environ.get(SECRET_KEY_ENV) else str(self._file)

    def seal(self, plaintext: str, *, purpose: str) -> str:
        key = self._load(create=True)
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), purpose.encode("utf-8"))
        return f"{VERSION}.{_key_id(key)}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, token: str, *, purpose: str) -> str:
        """The plaintext of `seal`'s output for the same purpose; ConfigError when it cannot be opened."""
        version, _, rest = token.partition(".")
        key_id, _, body = rest.partition(".")
        if version != VERSION or not body:
            raise ConfigError(f"{purpose}: the stored value is not one this server wrote (expected {VERSION}.*); set it again")
        key = self._load(create=False)
        if key_id != _key_id(key):
            raise ConfigError(f"{purpose}: it was encrypted with another secret key (id {key_id}; this server's "
                              f"key, from {self.source}, has id {_key_id(key)}); restore that key or set the value again")
        try:
            raw = base64.urlsafe_b64decode(body)
            return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], purpose.encode("utf-8")).decode("utf-8")
        except (InvalidTag, ValueError, binascii.Error):
            raise ConfigError(f"{purpose}: the stored value is damaged and cannot be decrypted; set it again") from None

    def _load(self, *, create: bool) -> bytes:
        if self._key is None:
            named = self._environ.get(SECRET_KEY_ENV)
            if named:
                self._key = _decode(named, f"${SECRET_KEY_ENV}")
            elif self._file.exists():
                self._key = _read_key_file(self._file)
            elif create:
                self._key = _create_key_file(self._file)
            else:
                raise ConfigError(f"no secret key to decrypt stored secrets: set ${SECRET_KEY_ENV} or restore "
                                  f"{self._file} (the key they were encrypted with)")
        return self._key


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip().replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{where} must hold {KEY_BYTES} random bytes in base64; make a key with: {MAKE_KEY}")
    return key


def _read_key_file(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} may be read by other users (mode {stat.S_IMODE(mode):o}); "
                          f"run: chmod 600 {path}")
    return _decode(path.read_text(encoding="ascii", errors="replace"), str(path))


def _create_key_file(path: Path) -> bytes:
    """A new random key in `path`, mode 0600, written whole before it appears (a temporary file linked
    into place); when another process made one meanwhile, that one is used."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp's mode is 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(base64.urlsafe_b64encode(key).decode() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return _read_key_file(path)
    finally:
        os.unlink(tmp)
    return key
