"""The file adapter: a CSV file or a JSON array of objects, loaded at start and served read-only (I/O).

The file is read once (in a thread, so the event loop never blocks) into a
:class:`~adapters.dataset.MemoryDataset`; listing, lookup, filters, pagination and OpenAPI are the dataset
adapter's, exactly as for the SQL adapter.

Column types: CSV values are strings unless the settings declare a type (an empty CSV cell is null for a
non-string column). JSON values keep their JSON type (integers, numbers, booleans, strings); a declared type
converts string values (e.g. ``"1980-01-31"`` to a date). Nested objects and arrays are refused.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from adapters.dataset import (
    ColumnSpec,
    Dataset,
    DatasetAdapter,
    Filters,
    ListResult,
    MemoryDataset,
    Record,
    resolve_columns,
)
from gateway.adapterapi import Column, ColumnType
from gateway.errors import ConfigError, RequestError

FileFormat = Literal["csv", "json"]
DEFAULT_MAX_BYTES = 100 * 2**20  # bytes; a dataset is held in memory, so its file is bounded


def _convert(value: Any, column: Column, *, where: str) -> Any:
    """A raw CSV/JSON value as a value of the column's type.

    Raises:
        ConfigError: naming ``where``.
    """
    if value is None:
        return None
    if isinstance(value, dict | list):
        raise ConfigError(f"{where}: nested objects and arrays are not supported")
    kind = column.type
    if isinstance(value, str):
        if value == "" and kind != "string":
            return None
        if kind == "string":
            return value
        try:
            return column.parse(value)
        except RequestError as e:
            raise ConfigError(f"{where}: {e.message}") from e
    # A JSON scalar that is not a string.
    if kind == "string":
        return value if isinstance(value, str) else json.dumps(value)
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: {value!r} is not a {kind}")


def _infer(values: Sequence[Any]) -> ColumnType:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "boolean"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "integer"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "number"
    return "string"


def parse_records(
    data: bytes,
    *,
    format: FileFormat,
    key: str | None = None,
    columns: Sequence[ColumnSpec] | None = None,
    filters: Sequence[str] | None = None,
    delimiter: str = ",",
    source: str = "file",
) -> MemoryDataset:
    """A dataset from the bytes of a CSV file (with a header row) or a JSON array of objects. Pure.

    ``key`` defaults to the first column.

    Raises:
        ConfigError: undecodable or malformed file, unknown column, bad value, missing or repeated key.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8: {e}") from e
    raw: list[dict[str, Any]]
    if format == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        try:
            raw = [dict(r) for r in reader]
        except csv.Error as e:
            raise ConfigError(f"{source}: malformed CSV at line {reader.line_num}: {e}") from e
        names = list(reader.fieldnames or [])
        for i, r in enumerate(raw):
            if None in r or any(v is None for v in r.values()):
                raise ConfigError(f"{source}: row {i + 2} does not have {len(names)} fields")
        found = [Column(name=n, type="string") for n in names]
    elif format == "json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{source}: malformed JSON: {e}") from e
        if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
            raise ConfigError(f"{source}: the JSON document must be an array of objects")
        raw = doc
        names = list(dict.fromkeys(k for r in raw for k in r))
        found = [Column(name=n, type=_infer([r.get(n) for r in raw])) for n in names]
    else:
        raise ConfigError(f"{source}: unknown format {format!r}; use csv or json")
    if not found:
        raise ConfigError(f"{source}: no columns")
    exposed = resolve_columns(found, columns, filters, source=source)
    key = key or exposed[0].name
    records = []
    for i, r in enumerate(raw):
        where = f"{source}: record {i + 1}"
        records.append(
            {c.name: _convert(r.get(c.name), c, where=f"{where}, column {c.name!r}") for c in exposed}
        )
    return MemoryDataset(columns=exposed, key=key, records=records, source=source)


class FileDataset(Dataset):
    """A CSV or JSON file read at :meth:`open` into memory."""

    def __init__(
        self,
        *,
        path: str | Path,
        format: FileFormat | None = None,
        key: str | None = None,
        columns: Sequence[ColumnSpec] | None = None,
        filters: Sequence[str] | None = None,
        delimiter: str = ",",
        max_bytes: int = DEFAULT_MAX_BYTES,
        source: str = "file adapter",
    ) -> None:
        """``format`` defaults to the file's suffix (``.csv`` or ``.json``).

        Raises:
            ConfigError: no format given and the suffix names none.
        """
        super().__init__()
        self.path = Path(path)
        suffix = self.path.suffix.lower().lstrip(".")
        fmt = format or suffix
        if fmt not in ("csv", "json"):
            raise ConfigError(
                f"{source}: cannot tell the format of {str(self.path)!r}; set format to csv or json"
            )
        self.format: FileFormat = "csv" if fmt == "csv" else "json"
        self._key = key
        self._specs = columns
        self._filters = filters
        self._delimiter = delimiter
        self._max_bytes = max_bytes
        self._source = source
        self._data: MemoryDataset | None = None

    def _load(self) -> MemoryDataset:
        where = f"{self._source}: {self.path}"
        try:
            size = self.path.stat().st_size
            if size > self._max_bytes:
                raise ConfigError(f"{where}: {size} bytes is more than max_bytes = {self._max_bytes}")
            data = self.path.read_bytes()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read: {e.strerror or e}") from e
        return parse_records(
            data,
            format=self.format,
            key=self._key,
            columns=self._specs,
            filters=self._filters,
            delimiter=self._delimiter,
            source=where,
        )

    async def open(self) -> None:
        """Read and parse the file.

        Raises:
            ConfigError: as :func:`parse_records`, or the file cannot be read or is too large.
        """
        self._data = await asyncio.to_thread(self._load)
        self.columns, self.key = self._data.columns, self._data.key

    def _ready(self) -> MemoryDataset:
        if self._data is None:
            raise ConfigError(f"{self._source}: used before open()")
        return self._data

    async def list(self, *, filters: Filters, limit: int, offset: int, after: Any | None) -> ListResult:
        return await self._ready().list(filters=filters, limit=limit, offset=offset, after=after)

    async def get(self, key: Any) -> Record | None:
        return await self._ready().get(key)


class FileAdapter(DatasetAdapter):
    """The file adapter: :class:`FileDataset` served by :class:`~adapters.dataset.DatasetAdapter`."""

    def __init__(
        self, *, name: str, title: str = "", description: str = "", max_limit: int = 1000, **dataset: Any
    ) -> None:
        """Keyword arguments other than the adapter's own go to :class:`FileDataset`.

        Raises:
            ConfigError: as :class:`FileDataset`.
        """
        dataset.setdefault("source", f"adapter {name!r}")
        super().__init__(
            name=name,
            dataset=FileDataset(**dataset),
            title=title,
            description=description,
            max_limit=max_limit,
        )
