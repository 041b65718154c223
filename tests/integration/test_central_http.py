"""The central server over real loopback HTTP: download and verify, caching headers, the publication loop,
errors as JSON."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.central import migrate_central
from gateway.central import registry as reg
from gateway.central.app import CentralHandle, create_app, start_central
from gateway.errors import ConfigError
from gateway.globalconf.anchor import Anchor
from gateway.globalconf.trust import TrustedGlobalConf
from gateway.settings import CentralSettings
from gateway.storage.db import make_engine

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 13, 0, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> CentralSettings:
    return CentralSettings(database_url=database_url, key_dir=str(tmp_path / "keys"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
async def central(settings: CentralSettings, clock: FakeClock) -> AsyncIterator[CentralHandle]:
    handle = await start_central(settings, host="127.0.0.1", port=0, clock=clock)
    yield handle
    await handle.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_download_and_verify(
    central: CentralHandle, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    assert central.url == f"http://127.0.0.1:{central.port}"
    async with http.get(central.url + "/anchor") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert resp.headers["Cache-Control"] == "no-cache"
        anchor_bytes = await resp.read()
    anchor = Anchor.from_bytes(anchor_bytes)
    assert resp.headers["ETag"] == f'"{hashlib.sha256(anchor_bytes).hexdigest()}"'
    assert anchor.download_urls == (central.url + "/globalconf",)

    async with http.get(anchor.download_urls[0]) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert resp.headers["Cache-Control"] == "no-cache"
        data = await resp.read()
        etag = resp.headers["ETag"]
    assert etag == f'"{hashlib.sha256(data).hexdigest()}"'
    client = TrustedGlobalConf(anchor, now=clock.now)
    conf = client.update(data, now=clock.now)
    assert (conf.version, conf.central_url, conf.issued_at) == (1, central.url, NOW)

    # an unchanged configuration revalidates with 304
    async with http.get(central.url + "/globalconf", headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
        assert await resp.read() == b""

    async with http.get(central.url + "/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {
            "status": "ok", "version": 1,
            "issued_at": "2026-11-27T13:00:00Z", "expires_at": "2026-11-27T13:10:00Z",
        }

    # a registry change, then one step of the publication loop: the client gets version 2
    await reg.add_member(central.engine, "DEV/GOV/1001", name="Agency A", instance="DEV")
    clock.now = NOW + timedelta(seconds=5)
    published = await central.publisher.trigger()
    assert published is not None and published.version == 2
    async with http.get(central.url + "/globalconf", headers={"If-None-Match": etag}) as resp:
        assert resp.status == 200
        conf = client.update(await resp.read(), now=clock.now)
    assert conf.version == 2
    assert [str(m.id) for m in conf.members] == ["DEV/GOV/1001"]


async def test_loop_refreshes_at_half_the_validity(central: CentralHandle, clock: FakeClock) -> None:
    assert await central.publisher.trigger() is None  # nothing changed
    clock.now = NOW + timedelta(seconds=299)
    assert await central.publisher.trigger() is None
    clock.now = NOW + timedelta(seconds=300)
    refreshed = await central.publisher.trigger()
    assert refreshed is not None
    assert (refreshed.version, refreshed.expires_at) == (2, NOW + timedelta(seconds=900))


async def test_a_trigger_in_the_turn_of_the_shutdown_does_not_keep_the_loop_running(
    settings: CentralSettings, clock: FakeClock,
) -> None:
    """A registry change's trigger and the loop's cancellation in one turn: the loop stops (it used to lose the
    cancellation to asyncio.wait_for on Python 3.11 and wait out a whole publication interval per round)."""
    handle = await start_central(settings, host="127.0.0.1", port=0, clock=clock)
    try:
        assert await handle.publisher.trigger() is None  # the loop is now waiting for its next wake-up
        (task,) = [t for t in asyncio.all_tasks() if t.get_name() == "central-publish-loop"]
        handle.publisher.trigger()  # sets the event the loop waits on...
        task.cancel()  # ...and cancels it in the same turn, as a shutdown right after a registry change does
        done, _ = await asyncio.wait({task}, timeout=10)  # an interval is 60 s: a lost cancellation waits it out
        assert task in done and task.cancelled(), "the publication loop ran on after its cancellation"
    finally:
        await handle.close()


async def test_health_fails_when_the_publication_expired(
    central: CentralHandle, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    clock.now = NOW + timedelta(seconds=600)
    async with http.get(central.url + "/healthz") as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["status"] == "fail"
    assert body["reason"] == "the newest publication has expired"


async def test_errors_are_json(settings: CentralSettings, http: aiohttp.ClientSession) -> None:
    """A database with no key and no publication: each route answers with the one JSON error shape."""
    engine = make_engine(settings.database_url)
    await migrate_central(engine)
    runner = web.AppRunner(create_app(engine, settings, background=False))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        async with http.get(base + "/globalconf") as resp:
            assert resp.status == 500
            assert resp.headers["X-Road-Error"] == "Server.OutdatedGlobalConf"
            assert await resp.json() == {
                "type": "Server.OutdatedGlobalConf",
                "message": "no global configuration has been published yet",
                "detail": "run `gateway central init` and `gateway central publish`",
            }
        async with http.get(base + "/anchor") as resp:
            assert resp.status == 500
            assert await resp.json() == {
                "type": "Server.InternalError",
                "message": "there is no active configuration-signing key",
                "detail": "run `gateway central init` or `keys add`",
            }
        async with http.get(base + "/healthz") as resp:
            assert resp.status == 503
            assert await resp.json() == {"status": "fail", "reason": "nothing published yet"}
    finally:
        await runner.cleanup()
        await engine.dispose()


async def test_port_in_use_is_a_settings_error(central: CentralHandle, settings: CentralSettings) -> None:
    with pytest.raises(ConfigError) as info:
        await start_central(settings, host="127.0.0.1", port=central.port)
    assert info.value.message.startswith(f"central server cannot listen on 127.0.0.1:{central.port}: ")


BAD_SETTINGS: list[tuple[str, dict[str, object], str]] = [
    ("instance", {"instance": "D/EV"},
     "settings: [central] key 'instance': instance code 'D/EV' contains a forbidden character '/'"),
    ("validity", {"conf_validity_seconds": 0},
     "settings: [central] key 'conf_validity_seconds': must be at least 1 second, got 0"),
    ("interval", {"publish_interval_seconds": 301},
     "settings: [central] key 'publish_interval_seconds': 301 s is more than half of conf_validity_seconds "
     "(600 s): clients' copies could expire between two checks"),
    ("public url", {"public_url": "ftp://x"},
     "settings: [central] key 'public_url': 'ftp://x' is not an http(s) base URL"),
    ("database url", {"database_url": "mysql://x/y"},
     "[central] key 'database_url': database URL 'mysql://x/y' uses driver 'mysql'"),
]


@pytest.mark.parametrize(
    ("changes", "message"), [c[1:] for c in BAD_SETTINGS], ids=[c[0] for c in BAD_SETTINGS]
)
async def test_bad_settings_refuse_to_start(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    base = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", "key_dir": str(tmp_path / "k")}
    with pytest.raises(ConfigError) as info:
        await start_central(CentralSettings(**{**base, **changes}), port=0)
    assert info.value.message == message
    assert info.value.exit_code == 2
