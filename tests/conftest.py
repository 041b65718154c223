"""Fixtures shared by every test: database backends (SQLite and PostgreSQL) and the session PKI."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

PG_DSN = os.environ.get("GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_parts() -> tuple[str, str]:
    base, _, _db = PG_DSN.rpartition("/")
    return base, PG_DSN


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database URL: a SQLite file, or a new PostgreSQL database dropped afterwards.

    PostgreSQL must be running (``scripts/test`` starts it); the test fails, never skips, if it is not.
    """
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    base, admin_dsn = _pg_parts()
    name = f"gw_test_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    host = base.split("://", 1)[1]
    yield f"postgresql+asyncpg://{host}/{name}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def free_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that was free a moment ago (prefer binding port 0 where possible)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port
