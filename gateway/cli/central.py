"""``gateway central ...``: operate the central server from the command line (I/O shell).

Every command works on the database named by ``[central] database_url``. ``init`` creates or upgrades the
schema and the first configuration-signing key; every other command (except ``serve``, which migrates
itself) refuses a database that ``init`` has not brought up to date. Errors print their diagnostics and exit
1; unusable settings (an unknown key, a bad database URL, a database that cannot be opened) exit 2 and name
the settings file (or environment variable) and the key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.central import (
    MIGRATIONS_DIR,
    VERSION_TABLE,
    migrate_central,
    publisher,
    registry,
    settings_problems,
    signingkeys,
)
from gateway.cli.common import settings_from_args
from gateway.cli.run import stop_on_signal
from gateway.errors import ConfigError, GatewayError, RequestError
from gateway.globalconf.anchor import anchor_hash
from gateway.settings import CentralSettings
from gateway.storage.db import make_engine
from gateway.trust.keys import write_public_file

MAX_FILE_BYTES = 1 * 2**20  # bytes; certificate files given on the command line


# ---------------------------------------------------------------------------------------------------------
# Settings and database


def _source(args: argparse.Namespace, key: str) -> str:
    """Where ``[central] key`` came from, for error messages."""
    env = f"GATEWAY_CENTRAL__{key.upper()}"
    if env in os.environ:
        return f"environment variable {env}"
    path = getattr(args, "config", None) or os.environ.get("GATEWAY_CONFIG")
    return f"settings file {path}" if path else "default settings"


def _settings(args: argparse.Namespace) -> CentralSettings:
    """Load and check the ``[central]`` settings.

    Raises:
        ConfigError: the file or a value is invalid (names the source and the key).
    """
    central = settings_from_args(args).central
    problems = settings_problems(central)
    if problems:
        key, message = problems[0]
        raise ConfigError(f"{_source(args, key)}: [central] key {key!r}: {message}")
    return central


def _now() -> datetime:
    return datetime.now(UTC)


def _schema_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext  # alembic is slow to import: only when used

    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def _masked(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # make_engine has already refused it with a better message
        return url


async def _open(args: argparse.Namespace, central: CentralSettings, *, need_schema: bool) -> AsyncEngine:
    """An engine on ``[central] database_url``, checked to be reachable (and migrated, if asked).

    Raises:
        ConfigError: a malformed URL, a database that cannot be opened, or one that needs ``init``.
    """
    where = f"{_source(args, 'database_url')}: [central] key 'database_url'"
    try:
        engine = make_engine(central.database_url)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.message}", hint=e.hint) from e
    try:
        async with engine.connect() as conn:
            revision = await conn.run_sync(_schema_revision)
    except (OSError, SQLAlchemyError) as e:
        await engine.dispose()
        cause = getattr(e, "orig", None) or e
        raise ConfigError(f"{where}: cannot open database {_masked(central.database_url)}: {cause}") from e
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    if need_schema and revision != head:
        await engine.dispose()
        raise ConfigError(
            f"database {_masked(central.database_url)} is not initialised for the central server "
            f"(schema revision {revision or 'none'}, expected {head})",
            hint="run `gateway central init`",
        )
    return engine


def _run(
    args: argparse.Namespace,
    body: Callable[[AsyncEngine, CentralSettings], Awaitable[int]],
    *,
    need_schema: bool = True,
) -> int:
    central = _settings(args)

    async def main() -> int:
        engine = await _open(args, central, need_schema=need_schema)
        try:
            return await body(engine, central)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _read_file(path: str, *, what: str) -> bytes:
    """Read a (certificate) file named on the command line.

    Raises:
        RequestError: the file cannot be read or is too large.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise RequestError(f"{what} file {path} cannot be read: {e.strerror or e}") from e
    if len(data) > MAX_FILE_BYTES:
        raise RequestError(f"{what} file {path} is larger than {MAX_FILE_BYTES} bytes")
    return data


def _print(*parts: Any) -> None:
    print(*parts, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Commands


def cmd_init(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        await migrate_central(engine)
        created = await signingkeys.ensure_signing_key(
            engine, instance=central.instance, key_dir=central.key_dir, now=_now()
        )
        _print(f"database {_masked(central.database_url)}: schema up to date")
        if created is not None:
            _print(f"created configuration-signing key {created.number}: {created.keyid}")
            _print(f"  private key: {created.key_path}")
        else:
            _print("an active configuration-signing key exists already")
        return 0

    return _run(args, body, need_schema=False)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.central.app import start_central

    central = _settings(args)
    host = args.host if args.host is not None else central.host
    port = args.port if args.port is not None else central.port

    async def main() -> int:
        engine = await _open(args, central, need_schema=False)  # fail early, naming the settings source
        await engine.dispose()
        with stop_on_signal() as stop:
            handle = await start_central(central, host=host, port=port)
            _print(f"central server listening on {handle.url}")
            try:
                await stop.wait()
            finally:
                await handle.close()
        return 0

    return asyncio.run(main())


def cmd_member_add(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        ident = await registry.add_member(engine, args.id, name=args.name, instance=central.instance)
        _print(f"member {ident} added")
        return 0

    return _run(args, body)


def cmd_member_remove(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        await registry.remove_member(engine, args.id, instance=central.instance)
        _print(f"member {args.id} removed")
        return 0

    return _run(args, body)


def cmd_member_list(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        for rec in await registry.list_members(engine):
            subs = ",".join(rec.subsystems) or "-"
            _print(f"{rec.id}\t{rec.name}\tsubsystems: {subs}")
        return 0

    return _run(args, body)


def cmd_subsystem_add(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        ident = await registry.add_subsystem(engine, args.id, instance=central.instance)
        _print(f"subsystem {ident} added")
        return 0

    return _run(args, body)


def cmd_subsystem_remove(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        await registry.remove_subsystem(engine, args.id, instance=central.instance)
        _print(f"subsystem {args.id} removed")
        return 0

    return _run(args, body)


def cmd_server_add(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        ident = await registry.add_server(engine, args.id, address=args.address, instance=central.instance)
        _print(f"security server {ident} added at {args.address}")
        return 0

    return _run(args, body)


def cmd_server_remove(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        await registry.remove_server(engine, args.id, instance=central.instance)
        _print(f"security server {args.id} removed")
        return 0

    return _run(args, body)


def cmd_server_list(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        for rec in await registry.list_servers(engine):
            _print(f"{rec.id}\t{rec.address}")
            for fp in rec.auth_certs:
                _print(f"  auth cert {fp}")
            for client in rec.clients:
                _print(f"  client {client}")
        return 0

    return _run(args, body)


def cmd_server_add_cert(args: argparse.Namespace) -> int:
    data = _read_file(args.cert, what="authentication certificate")

    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        fp = await registry.add_auth_cert(engine, args.id, data, instance=central.instance)
        _print(f"authentication certificate {fp} registered for {args.id}")
        return 0

    return _run(args, body)


def cmd_server_remove_cert(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        await registry.remove_auth_cert(engine, args.id, args.fingerprint, instance=central.instance)
        _print(f"authentication certificate {args.fingerprint} removed from {args.id}")
        return 0

    return _run(args, body)


def cmd_server_add_client(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        client = await registry.add_server_client(engine, args.server, args.client, instance=central.instance)
        _print(f"{client.kind} {client} registered as a client of {args.server}")
        return 0

    return _run(args, body)


def cmd_server_remove_client(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        await registry.remove_server_client(engine, args.server, args.client, instance=central.instance)
        _print(f"{args.client} is no longer a client of {args.server}")
        return 0

    return _run(args, body)


def cmd_group_add(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        ident = await registry.add_group(
            engine, args.id, description=args.description, instance=central.instance
        )
        _print(f"global group {ident} added")
        return 0

    return _run(args, body)


def cmd_group_remove(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        await registry.remove_group(engine, args.id, instance=central.instance)
        _print(f"global group {args.id} removed")
        return 0

    return _run(args, body)


def cmd_group_add_member(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        client = await registry.add_group_member(engine, args.group, args.client, instance=central.instance)
        _print(f"{client.kind} {client} added to global group {args.group}")
        return 0

    return _run(args, body)


def cmd_group_remove_member(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        await registry.remove_group_member(engine, args.group, args.client, instance=central.instance)
        _print(f"{args.client} removed from global group {args.group}")
        return 0

    return _run(args, body)


def cmd_group_list(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        for rec in await registry.list_groups(engine):
            _print(f"{rec.id}\t{rec.description}")
            for client in rec.members:
                _print(f"  member {client}")
        return 0

    return _run(args, body)


def cmd_ca_add(args: argparse.Namespace) -> int:
    data = _read_file(args.cert, what="CA certificate")

    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        rec = await registry.add_ca(engine, name=args.name, certificate=data, ocsp_urls=args.ocsp_url or ())
        _print(f"certification authority {rec.name!r} added (OCSP: {', '.join(rec.ocsp_urls) or 'none'})")
        return 0

    return _run(args, body)


def cmd_ca_remove(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        await registry.remove_ca(engine, args.name)
        _print(f"certification authority {args.name!r} removed")
        return 0

    return _run(args, body)


def cmd_ca_list(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        for rec in await registry.list_cas(engine):
            _print(f"{rec.name}\tOCSP: {', '.join(rec.ocsp_urls) or '-'}")
        return 0

    return _run(args, body)


def cmd_tsa_add(args: argparse.Namespace) -> int:
    data = _read_file(args.cert, what="TSA certificate")

    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        rec = await registry.add_tsa(engine, name=args.name, url=args.url, certificate=data)
        _print(f"timestamping authority {rec.name!r} added at {rec.url}")
        return 0

    return _run(args, body)


def cmd_tsa_remove(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        await registry.remove_tsa(engine, args.name)
        _print(f"timestamping authority {args.name!r} removed")
        return 0

    return _run(args, body)


def cmd_tsa_list(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        for rec in await registry.list_tsas(engine):
            _print(f"{rec.name}\t{rec.url}")
        return 0

    return _run(args, body)


def cmd_keys_add(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        info = await signingkeys.create_signing_key(
            engine, instance=central.instance, key_dir=central.key_dir, now=_now()
        )
        _print(f"created configuration-signing key {info.number}: {info.keyid} ({info.key_path})")
        _print("it signs from the next publication on; hand out the new anchor (`gateway central anchor`)")
        return 0

    return _run(args, body)


def cmd_keys_list(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        for info in await signingkeys.list_signing_keys(engine):
            created = info.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
            _print(f"{info.number}\t{info.keyid}\t{info.state}\tcreated {created}\t{info.key_path}")
        return 0

    return _run(args, body)


def cmd_keys_retire(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        info = await signingkeys.retire_signing_key(engine, args.keyid, now=_now())
        _print(f"configuration-signing key {info.number} ({info.keyid}) retired")
        _print("clients whose anchor lists only this key will refuse the next configuration")
        return 0

    return _run(args, body)


def cmd_publish(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        if args.if_due:
            pub = await publisher.publish_if_due(engine, central, _now())
            if pub is None:
                _print("nothing to publish: the newest publication is current")
                return 0
        else:
            pub = await publisher.publish(engine, central, _now())
        expires = pub.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        _print(f"published version {pub.version} (sha256 {pub.sha256}, expires {expires})")
        return 0

    return _run(args, body)


def cmd_anchor(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        data = await publisher.current_anchor(engine, central)
        try:
            write_public_file(Path(args.out), data)
        except OSError as e:
            raise GatewayError(f"anchor file {args.out} cannot be written: {e.strerror or e}") from e
        _print(anchor_hash(data))
        return 0

    return _run(args, body)


def cmd_show(args: argparse.Namespace) -> int:
    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        data = await publisher.latest(engine)
        if data is None:
            raise GatewayError(
                "no global configuration has been published yet", hint="run `gateway central publish`"
            )
        doc = json.loads(data)
        json.dump(doc if args.envelope else doc["signed"], sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0

    return _run(args, body)


# ---------------------------------------------------------------------------------------------------------
# Parser


def _group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    p = sub.add_parser(name, help=help, description=help)
    return p.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)


def _cmd(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Callable[[argparse.Namespace], int],
    help: str,
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(handler=handler)
    return p


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gateway central ...``."""
    central = subparsers.add_parser(
        "central", help="central server: registry, signing keys, signed global configuration",
        description="Operate the central server. All commands use [central] database_url.",
    )
    central.add_argument(
        "-c", "--config", default=argparse.SUPPRESS, help="settings file (TOML); as `gateway -c FILE`"
    )
    sub = central.add_subparsers(dest="central_command", metavar="COMMAND", required=True)

    _cmd(sub, "init", cmd_init, "create or upgrade the database; create the first signing key if none")
    p = _cmd(sub, "serve", cmd_serve, "serve /globalconf, /anchor and /healthz; publish when due")
    p.add_argument("--host", help="listen address (default: [central] host)")
    p.add_argument("--port", type=int, help="listen port, 0 for any free port (default: [central] port)")

    g = _group(sub, "member", "members of the federation")
    p = _cmd(g, "add", cmd_member_add, "register a member INSTANCE/CLASS/CODE")
    p.add_argument("id", metavar="ID")
    p.add_argument("--name", required=True, help="the member's name")
    p = _cmd(g, "remove", cmd_member_remove, "remove a member with its subsystems and servers")
    p.add_argument("id", metavar="ID")
    _cmd(g, "list", cmd_member_list, "list members and their subsystems")

    g = _group(sub, "subsystem", "subsystems of members")
    p = _cmd(g, "add", cmd_subsystem_add, "register a subsystem INSTANCE/CLASS/CODE/SUBSYSTEM")
    p.add_argument("id", metavar="ID")
    p = _cmd(g, "remove", cmd_subsystem_remove, "remove a subsystem")
    p.add_argument("id", metavar="ID")

    g = _group(sub, "server", "security servers, their authentication certificates and clients")
    p = _cmd(g, "add", cmd_server_add, "register a security server INSTANCE/CLASS/CODE/SERVERCODE")
    p.add_argument("id", metavar="ID")
    p.add_argument("--address", required=True, help="HOST:PORT of its server-to-server (mTLS) port")
    p = _cmd(g, "remove", cmd_server_remove, "remove a security server")
    p.add_argument("id", metavar="ID")
    _cmd(g, "list", cmd_server_list, "list security servers with certificates and clients")
    p = _cmd(g, "add-cert", cmd_server_add_cert, "register an authentication certificate for a server")
    p.add_argument("id", metavar="ID")
    p.add_argument("--cert", required=True, metavar="PEM", help="certificate file (PEM or DER)")
    p = _cmd(g, "remove-cert", cmd_server_remove_cert, "remove an authentication certificate")
    p.add_argument("id", metavar="ID")
    p.add_argument("fingerprint", metavar="SHA256", help="hex SHA-256 of the certificate")
    p = _cmd(g, "add-client", cmd_server_add_client, "register a member or subsystem as a server's client")
    p.add_argument("server", metavar="SERVER_ID")
    p.add_argument("client", metavar="CLIENT_ID")
    p = _cmd(g, "remove-client", cmd_server_remove_client, "remove a client from a server")
    p.add_argument("server", metavar="SERVER_ID")
    p.add_argument("client", metavar="CLIENT_ID")

    g = _group(sub, "group", "global groups")
    p = _cmd(g, "add", cmd_group_add, "register a global group INSTANCE/GROUPCODE")
    p.add_argument("id", metavar="ID")
    p.add_argument("--description", required=True)
    p = _cmd(g, "remove", cmd_group_remove, "remove a global group")
    p.add_argument("id", metavar="ID")
    p = _cmd(g, "add-member", cmd_group_add_member, "add a member or subsystem to a global group")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("client", metavar="CLIENT")
    p = _cmd(g, "remove-member", cmd_group_remove_member, "remove a member or subsystem from a global group")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("client", metavar="CLIENT")
    _cmd(g, "list", cmd_group_list, "list global groups and their members")

    g = _group(sub, "ca", "trusted certification authorities")
    p = _cmd(g, "add", cmd_ca_add, "trust a certification authority")
    p.add_argument("--name", required=True)
    p.add_argument("--cert", required=True, metavar="PEM", help="the CA certificate file")
    p.add_argument("--ocsp-url", action="append", metavar="URL", help="OCSP responder URL (repeatable)")
    p = _cmd(g, "remove", cmd_ca_remove, "stop trusting a certification authority")
    p.add_argument("name", metavar="NAME")
    _cmd(g, "list", cmd_ca_list, "list trusted certification authorities")

    g = _group(sub, "tsa", "trusted timestamping authorities (in order of preference)")
    p = _cmd(g, "add", cmd_tsa_add, "trust an RFC 3161 timestamping authority (appended as least preferred)")
    p.add_argument("--name", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--cert", required=True, metavar="PEM", help="the TSA certificate file")
    p = _cmd(g, "remove", cmd_tsa_remove, "stop trusting a timestamping authority")
    p.add_argument("name", metavar="NAME")
    _cmd(g, "list", cmd_tsa_list, "list trusted timestamping authorities")

    g = _group(sub, "keys", "configuration-signing keys (rollover: add, hand out the anchor, retire)")
    _cmd(g, "add", cmd_keys_add, "create a configuration-signing key")
    _cmd(g, "list", cmd_keys_list, "list configuration-signing keys")
    p = _cmd(g, "retire", cmd_keys_retire, "stop signing with a key")
    p.add_argument("keyid", metavar="KEYID", help="the keyid, or a unique prefix of at least 8 hex digits")

    from gateway.cli.registration import add_commands as add_registration_commands

    add_registration_commands(sub)

    p = _cmd(sub, "publish", cmd_publish, "sign and publish the global configuration now")
    p.add_argument(
        "--if-due", action="store_true", help="only if the content changed or half the validity passed"
    )
    p = _cmd(sub, "anchor", cmd_anchor, "write the anchor of the active keys and print its SHA-256")
    p.add_argument("--out", required=True, metavar="FILE")
    p = _cmd(sub, "show", cmd_show, "print the newest published configuration as JSON")
    p.add_argument("--envelope", action="store_true", help="print the whole envelope with signatures")
