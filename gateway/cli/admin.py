"""``gateway admin ...``: users, API keys, session keys and the audit log of the admin API (I/O shell).

Every command works on the database named by ``[server] database_url`` (as ``gateway serverconf`` does),
brings the admin schema up to date first, and writes its change to the audit log with actor ``cli:<OS user>``
and address ``local``. Clients, services, access rights and local groups are ``gateway serverconf ...``
(docs/admin-api.md has the API-to-CLI table).

    gateway admin user add alice --role system-administrator [--password-file F | --password-env VAR]
    gateway admin user passwd alice ; gateway admin user list ; gateway admin user remove alice
    gateway admin apikey create --name monitoring --role observer      (prints the key once)
    gateway admin apikey revoke 0123456789abcdef ; gateway admin apikey list
    gateway admin audit list [--actor A] [--action OP] [--result refused] [--limit N] [--offset N]
    gateway admin session-key rotate ; gateway admin openapi
    gateway admin api --url http://127.0.0.1:4000 listClients --query limit=10     (any operation, over HTTP)

``gateway admin api OPERATION`` calls any route of the admin API by its operation id (``gateway admin openapi``
lists them), so every API operation is also a CLI command. Credentials come from the environment, never from
the command line: ``GATEWAY_ADMIN_TOKEN`` (a session token), ``GATEWAY_ADMIN_API_KEY`` (an API key), or
``--user NAME`` with the password from ``--password-env VAR`` or a prompt (the CLI logs in first).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.admin.openapi import build_document
from gateway.admin.roles import ROLES, parse_roles
from gateway.admin.schema import MAX_LIMIT, Page
from gateway.admin.store import AdminStore, AuditEntry
from gateway.cli.common import settings_from_args
from gateway.errors import GatewayError, RequestError, Unreachable
from gateway.settings import Settings
from gateway.storage.db import make_engine

MAX_PASSWORD_FILE_BYTES = 4096  # bytes; a password file holds one line

Action = Callable[[AdminStore, Settings], Awaitable[None]]


def _now() -> datetime:
    return datetime.now(UTC)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return str(os.getuid())


def _run(args: argparse.Namespace, action: Action, *, audit_as: str | None = None, target: str = "") -> int:
    """Run ``action`` against the admin tables; with ``audit_as``, record the result in the audit log."""
    settings = settings_from_args(args)

    async def main() -> None:
        engine = make_engine(settings.server.database_url)
        try:
            store = AdminStore(engine)
            await store.migrate()
            try:
                await action(store, settings)
            except GatewayError as e:
                if audit_as:
                    await _audit(store, audit_as, target, status=e.http_status, error=e.message)
                raise
            if audit_as:
                await _audit(store, audit_as, target, status=200)
        finally:
            await engine.dispose()

    asyncio.run(main())
    return 0


async def _audit(store: AdminStore, action: str, target: str, *, status: int, error: str | None = None) -> None:
    details: dict[str, Any] = {"target": target}
    if error is not None:
        details["error"] = error
    await store.write_audit(AuditEntry(
        at=_now(), actor=f"cli:{_os_user()}", auth="cli", remote="local", action=action, method="CLI",
        path=f"gateway admin {action}", result="success" if status < 400 else "refused" if status < 500 else "failed",
        status=status, details=details,
    ))


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """The new password and whether it was generated (then it is printed once).

    Raises:
        RequestError: the file or variable cannot be read.
    """
    if args.password_file:
        path = Path(args.password_file)
        try:
            if path.stat().st_size > MAX_PASSWORD_FILE_BYTES:
                raise RequestError(f"password file {path} is larger than {MAX_PASSWORD_FILE_BYTES} bytes")
            return path.read_text(encoding="utf-8").rstrip("\r\n"), False
        except (OSError, UnicodeDecodeError) as e:
            raise RequestError(f"password file {path} cannot be read: {e}") from e
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise RequestError(f"environment variable {args.password_env} is not set")
        return value, False
    if sys.stdin.isatty() and not args.generate_password:
        first = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != first:
            raise RequestError("the two passwords differ")
        return first, False
    return secrets.token_urlsafe(18), True


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# -------------------------------------------------------------------------------------------------- users


def _user_add(args: argparse.Namespace) -> int:
    roles = parse_roles(args.role or ())
    password, generated = _password(args)

    async def action(store: AdminStore, _s: Settings) -> None:
        await store.add_user(args.name, password, roles, now=_now())
        print(f"user {args.name} added with roles {', '.join(r for r in ROLES if r in roles)}")
        if generated:
            print(f"password (shown once): {password}")

    return _run(args, action, audit_as="addUser", target=args.name)


def _user_passwd(args: argparse.Namespace) -> int:
    password, generated = _password(args)

    async def action(store: AdminStore, _s: Settings) -> None:
        await store.set_password(args.name, password, now=_now())
        print(f"password of {args.name} changed; its sessions have ended")
        if generated:
            print(f"password (shown once): {password}")

    return _run(args, action, audit_as="setUserPassword", target=args.name)


def _user_list(args: argparse.Namespace) -> int:
    async def action(store: AdminStore, _s: Settings) -> None:
        for u in await store.list_users():
            lock = f"  locked until {u.locked_until:%Y-%m-%dT%H:%M:%SZ}" if u.locked_until else ""
            print(f"{u.username}\t{','.join(r for r in ROLES if r in u.roles)}{lock}")

    return _run(args, action)


def _user_remove(args: argparse.Namespace) -> int:
    async def action(store: AdminStore, _s: Settings) -> None:
        await store.remove_user(args.name)
        print(f"user {args.name} removed")

    return _run(args, action, audit_as="removeUser", target=args.name)


def _user_unlock(args: argparse.Namespace) -> int:
    async def action(store: AdminStore, _s: Settings) -> None:
        await store.unlock(args.name)
        print(f"user {args.name} unlocked")

    return _run(args, action, audit_as="unlockUser", target=args.name)


# ----------------------------------------------------------------------------------------------- API keys


def _apikey_create(args: argparse.Namespace) -> int:
    roles = parse_roles(args.role or ())

    async def action(store: AdminStore, _s: Settings) -> None:
        info, key = await store.create_api_key(args.name, roles, created_by=f"cli:{_os_user()}", now=_now())
        print(f"API key {info.id} ({args.name}); the key is shown only now:")
        print(key)

    return _run(args, action, audit_as="createApiKey", target=args.name)


def _apikey_revoke(args: argparse.Namespace) -> int:
    async def action(store: AdminStore, _s: Settings) -> None:
        await store.revoke_api_key(args.id, by=f"cli:{_os_user()}", now=_now())
        print(f"API key {args.id} revoked")

    return _run(args, action, audit_as="revokeApiKey", target=args.id)


def _apikey_list(args: argparse.Namespace) -> int:
    async def action(store: AdminStore, _s: Settings) -> None:
        for k in await store.list_api_keys():
            state = f"revoked {k.revoked_at:%Y-%m-%dT%H:%M:%SZ}" if k.revoked_at else "active"
            print(f"{k.id}\t{k.name}\t{','.join(r for r in ROLES if r in k.roles)}\t{state}")

    return _run(args, action)


# -------------------------------------------------------------------------------------- audit, keys, doc


def _audit_list(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= MAX_LIMIT or args.offset < 0:
        raise RequestError(f"--limit must be in [1, {MAX_LIMIT}] and --offset non-negative")

    async def action(store: AdminStore, _s: Settings) -> None:
        entries, total = await store.list_audit(
            Page(limit=args.limit, offset=args.offset), actor=args.actor, action=args.action, result=args.result,
        )
        if args.json:
            _print({"items": [e.to_dict() for e in entries], "total": total, "limit": args.limit,
                    "offset": args.offset})
            return
        for e in entries:
            print(f"{e.at:%Y-%m-%dT%H:%M:%S}Z {e.actor} {e.remote} {e.action} {e.result} {e.status} "
                  f"{e.details.get('error', '')}".rstrip())
        print(f"({len(entries)} of {total})")

    return _run(args, action)


def _session_key_rotate(args: argparse.Namespace) -> int:
    async def action(store: AdminStore, s: Settings) -> None:
        key = await store.rotate_session_key(now=_now(), ttl_seconds=s.admin.session_ttl_seconds)
        print(f"session tokens are now signed with key {key.kid}")

    return _run(args, action, audit_as="rotateSessionKey")


def _session_key_list(args: argparse.Namespace) -> int:
    async def action(store: AdminStore, _s: Settings) -> None:
        for k in await store.session_keys():
            state = f"retired {k.retired_at:%Y-%m-%dT%H:%M:%SZ}" if k.retired_at else "active"
            print(f"{k.kid}\tcreated {k.created_at:%Y-%m-%dT%H:%M:%SZ}\t{state}")

    return _run(args, action)


def _openapi(args: argparse.Namespace) -> int:
    _print(build_document())
    return 0


MAX_API_BODY_BYTES = 1 * 2**20  # bytes of a --body file


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise RequestError(f"{what} {item[:60]!r} must be NAME=VALUE")
        out[name] = value
    return out


def _api_body(text: str | None) -> Any:
    if text is None:
        return None
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            if path.stat().st_size > MAX_API_BODY_BYTES:
                raise RequestError(f"body file {path} is larger than {MAX_API_BODY_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RequestError(f"body file {path} cannot be read: {e}") from e
    try:
        return json.loads(text)
    except ValueError as e:
        raise RequestError(f"--body is not JSON: {e}") from e


def _login_password(env: str | None) -> str:
    """Raises: RequestError: the variable is unset, or there is no terminal to prompt on."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise RequestError(f"environment variable {env} is not set")
        return value
    if sys.stdin.isatty():
        return getpass.getpass("password: ")
    raise RequestError("--user needs --password-env VAR when there is no terminal to prompt on")


def _api(args: argparse.Namespace) -> int:
    """Call one admin API operation; print the JSON answer; exit 1 on an error answer."""
    import aiohttp

    from gateway.admin.routes import ROUTES_BY_ID

    route = ROUTES_BY_ID.get(args.operation)
    if route is None:
        raise RequestError(f"operation {args.operation[:60]!r} is unknown", hint="gateway admin openapi lists them")
    params = _pairs(args.param, "--param")
    missing = [n for n in route.path_params if n not in params]
    if missing:
        raise RequestError(f"{args.operation} needs --param {missing[0]}=VALUE")
    path = route.path.format(**{n: params[n] for n in route.path_params})
    body = _api_body(args.body)
    base = args.url.rstrip("/")

    async def main() -> int:
        headers: dict[str, str] = {}
        async with aiohttp.ClientSession() as http:
            if args.user:
                password = _login_password(args.password_env)
                async with http.post(f"{base}/api/v1/login",
                                     json={"username": args.user, "password": password}) as resp:
                    answer = await resp.json(content_type=None)
                    if resp.status != 200:
                        _print(answer)
                        return 1
                headers["Authorization"] = f"Bearer {answer['token']}"
            elif os.environ.get("GATEWAY_ADMIN_TOKEN"):
                headers["Authorization"] = f"Bearer {os.environ['GATEWAY_ADMIN_TOKEN']}"
            elif os.environ.get("GATEWAY_ADMIN_API_KEY"):
                headers["Authorization"] = f"X-Road-ApiKey token={os.environ['GATEWAY_ADMIN_API_KEY']}"
            async with http.request(route.method, base + path, params=_pairs(args.query, "--query"), json=body,
                                    headers=headers) as resp:
                data = await resp.read()
                if data:
                    try:
                        _print(json.loads(data))
                    except ValueError:
                        sys.stdout.write(data.decode("utf-8", "replace"))
                return 0 if resp.status < 400 else 1

    try:
        return asyncio.run(main())
    except aiohttp.ClientError as e:
        raise Unreachable(f"admin API at {base} cannot be reached: {e}") from e


def _password_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password-file", help="read the password from this file (first line)")
    g.add_argument("--password-env", metavar="VAR", help="read the password from this environment variable")
    g.add_argument("--generate-password", action="store_true",
                   help="generate a random password and print it once (the default without a terminal)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("admin", help="admin API users, API keys, session keys and audit log")
    sub = p.add_subparsers(dest="admin_command", metavar="WHAT", required=True)
    role_help = f"a role (repeatable): {', '.join(ROLES)}"

    user = sub.add_parser("user", help="local users of the admin API")
    usub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    u = usub.add_parser("add", help="add a user")
    u.add_argument("name")
    u.add_argument("--role", action="append", choices=ROLES, required=True, help=role_help)
    _password_options(u)
    u.set_defaults(handler=_user_add)
    u = usub.add_parser("passwd", help="set a user's password (ends the user's sessions)")
    u.add_argument("name")
    _password_options(u)
    u.set_defaults(handler=_user_passwd)
    usub.add_parser("list", help="list users").set_defaults(handler=_user_list)
    u = usub.add_parser("remove", help="remove a user (its sessions end at once)")
    u.add_argument("name")
    u.set_defaults(handler=_user_remove)
    u = usub.add_parser("unlock", help="clear a lock-out after wrong passwords")
    u.add_argument("name")
    u.set_defaults(handler=_user_unlock)

    apikey = sub.add_parser("apikey", help="API keys for automation")
    asub = apikey.add_subparsers(dest="apikey_command", metavar="ACTION", required=True)
    a = asub.add_parser("create", help="create an API key (printed once)")
    a.add_argument("--name", required=True, help="what the key is for")
    a.add_argument("--role", action="append", choices=ROLES, required=True, help=role_help)
    a.set_defaults(handler=_apikey_create)
    a = asub.add_parser("revoke", help="revoke an API key at once")
    a.add_argument("id", help="the key's public id (apikey list)")
    a.set_defaults(handler=_apikey_revoke)
    asub.add_parser("list", help="list API keys (never the keys themselves)").set_defaults(handler=_apikey_list)

    audit = sub.add_parser("audit", help="the audit log")
    dsub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    d = dsub.add_parser("list", help="audit entries, newest first")
    d.add_argument("--actor")
    d.add_argument("--action", help="operation id, e.g. addClient")
    d.add_argument("--result", choices=("success", "refused", "failed"))
    d.add_argument("--limit", type=int, default=100)
    d.add_argument("--offset", type=int, default=0)
    d.add_argument("--json", action="store_true", help="the API's JSON page instead of lines")
    d.set_defaults(handler=_audit_list)

    keys = sub.add_parser("session-key", help="keys that sign session tokens")
    ksub = keys.add_subparsers(dest="session_key_command", metavar="ACTION", required=True)
    ksub.add_parser("rotate", help="sign new session tokens with a new key").set_defaults(handler=_session_key_rotate)
    ksub.add_parser("list", help="list session signing keys").set_defaults(handler=_session_key_list)

    sub.add_parser("openapi", help="print the admin API's OpenAPI 3.1 document").set_defaults(handler=_openapi)

    api = sub.add_parser("api", help="call any admin API operation by its operation id (over HTTP)")
    api.add_argument("operation", help="operation id, e.g. listClients (see 'gateway admin openapi')")
    api.add_argument("--url", required=True, help="the server's admin URL, e.g. http://127.0.0.1:4000")
    api.add_argument("--param", "-p", action="append", metavar="NAME=VALUE", help="a path parameter")
    api.add_argument("--query", "-q", action="append", metavar="NAME=VALUE", help="a query parameter")
    api.add_argument("--body", help="JSON request body, or @FILE")
    api.add_argument("--user", help="log in as this user first (password from --password-env or a prompt)")
    api.add_argument("--password-env", metavar="VAR", help="the password's environment variable (with --user)")
    api.set_defaults(handler=_api)
