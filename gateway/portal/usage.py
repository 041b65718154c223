"""What the portal makes of the ``findUsage`` answers (pure): each item checked, the consumer's access record
and the provider's disclosure record of one exchange joined, one-sided ones flagged, embargoed ones held back
until their date, and the evidence file (docs/portal.md).

An item comes from another agency's security server: it is untrusted input. :func:`parse_answer` checks its
form, the proof is checked by the verifier (``gateway.messagelog`` usage evidence) and shown per side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from gateway.errors import PeerError
from gateway.globalconf.anchor import Anchor
from gateway.globalconf.model import format_time
from gateway.transparency.evidence import UsageVerifier

Role = Literal["access", "disclosure"]
ROLES: tuple[Role, ...] = ("access", "disclosure")
_TEXT_FIELDS = ("action", "receiverCode", "receiverName", "receiverSystem", "messageId", "requestHash")
_OPTIONAL_TEXT = ("purpose", "purposeText", "legalBasis")
MAX_TEXT = 2000  # characters of one text field of an item; longer is a malformed answer


@dataclass(frozen=True, slots=True, kw_only=True)
class Proof:
    """Whether one item's evidence proves its record was logged (and where the check failed if not)."""

    proven: bool
    detail: str


Verifier = Callable[[Mapping[str, Any]], Proof]


def no_verifier(item: Mapping[str, Any]) -> Proof:
    return Proof(proven=False, detail="no verifier configured")


def anchor_verifier(anchor: Anchor) -> Verifier:
    """Each item's evidence checked against the instance's anchor
    (:class:`gateway.transparency.evidence.UsageVerifier`: a checkpoint and a set of configurations that several
    items share are verified once, for every citizen's pages): proven, with the time its checkpoint was
    stamped, or not, with where the check failed."""
    verifier = UsageVerifier(anchor)

    def verify(item: Mapping[str, Any]) -> Proof:
        verdict = verifier.verify(item)
        if verdict.proven:
            when = "" if verdict.logged_by is None else f"logged by {format_time(verdict.logged_by)}"
            return Proof(proven=True, detail=when)
        return Proof(proven=False, detail="; ".join(verdict.problems) or "not proven")

    return verify


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """One checked ``findUsage`` item, as the subsystem ``source`` answered it."""

    source: str  # the subsystem asked
    role: Role
    logtime: datetime
    message_id: str
    request_hash: str
    embargo_until: datetime | None
    item: Mapping[str, Any]  # as received, for the evidence file and the verifier


def _parse_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise PeerError(f"{where} is not an RFC 3339 time")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise PeerError(f"{where} is not an RFC 3339 time: {value[:40]!r}") from e
    if t.tzinfo is None:
        raise PeerError(f"{where} has no time zone: {value[:40]!r}")
    return t


def parse_answer(source: str, body: Any) -> tuple[int, list[Usage]]:
    """``(total, usages)`` of one ``findUsage`` answer from ``source``.

    Raises:
        PeerError: not ``{"total": N, "usages": [...]}``, or an item without its text fields, with a bad time,
            a role other than access or disclosure, or without an evidence object (the tracker contract).
    """
    if not isinstance(body, dict) or not isinstance(body.get("total"), int) or not isinstance(body.get("usages"), list):
        raise PeerError(f"{source} answered findUsage without total and usages")
    out = []
    for i, item in enumerate(body["usages"]):
        where = f"{source} usages[{i}]"
        if not isinstance(item, dict):
            raise PeerError(f"{where} is not an object")
        for key in _TEXT_FIELDS:
            if not isinstance(item.get(key), str) or len(item[key]) > MAX_TEXT:
                raise PeerError(f"{where}.{key} is missing or not a string of at most {MAX_TEXT} characters")
        for key in _OPTIONAL_TEXT:
            if item.get(key) is not None and (not isinstance(item[key], str) or len(item[key]) > MAX_TEXT):
                raise PeerError(f"{where}.{key} is not a string of at most {MAX_TEXT} characters")
        role = item.get("role")
        if role not in ROLES:
            raise PeerError(f"{where}.role is {str(role)[:20]!r}, not access or disclosure")
        if not isinstance(item.get("evidence"), dict):
            raise PeerError(f"{where}.evidence is missing")
        embargo = item.get("embargoUntil")
        out.append(
            Usage(
                source=source,
                role=role,
                logtime=_parse_time(item.get("logtime"), f"{where}.logtime"),
                message_id=item["messageId"],
                request_hash=item["requestHash"],
                embargo_until=None if embargo is None else _parse_time(embargo, f"{where}.embargoUntil"),
                item=item,
            )
        )
    return body["total"], out


def visible(usage: Usage, now: datetime) -> bool:
    """Whether the citizen may see it now: no embargo, or its date has come (the provider's server holds
    embargoed records back itself; this is the portal's own check of the same rule)."""
    return usage.embargo_until is None or usage.embargo_until <= now


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One exchange concerning the citizen: the consumer's record, the provider's record, or both."""

    message_id: str
    request_hash: str
    access: Usage | None = None
    disclosure: Usage | None = None
    proofs: dict[Role, Proof] = field(default_factory=dict)

    @property
    def sides(self) -> tuple[Usage, ...]:
        return tuple(u for u in (self.access, self.disclosure) if u is not None)

    @property
    def one_sided(self) -> Role | None:
        """The only side that reported the exchange (None when both did)."""
        if self.access is not None and self.disclosure is not None:
            return None
        return "access" if self.access is not None else "disclosure"

    @property
    def first(self) -> Usage:
        """The record whose fields the page shows (the provider's if it reported, as it names the service)."""
        found = self.disclosure or self.access
        assert found is not None
        return found

    @property
    def logtime(self) -> datetime:
        return min(u.logtime for u in self.sides)

    @property
    def proven(self) -> bool:
        return bool(self.proofs) and all(p.proven for p in self.proofs.values())

    @property
    def consistent(self) -> bool:
        """Both sides name the same receiver and action (a disagreement is shown, not hidden)."""
        if self.access is None or self.disclosure is None:
            return True
        keys = ("action", "receiverCode", "receiverSystem")
        return all(self.access.item.get(k) == self.disclosure.item.get(k) for k in keys)


def join(usages: Iterable[Usage], *, now: datetime, verify: Verifier) -> list[Entry]:
    """The entries, newest first: the usages of one exchange (message id and request hash) joined, what is
    still under embargo left out, each side's evidence verified. A second record of the same side of one
    exchange is kept as an entry of its own rather than dropped."""
    slots: dict[tuple[str, str], list[dict[Role, Usage]]] = {}
    for u in usages:
        if not visible(u, now):
            continue
        groups = slots.setdefault((u.message_id, u.request_hash), [])
        target = next((g for g in groups if u.role not in g), None)
        if target is None:
            target = {}
            groups.append(target)
        target[u.role] = u
    entries = []
    for (message_id, request_hash), groups in slots.items():
        for g in groups:
            proofs = {role: verify(u.item) for role, u in g.items()}
            entries.append(
                Entry(
                    message_id=message_id,
                    request_hash=request_hash,
                    access=g.get("access"),
                    disclosure=g.get("disclosure"),
                    proofs=proofs,
                )
            )
    entries.sort(key=lambda e: (e.logtime, e.message_id), reverse=True)
    return entries


def evidence_file(subject: str, entries: Sequence[Entry], *, now: datetime) -> dict[str, Any]:
    """The downloadable evidence (the tracker contract's format): every record shown, as received."""
    return {
        "subject": subject,
        "generated": format_time(now),
        "entries": [dict(u.item) for e in entries for u in e.sides],
    }


__all__ = [
    "ROLES",
    "Entry",
    "Proof",
    "Role",
    "Usage",
    "Verifier",
    "evidence_file",
    "join",
    "no_verifier",
    "parse_answer",
    "visible",
]
