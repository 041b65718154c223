"""schemathesis against the running admin APIs, the security server's and the central server's, over real
HTTP on SQLite: generated requests from the served OpenAPI document, unauthenticated and with an API key for
each role. It fails on any 5xx, any response that does not match the document, any request the document
allows that the server refuses, and any undeclared method not answered 405 with ``Allow`` (the checks are
listed in ``schemathesis_kit``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from admin_kit import admin_harness
from central_admin_kit import central_admin
from schemathesis_kit import check_api

from gateway.admin.central.routes import central_api
from gateway.admin.openapi import build_document
from gateway.admin.roles import CENTRAL_ROLES, ROLES
from gateway.admin.routes import ROUTES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


async def test_security_server_admin_api_matches_its_document(tmp_path: Path) -> None:
    async with admin_harness(f"sqlite+aiosqlite:///{tmp_path / 'admin.db'}", tmp_path, token_pin="1234-5678") as h:
        status, document = await h.call("getOpenApi")
        assert status == 200 and document == build_document()
        keys = {}
        for role in ROLES:
            _, keys[role] = await h.store.create_api_key(f"schemathesis {role}", frozenset({role}),
                                                         created_by="test", now=h.clock())
        reports = await check_api(document, ROUTES, h.url, tmp_path, keys)
        assert not reports, "\n".join(reports)


async def test_central_admin_api_matches_its_document(tmp_path: Path) -> None:
    async with central_admin(f"sqlite+aiosqlite:///{tmp_path / 'central.db'}", tmp_path) as c:
        status, document = await c.call("getOpenApi")
        assert status == 200 and document == build_document(central_api("DEV"))
        keys = {role: await c.api_key(role) for role in CENTRAL_ROLES}
        reports = await check_api(document, central_api("DEV").routes, c.url, tmp_path, keys)
        assert not reports, "\n".join(reports)
