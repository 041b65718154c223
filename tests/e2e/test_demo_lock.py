"""A second ``gateway demo`` on the directory of a running one refuses, touching nothing; the lock goes with
the process that held it, also when it is killed with SIGKILL (docs/demo.md, "One demo per directory")."""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path

import pytest
from demo_kit import demo_process
from process_kit import run_cli

pytestmark = pytest.mark.e2e


def _snapshot(workdir: Path) -> dict[str, str]:
    """Every file's SHA-256 but the live databases' (the running servers write them)."""
    return {
        str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(workdir.rglob("*"))
        if p.is_file() and ".db" not in p.name and "-origins" not in str(p.parent)
    }


async def test_second_demo_refuses_a_held_directory_until_the_holder_is_killed(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    async with demo_process(tmp_path) as first:
        before = _snapshot(workdir)
        assert "ss1/auth.key" in before and "pki/ca.key" in before
        db_size = (workdir / "ss1.db").stat().st_size
        # (1) a second demo on the same directory: refused at once, exit 2, naming the holder
        rc, out, err = await run_cli("demo", "--dir", str(workdir), "--out", str(tmp_path / "second.json"))
        assert rc == 2, out + err
        assert f"{workdir} is in use by a running 'gateway demo' (pid {first.proc.pid} since " in err
        assert "nothing in it was changed" in err
        assert "Traceback" not in err
        # (2) ... and nothing was touched: keys, certificates, settings, the description, the logs
        assert _snapshot(workdir) == before
        assert (workdir / "ss1.db").stat().st_size >= db_size
        assert not (tmp_path / "second.json").exists()
        # (3) kill -9: no clean-up runs, yet the operating system drops the lock with the process
        first.proc.send_signal(signal.SIGKILL)
        assert await first.proc.wait() == -signal.SIGKILL
    async with demo_process(tmp_path) as again:
        assert again.desc["instance"] == "DEV"
        assert _snapshot(workdir)["ss1/auth.key"] != before["ss1/auth.key"]  # a fresh federation
