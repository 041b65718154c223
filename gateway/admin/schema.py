"""Request validation against the route table's JSON schemas, and pagination (pure).

The schemas in :mod:`gateway.admin.routes` are JSON Schema (draft 2020-12, as OpenAPI 3.1 uses) restricted
to the keywords this module checks: ``type`` (one or a list), ``properties``, ``required``,
``additionalProperties: false``, ``minLength``/``maxLength``, ``minimum``/``maximum``, ``minItems``/
``maxItems``, ``items``, ``enum``. Other keywords (``description``, ``format``, ``examples``) are
annotations. A test checks that no route uses a keyword outside this set, so a schema never promises a check
that is not made.

Identifiers inside strings are not checked here but by the handlers, with :mod:`gateway.identifiers`, so the
error names the identifier part at fault.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.errors import RequestError

JsonSchema = dict[str, Any]

CHECKED_KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "minLength", "maxLength", "minimum", "maximum",
    "minItems", "maxItems", "items", "enum",
})
ANNOTATIONS = frozenset({"description", "format", "examples", "title", "readOnly", "writeOnly", "default"})

DEFAULT_LIMIT = 100  # items per page unless the caller asks
MAX_LIMIT = 1000  # items per page at most; bounds one response
MAX_OFFSET = 2**31  # keeps offsets in a 32-bit database integer

_T = TypeVar("_T")


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_type(value: object, name: str) -> bool:
    actual = _type_name(value)
    if name == "number":
        return actual in ("integer", "number") and not (isinstance(value, float) and not math.isfinite(value))
    return actual == name


def validate(value: object, schema: JsonSchema, *, where: str = "body") -> None:
    """Check ``value`` against ``schema``.

    Raises:
        RequestError: 400, naming the field (``body.url``, ``body.roles[1]``) and the rule it breaks.
    """
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(value, t) for t in allowed):
            raise RequestError(f"{where} must be {' or '.join(allowed)}, not {_type_name(value)}")
    if "enum" in schema and value not in schema["enum"]:
        raise RequestError(f"{where} {str(value)[:40]!r} is not one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise RequestError(f"{where} is shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise RequestError(f"{where} is longer than {schema['maxLength']} characters")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise RequestError(f"{where} {value} is less than {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise RequestError(f"{where} {value} is more than {schema['maximum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise RequestError(f"{where} has fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise RequestError(f"{where} has more than {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                validate(item, schema["items"], where=f"{where}[{i}]")
    if isinstance(value, dict):
        props: Mapping[str, JsonSchema] = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                raise RequestError(f"{where}.{name} is required")
        if schema.get("additionalProperties") is False:
            extra = sorted(k for k in value if k not in props)
            if extra:
                raise RequestError(
                    f"{where}.{str(extra[0])[:40]} is not a known field", hint=f"known: {', '.join(sorted(props))}",
                )
        for name, sub in props.items():
            if name in value:
                validate(value[name], sub, where=f"{where}.{name}")


def unknown_keywords(schema: JsonSchema) -> set[str]:
    """Keywords of ``schema`` (recursively) that :func:`validate` neither checks nor treats as annotations."""
    found = {k for k in schema if k not in CHECKED_KEYWORDS | ANNOTATIONS}
    for sub in schema.get("properties", {}).values():
        found |= unknown_keywords(sub)
    if isinstance(schema.get("items"), dict):
        found |= unknown_keywords(schema["items"])
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    limit: int = DEFAULT_LIMIT
    offset: int = 0


def _int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise RequestError(f"query parameter {name}={raw[:20]!r} is not a non-negative integer")
    value = int(raw)
    if not low <= value <= high:
        raise RequestError(f"query parameter {name}={value} is not in [{low}, {high}]")
    return value


def parse_page(query: Mapping[str, str]) -> Page:
    """``limit`` (1-1000, default 100) and ``offset`` (default 0) from a query string.

    Raises:
        RequestError: 400 if either is not an integer in range.
    """
    return Page(
        limit=_int_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        offset=_int_param(query, "offset", 0, 0, MAX_OFFSET),
    )


def paginate(items: Sequence[_T], page: Page) -> tuple[Sequence[_T], int]:
    """The page's slice of ``items`` and the total count."""
    return items[page.offset: page.offset + page.limit], len(items)


def page_body(items: list[Any], *, total: int, page: Page) -> dict[str, Any]:
    """The one shape of every list response: ``{"items", "total", "limit", "offset"}``."""
    return {"items": items, "total": total, "limit": page.limit, "offset": page.offset}


def page_schema(item: JsonSchema) -> JsonSchema:
    """The response schema of a paginated list of ``item``."""
    return {
        "type": "object",
        "required": ["items", "total", "limit", "offset"],
        "properties": {
            "items": {"type": "array", "items": item},
            "total": {"type": "integer", "minimum": 0, "description": "number of items across all pages"},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            "offset": {"type": "integer", "minimum": 0},
        },
    }
