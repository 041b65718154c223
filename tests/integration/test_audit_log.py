"""The admin audit log as a Merkle log on SQLite and PostgreSQL: concurrent writers, the migration of existing
entries, signed and timestamped checkpoints (the development TSA over real HTTP), the log as a checkpoint source
for witnesses, export with ``gateway admin audit export`` and offline verification with ``gateway log verify``,
and tampering found online and offline."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import sqlalchemy as sa
from archive_kit import LogWorld, make_world
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.admin import auditcheckpointer as acp
from gateway.admin.auditarchive import read_archive
from gateway.admin.auditexport import check_online, export_audit
from gateway.admin.auditlog import audit_origin, entry_leaf
from gateway.admin.auditverify import verify_audit_archive
from gateway.admin.models import VERSION_TABLE
from gateway.admin.schema import Page
from gateway.admin.store import MIGRATIONS, AdminStore, AuditEntry
from gateway.cli import main
from gateway.dev.pki.http import PkiServers, start_pki_servers
from gateway.errors import NotFound, TrustError
from gateway.globalconf.model import Tsa
from gateway.identifiers import SecurityServerId
from gateway.messagelog import merkle
from gateway.messagelog.checkpoint import verify_checkpoint
from gateway.messagelog.checkpointer import HttpTimestampFetcher
from gateway.protocol.signatures import KeySigner
from gateway.storage.db import _alembic_config, make_engine
from gateway.trust import cosignature
from gateway.trust.timestamp import verify_token

pytestmark = pytest.mark.integration

SERVER = SecurityServerId.parse("DEV/GOV/1001/ss1")


def entry(n: int, actor: str = "alice") -> AuditEntry:
    return AuditEntry(at=datetime.now(UTC), actor=actor, auth="jwt", remote="127.0.0.1", action="addClient",
                      method="POST", path="/api/v1/clients", result="success", status=201, details={"n": n})


@dataclass
class Conf:
    timestamping_authorities: list[Tsa] = field(default_factory=list)


@dataclass
class Env:
    url: str
    store: AdminStore
    world: LogWorld
    pki: PkiServers
    session: aiohttp.ClientSession
    dir: Path

    def checkpointer(self) -> acp.AuditCheckpointer:
        world = self.world
        signer = KeySigner(key=world.consumer.key, cert=world.consumer.cert)
        tsa = Tsa(name="Test TSA", url=self.pki.tsa_url, certificate=world.pki.tsa_cert)

        async def own_ocsp() -> bytes:
            return world.pki.ocsp_response(world.consumer, now=datetime.now(UTC) - timedelta(minutes=1))

        return acp.AuditCheckpointer(store=self.store, server_id=SERVER, signer=lambda: signer,
                                     conf=lambda: Conf([tsa]),  # type: ignore[arg-type, return-value]
                                     fetch=HttpTimestampFetcher(self.session), own_ocsp=own_ocsp)


@pytest_asyncio.fixture
async def env(database_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    world = make_world(tmp_path)
    engine = make_engine(database_url)
    store = AdminStore(engine)
    await store.migrate()
    pki = await start_pki_servers(world.pki.ca, "127.0.0.1", 0, 0)
    try:
        async with aiohttp.ClientSession() as session:
            yield Env(url=database_url, store=store, world=world, pki=pki, session=session, dir=tmp_path)
    finally:
        await pki.close()
        await engine.dispose()


async def test_concurrent_writers_get_dense_sequence_numbers(env: Env) -> None:
    # two engines: two connection pools, as the server process and a CLI process have
    other = make_engine(env.url)
    try:
        second = AdminStore(other)
        seqs = await asyncio.gather(*(s.write_audit(entry(i)) for i in range(20) for s in (env.store, second)))
    finally:
        await other.dispose()
    assert sorted(seqs) == list(range(40))
    chain = await env.store.audit_chain()
    assert [f.seq for f, _ in chain] == list(range(40))
    assert all(entry_leaf(f) == leaf for f, leaf in chain)
    assert await env.store.audit_size() == 40
    entries, total = await env.store.list_audit(Page(limit=5, offset=0))
    assert total == 40 and all(e.seq is not None for e in entries)


async def test_names_no_database_or_canonical_json_takes_are_still_audited(env: Env) -> None:
    # a failed login under a name with a lone surrogate or NUL must not keep its entry out of the log
    await env.store.write_audit(entry(0, actor="\ud800mallory\x00" + "x" * 300))
    (stored, leaf), = await env.store.audit_chain()
    assert stored.actor == ("?mallory\\0" + "x" * 300)[:255] and entry_leaf(stored) == leaf
    assert (await check_online(env.store, SERVER)).ok


async def test_migration_numbers_the_entries_written_before_it(database_url: str) -> None:
    from alembic import command

    engine = make_engine(database_url)
    try:
        cfg = _alembic_config(MIGRATIONS, VERSION_TABLE)

        def to_0001(conn: sa.Connection) -> None:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")

        async with engine.begin() as conn:
            await conn.run_sync(to_0001)
            for i in range(3):
                await conn.execute(sa.text(
                    "INSERT INTO adm_audit (at, actor, auth, remote, action, method, path, result, status, details) "
                    "VALUES (:at, :actor, 'jwt', 'local', 'addUser', 'POST', '/api/v1/users', 'success', 201, '{}')"),
                    {"at": datetime(2026, 12, 1, 10, i, tzinfo=UTC).replace(tzinfo=None), "actor": f"user{i}"})
        store = AdminStore(engine)
        await store.migrate()
        chain = await store.audit_chain()
        assert [(f.seq, f.actor) for f, _ in chain] == [(0, "user0"), (1, "user1"), (2, "user2")]
        assert all(entry_leaf(f) == leaf for f, leaf in chain)
        assert await store.write_audit(entry(3)) == 3
        assert (await check_online(store, SERVER)).ok
    finally:
        await engine.dispose()


async def test_checkpoints_are_signed_stamped_and_served_to_witnesses(env: Env) -> None:
    for i in range(5):
        await env.store.write_audit(entry(i))
    cpr = env.checkpointer()
    t0 = datetime.now(UTC)
    # while the signing device is known to be unavailable, the checkpoint waits for a later round
    available = [False]
    cpr._can_sign = lambda: available[0]
    waited = await cpr.run_once(t0, force=True)
    assert waited.checkpoint is None and waited.size == 5 and await env.store.latest_audit_checkpoint() is None
    available[0] = True
    first = await cpr.run_once(t0, force=True)
    assert first.checkpoint is not None and first.checkpoint.size == 5 and first.stamped == (5,)
    for i in range(5, 12):
        await env.store.write_audit(entry(i))
    assert (await cpr.run_once(t0 + timedelta(seconds=1))).checkpoint is None  # the interval has not passed
    second = await cpr.run_once(t0 + timedelta(seconds=61))
    assert second.checkpoint is not None and second.checkpoint.size == 12 and second.stamped == (12,)
    stored = await env.store.latest_audit_checkpoint()
    assert stored is not None and stored.stamped and stored.signing_ocsp is not None
    head = verify_checkpoint(stored.note, env.world.consumer.cert, origin=audit_origin(SERVER))
    assert head.origin == "DEV/GOV/1001/ss1/audit" and head.size == 12
    assert stored.timestamp_token is not None
    verify_token(stored.timestamp_token, hashlib.sha256(stored.note).digest(), env.world.pki.tsa_cert)
    # a restarted checkpointer continues the tree from the stored compact range
    again = env.checkpointer()
    await again.start(t0 + timedelta(seconds=62))
    assert again.tree.size == 12 and again.tree.root() == head.root_hash
    # the log as a checkpoint source: latest, a consistency proof that verifies, cosignatures kept once
    source = acp.audit_log_source(env.store, SERVER)
    assert source.origin == "DEV/GOV/1001/ss1/audit"
    latest = await source.latest()
    assert latest is not None and latest.size == 12 and latest.note == stored.note
    proof = await source.consistency_proof(5, 12)
    assert first.checkpoint is not None
    merkle.verify_consistency(5, 12, first.checkpoint.root_hash, head.root_hash, proof)
    assert await source.consistency_proof(0, 12) == []
    assert await source.created(12) == stored.created
    key = ed25519.Ed25519PrivateKey.generate()
    text = stored.note.split(b"\n\n")[0] + b"\n"
    cosig = cosignature.cosign(text, "DEV/GOV/1002/ss2/witness", key, 1_800_000_000)
    await source.add_cosignatures(12, [cosig])
    await source.add_cosignatures(12, [cosig])
    assert await env.store.audit_cosignatures(12) == [(12, cosig.line().decode())]
    with pytest.raises(NotFound, match="no checkpoint of size 7"):
        await source.add_cosignatures(7, [cosig])


def _witnesses() -> list[tuple[str, ed25519.Ed25519PrivateKey]]:
    return [(f"DEV/GOV/1002/{s}/witness", ed25519.Ed25519PrivateKey.generate()) for s in ("ss2", "ss3")]


async def _filled(env: Env, *, witnessed_by: int) -> tuple[Path, list[tuple[str, ed25519.Ed25519PrivateKey]]]:
    """An audit log of 10 entries with checkpoints at 4 and 10 (cosigned by ``witnessed_by`` witnesses), a global
    configuration with a witness policy (quorum 2 of 2) and a settings file for the CLI."""
    witnesses = _witnesses()
    sim = env.world.sim
    sim.content["witness_policies"] = [{
        "server": str(SERVER), "quorum": 2,
        "witnesses": [{"vkey": cosignature.WitnessKey.of_private_key(n, k).vkey,
                       "url": f"https://127.0.0.1:550{i}/witness", "server": n.removesuffix("/witness")}
                      for i, (n, k) in enumerate(witnesses)],
    }]
    envelope = sim.publish()
    cpr = env.checkpointer()
    now = datetime.now(UTC)
    for i in range(4):
        await env.store.write_audit(entry(i))
    await cpr.run_once(now, force=True)
    for i in range(4, 10):
        await env.store.write_audit(entry(i))
    made = (await cpr.run_once(now + timedelta(seconds=61), force=True)).checkpoint
    assert made is not None
    text = made.note.split(b"\n\n")[0] + b"\n"
    await env.store.add_audit_cosignatures(10, [cosignature.cosign(text, n, k, int(now.timestamp()))
                                                for n, k in witnesses[:witnessed_by]])
    cache = env.dir / "globalconf"
    cache.mkdir(exist_ok=True)
    (cache / "globalconf.json").write_bytes(envelope)
    (env.dir / "anchor.json").write_bytes(env.world.anchor.to_bytes())
    settings = env.dir / "ss1.toml"
    settings.write_text(f'[server]\nid = "{SERVER}"\ndatabase_url = "{env.url}"\n'
                        f'[globalconf]\ncache_dir = "{cache}"\nanchor = "{env.dir / "anchor.json"}"\n')
    return settings, witnesses


def _cli(settings: Path, *args: str) -> int:
    return main(["-c", str(settings), *args])


async def test_export_and_verify_offline_then_tampering_is_named(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    settings, _ = await _filled(env, witnessed_by=2)
    out = env.dir / "audit.zip"
    assert await asyncio.to_thread(_cli, settings, "admin", "audit", "export", "--out", str(out)) == 0
    assert "10 entries, 2 checkpoints (2 timestamped, 2 cosignatures)" in capsys.readouterr().out
    report = verify_audit_archive(read_archive(out), env.world.anchor)
    assert report.ok, report.summary()
    assert report.covered_until == 10 and report.checkpoints_verified == 2
    assert "checkpoint 10 cosigned by 2 of 2 witnesses" in report.witnessed
    # the export itself is audited (an eleventh entry, after the last checkpoint)
    assert await env.store.audit_size() == 11
    # the CLI: `gateway log verify` recognises the audit archive
    anchor = env.dir / "anchor.json"
    assert await asyncio.to_thread(main, ["log", "verify", str(out), "--anchor", str(anchor)]) == 0
    printed = capsys.readouterr().out
    assert "audit log DEV/GOV/1001/ss1/audit: entries 0..9 (10)" in printed and "RESULT: OK" in printed
    assert await asyncio.to_thread(_cli, settings, "admin", "audit", "verify") == 0
    assert "RESULT: OK" in capsys.readouterr().out

    # an administrator edits entry 3 in the database
    engine = make_engine(env.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE adm_audit SET actor = 'mallory' WHERE seq = 3"))
    finally:
        await engine.dispose()
    # online: the chain check names it
    assert await asyncio.to_thread(_cli, settings, "admin", "audit", "verify") == 1
    online = capsys.readouterr().out
    assert "FAIL entry 3: altered" in online and "RESULT: FAILED, 1 problem(s)" in online
    # offline: the exported archive names it too
    tampered = env.dir / "tampered.zip"
    assert await asyncio.to_thread(_cli, settings, "admin", "audit", "export", "--out", str(tampered)) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["log", "verify", str(tampered), "--anchor", str(anchor)]) == 1
    printed = capsys.readouterr().out
    assert "FAIL entry 3: altered" in printed and "RESULT: FAILED" in printed
    assert await asyncio.to_thread(main, ["log", "verify", str(tampered), "--anchor", str(anchor), "--json"]) == 1
    (result,) = json.loads(capsys.readouterr().out)["archives"]
    assert result["ok"] is False and result["origin"] == "DEV/GOV/1001/ss1/audit"
    assert [(f["where"], f["problem"]) for f in result["findings"]] == [("entry 3", "altered")]


async def test_a_removed_entry_and_missing_witnesses_are_reported(env: Env) -> None:
    await _filled(env, witnessed_by=1)
    engine = make_engine(env.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM adm_audit WHERE seq = 9"))
    finally:
        await engine.dispose()
    check = await check_online(env.store, SERVER)
    assert [(p.where, p.problem) for p in check.problems] == [("checkpoint 10", "beyond")]
    out = env.dir / "a.zip"
    await export_audit(env.store, out, server_id=SERVER, globalconfs=[env.world.sim.published],
                       now=datetime.now(UTC))
    report = verify_audit_archive(read_archive(out), env.world.anchor)
    # the newest checkpoint the entries still reproduce is the one at 4: not witnessed, and nothing covers 4..8
    assert [(f.where, f.problem) for f in report.errors] == [
        ("checkpoint 10", "beyond"), ("checkpoint 1 (size 4)", "witnesses"), ("entries 4..8", "uncovered")]


async def test_missing_witnesses_are_reported_and_a_lowered_quorum_says_so(env: Env) -> None:
    await _filled(env, witnessed_by=1)
    out = env.dir / "a.zip"
    await export_audit(env.store, out, server_id=SERVER, globalconfs=[env.world.sim.published],
                       now=datetime.now(UTC))
    report = verify_audit_archive(read_archive(out), env.world.anchor)
    assert [(f.where, f.problem) for f in report.errors] == [("checkpoint 2 (size 10)", "witnesses")], \
        report.summary()
    assert "cosigned by 1 witness(es) of the policy (DEV/GOV/1002/ss2/witness); the quorum is 2" in report.summary()
    lowered = verify_audit_archive(read_archive(out), env.world.anchor, quorum=1)
    assert lowered.ok, lowered.summary()
    assert "(set for this run; the policy's quorum is 2)" in lowered.witnessed
    assert [(f.problem, f.severity) for f in lowered.findings] == [("quorum", "note")]


async def test_a_checkpoint_row_changed_in_the_database_is_reported_online(env: Env) -> None:
    await _filled(env, witnessed_by=2)
    engine = make_engine(env.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE adm_audit_checkpoints SET root_hash = :r WHERE size = 4"),
                               {"r": b"\x00" * 32})
    finally:
        await engine.dispose()
    check = await check_online(env.store, SERVER)
    assert [(p.where, p.problem) for p in check.problems] == [("checkpoint 4", "checkpoint-signature")]
    assert "names another size or root than the stored row" in check.problems[0].message
    # a restarted checkpointer refuses a stored tree state that does not give its stored root
    engine = make_engine(env.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE adm_audit_checkpoints SET frontier = :f WHERE size = 10"),
                               {"f": b"\x01" * 64})
    finally:
        await engine.dispose()
    with pytest.raises(TrustError, match="does not match its root hash; the database was altered"):
        await env.checkpointer().start(datetime.now(UTC))
