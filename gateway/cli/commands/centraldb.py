"""What every ``gateway central ...`` command shares: checked settings, the database, a runner (I/O shell).

Every command works on the database named by ``[central] database_url``. ``init`` creates or upgrades the
schema and the first configuration-signing key; every other command (except ``serve``, which migrates
itself) refuses a database that ``init`` has not brought up to date. Unusable settings (an unknown key, a
bad database URL, a database that cannot be opened) raise :class:`~gateway.errors.ConfigError` naming the
settings file (or environment variable) and the key; the CLI prints it and exits 2.

A command is its distinctive lines only: an ``async`` body decorated with :func:`central_command`, which
loads the settings, opens (and checks) the engine, runs the body and disposes of the engine. Both
:mod:`gateway.cli.commands.central` and :mod:`gateway.cli.commands.registration` use it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.central import MIGRATIONS_DIR, VERSION_TABLE, settings_problems
from gateway.cli.common import Handler, database_setting, setting_source, settings_from_args
from gateway.errors import ConfigError, GatewayError, RequestError
from gateway.settings import CentralSettings
from gateway.storage.db import masked, open_database

MAX_FILE_BYTES = 1 * 2**20  # bytes; certificate files given on the command line

# A command's body: the parsed arguments, an engine on a checked database, the [central] settings.
Body = Callable[[argparse.Namespace, AsyncEngine, CentralSettings], Awaitable[int]]


def central_settings(args: argparse.Namespace) -> CentralSettings:
    """Load and check the ``[central]`` settings.

    Raises:
        ConfigError: the file or a value is invalid (names the source and the key).
    """
    central = settings_from_args(args).central
    problems = settings_problems(central)
    if problems:
        key, message = problems[0]
        raise ConfigError(f"{setting_source(args, 'central', key)}: [central] key {key!r}: {message}")
    return central


def now() -> datetime:
    return datetime.now(UTC)


def _schema_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext  # alembic is slow to import: only when used

    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


async def open_engine(args: argparse.Namespace, central: CentralSettings, *, need_schema: bool) -> AsyncEngine:
    """An engine on ``[central] database_url``, checked to be reachable (and migrated, if asked).

    Raises:
        ConfigError: a malformed URL, a database that cannot be opened, or one that needs ``init``.
    """
    where = database_setting(args, "central")
    engine = await open_database(central.database_url, where=where)
    try:
        async with engine.connect() as conn:
            revision = await conn.run_sync(_schema_revision)
    except (OSError, SQLAlchemyError) as e:
        await engine.dispose()
        cause = getattr(e, "orig", None) or e
        raise ConfigError(f"{where}: cannot open database {masked(central.database_url)}: {cause}") from e
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    if need_schema and revision != head:
        await engine.dispose()
        raise ConfigError(
            f"database {masked(central.database_url)} is not initialised for the central server "
            f"(schema revision {revision or 'none'}, expected {head})",
            hint="run `gateway central init`",
        )
    return engine


def _action(args: argparse.Namespace) -> str:
    """The command as the audit log names it: ``member add``, ``keys retire``, ``publish``."""
    name = str(getattr(args, "central_command", ""))
    sub = getattr(args, f"{name.replace('-', '_')}_command", None)
    return f"{name} {sub}" if sub else name


async def _audit(engine: AsyncEngine, args: argparse.Namespace, *, status: int, error: str | None = None) -> None:
    from gateway.admin.store import AdminStore
    from gateway.cli.commands.admin import cli_audit

    target = " ".join(str(getattr(args, k)) for k in ("id", "server", "group", "client", "name", "keyid")
                      if isinstance(getattr(args, k, None), str | int))
    try:
        await cli_audit(AdminStore(engine), _action(args), target, status=status, error=error, command="central")
    except GatewayError as e:  # a database from before the audit log: the change is made, say what is missing
        print(f"warning: the audit log was not written ({e.message}); run `gateway central init`", file=sys.stderr)


def run_central(args: argparse.Namespace, body: Body, *, need_schema: bool = True, audit: bool = False) -> int:
    """Check the settings, open the database, run ``body`` and dispose of the engine; ``body``'s exit code.
    With ``audit``, the command and its outcome go to the audit log (actor ``cli:<OS user>``).

    Raises:
        ConfigError: as :func:`central_settings` and :func:`open_engine`, before ``body`` runs.
        GatewayError: whatever ``body`` raises (audited first).
    """
    central = central_settings(args)

    async def main() -> int:
        engine = await open_engine(args, central, need_schema=need_schema)
        try:
            try:
                code = await body(args, engine, central)
            except GatewayError as e:
                if audit:
                    await _audit(engine, args, status=e.http_status, error=e.message)
                raise
            if audit:
                await _audit(engine, args, status=200)
            return code
        finally:
            await engine.dispose()

    return asyncio.run(main())


def read_file(path: str, *, what: str) -> bytes:
    """Read a (certificate) file named on the command line.

    Raises:
        RequestError: the file cannot be read or is too large.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise RequestError(f"{what} file {path} cannot be read: {e.strerror or e}") from e
    if len(data) > MAX_FILE_BYTES:
        raise RequestError(f"{what} file {path} is larger than {MAX_FILE_BYTES} bytes")
    return data


@overload
def central_command(body: Body, /) -> Handler: ...
@overload
def central_command(
    *, need_schema: bool = True, cert: str | None = None, audit: bool = True
) -> Callable[[Body], Handler]: ...


def central_command(
    body: Body | None = None, /, *, need_schema: bool = True, cert: str | None = None, audit: bool = True
) -> Handler | Callable[[Body], Handler]:
    """Make a handler ``(args) -> exit code`` of ``body`` run by :func:`run_central`.

    ``audit=False`` for commands that only read (lists, ``show``): every other command is audited.
    ``need_schema=False`` lets the body run on a database ``init`` has not brought up to date. ``cert``
    says what the ``--cert`` file is (for messages): it is read first, before the settings are loaded
    (a missing file is the operator's first problem), and given to the body as ``args.cert_data``.
    """

    def decorate(body: Body) -> Handler:
        @functools.wraps(body)
        def handler(args: argparse.Namespace) -> int:
            if cert is not None:
                args.cert_data = read_file(args.cert, what=cert)
            return run_central(args, body, need_schema=need_schema, audit=audit)

        return handler

    return decorate if body is None else decorate(body)


def out(*parts: Any) -> None:
    """Print and flush at once (``serve`` prints its address for whoever waits for it; the others alike)."""
    print(*parts, flush=True)
