"""Database engines and Alembic migrations (I/O).

Every part that keeps state (central server, security server) has its own schema, its own Alembic
script directory under ``gateway/<part>/migrations`` and its own version table, so that a part's migrations
never depend on another's. SQLite (WAL) is the embedded default; PostgreSQL (asyncpg) is the production
backend; the test suite runs against both.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.errors import ConfigError
from gateway.files import private_dir, private_file


def make_engine(
    url: str, *, connect_timeout: float | None = None, statement_timeout: float | None = None, **kwargs: Any,
) -> AsyncEngine:
    """Create an async engine; for SQLite, create the directory and switch on WAL and foreign keys.

    On PostgreSQL, ``connect_timeout`` bounds opening a connection (asyncpg's ``timeout``, 60 s if None) and
    ``statement_timeout`` each statement (asyncpg's ``command_timeout``, none if None), both in seconds: an
    unreachable database (a network that drops packets) then fails each operation in bounded time. The pool
    checks a connection before lending it (``pool_pre_ping``), so connections broken by an outage are replaced
    by new ones when the database is back. SQLite ignores both (its locks wait ``busy_timeout``).

    Raises:
        ConfigError: the URL is malformed or names a driver we do not support.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise ConfigError(f"database URL {url!r} is malformed: {e}") from e
    if parsed.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ConfigError(
            f"database URL {url!r} uses driver {parsed.drivername!r}",
            hint="use sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db",
        )
    if parsed.drivername.startswith("sqlite"):
        database = parsed.database if parsed.database and parsed.database != ":memory:" else None
        if database is not None:
            private_dir(Path(database).parent)
        engine = create_async_engine(url, **kwargs)

        if database is not None and not database.startswith("file:"):
            created: list[bool] = []

            @event.listens_for(engine.sync_engine, "do_connect")
            def _owner_only(*_args: Any) -> None:
                # Created empty with 0600 just before SQLite first opens it (not before: an engine that is never
                # used leaves no file), so the database and its -wal and -shm files are owner-only whatever the
                # umask (gateway/files.py). Once per engine: a connection the pool opens later (on the event
                # loop's thread, while exchanges run) touches no file here.
                if not created:
                    private_file(Path(database))
                    created.append(True)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

        return engine
    connect_args = dict(kwargs.pop("connect_args", {}))
    if connect_timeout is not None:
        connect_args["timeout"] = connect_timeout
    if statement_timeout is not None:
        connect_args["command_timeout"] = statement_timeout
    return create_async_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)


def sqlite_sibling_url(url: str, suffix: str) -> str | None:
    """For a SQLite database file, the URL of a database file of its own beside it (``<file><suffix>``, same
    driver and options); None for another database or one in memory. A table written often and apart (the
    operational-monitoring records) goes there so that its writes never hold the main file's write lock, which
    the message log's commits need."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if not parsed.drivername.startswith("sqlite") or not parsed.database or parsed.database == ":memory:":
        return None
    return parsed.set(database=f"{parsed.database}{suffix}").render_as_string(hide_password=False)


def sqlite_directory(url: str) -> Path | None:
    """The directory holding the SQLite database file of ``url``; None for another database or in memory."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if not parsed.drivername.startswith("sqlite") or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).resolve().parent


def masked(url: str) -> str:
    """``url`` with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # make_engine refuses it with a better message
        return url


async def open_database(url: str, *, where: str) -> AsyncEngine:
    """An engine on ``url``, checked to be reachable with one connection, for a command that is about to use it.

    ``where`` names the setting (``settings file F: [server] key 'database_url'``) for the message.

    Raises:
        ConfigError: the URL is malformed or unsupported, or the database cannot be opened.
    """
    try:
        engine = make_engine(url)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.message}", hint=e.hint) from e
    try:
        async with engine.connect():
            pass
    except (OSError, SQLAlchemyError) as e:
        await engine.dispose()
        cause = getattr(e, "orig", None) or e
        raise ConfigError(f"{where}: cannot open database {masked(url)}: {cause}") from e
    return engine


def _alembic_config(script_location: Path, version_table: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.attributes["version_table"] = version_table
    return cfg


async def migrate(engine: AsyncEngine, script_location: Path, version_table: str) -> None:
    """Bring the schema of one part up to its newest Alembic revision."""
    cfg = _alembic_config(script_location, version_table)

    def _upgrade(conn: Connection) -> None:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


def migrate_sync(url: str, script_location: Path, version_table: str) -> None:
    """Run :func:`migrate` from synchronous code (the CLI)."""

    async def _run() -> None:
        engine = make_engine(url)
        try:
            await migrate(engine, script_location, version_table)
        finally:
            await engine.dispose()

    asyncio.run(_run())
