"""The witness endpoint in a running federation (docs/witness.md section 1): ss1 pushes real checkpoints of its
message log to ss2's witness over mutual TLS on the server-to-server port, built by hand as a pusher would.

The federation publishes no witness policy of its own here (the central server's policy management is another
part): ss2's witness reads the real global configuration with a policy added, "ss1's logs are witnessed by ss2".
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from exchange_kit import ShiftClock, auth_ssl, call

from gateway.dev.demo import Federation, start_federation
from gateway.globalconf.model import GlobalConf
from gateway.messagelog.checkpoint import Checkpoint, checkpoint_origin, sign_checkpoint
from gateway.messagelog.store import StoredCheckpoint
from gateway.server.runtime import SecurityServer
from gateway.trust.cosignature import parse_line, verify
from gateway.witness.http import WitnessEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PERSONS = "DEV/GOV/1002/registry/persons"
GATEWAY = [str(Path(sys.executable).parent / "gateway")]  # the console script of this venv


@dataclass
class Answer:
    status: int
    content_type: str
    allow: str | None
    body: bytes


@dataclass
class World:
    fed: Federation
    ss1: SecurityServer
    ss2: SecurityServer
    witness: WitnessEndpoint
    ss1_ssl: ssl.SSLContext
    ss2_ssl: ssl.SSLContext

    def with_policy(self, conf: GlobalConf) -> GlobalConf:
        d = conf.to_dict()
        d["witness_policies"] = [{"server": str(self.ss1.server_id), "quorum": 1, "witnesses": [
            {"vkey": self.witness.signer.key.vkey, "url": f"https://{self.ss2.server_address}/witness",
             "server": str(self.ss2.server_id)}]}]
        return GlobalConf.from_dict(d)

    async def checkpoint(self, exchanges: int = 1) -> StoredCheckpoint:
        """A new real checkpoint of ss1's message log, after ``exchanges`` exchanges."""
        for _ in range(exchanges):
            assert (await call(self.ss1, f"{PERSONS}/?limit=1")).status == 200
        assert self.ss1.checkpointer is not None and self.ss1.context is not None
        await self.ss1.checkpointer.run_once(self.ss1.clock(), force=True)
        cp = await self.ss1.messagelog.latest_checkpoint(self.ss1.context.origin)
        assert cp is not None
        return cp

    async def witnessed(self) -> Any:
        """The witness's state of ss1's log, after pushing a first checkpoint if it has none (so that each test
        stands on its own, in any order)."""
        assert self.ss1.context is not None
        origin = checkpoint_origin(self.ss1.context.origin)
        stored = await self.witness.store.get(origin)
        if stored is None:
            first = await self.checkpoint()
            assert (await self.push(0, first.note)).status == 200
            stored = await self.witness.store.get(origin)
        assert stored is not None
        return stored

    async def push(self, old: int, note: bytes, proof: Sequence[bytes] = (), *, cert: bytes | None = None,
                   ssl_context: ssl.SSLContext | None = None, method: str = "POST",
                   path: str = "/witness/add-checkpoint", header: bool = True, body: bytes | None = None) -> Answer:
        data = body if body is not None else ("\n".join(
            [f"old {old}", *(base64.b64encode(h).decode() for h in proof)]) + "\n\n").encode() + note
        headers = {}
        if header:
            assert self.ss1.context is not None
            headers["X-Gateway-Log-Certificate"] = base64.b64encode(cert or self.ss1.context.sign_cert_der).decode()
        async with aiohttp.ClientSession() as session, session.request(
            method, f"https://{self.ss2.server_address}{path}", data=data, headers=headers,
            ssl=ssl_context or self.ss1_ssl,
        ) as resp:
            return Answer(resp.status, resp.headers.get("Content-Type", ""), resp.headers.get("Allow"),
                          await resp.read())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("witness")
    fed = await start_federation(
        tmp / "fed", clock=ShiftClock(), witness=True,
        server_overrides={"checkpoint_interval_seconds": 3600.0, "checkpoint_max_records": 10**6},
    )
    try:
        ss1, ss2 = fed.server("ss1"), fed.server("ss2")
        assert ss2.witness is not None and ss2.context is not None
        w = World(fed=fed, ss1=ss1, ss2=ss2, witness=ss2.witness, ss1_ssl=auth_ssl(ss1, fed.ca),
                  ss2_ssl=auth_ssl(ss2, fed.ca))
        real: Callable[[], GlobalConf] = ss2.context.conf
        ss2.witness.conf = lambda: w.with_policy(real())
        yield w
    finally:
        await fed.close()


def text_of(note: bytes) -> bytes:
    return note.split(b"\n\n")[0] + b"\n"


async def test_pushed_checkpoints_are_cosigned_durably_and_forks_refused(world: World) -> None:
    ss1 = world.ss1
    assert ss1.context is not None
    origin = checkpoint_origin(ss1.context.origin)
    # (1) a checkpoint from the size the witness knows (0 if none): one cosignature line that verifies
    known = await world.witness.store.get(origin)
    _, evidence_before = await world.witness.store.evidence(origin=origin)
    first = await world.checkpoint()
    old = 0 if known is None else known.size
    a = await world.push(old, first.note,
                         await ss1.messagelog.consistency_proof(ss1.context.origin, old, first.size) if old else ())
    assert a.status == 200, a.body
    cosig = parse_line(a.body)
    assert verify(cosig, text_of(first.note), world.witness.signer.key) > 0
    stored = await world.witness.store.get(origin)
    assert stored is not None and stored.size == first.size and stored.note == first.note  # persisted
    # (2) a larger checkpoint with the log's own consistency proof
    second = await world.checkpoint(2)
    proof = await ss1.messagelog.consistency_proof(ss1.context.origin, first.size, second.size)
    a = await world.push(first.size, second.note, proof)
    assert a.status == 200, a.body
    assert verify(parse_line(a.body), text_of(second.note), world.witness.signer.key) > 0
    # (3) an old size the witness does not know: 409 with the size it knows, as text/x.tlog.size
    a = await world.push(first.size, second.note, proof)
    assert (a.status, a.body, a.content_type) == (409, f"{second.size}\n".encode(), "text/x.tlog.size")
    # (4) a fork: the same size with another root, signed with ss1's real key: 422, evidence kept
    forked = sign_checkpoint(Checkpoint(origin=origin, size=second.size, root_hash=b"\x07" * 32), ss1.context.signer)
    a = await world.push(second.size, forked)
    assert a.status == 422 and b"two histories" in a.body, a.body
    rows, total = await world.witness.store.evidence(origin=origin)
    assert total == evidence_before + 1 and rows[0].evidence.reason == "fork"
    assert rows[0].evidence.note == forked and rows[0].evidence.stored_note == second.note
    # the state is unchanged by refusals
    stored = await world.witness.store.get(origin)
    assert stored is not None and stored.size == second.size and stored.note == second.note
    # (5) the answers were counted by status
    counter = world.ss2.metrics.witness_requests
    assert counter.labels("200")._value.get() >= 2 and counter.labels("422")._value.get() >= 1


async def test_two_pushes_from_one_old_size_at_once_one_is_cosigned(world: World) -> None:
    assert world.ss1.context is not None
    origin = checkpoint_origin(world.ss1.context.origin)
    stored = await world.witnessed()
    cp = await world.checkpoint()
    proof = await world.ss1.messagelog.consistency_proof(world.ss1.context.origin, stored.size, cp.size)
    answers = await asyncio.gather(*(world.push(stored.size, cp.note, proof) for _ in range(4)))
    assert sorted(a.status for a in answers) == [200, 409, 409, 409], [a.body for a in answers]
    assert {a.body for a in answers if a.status == 409} == {f"{cp.size}\n".encode()}
    after = await world.witness.store.get(origin)
    assert after is not None and after.size == cp.size


async def test_refusals_over_the_wire(world: World) -> None:
    assert world.ss1.context is not None
    cp = await world.checkpoint()
    # a C2SP client without our certificate header: 403 saying what is missing
    a = await world.push(0, cp.note, header=False)
    assert a.status == 403 and b"X-Gateway-Log-Certificate" in a.body
    # ss2 pushing ss1's checkpoint (another server's origin): 403
    a = await world.push(0, cp.note, ssl_context=world.ss2_ssl)
    assert a.status == 403 and b"not of the calling server DEV/GOV/1002/ss2" in a.body, a.body
    # an origin with no policy naming this witness: 404
    real = world.witness.conf
    assert world.ss2.context is not None
    world.witness.conf = world.ss2.context.conf  # the federation's own: no witness policy
    try:
        a = await world.push(0, cp.note)
        assert a.status == 404 and b"no witness policy" in a.body, a.body
    finally:
        world.witness.conf = real
    # HTTP-level refusals: method, path, size, form
    a = await world.push(0, cp.note, method="GET")
    assert (a.status, a.allow) == (405, "POST")
    a = await world.push(0, cp.note, path="/witness/other")
    assert a.status == 404
    a = await world.push(0, b"", body=b"old 0\n\n" + b"x" * (world.witness.max_request_bytes + 1))
    assert a.status == 413, a.body
    a = await world.push(0, b"", body=b"old x\n\n")
    assert a.status == 400 and b"must start with 'old <size>'" in a.body


async def test_a_server_without_the_witness_answers_the_path_as_not_x_road(world: World) -> None:
    # ss1 has its witness on too (witness=True); switched off in its proxy context, the path is not served.
    assert world.ss1.context is not None
    saved = world.ss1.context.witness
    world.ss1.context.witness = None
    try:
        async with aiohttp.ClientSession() as session, session.post(
            f"https://{world.ss1.server_address}/witness/add-checkpoint", data=b"old 0\n\n", ssl=world.ss2_ssl,
        ) as resp:
            assert resp.status == 400
            assert resp.headers.get("X-Road-Error") == "Client.BadRequest"
    finally:
        world.ss1.context.witness = saved


async def _admin_get(ss: SecurityServer, path: str, **query: str) -> tuple[int, Any]:
    if not await _has_user(ss):
        await ss.admin_store.add_user("observer-w", "a long enough password", frozenset({"observer"}),
                                      now=datetime.now(UTC))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{ss.admin_url}/api/v1/login",
                             json={"username": "observer-w", "password": "a long enough password"}) as resp:
            assert resp.status == 200, await resp.text()
            token = (await resp.json())["token"]
        async with http.get(f"{ss.admin_url}{path}", params=query,
                            headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.json()


async def _has_user(ss: SecurityServer) -> bool:
    return any(u.username == "observer-w" for u in await ss.admin_store.list_users())


async def test_admin_api_and_cli_show_the_logs_and_the_evidence(world: World) -> None:
    assert world.ss1.context is not None
    origin = checkpoint_origin(world.ss1.context.origin)
    stored = await world.witnessed()
    forked = sign_checkpoint(Checkpoint(origin=origin, size=stored.size, root_hash=b"\x09" * 32),
                             world.ss1.context.signer)
    assert (await world.push(stored.size, forked)).status == 422
    status, doc = await _admin_get(world.ss2, "/api/v1/witness")
    assert status == 200 and doc["enabled"] is True and doc["vkey"] == world.witness.signer.key.vkey
    assert doc["name"] == "DEV/GOV/1002/ss2/witness"
    found = [entry for entry in doc["logs"] if entry["origin"] == origin]
    assert len(found) == 1, (origin, doc)
    (log,) = found
    stored = await world.witness.store.get(origin)
    assert stored is not None and log["size"] == stored.size
    status, page = await _admin_get(world.ss2, "/api/v1/witness/evidence", origin=origin)
    assert status == 200 and page["total"] >= 1 and page["items"][0]["reason"] == "fork"
    assert page["items"][0]["stored_note"].startswith(f"{origin}\n")
    status, doc = await _admin_get(world.ss1, "/api/v1/witness")  # ss1's witness: on, nothing cosigned
    assert status == 200 and doc["enabled"] is True and doc["logs"] == []
    # the CLI reads the same tables from the server's database, and finds the evidence (exit code 1)
    config = str(world.fed.workdir / "ss2.toml")
    out = subprocess.run([*GATEWAY, "-c", config, "witness", "evidence", "--json"], capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert json.loads(out.stdout)["evidence"][0]["origin"] == origin
    out = subprocess.run([*GATEWAY, "-c", config, "witness", "logs"], capture_output=True, text=True)
    assert out.returncode == 0 and origin in out.stdout, out.stderr
    # the vkey from the key file in state_dir (plain key files), as the admin API shows it
    out = subprocess.run([*GATEWAY, "-c", config, "token", "witness-key"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == world.witness.signer.key.vkey, out.stderr
