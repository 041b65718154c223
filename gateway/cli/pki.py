"""``gateway pki ...``: the development PKI from the command line (I/O shell).

Subcommands: ``init``, ``csr``, ``issue``, ``revoke``, ``list``, ``serve``. Every one takes ``--dir``
(default: ``[pki] dir`` of the settings, ``certs``). See ``docs/pki.md`` for a walk-through.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from gateway.cli.common import settings_from_args
from gateway.cli.run import stop_on_signal
from gateway.dev.pki.ca import REASONS, DevCA, parse_reason, parse_serial
from gateway.errors import PkiError
from gateway.settings import Settings
from gateway.trust.certprofile import CERT_KINDS, CertKind, build_csr, parse_identity
from gateway.trust.keys import (
    KEY_TYPES,
    cert_sha256_hex,
    generate_private_key,
    write_private_key,
    write_public_file,
)


def _now() -> datetime:
    return datetime.now(UTC)


def _dir(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.dir or settings.pki.dir)


def _write_public(path: Path, data: bytes) -> None:
    try:
        write_public_file(path, data)
    except OSError as e:
        raise PkiError(f"{path} cannot be written: {e.strerror or e}") from e



def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise PkiError(f"{what} {path} cannot be read: {e.strerror or e}") from e


def _cmd_init(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    directory = _dir(args, settings)
    ocsp_url = args.ocsp_url if args.ocsp_url is not None else (
        f"http://{settings.pki.host}:{settings.pki.ocsp_port}"
    )
    try:
        ca = DevCA.init(
            directory, name=args.name or settings.pki.ca_name, now=_now(), ocsp_url=ocsp_url or None
        )
    except OSError as e:
        raise PkiError(f"cannot write the CA to {directory}: {e.strerror or e}") from e
    print(f"development CA {ca.name!r} created in {directory}")
    print(f"  CA certificate:   {directory / 'ca.pem'}  sha256 {cert_sha256_hex(ca.ca_cert)}")
    print(f"  OCSP responder:   {directory / 'ocsp.pem'}")
    print(f"  TSA certificate:  {directory / 'tsa.pem'}")
    return 0


def _cmd_csr(args: argparse.Namespace) -> int:
    kind: CertKind = args.kind
    identity = parse_identity(kind, args.identity)
    key_out = Path(args.key_out)
    if key_out.exists():
        raise PkiError(f"{key_out} already exists; refusing to overwrite a private key")
    key = generate_private_key(args.key_type)
    csr = build_csr(key, identity, kind=kind, name=args.name)
    try:
        write_private_key(key_out, key)
    except OSError as e:
        raise PkiError(f"{key_out} cannot be written: {e.strerror or e}") from e
    _write_public(Path(args.out), csr.public_bytes(serialization.Encoding.PEM))
    print(f"{kind} key written to {key_out} (mode 0600), CSR for {identity.typed()} to {args.out}")
    return 0


def _cmd_issue(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    kind: CertKind = args.kind
    identity = parse_identity(kind, args.identity)
    ca = DevCA.load(_dir(args, settings))
    cert = ca.issue(
        _read(args.csr, "CSR file"), kind=kind, expected_identity=identity, now=_now(),
        validity_days=args.days or settings.pki.cert_validity_days,
    )
    _write_public(Path(args.out), cert.public_bytes(serialization.Encoding.PEM))
    print(f"issued {kind} certificate {cert.serial_number:X} for {identity.typed()} -> {args.out}")
    print(f"  sha256 {cert_sha256_hex(cert)}")
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    ca = DevCA.load(_dir(args, settings))
    record = ca.revoke(parse_serial(args.serial), reason=parse_reason(args.reason), now=_now())
    print(f"certificate {record.serial_hex} ({record.identity}) revoked at "
          f"{record.revoked_at.isoformat() if record.revoked_at else '?'}: {record.reason}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    records = DevCA.load(_dir(args, settings)).list()
    if args.json:
        out = [{k: v for k, v in r.to_json().items() if k != "pem"} for r in records]
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'SERIAL':<34} {'KIND':<4} {'STATUS':<7} {'NOT AFTER':<20} IDENTITY")
    for r in records:
        not_after = r.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"{r.serial_hex:<34} {r.kind:<4} {r.status:<7} {not_after:<20} {r.identity}")
    return 0


async def _serve(ca: DevCA, host: str, ocsp_port: int, tsa_port: int, validity: int) -> None:
    from gateway.dev.pki.http import start_pki_servers  # aiohttp only for this command

    with stop_on_signal() as stop:
        try:
            servers = await start_pki_servers(ca, host, ocsp_port, tsa_port, ocsp_validity_seconds=validity)
        except OSError as e:
            raise PkiError(f"cannot listen on {host}: {e.strerror or e}") from e
        try:
            print(f"OCSP responder: {servers.ocsp_url}", flush=True)
            print(f"TSA: {servers.tsa_url}", flush=True)
            await stop.wait()
        finally:
            await servers.close()


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    ca = DevCA.load(_dir(args, settings))
    pki = settings.pki
    asyncio.run(_serve(
        ca, args.host or pki.host,
        pki.ocsp_port if args.ocsp_port is None else args.ocsp_port,
        pki.tsa_port if args.tsa_port is None else args.tsa_port,
        pki.ocsp_validity_seconds,
    ))
    print("stopped", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gateway pki`` and its subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", help="the CA directory (default: [pki] dir, 'certs')")
    pki = subparsers.add_parser("pki", help="development PKI: CA, OCSP responder, TSA")
    sub = pki.add_subparsers(dest="pki_command", metavar="PKI_COMMAND", required=True)

    p = sub.add_parser("init", parents=[common], help="create the development CA, OCSP and TSA certificates")
    p.add_argument("--name", help="CA name (default: [pki] ca_name)")
    p.add_argument("--ocsp-url", help="OCSP URL put in issued certificates ('' for none; "
                                      "default http://[pki] host:ocsp_port)")
    p.set_defaults(handler=_cmd_init)

    p = sub.add_parser("csr", help="generate a key and a certificate signing request following the profile")
    p.add_argument("--kind", required=True, choices=CERT_KINDS)
    p.add_argument("--identity", required=True,
                   help="INSTANCE/CLASS/MEMBER/SERVER for auth, INSTANCE/CLASS/MEMBER for sign")
    p.add_argument("--name", help="organisation name (subject O)")
    p.add_argument("--key-type", default="ec-p256", choices=KEY_TYPES)
    p.add_argument("--key-out", required=True, help="private key file to create (mode 0600)")
    p.add_argument("--out", required=True, help="CSR file (PEM)")
    p.set_defaults(handler=_cmd_csr)

    p = sub.add_parser("issue", parents=[common], help="issue a certificate from a CSR")
    p.add_argument("--kind", required=True, choices=CERT_KINDS)
    p.add_argument("--csr", required=True, help="CSR file (PEM or DER)")
    p.add_argument("--identity", required=True, help="the identity the certificate must name")
    p.add_argument("--out", required=True, help="certificate file to write (PEM)")
    p.add_argument("--days", type=int, help="validity in days (default: [pki] cert_validity_days)")
    p.set_defaults(handler=_cmd_issue)

    p = sub.add_parser("revoke", parents=[common], help="revoke an issued certificate")
    p.add_argument("serial", help="serial number in hex, as 'gateway pki list' prints it")
    p.add_argument("--reason", default="unspecified", choices=REASONS)
    p.set_defaults(handler=_cmd_revoke)

    p = sub.add_parser("list", parents=[common], help="list issued certificates and their status")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_list)

    p = sub.add_parser("serve", parents=[common], help="run the OCSP responder and the TSA until stopped")
    p.add_argument("--host", help="listen address (default: [pki] host)")
    p.add_argument("--ocsp-port", type=int, help="OCSP port (default: [pki] ocsp_port; 0 picks one)")
    p.add_argument("--tsa-port", type=int, help="TSA port (default: [pki] tsa_port; 0 picks one)")
    p.set_defaults(handler=_cmd_serve)
