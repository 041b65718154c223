"""Publication of the signed global configuration: build, decide, sign, store (pure core, I/O shell).

Pure core: :func:`build_conf` turns a registry snapshot, the active signing keys and the settings into the
``signed`` document of docs/globalconf.md; :func:`content_sha256` hashes what a publication *says* (all but
``version``, ``issued_at`` and ``expires_at``); :func:`publication_due` decides whether to publish.

I/O shell: :func:`publish` signs with every active key and stores the envelope under ``version = last + 1``;
:func:`publish_if_due` does so only when needed; :func:`latest` and :func:`latest_publication` read the
newest one; :func:`current_anchor` builds the anchor of the active keys.

Publication policy (docs/central.md): publish when nothing has been published, when the content changed
(registry with its witness policies, signing keys, parameters, central URL), or when the newest publication is
at least half its validity old, so that a healthy central server never lets a client's copy expire.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from gateway.central import models as m
from gateway.central.registry import RegistrySnapshot, snapshot
from gateway.central.signingkeys import SigningKeyInfo, list_signing_keys, load_signers
from gateway.errors import ConfigError, GatewayError, GlobalConfError
from gateway.globalconf.anchor import build_anchor
from gateway.globalconf.envelope import sign_envelope
from gateway.globalconf.model import FORMAT, GlobalConf, format_time, normalise
from gateway.globalconf.transparency import check_conf
from gateway.settings import CentralSettings
from gateway.trust.canonical import canonical_bytes

KEEP_PUBLICATIONS = 1000  # rows; older publications are pruned (about 3.5 days at the default policy)
PUBLISH_ATTEMPTS = 3  # tries when another process takes the same version number at the same moment
_VOLATILE = ("version", "issued_at", "expires_at")


@dataclass(frozen=True, slots=True, kw_only=True)
class Publication:
    version: int
    issued_at: datetime
    expires_at: datetime
    content_sha256: str  # SHA-256 of the content without version and times (see content_sha256)
    sha256: str  # SHA-256 of ``data``: the HTTP ETag
    data: bytes  # the signed envelope, exactly as served


def _publication(row: m.Publication) -> Publication:
    return Publication(
        version=row.version, issued_at=row.issued_at, expires_at=row.expires_at,
        content_sha256=row.content_sha256, sha256=row.sha256, data=row.data,
    )


# ---------------------------------------------------------------------------------------------------------
# Pure core


def central_url(settings: CentralSettings) -> str:
    """The central server's base URL as published: ``public_url``, else ``http://HOST:PORT``."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}"


def download_url(settings: CentralSettings) -> str:
    """Where security servers download the configuration (listed in the anchor)."""
    return central_url(settings) + "/globalconf"


def parameters(settings: CentralSettings) -> dict[str, Any]:
    """The federation-wide ``parameters`` published from the settings (``transparency``: docs/transparency.md
    section 1, only when one of its settings is set).

    Raises:
        ConfigError: a transparency setting is malformed.
    """
    out: dict[str, Any] = {
        "ocsp_freshness_seconds": settings.ocsp_freshness_seconds,
        "timestamp_grace_seconds": settings.timestamp_grace_seconds,
    }
    if settings.transparency_purposes or settings.transparency_portal or settings.transparency_embargo_clients:
        purposes: dict[str, str] = {}
        for item in settings.transparency_purposes:
            code, sep, text = item.partition("=")
            if not sep:
                raise ConfigError(f"[central] transparency_purposes: {item[:80]!r} is not CODE=text")
            purposes[code.strip()] = text.strip()
        try:
            out["transparency"] = check_conf(purposes, settings.transparency_portal,
                                             list(settings.transparency_embargo_clients))
        except GatewayError as e:
            raise ConfigError(f"[central] transparency: {e.message}") from e
    return out


def build_conf(
    snap: RegistrySnapshot,
    *,
    instance: str,
    url: str,
    signing_keys: Sequence[SigningKeyInfo],
    params: Mapping[str, Any],
    version: int,
    now: datetime,
    validity_seconds: int,
) -> dict[str, Any]:
    """The ``signed`` document of docs/globalconf.md, with every set-like list sorted
    (:func:`gateway.globalconf.model.normalise`).

    ``issued_at`` is ``now`` rounded down to whole seconds; ``expires_at`` is ``validity_seconds`` later.
    ``witness_policies`` is present only when the registry has one (docs/witness.md section 3), so a
    federation without witnesses publishes the same bytes as before.
    """
    issued = now.replace(microsecond=0)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "instance": instance,
        "version": version,
        "issued_at": format_time(issued),
        "expires_at": format_time(issued + timedelta(seconds=validity_seconds)),
        "central": {"url": url},
        "members": [
            {"id": str(r.id), "name": r.name, "subsystems": sorted(r.subsystems)}
            for r in sorted(snap.members, key=lambda r: str(r.id))
        ],
        "security_servers": [
            {
                "id": str(r.id), "address": r.address, "auth_certs": sorted(r.auth_certs),
                "clients": sorted(str(c) for c in r.clients),
            }
            for r in sorted(snap.servers, key=lambda r: str(r.id))
        ],
        "global_groups": [
            {"id": str(r.id), "description": r.description, "members": sorted(str(c) for c in r.members)}
            for r in sorted(snap.groups, key=lambda r: str(r.id))
        ],
        "certificate_authorities": [
            {"name": r.name, "certificate": r.certificate_pem, "ocsp_urls": list(r.ocsp_urls)}
            for r in sorted(snap.cas, key=lambda r: r.name)
        ],
        # order of preference: kept as given
        "timestamping_authorities": [
            {"name": r.name, "url": r.url, "certificate": r.certificate_pem} for r in snap.tsas
        ],
        "signing_keys": [
            {"keyid": k.keyid, "certificate": k.certificate_pem}
            for k in sorted(signing_keys, key=lambda k: k.keyid)
        ],
        "parameters": dict(params),
    }
    if snap.witness_policies:
        doc["witness_policies"] = [
            {"server": str(p.server), "quorum": p.quorum,
             "witnesses": [{"vkey": w.vkey, "url": w.url, "server": str(w.server)} for w in p.witnesses]}
            for p in snap.witness_policies
        ]
    return normalise(doc)


def content_sha256(conf: Mapping[str, Any]) -> str:
    """SHA-256 of what a configuration says, leaving out ``version``, ``issued_at`` and ``expires_at``."""
    return hashlib.sha256(canonical_bytes({k: v for k, v in conf.items() if k not in _VOLATILE})).hexdigest()


def publication_due(
    latest: Publication | None, content: str, *, now: datetime, validity_seconds: int
) -> str | None:
    """Why a new publication is due (a short reason), or None if the newest one is still good.

    Rules, in order: (1) nothing published yet; (2) the content differs from the newest publication;
    (3) the newest publication is at least ``validity_seconds / 2`` old (or from the future: a clock that
    went backwards must not freeze publication).
    """
    # (1) nothing published yet
    if latest is None:
        return "first publication"
    # (2) the content changed
    if latest.content_sha256 != content:
        return "content changed"
    # (3) half the validity passed: republish long before any client's copy expires
    age = (now - latest.issued_at).total_seconds()
    if age >= validity_seconds / 2 or age < 0:
        return "refresh: half the validity passed"
    return None


# ---------------------------------------------------------------------------------------------------------
# I/O shell


async def latest_publication(engine: AsyncEngine) -> Publication | None:
    """The newest publication, or None."""
    async with AsyncSession(engine) as s:
        row = await s.scalar(sa.select(m.Publication).order_by(m.Publication.version.desc()).limit(1))
        return None if row is None else _publication(row)


async def list_publications(engine: AsyncEngine, *, limit: int, offset: int) -> tuple[list[Publication], int]:
    """Publications, newest first (a page of ``limit`` after ``offset``), and how many there are in all."""
    async with AsyncSession(engine) as s:
        total = int(await s.scalar(sa.select(sa.func.count()).select_from(m.Publication)) or 0)
        rows = await s.scalars(
            sa.select(m.Publication).order_by(m.Publication.version.desc()).limit(limit).offset(offset)
        )
        return [_publication(r) for r in rows], total


async def latest(engine: AsyncEngine) -> bytes | None:
    """The signed bytes of the newest publication, or None."""
    async with AsyncSession(engine) as s:
        data: bytes | None = await s.scalar(
            sa.select(m.Publication.data).order_by(m.Publication.version.desc()).limit(1)
        )
        return data


async def _current(
    engine: AsyncEngine, settings: CentralSettings, *, version: int, now: datetime
) -> dict[str, Any]:
    keys = [k for k in await list_signing_keys(engine) if k.state == "active"]
    snap = await snapshot(engine)
    params = parameters(settings)
    if snap.transparency is not None:  # set in the registry: it wins over the settings
        params["transparency"] = snap.transparency
    return build_conf(
        snap, instance=settings.instance, url=central_url(settings), signing_keys=keys,
        params=params, version=version, now=now,
        validity_seconds=settings.conf_validity_seconds,
    )


async def _store(engine: AsyncEngine, settings: CentralSettings, now: datetime) -> Publication:
    """One attempt: version = last + 1, build, check, sign, insert (IntegrityError on a version race)."""
    # (1) the next version number
    async with AsyncSession(engine) as s:
        last = await s.scalar(sa.select(sa.func.max(m.Publication.version)))
    version = (last or 0) + 1
    # (2) the document, checked by the same strict parser the clients use: never publish what they refuse
    conf = await _current(engine, settings, version=version, now=now)
    try:
        GlobalConf.from_dict(conf)
    except GlobalConfError as e:
        raise GatewayError(f"refusing to publish an invalid global configuration: {e.message}") from e
    # (3) signed by every active key
    data = sign_envelope(conf, await load_signers(engine))
    pub = Publication(
        version=version,
        issued_at=now.replace(microsecond=0),
        expires_at=now.replace(microsecond=0) + timedelta(seconds=settings.conf_validity_seconds),
        content_sha256=content_sha256(conf),
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
    )
    # (4) stored; the unique version column refuses a concurrent publisher's duplicate
    async with AsyncSession(engine) as s, s.begin():
        s.add(m.Publication(
            version=pub.version, issued_at=pub.issued_at, expires_at=pub.expires_at,
            content_sha256=pub.content_sha256, sha256=pub.sha256, data=pub.data,
        ))
        await s.flush()
        await s.execute(
            sa.delete(m.Publication).where(m.Publication.version <= pub.version - KEEP_PUBLICATIONS)
        )
    return pub


async def publish(engine: AsyncEngine, settings: CentralSettings, now: datetime) -> Publication:
    """Sign the current configuration with every active key and store it as the next version.

    Raises:
        ConfigError: no active signing key, or a key file cannot be read.
        GatewayError: the document would not pass the clients' checks (a bug), or concurrent publishers
            kept taking the same version number.
    """
    for _ in range(PUBLISH_ATTEMPTS):
        try:
            return await _store(engine, settings, now)
        except IntegrityError:
            continue  # another publisher took this version; build again on top of theirs
    raise GatewayError(f"could not publish: the version number was taken {PUBLISH_ATTEMPTS} times in a row")


async def publish_if_due(engine: AsyncEngine, settings: CentralSettings, now: datetime) -> Publication | None:
    """Publish if :func:`publication_due` says so; return the new publication or None.

    Raises:
        ConfigError, GatewayError: as :func:`publish`.
    """
    newest = await latest_publication(engine)
    conf = await _current(engine, settings, version=1, now=now)
    reason = publication_due(
        newest, content_sha256(conf), now=now, validity_seconds=settings.conf_validity_seconds
    )
    if reason is None:
        return None
    return await publish(engine, settings, now)


async def current_anchor(engine: AsyncEngine, settings: CentralSettings) -> bytes:
    """The anchor (canonical JSON) listing every active and inactive configuration-signing key (an inactive
    key is anchored before it signs, so clients trust it from its first signature).

    ``generated_at`` is the time of the last key event (a key created or retired), so the anchor, and the
    hash operators compare, changes only when the key set does.

    Raises:
        ConfigError: there is no active key.
    """
    keys = await list_signing_keys(engine)
    active = [k for k in keys if k.state == "active"]
    if not active:
        raise ConfigError(
            "there is no active configuration-signing key", hint="run `gateway central init` or `keys add`"
        )
    events = [k.created_at for k in keys] + [k.retired_at for k in keys if k.retired_at is not None]
    certs = [k.certificate for k in keys if k.state in ("active", "inactive")]
    return build_anchor(settings.instance, [download_url(settings)], certs, max(events))
