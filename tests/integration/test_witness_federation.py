"""Three agencies witness each other's message logs (issue 14, parts 3 and 5; docs/witness.md sections 4-6).

A federation of three security servers of three members, real mutual TLS on loopback, real SQLite, the
development TSA. Each server's log is witnessed by the other two with a quorum of two (the policies go through
the central registry into the signed global configuration). Each server runs a C2SP witness here in the test
(c2sp.org/tlog-witness@v1.0.0 over TLS with the hosting server's registered authentication certificate,
cosigning with gateway.trust.cosignature): the pusher reaches it exactly as it would reach the server port's
witness endpoint. Exchanges happen; every checkpoint reaches its quorum; an exported archive verifies offline
with only the anchor (``gateway log verify``). The fork drill: the provider's server is made to sign a forked
history with its real signing key; its witnesses refuse it (422) and keep the evidence, and ``gateway log verify``
on either archive, against the other, reports the split view with both signed notes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from exchange_kit import ShiftClock, call

from gateway.admin.store import AuditEntry
from gateway.central import registry
from gateway.dev.demo import Federation, MemberSpec, ServerSpec, start_federation
from gateway.errors import PeerError, TrustError
from gateway.globalconf.model import Witness
from gateway.identifiers import MemberId, SecurityServerId
from gateway.messagelog import merkle
from gateway.messagelog.checkpoint import ORIGIN_SUFFIX, parse_checkpoint, parse_note, verify_checkpoint
from gateway.messagelog.checkpointer import Checkpointer, HttpTimestampFetcher
from gateway.messagelog.export import all_checkpoints, write_range
from gateway.messagelog.store import SqlMessageLogStore, migrate_messagelog
from gateway.server.keyfiles import KeyFiles
from gateway.server.runtime import SecurityServer
from gateway.storage.db import make_engine
from gateway.trust.cosignature import WitnessKey, cosign, parse_line
from gateway.witness.pusher import LOG_CERT_HEADER, MessageLogSource, Pusher, PushSettings, request_body
from gateway.witness.source import AUDIT_SUFFIX

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
class LoopbackWitness:
    """A C2SP witness on loopback TLS with ``host``'s authentication certificate (module docstring)."""

    host: SecurityServer
    key: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)
    known: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # origin -> (size, root), last cosigned
    evidence: list[tuple[int, bytes]] = field(default_factory=list)  # (status, note) of refused checkpoints
    url: str = ""
    down: bool = False
    requests: int = 0
    runner: web.AppRunner | None = None

    @property
    def name(self) -> str:
        return f"{self.host.server_id}/witness"

    @property
    def public(self) -> WitnessKey:
        return WitnessKey.of_private_key(self.name, self.key)

    async def start(self, ca_pem: Path) -> None:
        files = KeyFiles(dir=Path(self.host.settings.server.state_dir))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(files.auth_cert), str(files.auth_key))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(ca_pem))
        app = web.Application()
        app.router.add_post("/witness/add-checkpoint", self.add_checkpoint)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"https://127.0.0.1:{port}/witness"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def _text(self, status: int, text: str, ctype: str = "text/plain") -> web.Response:
        return web.Response(status=status, body=text.encode(), content_type=ctype)

    async def add_checkpoint(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.down:
            return self._text(503, "witness down for the test")
        conf = self.host.globalconf.current
        assert conf is not None
        # (1) the TLS client is a registered security server, and the log is its own
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        peer = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        client = conf.server_by_auth_cert(hashlib.sha256(peer).hexdigest()) if peer else None
        body = await request.read()
        head, _, note = body.partition(b"\n\n")
        lines = head.split(b"\n")
        try:
            signed = parse_note(note)
            head_cp = parse_checkpoint(signed.text)
            old = int(lines[0].removeprefix(b"old "))
            proof = [base64.b64decode(h) for h in lines[1:]]
        except (TrustError, ValueError) as e:
            return self._text(400, f"malformed request: {e}")
        # a message log's origin, or an audit log's (docs/witness.md section 7)
        logger = SecurityServerId.parse(head_cp.origin.removesuffix(ORIGIN_SUFFIX).removesuffix(AUDIT_SUFFIX))
        if client is None or client.id != logger:
            return self._text(403, "the TLS client is not the logging server")
        policy = conf.witness_policy(logger)
        if policy is None or self.name not in policy.keys():
            return self._text(404, "no witness policy names this witness for the origin")
        # (2) the log's signature, with the certificate the pusher sent
        cert_b64 = request.headers.get(LOG_CERT_HEADER)
        if cert_b64 is None:
            return self._text(403, f"no {LOG_CERT_HEADER} header")
        try:
            verify_checkpoint(note, x509.load_der_x509_certificate(base64.b64decode(cert_b64)), origin=head_cp.origin)
        except (TrustError, ValueError) as e:
            return self._text(403, f"log signature: {e}")
        # (3) sizes and consistency (c2sp.org/tlog-witness@v1.0.0)
        size, root = self.known.get(head_cp.origin, (0, merkle.root([])))
        if old > head_cp.size:
            return self._text(400, "old size is larger than the checkpoint's")
        if old != size:
            return self._text(409, f"{size}\n", "text/x.tlog.size")
        if old == head_cp.size and root != head_cp.root_hash:
            self.evidence.append((422, note))
            return self._text(422, "same size, another root: a fork")
        if 0 < old < head_cp.size:
            try:
                merkle.verify_consistency(old, head_cp.size, root, head_cp.root_hash, proof)
            except TrustError as e:
                self.evidence.append((422, note))
                return self._text(422, f"consistency proof fails: {e.message}")
        self.known[head_cp.origin] = (head_cp.size, head_cp.root_hash)
        line = cosign(signed.text, self.name, self.key, int(self.host.clock().timestamp())).line()
        return web.Response(status=200, body=line, content_type="text/x.tlog.cosignature")


@dataclass
class World:
    fed: Federation
    clock: ShiftClock
    servers: list[SecurityServer]
    witnesses: dict[SecurityServerId, LoopbackWitness]
    tmp: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("witnessfed")
    clock = ShiftClock()
    fed = await start_federation(
        tmp / "fed", clock=clock, layout=three_agencies(),
        server_overrides={"checkpoint_interval_seconds": 3600.0, "checkpoint_max_records": 10**6},
    )
    witnesses: dict[SecurityServerId, LoopbackWitness] = {}
    try:
        servers = [fed.server(code) for code in ("ss1", "ss2", "ss3")]
        for ss in servers:
            w = witnesses[ss.server_id] = LoopbackWitness(host=ss)
            await w.start(fed.workdir / "pki" / "ca.pem")
            assert ss.pusher is not None  # [witness] push = true by default
            # rounds are driven by the test; failures retry at the next round
            ss.pusher.settings = PushSettings(interval_seconds=3600, backoff_min_seconds=0.001,
                                              backoff_max_seconds=0.001)
        # every log is witnessed by the other two agencies, quorum 2
        for ss in servers:
            others = [w for sid, w in witnesses.items() if sid != ss.server_id]
            await registry.set_witness_policy(
                fed.central.engine, ss.server_id, quorum=2, instance="DEV",
                witnesses=[registry.WitnessSpec(vkey=w.public.vkey, url=w.url, server=w.host.server_id)
                           for w in others])
        await fed.publish_and_refresh()
        yield World(fed=fed, clock=clock, servers=servers, witnesses=witnesses, tmp=tmp)
    finally:
        for w in witnesses.values():
            await w.close()
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
        others = sorted(w.name for sid, w in world.witnesses.items() if sid != ss.server_id)
        for c in await all_checkpoints(ss.messagelog, ss.origin):
            kept = await ss.messagelog.cosignatures(ss.origin, c.size)
            assert sorted(k.cosignature.name for k in kept) == others, (ss.origin, c.size)
        assert ss.pusher is not None and ss.pusher.lag_seconds(world.clock()) == {
            f"{ss.origin}/messagelog": 0.0, f"{ss.server_id}/audit": 0.0}
        assert ss.health is not None
        witnessing = next(c for c in await ss.health.checks() if c.name == "witnessing")
        assert witnessing.ok and not witnessing.warning, witnessing
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


async def test_a_witness_that_is_down_shows_as_lag_and_a_readiness_warning(world: World) -> None:
    ss1 = world.servers[0]
    down = world.witnesses[world.servers[2].server_id]
    assert ss1.pusher is not None and ss1.health is not None
    down.down = True
    try:
        await exchange_and_checkpoint(world)
        results = await ss1.pusher.run_once()
        assert sorted(r.outcome for r in results) == ["cosigned", "refused"], results
        origin = f"{ss1.origin}/messagelog"
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
            "gateway_witness_pushes_total", {"witness": down.name, "outcome": "refused"}) >= 1
    finally:
        down.down = False
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
        for sid in (world.servers[0].server_id, world.servers[2].server_id):
            assert world.witnesses[sid].evidence[-1] == (422, made.checkpoint.note)
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


async def test_a_witness_whose_tls_certificate_is_not_the_policy_servers_is_refused(world: World) -> None:
    ss1, ss2, ss3 = world.servers
    assert ss2.pusher is not None
    transport = ss2.pusher._transport
    impostor = world.witnesses[ss3.server_id]
    # the URL of ss3's witness, but a policy that says ss1 runs it: the TLS check refuses before sending
    claimed = Witness(key=impostor.public, url=impostor.url, server=ss1.server_id)
    if await ss2.messagelog.latest_checkpoint(ss2.origin) is None:  # (this test also runs alone)
        await exchange_and_checkpoint(world)
    latest = await ss2.messagelog.latest_checkpoint(ss2.origin)
    assert latest is not None
    seen = impostor.requests
    with pytest.raises(PeerError, match=f"registered for {ss3.server_id}, not for {ss1.server_id}"):
        await transport.add_checkpoint(claimed, request_body(0, [], latest.note), log_certificate=latest.signing_cert,
                                       timeout_seconds=5)
    assert impostor.requests == seen  # nothing reached it


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
        others = sorted(w.name for sid, w in world.witnesses.items() if sid != ss.server_id)
        for c in await ss.admin_store.audit_checkpoints():
            kept = await ss.admin_store.audit_cosignatures(c.size)
            assert sorted(parse_line(line).name for _, line in kept) == others, (ss.server_id, c.size)
        assert ss.pusher is not None and ss.pusher.lag_seconds(world.clock())[f"{ss.server_id}/audit"] == 0.0
        latest = await ss.admin_store.latest_audit_checkpoint()
        assert latest is not None
        for sid, w in world.witnesses.items():
            if sid != ss.server_id:
                assert w.known[f"{ss.server_id}/audit"] == (latest.size, latest.root_hash)
    # the provider's audit archive, exported by the CLI, verifies offline with only the anchor, quorum included
    archive = world.tmp / "ss2-audit.zip"
    rc, out, err = await run(*GATEWAY, "-c", str(world.fed.workdir / "ss2.toml"), "admin", "audit", "export",
                             "--out", str(archive))
    assert rc == 0, err
    rc, out, err = await run(*GATEWAY, "log", "verify", str(archive), "--anchor", str(world.fed.anchor_path))
    assert rc == 0, out + err
    assert ("witnesses: checkpoint" in out and "cosigned by 2 of 2 witnesses (DEV/GOV/1001/ss1/witness, "
            "DEV/GOV/1003/ss3/witness); quorum 2" in out and "RESULT: OK" in out), out
