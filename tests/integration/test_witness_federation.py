"""Three agencies witness each other's message logs (issue 14, parts 3 and 5; docs/witness.md sections 4-6).

A federation of three security servers of three members, real mutual TLS on loopback, real SQLite, the
development TSA. Every server runs its witness on its server port (``[witness] enabled``) and each server's log
is witnessed by the other two with a quorum of two (the policies go through the central registry into the
signed global configuration). Exchanges happen; the pushers bring every checkpoint to its quorum; an exported
archive verifies offline with only the anchor (``gateway log verify``). The fork drill: the provider's server
is made to sign a forked history with its real signing key; its witnesses refuse it (422) and keep the
evidence (``witness_evidence``), and ``gateway log verify`` on either archive, against the other, reports the
split view with both signed notes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography import x509
from exchange_kit import ShiftClock, call

from gateway.admin.store import AuditEntry
from gateway.central import registry
from gateway.dev.demo import Federation, MemberSpec, ServerSpec, start_federation
from gateway.errors import PeerError
from gateway.globalconf.model import Witness
from gateway.identifiers import MemberId
from gateway.messagelog.checkpoint import parse_note, verify_checkpoint
from gateway.messagelog.checkpointer import Checkpointer, HttpTimestampFetcher
from gateway.messagelog.export import all_checkpoints, write_range
from gateway.messagelog.store import SqlMessageLogStore, migrate_messagelog
from gateway.server.runtime import SecurityServer
from gateway.storage.db import make_engine
from gateway.trust.cosignature import parse_line, verified_witnesses
from gateway.witness.http import WitnessEndpoint
from gateway.witness.pusher import MessageLogSource, Pusher, PushSettings, request_body

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

GATEWAY = [str(Path(sys.executable).parent / "gateway")]
PERSONS = "DEV/GOV/1002/registry/persons"
A, B, C = (MemberId.parse(f"DEV/GOV/{code}") for code in ("1001", "1002", "1003"))


def three_agencies() -> tuple[list[MemberSpec], list[ServerSpec]]:
    """Agencies A and C consume, through ss1 and ss3, the registry that agency B provides through ss2."""
    registry_ = B.subsystem("registry")
    members = [MemberSpec(id=A, name="Agency A", subsystems=("consumer",)),
               MemberSpec(id=B, name="Agency B", subsystems=("registry",)),
               MemberSpec(id=C, name="Agency C", subsystems=("consumer",))]
    servers = [ServerSpec(id=A.server("ss1"), clients=(A.subsystem("consumer"),)),
               ServerSpec(id=B.server("ss2"), clients=(registry_,),
                          services={registry_.service("persons"): "persons"}),
               ServerSpec(id=C.server("ss3"), clients=(C.subsystem("consumer"),))]
    return members, servers


@dataclass
class World:
    fed: Federation
    clock: ShiftClock
    servers: list[SecurityServer]
    tmp: Path

    def witness(self, ss: SecurityServer) -> WitnessEndpoint:
        assert ss.witness is not None
        return ss.witness

    def witness_name(self, ss: SecurityServer) -> str:
        return self.witness(ss).signer.key.name


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("witnessfed")
    clock = ShiftClock()
    fed = await start_federation(
        tmp / "fed", clock=clock, layout=three_agencies(), witness=True,
        server_overrides={"checkpoint_interval_seconds": 3600.0, "checkpoint_max_records": 10**6},
    )
    try:
        servers = [fed.server(code) for code in ("ss1", "ss2", "ss3")]
        for ss in servers:
            assert ss.pusher is not None and ss.witness is not None  # [witness] push = true by default
            # rounds are driven by the test; failures retry at the next round
            ss.pusher.settings = PushSettings(interval_seconds=3600, backoff_min_seconds=0.001,
                                              backoff_max_seconds=0.001)
        # every log is witnessed by the other two agencies, quorum 2
        for ss in servers:
            await registry.set_witness_policy(
                fed.central.engine, ss.server_id, quorum=2, instance="DEV",
                witnesses=[registry.WitnessSpec(vkey=other.witness.signer.key.vkey,  # type: ignore[union-attr]
                                                url=f"https://{other.server_address}/witness", server=other.server_id)
                           for other in servers if other is not ss])
        await fed.publish_and_refresh()
        yield World(fed=fed, clock=clock, servers=servers, tmp=tmp)
    finally:
        await fed.close()


async def run(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def exchange_and_checkpoint(world: World) -> None:
    ss1, _, ss3 = world.servers
    assert (await call(ss1, f"{PERSONS}/?limit=1")).status == 200
    assert (await call(ss3, f"{PERSONS}/?limit=1", client="DEV/GOV/1003/consumer")).status == 200
    for ss in world.servers:
        assert ss.checkpointer is not None
        made = await ss.checkpointer.run_once(world.clock(), force=True)
        assert made.checkpoint is not None and made.stamp_error is None, made


async def push_all(world: World) -> None:
    for ss in world.servers:
        assert ss.pusher is not None
        await ss.pusher.run_once()


async def test_three_agencies_witness_each_other_and_an_archive_verifies_offline(world: World) -> None:
    for _ in range(2):  # the second round pushes with old > 0 and a consistency proof
        await exchange_and_checkpoint(world)
        await push_all(world)
    # (1) Every checkpoint of every server carries the cosignatures of the two other agencies' witnesses.
    for ss in world.servers:
        others = sorted(world.witness_name(o) for o in world.servers if o is not ss)
        for c in await all_checkpoints(ss.messagelog, ss.origin):
            kept = await ss.messagelog.cosignatures(ss.origin, c.size)
            assert sorted(k.cosignature.name for k in kept) == others, (ss.origin, c.size)
        assert ss.pusher is not None and ss.pusher.lag_seconds(world.clock()) == {
            f"{ss.origin}/messagelog": 0.0, f"{ss.server_id}/audit": 0.0}
        assert ss.health is not None
        witnessing = next(c for c in await ss.health.checks() if c.name == "witnessing")
        assert witnessing.ok and not witnessing.warning, witnessing
    # (1a) In the C2SP form, the note with its cosignature lines appended, the log's key and each witness's verify.
    ss2 = world.servers[1]
    latest = await ss2.messagelog.latest_checkpoint(ss2.origin)
    assert latest is not None
    cosigned = latest.note + b"".join(k.cosignature.line() for k in await ss2.messagelog.cosignatures(
        ss2.origin, latest.size))
    verify_checkpoint(cosigned, x509.load_der_x509_certificate(latest.signing_cert), origin=f"{ss2.origin}/messagelog")
    keys = {world.witness_name(o): world.witness(o).signer.key for o in world.servers if o is not ss2}
    lines = [parse_line(line) for line in cosigned.decode().splitlines() if line.split(" ")[1:2] in (
        [name] for name in keys)]
    assert set(verified_witnesses(parse_note(cosigned).text, lines, keys)) == set(keys)
    print(cosigned.decode())  # the cosigned checkpoint of docs/witness.md section 4
    # (2) The provider's archive, exported by the CLI, verifies offline with only the anchor, quorum included.
    archive = world.tmp / "ss2.zip"
    rc, out, err = await run(*GATEWAY, "-c", str(world.fed.workdir / "ss2.toml"), "log", "export", "--out",
                             str(archive))
    assert rc == 0, err
    rc, out, err = await run(*GATEWAY, "log", "verify", str(archive), "--anchor", str(world.fed.anchor_path),
                             "--workers", "1")
    assert rc == 0, out + err
    assert "witnesses: policy quorum 2 of 2 witnesses (DEV/GOV/1001/ss1/witness, DEV/GOV/1003/ss3/witness" in out
    assert "2 of 2 verified checkpoints cosigned by a quorum of 2" in out and "RESULT: OK" in out
    # (3) The operator's listing names the witnesses of each checkpoint.
    rc, out, err = await run(*GATEWAY, "-c", str(world.fed.workdir / "ss2.toml"), "log", "checkpoints")
    assert rc == 0, err
    assert {tuple(c["cosigned_by"]) for c in json.loads(out)["checkpoints"]} == {
        ("DEV/GOV/1001/ss1/witness", "DEV/GOV/1003/ss3/witness")}


async def test_a_witness_that_is_down_shows_as_lag_and_a_readiness_warning(world: World) -> None:
    ss1, ss3 = world.servers[0], world.servers[2]
    assert ss1.pusher is not None and ss1.health is not None and ss3.context is not None
    endpoint = world.witness(ss3)
    ss3.context.witness = None  # ss3's witness is off: its path is answered like any other non-X-Road path
    try:
        await exchange_and_checkpoint(world)
        await ss1.pusher.run_once()  # (the server's own task may have made this round already: look at the state)
        origin = f"{ss1.origin}/messagelog"
        latest = await ss1.messagelog.latest_checkpoint(ss1.origin)
        assert latest is not None
        known = ss1.pusher.logs[origin].witnesses
        assert latest.size in known[world.witness_name(world.servers[1])].cosigned
        assert known[world.witness_name(ss3)].last_outcome == "refused", known
        ss1.health.lag_warning_seconds = 5.0
        world.clock.advance(10)
        assert ss1.pusher.lag_seconds(world.clock())[origin] >= 10
        checks = {c.name: c for c in await ss1.health.checks()}
        assert checks["witnessing"].ok and checks["witnessing"].warning, checks["witnessing"]
        assert "not cosigned by the witness quorum for longer than lag_warning_seconds" in checks["witnessing"].detail
        assert all(c.ok for c in checks.values())  # a warning, never 503
        ss1.health.refresh_gauges()
        assert ss1.metrics.registry.get_sample_value("gateway_witness_lag_seconds", {"origin": origin}) >= 10
        assert ss1.metrics.registry.get_sample_value(
            "gateway_witness_pushes_total", {"witness": world.witness_name(ss3), "outcome": "refused"}) >= 1
    finally:
        ss3.context.witness = endpoint
        ss1.health.lag_warning_seconds = 900.0
    await push_all(world)
    assert ss1.pusher.lag_seconds(world.clock()) == {f"{ss1.origin}/messagelog": 0.0, f"{ss1.server_id}/audit": 0.0}


async def test_fork_drill_witnesses_refuse_and_verify_reports_the_split_view(world: World) -> None:
    ss2 = world.servers[1]
    real = None
    while real is None or real.size < 8:  # (this test also runs alone)
        await exchange_and_checkpoint(world)
        await push_all(world)
        real = await ss2.messagelog.latest_checkpoint(ss2.origin)
    assert ss2.checkpointer is not None
    # (1) The forked history: the same records, the last two exchanges in the other order, in a second database,
    #     checkpointed and timestamped with ss2's real signing key at the size the witnesses have cosigned.
    stored = await ss2.messagelog.read(ss2.origin, start=0, limit=real.size)
    n = real.size
    forked = [*stored[:n - 4], *stored[n - 2:], *stored[n - 4:n - 2]]
    engine = make_engine(f"sqlite+aiosqlite:///{world.tmp / 'fork.db'}")
    await migrate_messagelog(engine)
    fork = SqlMessageLogStore(engine)
    try:
        for r in forked:
            await fork.append(r.decode())
        fork_cp = Checkpointer(store=fork, origin=ss2.origin, signer=ss2.checkpointer.signer,
                               conf=lambda: ss2.globalconf.current, fetch=HttpTimestampFetcher(ss2.http))
        made = await fork_cp.run_once(world.clock(), force=True)
        assert made.checkpoint is not None and made.checkpoint.size == n and made.stamped == (n,)
        assert made.checkpoint.root_hash != real.root_hash
        # (2) Pushed to ss2's witnesses as ss2 itself would: both refuse it (422) and keep the forked note.
        assert ss2.pusher is not None
        pusher = Pusher(sources=[MessageLogSource(fork, ss2.origin)], server_id=ss2.server_id,
                        conf=lambda: ss2.globalconf.current, transport=ss2.pusher._transport, clock=world.clock)
        results = await pusher.run_once()
        assert [(r.outcome, r.error.split(":")[0]) for r in results] == [("refused", "HTTP 422")] * 2, results
        assert await fork.cosignatures(ss2.origin) == []
        for witness_host in (world.servers[0], world.servers[2]):
            rows, _ = await world.witness(witness_host).store.evidence()
            kept = rows[0].evidence
            assert (kept.note, kept.stored_note, kept.peer) == (made.checkpoint.note, real.note, str(ss2.server_id))
        # (3) Both archives: the real one (CLI export) and the forked one (the same export code).
        real_zip, fork_zip = world.tmp / "real.zip", world.tmp / "fork.zip"
        rc, _, err = await run(*GATEWAY, "-c", str(world.fed.workdir / "ss2.toml"), "log", "export", "--out",
                               str(real_zip))
        assert rc == 0, err
        await write_range(fork, ss2.origin, fork_zip, start=0, end=n,
                          checkpoints=await all_checkpoints(fork, ss2.origin),
                          globalconfs=[ss2.globalconf.cache_path.read_bytes()], selection={}, now=world.clock())
    finally:
        await fork.close()
        await engine.dispose()
    anchor = str(world.fed.anchor_path)
    # the forked archive alone: signed and stamped, but its witnesses never cosigned it
    rc, out, _ = await run(*GATEWAY, "log", "verify", str(fork_zip), "--anchor", anchor, "--workers", "1")
    assert rc == 1 and f"checkpoint 1 (size {n}): witness-quorum: cosigned by 0 witness(es)" in out, out
    # (4) Either archive against the other: the split view, with both signed notes as evidence.
    for first, second in ((real_zip, fork_zip), (fork_zip, real_zip)):
        rc, out, _ = await run(*GATEWAY, "log", "verify", str(first), "--anchor", anchor, "--against", str(second),
                               "--workers", "1")
        assert rc == 1, out
        assert f"FAIL split view: two checkpoints of {ss2.origin} at size {n} with different roots" in out, out
        assert out.count(f"— {ss2.origin}/messagelog ") >= 2  # both notes, each with the log's signature
        assert f"cosigned, in {real_zip}, by:" in out  # the real one, with its witnesses' cosignatures
        assert "RESULT: FAILED, 1 split view(s)" in out
    print(out)  # the note's example output (docs/witness.md section 6)
    # (5) The same as JSON: both notes, the kind, and each archive's findings.
    rc, out, _ = await run(*GATEWAY, "log", "verify", str(real_zip), "--anchor", anchor, "--against", str(fork_zip),
                           "--workers", "1", "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["ok"] is False and [a["ok"] for a in doc["archives"]] == [True, False]
    (view,) = doc["split_views"]
    assert view["kind"] == "same-size" and {view["first"]["note"], view["second"]["note"]} == {
        real.note.decode(), made.checkpoint.note.decode()}
    assert doc["archives"][0]["witnesses"]["quorum"] == 2


async def test_a_witness_whose_tls_certificate_is_not_the_policy_servers_is_refused(world: World) -> None:
    ss1, ss2, ss3 = world.servers
    assert ss2.pusher is not None
    transport = ss2.pusher._transport
    # the URL of ss3's witness, but a policy that says ss1 runs it: the TLS check refuses before sending
    claimed = Witness(key=world.witness(ss3).signer.key, url=f"https://{ss3.server_address}/witness",
                      server=ss1.server_id)
    if await ss2.messagelog.latest_checkpoint(ss2.origin) is None:  # (this test also runs alone)
        await exchange_and_checkpoint(world)
    latest = await ss2.messagelog.latest_checkpoint(ss2.origin)
    assert latest is not None
    # (the check runs after the handshake and before a byte of the request is written: gateway.proxy.http)
    with pytest.raises(PeerError, match=f"registered for {ss3.server_id}, not for {ss1.server_id}"):
        await transport.add_checkpoint(claimed, request_body(0, [], latest.note), log_certificate=latest.signing_cert,
                                       timeout_seconds=5)


async def test_the_audit_logs_are_witnessed_too_and_an_audit_archive_verifies_offline(world: World) -> None:
    # each server's audit log (docs/witness.md section 7) goes to the same witnesses as its message log
    for n in range(2):  # the second round pushes with old > 0 and a consistency proof
        for ss in world.servers:
            await ss.admin_store.write_audit(AuditEntry(
                at=world.clock(), actor="alice", auth="jwt", remote="127.0.0.1", action="addClient", method="POST",
                path="/api/v1/clients", result="success", status=201, details={"round": n}))
            assert ss.audit_checkpointer is not None
            made = await ss.audit_checkpointer.run_once(world.clock(), force=True)
            assert made.checkpoint is not None and made.stamp_error is None, made
        await push_all(world)
    for ss in world.servers:
        others = [o for o in world.servers if o is not ss]
        for c in await ss.admin_store.audit_checkpoints():
            kept = await ss.admin_store.audit_cosignatures(c.size)
            assert sorted(parse_line(line).name for _, line in kept) == sorted(map(world.witness_name, others)), (
                ss.server_id, c.size)
        assert ss.pusher is not None and ss.pusher.lag_seconds(world.clock())[f"{ss.server_id}/audit"] == 0.0
        latest = await ss.admin_store.latest_audit_checkpoint()
        assert latest is not None
        for o in others:  # each witness keeps the audit log's state durably, as it does a message log's
            state = await world.witness(o).store.get(f"{ss.server_id}/audit")
            assert state is not None and (state.size, state.root_hash) == (latest.size, latest.root_hash)
    # the provider's audit archive, exported by the CLI, verifies offline with only the anchor, quorum included
    archive = world.tmp / "ss2-audit.zip"
    rc, out, err = await run(*GATEWAY, "-c", str(world.fed.workdir / "ss2.toml"), "admin", "audit", "export",
                             "--out", str(archive))
    assert rc == 0, err
    rc, out, err = await run(*GATEWAY, "log", "verify", str(archive), "--anchor", str(world.fed.anchor_path))
    assert rc == 0, out + err
    assert ("witnesses: checkpoint" in out and "cosigned by 2 of 2 witnesses (DEV/GOV/1001/ss1/witness, "
            "DEV/GOV/1003/ss3/witness); quorum 2" in out and "RESULT: OK" in out), out
