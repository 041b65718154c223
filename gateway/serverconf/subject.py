"""Where a provider's service carries the data subject of its requests (pure). docs/transparency.md section 2.

A service's ``data_subject`` declaration is one of:

- ``path:N``: the N-th segment (1-based) of the service path, e.g. ``path:2`` for ``/persons/EE38001085718``;
- ``query:NAME``: the query parameter ``NAME``;
- ``json:POINTER``: an RFC 6901 JSON pointer into the request body, e.g. ``json:/person/id``.

``subject_mismatch`` says what the provider's server does with a request whose declared subject is not among its
``X-Road-Data-Subject``: ``refuse`` it (400 ``Client.SubjectMismatch``) or ``flag`` it (the disclosure record
carries ``usage.flag: subject-mismatch`` and both subjects).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from gateway.errors import RequestError

Where = Literal["path", "query", "json"]
Mismatch = Literal["refuse", "flag"]
MISMATCH_MODES: tuple[str, ...] = get_args(Mismatch)
MAX_DECLARATION = 255  # characters
_QUERY_NAME_RE = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_POINTER_RE = re.compile(r"(/([^/~]|~[01])*)+")


@dataclass(frozen=True, slots=True)
class SubjectLocation:
    where: Where
    path_segment: int = 0  # path: 1-based
    name: str = ""  # query: the parameter; json: the pointer

    def __str__(self) -> str:
        if self.where == "path":
            return f"path:{self.path_segment}"
        return f"{self.where}:{self.name}"


def parse_location(text: str) -> SubjectLocation:
    """Raises: RequestError: (400) not ``path:N``, ``query:NAME`` or ``json:POINTER``."""
    where, sep, rest = text.partition(":")
    if not sep or len(text) > MAX_DECLARATION:
        raise RequestError(f"data_subject {text[:80]!r} must be path:N, query:NAME or json:/POINTER")
    if where == "path":
        if not rest.isdigit() or not 1 <= int(rest) <= 64:
            raise RequestError(f"data_subject {text[:80]!r}: the path segment must be a number 1 to 64")
        return SubjectLocation(where="path", path_segment=int(rest))
    if where == "query":
        if not _QUERY_NAME_RE.fullmatch(rest):
            raise RequestError(
                f"data_subject {text[:80]!r}: the query parameter name must match {_QUERY_NAME_RE.pattern}"
            )
        return SubjectLocation(where="query", name=rest)
    if where == "json":
        if not _POINTER_RE.fullmatch(rest):
            raise RequestError(f"data_subject {text[:80]!r}: not an RFC 6901 JSON pointer (/a/b, ~0 and ~1 escapes)")
        return SubjectLocation(where="json", name=rest)
    raise RequestError(f"data_subject {text[:80]!r} must be path:N, query:NAME or json:/POINTER")


def check_mismatch(mode: str) -> Mismatch:
    """Raises: RequestError: (400) not ``refuse`` or ``flag``."""
    if mode == "refuse":
        return "refuse"
    if mode == "flag":
        return "flag"
    raise RequestError(f"subject_mismatch {mode[:40]!r} must be 'refuse' or 'flag'")


__all__ = ["MISMATCH_MODES", "Mismatch", "SubjectLocation", "check_mismatch", "parse_location"]
