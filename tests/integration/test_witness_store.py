"""Cosignatures kept with checkpoints, on SQLite and PostgreSQL, and the message log as a checkpoint source
(gateway.messagelog.store add_cosignatures/cosignatures, gateway.witness.pusher.MessageLogSource)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.dev.pki.ca import DevCA
from gateway.errors import MessageLogError
from gateway.globalconf.model import Tsa
from gateway.identifiers import MemberId, ServiceId, SubsystemId
from gateway.messagelog import merkle
from gateway.messagelog.archive import LogArchive
from gateway.messagelog.checkpoint import parse_checkpoint, parse_note
from gateway.messagelog.checkpointer import Checkpointer
from gateway.messagelog.export import all_checkpoints, write_range
from gateway.messagelog.record import LogRecord
from gateway.messagelog.store import SqlMessageLogStore, migrate_messagelog
from gateway.protocol.signatures import KeySigner
from gateway.storage.db import make_engine
from gateway.trust import certprofile, keys
from gateway.trust.cosignature import cosign
from gateway.witness.pusher import MessageLogSource

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


@dataclass
class NoTsa:
    """The checkpointer's view of a global configuration without TSAs: checkpoints are signed, not stamped."""

    timestamping_authorities: list[Tsa] = field(default_factory=list)
    timestamp_grace_seconds: int = 14400


async def never(url: str, request: bytes, *, timeout_seconds: float) -> bytes:
    raise AssertionError("no TSA is configured")


@pytest.fixture
async def store(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SqlMessageLogStore]:
    engine = make_engine(database_url)
    await migrate_messagelog(engine)
    s = SqlMessageLogStore(engine)
    try:
        yield s
    finally:
        await s.close()
        await engine.dispose()


async def test_cosignatures_are_kept_once_per_witness_key_and_read_back(
    store: SqlMessageLogStore, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    ca = DevCA.init(tmp_path_factory.mktemp("pki"), name="Witness Store CA", now=T0 - timedelta(days=1))
    key = keys.generate_private_key()
    member = MemberId.parse("DEV/GOV/1001")
    cert = ca.issue(certprofile.build_csr(key, member, kind="sign", name="A"), kind="sign",
                    expected_identity=member, now=T0 - timedelta(hours=1))
    checkpointer = Checkpointer(store=store, origin=ORIGIN, signer=KeySigner(key=key, cert=cert),
                                conf=lambda: NoTsa(), fetch=never)  # type: ignore[arg-type, return-value]
    source = MessageLogSource(store, ORIGIN)
    assert source.origin == "DEV/GOV/1001/ss1/messagelog"
    assert await source.latest() is None
    for i in range(3):
        await store.append(rec(i))
    await checkpointer.run_once(T0, force=True)
    for i in range(3, 8):
        await store.append(rec(i))
    await checkpointer.run_once(T0 + timedelta(seconds=1), force=True)
    # (1) The source gives the newest checkpoint as signed, with its certificate, and proofs between sizes.
    latest = await source.latest()
    assert latest is not None and latest.size == 8
    assert latest.signing_cert == cert.public_bytes(Encoding.DER)
    head = parse_checkpoint(parse_note(latest.note).text)
    old = await store.checkpoint(ORIGIN, 3)
    assert old is not None
    merkle.verify_consistency(3, 8, old.root_hash, head.root_hash, await source.consistency_proof(3, 8))
    assert await source.consistency_proof(0, 8) == []
    assert await source.created(8) == T0 + timedelta(seconds=1)
    # (2) Cosignatures, twice: the second time changes nothing (idempotent), another witness is added.
    text = parse_note(latest.note).text
    w1, w2 = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    c1 = cosign(text, "DEV/GOV/1002/ss2/witness", w1, 1767225600)
    c1_later = cosign(text, "DEV/GOV/1002/ss2/witness", w1, 1767225700)
    c2 = cosign(text, "DEV/GOV/1003/ss3/witness", w2, 1767225601)
    await source.add_cosignatures(8, [c1])
    assert await store.add_cosignatures(ORIGIN, 8, [c1_later, c2, c2]) == 1
    kept = await store.cosignatures(ORIGIN, 8)
    assert [(k.size, k.cosignature) for k in kept] == [(8, c1), (8, c2)]
    assert [k.cosignature.line() for k in await store.cosignatures(ORIGIN)] == [c1.line(), c2.line()]
    assert await store.cosignatures(ORIGIN, 3) == []
    # (3) A checkpoint that does not exist takes none.
    with pytest.raises(MessageLogError, match="no checkpoint of DEV/GOV/1001/ss1 at size 5"):
        await store.add_cosignatures(ORIGIN, 5, [c1])
    # (4) The export (CLI, admin API and web interface alike) carries them beside each note.
    path = tmp_path_factory.mktemp("export") / "a.zip"
    await write_range(store, ORIGIN, path, start=0, end=8, checkpoints=await all_checkpoints(store, ORIGIN),
                      globalconfs=[], selection={}, now=T0)
    with LogArchive(path) as archive:
        assert archive.manifest.version == 3
        assert [(c.note, c.cosignatures) for c in archive.checkpoints] == [
            (old.note, None), (latest.note, c1.line() + c2.line())]
