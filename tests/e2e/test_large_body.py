"""Large bodies stream through both security servers (issue 10, item 6), as real ``gateway server serve``
processes: a 200 MiB request body (sent chunked) and a 200 MiB response of the service pass through ss1 and ss2
with ``max_body_bytes`` at 400 MiB and a body budget of only 8 MiB, and

- the service gets the request body byte for byte, and the caller the service's answer;
- each server process's resident memory grows by at most 128 MiB over the exchange (issue 10's first bar;
  peak RSS, VmHWM, reset with ``clear_refs`` before it);
- both servers' logs hold both bodies, stored apart, each equal to what was sent and matching its record's
  leaf hash; and the logs export and verify offline (``gateway log export`` + ``gateway log verify``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from large_body_kit import ORIGINS, HashingService, body_sha256, large_body_federation, logged_bodies, send
from process_kit import checkpointed, run_cli, wait_until

pytestmark = pytest.mark.e2e

SIZE = 200 * 2**20  # bytes of the request body and of the response body
BAR = 128 * 2**20  # bytes of RSS growth allowed per server (issue 10's first bar)


@pytest.mark.timeout(240)
async def test_a_large_request_and_response_stream_through_both_servers_in_bounded_memory(tmp_path: Path) -> None:
    service = await HashingService().start()
    try:
        async with large_body_federation(tmp_path, service, max_body_bytes=2 * SIZE) as running:
            sent = await send(running, request_size=SIZE, response_size=SIZE)
            # (1) the bodies arrived whole, each as sent
            assert sent.status == 200, sent
            expected = body_sha256(SIZE)
            assert service.received == [(SIZE, expected)]
            assert sent.service_saw == expected
            assert (sent.response_size, sent.response_sha256) == (SIZE, expected)
            # (2) bounded memory in each server process
            for code, growth in sent.rss_growth.items():
                assert growth <= BAR, f"{code}'s RSS grew by {growth / 2**20:.1f} MiB over the exchange"
            # both records of each side covered by a timestamped checkpoint, for the export below
            for code, origin in ORIGINS.items():
                url = running.databases[code]
                await wait_until(lambda url=url, origin=origin: checkpointed(url, [origin]), timeout=60,
                                 what=f"a timestamped checkpoint of {origin}")
        # (3) both logs hold both bodies as they passed (each checked against its record's leaf hash)
        for code, origin in ORIGINS.items():
            bodies = await logged_bodies(running.databases[code], origin)
            assert bodies == {(sent.request_id, "request"): expected, (sent.request_id, "response"): expected}
            # (4) and the log verifies offline, trusting only the anchor
            archive = tmp_path / f"{code}.archive"
            rc, out, err = await run_cli("-c", str(running.settings[code]), "log", "export", "--origin", origin,
                                         "--out", str(archive))
            assert rc == 0, (out, err)
            rc, out, err = await run_cli("log", "verify", str(archive), "--anchor",
                                         str(tmp_path / "fed" / "anchor.json"))
            assert rc == 0, (out, err)
    finally:
        await service.close()
