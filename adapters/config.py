"""The adapters' settings file (TOML): which adapters to run, and where to listen.

Pure apart from reading the one file it is given (:func:`load_config`). The format is documented in
``docs/adapters.md`` and every key appears in ``config/adapters.example.toml``. A bad file raises
:class:`~gateway.errors.ConfigError` naming the file and the key, before any socket opens. Relative file
paths (``path``, ``openapi``, a SQLite database) are resolved against the settings file's directory.
Secrets stay out of the file: a database URL with a password is read from the variable ``url_env`` names.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from adapters.dataset import ColumnSpec
from adapters.files import DEFAULT_MAX_BYTES, FileAdapter
from adapters.passthrough import DEFAULT_CONNECT_TIMEOUT_SECONDS, DEFAULT_TIMEOUT_SECONDS, PassthroughAdapter
from adapters.soap import SoapPersonsAdapter
from adapters.sql import DEFAULT_TOTAL_CACHE_SECONDS, SqlAdapter
from gateway.adapterapi import ADAPTER_NAME_RE, COLUMN_TYPES, MAX_LIMIT, ServiceAdapter
from gateway.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090

_COMMON = {"kind", "title", "description"}
_KEYS: dict[str, set[str]] = {
    "sql": _COMMON
    | {"url", "url_env", "table", "schema", "query", "key", "columns", "filters", "max_limit", "total_cache_seconds"},
    "file": _COMMON | {"path", "format", "delimiter", "key", "columns", "filters", "max_limit", "max_bytes"},
    "passthrough": _COMMON | {"base_url", "openapi", "timeout_seconds", "connect_timeout_seconds"},
    "soap": _COMMON | {"path", "key", "columns"},
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptersConfig:
    """Where to listen and the adapters to mount (constructed, not started)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    adapters: Mapping[str, ServiceAdapter] = field(default_factory=dict)


class _Table:
    """Typed access to one TOML table, with errors that name the file and the key."""

    def __init__(self, data: Mapping[str, Any], *, where: str) -> None:
        self.data = data
        self.where = where

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}.{key}: {message}")

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.data.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {type(value).__name__}")
        return value

    def number(self, key: str, default: float, *, integer: bool = False, minimum: float = 0) -> Any:
        value = self.data.get(key, default)
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok or value < minimum:
            kind = "an integer" if integer else "a number"
            raise self.fail(key, f"must be {kind} >= {minimum}, got {value!r}")
        return value

    def names(self, key: str) -> list[str] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "must be a list of column names")
        return value

    def columns(self) -> list[ColumnSpec] | None:
        value = self.data.get("columns")
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.fail("columns", "must be a list of names or {name, type, description} tables")
        specs = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                specs.append(ColumnSpec(name=item))
                continue
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise self.fail(f"columns[{i}]", "must be a name or a table with a name")
            extra = set(item) - {"name", "type", "description"}
            if extra:
                raise self.fail(f"columns[{i}]", f"unknown keys {', '.join(sorted(extra))}")
            kind = item.get("type")
            if kind is not None and kind not in COLUMN_TYPES:
                raise self.fail(f"columns[{i}].type", f"must be one of {', '.join(COLUMN_TYPES)}, got {kind!r}")
            desc = item.get("description", "")
            if not isinstance(desc, str):
                raise self.fail(f"columns[{i}].description", "must be a string")
            specs.append(ColumnSpec(name=item["name"], type=kind, description=desc))
        return specs


def _resolve(base_dir: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base_dir / path)


def _sql_url(t: _Table, *, base_dir: Path, environ: Mapping[str, str]) -> str:
    url = t.text("url")
    var = t.text("url_env")
    if (url is None) == (var is None):
        raise t.fail("url", "give exactly one of url and url_env")
    if var is not None:
        url = environ.get(var)
        if not url:
            raise t.fail("url_env", f"environment variable {var} is not set")
    assert url is not None
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise t.fail("url", f"not a database URL: {e}") from e
    if (
        parsed.get_backend_name() == "sqlite"
        and parsed.database
        and parsed.database != ":memory:"
        and not parsed.database.startswith("file:")
    ):
        parsed = parsed.set(database=_resolve(base_dir, parsed.database))
    return parsed.render_as_string(hide_password=False)


def _build(name: str, t: _Table, *, base_dir: Path, environ: Mapping[str, str]) -> ServiceAdapter:
    kind = t.text("kind")
    if kind not in _KEYS:
        raise t.fail("kind", f"must be one of {', '.join(_KEYS)}, got {kind!r}")
    unknown = sorted(set(t.data) - _KEYS[kind])
    if unknown:
        raise t.fail(unknown[0], f"unknown key for a {kind} adapter; known: {', '.join(sorted(_KEYS[kind]))}")
    common: dict[str, Any] = {
        "name": name,
        "title": t.text("title", "") or "",
        "description": t.text("description", "") or "",
    }
    if kind == "sql":
        return SqlAdapter(
            **common,
            url=_sql_url(t, base_dir=base_dir, environ=environ),
            table=t.text("table"),
            schema=t.text("schema"),
            query=t.text("query"),
            key=t.text("key"),
            columns=t.columns(),
            filters=t.names("filters"),
            max_limit=t.number("max_limit", MAX_LIMIT, integer=True, minimum=1),
            total_cache_seconds=float(t.number("total_cache_seconds", DEFAULT_TOTAL_CACHE_SECONDS)),
        )
    if kind == "file":
        path = t.text("path")
        if path is None:
            raise t.fail("path", "is required")
        fmt = t.text("format")
        if fmt is not None and fmt not in ("csv", "json"):
            raise t.fail("format", f"must be csv or json, got {fmt!r}")
        delimiter = t.text("delimiter", ",") or ","
        if len(delimiter) != 1:
            raise t.fail("delimiter", "must be one character")
        return FileAdapter(
            **common,
            path=_resolve(base_dir, path),
            format=fmt,
            key=t.text("key"),
            columns=t.columns(),
            filters=t.names("filters"),
            delimiter=delimiter,
            max_limit=t.number("max_limit", MAX_LIMIT, integer=True, minimum=1),
            max_bytes=t.number("max_bytes", DEFAULT_MAX_BYTES, integer=True, minimum=1),
        )
    if kind == "soap":
        path = t.text("path")
        if path is None:
            raise t.fail("path", "is required")
        return SoapPersonsAdapter(
            name=name,
            title=t.text("title") or "",
            path=Path(_resolve(base_dir, path)),
            key=t.text("key"),
            columns=tuple(c.name for c in t.columns() or ()),
        )
    base_url = t.text("base_url")
    if base_url is None:
        raise t.fail("base_url", "is required")
    openapi = t.text("openapi")
    if openapi is not None and not openapi.startswith(("http://", "https://")):
        openapi = _resolve(base_dir, openapi)
    return PassthroughAdapter(
        **common,
        base_url=base_url,
        openapi=openapi,
        timeout_seconds=float(t.number("timeout_seconds", DEFAULT_TIMEOUT_SECONDS, minimum=0.001)),
        connect_timeout_seconds=float(
            t.number("connect_timeout_seconds", DEFAULT_CONNECT_TIMEOUT_SECONDS, minimum=0.001)
        ),
    )


def parse_config(data: Mapping[str, Any], *, source: str, base_dir: Path, environ: Mapping[str, str]) -> AdaptersConfig:
    """The adapters described by a parsed TOML document.

    Raises:
        ConfigError: naming ``source`` and the offending key.
    """
    unknown = sorted(set(data) - {"server", "adapters"})
    if unknown:
        raise ConfigError(f"{source}: unknown section [{unknown[0]}]; known: [server], [adapters.NAME]")
    server_data = data.get("server", {})
    if not isinstance(server_data, dict):
        raise ConfigError(f"{source}: [server] must be a table")
    server = _Table(server_data, where=f"{source}: server")
    extra = sorted(set(server_data) - {"host", "port"})
    if extra:
        raise server.fail(extra[0], "unknown key; known: host, port")
    host = server.text("host", DEFAULT_HOST) or DEFAULT_HOST
    port = server.number("port", DEFAULT_PORT, integer=True, minimum=0)
    if port > 65535:
        raise server.fail("port", f"must be at most 65535, got {port}")
    tables = data.get("adapters", {})
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{source}: no adapters; add an [adapters.NAME] table")
    adapters: dict[str, ServiceAdapter] = {}
    for name, table in tables.items():
        where = f"{source}: adapters.{name}"
        if not ADAPTER_NAME_RE.fullmatch(name):
            raise ConfigError(f"{where}: the name must match {ADAPTER_NAME_RE.pattern} (it is a URL path segment)")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        adapters[name] = _build(name, _Table(table, where=where), base_dir=base_dir, environ=environ)
    return AdaptersConfig(host=host, port=port, adapters=adapters)


def load_config(path: str | Path, environ: Mapping[str, str]) -> AdaptersConfig:
    """Read and parse an adapters settings file.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or describes bad adapters.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from e
    return parse_config(data, source=str(p), base_dir=p.resolve().parent, environ=environ)
