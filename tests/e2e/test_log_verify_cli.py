"""``gateway log verify --workers N`` as an auditor runs it: the same output and exit status whatever N is, a
precise refusal of a bad N, and a lost worker process reported as a verification that did not complete."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from archive_kit import lines_edit, make_log, make_world, rewrite, write_archive

from gateway import cli
from gateway.cli.commands import logverify
from gateway.messagelog import archive as archive_mod

pytestmark = pytest.mark.e2e

GATEWAY = Path(sys.executable).parent / "gateway"


@dataclass
class Files:
    anchor: Path
    good: Path
    tampered: Path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    d = tmp_path_factory.mktemp("verifycli")
    world = make_world(d)
    records = make_log(world, 24)  # 48 records in 6 members of 8
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(archive_mod, "CHUNK_RECORDS", 8)
        good = write_archive(world, d / "good.zip", records, checkpoint_sizes=(16, 48))
    tampered = rewrite(good, d / "tampered.zip", {
        archive_mod.chunk_name(8): lines_edit(lambda ls: ls[:3] + ls[4:]),  # record 11 deleted
        archive_mod.chunk_name(32): lines_edit(lambda ls: [*ls[:4], ls[4].replace(b"full=true", b"full=false"),
                                                           *ls[5:]]),  # record 36, a request, altered
    })
    anchor = d / "anchor.json"
    anchor.write_bytes(world.anchor.to_bytes())
    return Files(anchor=anchor, good=good, tampered=tampered)


def gateway(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run([str(GATEWAY), *map(str, args)], capture_output=True, text=True, env=env, timeout=120,
                          check=False)


@pytest.mark.parametrize("name", ["good", "tampered"])
def test_the_same_output_whatever_the_workers(files: Files, name: str) -> None:
    path = getattr(files, name)
    runs = {workers: gateway("log", "verify", path, "--anchor", files.anchor, *workers)
            for workers in ((), ("--workers", "1"), ("--workers", "2"), ("--workers", "5"))}
    first = runs[()]
    for r in runs.values():
        assert (r.returncode, r.stdout) == (first.returncode, first.stdout)
    if name == "good":
        assert first.returncode == 0, first.stdout + first.stderr
        assert first.stdout.rstrip().endswith("RESULT: OK, everything verifies")
    else:
        assert first.returncode == 1, first.stdout + first.stderr
        assert "FAIL record 11: missing: record 11 is not in the archive (deleted)" in first.stdout
        assert "FAIL record 36: altered:" in first.stdout
        assert "FAIL record 36: signature:" in first.stdout


@pytest.mark.parametrize(("value", "message"), [
    ("0", "argument --workers: must be at least 1, not 0"),
    ("-2", "argument --workers: must be at least 1, not -2"),
    ("two", "argument --workers: not a whole number: 'two'"),
    ("1.5", "argument --workers: not a whole number: '1.5'"),
])
def test_a_bad_number_of_workers_is_refused(files: Files, value: str, message: str) -> None:
    r = gateway("log", "verify", files.good, "--anchor", files.anchor, f"--workers={value}")
    assert r.returncode == 2
    assert message in r.stderr
    assert r.stdout == ""


def test_a_lost_worker_fails_the_command(files: Files, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # in this process, so that the test can kill a worker at a known point: after the first member's result,
    # which is where the command's progress report is called
    killed: list[int] = []

    class KillOne:
        def __call__(self, done: int, total: int) -> None:
            if not killed:
                worker = next(p for p in multiprocessing.active_children() if p.name == "gateway-log-verify")
                assert worker.pid is not None
                os.kill(worker.pid, signal.SIGKILL)
                killed.append(worker.pid)

    monkeypatch.setattr(logverify, "_Progress", KillOne)
    rc = cli.main(["log", "verify", str(files.good), "--anchor", str(files.anchor), "--workers", "2"])
    out, err = capsys.readouterr()
    assert rc == 1
    reason = f"a worker process checking records (pid {killed[0]}) ended abnormally: killed by signal SIGKILL"
    assert out == f"archive {files.good}\nRESULT: FAILED, the verification did not complete: {reason}\n"
    assert f"gateway: error: Server.InternalError: {reason} (fault of the gateway)" in err
    assert "RESULT: OK" not in out
