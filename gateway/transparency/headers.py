"""The transparency request headers and the federation's transparency parameters (pure).

docs/transparency.md section 2. An information system may send, with any r1 request:

- ``X-Road-Data-Subject``: one or more subject identifiers, comma-separated, each a two-letter country prefix
  and a national identifier (``EE38001085718``); at most ``transparency_max_subjects`` of them (a setting);
- ``X-Road-Purpose``: a purpose code from the list in the global configuration; ``X-Road-Purpose-Text``: an
  optional human-readable text; ``X-Road-Legal-Basis``: the legal basis, free text;
- ``X-Road-Transparency: embargo; until=DATE`` (RFC 8941: a dictionary member ``embargo`` whose parameter
  ``until`` is an RFC 3339 sf-string or an sf-integer of seconds since the epoch), only from a client subsystem
  entitled to it in the global configuration.

They are end-to-end headers: the security servers pass them on unchanged. The consumer's server signs all but
``X-Road-Data-Subject`` (:data:`gateway.protocol.signatures.UNSIGNED_XROAD`: a signed value would be kept in clear
in the signature base of the message log's records); the request hash covers that one.

The federation's parameters (:class:`TransparencyConf`) travel in the global configuration's ``parameters``
object under ``transparency``: ``{"purposes": {code: text}, "portal": "INSTANCE/CLASS/MEMBER/SUBSYSTEM",
"embargo_clients": [subsystem ids]}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from gateway.errors import RequestError
from gateway.globalconf.transparency import MAX_TEXT, PURPOSE_RE, TransparencyConf, check_conf, parse_conf
from gateway.identifiers import ClientId
from gateway.protocol import sfv

H_DATA_SUBJECT = "x-road-data-subject"
H_PURPOSE = "x-road-purpose"
H_PURPOSE_TEXT = "x-road-purpose-text"
H_LEGAL_BASIS = "x-road-legal-basis"
H_TRANSPARENCY = "x-road-transparency"
HEADERS = frozenset({H_DATA_SUBJECT, H_PURPOSE, H_PURPOSE_TEXT, H_LEGAL_BASIS, H_TRANSPARENCY})

DEFAULT_MAX_SUBJECTS = 16
MAX_EMBARGO_YEARS = 30  # an embargo further ahead than this is refused (a typo, not an investigation)

SUBJECT_RE = re.compile(r"[A-Z]{2}[0-9A-Za-z]{1,32}")
_TEXT_RE = re.compile(r"[\x20-\x7e]*")
_RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")


class TransparencyHeaderError(RequestError):
    """A transparency header that is malformed or too long (HTTP 400, ``Client.BadRequest``)."""


class UnknownPurpose(RequestError):
    """``X-Road-Purpose`` names no purpose of the global configuration's list (HTTP 400)."""

    fault = "UnknownPurpose"


class PurposeRequired(RequestError):
    """The service requires a purpose and the request has none (HTTP 400)."""

    fault = "PurposeRequired"


class SubjectMismatch(RequestError):
    """The data subject the service declares in its requests is not among ``X-Road-Data-Subject`` (HTTP 400)."""

    fault = "SubjectMismatch"


class NotEntitled(RequestError):
    """The client may not do this (an embargo, ``findUsage``): HTTP 403, ``Client.AccessDenied``."""

    status: ClassVar[int] = 403
    fault = "AccessDenied"


@dataclass(frozen=True, slots=True, kw_only=True)
class Transparency:
    """What a request's transparency headers say, checked."""

    subjects: tuple[str, ...] = ()
    purpose: str | None = None
    purpose_text: str | None = None
    legal_basis: str | None = None
    embargo_until: datetime | None = None
    flags: tuple[str, ...] = ()  # what the provider's server noticed (declared.FLAG_MISMATCH)

    def with_subjects(self, subjects: tuple[str, ...], *, flags: tuple[str, ...] = ()) -> Transparency:
        return Transparency(
            subjects=subjects,
            purpose=self.purpose,
            purpose_text=self.purpose_text,
            legal_basis=self.legal_basis,
            embargo_until=self.embargo_until,
            flags=(*self.flags, *flags),
        )


def _text_header(name: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise TransparencyHeaderError(f"{name} is empty")
    if len(value) > MAX_TEXT:
        raise TransparencyHeaderError(f"{name} is longer than {MAX_TEXT} characters")
    if not _TEXT_RE.fullmatch(value):
        raise TransparencyHeaderError(f"{name} must be printable ASCII (percent-encode other characters)")
    return value


def parse_subjects(value: str, *, max_subjects: int) -> tuple[str, ...]:
    """The subject identifiers of an ``X-Road-Data-Subject`` value, in order, duplicates removed.

    Raises:
        TransparencyHeaderError: empty, more than ``max_subjects``, or an identifier that is not a country
            prefix and a national identifier.
    """
    items = [s.strip() for s in value.split(",")]
    if len(items) > max_subjects:
        raise TransparencyHeaderError(
            f"X-Road-Data-Subject names {len(items)} subjects, more than the maximum of {max_subjects}"
        )
    for s in items:
        if not SUBJECT_RE.fullmatch(s):
            raise TransparencyHeaderError(
                f"X-Road-Data-Subject item {s[:40]!r} is not a subject identifier: two capital letters of a "
                "country code and 1 to 32 letters or digits, e.g. EE38001085718"
            )
    return tuple(dict.fromkeys(items))


def parse_embargo(value: str, *, now: datetime) -> datetime:
    """The date of ``X-Road-Transparency: embargo; until=DATE``.

    Raises:
        TransparencyHeaderError: not that form, or a date in the past or too far ahead.
    """
    try:
        parsed = sfv.parse_dictionary(value)
    except sfv.SFError as e:
        raise TransparencyHeaderError(f"X-Road-Transparency is not an RFC 8941 dictionary: {e}") from e
    if list(parsed) != ["embargo"]:
        raise TransparencyHeaderError("X-Road-Transparency must be exactly 'embargo; until=DATE'")
    member = parsed["embargo"]
    if member[0] is not True:
        raise TransparencyHeaderError("X-Road-Transparency: embargo takes no value, only the until parameter")
    params = member[1]
    if set(params) != {"until"}:
        raise TransparencyHeaderError("X-Road-Transparency: embargo needs exactly one parameter, until")
    until = params["until"]
    if isinstance(until, int) and not isinstance(until, bool):
        when = datetime.fromtimestamp(until, UTC)
    elif isinstance(until, str) and _RFC3339_RE.fullmatch(until):
        when = datetime.fromisoformat(until.replace("Z", "+00:00")).astimezone(UTC)
    else:
        raise TransparencyHeaderError(
            "X-Road-Transparency: until must be an RFC 3339 date-time string "
            '("2027-01-31T00:00:00Z") or an integer of seconds since the epoch'
        )
    if when <= now:
        raise TransparencyHeaderError(f"X-Road-Transparency: until {when.isoformat()} is not in the future")
    if when.year - now.year > MAX_EMBARGO_YEARS:
        raise TransparencyHeaderError(f"X-Road-Transparency: until is more than {MAX_EMBARGO_YEARS} years ahead")
    return when


def fields_of(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The transparency headers among header ``pairs`` as received: lower-case names, repeated ones joined with
    ", " (an empty dict for almost every request)."""
    out: dict[str, str] = {}
    for name, value in pairs:
        if len(name) > 13 and name[:7].lower() == "x-road-":
            low = name.lower()
            if low in HEADERS:
                value = value.strip(" \t")
                out[low] = out[low] + ", " + value if low in out else value
    return out


def parse(
    fields: Mapping[str, str],
    *,
    client: ClientId,
    tconf: TransparencyConf,
    now: datetime,
    max_subjects: int,
) -> Transparency | None:
    """The transparency headers of a request (``fields``: lower-case names, repeated ones joined with ", ");
    ``None`` when it has none (the usual case, checked first).

    Raises:
        TransparencyHeaderError: a malformed value (400).
        UnknownPurpose: a purpose code the global configuration does not list (400).
        NotEntitled: an embargo from a client the global configuration does not entitle to one (403).
    """
    if not any(name in fields for name in HEADERS):
        return None
    subjects: tuple[str, ...] = ()
    raw = fields.get(H_DATA_SUBJECT)
    if raw is not None:
        subjects = parse_subjects(raw, max_subjects=max_subjects)
    purpose = fields.get(H_PURPOSE)
    if purpose is not None:
        purpose = purpose.strip()
        if not PURPOSE_RE.fullmatch(purpose):
            raise TransparencyHeaderError(
                f"X-Road-Purpose {purpose[:40]!r} is not a purpose code ({PURPOSE_RE.pattern})"
            )
        if purpose not in tconf.purposes:
            raise UnknownPurpose(f"purpose {purpose} is not in the global configuration's purpose list")
    text = fields.get(H_PURPOSE_TEXT)
    basis = fields.get(H_LEGAL_BASIS)
    embargo = fields.get(H_TRANSPARENCY)
    until = None
    if embargo is not None:
        until = parse_embargo(embargo, now=now)
        if client not in tconf.embargo_clients:
            raise NotEntitled(
                f"client {client.typed()} is not entitled to embargo its records "
                "(the global configuration's embargo_clients)"
            )
    return Transparency(
        subjects=subjects,
        purpose=purpose,
        purpose_text=None if text is None else _text_header("X-Road-Purpose-Text", text),
        legal_basis=None if basis is None else _text_header("X-Road-Legal-Basis", basis),
        embargo_until=until,
    )


__all__ = [
    "HEADERS",
    "NotEntitled",
    "PurposeRequired",
    "SubjectMismatch",
    "Transparency",
    "TransparencyConf",
    "TransparencyHeaderError",
    "UnknownPurpose",
    "check_conf",
    "fields_of",
    "parse",
    "parse_conf",
    "parse_subjects",
]
