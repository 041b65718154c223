"""One operational-monitoring record and the filters it is read with (pure).

A record says how one exchange went on one side of it, as far as that side can know: ids, client, service,
method, the four timestamps, sizes, status and fault type. Never bodies, never the user id. Field by field
in docs/operations.md, "Operational monitoring".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Side = Literal["client", "server"]
Outcome = Literal["ok", "failed"]
SIDES: tuple[Side, ...] = ("client", "server")
OUTCOMES: tuple[Outcome, ...] = ("ok", "failed")


def _iso(t: datetime | None) -> str | None:
    # microseconds kept: the four timestamps of one exchange are often within one millisecond
    return None if t is None else t.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class OpRecord:
    """One exchange on one side (module docstring). Times are aware UTC datetimes."""

    side: Side
    origin: str  # the log origin (process) that answered the exchange
    message_id: str | None  # X-Road-Id, once parsed (client side) or verified (server side)
    request_id: str | None  # X-Road-Request-Id, once assigned (client side) or verified (server side)
    client: str | None  # the client subsystem, once parsed ("/"-joined)
    service: str | None  # the service, once parsed ("/"-joined)
    method: str
    request_in: datetime  # the request arrived (from the information system, or from the peer)
    request_out: datetime | None  # it was sent on (to the provider's server, or to the service); None: never
    response_in: datetime | None  # the whole response came back from there; None: none came
    response_out: datetime  # the answer was handed to the connection
    request_bytes: int | None  # the request body as declared; None: chunked
    response_bytes: int | None  # the answer's body; None: streamed with a length not known in advance
    status: int  # the answer's HTTP status
    fault: str | None  # the X-Road fault type of the answer (X-Road-Error), None if it went through
    peer_server: str | None  # the security server of the other side, once known

    @property
    def outcome(self) -> Outcome:
        return "ok" if self.fault is None else "failed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "side": self.side, "origin": self.origin, "message_id": self.message_id,
            "request_id": self.request_id, "client": self.client, "service": self.service, "method": self.method,
            "request_in": _iso(self.request_in), "request_out": _iso(self.request_out),
            "response_in": _iso(self.response_in), "response_out": _iso(self.response_out),
            "request_bytes": self.request_bytes, "response_bytes": self.response_bytes, "status": self.status,
            "fault": self.fault, "outcome": self.outcome, "peer_server": self.peer_server,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class OpQuery:
    """What to read: every field that is not None must match; ``since``/``until`` bound ``request_in``
    (``since`` inclusive, ``until`` exclusive)."""

    since: datetime | None = None
    until: datetime | None = None
    client: str | None = None
    service: str | None = None
    outcome: Outcome | None = None
    side: Side | None = None
    request_id: str | None = None
    message_id: str | None = None


__all__ = ["OUTCOMES", "SIDES", "OpQuery", "OpRecord", "Outcome", "Side"]
