"""What a running federation creates is owner-only whatever the umask (docs/operations.md, "Files and modes").

``gateway demo`` runs under a permissive umask (0o022, and 0o000: everything created without an explicit mode
would be world-writable); after an exchange (so that both message logs, their SQLite WAL and the global
configuration caches exist) and an export of archives into a new nested directory, every directory of the
demo is 0700 and every database, WAL/SHM, key, token, PIN and archive file 0600.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import aiohttp
import pytest
from demo_kit import demo_process
from process_kit import CONSUMER, PERSONS, run_cli

pytestmark = pytest.mark.e2e

# Files that hold secrets or logged data; each must be 0600.
PRIVATE_SUFFIXES = (".db", ".db-wal", ".db-shm", ".key", ".pin", ".zip", ".lock")
PRIVATE_NAMES = ("admin-credentials.json", "token.json")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _private(path: Path) -> bool:
    return path.name.endswith(PRIVATE_SUFFIXES) or path.name in PRIVATE_NAMES or path.parent.name == "keys"


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
async def test_demo_and_its_servers_create_owner_only_files(tmp_path: Path, umask: int) -> None:
    async with demo_process(tmp_path, umask=umask) as demo:
        ss1 = demo.server("ss1")
        async with aiohttp.ClientSession() as http, http.get(
            f"{ss1['client_url']}/r1/{PERSONS}/?limit=1", headers={"X-Road-Client": CONSUMER},
        ) as resp:
            assert resp.status == 200, await resp.text()
        out = tmp_path / "demo" / "exports" / "ss1"
        rc, _, err = await run_cli("-c", ss1["settings"], "log", "export", "--all-origins", "--include-uncovered",
                                   "--out", str(out))
        assert rc == 0, err
        # (while the servers run: their SQLite -wal and -shm files exist only then)
        workdir = tmp_path / "demo"
        dirs = [workdir, *(p for p in workdir.rglob("*") if p.is_dir())]
        assert len(dirs) > 5
        assert {str(d.relative_to(tmp_path)): oct(_mode(d)) for d in dirs if _mode(d) != 0o700} == {}
        private = [p for p in workdir.rglob("*") if p.is_file() and _private(p)]
        names = {p.name for p in private}
        for expected in ("ss1.db", "ss2.db", "central.db", "ca.key", "admin-credentials.json"):
            assert expected in names, sorted(names)
        assert any(n.endswith(".zip") for n in names) and any(n.endswith(".db-wal") for n in names)
        assert {str(p.relative_to(tmp_path)): oct(_mode(p)) for p in private if _mode(p) != 0o600} == {}
        # nothing at all is writable by others, even what is public (certificates, settings, the anchor)
        writable = [p for p in workdir.rglob("*") if _mode(p) & (stat.S_IWGRP | stat.S_IWOTH) and not p.is_symlink()]
        assert [str(p.relative_to(tmp_path)) for p in writable] == []
    assert os.stat(tmp_path / "federation.json").st_mode & stat.S_IWOTH == 0
