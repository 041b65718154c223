"""Test kit of the central server's admin API: a real central server (its database on SQLite or PostgreSQL,
the publication loop running) and its admin API beside it, both on 127.0.0.1 with ports chosen by the kernel,
plus a throwaway PKI whose CA the central server trusts.

:meth:`CentralAdmin.call` checks every success against the route's declared status and response schema, so
the schemas the served OpenAPI document publishes are exercised by every test that uses it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from admin_kit import PASSWORD, TEST_HASHER
from pkihelpers import ThrowawayPki, make_pki

from gateway.admin.central.app import CentralAdminHandle, start_central_admin
from gateway.admin.central.routes import central_api
from gateway.admin.roles import Role
from gateway.admin.schema import Page, validate
from gateway.admin.store import AdminStore, AuditEntry
from gateway.central.app import CentralHandle, start_central, utc_now
from gateway.settings import AdminSettings, CentralSettings
from gateway.trust import keys

INSTANCE = "DEV"


@dataclass
class CentralAdmin:
    url: str
    http: aiohttp.ClientSession
    central: CentralHandle
    admin: CentralAdminHandle
    store: AdminStore
    pki: ThrowawayPki

    async def api_key(self, *roles: Role) -> str:
        _, key = await self.store.create_api_key("test " + ",".join(roles), frozenset(roles), created_by="test",
                                                 now=self.central.publisher.clock())
        return key

    async def user_token(self, name: str, *roles: Role) -> str:
        await self.store.add_user(name, PASSWORD, frozenset(roles), now=self.central.publisher.clock())
        status, body = await self.call("login", json={"username": name, "password": PASSWORD})
        assert status == 200, body
        return str(body["token"])

    async def request(self, method: str, path: str, *, key: str | None = None, token: str | None = None,
                      **kwargs: Any) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"X-Road-ApiKey token={key}"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as resp:
            data = await resp.read()
            if resp.status == 204:
                assert data == b""
                return 204, None
            assert resp.content_type == "application/json", (resp.status, data[:200])
            return resp.status, json.loads(data)

    async def call(self, operation_id: str, *, params: dict[str, str] | None = None, **kwargs: Any) -> tuple[int, Any]:
        """Call a route by operation id; a success is checked against its declared status and schema."""
        route = {r.operation_id: r for r in central_api(INSTANCE).routes}[operation_id]
        status, body = await self.request(route.method, route.path.format(**(params or {})), **kwargs)
        if status < 400:
            assert status == route.status, (operation_id, status, body)
            if route.response is not None and route.status != 204:
                validate(body, route.response, where=f"{operation_id} response")
        else:
            assert set(body) == {"type", "message", "detail"}, body
        return status, body

    async def audit(self, **filters: str) -> list[AuditEntry]:
        entries, _ = await self.store.list_audit(Page(limit=1000), **filters)
        return entries


@asynccontextmanager
async def central_admin(
    database_url: str, tmp_path: Path, *, clock: Callable[[], datetime] = utc_now,
) -> AsyncIterator[CentralAdmin]:
    """``clock``: the central server's (and so its admin API's) time, e.g. one a test moves forward."""
    settings = CentralSettings(database_url=database_url, key_dir=str(tmp_path / "keys"), instance=INSTANCE,
                               ops_port=0)  # no fixed port: tests run side by side
    central = await start_central(settings, host="127.0.0.1", port=0, clock=clock)
    try:
        pki = make_pki(tmp_path / "pki")
        store = AdminStore(central.engine, hasher=TEST_HASHER)
        admin = await start_central_admin(central, AdminSettings(), host="127.0.0.1", port=0, store=store)
        try:
            async with aiohttp.ClientSession() as http:
                yield CentralAdmin(url=admin.url, http=http, central=central, admin=admin, store=store, pki=pki)
        finally:
            await admin.close()
    finally:
        await central.close()


def pem(cert: Any) -> str:
    return keys.cert_pem(cert)
