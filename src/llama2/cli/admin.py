"""`llama2 admin`: the users, API keys and usage records of `llama2 serve`, and its arena votes.

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

    set_key = _command(commands, "set-upstream-key", "store a remote model's upstream API key, encrypted (the "
                       "server uses it from its next start; the admin pages change a running one)", run_set_upstream_key)
    set_key.add_argument("model", help="the model's name in serve.yaml")
    set_key.add_argument("--key-stdin", action="store_true", help="read the key from stdin instead of a prompt")
    clear_key = _command(commands, "clear-upstream-key", "forget a model's stored upstream key (the environment's "
                         "is used from the next start)", run_clear_upstream_key)
    clear_key.add_argument("model")

    audit = _command(commands, "audit", "the audit log: admin actions and sign-ins, newest first", run_audit)
    audit.add_argument("--limit", type=int, default=50, help="how many events (default 50)")
    audit.add_argument("--json", action="store_true")

    export = _command(commands, "export-votes", "write the arena's votes as model_a,model_b,winner CSV for "
                      "`llama2 eval ladder` (replacing OUT)", run_export_votes)
    export.add_argument("out", metavar="OUT.csv", help="votes file: model_a,model_b,winner (a|b|tie), then voter, "
                        "prompt_id, battle and voted_at")
    export.add_argument("--since", default=None, metavar="DATE",
                        help="only votes cast from this UTC date or ISO 8601 time on")
    export.add_argument("--agreement", default=None, metavar="OUT2.csv",
                        help="also write item,rater,rating rows for `llama2 eval agreement`: the prompts and pairs "
                             "that two or more people voted on (1 = first model by name better, 2 = tie, 3 = second)")
    export.add_argument("--drop-bad", action="store_true",
                        help='leave "both bad" votes out (by default they count as ties)')


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
        _audit(store, "user.add", user.email, f"role {user.role}")
    print(f"added {user.role} {user.email}; create an API key with: llama2 admin create-key {user.email}")
    return 0


def run_set_disabled(args: argparse.Namespace) -> int:
    with _open(args) as store:
        store.set_disabled(args.email, args.disable)
        _audit(store, "user.disable" if args.disable else "user.enable", args.email.strip().lower())
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
        _audit(store, "key.create", key.id, f"for {key.user_email}")
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
        _audit(store, "key.revoke", args.key_id)
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


def run_export_votes(args: argparse.Namespace) -> int:
    from llama2.serve.arena_export import export_votes

    since = _parse_time(args.since, "--since") if args.since else None
    agreement = Path(args.agreement) if args.agreement else None
    with _open(args) as store:
        summary = export_votes(store, Path(args.out), since=since, agreement=agreement, drop_bad=args.drop_bad)
    dropped = f' ({summary.dropped} "both bad" left out)' if args.drop_bad else ""
    print(f"wrote {summary.votes} vote{'s' * (summary.votes != 1)}{dropped} to {args.out}; "
          f"rate the models with: llama2 eval ladder {args.out}")
    if agreement is not None:
        print(f"wrote {summary.ratings} ratings of {summary.items} prompt-and-pair items by {summary.raters} people "
              f"to {agreement}" + ("" if summary.items else " (no item has two voters yet)"))
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


def _audit(store, action: str, target: str, detail: str | None = None) -> None:
    """Record a change made here in the audit log, by `cli:<the OS user>`."""
    from llama2.serve.audit import AuditLog

    AuditLog(store).record(action, actor=f"cli:{getpass.getuser()}", target=target, detail=detail)


def _upstream_keys(args: argparse.Namespace, store):
    from llama2.serve.secrets import SecretBox
    from llama2.serve.store import default_data_dir
    from llama2.serve.upstream_keys import UpstreamKeys

    return UpstreamKeys(store, SecretBox(Path(args.data_dir) if args.data_dir else default_data_dir()))


def run_set_upstream_key(args: argparse.Namespace) -> int:
    if args.key_stdin:
        key = sys.stdin.read().strip()
    elif sys.stdin.isatty():
        key = getpass.getpass(f"Upstream API key for {args.model}: ").strip()
    else:
        raise ConfigError("stdin is not a terminal, so there is no prompt; pipe the key in with --key-stdin")
    if not key or any(c.isspace() or not c.isprintable() for c in key):
        raise ConfigError("that is not an API key (one line of printable characters, no spaces)")
    with _open(args) as store:
        keys = _upstream_keys(args, store)
        keys.save(args.model, key, actor=f"cli:{getpass.getuser()}")
        _audit(store, "upstream_key.set", args.model)
    print(f"stored the upstream key of {args.model}, encrypted with the key in {keys.key_source}; "
          "restart llama2 serve to use it (or set it on the admin page of a running server)")
    return 0


def run_clear_upstream_key(args: argparse.Namespace) -> int:
    with _open(args) as store:
        if not _upstream_keys(args, store).remove(args.model):
            raise ConfigError(f"no upstream key is stored for {args.model}")
        _audit(store, "upstream_key.clear", args.model)
    print(f"forgot the stored upstream key of {args.model}; from its next start the server uses the environment's")
    return 0


def run_audit(args: argparse.Namespace) -> int:
    from llama2.serve.audit import AuditLog

    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, not {args.limit}")
    with _open(args) as store:
        entries = AuditLog(store).page(1, per_page=args.limit).entries
    if args.json:
        print_json([{**entry.__dict__, "created_at": entry.created_at.isoformat()} for entry in entries])
        return 0
    rows = [[f"{e.created_at:%Y-%m-%d %H:%M:%S}", e.actor or "-", e.action, e.target or "", e.detail or "", e.ip or ""]
            for e in entries]
    _print_table(["time (UTC)", "who", "action", "target", "detail", "from"], rows, empty="the audit log is empty")
    return 0
