"""Owner-only directories and SQLite databases whatever the umask (gateway/files.py, gateway/storage/db.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.files import private_dir, private_file, write_private_text
from gateway.storage.db import make_engine


@pytest.fixture
def umask_000() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_nested_directories_and_files_are_owner_only(tmp_path: Path, umask_000: None) -> None:
    leaf = private_dir(tmp_path / "a" / "b" / "c")
    assert [oct(_mode(p)) for p in (tmp_path / "a", tmp_path / "a" / "b", leaf)] == ["0o700"] * 3
    f = private_file(tmp_path / "x" / "y.db")
    assert (_mode(f.parent), _mode(f), f.read_bytes()) == (0o700, 0o600, b"")
    f.write_bytes(b"kept")
    private_file(f)  # an existing file is left as it is
    assert f.read_bytes() == b"kept"
    w = write_private_text(tmp_path / "pin", "1234\n")
    assert (_mode(w), w.read_text()) == (0o600, "1234\n")


def test_existing_directory_keeps_its_mode(tmp_path: Path, umask_000: None) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)  # noqa: S103 - the point: a shared parent keeps its mode
    private_dir(shared / "mine")
    assert (_mode(shared), _mode(shared / "mine")) == (0o755, 0o700)


async def test_sqlite_database_and_its_wal_and_shm_are_owner_only(tmp_path: Path, umask_000: None) -> None:
    db = tmp_path / "state" / "ss.db"
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        async with engine.connect() as conn:  # WAL mode: the -wal and -shm files exist while a connection is open
            await conn.execute(text("SELECT x FROM t"))
            files = {p.name: _mode(p) for p in db.parent.iterdir()}
    finally:
        await engine.dispose()
    assert set(files) >= {"ss.db", "ss.db-wal", "ss.db-shm"}, files
    assert {name: oct(mode) for name, mode in files.items() if mode != 0o600} == {}
    assert _mode(db.parent) == 0o700
