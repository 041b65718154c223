"""The handlers of ``gateway server ...``: a security server's keys, certificates and the server itself (I/O
shell; the parser, with what each command does, is :mod:`gateway.cli.server`).

Keys and CSRs go to ``[server] state_dir``; ``serve`` runs the proxies until SIGINT/SIGTERM; the management
requests (``register`` and the like) are signed with the authentication key and sent to the central server.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization

from gateway.cli.common import database_setting, settings_from_args
from gateway.cli.run import run, serve_until_signal, stop_on_signal
from gateway.errors import ConfigError, GlobalConfError, PkiError
from gateway.files import private_dir
from gateway.identifiers import SecurityServerId
from gateway.sdnotify import notify
from gateway.server.keyfiles import KeyFiles
from gateway.server.runtime import SecurityServer
from gateway.settings import Settings
from gateway.storage.db import open_database
from gateway.trust import certprofile, keys

if TYPE_CHECKING:
    from gateway.central.management import RequestType
    from gateway.identifiers import ClientId


def _files(args: argparse.Namespace) -> tuple[SecurityServerId, KeyFiles]:
    settings = settings_from_args(args)
    try:
        server_id = SecurityServerId.parse(settings.server.id)
    except PkiError as e:  # pragma: no cover - IdentifierError is a RequestError, not a PkiError
        raise ConfigError(str(e)) from e
    return server_id, KeyFiles(dir=Path(settings.server.state_dir))


def cmd_init(args: argparse.Namespace) -> int:
    server_id, files = _files(args)
    private_dir(files.dir)
    plan: tuple[tuple[certprofile.CertKind, certprofile.Identity, Path], ...] = (
        ("auth", server_id, files.auth_key), ("sign", server_id.owner, files.sign_key),
    )
    for kind, identity, key_path in plan:
        if key_path.exists() and not args.force:
            raise ConfigError(f"{key_path} exists", hint="use --force to replace the keys")
        key = keys.generate_private_key(args.key_type)
        csr = certprofile.build_csr(key, identity, kind=kind, name=args.name)
        keys.write_private_key(key_path, key)
        csr_path = files.dir / f"{kind}.csr"
        keys.write_public_file(csr_path, csr.public_bytes(serialization.Encoding.PEM))
        print(f"{kind} key {key_path}, CSR {csr_path} for {identity}")
    return 0


def cmd_import_cert(args: argparse.Namespace) -> int:
    _server_id, files = _files(args)
    cert = keys.load_certificate(Path(args.file).read_bytes())
    kind, identity = certprofile.identity_of(cert)
    key_path, cert_path = (files.auth_key, files.auth_cert) if kind == "auth" else (files.sign_key, files.sign_cert)
    key = keys.read_private_key(key_path)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise PkiError(f"the {kind} certificate for {identity} does not match the key in {key_path}")
    keys.write_public_file(cert_path, keys.cert_pem(cert).encode())
    print(f"installed {kind} certificate for {identity} ({keys.cert_sha256_hex(cert)}) as {cert_path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    worker = getattr(args, "worker", None)
    if worker is None and settings.server.workers > 1:
        return _supervise(args, settings)
    if worker is not None and getattr(args, "channel", None) is None:
        raise ConfigError("--worker is set by the supervisor of several workers, with --channel")
    server = SecurityServer(settings, clock=lambda: datetime.now(UTC), worker=worker or 0)
    if worker is not None:
        return run(_serve_worker(server, args.channel))

    async def start() -> None:
        await server.start()
        print(f"security server {server.server_id}: clients {server.client_url}"
              f"{' and ' + server.client_https_url if server.client_https_url else ''}, "
              f"peers {server.server_address}"
              f"{', admin ' + server.admin_url if server.admin_url else ''}", flush=True)
        if server.ops_url:
            print(f"security server {server.server_id}: ops (/metrics, /healthz, /readyz) {server.ops_url}",
                  flush=True)
        notify("READY=1")  # Type=notify units (deploy/systemd/): every port listens now

    async def stop() -> None:
        notify("STOPPING=1")
        await server.stop()

    return run(serve_until_signal(start, stop))


def _announce(line: str) -> None:
    """The supervisor's lines; the one saying that every worker listens also tells systemd (Type=notify)."""
    print(line, flush=True)
    if line.startswith("security server "):
        notify("READY=1")


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    """``[server] workers`` > 1: run them, supervised, until SIGINT/SIGTERM (:mod:`gateway.server.workers`)."""
    from gateway.server.workers import Supervisor, worker_command

    async def main() -> int:
        with stop_on_signal() as stop:
            supervisor = Supervisor(settings, command=worker_command(getattr(args, "config", None)),
                                    announce=_announce)
            try:
                return await supervisor.run(stop)
            finally:
                notify("STOPPING=1")

    return asyncio.run(main())


async def _serve_worker(server: SecurityServer, channel: int) -> int:
    """One worker of several: start, tell the supervisor, serve until SIGTERM or until the supervisor is gone."""
    from gateway.server.workers import report_ready

    with stop_on_signal() as stop:
        try:
            await server.start()
            gone = await report_ready(channel, {
                "server": str(server.server_id), "origin": server.origin, "worker": server.worker,
                "client_url": server.client_url, "client_https_url": server.client_https_url,
                "server_address": server.server_address, "admin_url": server.admin_url,
                "ops_url": server.ops_url,
            })
            gc.freeze()  # as serve_until_signal: what starting made lives as long as the process
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(gone.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
        finally:
            await server.stop()
    return 0


def cmd_fetch_conf(args: argparse.Namespace) -> int:
    from gateway.globalconf.updater import GlobalConfUpdater

    settings = settings_from_args(args)

    async def main() -> int:
        updater = GlobalConfUpdater.from_settings(settings.globalconf)
        try:
            updater.load_cached()
            result = await updater.refresh()
        finally:
            await updater.close()
        if not result.accepted:
            raise GlobalConfError(
                "no global configuration could be downloaded and verified against the anchor "
                f"{settings.globalconf.anchor}: " + ("; ".join(result.errors) or "the anchor lists no download URL"),
            )
        print(f"global configuration version {result.version} from {result.url} "
              f"{'saved in' if result.changed else 'unchanged in'} {updater.cache_path}")
        return 0

    return asyncio.run(main())


def _management(
    args: argparse.Namespace, type: RequestType, *, client: ClientId | None = None,
    auth_cert_sha256: str | None = None,
) -> int:
    from gateway.server import regclient
    from gateway.token.soft import SoftToken, read_pin

    settings = settings_from_args(args)

    async def main() -> int:
        now = datetime.now(UTC)
        token = None
        if settings.server.token_dir:
            token = SoftToken(settings.server.token_dir)
            s = settings.server
            await token.login(read_pin(pin_file=s.token_pin_file, pin_env=s.token_pin_env), now=now)
        key, cert = await regclient.auth_key_and_cert(settings, token=token, cert_sha256=args.cert,
                                                      newest=type == "auth_cert_reg", now=now)
        record = await regclient.send(settings, type, key=key, cert=cert, now=now, url=args.central,
                                      client=client, auth_cert_sha256=auth_cert_sha256)
        print(f"{type} request {record.get('id')} is {record.get('state')} at the central server "
              f"(certificate {keys.cert_sha256_hex(cert)[:16]}...)")
        return 0

    return asyncio.run(main())


def cmd_register(args: argparse.Namespace) -> int:
    return _management(args, "auth_cert_reg")


def cmd_register_client(args: argparse.Namespace) -> int:
    from gateway.identifiers import parse_client

    return _management(args, "client_reg", client=parse_client(args.client, encoded=False))


def cmd_unregister_client(args: argparse.Namespace) -> int:
    from gateway.identifiers import parse_client

    return _management(args, "client_deletion", client=parse_client(args.client, encoded=False))


def cmd_delete_auth_cert(args: argparse.Namespace) -> int:
    return _management(args, "auth_cert_deletion", auth_cert_sha256=args.fingerprint)


def _passphrase(args: argparse.Namespace) -> str | None:
    """The passphrase named by ``--passphrase-env`` or ``--passphrase-file`` (never given inline), or None.

    Raises:
        ConfigError: the variable is unset or empty, or the file cannot be read or is empty.
    """
    if args.passphrase_env:
        value = os.environ.get(args.passphrase_env, "")
        if not value:
            raise ConfigError(f"--passphrase-env {args.passphrase_env}: the variable is unset or empty")
        return value
    if args.passphrase_file:
        try:
            value = Path(args.passphrase_file).read_text().rstrip("\r\n")
        except OSError as e:
            raise ConfigError(f"--passphrase-file {args.passphrase_file}: {e.strerror or e}") from e
        if not value:
            raise ConfigError(f"--passphrase-file {args.passphrase_file} is empty")
        return value
    return None


def cmd_backup(args: argparse.Namespace) -> int:
    from gateway.server.backup import backup

    settings = settings_from_args(args)
    path = getattr(args, "config", None) or os.environ.get("GATEWAY_CONFIG")
    if not path:
        raise ConfigError("backup needs the settings file of the server (-c FILE): it is part of the backup")
    passphrase = _passphrase(args)

    async def main() -> int:
        engine = await open_database(settings.server.database_url, where=database_setting(args, "server"))
        try:
            summary = await backup(settings, Path(path), engine, Path(args.out), passphrase=passphrase,
                                   now=datetime.now(UTC))
        finally:
            await engine.dispose()
        print(f"backup of {summary.line()} -> {args.out}")
        return 0

    return asyncio.run(main())


def cmd_restore(args: argparse.Namespace) -> int:
    from gateway.server.backup import open_archive, restore

    settings = settings_from_args(args)
    opened = open_archive(Path(args.archive), passphrase=_passphrase(args))

    async def main() -> int:
        engine = await open_database(settings.server.database_url, where=database_setting(args, "server"))
        try:
            summary = await restore(settings, engine, opened, force=args.force,
                                    settings_out=Path(args.settings_out) if args.settings_out else None)
        finally:
            await engine.dispose()
        print(f"restored {summary.line()} from {args.archive}")
        return 0

    return asyncio.run(main())
