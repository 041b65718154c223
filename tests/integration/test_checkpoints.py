"""Checkpointer, proofs and retention on SQLite and PostgreSQL, with the development TSA over real HTTP.

The clock is injected (``run_once(now)``); the TSA is made unreachable by pointing the configuration at a
closed port, exactly what a security server sees when its TSA is down.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from cryptography import x509
from faultside import CLIENT_PROXY, SERVER_PROXY, detected_at
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.dev.pki.ca import DevCA
from gateway.dev.pki.http import PkiServers, start_pki_servers
from gateway.errors import MessageLogError, RequestError, TrustError
from gateway.globalconf.model import Tsa
from gateway.identifiers import ServiceId, SubsystemId
from gateway.messagelog import merkle
from gateway.messagelog.checkpoint import checkpoint_origin, verify_checkpoint
from gateway.messagelog.checkpointer import Checkpointer, HttpTimestampFetcher
from gateway.messagelog.models import checkpoints, records
from gateway.messagelog.record import LogRecord
from gateway.messagelog.store import SqlMessageLogStore, migrate_messagelog
from gateway.protocol.signatures import KeySigner
from gateway.storage.db import make_engine
from gateway.trust import keys
from gateway.trust.timestamp import verify_token

pytestmark = pytest.mark.integration

ORIGIN = "DEV/GOV/1001/ss1"
T0 = datetime.now(UTC).replace(microsecond=0)


def rec(i: int) -> LogRecord:
    return LogRecord(
        origin=ORIGIN, kind="request", side="client", message_id=f"DEV-{i}", request_id=f"req-{i}",
        client=SubsystemId.parse("DEV/GOV/1001/consumer"), service=ServiceId.parse("DEV/GOV/1002/provider/pets"),
        created=T0, method="GET", path=f"/pets/{i}", signature_base=b"base", signature_input="sig1=()",
        signature="sig1=:AA==:", signing_cert=b"cert", ocsp_response=b"ocsp", body_digest="sha-256=:x:",
        body=f"body {i}".encode(),
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Conf:
    """The two things the checkpointer reads from the global configuration."""

    timestamping_authorities: list[Tsa] = field(default_factory=list)
    timestamp_grace_seconds: int = 14400


@dataclass
class Env:
    store: SqlMessageLogStore
    engine: AsyncEngine
    signer: KeySigner
    conf: Conf
    good_tsa: Tsa
    down_tsa: Tsa
    session: aiohttp.ClientSession
    ca: DevCA

    def checkpointer(self, **kw: Any) -> Checkpointer:
        return Checkpointer(store=self.store, origin=ORIGIN, signer=self.signer, conf=lambda: self.conf,  # type: ignore[arg-type, return-value]
                            fetch=HttpTimestampFetcher(self.session), **kw)

    async def append(self, n: int) -> None:
        start = await self.store.size(ORIGIN)
        for i in range(start, start + n):
            await self.store.append(rec(i))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> DevCA:
    return DevCA.init(tmp_path_factory.mktemp("pki"), name="Checkpoint Test CA", now=T0 - timedelta(days=1))


@pytest.fixture
async def env(database_url: str, ca: DevCA) -> AsyncIterator[Env]:
    engine = make_engine(database_url)
    await migrate_messagelog(engine)
    store = SqlMessageLogStore(engine)
    pki: PkiServers = await start_pki_servers(ca, "127.0.0.1", 0, 0)
    key = keys.generate_private_key()
    from gateway.identifiers import MemberId
    from gateway.trust import certprofile

    member = MemberId.parse("DEV/GOV/1001")
    cert = ca.issue(certprofile.build_csr(key, member, kind="sign", name="A"), kind="sign",
                    expected_identity=member, now=T0 - timedelta(hours=1))
    good = Tsa(name="dev TSA", url=pki.tsa_url, certificate=ca.tsa_cert)
    down = Tsa(name="down TSA", url=f"http://127.0.0.1:{closed_port()}/", certificate=ca.tsa_cert)
    async with aiohttp.ClientSession() as session:
        try:
            yield Env(store=store, engine=engine, signer=KeySigner(key=key, cert=cert), conf=Conf([good]),
                      good_tsa=good, down_tsa=down, session=session, ca=ca)
        finally:
            await store.close()
            await pki.close()
            await engine.dispose()


async def all_leaves(env: Env) -> list[bytes]:
    return await env.store.leaf_hashes(ORIGIN, 0, await env.store.size(ORIGIN))


async def test_checkpoints_are_signed_timestamped_and_prove_every_record(env: Env) -> None:
    cp = env.checkpointer(interval_seconds=60, max_records=5)
    await cp.start(T0)
    await env.append(3)
    # (1) Neither the interval nor the record count is reached: no checkpoint yet.
    r = await cp.run_once(T0 + timedelta(seconds=10))
    assert r.size == 3 and r.checkpoint is None and r.stamped == ()
    # (2) The interval has passed: checkpoint of size 3, signed and timestamped by the real TSA.
    r = await cp.run_once(T0 + timedelta(seconds=61))
    assert r.checkpoint is not None and r.checkpoint.size == 3 and r.stamped == (3,)
    # (3) Five more records reach checkpoint_max_records before the interval ends.
    await env.append(5)
    r = await cp.run_once(T0 + timedelta(seconds=62))
    assert r.checkpoint is not None and r.checkpoint.size == 8 and r.stamped == (8,)
    await env.append(4)
    r = await cp.run_once(T0 + timedelta(seconds=63), force=True)
    assert r.checkpoint is not None and r.checkpoint.size == 12
    stored = await env.store.checkpoints(ORIGIN)
    assert [c.size for c in stored] == [3, 8, 12]
    leaves = await all_leaves(env)
    for c in stored:
        # Each stored checkpoint: a valid note with the right root, and a token over SHA-256(note).
        body = verify_checkpoint(c.note, env.signer.cert, origin=checkpoint_origin(ORIGIN))
        assert (body.size, body.root_hash) == (c.size, merkle.root(leaves[:c.size]))
        assert c.timestamp_token is not None and c.tsa_name == "dev TSA" and c.tsa_cert is not None
        token = verify_token(c.timestamp_token, hashlib.sha256(c.note).digest(),
                             x509.load_der_x509_certificate(c.tsa_cert))
        assert abs(token.gen_time - datetime.now(UTC)) < timedelta(minutes=5)
        # Every record's inclusion proof from the store verifies against the checkpoint.
        for seq in range(c.size):
            proof = await env.store.inclusion_proof(ORIGIN, seq, c.size)
            merkle.verify_inclusion(leaves[seq], seq, c.size, proof, c.root_hash)
    # Every pair of checkpoints is consistent.
    for old in stored:
        for new in stored:
            if old.size <= new.size:
                proof = await env.store.consistency_proof(ORIGIN, old.size, new.size)
                merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    # (4) A restarted checkpointer restores the tree from the stored compact range and carries on.
    again = env.checkpointer(interval_seconds=60, max_records=5)
    await again.start(T0 + timedelta(seconds=100))
    assert again.tree.size == 12 and again.tree.root() == stored[-1].root_hash and again.unstamped_since is None
    await env.append(1)
    r = await again.run_once(T0 + timedelta(seconds=101), force=True)
    assert r.checkpoint is not None and r.checkpoint.root_hash == merkle.root(await all_leaves(env))


async def test_tsa_down_grace_then_refusal_then_catch_up(env: Env) -> None:
    env.conf.timestamp_grace_seconds = 600
    cp = env.checkpointer(interval_seconds=60, max_records=1000)
    await cp.start(T0)
    env.conf.timestamping_authorities = [env.down_tsa]
    await env.append(2)
    # (1) The TSA is down: the checkpoint is signed and stored unstamped; exchanges go on.
    r = await cp.run_once(T0 + timedelta(seconds=1), force=True)
    assert r.checkpoint is not None and r.stamped == () and r.stamp_error is not None
    assert "down TSA" in r.stamp_error and "cannot be reached" in r.stamp_error
    assert cp.unstamped_since == T0 + timedelta(seconds=1)
    cp.check_timestamping(T0 + timedelta(seconds=600))
    # (2) Retries wait one interval; later checkpoints also wait unstamped.
    await env.append(1)
    r = await cp.run_once(T0 + timedelta(seconds=30))
    assert r.checkpoint is None and r.stamp_error is None  # not retried before the interval
    r = await cp.run_once(T0 + timedelta(seconds=62))
    assert r.checkpoint is not None and r.checkpoint.size == 3 and r.stamp_error is not None
    # (3) Past the grace period (counted from the oldest unstamped record): exchanges are refused.
    for side in ("Server.ClientProxy", "Server.ServerProxy"):
        with pytest.raises(MessageLogError, match="has not been timestamped since") as e, detected_at(
            CLIENT_PROXY if side == "Server.ClientProxy" else SERVER_PROXY
        ):
            cp.check_timestamping(T0 + timedelta(seconds=602))
        assert e.value.xroad_type == f"{side}.TimestampingFailed" and e.value.status == 500
    # (4) The grace state survives a restart (it is read back from the unstamped records).
    restarted = env.checkpointer(interval_seconds=60, max_records=1000)
    await restarted.start(T0 + timedelta(seconds=603))
    assert restarted.unstamped_since == T0  # the oldest unstamped record's own created time
    with pytest.raises(MessageLogError):
        restarted.check_timestamping(T0 + timedelta(seconds=603))
    # (5) The TSA is back (the first TSA still down, the second answers): the newest checkpoint is stamped,
    #     older ones are caught up, and exchanges resume.
    env.conf.timestamping_authorities = [env.down_tsa, env.good_tsa]
    r = await restarted.run_once(T0 + timedelta(seconds=700))
    assert r.stamped == (3, 2) and r.stamp_error is None
    restarted.check_timestamping(T0 + timedelta(seconds=700))
    assert all(c.stamped and c.tsa_name == "dev TSA" for c in await env.store.checkpoints(ORIGIN))


async def test_no_tsa_configured_is_a_stamp_error(env: Env) -> None:
    env.conf.timestamping_authorities = []
    cp = env.checkpointer()
    await env.append(1)
    r = await cp.run_once(T0, force=True)
    assert r.stamp_error == "no timestamping authority in the global configuration"


async def test_prune_keeps_proofs_working(env: Env) -> None:
    cp = env.checkpointer()
    await env.append(6)
    await cp.run_once(T0, force=True)  # checkpoint 6, stamped
    await env.append(4)
    env.conf.timestamping_authorities = [env.down_tsa]
    await cp.run_once(T0 + timedelta(seconds=1), force=True)  # checkpoint 10, unstamped
    leaves = await all_leaves(env)
    # (1) Only what a timestamped checkpoint covers may be pruned.
    with pytest.raises(RequestError, match="not all covered by a timestamped checkpoint \\(the latest covers 6\\)"):
        await env.store.prune(ORIGIN, 7, now=T0)
    with pytest.raises(RequestError, match="is negative"):
        await env.store.prune(ORIGIN, -1, now=T0)
    assert await env.store.prune(ORIGIN, 4, now=T0) == 4
    assert await env.store.prune(ORIGIN, 4, now=T0) == 0  # idempotent
    assert await env.store.pruned_before(ORIGIN) == 4
    # (2) The bodies are gone from the database; reads start after the pruned range.
    async with env.engine.connect() as conn:
        gone = await conn.scalar(sa.select(sa.func.count()).select_from(records).where(records.c.record.is_(None)))
    assert gone == 4
    assert [r.seq for r in await env.store.read(ORIGIN, start=0, limit=100)] == [4, 5, 6, 7, 8, 9]
    # (3) Size, leaf hashes, inclusion proofs of any record (pruned ones too) and consistency proofs remain.
    assert await env.store.size(ORIGIN) == 10 and await all_leaves(env) == leaves
    root10 = merkle.root(leaves)
    for seq in range(10):
        merkle.verify_inclusion(leaves[seq], seq, 10, await env.store.inclusion_proof(ORIGIN, seq, 10), root10)
    merkle.verify_consistency(6, 10, merkle.root(leaves[:6]), root10, await env.store.consistency_proof(ORIGIN, 6, 10))
    # (4) The writer numbers on after the pruned range, and the checkpointer restarts fine.
    await env.append(1)
    assert await env.store.size(ORIGIN) == 11
    again = env.checkpointer()
    await again.start(T0)
    assert again.tree.size == 11


async def test_altered_database_is_detected(env: Env) -> None:
    cp = env.checkpointer()
    await env.append(5)
    first = (await cp.run_once(T0, force=True)).checkpoint
    assert first is not None
    await env.append(3)
    # Someone rewrites history: leaf 2 replaced (e.g. a record swapped together with its hash).
    forged = merkle.leaf_hash(b"forged")
    async with env.engine.begin() as conn:
        await conn.execute(records.update().where(records.c.origin == ORIGIN, records.c.seq == 2)
                           .values(leaf_hash=forged))
    # A restarted checkpointer continues from checkpoint 5's stored compact range: its new root is honest.
    second = (await env.checkpointer().run_once(T0, force=True)).checkpoint
    assert second is not None
    # The consistency proof the altered store gives cannot link the old checkpoint to the new one: a fork.
    proof = await env.store.consistency_proof(ORIGIN, first.size, second.size)
    with pytest.raises(TrustError, match="consistency proof"):
        merkle.verify_consistency(first.size, second.size, first.root_hash, second.root_hash, proof)
    # And a checkpoint row whose stored compact range was altered is refused at start-up.
    async with env.engine.begin() as conn:
        await conn.execute(checkpoints.update().where(checkpoints.c.size == second.size)
                           .values(frontier=b"\x00" * 32))
    with pytest.raises(TrustError, match="does not match its root hash; the database was altered"):
        await env.checkpointer().start(T0)


async def test_bad_proof_requests(env: Env) -> None:
    await env.append(3)
    with pytest.raises(MessageLogError, match="has only 3 records; leaf hashes up to 4 were asked for"):
        await env.store.inclusion_proof(ORIGIN, 0, 5)
    with pytest.raises(TrustError, match="leaf index 3 is not inside a tree of size 3"):
        await env.store.inclusion_proof(ORIGIN, 3, 3)
    with pytest.raises(TrustError, match="sizes 3 -> 2"):
        await env.store.consistency_proof(ORIGIN, 3, 2)
    with pytest.raises(MessageLogError, match="out of bounds"):
        await env.store.leaf_hashes(ORIGIN, 2, 1)

