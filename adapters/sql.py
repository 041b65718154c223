"""The SQL adapter: a table or a query of any SQLAlchemy database as a read-only REST service (I/O).

The columns are reflected from the table (or declared in the settings, which a query requires); the key is
the table's single-column primary key unless the settings name one. Every statement is built with
SQLAlchemy Core, so user input only ever reaches the database as bound parameters; table names, column
names and the optional query come from the operator's settings, never from a request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import FromClause
from sqlalchemy.types import TypeEngine

from adapters.dataset import ColumnSpec, Dataset, DatasetAdapter, Filters, ListResult, Record, resolve_columns
from gateway.adapterapi import Column, ColumnType, bad_request
from gateway.errors import ConfigError

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


class SqlDataset(Dataset):
    """A table (reflected) or a query (columns declared) of a database reached through an async engine."""

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
        self._from: FromClause | None = None
        self._bits: dict[str, int] = {}

    async def open(self) -> None:
        """Create the engine and reflect the table, or declare the query's columns.

        Raises:
            ConfigError: bad URL, unreachable database, missing table or column, no usable key.
        """
        src = self._source_name
        try:
            self._engine = self._given_engine or create_async_engine(self._url or "", pool_pre_ping=True)
        except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError) as e:
            raise ConfigError(f"{src}: bad database URL: {e}") from e
        dialect = self._engine.dialect.name
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
        self._bits = {c.name: _int_bits(sa_types[c.name], dialect) for c in columns if c.type == "integer"}

    async def close(self) -> None:
        if self._engine is not None and self._given_engine is None:
            await self._engine.dispose()
        self._engine = None

    def _fits(self, name: str, value: Any) -> bool:
        bits = self._bits.get(name)
        return bits is None or -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)

    def _conditions(self, filters: Filters) -> list[ColumnElement[bool]] | None:
        """WHERE conditions with bound parameters; None if some filter can match nothing."""
        assert self._from is not None
        conditions: list[ColumnElement[bool]] = []
        for name, values in filters.items():
            usable = [v for v in values if self._fits(name, v)]
            if not usable:
                return None
            col = self._from.c[name]
            conditions.append(col == usable[0] if len(usable) == 1 else col.in_(usable))
        return conditions

    def _ready(self) -> tuple[AsyncEngine, FromClause]:
        if self._engine is None or self._from is None:
            raise ConfigError(f"{self._source_name}: used before open()")
        return self._engine, self._from

    async def list(self, *, filters: Filters, limit: int, offset: int, after: Any | None) -> ListResult:
        engine, from_ = self._ready()
        conditions = self._conditions(filters)
        if conditions is None:
            return ListResult(items=(), more=False, total=0)
        key_col = from_.c[self.key]
        page_conditions = list(conditions)
        if after is not None:
            if not self._fits(self.key, after):
                return ListResult(items=(), more=False, total=0)
            page_conditions.append(key_col > after)
        rows_stmt = (
            sa.select(*[from_.c[c.name] for c in self.columns])
            .where(*page_conditions)
            .order_by(key_col)
            .limit(limit + 1)
            .offset(None if after is not None else offset)
        )
        count_stmt = sa.select(sa.func.count()).select_from(from_).where(*conditions)
        try:
            async with engine.connect() as conn:
                total = int((await conn.execute(count_stmt)).scalar_one())
                rows = (await conn.execute(rows_stmt)).mappings().all()
        except sa_exc.DataError as e:
            raise bad_request("a filter value is not valid for its column in the database") from e
        items = tuple(dict(r) for r in rows[:limit])
        return ListResult(items=items, more=len(rows) > limit, total=total)

    async def get(self, key: Any) -> Record | None:
        engine, from_ = self._ready()
        if not self._fits(self.key, key):
            return None
        stmt = sa.select(*[from_.c[c.name] for c in self.columns]).where(from_.c[self.key] == key).limit(2)
        try:
            async with engine.connect() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        except sa_exc.DataError:
            return None
        return dict(rows[0]) if rows else None


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
