"""The OCSP cache against real responders on loopback (real HTTP, the development CA): a responder that
refuses connections and one that answers garbage are each counted by reason and logged once per change of
state; the first fetch without a cached response fails with the precise fault; during the back-off a request
does not wait; a good responder then gives a status that is answered from the cache at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pkihelpers import ThrowawayPki, make_pki
from structlog.testing import capture_logs

from gateway.errors import IncorrectValidationInfo
from gateway.globalconf.model import CertificateAuthority
from gateway.ops.metrics import ServerMetrics
from gateway.proxy.ocspcache import OcspCache

pytestmark = [pytest.mark.integration]

FRESHNESS = 3600  # seconds


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def pki(tmp_path: Path) -> ThrowawayPki:
    return make_pki(tmp_path / "pki")


async def _serve(handler: web.Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/"


@pytest.fixture
async def responders(pki: ThrowawayPki) -> AsyncIterator[dict[str, str]]:
    async def garbage(_request: web.Request) -> web.Response:
        return web.Response(body=b"not an OCSP response", content_type="application/ocsp-response")

    async def good(request: web.Request) -> web.Response:
        from gateway.dev.pki.ocsp_responder import respond

        der = respond(await request.read(), pki.ca.ocsp_state(FRESHNESS), datetime.now(UTC))
        return web.Response(body=der, content_type="application/ocsp-response")

    runners = []
    urls = {}
    for name, handler in (("garbage", garbage), ("good", good)):
        runner, url = await _serve(handler)
        runners.append(runner)
        urls[name] = url
    refused_runner, refused_url = await _serve(garbage)
    await refused_runner.cleanup()  # its port refuses connections now
    urls["refused"] = refused_url
    yield urls
    for r in runners:
        await r.cleanup()


@pytest.mark.parametrize(("responder", "reason", "message"), [
    ("refused", "unreachable", "cannot be reached"),
    ("garbage", "bad_response", "OCSP"),
])
async def test_failing_responder_is_counted_logged_once_and_backs_off(
    pki: ThrowawayPki, responders: dict[str, str], responder: str, reason: str, message: str,
) -> None:
    issued = pki.issue_sign("DEV/GOV/1001")
    metrics = ServerMetrics()
    clock = Clock()
    async with aiohttp.ClientSession() as session:
        cache = OcspCache(session, clock=clock, refresh_seconds=300, timeout_seconds=5, observer=metrics)
        ca = CertificateAuthority(name="Test CA", certificate=pki.ca_cert, ocsp_urls=(responders[responder],))
        try:
            with capture_logs() as logs:
                # (1) no cached response: the fetch fails, the exchange gets the precise fault
                with pytest.raises(IncorrectValidationInfo, match=f"no fresh OCSP response for .*{message}"):
                    await cache.status(issued.cert, ca, max_age_seconds=FRESHNESS)
                # (2) during the back-off: refused at once, without another fetch
                for _ in range(3):
                    with pytest.raises(IncorrectValidationInfo, match="next attempt in"):
                        await cache.status(issued.cert, ca, max_age_seconds=FRESHNESS)
            counted = metrics.registry.get_sample_value("gateway_ocsp_fetch_failures_total", {"reason": reason})
            assert counted == 1
            assert [e["reason"] for e in logs if e["event"].startswith("OCSP refresh failing")] == [reason]
            # (3) the responder works again (after the back-off): fetched, logged once, then cached
            ca = CertificateAuthority(name="Test CA", certificate=pki.ca_cert, ocsp_urls=(responders["good"],))
            clock.now += timedelta(seconds=40)  # past the first back-off (30 s, jittered by at most 25 %)
            with capture_logs() as logs:
                status = await cache.status(issued.cert, ca, max_age_seconds=FRESHNESS)
                assert status.status == "good"
                assert cache.peek(issued.cert) is status
                again = await cache.status(issued.cert, ca, max_age_seconds=FRESHNESS)
                assert again is status  # from the cache
            assert [e["event"] for e in logs] == ["OCSP responder answers again"]
            assert metrics.registry.get_sample_value("gateway_ocsp_fetches_total") == 1
        finally:
            await cache.close()
