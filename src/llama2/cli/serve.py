"""`llama2 serve`: the web chat at / and the OpenAI-compatible gateway at /v1 (README, "Web chat", "Serving")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve models: a web chat with sign-in, and OpenAI's API behind per-user keys",
        description="With no arguments: the bundled chat model (default-chat) and base model (default) on http://127.0.0.1:8000/v1.",
    )
    parser.add_argument("--config", type=Path, default=None, help="serve.yaml: server settings and the models offered")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the SQLite store lives (default $LLAMA2_SERVE_DIR or ~/.local/share/llama2)")
    parser.add_argument("--db", default=None, help="database URL instead, e.g. postgresql://user@host/llama2")
    parser.add_argument("--model", action="append", default=[], metavar="[NAME=]SPEC",
                        help="a model to offer (repeatable; replaces the config's): local:default, "
                             "local:/path, azure:DEPLOYMENT, http://host:port/v1#model, ...")
    parser.add_argument("--log-content", action="store_true", default=None,
                        help="also record request and response bodies in the usage log")
    parser.add_argument("--ssl-certfile", type=Path, default=None, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--ssl-keyfile", type=Path, default=None, help="the certificate's private key (PEM)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from llama2.serve.access_log import redact_access_log
    from llama2.serve.app import build_gateway, create_app
    from llama2.serve.config import load_config
    from llama2.serve.store import default_data_dir

    overrides = {"host": args.host, "port": args.port, "data_dir": args.data_dir, "db": args.db,
                 "log_content": args.log_content}
    config = load_config(args.config, overrides, args.model)
    tls = _tls_options(args)
    print(f"llama2 serve: loading {', '.join(m.name for m in config.models)} ...", file=sys.stderr)
    gateway = build_gateway(config)
    app = create_app(gateway, max_body_bytes=config.max_body_bytes, web_settings=config.web)
    setup_path = app.state.web.setup.path  # set when the store has no user yet
    data_dir = config.data_dir or default_data_dir()
    where = f"--db {config.db}" if config.db else f"--data-dir {data_dir}"
    has_keys = bool(gateway.store.list_keys())

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if not self.servers or not self.servers[0].sockets:
                return
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            scheme = "https" if tls else "http"
            browse = f"{scheme}://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}"
            print(f"llama2 serve: web chat at {browse}/", flush=True)
            print(f"llama2 serve: OpenAI-compatible API at {scheme}://{shown}:{port}/v1 "
                  f"(models: {', '.join(gateway.models.models)})", flush=True)
            if setup_path is not None:
                print("llama2 serve: no accounts yet; open this one-time link to create the admin account"
                      f"{' (from this machine)' if config.web.setup_loopback_only else ''}:\n"
                      f"  {browse}{setup_path}\n"
                      f"  (or: llama2 admin add-user you@example.com --role admin {where})", flush=True)
            elif not has_keys:
                print("llama2 serve: no API keys yet; create the first one in another terminal:\n"
                      f"  llama2 admin add-user you@example.com --role admin {where}\n"
                      f"  llama2 admin create-key you@example.com {where}", flush=True)

    server = AnnouncingServer(uvicorn.Config(app, host=config.host, port=config.port, log_level="info",
                                             timeout_graceful_shutdown=5, **tls))
    redact_access_log()  # after uvicorn.Config, which configures its loggers
    server.run()
    return 0


def _tls_options(args: argparse.Namespace) -> dict[str, str]:
    from llama2.errors import ConfigError

    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        raise ConfigError("HTTPS needs both --ssl-certfile and --ssl-keyfile")
    if args.ssl_certfile is None:
        return {}
    for path in (args.ssl_certfile, args.ssl_keyfile):
        if not path.is_file():
            raise ConfigError(f"{path}: no such file; give the PEM certificate and its key")
    return {"ssl_certfile": str(args.ssl_certfile), "ssl_keyfile": str(args.ssl_keyfile)}
