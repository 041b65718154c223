"""Request validation against the route table's JSON schemas, and pagination (pure).

The schemas in :mod:`gateway.admin.routes` (and :mod:`gateway.admin.central.routes`) are JSON Schema draft
2020-12, the dialect of OpenAPI 3.1; the OpenAPI document carries them unchanged and :func:`validate` checks a
value against them with the ``jsonschema`` library, so the document and the checks cannot differ.

Rules that a regular expression states only roughly (an identifier's parts, a user name) are also named by a
``format`` of :data:`FORMATS`, whose checker is the parser the handlers use (:mod:`gateway.identifiers`): the
``pattern`` lets a schema-driven client generate good values; the ``format`` makes the error name the part
at fault, exactly as the parser words it.

Errors name the field (``body.url``, ``body.roles[1]``, ``path parameter client_id``) and the rule it breaks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.protocols import Validator

from gateway.errors import GatewayError, RequestError

JsonSchema = dict[str, Any]
FormatCheck = Callable[[str], object]
"""A ``format`` checker: raises a :class:`~gateway.errors.RequestError` naming what is wrong, else returns."""

FORMATS: dict[str, FormatCheck] = {}
"""The formats :func:`validate` checks (registered with :func:`register_format`); ``date-time`` and other
standard formats are annotations here (the handlers parse times themselves)."""

DEFAULT_LIMIT = 100  # items per page unless the caller asks
MAX_LIMIT = 1000  # items per page at most; bounds one response
MAX_OFFSET = 2**31  # keeps offsets in a 32-bit database integer

_T = TypeVar("_T")


def register_format(name: str, check: FormatCheck) -> str:
    """Make ``format: name`` checked by ``check``; returns ``name`` (for use in a schema literal)."""
    FORMATS[name] = check
    return name


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number" if math.isfinite(value) else "a non-finite number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _checker() -> FormatChecker:
    checker = FormatChecker(formats=())
    for name, check in FORMATS.items():
        def run(value: object, check: FormatCheck = check) -> bool:
            if isinstance(value, str):
                check(value)
            return True

        checker.checks(name, raises=GatewayError)(run)
    return checker


def _finite_number(checker: object, value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# JSON numbers are finite: NaN and the infinities (which Python's json module reads) are no numbers here.
_Validator: type[Validator] = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine("number", _finite_number)
)
_VALIDATORS: dict[int, tuple[JsonSchema, Validator, int]] = {}


def _validator(schema: JsonSchema) -> Validator:
    # Schemas are module constants: one compiled validator per schema object (kept alive by the cache entry).
    cached = _VALIDATORS.get(id(schema))
    if cached is not None and cached[0] is schema and cached[2] == len(FORMATS):
        return cached[1]
    validator: Validator = _Validator(schema, format_checker=_checker())
    _VALIDATORS[id(schema)] = (schema, validator, len(FORMATS))
    return validator


def _where(base: str, error: ValidationError) -> str:
    out = base
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _message(error: ValidationError, where: str) -> RequestError:
    keyword: Any = error.validator
    rule: Any = error.validator_value
    value: Any = error.instance
    schema: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    if keyword == "type":
        allowed = [rule] if isinstance(rule, str) else list(rule)
        return RequestError(f"{where} must be {' or '.join(allowed)}, not {_type_name(value)}")
    if keyword == "enum":
        return RequestError(f"{where} {str(value)[:40]!r} is not one of {', '.join(map(str, rule))}")
    if keyword == "const":
        return RequestError(f"{where} must be {rule!r}")
    if keyword == "required":
        missing = next(n for n in rule if n not in value)
        return RequestError(f"{where}.{missing} is required")
    if keyword == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        extra = sorted(str(k) for k in value if k not in known)
        return RequestError(f"{where}.{extra[0][:40]} is not a known field", hint=f"known: {', '.join(known)}")
    if keyword == "minLength":
        return RequestError(f"{where} is shorter than {rule} characters")
    if keyword == "maxLength":
        return RequestError(f"{where} is longer than {rule} characters")
    if keyword in ("minimum", "exclusiveMinimum"):
        return RequestError(f"{where} {value} is less than {'or equal to ' if keyword.startswith('ex') else ''}{rule}")
    if keyword in ("maximum", "exclusiveMaximum"):
        return RequestError(f"{where} {value} is more than {'or equal to ' if keyword.startswith('ex') else ''}{rule}")
    if keyword == "minItems":
        return RequestError(f"{where} has fewer than {rule} items")
    if keyword == "maxItems":
        return RequestError(f"{where} has more than {rule} items")
    if keyword == "uniqueItems":
        return RequestError(f"{where} lists an item twice")
    if keyword in ("pattern", "not"):
        rule_text = schema.get("x-rule") or schema.get("description") or f"the pattern {schema.get('pattern')}"
        return RequestError(f"{where} {str(value)[:80]!r} must be {rule_text}")
    return RequestError(f"{where}: {error.message[:200]}")


def validate(value: object, schema: JsonSchema, *, where: str = "body") -> None:
    """Check ``value`` against ``schema`` (JSON Schema 2020-12, with the formats of :data:`FORMATS`).

    Raises:
        RequestError: 400, naming the field (``body.url``, ``body.roles[1]``) and the rule it breaks; for a
            failed ``format``, the parser's own error (e.g. :class:`~gateway.errors.IdentifierError`).
    """
    errors = list(_validator(schema).iter_errors(cast(Any, value)))
    if not errors:
        return
    # a format's parser words the problem best (it names the identifier part at fault)
    for error in errors:
        if error.validator == "format" and isinstance(error.cause, GatewayError):
            cause = error.cause
            raised = type(cause)(f"{_where(where, error)}: {cause.message}", hint=cause.hint)
            raise raised from cause
    best = best_match(errors)
    assert best is not None
    raise _message(best, _where(where, best))


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
