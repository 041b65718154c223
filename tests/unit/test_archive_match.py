"""Matching the consumer's and the provider's records of the same exchanges (pure)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from archive_kit import LogWorld, exchange_records, make_world

from gateway.messagelog.match import Entry, match_logs


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> LogWorld:
    return make_world(tmp_path_factory.mktemp("match"))


def logs(world: LogWorld, n: int = 3) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Both sides' records of ``n`` exchanges: the same signed messages, logged by ss1 and by ss2."""
    consumer, provider = [], []
    for i in range(n):
        req, resp = exchange_records(world, created=world.now + timedelta(seconds=i), request_id=f"req-{i}")
        for r in (req, resp):
            obj = json.loads(r.encode())
            consumer.append(obj)
            provider.append({**obj, "origin": "DEV/GOV/1002/ss2", "side": "server"})
    return consumer, provider


def entries(objs: list[dict[str, Any]]) -> list[Entry]:
    return [Entry(seq=i, fields=o) for i, o in enumerate(objs)]


def run(c: list[dict[str, Any]], p: list[dict[str, Any]]) -> Any:
    return match_logs(entries(c), entries(p), consumer_origin="DEV/GOV/1001/ss1", provider_origin="DEV/GOV/1002/ss2")


def test_identical_logs_pair_up(world: LogWorld) -> None:
    report = run(*logs(world))
    assert (report.paired, report.consumer_exchanges, report.provider_exchanges, report.ok) == (3, 3, 3, True)
    assert report.mismatches == []
    assert report.summary().endswith("RESULT: OK, both sides agree")


def _drop(i: int) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    return lambda objs: objs[:i] + objs[i + 1:]


def _set(i: int, key: str, value: Any) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    def edit(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        objs[i] = {**objs[i], key: value}
        return objs
    return edit


# (name, which log, edit, request_id, problem, severity, text)
CASES = [
    ("response missing at the provider", "provider", _drop(3), "req-1", "differs", "error",
     "the provider has no response record"),
    ("exchange missing at the provider", "provider", lambda o: o[:2] + o[4:], "req-1", "consumer-only", "error",
     "logged by the consumer (request seq 2, response seq 3"),
    ("status differs", "provider", _set(5, "status", 500), "req-2", "differs", "error",
     "response status differs: consumer '200', provider '500'"),
    ("request signature differs", "consumer", _set(0, "signature", "xroad=:AAAA:"), "req-0", "differs", "error",
     "request signature differs"),
    ("body differs", "provider", _set(1, "body", "eyJpZCI6Mn0="), "req-0", "differs", "error",
     "response body differs"),
    ("logged twice", "provider", lambda o: [*o, o[0]], "req-0", "duplicate", "error",
     "the server side logged the request twice (seq 0 and 6)"),
    ("created differs", "consumer", _set(4, "created", "2030-01-01T00:00:00.000000Z"), "req-2",
     "differs", "error", "request created differs"),
]


@pytest.mark.parametrize(("name", "side", "edit", "rid", "problem", "severity", "text"), CASES,
                         ids=[c[0] for c in CASES])
def test_differences_are_reported(
    world: LogWorld, name: str, side: str, edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], rid: str,
    problem: str, severity: str, text: str,
) -> None:
    c, p = logs(world)
    if side == "consumer":
        c = edit(c)
    else:
        p = edit(p)
    report = run(c, p)
    hits = [m for m in report.mismatches if m.request_id == rid and m.problem == problem]
    assert hits, report.summary()
    assert hits[0].severity == severity
    assert text in hits[0].message, report.summary()
    assert not report.ok


def test_exchange_outside_the_other_logs_span_is_a_note(world: LogWorld) -> None:
    c, p = logs(world, 4)
    report = run(c, p[:6])  # the provider's archive ends before the last exchange
    [m] = report.mismatches
    assert (m.request_id, m.problem, m.severity) == ("req-3", "consumer-only", "note")
    assert "outside the time span of the other log" in m.message
    assert report.ok and report.paired == 3


def test_other_side_records_are_ignored(world: LogWorld, tmp_path: Path) -> None:
    c, p = logs(world)
    report = run([*c, {**p[0], "request_id": "x"}], p)
    assert report.ignored == 1 and report.ok


def test_a_provider_with_several_origins_pairs_with_one_consumer(world: LogWorld) -> None:
    """Two workers of the provider each logged some of the exchanges (docs/messagelog.md section 5): merged, every
    exchange pairs; one logged by both workers (a replay that got through) is a duplicate naming both origins."""
    c, p = logs(world, 4)
    w0 = [Entry(seq=i, fields=o, origin="DEV/GOV/1002/ss2") for i, o in enumerate(p[:4])]
    w1 = [Entry(seq=i, fields={**o, "origin": "DEV/GOV/1002/ss2/1"}, origin="DEV/GOV/1002/ss2/1")
          for i, o in enumerate(p[4:])]
    report = match_logs(entries(c), [*w0, *w1], consumer_origin="DEV/GOV/1001/ss1",
                        provider_origin="DEV/GOV/1002/ss2, DEV/GOV/1002/ss2/1")
    assert (report.paired, report.provider_exchanges, report.ok) == (4, 4, True), report.summary()
    assert "provider log DEV/GOV/1002/ss2, DEV/GOV/1002/ss2/1: 4 exchanges" in report.summary()
    replayed = Entry(seq=2, fields={**p[0], "origin": "DEV/GOV/1002/ss2/1"}, origin="DEV/GOV/1002/ss2/1")
    report = match_logs(entries(c), [*w0, *w1, replayed], consumer_origin="c", provider_origin="p")
    [m] = report.mismatches
    assert (m.request_id, m.problem, m.severity) == ("req-0", "duplicate", "error")
    assert "logged the request twice (seq 0 of DEV/GOV/1002/ss2 and seq 2 of DEV/GOV/1002/ss2/1)" in m.message


def _keep(objs: list[dict[str, Any]], *drop: int) -> list[dict[str, Any]]:
    return [o for i, o in enumerate(objs) if i not in drop]


# Failed exchanges, as the logs show them (gateway/messagelog/match.py): (name, consumer records dropped,
# provider records dropped, text). Each log holds req-0, resp-0, req-1, resp-1, req-2, resp-2; req-1 fails.
FAILED = [
    ("provider unreachable", (3,), (2, 3), "the provider has no record: the request did not reach it"),
    ("provider failed before answering", (3,), (3,), "neither a response: the provider failed before it answered"),
    ("answer lost on the way back", (3,), (), "the provider answered (request seq 2, response seq 3) but the "
                                              "consumer logged only the request (request seq 2)"),
    ("consumer crashed while committing", (2, 3), (3,), "its request record was not durable when it stopped"),
]


@pytest.mark.parametrize(("name", "drop_c", "drop_p", "text"), FAILED, ids=[f[0] for f in FAILED])
def test_failed_exchanges_are_notes_not_problems(
    world: LogWorld, name: str, drop_c: tuple[int, ...], drop_p: tuple[int, ...], text: str,
) -> None:
    c, p = logs(world)
    report = run(_keep(c, *drop_c), _keep(p, *drop_p))
    [m] = report.mismatches
    assert (m.request_id, m.problem, m.severity) == ("req-1", "failed", "note"), report.summary()
    assert text in m.message, m.message
    assert report.ok and (report.paired, report.failed) == (2, 1)
    assert "failed exchanges (no answer reached the consumer's caller): 1" in report.summary()
    assert report.summary().endswith("RESULT: OK, both sides agree")


# Missing or different records that no failure explains: (name, consumer edit, provider edit, problem, text)
NOT_FAILED = [
    ("provider answered, consumer has nothing", lambda o: _keep(o, 2, 3), lambda o: o, "provider-only",
     "logged by the provider (request seq 2, response seq 3"),
    ("provider has a response without its request", lambda o: _keep(o, 3), lambda o: _keep(o, 2), "differs",
     "the provider has no request record"),
    ("failed, but the requests differ", lambda o: _keep(o, 3), lambda o: _set(2, "signature", "xroad=:AAAA:")(
        _keep(o, 3)), "differs", "request signature differs"),
]


@pytest.mark.parametrize(("name", "edit_c", "edit_p", "problem", "text"), NOT_FAILED, ids=[f[0] for f in NOT_FAILED])
def test_missing_or_different_records_stay_problems(
    world: LogWorld, name: str, edit_c: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    edit_p: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], problem: str, text: str,
) -> None:
    c, p = logs(world)
    report = run(edit_c(c), edit_p(p))
    [m] = [m for m in report.mismatches if m.request_id == "req-1"]
    assert (m.problem, m.severity) == (problem, "error"), report.summary()
    assert text in m.message, m.message
    assert not report.ok and report.failed == 0
