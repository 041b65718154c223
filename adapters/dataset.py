"""The dataset abstraction shared by the SQL and file adapters, and the adapter that serves any dataset.

A :class:`Dataset` is a keyed, ordered collection of flat records with typed columns. It answers two
questions: one page of the records that match some equality filters (ordered by key), and one record by key.
:class:`DatasetAdapter` turns that into the read-only REST service described in ``docs/adapters.md``
(listing, lookup, pagination, filters, OpenAPI), so that the SQL and file adapters share every HTTP rule.

:class:`MemoryDataset` (pure: rows in memory) backs the file adapter and is the in-memory test version of the
seam; :class:`DatasetAdapter` does HTTP I/O through :mod:`gateway.adapterapi`.
"""

from __future__ import annotations

import bisect
import itertools
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast
from urllib.parse import unquote

from aiohttp import web

from gateway.adapterapi import (
    AdapterRequest,
    Column,
    ColumnType,
    PageParams,
    ServiceAdapter,
    encode_cursor,
    json_response,
    next_link,
    not_found,
    parse_filters,
    parse_page,
    to_json_value,
)
from gateway.errors import ConfigError, RequestError

Record = dict[str, Any]
Filters = Mapping[str, tuple[Any, ...]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ColumnSpec:
    """A column as the adapter's settings declare it: the type and description override what the source says.

    ``type`` None means: reflected from the database (SQL), inferred from the values (JSON), string (CSV).
    """

    name: str
    type: ColumnType | None = None
    description: str = ""


def resolve_columns(
    found: Sequence[Column], specs: Sequence[ColumnSpec] | None, filters: Sequence[str] | None, *, source: str
) -> tuple[Column, ...]:
    """The exposed columns: those declared (in their order, with their overrides) or else all found ones.

    ``filters`` names the filterable columns; None makes every exposed column filterable.

    Raises:
        ConfigError: a declared column or filter that the source does not have.
    """
    by_name = {c.name: c for c in found}
    if specs is None:
        chosen = list(found)
    else:
        chosen = []
        for spec in specs:
            base = by_name.get(spec.name)
            if base is None:
                raise ConfigError(
                    f"{source}: column {spec.name!r} not found; available: {', '.join(by_name)}"
                )
            chosen.append(
                replace(base, type=spec.type or base.type, description=spec.description or base.description)
            )
    names = {c.name for c in chosen}
    if filters is not None:
        unknown = [f for f in filters if f not in names]
        if unknown:
            raise ConfigError(f"{source}: filters name columns that are not exposed: {', '.join(unknown)}")
        allowed = set(filters)
        chosen = [replace(c, filterable=c.name in allowed) for c in chosen]
    else:
        chosen = [replace(c, filterable=True) for c in chosen]
    return tuple(chosen)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListResult:
    """One page of matching records (at most ``limit``), whether more follow, and how many match in all."""

    items: tuple[Record, ...]
    more: bool
    total: int


class Dataset(ABC):
    """A keyed collection of flat records; the key column orders listings (stable pagination)."""

    def __init__(self) -> None:
        self.columns: tuple[Column, ...] = ()
        self.key: str = ""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Load or connect; afterwards ``columns`` and ``key`` are set."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`open` acquired."""

    @property
    def key_column(self) -> Column:
        return next(c for c in self.columns if c.name == self.key)

    @abstractmethod
    async def list(self, *, filters: Filters, limit: int, offset: int, after: Any | None) -> ListResult:
        """Records matching every filter (a column equal to one of its values), ordered by key.

        ``after`` (a key value) starts after that key and excludes ``offset``; ``total`` ignores it.
        """

    @abstractmethod
    async def get(self, key: Any) -> Record | None:
        """The record with this key, or None."""


def check_columns(columns: Sequence[Column], key: str, *, source: str) -> None:
    """Refuse duplicate column names and a key that is not one of the columns.

    Raises:
        ConfigError: naming ``source``.
    """
    names = [c.name for c in columns]
    if not names:
        raise ConfigError(f"{source}: no columns")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{source}: duplicate columns {', '.join(duplicates)}")
    if key not in names:
        raise ConfigError(f"{source}: key column {key!r} is not among the columns {', '.join(names)}")


MAX_CACHED_FILTERS = 1024  # filter combinations whose matches a MemoryDataset keeps; a caller picks them


def _hashable(value: Any) -> Any:
    # Equal values must meet in the index as they would under ==; a float NaN never equals anything.
    return value if value == value else object()


class MemoryDataset(Dataset):
    """Records held in memory, sorted by key once; filters use per-column indexes, lookups bisect. Pure."""

    def __init__(
        self,
        *,
        columns: Sequence[Column],
        key: str,
        records: Sequence[Mapping[str, Any]],
        source: str = "in-memory dataset",
    ) -> None:
        """
        Raises:
            ConfigError: bad columns, or a record whose key is missing or repeated.
        """
        super().__init__()
        check_columns(columns, key, source=source)
        self.columns = tuple(columns)
        self.key = key
        names = [c.name for c in columns]
        rows = [{n: r.get(n) for n in names} for r in records]
        for i, row in enumerate(rows):
            if row[key] is None or row[key] == "":
                raise ConfigError(f"{source}: record {i + 1} has no value for key column {key!r}")
        try:
            rows.sort(key=lambda r: cast(Any, r[key]))
        except TypeError as e:
            raise ConfigError(f"{source}: key column {key!r} mixes value types") from e
        for a, b in itertools.pairwise(rows):
            if a[key] == b[key]:
                raise ConfigError(f"{source}: key {a[key]!r} appears more than once in column {key!r}")
        self._rows = rows
        self._keys = [r[key] for r in rows]
        self._indexes: dict[str, dict[Any, list[int]]] = {}  # column -> value -> positions, built when filtered
        self._matches: dict[tuple[Any, ...], list[int]] = {}  # filters -> positions of the matching rows

    def _positions(self, name: str, values: tuple[Any, ...]) -> list[int]:
        """Ascending positions of the rows whose column ``name`` equals one of ``values``."""
        index = self._indexes.get(name)
        if index is None:
            # Built on the first filter on this column, then kept: the rows never change.
            index = {}
            for i, row in enumerate(self._rows):
                index.setdefault(_hashable(row[name]), []).append(i)
            self._indexes[name] = index
        found = [index.get(_hashable(v), []) for v in dict.fromkeys(values)]
        if len(found) == 1:
            return found[0]
        return sorted(itertools.chain.from_iterable(found))

    def _matching(self, filters: Filters) -> list[int]:
        """Ascending positions of the rows matching every filter (cached per filter combination)."""
        cache_key = tuple((name, values) for name, values in filters.items())
        hit = self._matches.get(cache_key)
        if hit is not None:
            return hit
        candidates = sorted((self._positions(n, v) for n, v in filters.items()), key=len)
        matching = candidates[0]
        for other in candidates[1:]:
            keep = set(other)
            matching = [i for i in matching if i in keep]
        if len(self._matches) >= MAX_CACHED_FILTERS:
            self._matches.clear()  # a caller cycling through filters: start over rather than grow
        self._matches[cache_key] = matching
        return matching

    async def list(self, *, filters: Filters, limit: int, offset: int, after: Any | None) -> ListResult:
        rows = self._rows
        if not filters:
            start = offset
            if after is not None:
                try:
                    start = bisect.bisect_right(self._keys, after)
                except TypeError:
                    start = len(rows)
            window = rows[start : start + limit + 1]
            return ListResult(items=tuple(window[:limit]), more=len(window) > limit, total=len(rows))
        matching = self._matching(filters)
        start = offset
        if after is not None:
            try:
                # Rows are sorted by key, so the first matching row after the key follows its position.
                start = bisect.bisect_left(matching, bisect.bisect_right(self._keys, after))
            except TypeError:
                start = len(matching)
        picked = matching[start : start + limit + 1]
        return ListResult(
            items=tuple(rows[i] for i in picked[:limit]), more=len(picked) > limit, total=len(matching)
        )

    async def get(self, key: Any) -> Record | None:
        try:
            i = bisect.bisect_left(self._keys, key)
        except TypeError:
            return None
        if i < len(self._keys) and self._keys[i] == key:
            return dict(self._rows[i])
        return None


class DatasetAdapter(ServiceAdapter):
    """A read-only REST service over a :class:`Dataset`: ``GET /`` lists, ``GET /{key}`` looks up."""

    methods = frozenset({"GET", "HEAD"})

    def __init__(
        self, *, name: str, dataset: Dataset, title: str = "", description: str = "", max_limit: int = 1000
    ) -> None:
        super().__init__(name=name, title=title, description=description)
        self.dataset = dataset
        self.max_limit = max_limit  # items per page; at most gateway.adapterapi.MAX_LIMIT

    async def start(self) -> None:
        await self.dataset.open()

    async def close(self) -> None:
        await self.dataset.close()

    async def serve(self, request: AdapterRequest) -> web.StreamResponse:
        path = request.raw_path
        if path in ("", "/"):
            return await self._list(request)
        segments = path.split("/")
        if len(segments) == 2 and segments[1]:
            return await self._get(unquote(segments[1]))
        raise not_found(f"no such resource in service {self.name!r}")

    async def _list(self, request: AdapterRequest) -> web.StreamResponse:
        # (1) Page and filters from the query; every other parameter must be a filterable column.
        page: PageParams = parse_page(request.query, max_limit=self.max_limit)
        filters = parse_filters(request.query, self.dataset.columns)
        # (2) The cursor holds the last key as text; parse it like any key value.
        after = self.dataset.key_column.parse(page.after) if page.after is not None else None
        result = await self.dataset.list(filters=filters, limit=page.limit, offset=page.offset, after=after)
        # (3) The next link keeps the caller's mode: offset stays offset, cursor stays cursor.
        nxt = None
        if result.more and result.items:
            if page.by_cursor:
                last = to_json_value(result.items[-1][self.dataset.key])
                nxt = next_link(request.query, cursor=encode_cursor(str(last)))
            else:
                nxt = next_link(request.query, offset=page.offset + len(result.items))
        body = {
            "items": [_jsonable(r) for r in result.items],
            "limit": page.limit,
            "offset": None if page.by_cursor else page.offset,
            "total": result.total,
            "next": nxt,
        }
        return json_response(body)

    async def _get(self, key_text: str) -> web.StreamResponse:
        try:
            key = self.dataset.key_column.parse(key_text)
        except RequestError:
            key = None  # a key that is not even of the key's type names no record
        record = await self.dataset.get(key) if key is not None else None
        if record is None:
            raise not_found(f"no item with {self.dataset.key} {key_text[:100]!r} in service {self.name!r}")
        return json_response(_jsonable(record))

    def openapi(self) -> dict[str, Any]:
        return dataset_openapi(
            title=self.title,
            description=self.description,
            columns=self.dataset.columns,
            key=self.dataset.key,
            max_limit=self.max_limit,
        )


_PLAIN = frozenset({str, int, bool, type(None)})  # JSON as they are: no conversion call per value


def _jsonable(record: Mapping[str, Any]) -> Record:
    return {k: v if type(v) in _PLAIN else to_json_value(v) for k, v in record.items()}


def dataset_openapi(
    *, title: str, description: str, columns: Sequence[Column], key: str, max_limit: int = 1000
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a dataset service; paths are relative to the service's base URL."""
    key_column = next(c for c in columns if c.name == key)
    key_schema = dict(key_column.schema())
    key_schema["type"] = _non_null(key_schema["type"])
    error = {
        "description": "Error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    parameters: list[dict[str, Any]] = [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "Items per page.",
            "schema": {"type": "integer", "minimum": 1, "maximum": max_limit, "default": 50},
        },
        {
            "name": "offset",
            "in": "query",
            "required": False,
            "description": "Items to skip (not with cursor).",
            "schema": {"type": "integer", "minimum": 0, "default": 0},
        },
        {
            "name": "cursor",
            "in": "query",
            "required": False,
            "description": "Opaque cursor from a next link; empty to start (not with offset).",
            "schema": {"type": "string"},
        },
    ]
    for c in columns:
        if not c.filterable:
            continue
        item = dict(c.schema())
        item["type"] = _non_null(item["type"])
        item.pop("description", None)
        parameters.append(
            {
                "name": c.name,
                "in": "query",
                "required": False,
                "style": "form",
                "explode": True,
                "description": f"Exact match on {c.name}; repeat to match any of several values.",
                "schema": {"type": "array", "items": item},
            }
        )
    properties = {c.name: c.schema() for c in columns}
    required = [c.name for c in columns]
    info: dict[str, Any] = {"title": title, "version": "1.0.0"}
    if description:
        info["description"] = description
    return {
        "openapi": "3.1.0",
        "info": info,
        "paths": {
            "/": {
                "get": {
                    "operationId": "list",
                    "summary": f"List {title}, ordered by {key}",
                    "parameters": parameters,
                    "responses": {
                        "200": {
                            "description": "One page of items",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Page"}}
                            },
                        },
                        "400": error,
                    },
                }
            },
            f"/{{{key}}}": {
                "get": {
                    "operationId": "get",
                    "summary": f"One item by {key}",
                    "parameters": [{"name": key, "in": "path", "required": True, "schema": key_schema}],
                    "responses": {
                        "200": {
                            "description": "The item",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Item"}}
                            },
                        },
                        "404": error,
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Item": {
                    "type": "object",
                    "properties": properties,
                    "required": required,
                    "additionalProperties": False,
                },
                "Page": {
                    "type": "object",
                    "required": ["items", "limit", "offset", "total", "next"],
                    "properties": {
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
                        "limit": {"type": "integer"},
                        "offset": {"type": ["integer", "null"], "description": "null when paging by cursor"},
                        "total": {"type": "integer", "description": "Items matching the filters"},
                        "next": {
                            "type": ["string", "null"],
                            "description": "Relative reference (query only) to the next page, or null",
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["type", "message", "detail"],
                    "properties": {
                        "type": {"type": "string"},
                        "message": {"type": "string"},
                        "detail": {"type": "string"},
                    },
                },
            }
        },
    }


def _non_null(t: Any) -> Any:
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        return rest[0] if len(rest) == 1 else rest
    return t
