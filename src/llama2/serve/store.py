"""The server's records: users, API keys (as hashes only), one usage row per request, and the web
chat's sign-in sessions, conversations and messages, and the arena's battles (`serve.sessions`,
`serve.conversations` and `serve.arena_store` read and write those; their tables are declared here so
that one metadata holds the whole schema). The admin pages' records live here too: single sign-ons in
progress, set-password links, the audit log, roles per model and encrypted upstream keys (read and
written by `web.sso_state`, `serve.password_links`, `serve.audit`, `serve.model_access`,
`serve.upstream_keys`).

SQLAlchemy 2 over SQLite in the data dir by default (WAL, so the server's writes and `llama2 admin`'s
reads don't block each other) or PostgreSQL by URL. The schema belongs to the Alembic migrations in
`serve/migrations/`: `Store.open` brings any database up to the newest revision before use, and a test
checks that the migrations build exactly the models below. Times are stored in UTC and come back
timezone-aware on both backends.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import (JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text,
                        TypeDecorator, case, create_engine, delete, event, func, select, text)
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from llama2.errors import ConfigError
from llama2.serve.auth import ROLES, generate_key, hash_key, key_id_of, verify_key
from llama2.serve.passwords import hash_password, needs_rehash, verify_password

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from alembic.config import Config

DEFAULT_DB_FILE = "llama2.db"
DEFAULT_DATA_DIR = "~/.local/share/llama2"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant: the PostgreSQL advisory lock that lets one process at a time migrate.
MIGRATION_LOCK_KEY = 0x11A3A2
SQLITE_BUSY_TIMEOUT_MS = 10_000
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def default_data_dir() -> Path:
    """$LLAMA2_SERVE_DIR, else ~/.local/share/llama2."""
    return Path(os.environ.get("LLAMA2_SERVE_DIR") or DEFAULT_DATA_DIR).expanduser()


def database_url(data_dir: Path, db: str | None) -> str:
    """`db` when given, else the SQLite file DATA_DIR/llama2.db (creating DATA_DIR)."""
    if db:
        return db
    data_dir = Path(data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{data_dir / DEFAULT_DB_FILE}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """`value` in UTC; a naive datetime is taken to be UTC already."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone: values go in as UTC and
    are marked UTC on the way out), so stored times compare and sort correctly."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    # Named constraints, so later migrations can alter them (SQLite batch mode needs the names).
    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })
    type_annotation_map = {datetime: UTCDateTime()}


class User(Base):
    """A person or application that holds keys; `password_hash` is None for users without a password
    (API-key only, invited and not yet set, or single sign-on only). `password_hash` is argon2id, or
    scrypt from before it (replaced at the next sign-in). A user who signed in through an OpenID
    provider carries its name (`web.sso[].name`) and their `subject` there, unique together."""

    __tablename__ = "users"
    __table_args__ = (Index("ix_users_auth_provider_subject", "auth_provider", "subject", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled: Mapped[bool] = mapped_column(default=False)
    auth_provider: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(255))
    last_sign_in_at: Mapped[datetime | None]

    keys: Mapped[list[ApiKey]] = relationship(back_populates="user")


class ApiKey(Base):
    """An API key: its public id (the key's prefix) and the SHA-256 of the whole key, never the key."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64))
    models: Mapped[list[str] | None] = mapped_column(JSON)
    rpm: Mapped[int | None]
    tokens_per_day: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="keys")


class Usage(Base):
    """One served (or refused) request. The user is kept by email, as it was at the time (an audit
    trail); the bodies only when the operator switched content logging on."""

    __tablename__ = "usage"
    __table_args__ = (Index("ix_usage_key_id_created_at", "key_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    user_email: Mapped[str | None] = mapped_column(String(320))
    key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"))
    model: Mapped[str] = mapped_column(Text)
    endpoint: Mapped[str] = mapped_column(Text)
    status: Mapped[int]
    prompt_tokens: Mapped[int] = mapped_column(default=0)
    completion_tokens: Mapped[int] = mapped_column(default=0)
    latency_ms: Mapped[float] = mapped_column(default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    request_body: Mapped[str | None] = mapped_column(Text)
    response_body: Mapped[str | None] = mapped_column(Text)


class WebSession(Base):
    """A signed-in browser: the SHA-256 of its cookie's token (a stolen database holds no live
    session), its CSRF token, and when it ends. Deleted at sign-out; ignored once its user is disabled."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Conversation(Base):
    """A user's chat: its title, the model it talks to and that model's settings."""

    __tablename__ = "conversations"
    # sqlite_autoincrement: ids are never reused after a delete (SQLite would reuse the largest).
    __table_args__ = (Index("ix_conversations_user_id_updated_at", "user_id", "updated_at"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(128))
    system_prompt: Mapped[str | None] = mapped_column(Text)
    temperature: Mapped[float | None] = mapped_column(Float)
    max_tokens: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # "chat", or "arena" for a blind battle (its models and vote in arena_battles; the chat pages skip it)
    kind: Mapped[str] = mapped_column(String(16), default="chat", server_default="chat")


class Message(Base):
    """One turn of a conversation, in order of id. An assistant turn names the model that wrote it and
    its state: `streaming` (being written; its row exists from the start so turns keep their order),
    `done`, `stopped` (by the user; the text is what was written until then) or `error`."""

    __tablename__ = "messages"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="done")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ArenaBattle(Base):
    """A blind arena battle, one per arena conversation: its two models (`model_a` was shown as
    "Model A", on the left) and the user's one vote, `a`, `b`, `tie` or `bad` (both bad), once cast."""

    __tablename__ = "arena_battles"

    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"),
                                                 primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    model_a: Mapped[str] = mapped_column(String(128))
    model_b: Mapped[str] = mapped_column(String(128))
    vote: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    voted_at: Mapped[datetime | None] = mapped_column(index=True)


class SSOLogin(Base):
    """A single sign-on in progress (`web.sso`): what the callback must check (state, nonce) and
    prove (the PKCE verifier), found by the SHA-256 of the browser's one-time cookie; deleted when
    the provider calls back, ignored once expired."""

    __tablename__ = "sso_logins"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(128))
    nonce: Mapped[str] = mapped_column(String(128))
    code_verifier: Mapped[str] = mapped_column(String(128))
    next_path: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class PasswordLink(Base):
    """A one-time set-password link (an invitation, or a reset an admin made): the SHA-256 of its
    token, whose user it is for, and when it stops working. Deleted when used."""

    __tablename__ = "password_links"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_by: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AuditEvent(Base):
    """Who changed what, when: every admin action and sign-in event (`serve.audit`). People are kept
    by email as they were at the time; `detail` never holds a secret."""

    __tablename__ = "audit_log"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str | None] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(320))
    detail: Mapped[str | None] = mapped_column(Text)
    ip: Mapped[str | None] = mapped_column(String(64))


class ModelRoles(Base):
    """The roles that may use a model, as an admin set them; wins over serve.yaml's `roles:`."""

    __tablename__ = "model_roles"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    roles: Mapped[list[str]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(320))


class UpstreamKey(Base):
    """A remote model's API key set by an admin, encrypted (`serve.secrets`: AES-256-GCM, bound to the
    model's name); used in place of the key in the environment. Never stored in the clear."""

    __tablename__ = "upstream_keys"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    ciphertext: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(320))


@dataclass(frozen=True)
class KeyInfo:
    """What the server needs to know about a key; never holds the secret. `id` is None for a person
    signed in to the web chat, who is served and accounted as a key of their own with no limits."""

    id: str | None
    user_email: str
    user_role: str
    name: str | None
    models: tuple[str, ...] | None
    rpm: int | None
    tokens_per_day: int | None
    created_at: datetime
    revoked: bool
    user_disabled: bool = False


@dataclass
class UsageRecord:
    """One request as the server records it; `request_body`/`response_body` only with content logging on."""

    user_email: str | None
    key_id: str | None
    model: str
    endpoint: str
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    error: str | None = None
    request_body: str | None = None
    response_body: str | None = None


@dataclass(frozen=True)
class UsageRow:
    """Usage summed per (user, key, model); errors are responses with status >= 400."""

    user_email: str | None
    key_id: str | None
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    mean_latency_ms: float


class Store:
    """Users, keys and usage in one database. Thread-safe: each call uses its own session."""

    def __init__(self, url: str) -> None:
        self.url = _normalise_url(url)
        self.engine = create_engine(self.url, pool_pre_ping=self.url.get_backend_name() == "postgresql")
        if self.url.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def open(cls, data_dir: Path | None = None, db: str | None = None) -> Store:
        """The store of a data dir (or of `db`, a database URL), migrated to the newest schema."""
        store = cls(database_url(data_dir if data_dir is not None else default_data_dir(), db))
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
        return store

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def migrate(self) -> None:
        """`alembic upgrade head` on this store's engine; a no-op when already there. Concurrent callers
        (a server and `llama2 admin` starting together on a new database) take turns."""
        from alembic import command

        config = self.alembic_config()
        try:
            with self.engine.connect() as connection:
                _lock_for_migration(connection)
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
        except OperationalError as error:
            raise ConfigError(f"cannot open the database {self.url.render_as_string(hide_password=True)}: "
                              f"{str(error.orig).strip().splitlines()[0]}") from error

    def alembic_config(self) -> Config:
        """Alembic's configuration for this database and the packaged migrations (no alembic.ini)."""
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("sqlalchemy.url", self.url.render_as_string(hide_password=False).replace("%", "%%"))
        return config

    def close(self) -> None:
        self.engine.dispose()

    def reading(self) -> AbstractContextManager[Session]:
        """A session for reads (the sibling record modules, `serve.sessions` and `serve.conversations`)."""
        return self._sessions()

    def writing(self) -> AbstractContextManager[Session]:
        """A session in a transaction, committed when the block ends without an error."""
        return self._sessions.begin()

    # Users ------------------------------------------------------------------------------------------

    def add_user(self, email: str, *, role: str = "user", password: str | None = None) -> User:
        email = normalise_email(email)
        if role not in ROLES:
            raise ConfigError(f"role '{role}' is not one of: {', '.join(ROLES)}")
        password_hash = hash_password(password) if password is not None else None
        try:
            with self._sessions.begin() as session:
                if session.scalar(select(User.id).where(User.email == email)) is not None:
                    raise ConfigError(f"user {email} already exists")
                user = User(email=email, role=role, password_hash=password_hash)
                session.add(user)
        except IntegrityError as error:  # added by someone else between the check and the insert
            raise ConfigError(f"user {email} already exists") from error
        return user

    def add_first_admin(self, email: str, password: str) -> User:
        """The first account, an admin, made through the setup page; ConfigError once any user exists.
        The count and the insert hold a lock, so a concurrent `llama2 admin add-user` (or a second
        setup) cannot slip between them."""
        email = normalise_email(email)
        password_hash = hash_password(password)
        try:
            with self._sessions.begin() as session:
                _lock_users(session)
                if session.scalar(select(func.count()).select_from(User)):
                    raise ConfigError("this server has an account already; sign in, or ask an admin for one")
                user = User(email=email, role="admin", password_hash=password_hash)
                session.add(user)
        except IntegrityError as error:
            raise ConfigError("this server has an account already; sign in, or ask an admin for one") from error
        return user

    def count_users(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.count()).select_from(User)))

    def get_user(self, email: str) -> User | None:
        with self._sessions() as session:
            return session.scalar(select(User).where(User.email == email.strip().lower()))

    def set_password(self, email: str, password: str) -> None:
        """A new password; every web session of the user ends (whoever knew the old one is signed out)."""
        password_hash = hash_password(password)
        with self._sessions.begin() as session:
            user = self._user(session, email)
            user.password_hash = password_hash
            session.execute(delete(WebSession).where(WebSession.user_id == user.id))

    def list_users(self) -> list[User]:
        """Every user, oldest first."""
        with self._sessions() as session:
            return list(session.scalars(select(User).order_by(User.created_at, User.id)))

    def set_role(self, email: str, role: str) -> None:
        """A new role, in force from the user's next request (sessions and keys read it each time)."""
        if role not in ROLES:
            raise ConfigError(f"role '{role}' is not one of: {', '.join(ROLES)}")
        with self._sessions.begin() as session:
            self._user(session, email).role = role

    def set_disabled(self, email: str, disabled: bool) -> None:
        """Disable (or enable again) a user: a disabled user's keys and web sessions stop working at
        their next request, and the sessions are deleted."""
        with self._sessions.begin() as session:
            user = self._user(session, email)
            user.disabled = disabled
            if disabled:
                session.execute(delete(WebSession).where(WebSession.user_id == user.id))

    def check_password(self, email: str, password: str) -> User | None:
        """The user when the password is theirs and the account enabled, else None. Unknown users cost
        the same hashing as known ones, so timing does not tell which emails exist. A right password
        under an old hash (scrypt, weaker argon2) is rehashed with argon2id on the spot."""
        user = self.get_user(email)
        if user is None or user.password_hash is None:
            verify_password(password, _dummy_password_hash())
            return None
        if not verify_password(password, user.password_hash) or user.disabled:
            return None
        if needs_rehash(user.password_hash):
            with self._sessions.begin() as session:
                stored = session.get(User, user.id)
                if stored is not None and stored.password_hash == user.password_hash:
                    stored.password_hash = user.password_hash = hash_password(password)
        return user

    # Keys -------------------------------------------------------------------------------------------

    def create_key(self, email: str, *, name: str | None = None, models: list[str] | None = None,
                   rpm: int | None = None, tokens_per_day: int | None = None) -> tuple[KeyInfo, str]:
        """A new key for a user: (its info, the secret). The secret exists only in the return value."""
        if models is not None:
            models = [m.strip() for m in models if m.strip()]
            if not models:
                raise ConfigError("models: give at least one model name, or none to allow every model")
        for field, value in (("rpm", rpm), ("tokens_per_day", tokens_per_day)):
            if value is not None and value < 1:
                raise ConfigError(f"{field} must be a positive integer, got {value}")
        key_id, secret = generate_key()
        with self._sessions.begin() as session:
            user = self._user(session, email)
            key = ApiKey(id=key_id, user=user, name=name, secret_hash=hash_key(secret), models=models,
                         rpm=rpm, tokens_per_day=tokens_per_day)
            session.add(key)
        return _key_info(key, user), secret

    def revoke_key(self, key_id: str) -> None:
        """Revoke a key by id; revoking a revoked key keeps its first revocation time."""
        with self._sessions.begin() as session:
            key = session.get(ApiKey, key_id)
            if key is None:
                raise ConfigError(f"no API key with id {key_id}; `llama2 admin list-keys` shows the ids")
            if key.revoked_at is None:
                key.revoked_at = utcnow()

    def list_keys(self, email: str | None = None) -> list[KeyInfo]:
        """Keys (revoked ones included) oldest first, of one user or of everyone."""
        with self._sessions() as session:
            query = select(ApiKey, User).join(ApiKey.user).order_by(ApiKey.created_at, ApiKey.id)
            if email is not None:
                query = query.where(User.id == self._user(session, email).id)
            return [_key_info(key, user) for key, user in session.execute(query)]

    def find_key(self, secret: str) -> KeyInfo | None:
        """The key a presented secret belongs to (revoked ones too), found by its id prefix and
        checked against the stored hash in constant time; None when it is not a key of ours."""
        key_id = key_id_of(secret)
        if key_id is None:
            return None
        with self._sessions() as session:
            row = session.execute(select(ApiKey, User).join(ApiKey.user).where(ApiKey.id == key_id)).first()
        if row is None or not verify_key(secret, row.ApiKey.secret_hash):
            return None
        return _key_info(row.ApiKey, row.User)

    # Usage ------------------------------------------------------------------------------------------

    def record_usage(self, record: UsageRecord) -> None:
        """Write one request's record in its own committed transaction: once this returns, the record
        survives the process being killed."""
        with self._sessions.begin() as session:
            session.add(Usage(**asdict(record)))

    def tokens_used(self, key_id: str, since: datetime) -> int:
        """Prompt plus completion tokens a key has used since `since` (inclusive)."""
        total = Usage.prompt_tokens + Usage.completion_tokens
        query = select(func.coalesce(func.sum(total), 0)).where(Usage.key_id == key_id, Usage.created_at >= since)
        with self._sessions() as session:
            return int(session.scalar(query))

    def usage_summary(self, since: datetime | None = None, until: datetime | None = None) -> list[UsageRow]:
        """Requests, errors, tokens and mean latency per (user, key, model) in [since, until)."""
        query = select(
            Usage.user_email, Usage.key_id, Usage.model, func.count(),
            func.sum(case((Usage.status >= 400, 1), else_=0)),
            func.sum(Usage.prompt_tokens), func.sum(Usage.completion_tokens), func.avg(Usage.latency_ms),
        ).group_by(Usage.user_email, Usage.key_id, Usage.model)
        if since is not None:
            query = query.where(Usage.created_at >= since)
        if until is not None:
            query = query.where(Usage.created_at < until)
        with self._sessions() as session:
            rows = [UsageRow(email, key, model, int(n), int(errors), int(prompt), int(completion), float(latency))
                    for email, key, model, n, errors, prompt, completion, latency in session.execute(query)]
        # Sorted here: the backends disagree on where NULLs (requests without a key) go.
        return sorted(rows, key=lambda row: (row.user_email or "", row.key_id or "", row.model))

    def _user(self, session, email: str) -> User:
        user = session.scalar(select(User).where(User.email == email.strip().lower()))
        if user is None:
            raise ConfigError(f"no user {email}; add one with `llama2 admin add-user {email}`")
        return user


def _key_info(key: ApiKey, user: User) -> KeyInfo:
    return KeyInfo(id=key.id, user_email=user.email, user_role=user.role, name=key.name,
                   models=tuple(key.models) if key.models is not None else None, rpm=key.rpm,
                   tokens_per_day=key.tokens_per_day, created_at=key.created_at, revoked=key.revoked_at is not None,
                   user_disabled=user.disabled)


def normalise_email(email: str) -> str:
    """An email address in lower case; ConfigError when it is not name@domain."""
    email = email.strip().lower()
    if len(email) > 320 or not _EMAIL.fullmatch(email):
        raise ConfigError(f"'{email}' is not an email address (expected name@domain)")
    return email


def _normalise_url(url: str) -> URL:
    """A SQLAlchemy URL for SQLite or PostgreSQL; plain postgresql:// (and postgres://) use psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise ConfigError(f"--db '{url}' is not a database URL; use sqlite:///PATH or "
                          "postgresql://USER:PASSWORD@HOST/DB") from error
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"--db: unsupported database '{parsed.get_backend_name()}'; use sqlite:///PATH or "
                          "postgresql://USER:PASSWORD@HOST/DB")
    return parsed


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL lets readers run beside the one writer; busy_timeout makes writers wait for each other
    instead of failing; synchronous=FULL makes each commit durable before it returns."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    _switch_to_wal(cursor)
    for pragma in ("foreign_keys=ON", "synchronous=FULL"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _switch_to_wal(cursor) -> None:
    """Switching a new database to WAL takes a lock that SQLite does not wait for (busy_timeout does
    not apply), so connections opening a new database together retry it for up to busy_timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _lock_users(session: Session) -> None:
    """Serialise account creation where it must see every other account (the first admin): the
    table's lock on PostgreSQL, the database's write lock on SQLite (taken up front, as migrations do)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE"))
    else:
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")


def _lock_for_migration(connection: Connection) -> None:
    """Hold the database's migration lock until the connection's transaction ends."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # SQLite: the write lock, taken up front


@functools.cache
def _dummy_password_hash() -> str:
    return hash_password("not-a-real-password")
