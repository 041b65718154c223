"""gateway.logs.info_line writes the very line structlog writes for ``logger.info``, or leaves it to structlog."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from gateway import logs
from gateway.logs import configure_logging, info_line
from gateway.settings import LoggingSettings

_TS = re.compile(r'"timestamp": "(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?Z)"')


@pytest.fixture
def configured(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    yield capsys
    structlog.reset_defaults()
    logs._DIRECT = None


def _lines(out: pytest.CaptureFixture[str]) -> list[str]:
    text = out.readouterr().err
    assert text.endswith("\n")
    return text.splitlines()


def _same_but_time(a: str, b: str) -> None:
    assert _TS.search(a) and _TS.search(b), (a, b)
    assert _TS.sub("T", a) == _TS.sub("T", b)


FIELDS: list[dict[str, Any]] = [
    {"side": "client", "request_id": "0f1e2d3c-4b5a-4697-8877-665544332211", "message_id": "m-1",
     "client": "DEV/GOV/1001/consumer", "service": "DEV/GOV/1002/registry/bench", "status": 200, "fault": None,
     "duration_ms": 12.346},
    {"side": "server", "request_id": None, "message_id": "caf\u00e9 \"quoted\" \\ \n\t\x01 \U0001f600 \udc80",
     "client": None, "service": None, "status": 500, "fault": "Server.ServerProxy.AccessDenied",
     "duration_ms": 0.0},
    {"status": -1, "duration_ms": 1e-07, "big": 2**70, "neg": -3.5e300},
    {},
]


@pytest.mark.parametrize("fields", FIELDS)
def test_the_direct_line_is_structlogs_line(configured: pytest.CaptureFixture[str], fields: dict[str, Any]) -> None:
    configure_logging(LoggingSettings(format="json", level="info"))
    log = structlog.get_logger("gateway.proxy.exchange")
    log.info("exchange", **fields)
    info_line(log, "exchange", dict(fields))
    [via_structlog, direct] = _lines(configured)
    _same_but_time(via_structlog, direct)
    assert json.loads(direct) == {**fields, "event": "exchange", "level": "info",
                                  "timestamp": json.loads(direct)["timestamp"]}


def test_the_timestamp_is_timestampers(monkeypatch: pytest.MonkeyPatch) -> None:
    # TimeStamper(fmt="iso", utc=True): isoformat with Z, no fraction at a whole second
    for ns, text in [(1796289140_123456_789, "2026-12-03T09:12:20.123456Z"), (1796289140_000000_999,
                                                                             "2026-12-03T09:12:20Z"),
                     (1796289141_000001_000, "2026-12-03T09:12:21.000001Z")]:
        monkeypatch.setattr(logs.time, "time_ns", lambda ns=ns: ns)
        assert logs._timestamp() == text


@pytest.mark.parametrize("fields", [
    {"flag": True},  # a bool is written by json as true: structlog's path
    {"value": float("nan")},
    {"items": ["a", "b"]},
    {"level": "debug"},
])
def test_other_values_go_through_structlog(configured: pytest.CaptureFixture[str], fields: dict[str, Any]) -> None:
    configure_logging(LoggingSettings(format="json", level="info"))
    log = structlog.get_logger("t")
    info_line(log, "exchange", dict(fields))
    log.info("exchange", **fields)
    [direct, via_structlog] = _lines(configured)
    _same_but_time(via_structlog, direct)


def test_bound_context_goes_through_structlog(configured: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(format="json", level="info"))
    log = structlog.get_logger("t")
    structlog.contextvars.bind_contextvars(message_id="bound", worker=3)
    try:
        info_line(log, "exchange", {"side": "client"})
        log.info("exchange", side="client")
    finally:
        structlog.contextvars.unbind_contextvars("message_id", "worker")
    [direct, via_structlog] = _lines(configured)
    _same_but_time(via_structlog, direct)
    assert json.loads(direct)["worker"] == 3
    info_line(log, "exchange", {"side": "client"})  # unbound again (the variables left at ...): direct
    [line] = _lines(configured)
    assert "worker" not in json.loads(line)


def test_capture_logs_sees_the_line(configured: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(format="json", level="info"))
    with capture_logs() as captured:
        info_line(structlog.get_logger("t"), "exchange", {"side": "server", "status": 200})
    assert captured == [{"side": "server", "status": 200, "event": "exchange", "log_level": "info"}]
    assert configured.readouterr().err == ""


def test_below_the_level_nothing_is_written(configured: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(format="json", level="warning"))
    log = structlog.get_logger("t")
    info_line(log, "exchange", {"side": "server"})
    log.info("exchange", side="server")
    assert configured.readouterr().err == ""
    log.warning("kept", side="server")
    [line] = _lines(configured)
    assert json.loads(line)["event"] == "kept"


def test_console_format_goes_through_structlog(configured: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(format="console", level="info"))
    log = structlog.get_logger("t")
    info_line(log, "exchange", {"side": "server", "status": 200})
    log.info("exchange", side="server", status=200)
    [direct, via_structlog] = _lines(configured)
    cut = direct.index("Z ")  # after the timestamp
    assert direct[cut:] == via_structlog[cut:] and "exchange" in direct and "status=200" in direct
