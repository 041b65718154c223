"""``gateway serverconf ...``: this server's clients, services, access rights and local groups (I/O shell).

Every command works on the database named by ``[server] database_url`` and first brings the serverconf
schema up to date (migrations are idempotent). A running server picks changes up when it next rebuilds
its snapshot. Errors print their diagnostics: a refused value, a duplicate or a missing object exits 1,
unusable settings (a bad database URL) exit 2.

    gateway serverconf client add DEV/GOV/1001/consumer [--auth none|https|https-cert] [--is-cert PEM]
    gateway serverconf service add DEV/GOV/1001/provider/pets --url http://127.0.0.1:8000/ [--timeout 30]
    gateway serverconf access grant DEV/GOV/1001/provider/pets DEV/GOV/1002/consumer --method GET \\
        --path '/pets/*'
    gateway serverconf group add-member friends DEV/GOV/1002/consumer
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.cli.common import settings_from_args
from gateway.errors import RequestError
from gateway.identifiers import ServiceId, parse_client
from gateway.serverconf import CLIENT_STATUSES, IS_AUTH_MODES
from gateway.serverconf.access import AccessRule, Endpoint, LocalGroupId, parse_subject
from gateway.serverconf.store import ServerConfStore
from gateway.storage.db import make_engine

MAX_CERT_FILE_BYTES = 1 * 2**20  # bytes; a certificate file is a few KiB

Action = Callable[[ServerConfStore], Awaitable[None]]


def _run(args: argparse.Namespace, action: Action) -> int:
    url = settings_from_args(args).server.database_url

    async def main() -> None:
        engine = make_engine(url)
        try:
            store = ServerConfStore(engine)
            await store.migrate()
            await action(store)
        finally:
            await engine.dispose()

    asyncio.run(main())
    return 0


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


def _client_add(args: argparse.Namespace) -> int:
    client = parse_client(args.id, encoded=False)
    certs = [_read_cert(p) for p in args.is_cert or ()]

    async def action(store: ServerConfStore) -> None:
        await store.add_client(client, status=args.status, is_auth=args.auth, body_logging=args.body_logging)
        for cert in certs:
            fp = await store.add_is_cert(client, cert)
            print(f"registered IS certificate {fp}")
        print(f"added client {client.typed()}")

    return _run(args, action)


def _client_list(args: argparse.Namespace) -> int:
    async def action(store: ServerConfStore) -> None:
        for c in await store.list_clients():
            fps = ",".join(sorted(c.is_cert_fingerprints)) or "-"
            print(f"{c.id.typed()}\tstatus={c.status}\tauth={c.is_auth}\tbody_logging={c.body_logging}\tcerts={fps}")

    return _run(args, action)


def _client_remove(args: argparse.Namespace) -> int:
    client = parse_client(args.id, encoded=False)

    async def action(store: ServerConfStore) -> None:
        await store.remove_client(client)
        print(f"removed client {client.typed()}")

    return _run(args, action)


# ----------------------------------------------------------------------------------------------- services


def _service_add(args: argparse.Namespace) -> int:
    service = ServiceId.parse(args.id, encoded=False)
    eps = [_parse_endpoint(e) for e in args.endpoint or ()]

    async def action(store: ServerConfStore) -> None:
        await store.add_service(
            service, url=args.url, timeout_seconds=args.timeout, openapi_url=args.openapi,
            enabled=not args.disabled, endpoints_=eps,
        )
        print(f"added service {service}")

    return _run(args, action)


def _service_list(args: argparse.Namespace) -> int:
    async def action(store: ServerConfStore) -> None:
        for s in await store.list_services():
            eps = ", ".join(str(e) for e in s.endpoints) or "-"
            state = "enabled" if s.enabled else "disabled"
            print(f"{s.id}\t{s.url}\ttimeout={s.timeout_seconds:g}s\t{state}\tendpoints={eps}")

    return _run(args, action)


def _service_remove(args: argparse.Namespace) -> int:
    service = ServiceId.parse(args.id, encoded=False)

    async def action(store: ServerConfStore) -> None:
        await store.remove_service(service)
        print(f"removed service {service}")

    return _run(args, action)


# ------------------------------------------------------------------------------------------ access rights


def _rule(args: argparse.Namespace) -> AccessRule:
    return AccessRule(
        subject=parse_subject(args.subject),
        service=ServiceId.parse(args.service, encoded=False),
        endpoint=_endpoint(args),
    )


def _access_grant(args: argparse.Namespace) -> int:
    rule = _rule(args)

    async def action(store: ServerConfStore) -> None:
        await store.grant(rule)
        print(f"granted {rule.subject.typed()} {rule.endpoint} of {rule.service}")

    return _run(args, action)


def _access_revoke(args: argparse.Namespace) -> int:
    rule = _rule(args)

    async def action(store: ServerConfStore) -> None:
        await store.revoke(rule)
        print(f"revoked {rule.subject.typed()} {rule.endpoint} of {rule.service}")

    return _run(args, action)


def _access_list(args: argparse.Namespace) -> int:
    service = ServiceId.parse(args.service, encoded=False) if args.service else None

    async def action(store: ServerConfStore) -> None:
        for r in await store.list_rules(service=service):
            print(f"{r.service}\t{r.endpoint.method}\t{r.endpoint.path}\t{r.subject.typed()}")

    return _run(args, action)


# ------------------------------------------------------------------------------------------- local groups


def _group_add(args: argparse.Namespace) -> int:
    group = LocalGroupId(code=args.code)

    async def action(store: ServerConfStore) -> None:
        await store.add_group(group, description=args.description)
        print(f"added local group {group.code}")

    return _run(args, action)


def _group_add_member(args: argparse.Namespace) -> int:
    group = LocalGroupId(code=args.code)
    client = parse_client(args.client, encoded=False)

    async def action(store: ServerConfStore) -> None:
        await store.add_group_member(group, client)
        print(f"added {client.typed()} to local group {group.code}")

    return _run(args, action)


def _group_list(args: argparse.Namespace) -> int:
    async def action(store: ServerConfStore) -> None:
        for group, members in (await store.list_groups()).items():
            print(f"{group.code}\t" + ",".join(sorted(str(m) for m in members)))

    return _run(args, action)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("serverconf", help="this security server's clients, services, access rights")
    sub = p.add_subparsers(dest="serverconf_command", metavar="OBJECT", required=True)

    client = sub.add_parser("client", help="members and subsystems hosted on this server")
    csub = client.add_subparsers(dest="client_command", metavar="ACTION", required=True)
    c = csub.add_parser("add", help="host a member or subsystem")
    c.add_argument("id", help="INSTANCE/CLASS/MEMBER[/SUBSYSTEM]")
    c.add_argument("--auth", choices=IS_AUTH_MODES, default="https-cert",
                   help="how its information systems connect (default https-cert, as X-Road)")
    c.add_argument(
        "--is-cert", action="append", metavar="PEM", help="an information system's TLS certificate (file)"
    )
    c.add_argument("--status", choices=CLIENT_STATUSES, default="registered")
    c.add_argument("--no-body-logging", dest="body_logging", action="store_false",
                   help="keep message bodies out of the message log")
    c.set_defaults(handler=_client_add)
    c = csub.add_parser("list", help="list hosted clients")
    c.set_defaults(handler=_client_list)
    c = csub.add_parser("remove", help="remove a client with its services and their access rights")
    c.add_argument("id")
    c.set_defaults(handler=_client_remove)

    service = sub.add_parser("service", help="REST services of hosted subsystems")
    ssub = service.add_subparsers(dest="service_command", metavar="ACTION", required=True)
    s = ssub.add_parser("add", help="add a REST service")
    s.add_argument("id", help="INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE")
    s.add_argument("--url", required=True, help="base URL; the request path and query are appended")
    s.add_argument("--openapi", help="URL of the service's OpenAPI description")
    s.add_argument("--timeout", type=float, default=60.0, metavar="S", help="seconds (default 60, as X-Road)")
    s.add_argument(
        "--endpoint", action="append", metavar="'METHOD PATH'", help="an endpoint, e.g. 'GET /pets/*'"
    )
    s.add_argument("--disabled", action="store_true", help="add it disabled")
    s.set_defaults(handler=_service_add)
    s = ssub.add_parser("list", help="list services")
    s.set_defaults(handler=_service_list)
    s = ssub.add_parser("remove", help="remove a service with its endpoints and access rights")
    s.add_argument("id")
    s.set_defaults(handler=_service_remove)

    access = sub.add_parser("access", help="access rights (default deny)")
    asub = access.add_subparsers(dest="access_command", metavar="ACTION", required=True)
    for name, handler, text in (
        ("grant", _access_grant, "allow a subject to call a service or one endpoint of it"),
        ("revoke", _access_revoke, "remove an access right"),
    ):
        a = asub.add_parser(name, help=text)
        a.add_argument("service", help="INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE")
        a.add_argument(
            "subject",
            help="a client (INSTANCE/CLASS/MEMBER[/SUBSYSTEM]), GLOBALGROUP:INSTANCE/CODE or LOCALGROUP:CODE",
        )
        a.add_argument("--method", help="'*' or an HTTP method (default '*')")
        a.add_argument(
            "--path", help="path pattern: exact, /a/* (one segment), /a/** (any depth); default all paths"
        )
        a.set_defaults(handler=handler)
    a = asub.add_parser("list", help="list access rights")
    a.add_argument("service", nargs="?", help="only this service")
    a.set_defaults(handler=_access_list)

    group = sub.add_parser("group", help="local groups of this server")
    gsub = group.add_subparsers(dest="group_command", metavar="ACTION", required=True)
    g = gsub.add_parser("add", help="add a local group")
    g.add_argument("code")
    g.add_argument("--description", default="")
    g.set_defaults(handler=_group_add)
    g = gsub.add_parser("add-member", help="add a client to a local group")
    g.add_argument("code")
    g.add_argument("client", help="INSTANCE/CLASS/MEMBER[/SUBSYSTEM]")
    g.set_defaults(handler=_group_add_member)
    g = gsub.add_parser("list", help="list local groups and their members")
    g.set_defaults(handler=_group_list)
