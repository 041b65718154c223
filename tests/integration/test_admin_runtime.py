"""The admin API inside a running security server (``gateway.dev.demo``'s federation on loopback): its own
port, the first admin user's credentials file, and changes that reach the proxies' snapshot at once."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from gateway.dev.demo import start_federation
from gateway.identifiers import SubsystemId
from gateway.messagelog.checkpoint import verify_checkpoint

pytestmark = pytest.mark.integration


async def test_admin_api_of_a_running_server(tmp_path: Path) -> None:
    fed = await start_federation(tmp_path / "fed")
    try:
        described = fed.describe()
        creds_path = Path(described["admin_credentials"])
        assert stat.S_IMODE(creds_path.stat().st_mode) == 0o600
        creds = json.loads(creds_path.read_text())["servers"]
        ss1 = fed.server("ss1")
        entry = creds[str(ss1.server_id)]
        [server] = [s for s in described["servers"] if s["id"] == str(ss1.server_id)]
        assert server["admin_url"] == ss1.admin_url == entry["admin_url"]
        assert ss1.admin_url not in (ss1.client_url, f"http://{ss1.server_address}")
        async with aiohttp.ClientSession(ss1.admin_url) as http:
            login = {"username": entry["username"], "password": entry["password"]}
            async with http.post("/api/v1/login", json=login) as resp:
                assert resp.status == 200
                token = (await resp.json())["token"]
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post("/api/v1/clients", json={"id": "DEV/GOV/1001/newcomer", "status": "registered"},
                                 headers=headers) as resp:
                assert resp.status == 201
            # the proxies' in-memory snapshot has it now, without waiting for the periodic reload
            assert ss1.context is not None
            assert SubsystemId.parse("DEV/GOV/1001/newcomer") in ss1.context.snapshot.clients
            async with http.get("/api/v1/globalconf/status", headers=headers) as resp:
                status = await resp.json()
                assert resp.status == 200 and status["version"] is not None and not status["expired"]
            async with http.get("/api/openapi.json") as resp:
                assert resp.status == 200 and (await resp.json())["openapi"] == "3.1.0"
        # the audit log's checkpoints: the server's signing key, a good OCSP response for it, the federation's TSA
        assert ss1.audit_checkpointer is not None and ss1.context is not None
        made = await ss1.audit_checkpointer.run_once(datetime.now(UTC), force=True)
        assert made.checkpoint is not None and made.stamp_error is None and made.stamped == (made.checkpoint.size,)
        head = verify_checkpoint(made.checkpoint.note, ss1.context.signer.cert, origin=f"{ss1.server_id}/audit")
        assert head.size == made.checkpoint.size >= 2  # the login and the change at least
        assert made.checkpoint.signing_ocsp is not None
        # the proxy ports do not serve the admin API
        async with aiohttp.ClientSession() as http, http.get(f"{ss1.client_url}/api/openapi.json") as resp:
            assert resp.status != 200
    finally:
        await fed.close()
