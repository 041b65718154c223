"""``gateway token ...``: the security server's software token (I/O shell; docs/tokens.md).

The token is ``[server] token_dir`` (or ``--dir``). Commands that need the private keys ask for the PIN:
``--pin-file FILE``, ``--pin-env VAR``, the settings' ``token_pin_file``/``token_pin_env``, or a prompt.
The CLI keeps no session: ``login`` checks the PIN (and clears the wrong-PIN count), ``logout`` has nothing
to forget; a running server logs in at start-up (and through the admin API).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from gateway.cli.common import settings_from_args
from gateway.errors import ConfigError, GatewayError
from gateway.globalconf.model import GlobalConf
from gateway.globalconf.updater import GlobalConfUpdater
from gateway.identifiers import MemberId, SecurityServerId
from gateway.settings import Settings
from gateway.token import model
from gateway.token.soft import SoftToken, read_pin
from gateway.trust import keys


def _now() -> datetime:
    return datetime.now(UTC)


def _token(args: argparse.Namespace, settings: Settings) -> SoftToken:
    directory = getattr(args, "dir", None) or settings.server.token_dir
    if not directory:
        raise ConfigError("no token directory: set [server] token_dir or pass --dir")
    return SoftToken(directory)


def _pin(args: argparse.Namespace, settings: Settings, *, confirm: bool = False) -> str:
    if args.pin_file or args.pin_env:
        return read_pin(pin_file=args.pin_file or "", pin_env=args.pin_env or "")
    s = settings.server
    if s.token_pin_file or s.token_pin_env:
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


def _run(args: argparse.Namespace, body: Callable[[SoftToken, Settings], Coroutine[Any, Any, int]]) -> int:
    settings = settings_from_args(args)
    return asyncio.run(body(_token(args, settings), settings))


async def _login(token: SoftToken, args: argparse.Namespace, settings: Settings) -> None:
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
    token = _token(args, settings)

    async def main() -> int:
        await SoftToken.init(token.dir, _pin(args, settings, confirm=True))
        print(f"token created in {token.dir}")
        return 0

    return asyncio.run(main())


def cmd_login(args: argparse.Namespace) -> int:
    async def body(token: SoftToken, settings: Settings) -> int:
        await _login(token, args, settings)
        print("PIN correct")
        return 0

    return _run(args, body)


def cmd_logout(args: argparse.Namespace) -> int:
    print("the CLI holds no token session; a running security server is logged out through its admin API")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    async def body(token: SoftToken, settings: Settings) -> int:
        state = await token.state()
        lock = state.lockout
        print(f"token {token.dir}: {len(state.keys)} keys, "
              f"{sum(len(k.certs) for k in state.keys)} certificates")
        print(f"  KDF argon2id t={state.kdf.time_cost} m={state.kdf.memory_kib} KiB p={state.kdf.parallelism}")
        locked = lock.locked_until is not None and lock.locked_until > _now()
        print(f"  wrong PINs in a row: {lock.failures}"
              + (f"; locked until {lock.locked_until.isoformat()}" if locked and lock.locked_until else ""))
        return 0

    return _run(args, body)


def cmd_keys(args: argparse.Namespace) -> int:
    async def body(token: SoftToken, settings: Settings) -> int:
        ocsp: dict[str, model.OcspState] = {}
        registered: set[str] | None = None
        if args.ocsp:
            conf = await _conf(settings)
            server = conf.server(_server_id(settings))
            registered = set(server.auth_certs) if server else set()
            ocsp = await _fetch_ocsp(await token.state(), conf)
        _print_reports(await token.report(now=_now(), ocsp=ocsp, registered=registered), args.json)
        return 0

    return _run(args, body)


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


def cmd_generate_key(args: argparse.Namespace) -> int:
    async def body(token: SoftToken, settings: Settings) -> int:
        await _login(token, args, settings)
        entry = await token.generate_key(args.usage, key_type=args.key_type, label=args.label, now=_now())
        print(f"generated {entry.key_type} key {entry.id} for {entry.usage} certificates")
        return 0

    return _run(args, body)


def cmd_csr(args: argparse.Namespace) -> int:
    async def body(token: SoftToken, settings: Settings) -> int:
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

    return _run(args, body)


def cmd_import_cert(args: argparse.Namespace) -> int:
    try:
        data = Path(args.file).read_bytes()
    except OSError as e:
        raise ConfigError(f"certificate file {args.file}: {e.strerror or e}") from e

    async def body(token: SoftToken, settings: Settings) -> int:
        members = [MemberId.parse(m, encoded=False) for m in args.member or ()]
        entry = await token.import_cert(data, server_id=_server_id(settings), ca_for=(await _conf(settings)).ca_for,
                                        members=members, now=_now())
        print(f"imported {entry.kind} certificate {entry.sha256} for {entry.identity} (inactive; "
              f"`gateway token activate {entry.sha256[:16]}` puts it to use)")
        return 0

    return _run(args, body)


def cmd_activate(args: argparse.Namespace) -> int:
    async def body(token: SoftToken, settings: Settings) -> int:
        entry = await token.activate(args.cert)
        print(f"{entry.kind} certificate {entry.sha256} is active")
        return 0

    return _run(args, body)


def cmd_deactivate(args: argparse.Namespace) -> int:
    async def body(token: SoftToken, settings: Settings) -> int:
        entry = await token.deactivate(args.cert)
        print(f"{entry.kind} certificate {entry.sha256} is inactive")
        return 0

    return _run(args, body)


def cmd_expiring(args: argparse.Namespace) -> int:
    async def body(token: SoftToken, settings: Settings) -> int:
        days = args.days if args.days is not None else settings.server.cert_expiry_warning_days
        found = model.expiring(await token.report(now=_now()), within_days=days)
        _print_reports(found, args.json)
        if not found and not args.json:
            print(f"no active certificate expires within {days} days")
        return 1 if found else 0

    return _run(args, body)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("token", help="software token: PIN, keys, CSRs, certificates")
    p.add_argument("-c", "--config", default=argparse.SUPPRESS, help="settings file (TOML)")
    p.add_argument("--dir", help="token directory (default: [server] token_dir)")
    p.add_argument("--pin-file", help="read the PIN from this file (mode 0600)")
    p.add_argument("--pin-env", help="read the PIN from this environment variable")
    sub = p.add_subparsers(dest="token_command", metavar="COMMAND", required=True)

    def cmd(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help, description=help)
        q.set_defaults(handler=handler)
        return q

    cmd("init", cmd_init, "create an empty token protected by a PIN")
    cmd("login", cmd_login, "check the PIN (clears the wrong-PIN count)")
    cmd("logout", cmd_logout, "nothing to do for the CLI (explains why)")
    cmd("status", cmd_status, "KDF parameters, keys, wrong-PIN count and lock")
    q = cmd("keys", cmd_keys, "list keys and certificates with expiry and use")
    q.add_argument("--ocsp", action="store_true", help="fetch OCSP status (uses the cached global configuration)")
    q.add_argument("--json", action="store_true")
    q = cmd("generate-key", cmd_generate_key, "generate a key for authentication or signing certificates")
    q.add_argument("--usage", required=True, choices=("auth", "sign"))
    q.add_argument("--key-type", default="ec-p256", choices=keys.KEY_TYPES)
    q.add_argument("--label", default="")
    q = cmd("csr", cmd_csr, "a CSR for a key; the identity comes from [server] id")
    q.add_argument("key", metavar="KEY_ID", help="key id or a unique prefix of at least 8 hex digits")
    q.add_argument("--member", help="for a signing key: the member (default: the server's owner)")
    q.add_argument("--name", help="organisation name in the subject")
    q.add_argument("--out", help="write the PEM here instead of standard output")
    q = cmd("import-cert", cmd_import_cert, "import a certificate issued for one of the token's keys")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--member", action="append", help="another member this server signs for (repeatable)")
    q = cmd("activate", cmd_activate, "put a certificate to use (the running server switches to it)")
    q.add_argument("cert", metavar="SHA256", help="fingerprint or a unique prefix of at least 8 hex digits")
    q = cmd("deactivate", cmd_deactivate, "retire a certificate")
    q.add_argument("cert", metavar="SHA256")
    q = cmd("expiring", cmd_expiring, "active certificates close to expiry (exit code 1 if any)")
    q.add_argument("--days", type=float, help="default: [server] cert_expiry_warning_days")
    q.add_argument("--json", action="store_true")
