"""The handlers of ``gateway serverconf ...``: clients, services, access rights, local groups (I/O shell).

Every command works on the database named by ``[server] database_url`` and first brings the serverconf
schema up to date (migrations are idempotent): :func:`run_serverconf` runs a command's action there, and
:func:`serverconf_command` makes a handler of a body that needs nothing else. Every command that changes
something is recorded in the admin audit log, refused attempts too, under the name of the admin API operation
that makes the same change (``addClient``, ``grantAccess``, ...). Identifiers, files and rules
on the command line are checked before the settings are loaded. The parser is :mod:`gateway.cli.serverconf`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.cli.commands.audit import audited
from gateway.cli.common import Handler, database_setting, settings_from_args
from gateway.errors import RequestError
from gateway.identifiers import ServiceId, parse_client
from gateway.serverconf.access import AccessRule, Endpoint, LocalGroupId, parse_subject
from gateway.serverconf.store import ServerConfStore
from gateway.storage.db import open_database

MAX_CERT_FILE_BYTES = 1 * 2**20  # bytes; a certificate file is a few KiB

Action = Callable[[ServerConfStore], Awaitable[None]]
Body = Callable[[argparse.Namespace, ServerConfStore], Awaitable[None]]


def run_serverconf(args: argparse.Namespace, action: Action, *, audit_as: str | None = None, target: str = "") -> int:
    """Run ``action`` on the serverconf tables of ``[server] database_url``, migrated first; with ``audit_as``
    (the admin API operation that makes the same change), the change or its refusal is recorded in the audit
    log (:func:`gateway.cli.commands.audit.audited`).

    Raises:
        ConfigError: unusable settings or database URL.
        GatewayError: whatever ``action`` raises (audited first).
    """
    url = settings_from_args(args).server.database_url

    async def main() -> None:
        engine = await open_database(url, where=database_setting(args, "server"))
        try:
            store = ServerConfStore(engine)
            await store.migrate()
            if audit_as is None:
                await action(store)
            else:
                await audited(engine, action=audit_as, target=target, command="serverconf",
                              change=lambda: action(store))
        finally:
            await engine.dispose()

    asyncio.run(main())
    return 0


def serverconf_command(body: Body) -> Handler:
    """Make a handler of a command that needs nothing but the store (``list`` and the like)."""

    @functools.wraps(body)
    def handler(args: argparse.Namespace) -> int:
        async def action(store: ServerConfStore) -> None:
            await body(args, store)

        return run_serverconf(args, action)

    return handler


def _read_cert(path: str) -> bytes:
    """Raises: RequestError: the file cannot be read or is too large."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_CERT_FILE_BYTES:
            raise RequestError(f"certificate file {path} is larger than {MAX_CERT_FILE_BYTES} bytes")
        return p.read_bytes()
    except OSError as e:
        raise RequestError(f"certificate file {path} cannot be read: {e.strerror}") from e


def _endpoint(args: argparse.Namespace) -> Endpoint:
    return Endpoint(method=args.method or "*", path=args.path or "**")


def _parse_endpoint(text: str) -> Endpoint:
    method, _, path = text.strip().partition(" ")
    if not path:
        raise RequestError(f"endpoint {text[:80]!r} must be 'METHOD PATH', e.g. 'GET /pets/*'")
    return Endpoint(method=method, path=path.strip())


# ------------------------------------------------------------------------------------------------ clients


def cmd_client_add(args: argparse.Namespace) -> int:
    client = parse_client(args.id, encoded=False)
    certs = [_read_cert(p) for p in args.is_cert or ()]

    async def action(store: ServerConfStore) -> None:
        await store.add_client(client, status=args.status, is_auth=args.auth, body_logging=args.body_logging)
        for cert in certs:
            fp = await store.add_is_cert(client, cert)
            print(f"registered IS certificate {fp}")
        print(f"added client {client.typed()}")

    return run_serverconf(args, action, audit_as="addClient", target=client.typed())


@serverconf_command
async def cmd_client_list(args: argparse.Namespace, store: ServerConfStore) -> None:
    for c in await store.list_clients():
        fps = ",".join(sorted(c.is_cert_fingerprints)) or "-"
        print(f"{c.id.typed()}\tstatus={c.status}\tauth={c.is_auth}\tbody_logging={c.body_logging}\tcerts={fps}")


def cmd_client_remove(args: argparse.Namespace) -> int:
    client = parse_client(args.id, encoded=False)

    async def action(store: ServerConfStore) -> None:
        await store.remove_client(client)
        print(f"removed client {client.typed()}")

    return run_serverconf(args, action, audit_as="removeClient", target=client.typed())


# ----------------------------------------------------------------------------------------------- services


def cmd_service_add(args: argparse.Namespace) -> int:
    service = ServiceId.parse(args.id, encoded=False)
    eps = [_parse_endpoint(e) for e in args.endpoint or ()]

    async def action(store: ServerConfStore) -> None:
        await store.add_service(
            service, url=args.url, timeout_seconds=args.timeout, openapi_url=args.openapi,
            enabled=not args.disabled, endpoints_=eps, data_subject=args.data_subject,
            subject_mismatch=args.subject_mismatch, purpose_required=args.purpose_required,
        )
        print(f"added service {service}")

    return run_serverconf(args, action, audit_as="addService", target=str(service))


def cmd_service_transparency(args: argparse.Namespace) -> int:
    service = ServiceId.parse(args.id, encoded=False)

    async def action(store: ServerConfStore) -> None:
        info = await store.update_service(
            service, data_subject=args.data_subject, subject_mismatch=args.subject_mismatch,
            purpose_required=None if args.purpose_required is None else args.purpose_required == "yes",
        )
        print(f"service {service}: data_subject={info.data_subject or '-'} "
              f"subject_mismatch={info.subject_mismatch} purpose_required={info.purpose_required}")

    return run_serverconf(args, action, audit_as="updateService", target=str(service))


@serverconf_command
async def cmd_service_list(args: argparse.Namespace, store: ServerConfStore) -> None:
    for s in await store.list_services():
        eps = ", ".join(str(e) for e in s.endpoints) or "-"
        state = "enabled" if s.enabled else "disabled"
        subject = f"\tdata_subject={s.data_subject}/{s.subject_mismatch}" if s.data_subject is not None else ""
        purpose = "\tpurpose_required" if s.purpose_required else ""
        print(f"{s.id}\t{s.url}\ttimeout={s.timeout_seconds:g}s\t{state}\tendpoints={eps}{subject}{purpose}")


def cmd_service_remove(args: argparse.Namespace) -> int:
    service = ServiceId.parse(args.id, encoded=False)

    async def action(store: ServerConfStore) -> None:
        await store.remove_service(service)
        print(f"removed service {service}")

    return run_serverconf(args, action, audit_as="removeService", target=str(service))


# ------------------------------------------------------------------------------------------ access rights


def _rule(args: argparse.Namespace) -> AccessRule:
    return AccessRule(
        subject=parse_subject(args.subject),
        service=ServiceId.parse(args.service, encoded=False),
        endpoint=_endpoint(args),
    )


def _change_rule(args: argparse.Namespace, change: Callable[[ServerConfStore, AccessRule], Awaitable[None]],
                 done: str, audit_as: str) -> int:
    rule = _rule(args)

    async def action(store: ServerConfStore) -> None:
        await change(store, rule)
        print(f"{done} {rule.subject.typed()} {rule.endpoint} of {rule.service}")

    return run_serverconf(args, action, audit_as=audit_as,
                          target=f"{rule.subject.typed()} {rule.endpoint} of {rule.service}")


def cmd_access_grant(args: argparse.Namespace) -> int:
    return _change_rule(args, ServerConfStore.grant, "granted", "grantAccess")


def cmd_access_revoke(args: argparse.Namespace) -> int:
    return _change_rule(args, ServerConfStore.revoke, "revoked", "revokeAccess")


def cmd_access_list(args: argparse.Namespace) -> int:
    service = ServiceId.parse(args.service, encoded=False) if args.service else None

    async def action(store: ServerConfStore) -> None:
        for r in await store.list_rules(service=service):
            print(f"{r.service}\t{r.endpoint.method}\t{r.endpoint.path}\t{r.subject.typed()}")

    return run_serverconf(args, action)


# ------------------------------------------------------------------------------------------- local groups


def cmd_group_add(args: argparse.Namespace) -> int:
    group = LocalGroupId(code=args.code)

    async def action(store: ServerConfStore) -> None:
        await store.add_group(group, description=args.description)
        print(f"added local group {group.code}")

    return run_serverconf(args, action, audit_as="addLocalGroup", target=group.code)


def cmd_group_add_member(args: argparse.Namespace) -> int:
    group = LocalGroupId(code=args.code)
    client = parse_client(args.client, encoded=False)

    async def action(store: ServerConfStore) -> None:
        await store.add_group_member(group, client)
        print(f"added {client.typed()} to local group {group.code}")

    return run_serverconf(args, action, audit_as="addLocalGroupMember", target=f"{group.code} {client.typed()}")


@serverconf_command
async def cmd_group_list(args: argparse.Namespace, store: ServerConfStore) -> None:
    for group, members in (await store.list_groups()).items():
        print(f"{group.code}\t" + ",".join(sorted(str(m) for m in members)))
