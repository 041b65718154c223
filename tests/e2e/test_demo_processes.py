"""``gateway demo --processes``: each part is a process of its own, named in ``federation.json``; the provider's
security server killed with SIGKILL and started again with the command given there, and the federation works
again. The two message logs of that run then show what ``gateway log match`` is for: the exchanges that failed
while the provider was down are counted as failed, not as problems; a record taken out of the provider's archive
is a problem (exit 1)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import aiohttp
import pytest
from archive_kit import lines_edit, rewrite
from demo_kit import demo_process
from process_kit import START_TIMEOUT, alive, checkpointed, clean_env, exchange, run_cli, wait_until

pytestmark = pytest.mark.e2e

SS1, SS2 = "DEV/GOV/1001/ss1", "DEV/GOV/1002/ss2"
PARTS = {"pki", "central", "adapters", SS1, SS2, "portal"}
CHUNK = "records/00000000000000000000.jsonl"


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def _start(argv: list[str], log: Path, ready: str) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=err,
                                                    env=clean_env())
    assert proc.stdout is not None
    async with asyncio.timeout(START_TIMEOUT):
        while line := (await proc.stdout.readline()).decode():
            if line.startswith(ready):
                return proc
    raise AssertionError(f"{argv} exited before it listened: {log.read_text()[-2000:]}")


async def test_kill_one_server_process_restart_it_and_match_the_logs(tmp_path: Path) -> None:
    results: list[str | None] = []  # request id of each exchange tried, None for a failed one
    async with demo_process(tmp_path, "--processes", "--set", "checkpoint_interval_seconds=1") as demo:
        procs = demo.desc["processes"]
        # (1) one process per part, each a child of the demo, and the banner names them
        assert set(procs) == PARTS
        pids = {name: p["pid"] for name, p in procs.items()}
        assert len(set(pids.values())) == len(PARTS) and demo.proc.pid not in pids.values()
        assert demo.desc["pid"] == demo.proc.pid
        for name, pid in pids.items():
            assert alive(pid) and _parent(pid) == demo.proc.pid, name
            assert f"{name} {pid}" in demo.banner
        client_url = demo.server("ss1")["client_url"]
        async with aiohttp.ClientSession() as http:
            # the URLs federation.json gives are those of the part processes: each is ready, the central
            # server's admin API answers (its demo credentials are in the central database)
            for part in (demo.desc["central"], demo.server("ss1"), demo.server("ss2")):
                async with http.get(part["readiness_url"]) as resp:
                    assert resp.status == 200, await resp.text()
            async with http.get(f"{demo.desc['central']['admin_url']}/api/openapi.json") as resp:
                assert resp.status == 200 and (await resp.json())["openapi"].startswith("3.1")
            async def attempt() -> bool:
                results.append(await exchange(http, client_url))
                return results[-1] is not None

            for _ in range(3):
                assert await attempt()
            # (2) SIGKILL the provider's security server: its exchanges fail, every other part runs on
            os.kill(pids[SS2], signal.SIGKILL)
            await wait_until(lambda: not alive(pids[SS2]), timeout=10, what="ss2 gone after SIGKILL")
            for _ in range(2):
                assert not await attempt()
            assert all(alive(pid) for name, pid in pids.items() if name != SS2)
            assert demo.proc.returncode is None
            # (3) the command in federation.json starts it again, on the same ports, with its own log back
            restarted = await _start(procs[SS2]["argv"], tmp_path / "ss2-again.log", "security server ")
            try:
                await wait_until(attempt, timeout=30, what="an exchange through the restarted ss2")
                for _ in range(2):
                    assert await attempt()
                # (4) both logs, once every record is under a timestamped checkpoint, exported while they run
                archives = {}
                for code in ("ss1", "ss2"):
                    server = demo.server(code)
                    await wait_until(lambda s=server: checkpointed(s["database_url"], [s["id"]]), timeout=30,
                                     what=f"{code}'s records all checkpointed")
                    archives[code] = tmp_path / f"{code}.zip"
                    rc, out, err = await run_cli("-c", server["settings"], "log", "export", "--out",
                                                 str(archives[code]))
                    assert rc == 0, out + err
            finally:
                restarted.send_signal(signal.SIGTERM)
                assert await restarted.wait() == 0
    ok = [r for r in results if r is not None]
    failed = len(results) - len(ok)
    assert failed >= 2 and len(ok) >= 6
    # (5) the failures are not problems: they are counted as such, and the match passes
    rc, out, err = await run_cli("log", "match", str(archives["ss1"]), str(archives["ss2"]))
    assert rc == 0, out + err
    assert f"paired and identical: {len(ok)}" in out
    assert f"failed exchanges (no answer reached the consumer's caller): {failed}" in out
    assert out.count(": failed: the consumer logged the request") == failed, out
    assert "the provider has no record: the request did not reach it" in out
    assert out.rstrip().endswith("RESULT: OK, both sides agree")

    # (6) a record truly missing: the provider's copy without the records of one acknowledged exchange
    def drop(lines: list[bytes]) -> list[bytes]:
        kept = [line for line in lines if json.loads(line)["request_id"] != ok[1]]
        assert len(kept) == len(lines) - 2
        return kept

    cut = rewrite(archives["ss2"], tmp_path / "ss2-cut.zip", {CHUNK: lines_edit(drop)})
    rc, out, err = await run_cli("log", "match", str(archives["ss1"]), str(cut))
    assert rc == 1, out + err
    assert f"FAIL exchange {ok[1]}: consumer-only: logged by the consumer" in out
    assert f"failed exchanges (no answer reached the consumer's caller): {failed}" in out
    assert out.rstrip().endswith("RESULT: FAILED, 1 problem(s)")
