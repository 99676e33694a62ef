"""`llama2 admin`: the users, API keys and usage records of `llama2 serve`.

Works on the same store as the server (the SQLite file DATA_DIR/llama2.db, or --db URL), also while
the server runs; the store is migrated to the newest schema on open. Keys are printed once, when
created: the store keeps only their hashes.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

from llama2.cli.common import print_json
from llama2.errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser("admin", help="users, API keys and usage of the server", description=__doc__)
    commands = parser.add_subparsers(dest="admin_command", metavar="COMMAND", required=True)

    add_user = _command(commands, "add-user", "add a user (password from a prompt, or --password-stdin)", run_add_user)
    add_user.add_argument("email")
    add_user.add_argument("--role", choices=["admin", "user"], default="user")
    add_user.add_argument("--password-stdin", action="store_true", help="read the password from stdin instead of a prompt")

    for name, verb in (("disable-user", "disable"), ("enable-user", "enable")):
        toggle = _command(commands, name, f"{verb} a user: a disabled user's API keys and web sessions stop "
                          "working at their next request", run_set_disabled)
        toggle.add_argument("email")
        toggle.set_defaults(disable=verb == "disable")

    create_key = _command(commands, "create-key", "create an API key for a user and print it once", run_create_key)
    create_key.add_argument("email")
    create_key.add_argument("--name", default=None, help="what the key is for, shown in listings")
    create_key.add_argument("--models", default=None, help="comma-separated model names the key may use (default: all)")
    create_key.add_argument("--rpm", type=int, default=None, help="requests per minute (default: unlimited)")
    create_key.add_argument("--tokens-per-day", type=int, default=None,
                            help="prompt + completion tokens per UTC day (default: unlimited)")
    create_key.add_argument("--json", action="store_true", help="print the key and its settings as JSON")

    revoke_key = _command(commands, "revoke-key", "revoke an API key by its id", run_revoke_key)
    revoke_key.add_argument("key_id", metavar="KEY_ID", help="the key's public id, as list-keys shows it (e.g. sk-l2-AbCd1234)")

    list_keys = _command(commands, "list-keys", "list API keys (ids and settings, never the keys)", run_list_keys)
    list_keys.add_argument("email", nargs="?", default=None, help="only this user's keys")
    list_keys.add_argument("--json", action="store_true")

    usage = _command(commands, "usage", "requests, errors, tokens and latency per user, key and model", run_usage)
    usage.add_argument("--since", default=None, metavar="DATE",
                       help="from this UTC date or ISO 8601 time (YYYY-MM-DD, 2024-05-01T12:00Z)")
    usage.add_argument("--until", default=None, metavar="DATE",
                       help="up to this time, or through the end of this date (UTC)")
    usage.add_argument("--json", action="store_true")


def _command(commands, name: str, help: str, func) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
    parser.add_argument("--data-dir", default=None,
                        help="the server's data folder (default: $LLAMA2_SERVE_DIR or ~/.local/share/llama2)")
    parser.add_argument("--db", default=None, metavar="URL",
                        help="database URL instead of DATA_DIR/llama2.db: sqlite:///PATH or postgresql://USER:PASS@HOST/DB")
    parser.set_defaults(func=func)
    return parser


def _open(args: argparse.Namespace):
    from llama2.serve.store import Store

    return Store.open(Path(args.data_dir) if args.data_dir else None, args.db)


def run_add_user(args: argparse.Namespace) -> int:
    from llama2.serve.store import normalise_email

    with _open(args) as store:
        email = normalise_email(args.email)
        if store.get_user(email) is not None:  # before asking for a password that would be thrown away
            raise ConfigError(f"user {email} already exists")
        user = store.add_user(email, role=args.role, password=_read_password(args.password_stdin))
    print(f"added {user.role} {user.email}; create an API key with: llama2 admin create-key {user.email}")
    return 0


def run_set_disabled(args: argparse.Namespace) -> int:
    with _open(args) as store:
        store.set_disabled(args.email, args.disable)
    print(f"{'disabled' if args.disable else 'enabled'} {args.email.strip().lower()}")
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.read().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise ConfigError("stdin is not a terminal, so there is no password prompt; pipe the password in "
                          "with --password-stdin")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != password:
        raise ConfigError("the two passwords differ; run the command again")
    return password


def run_create_key(args: argparse.Namespace) -> int:
    models = args.models.split(",") if args.models is not None else None
    with _open(args) as store:
        key, secret = store.create_key(args.email, name=args.name, models=models, rpm=args.rpm,
                                       tokens_per_day=args.tokens_per_day)
    if args.json:
        print_json(_key_dict(key) | {"key": secret})
        return 0
    print(f"API key {key.id} for {key.user_email}:")
    print(secret)
    print("This key will not be shown again: store it now (the server keeps only its hash).")
    return 0


def run_revoke_key(args: argparse.Namespace) -> int:
    with _open(args) as store:
        store.revoke_key(args.key_id)
    print(f"revoked {args.key_id}")
    return 0


def run_list_keys(args: argparse.Namespace) -> int:
    with _open(args) as store:
        keys = store.list_keys(args.email)
    if args.json:
        print_json([_key_dict(key) for key in keys])
        return 0
    headers = ["id", "user", "name", "models", "rpm", "tokens/day", "created (UTC)", "status"]
    rows = [[key.id, key.user_email, key.name or "", ",".join(key.models) if key.models else "all",
             _limit(key.rpm), _limit(key.tokens_per_day), f"{key.created_at:%Y-%m-%d %H:%M}",
             "revoked" if key.revoked else "active"] for key in keys]
    _print_table(headers, rows, empty="no API keys; create one with `llama2 admin create-key EMAIL`")
    return 0


def run_usage(args: argparse.Namespace) -> int:
    since = _parse_time(args.since, "--since") if args.since else None
    until = _parse_time(args.until, "--until", end_of_day=True) if args.until else None
    with _open(args) as store:
        rows = store.usage_summary(since, until)
    if args.json:
        print_json([row.__dict__ for row in rows])
        return 0
    headers = ["user", "key", "model", "requests", "errors", "tokens in", "tokens out", "mean latency (ms)"]
    table = [[row.user_email or "-", row.key_id or "-", row.model, str(row.requests), str(row.errors),
              str(row.prompt_tokens), str(row.completion_tokens), f"{row.mean_latency_ms:.1f}"] for row in rows]
    _print_table(headers, table, numeric=5, empty="no requests recorded in this period")
    return 0


def _key_dict(key) -> dict:
    return {"id": key.id, "user": key.user_email, "role": key.user_role, "name": key.name,
            "models": list(key.models) if key.models is not None else None, "rpm": key.rpm,
            "tokens_per_day": key.tokens_per_day, "created_at": key.created_at.isoformat(), "revoked": key.revoked}


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def _parse_time(text: str, flag: str, *, end_of_day: bool = False) -> datetime:
    """A UTC datetime from YYYY-MM-DD or ISO 8601 (times without a zone are UTC). A bare date given as
    an end means the end of that day, so `--until 2024-05-31` includes May 31."""
    text = text.strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = datetime.combine(day, time(0), tzinfo=timezone.utc)
        return start + timedelta(days=1) if end_of_day else start
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{flag} '{text}' is not a date; use YYYY-MM-DD or an ISO 8601 time "
                          "such as 2024-05-01T12:00Z") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _print_table(headers: list[str], rows: list[list[str]], *, numeric: int = 0, empty: str) -> None:
    """Plain aligned columns (nothing truncated, so ids can be copied); the last `numeric` columns
    are right-aligned."""
    if not rows:
        print(empty)
        return
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    first_numeric = len(headers) - numeric
    for row in [headers, *rows]:
        cells = [cell.rjust(width) if i >= first_numeric else cell.ljust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())
