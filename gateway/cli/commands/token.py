"""The handlers of ``gateway token ...``: the security server's software token (I/O shell; docs/tokens.md).

The token is ``[server] token_dir`` (or ``--dir``); a command is a body run by :func:`token_command` on it.
Commands that need the private keys ask for the PIN: ``--pin-file FILE``, ``--pin-env VAR``, the settings'
``token_pin_file``/``token_pin_env``, or a prompt. Commands that change the token (``init``, ``login``,
``generate-key``, ``csr``, ``import-cert``, ``activate``, ``deactivate``) are recorded in the admin audit log of
``[server] database_url`` (:func:`audited_token_command`). The parser is :mod:`gateway.cli.token`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import getpass
import json
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from gateway.cli.common import Handler, database_setting, settings_from_args
from gateway.errors import ConfigError, GatewayError
from gateway.globalconf.model import GlobalConf
from gateway.globalconf.updater import GlobalConfUpdater
from gateway.identifiers import MemberId, SecurityServerId
from gateway.settings import LEGACY_DEVICE_NAME, Pkcs11Device, Settings, pkcs11_devices
from gateway.token import model
from gateway.token.pkcs11 import Pkcs11Token
from gateway.token.soft import SoftToken, read_pin
from gateway.trust import keys
from gateway.witness import signer as witness_signer


def _now() -> datetime:
    return datetime.now(UTC)


AnyToken = SoftToken | Pkcs11Token


def _device(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "device", False)) or bool(getattr(args, "device_name", None))


def _device_spec(args: argparse.Namespace, settings: Settings) -> Pkcs11Device:
    """The device ``--device NAME`` names, or the only one of the settings for a bare ``--device``.

    Raises:
        ConfigError: no such device, no device at all, or several and no name.
    """
    devices = pkcs11_devices(settings.server, require_pin=False)
    names = ", ".join(d.name for d in devices) or "none"
    name = getattr(args, "device_name", None)
    if name:
        found = [d for d in devices if d.name == name]
        if not found:
            raise ConfigError(f"no PKCS#11 device named {name!r} in the settings (devices: {names})")
        return found[0]
    if not devices:
        raise ConfigError("no PKCS#11 device in the settings",
                          hint="set [server] pkcs11_library and pkcs11_token_label, or a [[server.pkcs11]] table")
    if len(devices) > 1:
        raise ConfigError(f"the settings have {len(devices)} PKCS#11 devices ({names}): name one with "
                          "`gateway token COMMAND --device NAME`")
    return devices[0]


def _token(args: argparse.Namespace, settings: Settings) -> AnyToken:
    if _device(args):
        spec = _device_spec(args, settings)
        return Pkcs11Token(spec.library, spec.token_label, sessions=1, name=spec.name)
    directory = getattr(args, "dir", None) or settings.server.token_dir
    if not directory:
        raise ConfigError("no token directory: set [server] token_dir or pass --dir")
    return SoftToken(directory)


def _pin(args: argparse.Namespace, settings: Settings, *, confirm: bool = False) -> str:
    if args.pin_file or args.pin_env:
        return read_pin(pin_file=args.pin_file or "", pin_env=args.pin_env or "")
    s = settings.server
    if _device(args):
        spec = _device_spec(args, settings)
        if spec.pin_file or spec.pin_env:
            legacy = spec.name == LEGACY_DEVICE_NAME and spec.library == s.pkcs11_library
            return read_pin(pin_file=spec.pin_file, pin_env=spec.pin_env,
                            setting="pkcs11_pin" if legacy else f"pkcs11 {spec.name!r} pin")
    if not _device(args) and (s.token_pin_file or s.token_pin_env):
        return read_pin(pin_file=s.token_pin_file, pin_env=s.token_pin_env)
    if not sys.stdin.isatty():
        raise ConfigError("no PIN: pass --pin-file or --pin-env (or set [server] token_pin_file)")
    pin = getpass.getpass("token PIN: ")
    if confirm and getpass.getpass("again: ") != pin:
        raise ConfigError("the two PINs differ")
    return pin


def _server_id(settings: Settings) -> SecurityServerId:
    try:
        return SecurityServerId.parse(settings.server.id)
    except GatewayError as e:
        raise ConfigError(f"[server] id: {e.message}") from e


async def _conf(settings: Settings) -> GlobalConf:
    updater = GlobalConfUpdater.from_settings(settings.globalconf)
    try:
        conf = updater.load_cached()
    finally:
        await updater.close()
    if conf is None:
        raise ConfigError("no cached global configuration to check certificates against",
                          hint="run `gateway server fetch-conf` (or start the security server once)")
    return conf


async def _audited(args: argparse.Namespace, settings: Settings, audit_as: str | None, target: str,
                   change: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """``change``, recorded in the audit log of ``[server] database_url`` when ``audit_as`` names it
    (:func:`gateway.cli.commands.audit.audited`; the database is opened first, so a command whose change
    cannot be audited changes nothing)."""
    if audit_as is None:
        return await change()
    from gateway.cli.commands.audit import audited
    from gateway.storage.db import open_database

    engine = await open_database(settings.server.database_url, where=database_setting(args, "server"))
    try:
        return await audited(engine, action=audit_as, target=target, command="token", change=change)
    finally:
        await engine.dispose()


def run_token(args: argparse.Namespace, body: Callable[[AnyToken, Settings], Coroutine[Any, Any, int]], *,
              audit_as: str | None = None, target: str = "") -> int:
    """Run ``body`` on the token of ``--dir`` or ``[server] token_dir``; its exit code. With ``audit_as`` (the
    admin API operation that makes the same change), the change or its refusal goes to the audit log.

    Raises:
        ConfigError: unusable settings, no token directory, a database that cannot be opened.
        GatewayError: whatever ``body`` raises (audited first).
    """
    settings = settings_from_args(args)
    token = _token(args, settings)
    if isinstance(token, SoftToken):
        soft = token
        return asyncio.run(_audited(args, settings, audit_as, target, lambda: body(soft, settings)))

    async def on_device(device: Pkcs11Token) -> int:
        # a device answers nothing before log-in: the PIN first, whatever the command
        try:
            await device.login(_pin(args, settings), now=_now())
            return await _audited(args, settings, audit_as, target, lambda: body(device, settings))
        finally:
            device.close()

    return asyncio.run(on_device(token))


Body = Callable[[argparse.Namespace, AnyToken, Settings], Coroutine[Any, Any, int]]


def token_command(body: Body) -> Handler:
    """Make a handler of ``body`` run by :func:`run_token`."""

    @functools.wraps(body)
    def handler(args: argparse.Namespace) -> int:
        return run_token(args, functools.partial(body, args))

    return handler


def audited_token_command(audit_as: str, *, target: str | None = None) -> Callable[[Body], Handler]:
    """Like :func:`token_command`, for a command that changes the token: audited as ``audit_as``, with the
    argument named ``target`` as the entry's target."""

    def decorate(body: Body) -> Handler:
        @functools.wraps(body)
        def handler(args: argparse.Namespace) -> int:
            return run_token(args, functools.partial(body, args), audit_as=audit_as,
                             target=str(getattr(args, target, "") or "") if target else "")

        return handler

    return decorate


async def _login(token: AnyToken, args: argparse.Namespace, settings: Settings) -> None:
    if isinstance(token, SoftToken):  # (a device is logged in by run_token already)
        await token.login(_pin(args, settings), now=_now())


def _print_reports(reports: list[model.CertReport], as_json: bool) -> None:
    if as_json:
        json.dump([r.to_dict() for r in reports], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for r in reports:
        if r.sha256 is None:
            print(f"key {r.key_id[:16]}  {r.usage:<4} {r.key_type:<8} {r.label!r}  no certificate")
            continue
        print(f"key {r.key_id[:16]}  {r.usage:<4} {r.key_type:<8} cert {r.sha256[:16]}  {r.state:<8}"
              f"{' in use' if r.in_use else '       '}  {r.identity}  expires "
              f"{r.not_after.isoformat() if r.not_after else '-'} ({r.days_left or 0:.0f} days)  ocsp {r.ocsp}")


# ---- commands ----------------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if _device(args):
        raise ConfigError("a PKCS#11 token is initialised with the device's own tools (for SoftHSM2: "
                          "softhsm2-util --init-token --free --label LABEL)")
    token = _token(args, settings)
    assert isinstance(token, SoftToken)

    pin = _pin(args, settings, confirm=True)

    async def main() -> int:
        await SoftToken.init(token.dir, pin)
        print(f"token created in {token.dir}")
        return 0

    return asyncio.run(_audited(args, settings, "initToken", str(token.dir), main))


@audited_token_command("loginToken")
async def cmd_login(args: argparse.Namespace, token: AnyToken, settings: Settings) -> int:
    await _login(token, args, settings)
    print("PIN correct")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    print("the CLI holds no token session; a running security server is logged out through its admin API")
    return 0


@token_command
async def cmd_status(args: argparse.Namespace, token: AnyToken, settings: Settings) -> int:
    state = await token.state()
    if isinstance(token, Pkcs11Token):
        status = token.status()
        print(f"{status.name}: PKCS#11 token {status.token_label!r} ({status.library}): {status.state}, "
              f"{len(state.keys)} keys, "
              f"{sum(len(k.certs) for k in state.keys)} certificates")
        return 0
    lock = state.lockout
    print(f"token {token.dir}: {len(state.keys)} keys, "
          f"{sum(len(k.certs) for k in state.keys)} certificates")
    print(f"  KDF argon2id t={state.kdf.time_cost} m={state.kdf.memory_kib} KiB p={state.kdf.parallelism}")
    locked = lock.locked_until is not None and lock.locked_until > _now()
    print(f"  wrong PINs in a row: {lock.failures}"
          + (f"; locked until {lock.locked_until.isoformat()}" if locked and lock.locked_until else ""))
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    """Every PKCS#11 device of the settings with its state: each is logged in to with the PIN its settings
    name (a device answers nothing before log-in); exit code 1 if any is unavailable."""
    settings = settings_from_args(args)
    devices = pkcs11_devices(settings.server)

    async def one(spec: Pkcs11Device) -> tuple[dict[str, Any], bool]:
        token = Pkcs11Token(spec.library, spec.token_label, sessions=1, name=spec.name)
        try:
            legacy = spec.name == LEGACY_DEVICE_NAME and spec.library == settings.server.pkcs11_library
            pin = read_pin(pin_file=spec.pin_file, pin_env=spec.pin_env,
                           setting="pkcs11_pin" if legacy else f"pkcs11 {spec.name!r} pin")
            await token.login(pin, now=_now())
            state = await token.state()
            row = {**token.status().to_dict(), "keys": len(state.keys),
                   "certificates": sum(len(k.certs) for k in state.keys)}
            return row, True
        except GatewayError as e:
            return {**token.status().to_dict(), "state": "unavailable", "error": model.describe_error(e)}, False
        finally:
            token.close()

    async def main() -> int:
        rows = [await one(d) for d in devices]
        if args.json:
            json.dump([r for r, _ok in rows], sys.stdout, indent=2)
            sys.stdout.write("\n")
        elif not rows:
            print("no PKCS#11 device in the settings")
        for row, ok in [] if args.json else rows:
            tail = f"{row['keys']} keys, {row['certificates']} certificates" if ok else row["error"]
            print(f"{row['name']}: PKCS#11 token {row['token_label']!r} ({row['library']}): {row['state']}, {tail}")
        return 0 if all(ok for _r, ok in rows) else 1

    return asyncio.run(main())


@token_command
async def cmd_keys(args: argparse.Namespace, token: AnyToken, settings: Settings) -> int:
    ocsp: dict[str, model.OcspState] = {}
    registered: set[str] | None = None
    if args.ocsp:
        conf = await _conf(settings)
        server = conf.server(_server_id(settings))
        registered = set(server.auth_certs) if server else set()
        ocsp = await _fetch_ocsp(await token.state(), conf)
    _print_reports(await token.report(now=_now(), ocsp=ocsp, registered=registered), args.json)
    return 0


async def _fetch_ocsp(state: model.TokenState, conf: GlobalConf) -> dict[str, model.OcspState]:
    import aiohttp

    from gateway.proxy.ocspcache import OcspCache

    out: dict[str, model.OcspState] = {}
    async with aiohttp.ClientSession() as session:
        cache = OcspCache(session, clock=_now)
        for k in state.keys:
            for c in k.certs:
                cert = c.certificate
                ca = conf.ca_for(cert)
                if ca is None:
                    out[c.sha256] = "unavailable"
                    continue
                try:
                    out[c.sha256] = (await cache.status(cert, ca, max_age_seconds=conf.ocsp_freshness_seconds)).status
                except GatewayError:
                    out[c.sha256] = "unavailable"
    return out


@audited_token_command("generateKey", target="usage")
async def cmd_generate_key(args: argparse.Namespace, token: AnyToken, settings: Settings) -> int:
    await _login(token, args, settings)
    if args.usage == "witness":  # docs/witness.md section 2
        entry = await token.generate_witness_key(label=args.label or "witness", now=_now())
        print(f"generated ed25519 witness key {entry.id}")
        print(await _witness_vkey(token, settings))
        return 0
    entry = await token.generate_key(args.usage, key_type=args.key_type, label=args.label, now=_now())
    print(f"generated {entry.key_type} key {entry.id} for {entry.usage} certificates")
    return 0


async def _witness_vkey(token: AnyToken | None, settings: Settings) -> str:
    name = witness_signer.default_name(settings.server.id, settings.witness.name)
    signer = await witness_signer.load_signer(
        name=name, token=token if isinstance(token, SoftToken) else None, state_dir=settings.server.state_dir,
        create=False, now=_now(), device=token if isinstance(token, Pkcs11Token) else None)
    if signer is None:
        raise ConfigError("there is no witness key yet",
                          hint="`gateway token generate-key --usage witness`, or start the server with "
                               "[witness] enabled = true (it makes one)")
    return signer.key.vkey


def cmd_witness_key(args: argparse.Namespace) -> int:
    """Print the witness's vkey (docs/witness.md section 2): from the device (``--device``), the software token
    (the PIN is asked for) or, with plain key files, from ``<state_dir>/witness.key``."""
    settings = settings_from_args(args)
    if _device(args) or getattr(args, "dir", None) or settings.server.token_dir:

        async def body(token: AnyToken, settings: Settings) -> int:
            await _login(token, args, settings)
            print(await _witness_vkey(token, settings))
            return 0

        return run_token(args, body)

    async def main() -> int:
        print(await _witness_vkey(None, settings))
        return 0

    return asyncio.run(main())


@audited_token_command("createCsr", target="key")
async def cmd_csr(args: argparse.Namespace, token: AnyToken, settings: Settings) -> int:
    await _login(token, args, settings)
    member = MemberId.parse(args.member, encoded=False) if args.member else None
    csr = await token.csr(args.key, server_id=_server_id(settings), member=member, name=args.name)
    pem = csr.public_bytes(serialization.Encoding.PEM)
    if args.out:
        keys.write_public_file(args.out, pem)
        print(f"CSR written to {args.out}")
    else:
        sys.stdout.write(pem.decode("ascii"))
    return 0


def cmd_import_cert(args: argparse.Namespace) -> int:
    try:
        data = Path(args.file).read_bytes()
    except OSError as e:
        raise ConfigError(f"certificate file {args.file}: {e.strerror or e}") from e

    async def body(token: AnyToken, settings: Settings) -> int:
        members = [MemberId.parse(m, encoded=False) for m in args.member or ()]
        entry = await token.import_cert(data, server_id=_server_id(settings), ca_for=(await _conf(settings)).ca_for,
                                        members=members, now=_now())
        print(f"imported {entry.kind} certificate {entry.sha256} for {entry.identity} (inactive; "
              f"`gateway token activate {entry.sha256[:16]}` puts it to use)")
        return 0

    return run_token(args, body, audit_as="importCertificate", target=args.file)


@audited_token_command("activateCertificate", target="cert")
async def cmd_activate(args: argparse.Namespace, token: AnyToken, settings: Settings) -> int:
    entry = await token.activate(args.cert)
    print(f"{entry.kind} certificate {entry.sha256} is active")
    return 0


@audited_token_command("deactivateCertificate", target="cert")
async def cmd_deactivate(args: argparse.Namespace, token: AnyToken, settings: Settings) -> int:
    entry = await token.deactivate(args.cert)
    print(f"{entry.kind} certificate {entry.sha256} is inactive")
    return 0


@token_command
async def cmd_expiring(args: argparse.Namespace, token: AnyToken, settings: Settings) -> int:
    days = args.days if args.days is not None else settings.server.cert_expiry_warning_days
    found = model.expiring(await token.report(now=_now()), within_days=days)
    _print_reports(found, args.json)
    if not found and not args.json:
        print(f"no active certificate expires within {days} days")
    return 1 if found else 0
