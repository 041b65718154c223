"""The handlers of ``gateway pki ...``: the development PKI from the command line (I/O shell; the parser is
:mod:`gateway.cli.pki`).

Subcommands: ``init``, ``csr``, ``issue``, ``revoke``, ``list``, ``acme-eab``, ``serve``. Every one takes ``--dir``
(default: ``[pki] dir`` of the settings, ``certs``). See ``docs/pki.md`` for a walk-through.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from gateway.cli.common import settings_from_args
from gateway.cli.run import stop_on_signal
from gateway.dev.pki.ca import DevCA, parse_reason, parse_serial
from gateway.errors import PkiError
from gateway.settings import Settings
from gateway.trust.certprofile import CertKind, build_csr, parse_identity
from gateway.trust.keys import (
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


def cmd_init(args: argparse.Namespace) -> int:
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


def cmd_csr(args: argparse.Namespace) -> int:
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


def cmd_issue(args: argparse.Namespace) -> int:
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


def cmd_revoke(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    ca = DevCA.load(_dir(args, settings))
    record = ca.revoke(parse_serial(args.serial), reason=parse_reason(args.reason), now=_now())
    print(f"certificate {record.serial_hex} ({record.identity}) revoked at "
          f"{record.revoked_at.isoformat() if record.revoked_at else '?'}: {record.reason}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
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


def cmd_acme_eab(args: argparse.Namespace) -> int:
    from gateway.dev.pki.acme import issue_eab
    from gateway.files import write_private_text
    from gateway.identifiers import MemberId

    settings = settings_from_args(args)
    directory = _dir(args, settings)
    DevCA.load(directory)  # a CA is there
    member = MemberId.parse(args.member, encoded=False)
    key = issue_eab(directory, member)
    write_private_text(args.key_out, key.hmac_b64 + "\n")
    print(f"EAB key id (acme_eab_kid): {key.kid}")
    print(f"member: {member}")
    print(f"HMAC key written to {args.key_out} (mode 0600; acme_eab_key_file)")
    return 0


async def _serve(ca: DevCA, host: str, ocsp_port: int, tsa_port: int, validity: int, *, acme_port: int = -1,
                 acme_validity_days: float = 90.0, http01_port: int = 80) -> None:
    from gateway.dev.pki.acme import AcmeServer
    from gateway.dev.pki.http import start_pki_servers  # aiohttp only for this command

    acme = None
    if acme_port >= 0:
        acme = AcmeServer(ca, validity=timedelta(days=acme_validity_days), eab_dir=ca.directory)
    with stop_on_signal() as stop:
        try:
            servers = await start_pki_servers(ca, host, ocsp_port, tsa_port, ocsp_validity_seconds=validity,
                                              acme=acme, acme_port=max(acme_port, 0),
                                              http01_target=lambda name: (name, http01_port))
        except OSError as e:
            raise PkiError(f"cannot listen on {host}: {e.strerror or e}") from e
        try:
            print(f"OCSP responder: {servers.ocsp_url}", flush=True)
            print(f"TSA: {servers.tsa_url}", flush=True)
            if servers.acme_directory_url:
                print(f"ACME directory: {servers.acme_directory_url}", flush=True)
            await stop.wait()
        finally:
            await servers.close()


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    ca = DevCA.load(_dir(args, settings))
    pki = settings.pki
    asyncio.run(_serve(
        ca, args.host or pki.host,
        pki.ocsp_port if args.ocsp_port is None else args.ocsp_port,
        pki.tsa_port if args.tsa_port is None else args.tsa_port,
        pki.ocsp_validity_seconds, acme_port=pki.acme_port if args.acme_port is None else args.acme_port,
        acme_validity_days=pki.acme_validity_days, http01_port=pki.acme_http01_port,
    ))
    print("stopped", file=sys.stderr)
    return 0
