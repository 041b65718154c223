"""The auditor's message-log routes of the admin API over real HTTP, on SQLite and PostgreSQL: checkpoints with
their timestamps, inclusion and consistency proofs (checked with gateway.messagelog.merkle against the roots
that the signed notes commit to), and the archive download, verified offline as ``gateway log verify`` does."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from admin_kit import AdminHarness, admin_harness
from archive_kit import LogWorld, exchange_records, make_world, signed_checkpoint
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.messagelog import checkpoint as cp
from gateway.messagelog import merkle
from gateway.messagelog.archive import LogArchive
from gateway.messagelog.record import LogRecord
from gateway.messagelog.store import StoredCheckpoint
from gateway.messagelog.verify import verify_archive
from gateway.trust import timestamp

pytestmark = pytest.mark.integration

EXCHANGES = 15  # 30 records
SIZES = (10, 30)  # checkpoints


@dataclass
class Log:
    world: LogWorld
    records: list[LogRecord]


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    world = make_world(tmp_path_factory.mktemp("world"))
    start = world.now - timedelta(minutes=5)
    records: list[LogRecord] = []
    for i in range(EXCHANGES):
        records += exchange_records(world, created=start + timedelta(seconds=10 * i))
    return Log(world=world, records=records)


@pytest.fixture
async def h(database_url: str, tmp_path: Path, log: Log) -> AsyncIterator[AdminHarness]:
    async with admin_harness(database_url, tmp_path) as harness:
        leaves = [(await harness.messagelog.append(r)).leaf_hash for r in log.records]
        tsa_cert = log.world.pki.tsa_cert.public_bytes(Encoding.DER)
        for size in SIZES:
            note, token = signed_checkpoint(log.world, leaves, size)
            tree = merkle.MerkleTree()
            tree.extend(leaves[:size])
            gen_time = timestamp.verify_token(token, hashlib.sha256(note).digest(), log.world.pki.tsa_cert).gen_time
            await harness.messagelog.add_checkpoint(StoredCheckpoint(
                origin=harness.ctx.origin, size=size, root_hash=tree.root(), note=note,
                signing_cert=log.world.consumer.cert.public_bytes(Encoding.DER), frontier=tuple(tree.frontier or ()),
                created=log.world.now, timestamp_token=token, timestamp_time=gen_time, tsa_name="Test TSA",
                tsa_cert=tsa_cert,
            ))
        # the signed global configuration that names the test CA and TSA, as the server keeps it
        harness.ctx.globalconf.cache_path.write_bytes(log.world.envelope)
        yield harness


def signed_root(note_text: str) -> tuple[int, bytes]:
    """Size and root hash as the signed note says (what an auditor trusts, after checking the signature)."""
    head = cp.parse_checkpoint(cp.parse_note(note_text.encode()).text)
    return head.size, head.root_hash


def b64d(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


async def download(h: AdminHarness, token: str, **query: str) -> tuple[int, bytes, Any]:
    async with h.http.get(f"{h.url}/api/v1/messagelog/archive", params=query,
                          headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.read(), resp.headers


async def test_checkpoints_and_their_timestamps(h: AdminHarness, log: Log) -> None:
    auditor = await h.user_token("eve", "auditor")
    status, body = await h.call("listMessageLogCheckpoints", token=auditor)
    assert status == 200
    assert (body["origin"], body["records"], body["pruned_before"], body["next_min_size"]) == (
        h.ctx.origin, 30, 0, None)
    assert [(c["size"], c["timestamped"], c["tsa"]) for c in body["checkpoints"]] == [
        (10, True, "Test TSA"), (30, True, "Test TSA")]
    # pages by size
    status, first = await h.request("GET", "/api/v1/messagelog/checkpoints", token=auditor, params={"limit": "1"})
    assert [c["size"] for c in first["checkpoints"]] == [10] and first["next_min_size"] == 11
    status, second = await h.request("GET", "/api/v1/messagelog/checkpoints", token=auditor,
                                     params={"limit": "1", "min_size": "11"})
    assert [c["size"] for c in second["checkpoints"]] == [30] and second["next_min_size"] is None
    # one checkpoint: note and token, which verify with the certificates given (and trusted through globalconf)
    status, one = await h.call("getMessageLogCheckpoint", params={"size": "30"}, token=auditor)
    assert status == 200 and one["size"] == 30
    assert signed_root(one["note"]) == (30, b64d(one["root_hash"]))
    from cryptography import x509

    cp.verify_checkpoint(one["note"].encode(), x509.load_der_x509_certificate(b64d(one["signing_certificate"])),
                         origin=cp.checkpoint_origin(h.ctx.origin))
    stamped = timestamp.verify_token(b64d(one["timestamp_token"]), hashlib.sha256(one["note"].encode()).digest(),
                                     x509.load_der_x509_certificate(b64d(one["tsa_certificate"])))
    assert one["timestamp_time"] == stamped.gen_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    # every read is audited, with what was read
    entries = await h.audit(action="listMessageLogCheckpoints")
    assert {tuple(e.details["checkpoints"]) for e in entries} == {(10, 30), (10,), (30,)}
    assert all(e.actor == "eve" and e.result == "success" for e in entries)
    assert len(await h.audit(action="getMessageLogCheckpoint")) == 1


async def test_proofs_verify_against_the_signed_roots(h: AdminHarness, log: Log) -> None:
    auditor = await h.user_token("eve", "auditor")
    leaves = [merkle.leaf_hash(r.encode()) for r in log.records]
    for seq, size in [(0, 10), (9, 10), (0, 30), (17, 30), (29, 30)]:
        status, proof = await h.request("GET", "/api/v1/messagelog/proofs/inclusion", token=auditor,
                                        params={"seq": str(seq), "size": str(size)})
        assert status == 200, proof
        signed_size, root = signed_root(proof["checkpoint"])
        assert (proof["seq"], proof["size"], signed_size) == (seq, size, size)
        assert b64d(proof["leaf_hash"]) == leaves[seq]
        merkle.verify_inclusion(leaves[seq], seq, size, [b64d(p) for p in proof["proof"]], root)
    # default: the newest checkpoint
    status, proof = await h.request("GET", "/api/v1/messagelog/proofs/inclusion", token=auditor,
                                    params={"seq": "3"})
    assert status == 200 and proof["size"] == 30
    status, proof = await h.request("GET", "/api/v1/messagelog/proofs/consistency", token=auditor,
                                    params={"old": "10"})
    assert status == 200, proof
    (old_size, old_root), (new_size, new_root) = signed_root(proof["old_checkpoint"]), signed_root(
        proof["new_checkpoint"])
    assert (old_size, new_size) == (proof["old_size"], proof["new_size"]) == (10, 30)
    merkle.verify_consistency(10, 30, old_root, new_root, [b64d(p) for p in proof["proof"]])
    assert [e.details["proof"] for e in await h.audit(action="proveMessageLogConsistency")] == [
        {"old": 10, "new": 30}]
    assert len(await h.audit(action="proveMessageLogInclusion")) == 6


async def test_archive_download_verifies_offline(h: AdminHarness, log: Log, tmp_path: Path) -> None:
    auditor = await h.user_token("eve", "auditor")
    status, data, headers = await download(h, auditor)
    assert status == 200, data[:300]
    assert headers["Content-Type"] == "application/zip"
    assert headers["Content-Disposition"] == 'attachment; filename="messagelog-DEV_GOV_1001_ss1-0-30.zip"'
    path = tmp_path / "all.zip"
    path.write_bytes(data)
    with LogArchive(path) as archive:
        report = verify_archive(archive, log.world.anchor)
    assert report.ok, report.summary()
    assert (report.records_read, report.records_valid, report.checkpoints_verified) == (30, 30, 2)
    # a range: its end moves up to the next checkpoint, so that every record is covered
    status, data, _ = await download(h, auditor, start="12", end="15")
    path.write_bytes(data)
    with LogArchive(path) as archive:
        assert (archive.manifest.start, archive.manifest.end) == (12, 30)
        assert archive.manifest.selection == {"start": 12, "end": 15}
        report = verify_archive(archive, log.world.anchor)
    assert report.ok, report.summary()
    # by time: records 4..9 were created 20 s .. 49 s after the first
    first = log.records[0].created
    t0, t1 = first + timedelta(seconds=20), first + timedelta(seconds=50)
    status, data, _ = await download(h, auditor, **{"from": t0.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                                    "to": t1.strftime("%Y-%m-%dT%H:%M:%SZ")})
    assert status == 200, data[:300]
    path.write_bytes(data)
    with LogArchive(path) as archive:
        assert (archive.manifest.start, archive.manifest.end) == (4, 10)
        assert verify_archive(archive, log.world.anchor).ok
    entries = await h.audit(action="exportMessageLogArchive")
    assert [(e.details["archive"]["start"], e.details["archive"]["end"]) for e in entries] == [
        (4, 10), (12, 30), (0, 30)]  # newest first


async def test_bad_requests_are_named(h: AdminHarness) -> None:
    auditor = await h.user_token("eve", "auditor")
    # (path, query, status, X-Road type, text in message)
    table: list[tuple[str, dict[str, str], int, str, str]] = [
        ("proofs/inclusion", {}, 400, "Client.BadRequest", "query parameter seq is required"),
        ("proofs/inclusion", {"seq": "x1"}, 400, "Client.BadRequest", "'x1' is not a non-negative integer"),
        ("proofs/inclusion", {"seq": "-1"}, 400, "Client.BadRequest", "'-1' is not a non-negative integer"),
        ("proofs/inclusion", {"seq": "30"}, 400, "Client.BadRequest", "record 30 is not in the checkpoint of size 30"),
        ("proofs/inclusion", {"seq": "1", "size": "11"}, 404, "Client.NotFound", "has no checkpoint of size 11"),
        ("proofs/consistency", {}, 400, "Client.BadRequest", "query parameter old is required"),
        ("proofs/consistency", {"old": "30", "new": "10"}, 400, "Client.BadRequest",
         "old checkpoint 30 is larger than new checkpoint 10"),
        ("proofs/consistency", {"old": "12"}, 404, "Client.NotFound", "has no checkpoint of size 12"),
        ("checkpoints/5", {}, 404, "Client.NotFound", "has no checkpoint of size 5"),
        ("checkpoints/x", {}, 400, "Client.BadRequest", "checkpoint size 'x' is not a non-negative integer"),
        ("checkpoints", {"limit": "0"}, 400, "Client.BadRequest", "limit=0 is not in [1, 1000]"),
        ("checkpoints", {"origin": "a b"}, 400, "Client.BadRequest", "must be 1-255 printable ASCII characters"),
        ("archive", {"from": "yesterday"}, 400, "Client.BadRequest", "'yesterday' is not a time"),
        ("archive", {"to": "2026-01-02T03:04:05"}, 400, "Client.BadRequest", "has no time zone"),
        ("archive", {"include_uncovered": "yes"}, 400, "Client.BadRequest", "must be true or false, not 'yes'"),
        ("archive", {"start": "5", "end": "40"}, 400, "Client.BadRequest",
         "range 5..40 is not inside the records 0..30"),
        ("archive", {"from": "2099-01-01T00:00:00Z"}, 404, "Client.NotFound", "no records created in the given time"),
        ("archive", {"origin": "DEV/GOV/1001/other"}, 409, "Client.Conflict",
         "not covered by a checkpoint yet (there is none yet)"),
    ]
    wrong = []
    for path, query, status, xroad_type, text in table:
        got, body = await h.request("GET", f"/api/v1/messagelog/{path}", token=auditor, params=query)
        if (got, body.get("type")) != (status, xroad_type) or text not in body.get("message", ""):
            wrong.append(f"{path} {query}: {got} {body}")
    assert wrong == []
    refused = await h.audit(result="refused")
    assert len(refused) == len(table) and all(e.actor == "eve" for e in refused)


async def test_archive_job_of_the_web_pages_shows_progress_and_its_download_verifies(
    h: AdminHarness, log: Log, tmp_path: Path,
) -> None:
    """The web interface's background archive (gateway.admin.web.exports): planned as the API plans it, a
    progress page while it runs, then a download that verifies offline; only its owner sees it."""
    import re

    from test_web_ui_forms import browser, csrf, log_in
    from waiting import wait_for_condition

    await h.add_user("eve", "auditor")
    await h.add_user("mallory", "auditor")
    await h.add_user("obs", "observer")
    async with browser(h) as http:
        await log_in(http, "eve")
        token = await csrf(http, "/ui/messagelog")
        async with http.post("/ui/messagelog/exports", data={"_csrf": token, "from": "noon"}) as resp:
            assert resp.status == 400 and 'id="job-from-error"' in await resp.text()
        async with http.post("/ui/messagelog/exports", data={"_csrf": token, "origin": h.ctx.origin},
                             allow_redirects=False) as resp:
            assert resp.status == 303
            job_page = resp.headers["Location"]
        assert re.fullmatch(r"/ui/messagelog/exports/[\w-]+", job_page)
        pages: list[str] = []

        async def ready() -> bool:
            async with http.get(job_page) as page_:
                assert page_.status == 200
                pages.append(await page_.text())
            return "The archive is ready" in pages[-1]

        await wait_for_condition(ready, timeout=30, what="the archive job to end")
        for text in pages[:-1]:  # while it ran: the page refreshes itself, with its progress
            assert '<meta http-equiv="refresh" content="2">' in text and "<progress" in text
        assert "http-equiv" not in pages[-1] and "Records</dt><dd>0 to 29 (30 in all)" in pages[-1]
        async with http.get(f"{job_page}/download") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "application/zip"
            (tmp_path / "job.zip").write_bytes(await resp.read())
    with LogArchive(tmp_path / "job.zip") as archive:
        report = verify_archive(archive, log.world.anchor)
    assert report.ok and report.records_valid == 30, report.summary()
    # another auditor does not see it; an observer may not even look
    for name, status in (("mallory", 404), ("obs", 403)):
        async with browser(h) as http:
            await log_in(http, name)
            for path in (job_page, f"{job_page}/download"):
                async with http.get(path) as resp:
                    assert resp.status == status, (name, path)
    entries = await h.audit(action="exportMessageLogArchive", actor="eve", result="success")
    assert len(entries) == 2  # the start and the download (the progress page is not audited)
    assert "archive_job" in entries[1].details and entries[0].details["archive"]["end"] == 30
