"""`postroom serve | migrate | workspace create | apikey create`."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import sys

from postroom.platform.commands import CliError, database, install_stop_handlers, settle_memory, with_conn
from postroom.platform.config import ConfigError, Settings




async def _migrate(conn) -> list[str]:
    from postroom.platform.migrations import migrate

    return await migrate(conn)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "key"


async def _create_workspace(conn, ws_id: str, name: str):
    from postroom.workspaces import model, store

    try:
        ws_id, name, settings = model.validate_new({"id": ws_id, "name": name})
    except model.WorkspaceError as exc:
        raise CliError(str(exc)) from None
    row = await store.create_with_owner(conn, ws_id, name, settings, None)
    if row is None:
        raise CliError(f"workspace already exists: {ws_id}")
    return model.to_wire(row)


async def _create_api_key(conn, key: bytes, ws_id: str, name: str | None, permissions: str | None) -> tuple[str, str]:
    """(token, the key's address): the address is its user name on the SMTP bridge."""
    from postroom.auth import model as auth_model
    from postroom.workspaces import store

    if await store.get(conn, ws_id) is None:
        raise CliError(f"workspace not found: {ws_id} (create it with: postroom workspace create {ws_id} --name NAME)")
    try:
        perms = auth_model.parse_permissions(permissions)
    except ValueError as exc:
        raise CliError(f"--permissions: {exc}") from None
    email = f"{_slug(name or 'cli')}-{secrets.token_hex(3)}@{ws_id}.api.postroom"
    user_id = await store.create_api_key_user(conn, ws_id, email, perms)
    return auth_model.issue_token(key, user_id, "api_key", email=email), email


async def _bootstrap(conn, settings: Settings, public_url: str) -> str | None:
    """On the first start of an empty installation: a `demo` workspace and a key, shown once."""
    from postroom.workspaces import store

    if await store.count(conn) > 0:
        return None
    await _create_workspace(conn, "demo", "Demo")
    token, _ = await _create_api_key(conn, settings.key_bytes, "demo", "demo", None)
    body = json.dumps({"workspace_id": "demo", "contact": {"email": "user@example.com", "first_name": "John"}})
    return (
        "\nPostroom is ready. A workspace `demo` was created with this API key (shown only once):\n\n"
        f"  {token}\n\nTry it:\n\n"
        f"  curl --request POST --url {public_url}/api/contacts.upsert \\\n"
        f"    --header 'Authorization: Bearer {token}' \\\n"
        f"    --header 'Content-Type: application/json' \\\n"
        f"    --data '{body}'\n"
    )


def cmd_serve(args, settings: Settings) -> None:
    import uvicorn

    from postroom.app import create_app

    with database(settings, serving=True) as dsn:
        settings.ensure_secret_key()
        scheme = "https" if args.ssl_certfile else "http"
        host = "localhost" if args.host in ("127.0.0.1", "0.0.0.0", "::") else args.host
        public_url = f"{scheme}://{host}:{args.port}"

        async def prepare(conn):
            applied = await _migrate(conn)
            return applied, await _bootstrap(conn, settings, public_url)

        applied, welcome = asyncio.run(with_conn(dsn, prepare))
        if applied:
            print(f"applied migrations: {', '.join(applied)}", file=sys.stderr)
        if welcome:
            print(welcome, flush=True)
        app = create_app(settings, dsn, workers=not args.no_workers, public_url=public_url)
        config = uvicorn.Config(
            app, host=args.host, port=args.port, loop="uvloop", http="httptools", lifespan="on",
            access_log=False, ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
            server_header=False, log_level="info",
        )
        # uvicorn re-raises the signal that stopped it once it has shut down; with the default
        # handler that would kill us before the embedded PostgreSQL is stopped. Ours exits cleanly.
        install_stop_handlers()
        settle_memory()
        uvicorn.Server(config).run()


def cmd_migrate(args, settings: Settings) -> None:
    with database(settings) as dsn:
        applied = asyncio.run(with_conn(dsn, _migrate))
    print("applied: " + ", ".join(applied) if applied else "database is up to date")


def cmd_workspace_create(args, settings: Settings) -> None:
    with database(settings) as dsn:
        async def work(conn):
            await _migrate(conn)
            return await _create_workspace(conn, args.id, args.name)

        workspace = asyncio.run(with_conn(dsn, work))
    from postroom.platform import jsonenc

    print(jsonenc.encode(workspace).decode())


def cmd_apikey_create(args, settings: Settings) -> None:
    with database(settings) as dsn:
        settings.ensure_secret_key()

        async def work(conn):
            await _migrate(conn)
            return await _create_api_key(conn, settings.key_bytes, args.workspace, args.name, args.permissions)

        token, email = asyncio.run(with_conn(dsn, work))
    print(f"API key address (its user name on the SMTP bridge): {email}", file=sys.stderr)
    print(token)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="postroom", description="Self-hosted newsletters and transactional email.")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API server (on the embedded PostgreSQL unless POSTROOM_DATABASE_URL is set)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--ssl-certfile")
    serve.add_argument("--ssl-keyfile")
    serve.add_argument("--no-workers", action="store_true",
                       help="serve the API only; run `postroom worker` processes for background work")
    serve.set_defaults(run=cmd_serve)

    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(run=cmd_migrate)

    ws = sub.add_parser("workspace", help="manage workspaces").add_subparsers(dest="action", required=True)
    create = ws.add_parser("create", help="create a workspace and print it as JSON")
    create.add_argument("id")
    create.add_argument("--name", required=True)
    create.set_defaults(run=cmd_workspace_create)

    key = sub.add_parser("apikey", help="manage API keys").add_subparsers(dest="action", required=True)
    kc = key.add_parser("create", help="create an API key and print only its token")
    kc.add_argument("--workspace", required=True)
    kc.add_argument("--name")
    kc.add_argument("--permissions", help="e.g. contacts:r,lists:rw (default: full access)")
    kc.set_defaults(run=cmd_apikey_create)

    # the capabilities' commands (their manifests') and `postroom worker`; each sets
    # `run=fn(args, settings)` and may use `database()` and `with_conn()` from here
    from postroom import app
    from postroom.workers import cli as workers_cli

    for register in [*(r for capability in app.CAPABILITIES for r in capability.commands), workers_cli.register]:
        register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        args.run(args, settings)
    except (CliError, ConfigError) as exc:
        print(f"postroom: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except (OSError, asyncio.TimeoutError) as exc:
        print(f"postroom: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # asyncpg's errors: say what the database said, without a traceback
        if type(exc).__module__.startswith("asyncpg"):
            print(f"postroom: database error: {exc}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
