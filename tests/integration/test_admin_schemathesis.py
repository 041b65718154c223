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
from schemathesis_kit import run_schemathesis

from gateway.admin.central.routes import central_api
from gateway.admin.openapi import build_document
from gateway.admin.roles import CENTRAL_ROLES, ROLES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


async def test_security_server_admin_api_matches_its_document(tmp_path: Path) -> None:
    async with admin_harness(f"sqlite+aiosqlite:///{tmp_path / 'admin.db'}", tmp_path, token_pin="1234-5678") as h:
        status, document = await h.call("getOpenApi")
        assert status == 200 and document == build_document()
        identities: list[tuple[str, str | None]] = [("nobody", None)]
        for role in ROLES:
            _, key = await h.store.create_api_key(f"schemathesis {role}", frozenset({role}), created_by="test",
                                                  now=h.clock())
            identities.append((role, f"X-Road-ApiKey token={key}"))
        reports = []
        for label, authorization in identities:
            run_dir = tmp_path / label
            run_dir.mkdir()
            code, output = await run_schemathesis(document, h.url, run_dir, authorization=authorization, label=label)
            if code != 0:
                reports.append(output)
        assert not reports, "\n".join(reports)


async def test_central_admin_api_matches_its_document(tmp_path: Path) -> None:
    async with central_admin(f"sqlite+aiosqlite:///{tmp_path / 'central.db'}", tmp_path) as c:
        status, document = await c.call("getOpenApi")
        assert status == 200 and document == build_document(central_api("DEV"))
        identities: list[tuple[str, str | None]] = [("nobody", None)]
        for role in CENTRAL_ROLES:
            identities.append((role, f"X-Road-ApiKey token={await c.api_key(role)}"))
        reports = []
        for label, authorization in identities:
            run_dir = tmp_path / label
            run_dir.mkdir()
            code, output = await run_schemathesis(document, c.url, run_dir, authorization=authorization, label=label)
            if code != 0:
                reports.append(output)
        assert not reports, "\n".join(reports)
