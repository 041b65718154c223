"""GlobalConfUpdater against the in-memory simulator: cache, restart, listeners, status, the poll loop.

No sockets here (the simulator is the Fetcher); tests/integration/test_globalconf_updater.py repeats the
essentials over real HTTP.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from faultside import CLIENT_PROXY, detected_at
from globalconf_sim import SIM_URL, GlobalConfSimulator

from gateway.errors import ConfigError, GlobalConfDownloadFailed, GlobalConfError, PeerError
from gateway.globalconf.model import GlobalConf
from gateway.globalconf.updater import CACHE_FILE, GlobalConfUpdater, wait_or_stop
from gateway.settings import GlobalConfSettings

DOWNLOAD_FAILED = GlobalConfDownloadFailed.type_name()


NOW = datetime(2026, 11, 27, 13, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def sim() -> GlobalConfSimulator:
    return GlobalConfSimulator(now=NOW)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


def _updater(sim: GlobalConfSimulator, cache: Path, clock: Clock) -> GlobalConfUpdater:
    return GlobalConfUpdater(sim.anchor(), cache, sim, clock=clock)


async def test_refresh_accepts_caches_and_notifies(
    sim: GlobalConfSimulator, tmp_path: Path, clock: Clock
) -> None:
    up = _updater(sim, tmp_path / "cache", clock)
    seen: list[int] = []
    up.on_update(lambda conf: seen.append(conf.version))
    assert up.status().expired and up.status().version is None
    with pytest.raises(GlobalConfError, match="no valid global configuration"):
        up.require_valid()

    result = await up.refresh()
    assert (result.accepted, result.changed, result.version, result.url, result.errors) == (
        True, True, 1, SIM_URL, ()
    )
    assert (tmp_path / "cache" / CACHE_FILE).read_bytes() == sim.published
    assert seen == [1]
    assert up.require_valid().version == 1
    st = up.status()
    expires = NOW + timedelta(minutes=10)
    assert (st.version, st.issued_at, st.expires_at, st.expired) == (1, NOW, expires, False)
    assert (st.last_error, st.last_success_at, st.last_attempt_at) == (None, NOW, NOW)
    assert st.to_dict()["expires_at"] == "2026-11-27T13:10:00Z"

    # Same publication again: accepted, unchanged, nobody notified.
    result = await up.refresh()
    assert (result.accepted, result.changed) == (True, False)
    assert seen == [1]

    sim.publish()
    result = await up.refresh()
    assert (result.changed, result.version) == (True, 2)
    assert seen == [1, 2]
    assert (tmp_path / "cache" / CACHE_FILE).read_bytes() == sim.published


@pytest.mark.parametrize(
    ("serve", "expected"),
    [
        (lambda s: s.published.replace(b'"Agency B"', b'"Agency Q"'), "signature is invalid"),
        (lambda s: s.published[:100], "is not valid JSON"),
        (lambda s: s.publish_expired(), "expired at"),
        (lambda s: s.publish(version=1), "differs from the trusted copy"),
    ],
    ids=["tampered", "truncated", "expired", "same version other content"],
)
async def test_refused_download_leaves_cache_byte_identical(
    sim: GlobalConfSimulator, tmp_path: Path, clock: Clock,
    serve: Callable[[GlobalConfSimulator], bytes], expected: str,
) -> None:
    up = _updater(sim, tmp_path, clock)
    await up.refresh()
    cache = tmp_path / CACHE_FILE
    good = cache.read_bytes()
    stat = cache.stat()
    sim.content["members"][0]["name"] = "Agency A, renamed"
    sim.publish()
    sim.serve(serve(sim))

    result = await up.refresh()
    assert not result.accepted and result.version == 1
    assert expected in result.errors[0]
    assert cache.read_bytes() == good
    assert cache.stat().st_mtime_ns == stat.st_mtime_ns and cache.stat().st_ino == stat.st_ino
    assert sorted(os.listdir(tmp_path)) == [CACHE_FILE]  # no temporary file left behind
    st = up.status()
    assert st.version == 1 and st.last_error is not None and expected in st.last_error
    assert st.last_error_at == NOW


async def test_download_failure_is_recorded_and_last_copy_kept(
    sim: GlobalConfSimulator, tmp_path: Path, clock: Clock
) -> None:
    up = _updater(sim, tmp_path, clock)
    await up.refresh()
    sim.fail_with = OSError("connection reset by peer")
    sim.publish()
    clock.now = NOW + timedelta(minutes=1)
    result = await up.refresh()
    assert not result.accepted
    assert result.errors == (f"download of {SIM_URL} failed: OSError: connection reset by peer",)
    st = up.status()
    assert st.version == 1 and st.last_success_at == NOW and st.last_attempt_at == clock.now
    assert st.last_error == result.errors[0]
    # Recovery clears the error.
    sim.fail_with = None
    assert (await up.refresh()).version == 2
    assert up.status().last_error is None


async def test_fetcher_base_wraps_foreign_errors(sim: GlobalConfSimulator) -> None:
    sim.fail_with = ValueError("bad things")
    with pytest.raises(PeerError) as info:
        await sim.fetch(SIM_URL)
    assert info.value.message == f"download of {SIM_URL} failed: ValueError: bad things"
    assert info.value.xroad_type == DOWNLOAD_FAILED
    sim.fail_with = None
    with pytest.raises(PeerError, match="larger than 10 bytes"):
        await sim.fetch(SIM_URL, max_bytes=10)


async def test_urls_tried_in_order(sim: GlobalConfSimulator, tmp_path: Path, clock: Clock) -> None:
    mirror = "http://mirror.sim/globalconf"
    anchor = sim.anchor(urls=["http://gone.sim/globalconf", mirror])
    sim.urls = [mirror]
    up = GlobalConfUpdater(anchor, tmp_path, sim, clock=clock)
    result = await up.refresh()
    assert (result.accepted, result.url) == (True, mirror)
    assert result.errors == ("download of http://gone.sim/globalconf failed: HTTP 404 Not Found",)
    assert sim.fetched == ["http://gone.sim/globalconf", mirror]


async def test_cache_survives_restart(sim: GlobalConfSimulator, tmp_path: Path, clock: Clock) -> None:
    await _updater(sim, tmp_path, clock).refresh()
    sim.fail_with = OSError("central server down")

    again = _updater(sim, tmp_path, clock)
    seen: list[GlobalConf] = []
    again.on_update(seen.append)
    conf = again.load_cached()
    assert conf is not None and conf.version == 1
    assert [c.version for c in seen] == [1]
    assert again.require_valid() is conf
    assert not (await again.refresh()).accepted
    assert again.require_valid() is conf


async def test_expired_cache_is_loaded_and_reported(
    sim: GlobalConfSimulator, tmp_path: Path, clock: Clock
) -> None:
    await _updater(sim, tmp_path, clock).refresh()
    clock.now = NOW + timedelta(hours=1)
    again = _updater(sim, tmp_path, clock)
    conf = again.load_cached()
    assert conf is not None and conf.version == 1
    st = again.status()
    assert st.expired
    assert st.last_error == "cached configuration version 1 expired at 2026-11-27T13:10:00Z"
    with pytest.raises(GlobalConfError, match="expired") as info, detected_at(CLIENT_PROXY):
        again.require_valid()
    assert info.value.xroad_type == "Server.ClientProxy.OutdatedGlobalConf"


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda b: b[:-20], "is not valid JSON"),
        (lambda b: b.replace(b'"Agency B"', b'"Agency C"'), "signature is invalid"),
        (lambda b: b"", "is not valid JSON"),
    ],
    ids=["truncated", "tampered", "empty"],
)
async def test_corrupted_cache_refused_on_load(
    sim: GlobalConfSimulator, tmp_path: Path, clock: Clock,
    corrupt: Callable[[bytes], bytes], expected: str,
) -> None:
    await _updater(sim, tmp_path, clock).refresh()
    cache = tmp_path / CACHE_FILE
    bad = corrupt(cache.read_bytes())
    cache.write_bytes(bad)

    again = _updater(sim, tmp_path, clock)
    seen: list[GlobalConf] = []
    again.on_update(seen.append)
    assert again.load_cached() is None
    assert again.current is None and seen == []
    st = again.status()
    assert st.last_error is not None
    assert st.last_error.startswith(f"cached configuration {cache} refused: ")
    assert expected in st.last_error
    assert cache.read_bytes() == bad  # kept for inspection
    # The next good download replaces it.
    assert (await again.refresh()).changed
    assert cache.read_bytes() == sim.published


async def test_missing_cache_is_normal(sim: GlobalConfSimulator, tmp_path: Path, clock: Clock) -> None:
    up = _updater(sim, tmp_path / "not-yet", clock)
    assert up.load_cached() is None
    assert up.status().last_error is None


async def test_failing_listener_does_not_stop_others(
    sim: GlobalConfSimulator, tmp_path: Path, clock: Clock
) -> None:
    up = _updater(sim, tmp_path, clock)
    seen: list[int] = []

    def broken(conf: GlobalConf) -> None:
        raise RuntimeError("listener bug")

    up.on_update(broken)
    remove = up.on_update(lambda c: seen.append(c.version))
    assert (await up.refresh()).changed
    assert seen == [1]
    remove()
    sim.publish()
    await up.refresh()
    assert seen == [1]


async def test_run_polls_until_stopped_without_sleeping(
    sim: GlobalConfSimulator, tmp_path: Path, clock: Clock
) -> None:
    stop = asyncio.Event()
    waits: list[float] = []

    async def wait(event: asyncio.Event, seconds: float) -> None:
        assert event is stop
        waits.append(seconds)
        if len(waits) == 1:
            sim.publish()  # the central server publishes between two polls
        else:
            stop.set()

    up = GlobalConfUpdater(sim.anchor(), tmp_path, sim, clock=clock, poll_seconds=60, wait=wait)
    seen: list[int] = []
    up.on_update(lambda c: seen.append(c.version))
    await up.run(stop)
    assert waits == [60, 60]
    assert seen == [1, 2]
    assert sim.fetched == [SIM_URL, SIM_URL]


async def test_wait_or_stop_returns_when_stopped() -> None:
    stop = asyncio.Event()
    stop.set()
    async with asyncio.timeout(5):
        await wait_or_stop(stop, 3600)


async def test_replace_anchor_through_updater(sim: GlobalConfSimulator, tmp_path: Path, clock: Clock) -> None:
    up = _updater(sim, tmp_path, clock)
    await up.refresh()
    old = sim.keys[0]
    sim.add_key()
    sim.keys.remove(old)
    sim.publish()
    assert not (await up.refresh()).accepted
    up.replace_anchor(sim.anchor())
    assert (await up.refresh()).version == 2


async def test_from_settings(sim: GlobalConfSimulator, tmp_path: Path) -> None:
    anchor = tmp_path / "anchor.json"
    anchor.write_bytes(sim.anchor_bytes())
    settings = GlobalConfSettings(anchor=str(anchor), cache_dir=str(tmp_path / "c"), poll_seconds=5)
    up = GlobalConfUpdater.from_settings(settings, sim)
    assert up.anchor.instance == "DEV"
    assert up.cache_path == tmp_path / "c" / CACHE_FILE
    own = GlobalConfUpdater.from_settings(settings)
    await own.close()
    with pytest.raises(ConfigError, match=r"anchor file .*missing\.json cannot be read"):
        GlobalConfUpdater.from_settings(GlobalConfSettings(anchor=str(tmp_path / "missing.json")))
