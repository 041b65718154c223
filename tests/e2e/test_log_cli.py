"""``gateway log export | verify | match`` as real processes against a demo federation's servers.

The federation runs in the test's event loop (so that the test can make exchanges and force checkpoints);
the CLI runs as a subprocess with the settings file the demo writes for each server (``<workdir>/ss1.toml``),
exactly as an auditor runs it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from archive_kit import lines_edit, resign_note, rewrite, stranger_signer, strip_timestamp

from gateway.dev.demo import Federation, start_federation

pytestmark = pytest.mark.e2e

GATEWAY = Path(sys.executable).parent / "gateway"
EXCHANGES = 4
CHUNK = "records/00000000000000000000.jsonl"


@dataclass
class Result:
    rc: int
    out: str
    err: str


async def gateway(*args: str | Path) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = await asyncio.create_subprocess_exec(
        str(GATEWAY), *map(str, args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


@dataclass
class Exported:
    fed: Federation
    dir: Path
    ss1: Path
    ss2: Path


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def exported(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Exported]:
    d = tmp_path_factory.mktemp("logcli")
    # no checkpoint by the clock during the test: the test makes them (below), deterministically
    fed = await start_federation(d / "demo", server_overrides={"checkpoint_interval_seconds": 3600.0})
    try:
        ss1, ss2 = fed.server("ss1"), fed.server("ss2")
        async with aiohttp.ClientSession() as http:
            for i in range(EXCHANGES):
                async with http.get(
                    f"{ss1.client_url}/r1/DEV/GOV/1002/registry/persons/?limit={i + 1}",
                    headers={"X-Road-Client": "DEV/GOV/1001/consumer", "X-Road-UserId": "EE12345678901"},
                ) as resp:
                    assert resp.status == 200, await resp.text()
        for ss in (ss1, ss2):
            assert ss.checkpointer is not None
            result = await ss.checkpointer.run_once(ss.clock() + timedelta(hours=2))
            assert result.checkpoint is not None and result.stamped == (2 * EXCHANGES,)
        exports = {}
        for code in ("ss1", "ss2"):
            out = d / f"{code}.zip"
            r = await gateway("-c", d / "demo" / f"{code}.toml", "log", "export", "--out", out)
            assert r.rc == 0, r.err
            assert f'"records": {2 * EXCHANGES}' in r.out
            exports[code] = out
        yield Exported(fed=fed, dir=d, ss1=exports["ss1"], ss2=exports["ss2"])
    finally:
        await fed.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_exported_archives_verify(exported: Exported) -> None:
    for path, origin in ((exported.ss1, "DEV/GOV/1001/ss1"), (exported.ss2, "DEV/GOV/1002/ss2")):
        r = await gateway("log", "verify", path, "--anchor", exported.fed.anchor_path)
        assert r.rc == 0, r.out + r.err
        assert f"origin {origin}: records 0..{2 * EXCHANGES - 1}" in r.out
        assert f"records: {2 * EXCHANGES} read, {2 * EXCHANGES} with valid signature" in r.out
        assert "checkpoints: 1 of 1 verified" in r.out
        assert r.out.rstrip().endswith("RESULT: OK, everything verifies")


def _flip(lines: list[bytes]) -> list[bytes]:
    line = bytearray(lines[2])  # the second exchange's request
    i = line.index(b'"path":"/r1/') if b'"path":"/r1/' in line else line.index(b'"path":"/')
    line[i + len(b'"path":"')] ^= 0x01
    lines[2] = bytes(line)
    return lines


def _swap(lines: list[bytes]) -> list[bytes]:
    lines[4], lines[5] = lines[5], lines[4]
    return lines


# (name, how to make the tampered copy from the good one, texts the verifier must print)
TAMPERING: list[tuple[str, Callable[[Path, Path], None], tuple[str, ...]]] = [
    ("flipped byte", lambda src, dst: rewrite(src, dst, {CHUNK: lines_edit(_flip)}) and None,
     ("FAIL record 2: altered:",)),
    ("deleted record", lambda src, dst: rewrite(src, dst, {CHUNK: lines_edit(lambda ls: ls[:3] + ls[4:])}) and None,
     ("FAIL record 3: missing: record 3 is not in the archive (deleted)",)),
    ("reordered records", lambda src, dst: rewrite(src, dst, {CHUNK: lines_edit(_swap)}) and None,
     ("out-of-order: record 5 is at position 4 (records reordered)",)),
    ("checkpoint signed by another key",
     lambda src, dst: rewrite(src, dst, {"checkpoints/000001.note": lambda n: resign_note(n, stranger_signer())})
     and None,
     ("FAIL checkpoint 1 (size 8): checkpoint-signature: not signed by any signing key of the log",)),
    ("stripped timestamp", lambda src, dst: rewrite(src, dst, strip_timestamp(1)) and None,
     ("FAIL checkpoint 1 (size 8): timestamp: has no RFC 3161 timestamp token (missing or stripped)",)),
    ("truncated archive", lambda src, dst: dst.write_bytes(src.read_bytes()[:-200]) and None,
     ("FAIL archive:", "damaged or truncated ZIP file")),
    ("not an archive", lambda src, dst: dst.write_text("just some text\n") and None,
     ("FAIL archive:", "is not a log archive (not a ZIP file)")),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("name", "tamper", "texts"), TAMPERING, ids=[t[0] for t in TAMPERING])
async def test_tampered_copy_is_rejected_with_the_reason(
    exported: Exported, tmp_path: Path, name: str, tamper: Callable[[Path, Path], None], texts: tuple[str, ...],
) -> None:
    bad = tmp_path / "tampered.zip"
    tamper(exported.ss1, bad)
    r = await gateway("log", "verify", bad, "--anchor", exported.fed.anchor_path)
    assert r.rc == 1, r.out + r.err
    for text in texts:
        assert text in r.out, r.out
    assert "RESULT: FAILED" in r.out


@pytest.mark.asyncio(loop_scope="module")
async def test_both_sides_match(exported: Exported) -> None:
    r = await gateway("log", "match", exported.ss1, exported.ss2)
    assert r.rc == 0, r.out + r.err
    assert f"paired and identical: {EXCHANGES}" in r.out
    assert r.out.rstrip().endswith("RESULT: OK, both sides agree")


@pytest.mark.asyncio(loop_scope="module")
async def test_record_missing_on_one_side_is_reported(exported: Exported, tmp_path: Path) -> None:
    # the provider's copy without the response record of the third exchange
    cut = rewrite(exported.ss2, tmp_path / "ss2-cut.zip", {CHUNK: lines_edit(lambda ls: ls[:5] + ls[6:])})
    r = await gateway("log", "match", exported.ss1, cut)
    assert r.rc == 1, r.out + r.err
    assert f"paired and identical: {EXCHANGES - 1}" in r.out
    assert "differs: " in r.out and "the provider has no response record" in r.out
    # and with the whole exchange gone from the provider's copy
    gone = rewrite(exported.ss2, tmp_path / "ss2-gone.zip", {CHUNK: lines_edit(lambda ls: ls[:4] + ls[6:])})
    r = await gateway("log", "match", exported.ss1, gone)
    assert r.rc == 1
    assert "consumer-only: logged by the consumer (request seq 4, response seq 5" in r.out
