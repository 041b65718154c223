"""The handlers of ``gateway admin ...``: users, API keys, session keys, the audit log (I/O shell).

Every command except ``openapi`` and ``api`` works on the database named by ``[server] database_url`` (as
``gateway serverconf`` does), brings the admin schema up to date first, and writes its change to the audit
log with actor ``cli:<OS user>`` and address ``cli@<host name>`` (:func:`cli_audit`, which the ``serverconf``,
``token`` and ``central`` commands use too): an ``async`` body run by :func:`admin_command` (or,
for a command that reads a password or checks its options before the database is opened, by
:func:`run_admin`). ``api`` calls any admin API operation over HTTP. The parser is :mod:`gateway.cli.admin`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import getpass
import json
import os
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.admin.openapi import build_document
from gateway.admin.roles import CENTRAL_ROLES, ROLES, Role, parse_roles
from gateway.admin.schema import MAX_LIMIT, Page
from gateway.admin.store import AdminStore, AuditEntry
from gateway.cli.common import Handler, database_setting, settings_from_args
from gateway.errors import ConfigError, GatewayError, RequestError, Unreachable
from gateway.identifiers import SecurityServerId
from gateway.settings import Settings
from gateway.storage.db import open_database

MAX_PASSWORD_FILE_BYTES = 4096  # bytes; a password file holds one line

# A command's body, on the admin tables of [server] database_url; what it raises is audited as refused.
Action = Callable[[AdminStore, Settings], Awaitable[None]]
Body = Callable[[argparse.Namespace, AdminStore, Settings], Awaitable[None]]


def _roles(args: argparse.Namespace) -> frozenset[Role]:
    """The ``--role`` options; with ``--central``, only the central server's roles.

    Raises:
        RequestError: an unknown role, none, or one the central server does not have.
    """
    roles = parse_roles(args.role or ())
    if getattr(args, "central", False) and not roles <= set(CENTRAL_ROLES):
        wrong = sorted(roles - set(CENTRAL_ROLES))
        raise RequestError(f"the central server has no role {wrong[0]}", hint=f"roles: {', '.join(CENTRAL_ROLES)}")
    return roles


def _now() -> datetime:
    return datetime.now(UTC)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return str(os.getuid())


def run_admin(args: argparse.Namespace, action: Action, *, audit_as: str | None = None, target: str = "") -> int:
    """Run ``action`` against the admin tables; with ``audit_as``, record the result in the audit log.

    Raises:
        ConfigError: unusable settings or database URL.
        GatewayError: whatever ``action`` raises (audited first).
    """
    settings = settings_from_args(args)

    async def main() -> None:
        section = "central" if getattr(args, "central", False) else "server"
        url = settings.central.database_url if section == "central" else settings.server.database_url
        engine = await open_database(url, where=database_setting(args, section))
        try:
            store = AdminStore(engine)
            await store.migrate()
            try:
                await action(store, settings)
            except GatewayError as e:
                if audit_as:
                    await cli_audit(store, audit_as, target, status=e.http_status, error=e.message)
                raise
            if audit_as:
                await cli_audit(store, audit_as, target, status=200)
        finally:
            await engine.dispose()

    asyncio.run(main())
    return 0


def admin_command(*, audit_as: str | None = None, target: str | None = None) -> Callable[[Body], Handler]:
    """Make a handler of ``body`` run by :func:`run_admin`; ``target`` names the argument that is the audit
    entry's target (``"name"`` for ``args.name``)."""

    def decorate(body: Body) -> Handler:
        @functools.wraps(body)
        def handler(args: argparse.Namespace) -> int:
            async def action(store: AdminStore, settings: Settings) -> None:
                await body(args, store, settings)

            return run_admin(args, action, audit_as=audit_as, target=getattr(args, target) if target else "")

        return handler

    return decorate


def cli_origin() -> str:
    """Where a CLI change comes from, as the audit log records it: ``cli@<host name>``."""
    return f"cli@{socket.gethostname() or 'localhost'}"[:64]


async def cli_audit(
    store: AdminStore, action: str, target: str, *, status: int, error: str | None = None, command: str = "admin",
    details: dict[str, Any] | None = None,
) -> None:
    """Record a CLI command in the audit log: actor ``cli:<OS user>``, address ``cli@<host name>``, path
    ``gateway <command> <action>``; ``details`` beyond the target (no secrets)."""
    entry_details: dict[str, Any] = {"target": target, **(details or {})}
    if error is not None:
        entry_details["error"] = error
    await store.write_audit(AuditEntry(
        at=_now(), actor=f"cli:{_os_user()}", auth="cli", remote=cli_origin(), action=action, method="CLI",
        path=f"gateway {command} {action}", result="success" if status < 400 else "refused" if status < 500 else
        "failed", status=status, details=entry_details,
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


def _state(ended: str, at: datetime | None) -> str:
    """``active``, or ``ended`` with the time (``revoked 2026-01-02T03:04:05Z``)."""
    return f"{ended} {at:%Y-%m-%dT%H:%M:%SZ}" if at else "active"


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# -------------------------------------------------------------------------------------------------- users


def cmd_user_add(args: argparse.Namespace) -> int:
    roles = _roles(args)
    password, generated = _password(args)

    async def action(store: AdminStore, _s: Settings) -> None:
        await store.add_user(args.name, password, roles, now=_now())
        print(f"user {args.name} added with roles {', '.join(r for r in ROLES if r in roles)}")
        if generated:
            print(f"password (shown once): {password}")

    return run_admin(args, action, audit_as="addUser", target=args.name)


def cmd_user_passwd(args: argparse.Namespace) -> int:
    password, generated = _password(args)

    async def action(store: AdminStore, _s: Settings) -> None:
        await store.set_password(args.name, password, now=_now())
        print(f"password of {args.name} changed; its sessions have ended")
        if generated:
            print(f"password (shown once): {password}")

    return run_admin(args, action, audit_as="setUserPassword", target=args.name)


@admin_command()
async def cmd_user_list(args: argparse.Namespace, store: AdminStore, _s: Settings) -> None:
    for u in await store.list_users():
        lock = f"  locked until {u.locked_until:%Y-%m-%dT%H:%M:%SZ}" if u.locked_until else ""
        print(f"{u.username}\t{','.join(r for r in ROLES if r in u.roles)}{lock}")


@admin_command(audit_as="removeUser", target="name")
async def cmd_user_remove(args: argparse.Namespace, store: AdminStore, _s: Settings) -> None:
    await store.remove_user(args.name)
    print(f"user {args.name} removed")


@admin_command(audit_as="unlockUser", target="name")
async def cmd_user_unlock(args: argparse.Namespace, store: AdminStore, _s: Settings) -> None:
    await store.unlock(args.name)
    print(f"user {args.name} unlocked")


# ----------------------------------------------------------------------------------------------- API keys


def cmd_apikey_create(args: argparse.Namespace) -> int:
    roles = _roles(args)

    async def action(store: AdminStore, _s: Settings) -> None:
        info, key = await store.create_api_key(args.name, roles, created_by=f"cli:{_os_user()}", now=_now())
        print(f"API key {info.id} ({args.name}); the key is shown only now:")
        print(key)

    return run_admin(args, action, audit_as="createApiKey", target=args.name)


@admin_command(audit_as="revokeApiKey", target="id")
async def cmd_apikey_revoke(args: argparse.Namespace, store: AdminStore, _s: Settings) -> None:
    await store.revoke_api_key(args.id, by=f"cli:{_os_user()}", now=_now())
    print(f"API key {args.id} revoked")


@admin_command()
async def cmd_apikey_list(args: argparse.Namespace, store: AdminStore, _s: Settings) -> None:
    for k in await store.list_api_keys():
        print(f"{k.id}\t{k.name}\t{','.join(r for r in ROLES if r in k.roles)}\t{_state('revoked', k.revoked_at)}")


# -------------------------------------------------------------------------------------- audit, keys, doc


def cmd_audit_list(args: argparse.Namespace) -> int:
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

    return run_admin(args, action)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from gateway.admin.auditexport import check_online

    failed: list[bool] = []

    async def action(store: AdminStore, s: Settings) -> None:
        check = await check_online(store, _audit_server(s))
        stamped = sum(1 for c in check.checkpoints if c.stamped)
        print(f"audit log: {check.chain.size} entries, {len(check.checkpoints)} checkpoints "
              f"({stamped} timestamped, {len(check.chain.reproduced)} reproduced by the entries)")
        for p in check.problems:
            print(p.line())
        print("RESULT: OK, the chain verifies" if check.ok else f"RESULT: FAILED, {len(check.problems)} problem(s)")
        failed.append(not check.ok)

    run_admin(args, action)
    return 1 if failed and failed[0] else 0


def _audit_server(s: Settings) -> SecurityServerId:
    try:
        return SecurityServerId.parse(s.server.id)
    except GatewayError as e:
        raise ConfigError(f"[server] id: {e.message}") from e


def cmd_audit_export(args: argparse.Namespace) -> int:
    from gateway.admin.auditexport import export_audit
    from gateway.globalconf.updater import CACHE_FILE

    if getattr(args, "central", False):
        raise RequestError("the central server's audit log has no checkpoints to export (it has no signing key "
                           "of a member); `gateway admin --central audit verify` checks its chain")

    async def action(store: AdminStore, s: Settings) -> None:
        paths = [Path(s.globalconf.cache_dir) / CACHE_FILE, *(Path(p) for p in args.globalconf or ())]
        try:
            envelopes = [p.read_bytes() for p in paths if p.exists()]
            done = await export_audit(store, args.out, server_id=_audit_server(s), globalconfs=envelopes,
                                      now=_now(), include_uncovered=args.include_uncovered)
        except OSError as e:
            raise RequestError(f"cannot write {args.out}: {e.strerror or e}") from e
        print(f"wrote {args.out}: {done.entries} entries, {done.checkpoints} checkpoints ({done.stamped} "
              f"timestamped, {done.cosignatures} cosignatures), {done.globalconfs} global configuration(s)")

    return run_admin(args, action, audit_as="exportAuditArchive", target=args.out)


@admin_command(audit_as="rotateSessionKey")
async def cmd_session_key_rotate(args: argparse.Namespace, store: AdminStore, s: Settings) -> None:
    key = await store.rotate_session_key(now=_now(), ttl_seconds=s.admin.session_ttl_seconds)
    print(f"session tokens are now signed with key {key.kid}")


@admin_command()
async def cmd_session_key_list(args: argparse.Namespace, store: AdminStore, _s: Settings) -> None:
    for k in await store.session_keys():
        print(f"{k.kid}\tcreated {k.created_at:%Y-%m-%dT%H:%M:%SZ}\t{_state('retired', k.retired_at)}")


def cmd_openapi(args: argparse.Namespace) -> int:
    if getattr(args, "central", False):
        from gateway.admin.central.routes import central_api

        _print(build_document(central_api(settings_from_args(args).central.instance)))
    else:
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


def cmd_api(args: argparse.Namespace) -> int:
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


