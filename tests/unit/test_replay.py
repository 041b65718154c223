"""gateway.protocol.replay: request ids seen within the acceptance window (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from faultside import SERVER_PROXY, detected_at

from gateway.errors import ConfigError, TrustError
from gateway.protocol import replay

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
T = int(NOW.timestamp())


def test_replay_cache() -> None:
    cache = replay.ReplayCache(window_seconds=60, max_entries=3)
    cache.check_and_add("r1", T, NOW)
    with pytest.raises(TrustError, match="request id 'r1' was already received") as info, detected_at(SERVER_PROXY):
        cache.check_and_add("r1", T, NOW + timedelta(seconds=59))
    assert info.value.xroad_type == "Server.ServerProxy.ReplayedRequest"
    cache.check_and_add("r2", T, NOW)
    cache.check_and_add("r3", T + 5, NOW)
    with pytest.raises(TrustError, match="replay cache holds 3 request ids") as full, detected_at(SERVER_PROXY):
        cache.check_and_add("r4", T, NOW)
    assert full.value.xroad_type == "Server.ServerProxy.ReplayCacheFull"
    # after the window, r1 and r2 are forgotten (and the verifier's skew check refuses their replays)
    later = NOW + timedelta(seconds=61)
    cache.check_and_add("r4", T + 61, later)
    assert len(cache) == 2
    with pytest.raises(TrustError, match="older than the 60 s replay window") as old, detected_at(SERVER_PROXY):
        cache.check_and_add("r5", T - 2, later)
    assert old.value.xroad_type == "Server.ServerProxy.ReplayedRequest"
    with pytest.raises(ValueError, match="aware datetime"):
        cache.check_and_add("r6", T, NOW.replace(tzinfo=None))


@pytest.mark.parametrize(("window", "size"), [(0, 10), (10, 0), (-1, 1)])
def test_replay_cache_settings(window: int, size: int) -> None:
    with pytest.raises(ConfigError, match="must be positive"):
        replay.ReplayCache(window_seconds=window, max_entries=size)
