"""The ops ports of a running federation on PostgreSQL with token keys (real sockets, TLS, databases, promtool):
the scrape of each security server and of the central server passes ``promtool check metrics`` and counts the
exchanges by value; ``/readyz`` goes red for each of its checks with the real part failing, and for the
timestamping grace period and the global configuration **before** exchanges are refused (the "TSA down"
drill, with a TSA that accepts and never answers); the Grafana dashboard queries only metrics that a server exports.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from conftest import PG_DSN
from exchange_kit import CONSUMER, PROBE, FailingLog, Probe, ShiftClock, call, database_urls, probed_federation
from ops_kit import HangingResponder, promtool_check, readyz, samples, scrape, total, value
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url
from waiting import wait_for_condition

from gateway.central import registry
from gateway.dev.demo import Federation
from gateway.server.runtime import SecurityServer
from gateway.trust import keys

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

GRACE = 120  # seconds of timestamping grace on both servers
GRACE_MARGIN = 60  # seconds: /readyz turns red this long before the grace period ends
TSA_TIMEOUT = 1.0  # seconds: [server] timestamp_timeout_seconds (the drill's TSA never answers)
NOSUCH = "DEV/GOV/1002/registry/nosuch"  # a service that ss2 does not have
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "gateway.json"


@dataclass
class World:
    fed: Federation
    clock: ShiftClock
    probe: Probe
    ss1: SecurityServer
    ss2: SecurityServer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("ops")
    clock = ShiftClock()
    async with database_urls("postgresql", tmp, ["ss1", "ss2", "central"]) as dbs, probed_federation(
        tmp / "fed", clock=clock, database_urls=dbs, key_store="token",
        # checkpoint rounds are driven by the test (run_once)
        server_overrides={"checkpoint_interval_seconds": 3600.0, "checkpoint_max_records": 10**6,
                          "timestamp_grace_seconds": GRACE, "readiness_grace_margin_seconds": GRACE_MARGIN,
                          "timestamp_timeout_seconds": TSA_TIMEOUT},
    ) as (fed, probe):
        world = World(fed=fed, clock=clock, probe=probe, ss1=fed.server("ss1"), ss2=fed.server("ss2"))
        for ss in (world.ss1, world.ss2):
            await wait_for_condition(lambda ss=ss: _ready(ss), timeout=30, what=f"{ss.server_id} ready")
        yield world


async def _ready(ss: SecurityServer) -> bool:
    return (await readyz(ss.ops_url))[0] == 200


async def _stamp_all(world: World) -> None:
    """Every record of both servers under a timestamped checkpoint (the TSA is up)."""
    for ss in (world.ss1, world.ss2):
        assert ss.checkpointer is not None
        await ss.checkpointer.run_once(world.clock(), force=True)
        assert ss.checkpointer.unstamped_since is None


async def _fresh(world: World) -> None:
    """A configuration issued now (the clock may have moved), everything stamped, both servers ready."""
    await world.fed.publish_and_refresh()
    await _stamp_all(world)
    for ss in (world.ss1, world.ss2):
        await wait_for_condition(lambda ss=ss: _ready(ss), timeout=30, what=f"{ss.server_id} ready again")


# ---- metrics ---------------------------------------------------------------------------------------------------


async def test_scrapes_pass_promtool_and_count_exchanges_by_value(world: World) -> None:
    ss1, ss2 = world.ss1, world.ss2
    before1, before2 = samples(await scrape(ss1.ops_url)), samples(await scrape(ss2.ops_url))
    for i in range(3):
        assert (await call(ss1, f"{PROBE}/ok{i}")).status == 200
    (await call(ss1, f"{NOSUCH}/x")).assert_error(500, "Server.ServerProxy.UnknownService")
    (await call(ss1, f"{PROBE}/x", client="DEV/GOV/1001/nobody")).assert_error(
        500, "Server.ClientProxy.UnknownMember", contains="is not a client of this security server")
    text1, text2 = await scrape(ss1.ops_url), await scrape(ss2.ops_url)
    for text in (text1, text2, await scrape(world.fed.central.ops_url)):
        rc, out = await promtool_check(text)
        assert rc == 0 and out.strip() == "", out
    after1, after2 = samples(text1), samples(text2)

    def delta(after: dict, before: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"client": CONSUMER, "service": PROBE, "outcome": "ok"}
    # the consumer's server: three exchanges through, one refused by the provider, one refused here
    assert delta(after1, before1, "gateway_exchanges_total", side="client", **ok) == 3
    assert delta(after1, before1, "gateway_exchanges_total", side="client", client=CONSUMER, service=NOSUCH,
                 outcome="server_error") == 1
    assert delta(after1, before1, "gateway_exchange_errors_total", side="client",
                 type="Server.ServerProxy.UnknownService") == 1
    assert delta(after1, before1, "gateway_exchanges_total", side="client", client="", service=PROBE,
                 outcome="server_error") == 1  # the unregistered client is not a label
    assert delta(after1, before1, "gateway_exchange_duration_seconds_count", side="client", service=PROBE) == 4
    assert total(after1, "gateway_peer_wait_seconds_count") - total(before1, "gateway_peer_wait_seconds_count") == 4
    # the provider's server: the same three, and its own refusal of the unknown service
    assert delta(after2, before2, "gateway_exchanges_total", side="server", **ok) == 3
    assert delta(after2, before2, "gateway_exchanges_total", side="server", client=CONSUMER, service=NOSUCH,
                 outcome="server_error") == 1
    assert delta(after2, before2, "gateway_service_wait_seconds_count", service=PROBE) == 3
    # every exchange logged a request and a response on each side, each record counted once it was durable
    for after, before, side in ((after1, before1, "client"), (after2, before2, "server")):
        assert delta(after, before, "gateway_messagelog_wait_seconds_count", side=side) == 8
        assert total(after, "gateway_messagelog_batch_records_sum") - total(
            before, "gateway_messagelog_batch_records_sum") == 8
    # state gauges
    conf = ss1.globalconf.current
    assert conf is not None and value(after1, "gateway_globalconf_version") == conf.version
    assert 0 < value(after1, "gateway_globalconf_expires_in_seconds") <= 600
    sign = ss1.context.signer.cert if ss1.context is not None else None
    assert sign is not None
    sha = keys.cert_sha256_hex(sign)
    assert 700 * 86400 < value(after1, "gateway_certificate_expires_in_seconds", server="DEV/GOV/1001/ss1",
                               usage="sign", sha256=sha, identity="DEV/GOV/1001", state="active") <= 730 * 86400
    assert 0 <= value(after1, "gateway_ocsp_response_age_seconds", sha256=sha,
                      subject=sign.subject.rfc4514_string()) < 3600
    assert value(after1, "gateway_timestamping_grace_remaining_seconds", origin=ss1.origin) <= GRACE
    assert value(after1, "gateway_readiness_check", check="database") == 1


async def test_the_dashboard_queries_only_exported_metrics(world: World) -> None:
    exported = set()
    for url in (world.ss1.ops_url, world.ss2.ops_url):
        exported |= exported_names(await scrape(url))
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", ())]
    assert len(exprs) >= 10
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        missing = names - exported
        assert not missing, (expr, missing)


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def exported_names(text: str) -> set[str]:
    """The sample names a scrape offers, including those of families with no sample yet (a labelled counter
    before its first increment is announced by its HELP and TYPE lines only)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names


# PromQL words that look like metric names but are not: functions, aggregations and their modifiers, keywords.
_PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "abs", "clamp_min",
    "clamp_max", "time", "vector", "scalar", "label_replace", "sort", "sort_desc", "avg_over_time",
    "max_over_time", "min_over_time", "sum_over_time", "absent", "changes", "resets", "round", "inf", "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers outside ``{...}`` matchers, ``[...]`` ranges and
    string literals, that are neither PromQL words nor followed by ``(`` (a function call) nor a label list
    of ``by``/``without``/``on``/``ignoring``."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = m.group(0)
        rest = text[m.end():].lstrip()
        if word in _PROMQL_WORDS or rest.startswith("("):
            continue
        if re.fullmatch(r"[0-9]*[smhdwy]?", word) or word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (outcome) (rate(gateway_exchanges_total{side="client"}[5m]))', {"gateway_exchanges_total"}),
    ("histogram_quantile(0.99, sum by (le) (rate(gateway_exchange_duration_seconds_bucket[5m])))",
     {"gateway_exchange_duration_seconds_bucket"}),
    ("gateway_globalconf_expires_in_seconds / 60", {"gateway_globalconf_expires_in_seconds"}),
    ('min(gateway_readiness_check) or on() vector(0)', {"gateway_readiness_check"}),
    ('a_total{x="b_total"} + on(job) group_left(c) d_seconds', {"a_total", "d_seconds"}),
])
async def test_metric_names_parse_promql_loosely_but_correctly(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


# ---- readiness ---------------------------------------------------------------------------------------------


async def test_all_checks_green_and_healthz_is_liveness(world: World) -> None:
    await _fresh(world)
    status, body = await readyz(world.ss1.ops_url)
    assert status == 200 and body["status"] == "ready" and body["failing"] == []
    assert set(body["checks"]) == {"database", "token", "globalconf", "ocsp_signing", "ocsp_auth", "timestamping",
                                   "messagelog"}
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"{world.ss1.ops_url}/healthz") as resp:
        assert resp.status == 200 and await resp.json() == {"status": "alive"}
    status, body = await readyz(world.fed.central.ops_url)
    assert status == 200 and set(body["checks"]) == {"database", "publication"}


async def set_tsa_url(world: World, url: str) -> None:
    engine = world.fed.central.engine
    name = f"{world.fed.instance} Development TSA"
    await registry.remove_tsa(engine, name)
    await registry.add_tsa(engine, name=name, url=url, certificate=keys.cert_pem(world.fed.ca.tsa_cert))
    await world.fed.publish_and_refresh()


async def test_tsa_down_readiness_goes_red_before_exchanges_are_refused(world: World) -> None:
    ss1 = world.ss1
    await _fresh(world)
    hanging = await HangingResponder().start()  # the TSA accepts connections and never answers
    await set_tsa_url(world, hanging.url)
    try:
        # (1) records that no timestamp can cover: the grace clock runs
        assert (await call(ss1, f"{PROBE}/tsa-down")).status == 200
        for ss in (world.ss1, world.ss2):
            assert ss.checkpointer is not None
            result = await ss.checkpointer.run_once(world.clock(), force=True)
            assert result.stamp_error is not None
        assert hanging.accepted >= 2
        assert (await readyz(ss1.ops_url))[0] == 200
        # (2) within the margin of the end of the grace period: not ready, while exchanges still go through
        world.clock.advance(GRACE - GRACE_MARGIN + 5)
        status, body = await readyz(ss1.ops_url)
        assert status == 503 and body["failing"] == ["timestamping"], body
        assert "within the readiness margin" in body["checks"]["timestamping"]["detail"]
        assert (await call(ss1, f"{PROBE}/still-within-grace")).status == 200
        left = value(samples(await scrape(ss1.ops_url)), "gateway_timestamping_grace_remaining_seconds",
                     origin=ss1.origin)
        assert 0 < left < GRACE_MARGIN
        # (3) past the grace period: refused, and still not ready
        world.clock.advance(GRACE_MARGIN)
        (await call(ss1, f"{PROBE}/past-grace")).assert_error(500, "Server.ClientProxy.TimestampingFailed")
        status, body = await readyz(ss1.ops_url)
        assert status == 503 and "timestamping" in body["failing"]
        assert value(samples(await scrape(ss1.ops_url)), "gateway_timestamping_grace_remaining_seconds",
                     origin=ss1.origin) < 0
    finally:
        await set_tsa_url(world, world.fed.pki.tsa_url)
        await hanging.close()
    # (4) the TSA is back: stamped, ready
    await _fresh(world)
    assert (await call(ss1, f"{PROBE}/tsa-back")).status == 200


async def test_globalconf_about_to_expire_is_not_ready_before_it_expires(world: World) -> None:
    await _fresh(world)
    conf = world.ss1.globalconf.current
    assert conf is not None
    # two minutes margin by default: 60 s before expiry the server is not ready, and still exchanges
    world.clock.advance((conf.expires_at - world.clock()).total_seconds() - 60)
    await _stamp_all(world)  # the grace clock is not what this test is about
    status, body = await readyz(world.ss1.ops_url)
    assert status == 503 and body["failing"] == ["globalconf"], body
    assert "within the readiness margin" in body["checks"]["globalconf"]["detail"]
    assert (await call(world.ss1, f"{PROBE}/conf-margin")).status == 200
    world.clock.advance(61)
    (await call(world.ss1, f"{PROBE}/conf-expired")).assert_error(500, "Server.ClientProxy.OutdatedGlobalConf")
    status, body = await readyz(world.ss1.ops_url)
    assert status == 503 and "expired" in body["checks"]["globalconf"]["detail"]
    await _fresh(world)


async def test_token_logged_out_is_not_ready(world: World) -> None:
    await _fresh(world)
    ss1 = world.ss1
    assert ss1.token is not None
    ss1.token.logout()
    try:
        status, body = await readyz(ss1.ops_url)
        assert status == 503 and body["failing"] == ["token"], body
    finally:
        pin = (Path(ss1.settings.server.state_dir) / "token.pin").read_text().strip()
        await ss1.token.login(pin, now=world.clock())
    assert (await readyz(ss1.ops_url))[0] == 200


async def test_database_that_refuses_writes_is_not_ready(world: World) -> None:
    await _fresh(world)
    ss1 = world.ss1
    db = make_url(ss1.settings.server.database_url).database
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'ALTER DATABASE "{db}" SET default_transaction_read_only = on')
        await ss1.engine.dispose()  # new connections take the setting
        status, body = await readyz(ss1.ops_url)
        assert status == 503 and "database" in body["failing"], body
        assert "read-only" in body["checks"]["database"]["detail"], body["checks"]["database"]
    finally:
        await conn.execute(f'ALTER DATABASE "{db}" RESET default_transaction_read_only')
        await conn.close()
        await ss1.engine.dispose()
    await wait_for_condition(lambda: _ready(ss1), timeout=30, what="ready again once the database takes writes")


async def test_message_log_whose_commits_fail_is_not_ready(world: World) -> None:
    from exchange_kit import swapped_log

    await _fresh(world)
    ss1 = world.ss1
    failing = FailingLog("request")
    failing.observer = ss1.metrics  # as the runtime sets it on its own log
    async with swapped_log(ss1, failing):
        (await call(ss1, f"{PROBE}/disk-full")).assert_error(500, "Server.ClientProxy.LoggingFailed")
        status, body = await readyz(ss1.ops_url)
        assert status == 503 and body["failing"] == ["messagelog"], body
        assert "No space left on device" in body["checks"]["messagelog"]["detail"]
        assert total(samples(await scrape(ss1.ops_url)), "gateway_messagelog_commit_failures_total") >= 1
    assert (await readyz(ss1.ops_url))[0] == 200
