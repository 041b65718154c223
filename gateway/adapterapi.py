"""The adapter API: the seam between an adapter's HTTP shell and the service adapters behind it.

Mostly pure: the column model, query-parameter parsing (pagination, filters, cursors) and the JSON error
body take strings and return values or raise :class:`~gateway.errors.RequestError`. The I/O part is the
:class:`ServiceAdapter` base class, whose :meth:`ServiceAdapter.handle` turns every foreign exception into
one of ours, and :func:`error_response`, which renders our errors as JSON.

An adapter is a *service* in X-Road's sense: the provider's security server forwards
``{service base URL}{rest path}?{query}`` to it with the method, body, end-to-end headers and the X-Road
headers. Its errors are therefore the service's own errors, JSON ``{"type", "message", "detail"}`` with a
4xx/5xx status, and never carry the ``X-Road-Error`` header that only a security server may set.

Adapters import only this module, :mod:`gateway.identifiers` and :mod:`gateway.errors` from the gateway (an
import-linter contract in ``pyproject.toml`` enforces it).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

import structlog
from aiohttp import web

from gateway.errors import ConfigError, GatewayError, PeerError, RequestError

log = structlog.get_logger(__name__)

DEFAULT_LIMIT = 50  # items per page when the caller gives no ``limit``
MAX_LIMIT = 1000  # items; bounds the memory and time one listing request may cost
MAX_OFFSET = 2**31 - 1  # items; fits the integer bind parameter of every database we support
MAX_FILTER_VALUE_CHARS = 1000  # characters; no real key or name is longer, and it bounds the SQL parameter
MAX_CURSOR_CHARS = 2000  # characters of an opaque cursor
RESERVED_PARAMS = frozenset({"limit", "offset", "cursor"})  # query parameters that are not filters

ADAPTER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")  # mount names: one safe URL path segment

ColumnType = Literal["string", "integer", "number", "boolean", "date", "datetime"]
COLUMN_TYPES: tuple[ColumnType, ...] = ("string", "integer", "number", "boolean", "date", "datetime")

_INT_RE = re.compile(r"-?[0-9]{1,18}")  # fits a signed 64-bit integer
_UINT_RE = re.compile(r"[0-9]{1,10}")
_NUMBER_RE = re.compile(r"-?[0-9]{1,30}(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}

# JSON Schema (OpenAPI 3.1) for each column type.
_SCHEMAS: dict[ColumnType, dict[str, str]] = {
    "string": {"type": "string"},
    "integer": {"type": "integer", "format": "int64"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
}


# ---- the service's own error types: plain HTTP names, no X-Road prefix (these are not X-Road faults) ----------


class ServiceBadRequest(RequestError):
    """A 400 error of the service."""

    prefix = ""
    fault = "BadRequest"


class ServiceNotFound(RequestError):
    """A 404 error of the service."""

    status = 404
    prefix = ""
    fault = "NotFound"


class ServiceMethodNotAllowed(RequestError):
    """A 405 error of the service (answered with ``Allow``)."""

    status = 405
    prefix = ""
    fault = "MethodNotAllowed"


class ServicePayloadTooLarge(RequestError):
    """A 413 error of the service (a body larger than the HTTP server takes)."""

    status = 413
    prefix = ""
    fault = "PayloadTooLarge"


class ServiceHttpError(RequestError):
    """Another 4xx that the HTTP layer (aiohttp) answered, relayed with its status as ``BadRequest``.

    Like a relayed X-Road fault, its status is data (it comes from the HTTP exception), not a class.
    """

    prefix = ""
    fault = "BadRequest"

    def __init__(self, message: str, *, http_status: int) -> None:
        super().__init__(message)
        self._http_status = http_status

    @property
    def http_status(self) -> int:
        return self._http_status


class ServiceInternalError(GatewayError):
    """A 500 error of the service: a bug or a failed resource, logged."""

    prefix = ""
    fault = "InternalError"


class BadGateway(PeerError):
    """A 502 error of the service: its upstream is unreachable or broke the exchange."""

    status = 502
    prefix = ""
    fault = "BadGateway"


class GatewayTimeout(PeerError):
    """A 504 error of the service: its upstream did not answer in time."""

    status = 504
    prefix = ""
    fault = "GatewayTimeout"


def bad_request(message: str) -> RequestError:
    """A 400 error of the service (not an X-Road fault)."""
    return ServiceBadRequest(message)


def not_found(message: str) -> RequestError:
    """A 404 error of the service."""
    return ServiceNotFound(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class Column:
    """One exposed column (field) of a dataset: its name, type and whether callers may filter on it."""

    name: str
    type: ColumnType = "string"
    nullable: bool = True
    filterable: bool = True
    description: str = ""

    def parse(self, text: str) -> Any:
        """Turn a query-string or path value into a value of this column's type.

        Raises:
            RequestError: (400) the text is not a value of this type.
        """
        if len(text) > MAX_FILTER_VALUE_CHARS:
            raise bad_request(f"value for {self.name!r} is longer than {MAX_FILTER_VALUE_CHARS} characters")
        if "\x00" in text:
            raise bad_request(f"value for {self.name!r} contains a NUL character")
        kind = self.type
        if kind == "string":
            return text
        if kind == "integer" and _INT_RE.fullmatch(text):
            return int(text)
        if kind == "number" and _NUMBER_RE.fullmatch(text):
            value = float(text)
            if math.isfinite(value):
                return value
        if kind == "boolean" and text.lower() in _BOOLEANS:
            return _BOOLEANS[text.lower()]
        if kind == "date" and _DATE_RE.fullmatch(text):
            try:
                return dt.date.fromisoformat(text)
            except ValueError:
                pass
        if kind == "datetime" and _DATE_RE.match(text):
            try:
                return dt.datetime.fromisoformat(text)
            except ValueError:
                pass
        raise bad_request(f"value for {self.name!r} must be {_type_phrase(kind)}, got {text!r}")

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of this column's values (OpenAPI 3.1 form: ``null`` as a type)."""
        schema: dict[str, Any] = dict(_SCHEMAS[self.type])
        if self.nullable:
            schema["type"] = [schema["type"], "null"]
        if self.description:
            schema["description"] = self.description
        return schema


def _type_phrase(kind: ColumnType) -> str:
    return {
        "string": "a string",
        "integer": "an integer",
        "number": "a finite number",
        "boolean": "true or false",
        "date": "a date (YYYY-MM-DD)",
        "datetime": "an ISO 8601 date-time",
    }[kind]


def to_json_value(value: Any) -> Any:
    """A database or file value as a JSON value: dates in ISO 8601, decimals as numbers."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class PageParams:
    """Which page a listing request asks for: ``limit`` items from ``offset``, or after a cursor's key.

    ``by_cursor`` is true when the caller pages by cursor (an empty ``cursor=`` starts at the beginning).
    """

    limit: int = DEFAULT_LIMIT
    offset: int = 0
    after: str | None = None  # the key (in its text form) of the last item of the previous page
    by_cursor: bool = False


def _single(items: Sequence[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in items if k == name]
    if len(values) > 1:
        raise bad_request(f"query parameter {name!r} given more than once")
    return values[0] if values else None


def parse_page(items: Sequence[tuple[str, str]], *, max_limit: int = MAX_LIMIT) -> PageParams:
    """Read ``limit``, ``offset`` and ``cursor`` from decoded query items.

    ``limit`` defaults to 50 and may not exceed ``max_limit``; ``offset`` and ``cursor`` exclude each other;
    an empty ``cursor`` asks for the first page in cursor mode.

    Raises:
        RequestError: (400) a parameter is repeated, not a number in range, or the cursor is malformed.
    """
    raw_limit = _single(items, "limit")
    raw_offset = _single(items, "offset")
    raw_cursor = _single(items, "cursor")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not _UINT_RE.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= max_limit:
            raise bad_request(f"limit must be an integer from 1 to {max_limit}, got {raw_limit!r}")
        limit = int(raw_limit)
    offset = 0
    if raw_offset is not None:
        if not _UINT_RE.fullmatch(raw_offset) or int(raw_offset) > MAX_OFFSET:
            raise bad_request(f"offset must be an integer from 0 to {MAX_OFFSET}, got {raw_offset!r}")
        offset = int(raw_offset)
    after = None
    if raw_cursor is not None:
        if raw_offset is not None:
            raise bad_request("give either offset or cursor, not both")
        after = decode_cursor(raw_cursor) if raw_cursor else None
    return PageParams(limit=limit, offset=offset, after=after, by_cursor=raw_cursor is not None)


_CURSOR_PREFIX = "k1:"  # version tag inside the opaque cursor, so that its form may change later


def encode_cursor(key_text: str) -> str:
    """An opaque cursor that continues a listing after the item with this key."""
    raw = (_CURSOR_PREFIX + key_text).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> str:
    """The key text inside a cursor made by :func:`encode_cursor`.

    Raises:
        RequestError: (400) the cursor was not made by :func:`encode_cursor`.
    """
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raw = ""
    if not raw.startswith(_CURSOR_PREFIX):
        raise bad_request("cursor is not one this service issued")
    return raw[len(_CURSOR_PREFIX) :]


def parse_filters(items: Sequence[tuple[str, str]], columns: Iterable[Column]) -> dict[str, tuple[Any, ...]]:
    """The equality filters of a listing request: ``?col=value``; a repeated column matches any of its values.

    Every query parameter other than ``limit``, ``offset`` and ``cursor`` must name a filterable column.

    Raises:
        RequestError: (400) an unknown or non-filterable column, or a value not of the column's type.
    """
    by_name = {c.name: c for c in columns if c.filterable}
    filters: dict[str, list[Any]] = {}
    for name, text in items:
        if name in RESERVED_PARAMS:
            continue
        column = by_name.get(name)
        if column is None:
            allowed = ", ".join(sorted(by_name)) or "none"
            raise bad_request(f"unknown filter {name[:100]!r}; filterable columns: {allowed}")
        filters.setdefault(name, []).append(column.parse(text))
    return {name: tuple(values) for name, values in filters.items()}


def next_link(
    items: Sequence[tuple[str, str]], *, offset: int | None = None, cursor: str | None = None
) -> str:
    """A relative reference (query only) to the next page, keeping the request's other parameters.

    A query-only reference resolves against the URL the caller used (RFC 3986 section 5.2), so it stays right
    behind a security server, whose ``/r1/...`` URL the adapter never sees.
    """
    kept = [(k, v) for k, v in items if k not in ("offset", "cursor")]
    if cursor is not None:
        kept.append(("cursor", cursor))
    elif offset is not None:
        kept.append(("offset", str(offset)))
    return "?" + urlencode(kept)


def error_body(err: GatewayError, *, error_id: str) -> dict[str, str]:
    """A service's JSON error body: ``type``, ``message`` and ``detail`` (an id to find it in the log)."""
    return {"type": err.xroad_type, "message": err.message, "detail": error_id}


def error_response(err: GatewayError, *, headers: Mapping[str, str] | None = None) -> web.Response:
    """Render one of our errors as the service's JSON error response (no ``X-Road-Error`` header)."""
    error_id = str(uuid.uuid4())
    if err.http_status >= 500:
        log.error(
            "adapter.error",
            error_id=error_id,
            type=err.xroad_type,
            message=err.message,
            cause=repr(err.__cause__) if err.__cause__ else None,
        )
    return web.json_response(
        error_body(err, error_id=error_id), status=err.http_status, headers=dict(headers or {}), dumps=dumps
    )


def dumps(value: Any) -> str:
    """JSON text of a response body; non-ASCII characters kept as they are (bodies are UTF-8)."""
    return json.dumps(value, ensure_ascii=False, default=to_json_value)


def json_response(value: Any, *, status: int = 200) -> web.Response:
    """A UTF-8 JSON response."""
    return web.json_response(value, status=status, dumps=dumps)


@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterRequest:
    """One call to an adapter, with the path below the adapter's mount point.

    ``raw_path`` is still percent-encoded ("" or starting with "/"); ``query`` holds the decoded query items
    in order; ``http`` is the underlying request, for its method, headers and body stream.
    """

    http: web.Request
    raw_path: str
    query: tuple[tuple[str, str], ...]

    @property
    def method(self) -> str:
        return self.http.method


class ServiceAdapter(ABC):
    """The seam: one service exposed under ``/{name}``, described by an OpenAPI document.

    Subclasses implement :meth:`serve` (and :meth:`openapi`); callers call :meth:`handle`, which checks the
    method and turns foreign exceptions into :class:`~gateway.errors.GatewayError`. :meth:`start` and
    :meth:`close` open and release the adapter's resources (connection pools, loaded files).
    """

    # Methods this adapter answers; None means any. Others get 405 with an Allow header.
    methods: ClassVar[frozenset[str] | None] = None
    # Where the adapter serves its OpenAPI document, below its mount point; None if it does not.
    openapi_path: str | None = "/openapi.json"

    def __init__(self, *, name: str, title: str = "", description: str = "") -> None:
        """
        Raises:
            ConfigError: the name is not one safe URL path segment.
        """
        if not ADAPTER_NAME_RE.fullmatch(name):
            raise ConfigError(f"adapter name {name!r} must match {ADAPTER_NAME_RE.pattern}")
        self.name = name
        self.title = title or name
        self.description = description

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open resources (pools, files). Called once before the first request."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources. Called once at shutdown, also after a failed :meth:`start`."""

    @abstractmethod
    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3 document that describes this service (paths relative to its base URL)."""

    @abstractmethod
    async def serve(self, request: AdapterRequest) -> web.StreamResponse:
        """Answer one request. May raise anything; :meth:`handle` maps it."""

    async def handle(self, request: AdapterRequest) -> web.StreamResponse:
        """Answer one request, raising only our errors.

        Raises:
            GatewayError: what :meth:`serve` raised, or any other exception wrapped as an internal error.
        """
        # (1) Method: a service that only reads answers 405 with Allow for anything else (RFC 9110 15.5.6).
        if self.methods is not None and request.method not in self.methods:
            allow = ", ".join(sorted(self.methods))
            err = ServiceMethodNotAllowed(f"method {request.method} is not allowed; allowed: {allow}")
            return error_response(err, headers={"Allow": allow})
        # (2) The OpenAPI document, if served here.
        if (
            self.openapi_path is not None
            and request.raw_path == self.openapi_path
            and request.method
            in (
                "GET",
                "HEAD",
            )
        ):
            return json_response(self.openapi())
        # (3) The service itself; anything that is not ours is a bug or a failed resource: 500, logged.
        try:
            return await self.serve(request)
        except (GatewayError, web.HTTPException):
            raise
        except Exception as e:
            raise ServiceInternalError(f"internal error in service {self.name!r}") from e
