"""Readiness: the checks a server reports on ``/readyz`` and the rule that turns them into 200 or 503 (pure).

A check is red while the thing it watches would make exchanges fail, and already **before** that wherever
the failure can be seen coming (``margin`` seconds ahead: the timestamping grace period running out, the
global configuration or a cached OCSP response about to pass its limit). The server (the I/O shell,
:mod:`gateway.server.health`) gathers the facts; the functions below decide, with ``now`` given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One readiness check: its name, whether it passes, and why (for an operator, in plain words)."""

    name: str
    ok: bool
    detail: str
    warning: bool = False  # passes, but an operator should look (listed under "warnings"; never 503)

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "detail": self.detail} | ({"warning": True} if self.warning else {})


def report(checks: Sequence[Check]) -> tuple[int, dict[str, object]]:
    """The HTTP status (200 when every check passes, else 503) and the JSON body of ``/readyz``; a check that
    passes with a warning is named under ``warnings`` and does not change the status."""
    ready = all(c.ok for c in checks)
    return (200 if ready else 503), {
        "status": "ready" if ready else "not ready",
        "failing": [c.name for c in checks if not c.ok],
        "warnings": [c.name for c in checks if c.ok and c.warning],
        "checks": {c.name: c.to_dict() for c in checks},
    }


def deadline_check(name: str, *, deadline: datetime | None, now: datetime, margin_seconds: float,
                   what: str, missing: str) -> Check:
    """Red when ``deadline`` is missing, past, or less than ``margin_seconds`` away.

    ``what`` names what the deadline is for ("the global configuration expires"); ``missing`` says why there is
    none.
    """
    if deadline is None:
        return Check(name=name, ok=False, detail=missing)
    left = (deadline - now).total_seconds()
    if left <= 0:
        return Check(name=name, ok=False, detail=f"{what} {abs(left):.0f} s ago")
    if left < margin_seconds:
        return Check(name=name, ok=False, detail=f"{what} in {left:.0f} s, within the readiness margin of "
                                                 f"{margin_seconds:g} s")
    return Check(name=name, ok=True, detail=f"{what} in {left:.0f} s")


__all__ = ["Check", "deadline_check", "report"]
