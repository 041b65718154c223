"""The handlers of ``gateway central ...``: operate the central server from the command line (I/O shell).

Each command is an ``async`` body run by :func:`~gateway.cli.commands.centraldb.central_command` on the
database of ``[central] database_url`` (see that module for the settings and schema checks); ``serve`` runs
the central server itself. Errors print their diagnostics and exit 1; unusable settings exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.central import migrate_central, publisher, registry, signingkeys
from gateway.cli.commands.centraldb import central_command, central_settings, masked, now, open_engine, out
from gateway.cli.run import stop_on_signal
from gateway.errors import GatewayError
from gateway.globalconf.anchor import anchor_hash
from gateway.settings import CentralSettings
from gateway.trust.keys import write_public_file

# ---------------------------------------------------------------------------------------------------------
# Database and server


@central_command(need_schema=False)
async def cmd_init(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    await migrate_central(engine)
    created = await signingkeys.ensure_signing_key(engine, instance=central.instance, key_dir=central.key_dir,
                                                   now=now())
    out(f"database {masked(central.database_url)}: schema up to date")
    if created is not None:
        out(f"created configuration-signing key {created.number}: {created.keyid}")
        out(f"  private key: {created.key_path}")
    else:
        out("an active configuration-signing key exists already")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.central.app import start_central

    central = central_settings(args)
    host = args.host if args.host is not None else central.host
    port = args.port if args.port is not None else central.port

    async def main() -> int:
        engine = await open_engine(args, central, need_schema=False)  # fail early, naming the settings source
        await engine.dispose()
        with stop_on_signal() as stop:
            handle = await start_central(central, host=host, port=port)
            out(f"central server listening on {handle.url}")
            try:
                await stop.wait()
            finally:
                await handle.close()
        return 0

    return asyncio.run(main())


# ---------------------------------------------------------------------------------------------------------
# Registry: members, subsystems, security servers, global groups, CAs, TSAs


@central_command
async def cmd_member_add(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    ident = await registry.add_member(engine, args.id, name=args.name, instance=central.instance)
    out(f"member {ident} added")
    return 0


@central_command
async def cmd_member_remove(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    await registry.remove_member(engine, args.id, instance=central.instance)
    out(f"member {args.id} removed")
    return 0


@central_command
async def cmd_member_list(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    for rec in await registry.list_members(engine):
        subs = ",".join(rec.subsystems) or "-"
        out(f"{rec.id}\t{rec.name}\tsubsystems: {subs}")
    return 0


@central_command
async def cmd_subsystem_add(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    ident = await registry.add_subsystem(engine, args.id, instance=central.instance)
    out(f"subsystem {ident} added")
    return 0


@central_command
async def cmd_subsystem_remove(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    await registry.remove_subsystem(engine, args.id, instance=central.instance)
    out(f"subsystem {args.id} removed")
    return 0


@central_command
async def cmd_server_add(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    ident = await registry.add_server(engine, args.id, address=args.address, instance=central.instance)
    out(f"security server {ident} added at {args.address}")
    return 0


@central_command
async def cmd_server_remove(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    await registry.remove_server(engine, args.id, instance=central.instance)
    out(f"security server {args.id} removed")
    return 0


@central_command
async def cmd_server_list(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    for rec in await registry.list_servers(engine):
        out(f"{rec.id}\t{rec.address}")
        for fp in rec.auth_certs:
            out(f"  auth cert {fp}")
        for client in rec.clients:
            out(f"  client {client}")
    return 0


@central_command(cert="authentication certificate")
async def cmd_server_add_cert(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    fp = await registry.add_auth_cert(engine, args.id, args.cert_data, instance=central.instance)
    out(f"authentication certificate {fp} registered for {args.id}")
    return 0


@central_command
async def cmd_server_remove_cert(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    await registry.remove_auth_cert(engine, args.id, args.fingerprint, instance=central.instance)
    out(f"authentication certificate {args.fingerprint} removed from {args.id}")
    return 0


@central_command
async def cmd_server_add_client(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    client = await registry.add_server_client(engine, args.server, args.client, instance=central.instance)
    out(f"{client.kind} {client} registered as a client of {args.server}")
    return 0


@central_command
async def cmd_server_remove_client(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    await registry.remove_server_client(engine, args.server, args.client, instance=central.instance)
    out(f"{args.client} is no longer a client of {args.server}")
    return 0


@central_command
async def cmd_group_add(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    ident = await registry.add_group(engine, args.id, description=args.description, instance=central.instance)
    out(f"global group {ident} added")
    return 0


@central_command
async def cmd_group_remove(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    await registry.remove_group(engine, args.id, instance=central.instance)
    out(f"global group {args.id} removed")
    return 0


@central_command
async def cmd_group_add_member(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    client = await registry.add_group_member(engine, args.group, args.client, instance=central.instance)
    out(f"{client.kind} {client} added to global group {args.group}")
    return 0


@central_command
async def cmd_group_remove_member(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    await registry.remove_group_member(engine, args.group, args.client, instance=central.instance)
    out(f"{args.client} removed from global group {args.group}")
    return 0


@central_command
async def cmd_group_list(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    for rec in await registry.list_groups(engine):
        out(f"{rec.id}\t{rec.description}")
        for client in rec.members:
            out(f"  member {client}")
    return 0


@central_command(cert="CA certificate")
async def cmd_ca_add(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    rec = await registry.add_ca(engine, name=args.name, certificate=args.cert_data, ocsp_urls=args.ocsp_url or ())
    out(f"certification authority {rec.name!r} added (OCSP: {', '.join(rec.ocsp_urls) or 'none'})")
    return 0


@central_command
async def cmd_ca_remove(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    await registry.remove_ca(engine, args.name)
    out(f"certification authority {args.name!r} removed")
    return 0


@central_command
async def cmd_ca_list(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    for rec in await registry.list_cas(engine):
        out(f"{rec.name}\tOCSP: {', '.join(rec.ocsp_urls) or '-'}")
    return 0


@central_command(cert="TSA certificate")
async def cmd_tsa_add(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    rec = await registry.add_tsa(engine, name=args.name, url=args.url, certificate=args.cert_data)
    out(f"timestamping authority {rec.name!r} added at {rec.url}")
    return 0


@central_command
async def cmd_tsa_remove(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    await registry.remove_tsa(engine, args.name)
    out(f"timestamping authority {args.name!r} removed")
    return 0


@central_command
async def cmd_tsa_list(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    for rec in await registry.list_tsas(engine):
        out(f"{rec.name}\t{rec.url}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# Configuration-signing keys and publication


@central_command
async def cmd_keys_add(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    info = await signingkeys.create_signing_key(engine, instance=central.instance, key_dir=central.key_dir,
                                                now=now())
    out(f"created configuration-signing key {info.number}: {info.keyid} ({info.key_path})")
    out("it signs from the next publication on; hand out the new anchor (`gateway central anchor`)")
    return 0


@central_command
async def cmd_keys_list(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    for info in await signingkeys.list_signing_keys(engine):
        created = info.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        out(f"{info.number}\t{info.keyid}\t{info.state}\tcreated {created}\t{info.key_path}")
    return 0


@central_command
async def cmd_keys_retire(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    info = await signingkeys.retire_signing_key(engine, args.keyid, now=now())
    out(f"configuration-signing key {info.number} ({info.keyid}) retired")
    out("clients whose anchor lists only this key will refuse the next configuration")
    return 0


@central_command
async def cmd_publish(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    if args.if_due:
        pub = await publisher.publish_if_due(engine, central, now())
        if pub is None:
            out("nothing to publish: the newest publication is current")
            return 0
    else:
        pub = await publisher.publish(engine, central, now())
    expires = pub.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    out(f"published version {pub.version} (sha256 {pub.sha256}, expires {expires})")
    return 0


@central_command
async def cmd_anchor(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    data = await publisher.current_anchor(engine, central)
    try:
        write_public_file(Path(args.out), data)
    except OSError as e:
        raise GatewayError(f"anchor file {args.out} cannot be written: {e.strerror or e}") from e
    out(anchor_hash(data))
    return 0


@central_command
async def cmd_show(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    data = await publisher.latest(engine)
    if data is None:
        raise GatewayError(
            "no global configuration has been published yet", hint="run `gateway central publish`"
        )
    doc = json.loads(data)
    json.dump(doc if args.envelope else doc["signed"], sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0
