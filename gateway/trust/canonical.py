"""Canonical JSON (RFC 8785, JSON Canonicalization Scheme) for everything we sign (pure)."""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from gateway.errors import TrustError


def canonical_bytes(obj: Any) -> bytes:
    """Serialise ``obj`` as RFC 8785 canonical JSON (UTF-8 bytes).

    Raises:
        TrustError: the value cannot be canonicalised (e.g. a float that is NaN, an integer beyond 2**53).
    """
    try:
        return bytes(rfc8785.dumps(obj))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise TrustError(f"value cannot be serialised as canonical JSON: {e}") from e


def loads_canonical(data: bytes, *, what: str) -> Any:
    """Parse ``data`` as JSON and require that it is already in canonical form.

    Requiring canonical input means the bytes that were signed are exactly the bytes received: no
    second serialisation can hide a difference.

    Raises:
        TrustError: the data is not UTF-8 JSON, or not canonical.
    """
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TrustError(f"{what} is not valid JSON: {e}") from e
    if canonical_bytes(obj) != data:
        raise TrustError(f"{what} is not in canonical JSON form (RFC 8785)")
    return obj
