"""The SQL adapter: a table or a query of any SQLAlchemy database as a read-only REST service (I/O).

The columns are reflected from the table (or declared in the settings, which a query requires); the key is
the table's single-column primary key unless the settings name one. Every statement is built with
SQLAlchemy Core, so user input only ever reaches the database as bound parameters; table names, column
names and the optional query come from the operator's settings, never from a request.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import FromClause
from sqlalchemy.types import TypeEngine

from adapters.dataset import ColumnSpec, Dataset, DatasetAdapter, Filters, ListResult, Record, resolve_columns
from gateway.adapterapi import Column, ColumnType, bad_request
from gateway.errors import ConfigError, RequestError

_SA_TYPES: dict[ColumnType, type[TypeEngine[Any]]] = {
    "string": sa.String,
    "integer": sa.BigInteger,
    "number": sa.Float,
    "boolean": sa.Boolean,
    "date": sa.Date,
    "datetime": sa.DateTime,
}


def column_type(t: TypeEngine[Any]) -> ColumnType:
    """Our column type for a SQLAlchemy type; anything unknown is served as a string."""
    if isinstance(t, sa.Boolean):
        return "boolean"
    if isinstance(t, sa.Integer):
        return "integer"
    if isinstance(t, sa.Numeric):  # includes Float
        return "number"
    if isinstance(t, sa.DateTime):
        return "datetime"
    if isinstance(t, sa.Date):
        return "date"
    return "string"


def _int_bits(t: TypeEngine[Any], dialect: str) -> int:
    """An integer column's width: a value outside can match no row (and PostgreSQL would refuse it)."""
    if dialect == "sqlite" or isinstance(t, sa.BigInteger):
        return 64
    if isinstance(t, sa.SmallInteger):
        return 16
    return 32


# Connections the PostgreSQL runner keeps (asyncpg pool): enough concurrent queries to keep a small server
# busy while the event loop encodes responses; each one is a server process, so not one per request in flight.
DEFAULT_POOL_SIZE = 8
# SQLite connections the SQLite runner keeps, each with its own thread (aiosqlite): reads run in parallel in
# SQLite's C code, which releases the GIL. Measured with bench/adapters.py on 2 cores: 2 beat 1 by about 20%,
# 4 did no better than 2 (the threads then only contend for the GIL).
DEFAULT_SQLITE_READERS = 2
# Seconds an exact `total` is reused for the same filters (docs/adapters.md, "total"): a count scans every
# matching row, so counting on every page would cost more than the page; 0 counts on every request.
DEFAULT_TOTAL_CACHE_SECONDS = 1.0
MAX_SHAPES = 256  # compiled statements kept per dataset (one per filter shape); a caller controls the shape
MAX_TOTALS = 1024  # cached totals per dataset (one per filter combination); a caller controls the values

ResultProcessor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A statement compiled once for one shape of request: SQL text, its parameter order, value converters."""

    stmt: sa.Select[Any]
    sql: str
    names: tuple[str, ...]  # bound parameter names, in the positional order of ``sql``
    binds: tuple[ResultProcessor, ...]  # per parameter: SQLAlchemy's conversion for this dialect, or None
    results: tuple[ResultProcessor, ...]  # per result column, for runners that bypass SQLAlchemy
    fixed: Mapping[str, Any]  # values of the parameters that the statement itself binds (e.g. LIMIT 2)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        fixed = self.fixed
        out = [params[n] if n in params else fixed[n] for n in self.names]
        for i, proc in enumerate(self.binds):
            if proc is not None and out[i] is not None:
                out[i] = proc(out[i])
        return out


class _Runner(ABC):
    """Runs compiled statements; rows come back as tuples of Python values (SQLAlchemy's conversions applied)."""

    raw = True  # True: the runner talks to the driver, and the dataset applies the result conversions
    data_errors: tuple[type[BaseException], ...] = ()  # the driver's "this value does not fit the column"

    @abstractmethod
    async def fetch(self, c: _Compiled, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class _SaRunner(_Runner):
    """Any SQLAlchemy database: the compiled statement object goes through the engine (its compiled cache)."""

    raw = False
    data_errors = (sa_exc.DataError,)

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def fetch(self, c: _Compiled, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        async with self._engine.connect() as conn:
            bound = {n: params[n] for n in c.names if n in params}
            return [tuple(r) for r in (await conn.execute(c.stmt, bound)).all()]


class _AsyncpgRunner(_Runner):
    """PostgreSQL through asyncpg directly: a pool, and each statement prepared once per connection."""

    def __init__(self, pool: Any) -> None:
        import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints (no py.typed)

        self._pool = pool
        self.data_errors = (asyncpg.exceptions.DataError,)

    @classmethod
    async def connect(cls, dsn: str, size: int) -> _AsyncpgRunner:
        import asyncpg

        # statement_cache_size: asyncpg keeps each statement prepared per connection (LRU of 100 by default).
        return cls(await asyncpg.create_pool(dsn, min_size=1, max_size=size))

    async def fetch(self, c: _Compiled, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        rows: Sequence[Sequence[Any]] = await self._pool.fetch(c.sql, *c.args(params))
        return rows

    async def close(self) -> None:
        await self._pool.close()


class _SqliteRunner(_Runner):
    """A SQLite file through aiosqlite directly: a few connections, each query one hop to its thread."""

    data_errors = (sqlite3.DataError,)

    def __init__(self, conns: Sequence[aiosqlite.Connection]) -> None:
        self._conns = list(conns)
        self._idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        for conn in conns:
            self._idle.put_nowait(conn)

    @classmethod
    async def connect(cls, path: str, size: int) -> _SqliteRunner:
        conns: list[aiosqlite.Connection] = []
        try:
            for _ in range(size):
                conns.append(await aiosqlite.connect(path))
        except BaseException:
            for conn in conns:
                await conn.close()
            raise
        return cls(conns)

    async def fetch(self, c: _Compiled, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        conn = await self._idle.get()
        try:
            return list(await conn.execute_fetchall(c.sql, c.args(params)))
        finally:
            self._idle.put_nowait(conn)

    async def close(self) -> None:
        for conn in self._conns:
            await conn.close()


def _raw_target(url: str) -> tuple[str, str] | None:
    """("asyncpg", DSN) or ("aiosqlite", file path) when the driver can be used directly; else None."""
    parsed = make_url(url)
    if parsed.query:
        return None  # driver options in the URL are SQLAlchemy's to interpret
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "postgresql" and driver == "asyncpg":
        return "asyncpg", parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    database = parsed.database or ""
    if backend == "sqlite" and driver == "aiosqlite" and database not in ("", ":memory:") and (
        not database.startswith("file:")
    ):
        return "aiosqlite", database
    return None


class SqlDataset(Dataset):
    """A table (reflected) or a query (columns declared) of a database reached through an async engine.

    Statements are built and compiled once per request shape (which filters, how many values each, cursor or
    offset) and then only get new bound values. On PostgreSQL (asyncpg) and on a SQLite file (aiosqlite) they
    run on the driver directly, with SQLAlchemy's type conversions applied; on any other database through the
    engine. ``total`` is counted exactly and reused for ``total_cache_seconds`` per filter combination.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        engine: AsyncEngine | None = None,
        table: str | None = None,
        schema: str | None = None,
        query: str | None = None,
        key: str | None = None,
        columns: Sequence[ColumnSpec] | None = None,
        filters: Sequence[str] | None = None,
        source: str = "sql adapter",
        pool_size: int = DEFAULT_POOL_SIZE,
        total_cache_seconds: float = DEFAULT_TOTAL_CACHE_SECONDS,
    ) -> None:
        """
        Raises:
            ConfigError: not exactly one of url/engine and of table/query, or a query without columns and key.
        """
        super().__init__()
        if (url is None) == (engine is None):
            raise ConfigError(f"{source}: give exactly one of url and engine")
        if (table is None) == (query is None):
            raise ConfigError(f"{source}: give exactly one of table and query")
        if query is not None and (not columns or key is None):
            raise ConfigError(f"{source}: a query needs declared columns (with types) and a key")
        self._url = url
        self._given_engine = engine
        self._engine: AsyncEngine | None = None
        self._table = table
        self._schema = schema
        self._query = query
        self._key = key
        self._specs = tuple(columns) if columns is not None else None
        self._filters = tuple(filters) if filters is not None else None
        self._source_name = source
        self._pool_size = pool_size
        self._total_seconds = total_cache_seconds
        self._from: FromClause | None = None
        self._bits: dict[str, int] = {}
        self._runner: _Runner | None = None
        self._results: tuple[ResultProcessor, ...] = ()
        self._names: tuple[str, ...] = ()
        self._shapes: dict[tuple[Any, ...], _Compiled] = {}
        self._totals: dict[tuple[Any, ...], tuple[float, asyncio.Future[int]]] = {}

    async def open(self) -> None:
        """Create the engine and reflect the table, or declare the query's columns; connect the runner.

        Raises:
            ConfigError: bad URL, unreachable database, missing table or column, no usable key.
        """
        src = self._source_name
        try:
            self._engine = self._given_engine or create_async_engine(self._url or "", pool_pre_ping=True)
        except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError) as e:
            raise ConfigError(f"{src}: bad database URL: {e}") from e
        dialect = self._engine.dialect
        if self._table is not None:
            table_name, schema = self._table, self._schema
            try:
                async with self._engine.connect() as conn:
                    table = await conn.run_sync(
                        lambda c: sa.Table(table_name, sa.MetaData(), schema=schema, autoload_with=c)
                    )
            except sa_exc.NoSuchTableError as e:
                raise ConfigError(f"{src}: table {self._table!r} not found") from e
            except (sa_exc.SQLAlchemyError, OSError) as e:
                raise ConfigError(f"{src}: cannot read table {self._table!r}: {e}") from e
            found = [
                Column(name=c.name, type=column_type(c.type), nullable=bool(c.nullable))
                for c in table.columns
            ]
            key = self._key
            if key is None:
                pk = [c.name for c in table.primary_key.columns]
                if len(pk) != 1:
                    raise ConfigError(
                        f"{src}: table {self._table!r} has no single-column primary key; set key"
                    )
                key = pk[0]
            from_: FromClause = table
            sa_types = {c.name: c.type for c in table.columns}
        else:
            assert self._specs is not None and self._key is not None  # checked in __init__
            found = [Column(name=s.name, type=s.type or "string") for s in self._specs]
            key = self._key
            cols = [sa.column(c.name, _SA_TYPES[c.type]()) for c in found]
            from_ = sa.text(self._query or "").columns(*cols).subquery("q")
            sa_types = {c.name: _SA_TYPES[c.type]() for c in found}
        columns = resolve_columns(found, self._specs, self._filters, source=src)
        if key not in {c.name for c in columns}:
            raise ConfigError(f"{src}: key column {key!r} must be one of the exposed columns")
        self.columns, self.key, self._from = columns, key, from_
        self._bits = {c.name: _int_bits(sa_types[c.name], dialect.name) for c in columns if c.type == "integer"}
        self._names = tuple(c.name for c in columns)
        self._results = tuple(
            from_.c[n].type.dialect_impl(dialect).result_processor(dialect, None) for n in self._names
        )
        self._runner = await self._connect_runner()

    async def _connect_runner(self) -> _Runner:
        assert self._engine is not None
        target = _raw_target(self._url) if self._url is not None else None
        try:
            if target is not None and target[0] == "asyncpg":
                return await _AsyncpgRunner.connect(target[1], self._pool_size)
            if target is not None:
                return await _SqliteRunner.connect(target[1], min(self._pool_size, DEFAULT_SQLITE_READERS))
        except Exception as e:  # OSError, sqlite3.Error, asyncpg's PostgresError: no common base
            raise ConfigError(f"{self._source_name}: cannot connect: {e}") from e
        return _SaRunner(self._engine)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.close()
        self._runner = None
        if self._engine is not None and self._given_engine is None:
            await self._engine.dispose()
        self._engine = None

    def _fits(self, name: str, value: Any) -> bool:
        bits = self._bits.get(name)
        return bits is None or -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)

    def _usable(self, filters: Filters) -> dict[str, tuple[Any, ...]] | None:
        """Each filter's values that fit its column; None if some filter can match nothing."""
        usable: dict[str, tuple[Any, ...]] = {}
        for name, values in filters.items():
            fitting = tuple(v for v in values if self._fits(name, v))
            if not fitting:
                return None
            usable[name] = fitting
        return usable

    def _ready(self) -> tuple[_Runner, FromClause]:
        if self._runner is None or self._from is None or self._engine is None:
            raise ConfigError(f"{self._source_name}: used before open()")
        return self._runner, self._from

    def _compiled(self, shape: tuple[Any, ...], build: Callable[[FromClause], sa.Select[Any]]) -> _Compiled:
        """The statement for this shape, built and compiled on first use."""
        found = self._shapes.get(shape)
        if found is not None:
            return found
        runner, from_ = self._ready()
        assert self._engine is not None
        dialect = self._engine.dialect
        stmt = build(from_)
        compiled = stmt.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        binds = tuple(compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names)
        results = self._results if runner.raw and shape[0] == "rows" else ()
        fixed = {n: v for n, v in compiled.params.items() if v is not None}
        made = _Compiled(stmt=stmt, sql=compiled.string, names=names, binds=binds, results=results, fixed=fixed)
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()  # a caller cycling through shapes: start over rather than grow
        self._shapes[shape] = made
        return made

    def _where(self, from_: FromClause, filters: Filters) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        for i, (name, values) in enumerate(filters.items()):
            col = from_.c[name]
            binds = [sa.bindparam(f"f{i}_{j}", type_=col.type) for j in range(len(values))]
            conditions.append(col == binds[0] if len(binds) == 1 else col.in_(binds))
        return conditions

    @staticmethod
    def _params(filters: Filters) -> dict[str, Any]:
        return {f"f{i}_{j}": v for i, values in enumerate(filters.values()) for j, v in enumerate(values)}

    async def _fetch(self, c: _Compiled, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        runner, _ = self._ready()
        try:
            rows = await runner.fetch(c, params)
        except runner.data_errors as e:
            raise bad_request("a filter value is not valid for its column in the database") from e
        if c.results and any(p is not None for p in c.results):
            procs = c.results
            return [tuple(v if p is None or v is None else p(v) for p, v in zip(procs, r, strict=True)) for r in rows]
        return rows

    def _records(self, rows: Sequence[Sequence[Any]]) -> tuple[Record, ...]:
        names = self._names
        return tuple(dict(zip(names, r, strict=True)) for r in rows)

    async def _total(self, filters: Filters) -> int:
        """The exact number of rows matching ``filters``, shared by concurrent requests and reused briefly."""
        shape = tuple((name, len(values)) for name, values in filters.items())
        cache_key = (shape, tuple(filters.values()))
        now = time.monotonic()
        cached = self._totals.get(cache_key)
        if cached is not None and cached[0] > now:
            return await asyncio.shield(cached[1])

        def build(from_: FromClause) -> sa.Select[Any]:
            return sa.select(sa.func.count()).select_from(from_).where(*self._where(from_, filters))

        c = self._compiled(("count", shape), build)
        future: asyncio.Future[int] = asyncio.ensure_future(self._count(c, self._params(filters)))
        if self._total_seconds > 0:
            if len(self._totals) >= MAX_TOTALS:
                self._totals = {k: v for k, v in self._totals.items() if v[0] > now}
                if len(self._totals) >= MAX_TOTALS:
                    self._totals.clear()
            self._totals[cache_key] = (now + self._total_seconds, future)
        try:
            return await asyncio.shield(future)
        except BaseException:
            if self._totals.get(cache_key, (0.0, None))[1] is future:
                del self._totals[cache_key]  # a failed count is not reused
            raise

    async def _count(self, c: _Compiled, params: Mapping[str, Any]) -> int:
        rows = await self._fetch(c, params)
        return int(rows[0][0])

    async def list(self, *, filters: Filters, limit: int, offset: int, after: Any | None) -> ListResult:
        self._ready()
        usable = self._usable(filters)
        if usable is None:
            return ListResult(items=(), more=False, total=0)
        if after is not None and not self._fits(self.key, after):
            return ListResult(items=(), more=False, total=0)
        key, names = self.key, self._names
        by_cursor = after is not None
        shape = tuple((name, len(values)) for name, values in usable.items())

        def build(from_: FromClause) -> sa.Select[Any]:
            key_col = from_.c[key]
            conditions = self._where(from_, usable)
            if by_cursor:
                conditions.append(key_col > sa.bindparam("after", type_=key_col.type))
            stmt = sa.select(*[from_.c[n] for n in names]).where(*conditions).order_by(key_col)
            stmt = stmt.limit(sa.bindparam("limit", type_=sa.Integer()))
            if not by_cursor:
                stmt = stmt.offset(sa.bindparam("offset", type_=sa.Integer()))
            return stmt

        c = self._compiled(("rows", shape, by_cursor), build)
        params = self._params(usable)
        params |= {"limit": limit + 1, "offset": offset, "after": after}
        total = await self._total(usable)
        rows = await self._fetch(c, params)
        return ListResult(items=self._records(rows[:limit]), more=len(rows) > limit, total=total)

    async def get(self, key: Any) -> Record | None:
        self._ready()
        if not self._fits(self.key, key):
            return None
        key_name, names = self.key, self._names

        def build(from_: FromClause) -> sa.Select[Any]:
            key_col = from_.c[key_name]
            return (
                sa.select(*[from_.c[n] for n in names])
                .where(key_col == sa.bindparam("key", type_=key_col.type))
                .limit(2)
            )

        c = self._compiled(("rows", "get"), build)
        try:
            rows = await self._fetch(c, {"key": key})
        except RequestError:
            return None  # a key the database cannot even compare names no row
        return self._records(rows[:1])[0] if rows else None


class SqlAdapter(DatasetAdapter):
    """The SQL adapter: :class:`SqlDataset` served by :class:`~adapters.dataset.DatasetAdapter`."""

    def __init__(
        self, *, name: str, title: str = "", description: str = "", max_limit: int = 1000, **dataset: Any
    ) -> None:
        """Keyword arguments other than the adapter's own go to :class:`SqlDataset`.

        Raises:
            ConfigError: as :class:`SqlDataset`.
        """
        dataset.setdefault("source", f"adapter {name!r}")
        super().__init__(
            name=name,
            dataset=SqlDataset(**dataset),
            title=title,
            description=description,
            max_limit=max_limit,
        )
