"""Configuration-signing keys of the central server: create, list, retire, load for signing (I/O).

Each key is an ECDSA P-256 key in a PKCS#8 PEM file (mode 0600) under ``[central] key_dir``, with a
self-signed certificate ``CN=<instance> configuration signing key N``. The certificate is only a container
for the public key (as in X-Road's anchors): clients trust it because the anchor lists it, not because of
who issued it. Its ``keyid`` is the hex SHA-256 of the certificate's DER, as in the envelope and anchor.

A key is ``inactive`` (generated and listed in the anchor, not signing yet), ``active`` (it signs every
publication and is listed in the anchor) or ``retired`` (kept for the record, never used again). Rollover
(docs/globalconf.md, "Key rollover"): add a key (active at once, or inactive and activated once the new anchor
is out), so that two keys are anchored; hand out the new anchor; retire the old key. The last active key cannot
be retired.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from gateway.central import models as m
from gateway.central.models import KeyState
from gateway.errors import ConfigError, Conflict, NotFound, PkiError, RequestError
from gateway.trust.keys import (
    PrivateKey,
    cert_pem,
    cert_sha256_hex,
    generate_private_key,
    load_certificate,
    read_private_key,
    write_private_key,
)

CERT_VALIDITY = timedelta(days=3650)  # the certificate only carries the key; rollover, not expiry, ends it
MIN_KEYID_PREFIX = 8  # hex digits; shortest keyid prefix the CLI accepts for `keys retire`


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKeyInfo:
    keyid: str  # hex SHA-256 of the certificate (DER)
    number: int
    certificate_pem: str
    key_path: str
    state: KeyState
    created_at: datetime
    retired_at: datetime | None

    @property
    def certificate(self) -> x509.Certificate:
        return load_certificate(self.certificate_pem.encode("ascii"))


def _info(row: m.SigningKey) -> SigningKeyInfo:
    return SigningKeyInfo(
        keyid=row.keyid, number=row.number, certificate_pem=row.certificate_pem, key_path=row.key_path,
        state=cast(KeyState, row.state), created_at=row.created_at, retired_at=row.retired_at,
    )


def make_signing_certificate(
    key: PrivateKey, *, instance: str, number: int, now: datetime
) -> x509.Certificate:
    """The self-signed certificate of configuration-signing key ``number`` (pure)."""
    common_name = f"{instance} configuration signing key {number}"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = now.replace(microsecond=0)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


async def create_signing_key(
    engine: AsyncEngine, *, instance: str, key_dir: str | Path, now: datetime, active: bool = True
) -> SigningKeyInfo:
    """Create a new configuration-signing key: ``active`` (from the next publication on it signs too), or
    inactive (listed in the anchor, signing once :func:`activate_signing_key` is called).

    Raises:
        ConfigError: the key file cannot be written under ``key_dir``.
        RequestError: 409 if another process created a key with the same number at the same moment.
    """
    async with AsyncSession(engine) as s:
        last = await s.scalar(sa.select(sa.func.max(m.SigningKey.number)))
    number = (last or 0) + 1
    key = generate_private_key("ec-p256")
    cert = make_signing_certificate(key, instance=instance, number=number, now=now)
    keyid = cert_sha256_hex(cert)
    path = (Path(key_dir) / f"conf-signing-key-{number}-{keyid[:16]}.pem").resolve()
    try:
        await asyncio.to_thread(write_private_key, path, key)
    except OSError as e:
        raise ConfigError(
            f"configuration-signing key file {path} cannot be written: {e.strerror or e}",
            hint="check [central] key_dir",
        ) from e
    row = m.SigningKey(
        number=number, keyid=keyid, certificate_pem=cert_pem(cert), key_path=str(path),
        state="active" if active else "inactive",
        created_at=now, retired_at=None,
    )
    try:
        async with AsyncSession(engine, expire_on_commit=False) as s, s.begin():
            s.add(row)
    except IntegrityError as e:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise Conflict(
            f"configuration-signing key number {number} was created concurrently; try again"
        ) from e
    return _info(row)


async def list_signing_keys(engine: AsyncEngine) -> tuple[SigningKeyInfo, ...]:
    """All configuration-signing keys (active and retired), oldest first."""
    async with AsyncSession(engine) as s:
        rows = await s.scalars(sa.select(m.SigningKey).order_by(m.SigningKey.number))
        return tuple(_info(r) for r in rows)


async def active_signing_keys(engine: AsyncEngine) -> tuple[SigningKeyInfo, ...]:
    """The keys that sign publications and appear in the anchor, oldest first."""
    return tuple(k for k in await list_signing_keys(engine) if k.state == "active")


async def ensure_signing_key(
    engine: AsyncEngine, *, instance: str, key_dir: str | Path, now: datetime
) -> SigningKeyInfo | None:
    """Create the first configuration-signing key if there is no active one; return it, or None.

    Raises:
        ConfigError: as :func:`create_signing_key`.
    """
    if await active_signing_keys(engine):
        return None
    return await create_signing_key(engine, instance=instance, key_dir=key_dir, now=now)


async def _key_row(s: AsyncSession, keyid: str) -> m.SigningKey:
    prefix = keyid.strip().lower()
    if len(prefix) < MIN_KEYID_PREFIX:
        raise RequestError(f"keyid {keyid!r} is too short; give at least {MIN_KEYID_PREFIX} hex digits")
    rows = list(await s.scalars(
        sa.select(m.SigningKey).where(m.SigningKey.keyid.startswith(prefix, autoescape=True))
    ))
    if not rows:
        raise NotFound(f"no configuration-signing key has keyid {keyid!r}")
    if len(rows) > 1:
        raise RequestError(f"keyid prefix {keyid!r} matches {len(rows)} keys; give more digits")
    return rows[0]


async def activate_signing_key(engine: AsyncEngine, keyid: str) -> SigningKeyInfo:
    """Let an inactive key sign from the next publication on (given as for :func:`retire_signing_key`).

    Raises:
        RequestError: a prefix that is too short or ambiguous; 404 if no key matches; 409 if it is not inactive.
    """
    async with AsyncSession(engine, expire_on_commit=False) as s, s.begin():
        row = await _key_row(s, keyid)
        if row.state != "inactive":
            raise Conflict(f"configuration-signing key {row.keyid} is {row.state}, not inactive")
        row.state = "active"
    return _info(row)


async def retire_signing_key(engine: AsyncEngine, keyid: str, *, now: datetime) -> SigningKeyInfo:
    """Stop signing with a key, or drop an inactive one (given by its keyid or a unique prefix of at least 8
    hex digits).

    Raises:
        RequestError: a prefix that is too short or ambiguous; 404 if no key matches; 409 if it is retired
            already or is the last active key.
    """
    async with AsyncSession(engine, expire_on_commit=False) as s, s.begin():
        row = await _key_row(s, keyid)
        if row.state == "retired":
            raise Conflict(f"configuration-signing key {row.keyid} is already retired")
        active = await s.scalar(
            sa.select(sa.func.count()).select_from(m.SigningKey).where(m.SigningKey.state == "active")
        )
        if row.state == "active" and (active or 0) <= 1:
            raise Conflict(
                f"configuration-signing key {row.keyid} is the only active key and cannot be retired; "
                "add a new key first (`gateway central keys add`)"
            )
        row.state = "retired"
        row.retired_at = now
    return _info(row)


def _load_signer(info: SigningKeyInfo) -> tuple[PrivateKey, x509.Certificate]:
    try:
        key = read_private_key(info.key_path)
    except PkiError as e:
        raise ConfigError(
            f"configuration-signing key {info.keyid[:16]} (number {info.number}): {e.message}",
            hint="restore the key file from backup, or add a new key and retire this one",
        ) from e
    return key, info.certificate


async def load_signers(engine: AsyncEngine) -> list[tuple[PrivateKey, x509.Certificate]]:
    """The (private key, certificate) pairs of every active key, read from their files.

    Raises:
        ConfigError: there is no active key, or a key file is missing or unreadable.
    """
    active = await active_signing_keys(engine)
    if not active:
        raise ConfigError(
            "there is no active configuration-signing key", hint="run `gateway central init` or `keys add`"
        )
    return [await asyncio.to_thread(_load_signer, info) for info in active]
