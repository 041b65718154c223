"""Test kit of the admin API: a real admin application on 127.0.0.1 (port chosen by the kernel) over a real
database, a real global-configuration updater fed by the GlobalConfSimulator, and the real message-log store.

Successful responses are checked against the route table's response schema on every call, so the schemas
that the OpenAPI document publishes are exercised by every test that uses :meth:`AdminHarness.call`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from argon2 import PasswordHasher
from globalconf_sim import GlobalConfSimulator

from gateway.admin.app import AdminContext, build_admin_app
from gateway.admin.roles import Role
from gateway.admin.routes import ROUTES_BY_ID
from gateway.admin.schema import Page, validate
from gateway.admin.store import AdminStore, AuditEntry
from gateway.globalconf.updater import GlobalConfUpdater
from gateway.identifiers import SecurityServerId
from gateway.messagelog.store import SqlMessageLogStore, migrate_messagelog
from gateway.opmon.store import OpMonStore
from gateway.serverconf.store import ServerConfStore
from gateway.settings import AdminSettings
from gateway.storage.db import make_engine
from gateway.token.model import KdfParams
from gateway.token.soft import SoftToken

SERVER = SecurityServerId.parse("DEV/GOV/1001/ss1")
PASSWORD = "correct horse battery staple"
# Argon2id with small parameters: the same code path at a fraction of the default cost (tests only).
TEST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class AdminHarness:
    url: str
    http: aiohttp.ClientSession
    ctx: AdminContext
    store: AdminStore
    serverconf: ServerConfStore
    messagelog: SqlMessageLogStore
    clock: Clock
    sim: GlobalConfSimulator
    reloads: list[datetime] = field(default_factory=list)

    async def add_user(self, name: str, *roles: Role, password: str = PASSWORD) -> None:
        await self.store.add_user(name, password, frozenset(roles), now=self.clock())

    async def login(self, name: str, password: str = PASSWORD) -> str:
        status, body = await self.call("login", json={"username": name, "password": password})
        assert status == 200, body
        return str(body["token"])

    async def user_token(self, name: str, *roles: Role) -> str:
        await self.add_user(name, *roles)
        return await self.login(name)

    async def request(
        self, method: str, path: str, *, token: str | None = None, apikey: str | None = None,
        headers: dict[str, str] | None = None, **kwargs: Any,
    ) -> tuple[int, Any]:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        if apikey is not None:
            h["Authorization"] = f"X-Road-ApiKey token={apikey}"
        async with self.http.request(method, self.url + path, headers=h, **kwargs) as resp:
            data = await resp.read()
            if resp.status == 204:
                assert data == b""
                return resp.status, None
            assert resp.content_type == "application/json", (resp.status, data[:200])
            return resp.status, json.loads(data)

    async def call(
        self, operation_id: str, *, params: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        """Call a route by operation id; a success is checked against the route's declared schema and status."""
        route = ROUTES_BY_ID[operation_id]
        status, body = await self.request(route.method, route.path.format(**(params or {})), **kwargs)
        if status < 400:
            assert status == route.status, (operation_id, status, body)
            if route.response is not None and route.status != 204:
                validate(body, route.response, where=f"{operation_id} response")
        else:
            assert set(body) == {"type", "message", "detail"}, body
        return status, body

    async def audit(self, **filters: str) -> list[AuditEntry]:
        entries, _total = await self.store.list_audit(Page(limit=1000), **filters)
        return entries


@asynccontextmanager
async def admin_harness(
    database_url: str, tmp_path: Path, *, token_pin: str | None = None, with_opmon: bool = False, **settings: Any
) -> AsyncIterator[AdminHarness]:
    """The harness; with ``token_pin``, a software token (cheap KDF parameters) created with that PIN; with
    ``with_opmon``, an operational-monitoring store in the same database (``h.ctx.opmon``)."""
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    engine = make_engine(database_url)
    runner: web.AppRunner | None = None
    messagelog: SqlMessageLogStore | None = None
    try:
        serverconf = ServerConfStore(engine)
        await serverconf.migrate()
        await migrate_messagelog(engine)
        messagelog = SqlMessageLogStore(engine)
        store = AdminStore(engine, hasher=TEST_HASHER)
        await store.migrate()
        sim = GlobalConfSimulator(now=clock())
        updater = GlobalConfUpdater(sim.anchor(), tmp_path / "globalconf", sim, clock=clock)
        await updater.refresh()
        reloads: list[datetime] = []
        opmon = None
        if with_opmon:
            opmon = OpMonStore(engine)
            await opmon.migrate()

        async def reload() -> None:
            reloads.append(clock())

        token = None
        if token_pin is not None:
            token = await SoftToken.init(tmp_path / "token", token_pin,
                                         kdf=KdfParams(salt=b"0123456789abcdef", time_cost=1, memory_kib=1024,
                                                       parallelism=1))
            token.logout()

        async def reload_keys() -> bool:
            reloads.append(clock())
            return False

        ctx = AdminContext(
            server_id=SERVER, settings=AdminSettings(**settings), store=store, serverconf=serverconf,
            globalconf=updater, messagelog=messagelog, reload_serverconf=reload, clock=clock, token=token,
            reload_keys=reload_keys, opmon=opmon,
        )
        runner = web.AppRunner(build_admin_app(ctx), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as http:
            yield AdminHarness(
                url=f"http://127.0.0.1:{port}", http=http, ctx=ctx, store=store, serverconf=serverconf,
                messagelog=messagelog, clock=clock, sim=sim, reloads=reloads,
            )
    finally:
        if runner is not None:
            await runner.cleanup()
        if messagelog is not None:
            await messagelog.close()
        await engine.dispose()
