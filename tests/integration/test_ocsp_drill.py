"""The "OCSP responder hanging" drill (real sockets, TLS, SQLite, a real socket server that accepts and never
answers): exchanges keep flowing on the cached responses while the refreshes hang, each exchange bounded in
time; the failures are counted and logged once; readiness goes red within its margin of the freshness limit,
and only past that limit are exchanges refused, with the precise fault.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from exchange_kit import PROBE, ShiftClock, call, probed_federation
from ops_kit import HangingResponder, readyz, samples, scrape, value
from structlog.testing import capture_logs
from waiting import wait_for_condition

from gateway.central import registry
from gateway.trust import keys

pytestmark = [pytest.mark.integration]

OCSP_TIMEOUT = 3.0  # seconds: [server] ocsp_timeout_seconds for this drill
EXCHANGE_BOUND = 20.0  # seconds: far above an exchange's cost, far below the 44-77 s the old cache took


@pytest.fixture
async def hanging() -> AsyncIterator[HangingResponder]:
    responder = await HangingResponder().start()
    yield responder
    await responder.close()


async def test_hanging_ocsp_responder_never_holds_an_exchange(tmp_path: Path, hanging: HangingResponder) -> None:
    clock = ShiftClock()
    async with probed_federation(tmp_path / "fed", clock=clock,
                                 server_overrides={"ocsp_timeout_seconds": OCSP_TIMEOUT}) as (fed, _probe):
        ss1 = fed.server("ss1")
        assert ss1.context is not None
        assert (await call(ss1, f"{PROBE}/warm")).status == 200
        await wait_for_condition(lambda: _ready(ss1.ops_url), timeout=30, what="ss1 ready")
        sign = ss1.context.signer.cert
        # (1) the CA's responder now accepts and never answers; the cached responses become due for refresh
        name = f"{fed.instance} Development CA"
        await registry.remove_ca(fed.central.engine, name)
        await registry.add_ca(fed.central.engine, name=name, certificate=keys.cert_pem(fed.ca.ca_cert),
                              ocsp_urls=[hanging.url])
        await fed.publish_and_refresh()
        clock.advance(ss1.settings.server.ocsp_refresh_seconds + 1)
        with capture_logs() as logs:
            # (2) exchanges go through at once on the cached responses, while the refreshes hang
            async with asyncio.timeout(EXCHANGE_BOUND):
                assert (await call(ss1, f"{PROBE}/first")).status == 200
            await wait_for_condition(lambda: hanging.open >= 1, timeout=10, what="a refresh hangs at the responder")
            for i in range(5):
                async with asyncio.timeout(EXCHANGE_BOUND):
                    assert (await call(ss1, f"{PROBE}/during-{i}")).status == 200
            # the refresh still hangs and has not timed out yet: none of these exchanges waited for it
            assert hanging.open >= 1 and not await _timeouts(ss1.ops_url, at_least=1)
            # (3) the hung refreshes time out: counted, and logged once for our signing certificate
            await wait_for_condition(lambda: _timeouts(ss1.ops_url, at_least=1), timeout=OCSP_TIMEOUT + 15,
                                     what="a timed-out OCSP fetch counted")
            for i in range(5):
                async with asyncio.timeout(EXCHANGE_BOUND):
                    assert (await call(ss1, f"{PROBE}/after-{i}")).status == 200
        failing = [e for e in logs if e["event"].startswith("OCSP refresh failing")
                   and e.get("sha256") == keys.cert_sha256_hex(sign)[:16]]
        assert len(failing) == 1, failing
        assert failing[0]["reason"] == "timeout" and "message_id" not in failing[0]
        # (4) within the readiness margin of the freshness limit: not ready, exchanges still flowing
        status = ss1.context.ocsp_cache.peek(sign)
        assert status is not None
        conf = ss1.globalconf.current
        assert conf is not None
        limit = status.this_update.timestamp() + conf.ocsp_freshness_seconds
        margin = ss1.settings.server.readiness_ocsp_margin_seconds
        clock.advance(limit - clock().timestamp() - margin + 10)
        await fed.publish_and_refresh()  # the configuration stays valid: this drill is about OCSP only
        code, body = await readyz(ss1.ops_url)
        assert code == 503 and {"ocsp_signing", "ocsp_auth"} <= set(body["failing"]), body
        assert "within the readiness margin" in body["checks"]["ocsp_signing"]["detail"]
        async with asyncio.timeout(EXCHANGE_BOUND):
            assert (await call(ss1, f"{PROBE}/in-margin")).status == 200
        # (5) past the freshness limit: refused with the precise fault, still bounded in time
        clock.advance(margin)
        await fed.publish_and_refresh()
        async with asyncio.timeout(OCSP_TIMEOUT + EXCHANGE_BOUND):
            answer = await call(ss1, f"{PROBE}/stale")
        answer.assert_error(500, "Server.ClientProxy.CertValidation", contains="no fresh OCSP response")
        assert hanging.accepted >= 2


async def _ready(ops_url: str) -> bool:
    return (await readyz(ops_url))[0] == 200


async def _timeouts(ops_url: str, *, at_least: int) -> bool:
    return value(samples(await scrape(ops_url)), "gateway_ocsp_fetch_failures_total", reason="timeout") >= at_least
