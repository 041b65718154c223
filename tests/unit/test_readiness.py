"""The readiness rules (gateway.ops.readiness, pure): a deadline check is red when the deadline is missing,
past, or within the margin; the report is 200 only when every check passes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.ops.readiness import Check, deadline_check, report

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("deadline", "ok", "detail"), [
    (None, False, "nothing yet"),
    (NOW - timedelta(seconds=5), False, "it ends 5 s ago"),
    (NOW, False, "it ends 0 s ago"),
    (NOW + timedelta(seconds=30), False, "it ends in 30 s, within the readiness margin of 60 s"),
    (NOW + timedelta(seconds=60), True, "it ends in 60 s"),
    (NOW + timedelta(hours=1), True, "it ends in 3600 s"),
])
def test_deadline_check(deadline: datetime | None, ok: bool, detail: str) -> None:
    c = deadline_check("x", deadline=deadline, now=NOW, margin_seconds=60, what="it ends", missing="nothing yet")
    assert (c.name, c.ok, c.detail) == ("x", ok, detail)


def test_report_is_503_while_any_check_fails() -> None:
    green, red = Check(name="a", ok=True, detail="fine"), Check(name="b", ok=False, detail="broken")
    assert report([green]) == (200, {"status": "ready", "failing": [], "warnings": [],
                                     "checks": {"a": {"ok": True, "detail": "fine"}}})
    status, body = report([green, red])
    assert status == 503 and body["status"] == "not ready" and body["failing"] == ["b"]
    assert body["checks"]["b"] == {"ok": False, "detail": "broken"}


def test_a_warning_is_listed_and_stays_ready() -> None:
    warned = Check(name="witnessing", ok=True, detail="lagging", warning=True)
    status, body = report([Check(name="a", ok=True, detail="fine"), warned])
    assert status == 200 and body["warnings"] == ["witnessing"] and body["failing"] == []
    assert body["checks"]["witnessing"] == {"ok": True, "detail": "lagging", "warning": True}
