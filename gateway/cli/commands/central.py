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
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.admin.store import migrate_admin
from gateway.central import migrate_central, publisher, registry, signingkeys
from gateway.cli.commands.centraldb import central_command, central_settings, now, open_engine, out
from gateway.cli.common import Handler, settings_from_args
from gateway.cli.run import stop_on_signal
from gateway.errors import GatewayError, RequestError
from gateway.globalconf.anchor import anchor_hash
from gateway.globalconf.model import WitnessPolicy
from gateway.settings import CentralSettings
from gateway.storage.db import masked
from gateway.trust.keys import write_public_file

# ---------------------------------------------------------------------------------------------------------
# Database and server


@central_command(need_schema=False)
async def cmd_init(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    await migrate_central(engine)
    await migrate_admin(engine)  # the admin API's users, keys and the audit log this command writes to
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
    from gateway.admin.central.app import start_central_admin
    from gateway.central.app import start_central
    from gateway.sdnotify import notify

    central = central_settings(args)
    admin_settings = settings_from_args(args).admin
    host = args.host if args.host is not None else central.host
    port = args.port if args.port is not None else central.port
    admin_port = args.admin_port if args.admin_port is not None else central.admin_port

    async def main() -> int:
        engine = await open_engine(args, central, need_schema=False)  # fail early, naming the settings source
        await engine.dispose()
        with stop_on_signal() as stop:
            handle = await start_central(central, host=host, port=port)
            out(f"central server listening on {handle.url}")
            if handle.ops_url:
                out(f"central server ops (/metrics, /healthz, /readyz) on {handle.ops_url}")
            admin = None
            try:
                if admin_port != -1:
                    admin = await start_central_admin(handle, admin_settings, port=admin_port)
                    out(f"central admin API listening on {admin.url}")
                notify("READY=1")  # Type=notify units (deploy/systemd/): every port listens now
                await stop.wait()
            finally:
                if admin is not None:
                    await admin.close()
                notify("STOPPING=1")
                await handle.close()
        return 0

    return asyncio.run(main())


# ---------------------------------------------------------------------------------------------------------
# Registry: members, subsystems, security servers, global groups, CAs, TSAs

# A change to the registry: one call of gateway.central.registry with the engine, the arguments and the
# [central] settings; what it returns is the ``result`` of the command's message.
Change = Callable[[argparse.Namespace, AsyncEngine, CentralSettings], Awaitable[object]]


def _change(call: Change, done: str, *, cert: str | None = None) -> Handler:
    """A command that makes one change and says so: ``done`` is a :meth:`str.format` template of ``args``
    (the parsed arguments) and ``result`` (what ``call`` returned)."""

    async def body(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
        out(done.format(args=args, result=await call(args, engine, central)))
        return 0

    return central_command(cert=cert)(body)


cmd_member_add = _change(lambda a, e, c: registry.add_member(e, a.id, name=a.name, instance=c.instance),
                         "member {result} added")
cmd_member_remove = _change(lambda a, e, c: registry.remove_member(e, a.id, instance=c.instance),
                            "member {args.id} removed")
cmd_subsystem_add = _change(lambda a, e, c: registry.add_subsystem(e, a.id, instance=c.instance),
                            "subsystem {result} added")
cmd_subsystem_remove = _change(lambda a, e, c: registry.remove_subsystem(e, a.id, instance=c.instance),
                               "subsystem {args.id} removed")
cmd_server_add = _change(lambda a, e, c: registry.add_server(e, a.id, address=a.address, instance=c.instance),
                         "security server {result} added at {args.address}")
cmd_server_remove = _change(lambda a, e, c: registry.remove_server(e, a.id, instance=c.instance),
                            "security server {args.id} removed")
cmd_server_add_cert = _change(lambda a, e, c: registry.add_auth_cert(e, a.id, a.cert_data, instance=c.instance),
                              "authentication certificate {result} registered for {args.id}",
                              cert="authentication certificate")
cmd_server_remove_cert = _change(
    lambda a, e, c: registry.remove_auth_cert(e, a.id, a.fingerprint, instance=c.instance),
    "authentication certificate {args.fingerprint} removed from {args.id}")
cmd_server_add_client = _change(
    lambda a, e, c: registry.add_server_client(e, a.server, a.client, instance=c.instance),
    "{result.kind} {result} registered as a client of {args.server}")
cmd_server_remove_client = _change(
    lambda a, e, c: registry.remove_server_client(e, a.server, a.client, instance=c.instance),
    "{args.client} is no longer a client of {args.server}")
cmd_group_add = _change(lambda a, e, c: registry.add_group(e, a.id, description=a.description, instance=c.instance),
                        "global group {result} added")
cmd_group_remove = _change(lambda a, e, c: registry.remove_group(e, a.id, instance=c.instance),
                           "global group {args.id} removed")
cmd_group_add_member = _change(
    lambda a, e, c: registry.add_group_member(e, a.group, a.client, instance=c.instance),
    "{result.kind} {result} added to global group {args.group}")
cmd_group_remove_member = _change(
    lambda a, e, c: registry.remove_group_member(e, a.group, a.client, instance=c.instance),
    "{args.client} removed from global group {args.group}")
cmd_ca_remove = _change(lambda a, e, c: registry.remove_ca(e, a.name), "certification authority {args.name!r} removed")
cmd_tsa_add = _change(lambda a, e, c: registry.add_tsa(e, name=a.name, url=a.url, certificate=a.cert_data),
                      "timestamping authority {result.name!r} added at {result.url}", cert="TSA certificate")
cmd_tsa_remove = _change(lambda a, e, c: registry.remove_tsa(e, a.name), "timestamping authority {args.name!r} removed")


@central_command(cert="CA certificate")
async def cmd_ca_add(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    rec = await registry.add_ca(engine, name=args.name, certificate=args.cert_data, ocsp_urls=args.ocsp_url or ())
    out(f"certification authority {rec.name!r} added (OCSP: {', '.join(rec.ocsp_urls) or 'none'})")
    return 0


_R = TypeVar("_R")  # a record of the registry


def _listing(call: Callable[[AsyncEngine], Awaitable[Sequence[_R]]], lines: Callable[[_R], Iterable[str]]) -> Handler:
    """A command that prints the ``lines`` of each record ``call`` lists."""

    async def body(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
        for record in await call(engine):
            for line in lines(record):
                out(line)
        return 0

    return central_command(audit=False)(body)


cmd_member_list = _listing(registry.list_members,
                           lambda rec: [f"{rec.id}\t{rec.name}\tsubsystems: {','.join(rec.subsystems) or '-'}"])
cmd_server_list = _listing(registry.list_servers, lambda rec: [
    f"{rec.id}\t{rec.address}", *(f"  auth cert {fp}" for fp in rec.auth_certs),
    *(f"  client {client}" for client in rec.clients),
])
cmd_group_list = _listing(registry.list_groups, lambda rec: [
    f"{rec.id}\t{rec.description}", *(f"  member {client}" for client in rec.members),
])
cmd_ca_list = _listing(registry.list_cas, lambda rec: [f"{rec.name}\tOCSP: {', '.join(rec.ocsp_urls) or '-'}"])
cmd_tsa_list = _listing(registry.list_tsas, lambda rec: [f"{rec.name}\t{rec.url}"])


@central_command
async def cmd_transparency_set(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    purposes: dict[str, str] = {}
    for item in args.purpose or ():
        code, sep, text = item.partition("=")
        if not sep:
            raise RequestError(f"--purpose {item[:80]!r} is not CODE=TEXT")
        purposes[code.strip()] = text.strip()
    doc = await registry.set_transparency(engine, purposes=purposes, portal=args.portal,
                                          embargo_clients=list(args.embargo_client or ()), instance=central.instance)
    out(f"transparency parameters set: {len(doc['purposes'])} purposes, portal {doc['portal'] or '-'}, "
        f"{len(doc['embargo_clients'])} embargo clients (published from the next publication on)")
    return 0


@central_command(audit=False)
async def cmd_transparency_show(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    doc = await registry.get_transparency(engine)
    out(json.dumps(doc, indent=2, sort_keys=True) if doc is not None else
        "none set in the registry: the [central] transparency_* settings are published")
    return 0


# ---------------------------------------------------------------------------------------------------------
# Witness policies (docs/witness.md section 3)


def parse_witness(text: str) -> registry.WitnessSpec:
    """``VKEY,URL,SERVER`` or ``VKEY,SERVER`` (the URL by default ``https://<the server's address>/witness``) as
    given to ``--witness``; a vkey has no comma, a URL may.

    Raises:
        RequestError: fewer than two comma-separated parts, or an empty one.
    """
    vkey, sep, rest = text.partition(",")
    url, _, server = rest.rpartition(",")
    if not (sep and vkey.strip() and server.strip()) or (url and not url.strip()):
        raise RequestError(f"--witness {text[:120]!r} is not VKEY,URL,SERVER or VKEY,SERVER",
                           hint="e.g. --witness 'DEV/GOV/1002/ss2/witness+1a2b3c4d+BASE64,"
                                "https://ss2.example.org:5500/witness,DEV/GOV/1002/ss2'")
    return registry.WitnessSpec(vkey=vkey.strip(), url=url.strip(), server=server.strip())


def _policy_lines(policy: WitnessPolicy) -> list[str]:
    return [f"{policy.server}\tquorum {policy.quorum} of {len(policy.witnesses)}",
            *(f"  witness {w.name}\t{w.url}\ton {w.server}\t{w.vkey}" for w in policy.witnesses)]


def policy_json(policy: WitnessPolicy) -> dict[str, object]:
    """A policy as ``witness-policy list --json`` prints it (the admin API's fields)."""
    return {"server": str(policy.server), "quorum": policy.quorum,
            "witnesses": [{"name": w.name, "key_id": w.key.key_id.hex(), "vkey": w.vkey, "url": w.url,
                           "server": str(w.server)} for w in policy.witnesses]}


@central_command
async def cmd_witness_policy_set(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    specs = [parse_witness(text) for text in args.witness]
    policy = await registry.set_witness_policy(engine, args.server, quorum=args.quorum, witnesses=specs,
                                               instance=central.instance)
    out(f"witness policy of {policy.server} set: quorum {policy.quorum} of {len(policy.witnesses)} "
        f"({', '.join(w.name for w in policy.witnesses)}); published from the next publication on")
    return 0


cmd_witness_policy_remove = _change(
    lambda a, e, c: registry.remove_witness_policy(e, a.server, instance=c.instance),
    "witness policy of {args.server} removed; published from the next publication on")


@central_command(audit=False)
async def cmd_witness_policy_list(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    policies = await registry.list_witness_policies(engine)
    if args.json:
        out(json.dumps([policy_json(p) for p in policies], indent=2))
        return 0
    for policy in policies:
        for line in _policy_lines(policy):
            out(line)
    return 0


# ---------------------------------------------------------------------------------------------------------
# Configuration-signing keys and publication


@central_command
async def cmd_keys_add(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    info = await signingkeys.create_signing_key(engine, instance=central.instance, key_dir=central.key_dir,
                                                now=now(), active=not args.inactive)
    out(f"created configuration-signing key {info.number}: {info.keyid} ({info.key_path})")
    if args.inactive:
        out("it is anchored but does not sign: hand out the new anchor, then `gateway central keys activate`")
    else:
        out("it signs from the next publication on; hand out the new anchor (`gateway central anchor`)")
    return 0


@central_command
async def cmd_keys_activate(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    info = await signingkeys.activate_signing_key(engine, args.keyid)
    out(f"configuration-signing key {info.number} ({info.keyid}) signs from the next publication on")
    return 0


cmd_keys_list = _listing(signingkeys.list_signing_keys, lambda info: [
    f"{info.number}\t{info.keyid}\t{info.state}\tcreated {info.created_at:%Y-%m-%dT%H:%M:%SZ}\t{info.key_path}",
])


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


@central_command(audit=False)
async def cmd_anchor(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    data = await publisher.current_anchor(engine, central)
    try:
        write_public_file(Path(args.out), data)
    except OSError as e:
        raise GatewayError(f"anchor file {args.out} cannot be written: {e.strerror or e}") from e
    out(anchor_hash(data))
    return 0


@central_command(audit=False)
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
