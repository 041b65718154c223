"""Checkpoints in a running federation: the development TSA stamps them, ``openssl ts -verify`` accepts the
tokens, a TSA outage is bridged for the grace period and then stops exchanges with TimestampingFailed until
the TSA is back; ``gateway log`` proves inclusion and consistency from the server's database.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from exchange_kit import ShiftClock, call
from faultside import SERVER_PROXY, detected_at

from gateway.central import registry
from gateway.dev.demo import Federation, start_federation
from gateway.errors import MessageLogError
from gateway.messagelog import merkle
from gateway.server.runtime import SecurityServer
from gateway.trust import keys

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PERSONS = "DEV/GOV/1002/registry/persons"
GRACE = 120  # seconds; set on both servers for this test
GATEWAY = [str(Path(sys.executable).parent / "gateway")]  # the console script of this venv


@dataclass
class World:
    fed: Federation
    clock: ShiftClock
    ss1: SecurityServer
    ss2: SecurityServer
    tmp: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("checkpoints")
    clock = ShiftClock()
    fed = await start_federation(
        tmp / "fed", clock=clock,
        # rounds are driven by the test (run_once); the background task would wait an hour
        server_overrides={"checkpoint_interval_seconds": 3600.0, "checkpoint_max_records": 10**6,
                          "timestamp_grace_seconds": GRACE},
    )
    try:
        yield World(fed=fed, clock=clock, ss1=fed.server("ss1"), ss2=fed.server("ss2"), tmp=tmp)
    finally:
        await fed.close()


async def set_tsa_url(world: World, url: str) -> None:
    """Re-register the federation's TSA at ``url`` and make both servers download the new configuration."""
    engine = world.fed.central.engine
    name = f"{world.fed.instance} Development TSA"
    await registry.remove_tsa(engine, name)
    await registry.add_tsa(engine, name=name, url=url, certificate=keys.cert_pem(world.fed.ca.tsa_cert))
    await world.fed.publish_and_refresh()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_tokens_verify_with_openssl_and_proofs_come_from_the_cli(world: World) -> None:
    for _ in range(3):
        assert (await call(world.ss1, f"{PERSONS}/?limit=1")).status == 200
    for ss in (world.ss1, world.ss2):
        assert ss.checkpointer is not None
        result = await ss.checkpointer.run_once(world.clock(), force=True)
        assert result.checkpoint is not None and result.stamped == (result.checkpoint.size,), result
    # (1) The CLI lists and re-verifies everything, and writes the note and token files.
    settings = str(world.fed.workdir / "ss2.toml")
    out_dir = world.tmp / "cps"
    rc, out, err = await run(*GATEWAY, "-c", settings, "log", "checkpoints", "--verify", "--out", str(out_dir))
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["origin"] == "DEV/GOV/1002/ss2" and doc["verified"] is True
    size = doc["checkpoints"][-1]["size"]
    assert size >= 6 and doc["checkpoints"][-1]["timestamped"] is True
    # (2) openssl accepts the token over the note bytes, trusting only the development CA.
    ca_pem = world.fed.workdir / "pki" / "ca.pem"
    rc, out, err = await run("openssl", "ts", "-verify", "-data", str(out_dir / f"{size}.note"),
                             "-in", str(out_dir / f"{size}.tsr"), "-token_in", "-CAfile", str(ca_pem))
    assert rc == 0 and "Verification: OK" in out, (out, err)
    # ... and refuses it over other bytes.
    other = world.tmp / "other.note"
    other.write_bytes((out_dir / f"{size}.note").read_bytes().replace(b"\n", b"\n\n", 1))
    rc, out, err = await run("openssl", "ts", "-verify", "-data", str(other), "-in", str(out_dir / f"{size}.tsr"),
                             "-token_in", "-CAfile", str(ca_pem))
    assert rc != 0 and "Verification: OK" not in out
    # (3) Inclusion proof of record 1 in the newest checkpoint, checked here as an auditor would.
    rc, out, err = await run(*GATEWAY, "-c", settings, "log", "prove-inclusion", "--seq", "1")
    assert rc == 0, err
    inc = json.loads(out)
    merkle.verify_inclusion(base64.b64decode(inc["leaf_hash"]), 1, inc["size"],
                            [base64.b64decode(h) for h in inc["proof"]], base64.b64decode(inc["root_hash"]))
    assert inc["checkpoint"].startswith("DEV/GOV/1002/ss2/messagelog\n")
    # (4) A second checkpoint and the consistency proof between the two.
    assert (await call(world.ss1, f"{PERSONS}/?limit=1")).status == 200
    assert world.ss2.checkpointer is not None
    await world.ss2.checkpointer.run_once(world.clock(), force=True)
    rc, out, err = await run(*GATEWAY, "-c", settings, "log", "prove-consistency", "--old", str(size))
    assert rc == 0, err
    con = json.loads(out)
    assert con["new_size"] == size + 2
    merkle.verify_consistency(size, con["new_size"], base64.b64decode(con["old_root_hash"]),
                              base64.b64decode(con["new_root_hash"]), [base64.b64decode(h) for h in con["proof"]])
    # (5) Bad requests are refused with our error form.
    rc, out, err = await run(*GATEWAY, "-c", settings, "log", "prove-inclusion", "--seq", "1", "--size", "99999")
    assert rc == 1 and "has no checkpoint of size 99999" in err
    rc, out, err = await run(*GATEWAY, "-c", settings, "log", "prune", "--before", "99999")
    assert rc == 1 and "not all covered by a timestamped checkpoint" in err


async def test_tsa_outage_grace_then_timestamping_failed_then_recovery(world: World) -> None:
    ss1, ss2 = world.ss1, world.ss2
    assert ss1.checkpointer is not None and ss2.checkpointer is not None
    for ss in (ss1, ss2):
        await ss.checkpointer.run_once(world.clock(), force=True)  # everything stamped so far
    # (1) The TSA goes away: exchanges go on, checkpoints are signed but wait for their timestamps.
    await set_tsa_url(world, f"http://127.0.0.1:{closed_port()}/")
    try:
        assert (await call(ss1, f"{PERSONS}/?limit=1")).status == 200
        for ss in (ss1, ss2):
            result = await ss.checkpointer.run_once(world.clock(), force=True)
            assert result.checkpoint is not None and result.stamped == ()
            assert result.stamp_error is not None and "cannot be reached" in result.stamp_error
        world.clock.advance(GRACE - 30)
        assert (await call(ss1, f"{PERSONS}/?limit=1")).status == 200  # still within the grace period
        # (2) Past the grace period: the consumer's server refuses, with X-Road's error type ...
        world.clock.advance(31)
        answer = await call(ss1, f"{PERSONS}/?limit=1")
        answer.assert_error(500, "Server.ClientProxy.TimestampingFailed", contains="has not been timestamped")
        # ... and so does the provider's (its own log is just as unstamped).
        assert ss2.context is not None
        with pytest.raises(MessageLogError) as e, detected_at(SERVER_PROXY):
            ss2.context.check_timestamping()
        assert e.value.xroad_type == "Server.ServerProxy.TimestampingFailed"
    finally:
        # (3) The TSA is back: the waiting checkpoints are stamped and exchanges resume.
        await set_tsa_url(world, world.fed.pki.tsa_url)
    for ss in (ss1, ss2):
        result = await ss.checkpointer.run_once(world.clock(), force=True)
        assert result.stamped and result.stamp_error is None, result
    assert (await call(ss1, f"{PERSONS}/?limit=1")).status == 200
    latest = await ss2.messagelog.latest_checkpoint("DEV/GOV/1002/ss2")
    assert latest is not None
    stamped = await ss2.messagelog.checkpoints("DEV/GOV/1002/ss2", unstamped_only=True)
    assert stamped == []  # the older waiting checkpoint was caught up too
