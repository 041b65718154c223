"""The data subject a provider's service declares in its requests, and what the provider's server makes of it
(pure). docs/transparency.md section 2; the declarations themselves: :mod:`gateway.serverconf.subject`."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, unquote

from gateway.serverconf import ServiceInfo
from gateway.serverconf.subject import SubjectLocation
from gateway.transparency.headers import SUBJECT_RE, PurposeRequired, SubjectMismatch, Transparency

FLAG_MISMATCH = "subject-mismatch"
MAX_JSON_BYTES = 1 * 2**20  # bytes of a body a json: declaration is looked for in; a larger one is not parsed


def _pointer(doc: object, pointer: str) -> object:
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, dict):
            if token not in doc:
                return None
            doc = doc[token]
        elif isinstance(doc, list) and token.isdigit() and int(token) < len(doc):
            doc = doc[int(token)]
        else:
            return None
    return doc


def declared_subject(
    location: SubjectLocation, service_path: str, raw_query: str | None, body: bytes | None
) -> str | None:
    """The subject at ``location`` in a request, if there is one there that is a subject identifier (``body``:
    ``None`` when it was spooled, not held in memory)."""
    value: object = None
    if location.where == "path":
        segments = service_path.split("/")[1:] if service_path else []
        if len(segments) >= location.path_segment:
            value = unquote(segments[location.path_segment - 1])
    elif location.where == "query":
        values = parse_qs(raw_query or "", keep_blank_values=True).get(location.name)
        value = values[0] if values else None
    elif body and len(body) <= MAX_JSON_BYTES:
        try:
            value = _pointer(json.loads(body), location.name)
        except (ValueError, UnicodeDecodeError, RecursionError):
            value = None
    return value if isinstance(value, str) and SUBJECT_RE.fullmatch(value) else None


def apply(
    service: ServiceInfo, usage: Transparency | None, service_path: str, raw_query: str | None, body: bytes | None
) -> Transparency | None:
    """The transparency of a request to ``service`` on the provider's server: the headers' (``usage``) with the
    declared subject added.

    Raises:
        PurposeRequired: the service requires ``X-Road-Purpose`` and the request has none.
        SubjectMismatch: the declared subject is not among ``X-Road-Data-Subject`` and the service refuses that.
    """
    if service.purpose_required and (usage is None or usage.purpose is None):
        raise PurposeRequired(f"service {service.id} requires an X-Road-Purpose header")
    if service.data_subject is None:
        return usage
    declared = declared_subject(service.data_subject, service_path, raw_query, body)
    if declared is None:
        return usage
    if usage is None:
        return Transparency(subjects=(declared,))
    if not usage.subjects or declared in usage.subjects:
        return usage if declared in usage.subjects else usage.with_subjects((declared,))
    if service.subject_mismatch == "refuse":
        raise SubjectMismatch(
            f"the request's data subject ({service.data_subject}) is not among its X-Road-Data-Subject"
        )
    return usage.with_subjects((*usage.subjects, declared), flags=(FLAG_MISMATCH,))


__all__ = ["FLAG_MISMATCH", "apply", "declared_subject"]
