"""Publication on SQLite and PostgreSQL: versions, client verification, the refresh policy, key rollover."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.x509.oid import NameOID
from faultside import CLIENT_PROXY, detected_at
from pkihelpers import ThrowawayPki, make_pki
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.central import migrate_central
from gateway.central import models as m
from gateway.central import publisher as pub
from gateway.central import registry as reg
from gateway.central import signingkeys as sk
from gateway.errors import ConfigError, GlobalConfError, RequestError
from gateway.globalconf.anchor import Anchor
from gateway.globalconf.model import GlobalConf
from gateway.globalconf.trust import TrustedGlobalConf
from gateway.settings import CentralSettings
from gateway.storage.db import make_engine

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 13, 0, 0, 500_000, tzinfo=UTC)
SECOND = NOW.replace(microsecond=0)  # what whole-second wire times make of NOW
I = "DEV"  # noqa: E741


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayPki:
    return make_pki(tmp_path_factory.mktemp("pki"), now=NOW - timedelta(days=1))


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> CentralSettings:
    return CentralSettings(
        instance=I, database_url=database_url, key_dir=str(tmp_path / "keys"),
        public_url="https://central.example.org/", conf_validity_seconds=600,
    )


@pytest.fixture
async def engine(settings: CentralSettings) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(settings.database_url)
    await migrate_central(eng)
    await sk.ensure_signing_key(eng, instance=I, key_dir=settings.key_dir, now=NOW)
    yield eng
    await eng.dispose()


async def _register(engine: AsyncEngine, pki: ThrowawayPki) -> str:
    await reg.add_member(engine, "DEV/GOV/1001", name="Agency A", instance=I)
    await reg.add_member(engine, "DEV/COM/2002", name="Company B", instance=I)
    await reg.add_subsystem(engine, "DEV/GOV/1001/provider", instance=I)
    await reg.add_subsystem(engine, "DEV/GOV/1001/consumer", instance=I)
    await reg.add_server(engine, "DEV/GOV/1001/ss1", address="127.0.0.1:5501", instance=I)
    auth = pki.issue_auth("DEV/GOV/1001/ss1").cert_pem
    fp = await reg.add_auth_cert(engine, "DEV/GOV/1001/ss1", auth, instance=I)
    await reg.add_server_client(engine, "DEV/GOV/1001/ss1", "DEV/GOV/1001/provider", instance=I)
    await reg.add_server_client(engine, "DEV/GOV/1001/ss1", "DEV/GOV/1001/consumer", instance=I)
    await reg.add_group(engine, "DEV/owners", description="Owners", instance=I)
    await reg.add_group_member(engine, "DEV/owners", "DEV/GOV/1001", instance=I)
    ca = pki.ca_cert_path.read_bytes()
    await reg.add_ca(engine, name="Test CA", certificate=ca, ocsp_urls=["http://o:8888"])
    tsa = pki.tsa_cert_path.read_bytes()
    await reg.add_tsa(engine, name="Test TSA", url="http://t:8889", certificate=tsa)
    return fp


async def test_published_configuration_verifies_with_the_anchor(
    engine: AsyncEngine, settings: CentralSettings, pki: ThrowawayPki
) -> None:
    fp = await _register(engine, pki)
    p = await pub.publish(engine, settings, NOW)
    anchor_bytes = await pub.current_anchor(engine, settings)
    anchor = Anchor.from_bytes(anchor_bytes)
    assert anchor.download_urls == ("https://central.example.org/globalconf",)

    conf = TrustedGlobalConf(anchor, now=NOW).update(p.data, now=NOW)
    assert conf.version == p.version == 1
    assert conf.issued_at == NOW.replace(microsecond=0) == p.issued_at
    assert conf.expires_at == p.expires_at == NOW.replace(microsecond=0) + timedelta(seconds=600)
    assert conf.central_url == "https://central.example.org"
    signed = json.loads(p.data)["signed"]
    assert GlobalConf.from_dict(signed).to_dict() == signed
    assert signed["members"] == [
        {"id": "DEV/COM/2002", "name": "Company B", "subsystems": []},
        {"id": "DEV/GOV/1001", "name": "Agency A", "subsystems": ["consumer", "provider"]},
    ]
    assert signed["security_servers"] == [{
        "id": "DEV/GOV/1001/ss1", "address": "127.0.0.1:5501", "auth_certs": [fp],
        "clients": ["DEV/GOV/1001/consumer", "DEV/GOV/1001/provider"],
    }]
    assert signed["global_groups"] == [
        {"id": "DEV/owners", "description": "Owners", "members": ["DEV/GOV/1001"]}
    ]
    assert signed["certificate_authorities"] == [
        {"name": "Test CA", "certificate": pki.ca_cert_path.read_text(), "ocsp_urls": ["http://o:8888"]}
    ]
    assert [t["name"] for t in signed["timestamping_authorities"]] == ["Test TSA"]
    assert [k["keyid"] for k in signed["signing_keys"]] == list(anchor.keys)
    assert signed["parameters"] == {"ocsp_freshness_seconds": 3600, "timestamp_grace_seconds": 14400}
    assert p.sha256 == hashlib.sha256(p.data).hexdigest()
    assert await pub.latest(engine) == p.data
    assert await pub.latest_publication(engine) == p


async def test_versions_strictly_increase(engine: AsyncEngine, settings: CentralSettings) -> None:
    anchor = Anchor.from_bytes(await pub.current_anchor(engine, settings))
    client = TrustedGlobalConf(anchor, now=NOW)
    versions = []
    for i in range(4):
        now = NOW + timedelta(seconds=i)  # even within one second, and with unchanged content
        p = await pub.publish(engine, settings, now)
        versions.append(p.version)
        assert client.update(p.data, now=now).version == p.version
    assert versions == [1, 2, 3, 4]
    with pytest.raises(GlobalConfError, match="rollback"):
        client.update((await _publication_bytes(engine, 2)), now=NOW)


async def _publication_bytes(engine: AsyncEngine, version: int) -> bytes:
    async with engine.connect() as conn:
        data = await conn.scalar(sa.select(m.Publication.data).where(m.Publication.version == version))
    assert isinstance(data, bytes)
    return data


async def test_old_publications_are_pruned(
    engine: AsyncEngine, settings: CentralSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pub, "KEEP_PUBLICATIONS", 2)
    for i in range(4):
        await pub.publish(engine, settings, NOW + timedelta(seconds=i))
    async with engine.connect() as conn:
        kept = (await conn.scalars(sa.select(m.Publication.version).order_by(m.Publication.version))).all()
    assert kept == [3, 4]
    assert (await pub.publish(engine, settings, NOW)).version == 5


async def test_unchanged_content_waits_for_half_the_validity(
    engine: AsyncEngine, settings: CentralSettings, pki: ThrowawayPki
) -> None:
    half = timedelta(seconds=settings.conf_validity_seconds / 2)
    first = await pub.publish_if_due(engine, settings, NOW)
    assert first is not None and first.version == 1
    # (a) nothing changed, less than half the validity passed: nothing to do
    assert await pub.publish_if_due(engine, settings, NOW + timedelta(seconds=1)) is None
    assert await pub.publish_if_due(engine, settings, first.issued_at + half - timedelta(seconds=1)) is None
    # (b) the registry changed: published at once
    await reg.add_member(engine, "DEV/GOV/1001", name="Agency A", instance=I)
    second = await pub.publish_if_due(engine, settings, NOW + timedelta(seconds=2))
    assert second is not None and second.version == 2
    assert await pub.publish_if_due(engine, settings, NOW + timedelta(seconds=3)) is None
    # (c) half the validity after the newest publication: refreshed with the same content
    assert await pub.publish_if_due(engine, settings, second.issued_at + half - timedelta(seconds=1)) is None
    third = await pub.publish_if_due(engine, settings, second.issued_at + half)
    assert third is not None and third.version == 3
    assert third.content_sha256 == second.content_sha256
    assert third.expires_at == second.issued_at + half + timedelta(seconds=600)
    # (d) a new signing key changes the content (it is listed in signing_keys)
    await sk.create_signing_key(engine, instance=I, key_dir=settings.key_dir, now=NOW)
    fourth = await pub.publish_if_due(engine, settings, third.issued_at + timedelta(seconds=1))
    assert fourth is not None and fourth.content_sha256 != third.content_sha256
    # (e) so do the settings that are published
    moved = replace(settings, public_url="https://mirror.example.org")
    assert await pub.publish_if_due(engine, moved, fourth.issued_at + timedelta(seconds=1)) is not None


def _p(version: int, content: str, issued: datetime) -> pub.Publication:
    return pub.Publication(
        version=version, issued_at=issued, expires_at=issued + timedelta(seconds=600), content_sha256=content,
        sha256="0" * 64, data=b"{}",
    )


@pytest.mark.parametrize(
    ("latest", "content", "now", "reason"),
    [
        (None, "a", NOW, "first publication"),
        (_p(1, "a", NOW), "b", NOW, "content changed"),
        (_p(1, "a", NOW), "a", NOW, None),
        (_p(1, "a", NOW), "a", NOW + timedelta(seconds=299), None),
        (_p(1, "a", NOW), "a", NOW + timedelta(seconds=300), "refresh: half the validity passed"),
        (_p(1, "a", NOW), "a", NOW - timedelta(seconds=1), "refresh: half the validity passed"),
    ],
    ids=["nothing yet", "changed", "same now", "just before half", "at half", "clock went back"],
)
def test_publication_due(
    latest: pub.Publication | None, content: str, now: datetime, reason: str | None
) -> None:
    assert pub.publication_due(latest, content, now=now, validity_seconds=600) == reason


async def test_key_rollover(engine: AsyncEngine, settings: CentralSettings, tmp_path: Path) -> None:
    (old,) = await sk.list_signing_keys(engine)
    old_anchor = Anchor.from_bytes(await pub.current_anchor(engine, settings))
    assert list(old_anchor.keys) == [old.keyid]
    assert old.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "DEV configuration signing key 1"
    )
    assert stat.S_IMODE(os.stat(old.key_path).st_mode) == 0o600
    old_client = TrustedGlobalConf(old_anchor, now=NOW)
    v1 = await pub.publish(engine, settings, NOW)
    old_client.update(v1.data, now=NOW)

    # (1) a second key: two signatures from the next publication on; the old anchor still verifies
    later = NOW + timedelta(seconds=5)
    new = await sk.create_signing_key(engine, instance=I, key_dir=settings.key_dir, now=later)
    assert new.number == 2 and new.state == "active"
    assert new.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "DEV configuration signing key 2"
    )
    v2 = await pub.publish(engine, settings, NOW + timedelta(seconds=10))
    assert {s["keyid"] for s in json.loads(v2.data)["signatures"]} == {old.keyid, new.keyid}
    assert old_client.update(v2.data, now=NOW + timedelta(seconds=10)).version == 2
    new_anchor_bytes = await pub.current_anchor(engine, settings)
    new_anchor = Anchor.from_bytes(new_anchor_bytes)
    assert set(new_anchor.keys) == {old.keyid, new.keyid}
    assert new_anchor.generated_at == SECOND + timedelta(seconds=5)  # the last key event

    # (2) retire the old key: one signature; the old anchor is refused, the new one accepted
    retired = await sk.retire_signing_key(engine, old.keyid[:12].upper(), now=NOW + timedelta(seconds=20))
    assert (retired.keyid, retired.state) == (old.keyid, "retired")
    assert retired.retired_at == NOW + timedelta(seconds=20)
    v3 = await pub.publish(engine, settings, NOW + timedelta(seconds=30))
    assert [s["keyid"] for s in json.loads(v3.data)["signatures"]] == [new.keyid]
    with pytest.raises(GlobalConfError, match="not signed by any key in the anchor") as info, detected_at(CLIENT_PROXY):
        old_client.update(v3.data, now=NOW + timedelta(seconds=30))
    assert info.value.xroad_type == "Server.ClientProxy.InvalidSignatureValue"
    with pytest.raises(GlobalConfError, match="not signed by any key in the anchor"):
        TrustedGlobalConf(old_anchor, now=NOW).update(v3.data, now=NOW + timedelta(seconds=30))
    new_client = TrustedGlobalConf(new_anchor, now=NOW)
    assert new_client.update(v3.data, now=NOW + timedelta(seconds=30)).version == 3
    final_anchor = Anchor.from_bytes(await pub.current_anchor(engine, settings))
    assert list(final_anchor.keys) == [new.keyid]
    assert final_anchor.generated_at == SECOND + timedelta(seconds=20)
    assert [k.state for k in await sk.list_signing_keys(engine)] == ["retired", "active"]


@pytest.mark.parametrize(
    ("keyid", "status", "message"),
    [
        ("{new}", 409, "configuration-signing key {new} is the only active key and cannot be retired; "
                       "add a new key first (`gateway central keys add`)"),
        ("{old}", 409, "configuration-signing key {old} is already retired"),
        ("ab" * 32, 404, f"no configuration-signing key has keyid '{'ab' * 32}'"),
        ("abc", 400, "keyid 'abc' is too short; give at least 8 hex digits"),
        ("%_%_%_%_", 404, "no configuration-signing key has keyid '%_%_%_%_'"),
    ],
    ids=["last active key", "already retired", "unknown", "too short", "LIKE wildcards are literal"],
)
async def test_retire_refusals(
    engine: AsyncEngine, settings: CentralSettings, keyid: str, status: int, message: str
) -> None:
    (old,) = await sk.list_signing_keys(engine)
    new = await sk.create_signing_key(engine, instance=I, key_dir=settings.key_dir, now=NOW)
    await sk.retire_signing_key(engine, old.keyid, now=NOW)
    with pytest.raises(RequestError) as info:
        await sk.retire_signing_key(engine, keyid.format(new=new.keyid, old=old.keyid), now=NOW)
    assert info.value.status == status
    assert info.value.message == message.format(new=new.keyid, old=old.keyid)
    assert [k.state for k in await sk.list_signing_keys(engine)] == ["retired", "active"]


async def test_missing_key_file_stops_publication(engine: AsyncEngine, settings: CentralSettings) -> None:
    (key,) = await sk.list_signing_keys(engine)
    os.unlink(key.key_path)
    with pytest.raises(ConfigError) as info:
        await pub.publish(engine, settings, NOW)
    assert info.value.message.startswith(f"configuration-signing key {key.keyid[:16]} (number 1): ")
    assert key.key_path in info.value.message
    assert await pub.latest(engine) is None


async def test_no_active_key(database_url: str, tmp_path: Path) -> None:
    eng = make_engine(database_url)
    try:
        await migrate_central(eng)
        settings = CentralSettings(database_url=database_url, key_dir=str(tmp_path))
        with pytest.raises(ConfigError, match="there is no active configuration-signing key"):
            await pub.publish(eng, settings, NOW)
        with pytest.raises(ConfigError, match="there is no active configuration-signing key"):
            await pub.current_anchor(eng, settings)
        created = await sk.ensure_signing_key(eng, instance=I, key_dir=tmp_path, now=NOW)
        assert created is not None
        assert await sk.ensure_signing_key(eng, instance=I, key_dir=tmp_path, now=NOW) is None
    finally:
        await eng.dispose()
