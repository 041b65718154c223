"""gateway.storage: the shared column type, naming convention and transaction helper (SQLite in a temporary
directory)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.storage.db import make_engine
from gateway.storage.schema import UtcDateTime, new_metadata
from gateway.storage.transaction import begin_session, transaction

metadata = new_metadata()
things = sa.Table(
    "things",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("at", UtcDateTime(), nullable=True),
)


class Conflict(Exception):
    pass


class Broken(Exception):
    pass


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'storage.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(things.insert().values(name="taken"))
    yield engine
    await engine.dispose()


async def _names(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.scalars(sa.select(things.c.name).order_by(things.c.name))).all())


def test_naming_convention_names_constraints() -> None:
    assert {c.name for c in things.constraints} == {"pk_things", "uq_things_name"}


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (datetime(2026, 3, 1, 12, 0, tzinfo=UTC), datetime(2026, 3, 1, 12, 0, tzinfo=UTC)),
        (datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))), datetime(2026, 3, 1, 12, 0, tzinfo=UTC)),
        (None, None),
    ],
)
async def test_utc_datetime_round_trips_as_aware_utc(
    engine: AsyncEngine, given: datetime | None, stored: datetime | None
) -> None:
    async with engine.begin() as conn:
        await conn.execute(things.insert().values(name="t", at=given))
        got = await conn.scalar(sa.select(things.c.at).where(things.c.name == "t"))
    assert got == stored
    assert got is None or got.tzinfo is UTC


async def test_utc_datetime_refuses_naive_values(engine: AsyncEngine) -> None:
    with pytest.raises(SQLAlchemyError, match="naive datetime"):
        async with engine.begin() as conn:
            await conn.execute(things.insert().values(name="t", at=datetime(2026, 3, 1, 12, 0)))


async def test_transaction_commits(engine: AsyncEngine) -> None:
    async with transaction(engine.begin(), conflict=lambda e: Conflict(str(e.orig))) as conn:
        assert isinstance(conn, AsyncConnection)
        await conn.execute(things.insert().values(name="new"))
    assert await _names(engine) == ["new", "taken"]


async def test_transaction_turns_an_integrity_error_into_the_callers_conflict(engine: AsyncEngine) -> None:
    with pytest.raises(Conflict, match=r"UNIQUE constraint failed: things\.name") as info:
        async with transaction(engine.begin(), conflict=lambda e: Conflict(str(e.orig))) as conn:
            await conn.execute(things.insert().values(name="new"))
            await conn.execute(things.insert().values(name="taken"))
    assert isinstance(info.value.__cause__, IntegrityError)
    assert await _names(engine) == ["taken"]  # rolled back


async def test_transaction_in_a_session(engine: AsyncEngine) -> None:
    with pytest.raises(Conflict) as info:
        async with transaction(begin_session(engine), conflict=lambda _e: Conflict("duplicate")) as session:
            await session.execute(things.insert().values(name="taken"))
    assert str(info.value) == "duplicate" and isinstance(info.value.__cause__, IntegrityError)
    async with transaction(begin_session(engine)) as session:
        await session.execute(things.insert().values(name="new"))
    assert await _names(engine) == ["new", "taken"]


@pytest.mark.parametrize(
    ("sql", "conflict", "database_error", "raised"),
    [
        # no factory given: the database's own error
        ("INSERT INTO things (name) VALUES ('taken')", None, None, IntegrityError),
        ("SELECT * FROM nowhere", None, None, OperationalError),
        # an integrity error is the conflict, never the database error, and the other way round
        ("INSERT INTO things (name) VALUES ('taken')", Conflict, Broken, Conflict),
        ("INSERT INTO things (name) VALUES ('taken')", None, Broken, IntegrityError),
        ("SELECT * FROM nowhere", Conflict, Broken, Broken),
        ("SELECT * FROM nowhere", Conflict, None, OperationalError),
    ],
)
async def test_transaction_error_table(
    engine: AsyncEngine,
    sql: str,
    conflict: type[Exception] | None,
    database_error: type[Exception] | None,
    raised: type[Exception],
) -> None:
    with pytest.raises(raised):
        async with transaction(
            engine.begin(),
            conflict=None if conflict is None else (lambda e: conflict(e)),
            database_error=None if database_error is None else (lambda e: database_error(e)),
        ) as conn:
            await conn.execute(sa.text(sql))


async def test_transaction_lets_the_blocks_own_errors_through(engine: AsyncEngine) -> None:
    with pytest.raises(LookupError, match="missing"):
        async with transaction(engine.begin(), conflict=Conflict, database_error=Broken) as conn:
            await conn.execute(things.insert().values(name="new"))
            raise LookupError("missing")
    assert await _names(engine) == ["taken"]
