"""``gateway admin ...`` in-process against a real SQLite database: users, API keys, session keys, the audit
log; every change made from the CLI is in the audit log."""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from globalconf_sim import GlobalConfSimulator

from gateway.admin.openapi import build_document
from gateway.admin.roles import ROLES
from gateway.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "server.db"
    monkeypatch.setenv("GATEWAY_SERVER__DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    monkeypatch.setenv("GATEWAY_LOGGING__FORMAT", "console")
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    return path


def _audit(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["admin", "audit", "list", "--json", *args]) == 0
    items: list[dict[str, object]] = json.loads(capsys.readouterr().out)["items"]
    return items


def test_users(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("a sufficiently long one\n")
    assert main(["admin", "user", "add", "alice", "--role", "observer", "--role", "auditor",
                 "--password-file", str(secret)]) == 0
    assert "user alice added with roles observer, auditor" in capsys.readouterr().out
    assert main(["admin", "user", "add", "bob", "--role", "system-administrator", "--generate-password"]) == 0
    out = capsys.readouterr().out
    assert "password (shown once): " in out
    monkeypatch.setenv("NEW_PW", "another long password")
    assert main(["admin", "user", "passwd", "bob", "--password-env", "NEW_PW"]) == 0
    assert main(["admin", "user", "list"]) == 0
    listing = capsys.readouterr().out
    assert "alice\tobserver,auditor" in listing and "bob\tsystem-administrator" in listing
    assert main(["admin", "user", "remove", "alice"]) == 0
    # refusals exit 1 with the diagnostics, and are audited too
    capsys.readouterr()
    assert main(["admin", "user", "remove", "alice"]) == 1
    assert "user 'alice' does not exist" in capsys.readouterr().err
    short = tmp_path / "short"
    short.write_text("short")
    assert main(["admin", "user", "add", "carol", "--role", "observer", "--password-file", str(short)]) == 1
    assert "password is shorter than 12 characters" in capsys.readouterr().err
    entries = _audit(capsys)
    assert [(e["action"], e["result"]) for e in entries] == [
        ("addUser", "refused"), ("removeUser", "refused"), ("removeUser", "success"), ("setUserPassword", "success"),
        ("addUser", "success"), ("addUser", "success")]
    origin = f"cli@{socket.gethostname()}"
    assert all(e["auth"] == "cli" and e["remote"] == origin and str(e["actor"]).startswith("cli:") for e in entries)
    assert "a sufficiently long one" not in json.dumps(entries)


def test_api_keys_session_keys_and_openapi(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["admin", "apikey", "create", "--name", "monitoring", "--role", "observer"]) == 0
    out = capsys.readouterr().out.splitlines()
    key = out[1]
    key_id = key[len("gwk_"):].split(".")[0]
    assert out[0] == f"API key {key_id} (monitoring); the key is shown only now:"
    assert main(["admin", "apikey", "list"]) == 0
    assert capsys.readouterr().out == f"{key_id}\tmonitoring\tobserver\tactive\n"
    assert main(["admin", "apikey", "revoke", key_id]) == 0
    assert main(["admin", "apikey", "revoke", key_id]) == 1
    assert "already revoked" in capsys.readouterr().err
    assert main(["admin", "session-key", "rotate"]) == 0
    assert main(["admin", "session-key", "rotate"]) == 0
    capsys.readouterr()
    assert main(["admin", "session-key", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "retired" in lines[0] and lines[1].endswith("active")
    assert [e["action"] for e in _audit(capsys, "--action", "revokeApiKey")] == ["revokeApiKey", "revokeApiKey"]
    assert [e["result"] for e in _audit(capsys, "--result", "refused")] == ["refused"]
    assert main(["admin", "openapi"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(build_document()))


async def test_any_operation_through_the_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from admin_kit import PASSWORD, admin_harness

    async with admin_harness(f"sqlite+aiosqlite:///{tmp_path / 'api.db'}", tmp_path) as h:
        await h.add_user("root", *ROLES)
        monkeypatch.setenv("ROOT_PW", PASSWORD)
        base = ["admin", "api", "--url", h.url, "--user", "root", "--password-env", "ROOT_PW"]
        rc = await asyncio.to_thread(main, [*base, "addClient", "--body", '{"id": "DEV/GOV/1001/cli"}'])
        assert rc == 0 and json.loads(capsys.readouterr().out)["encoded_id"] == "DEV:GOV:1001:cli"
        rc = await asyncio.to_thread(main, [*base, "getClient", "-p", "client_id=DEV:GOV:1001:cli"])
        assert rc == 0 and json.loads(capsys.readouterr().out)["id"] == "DEV/GOV/1001/cli"
        rc = await asyncio.to_thread(main, [*base, "listClients", "-q", "limit=0"])
        assert rc == 1 and "limit=0 is not in [1, 1000]" in capsys.readouterr().out
        _, key = await h.store.create_api_key("cli", frozenset({"observer"}), created_by="test", now=h.clock())
        monkeypatch.setenv("GATEWAY_ADMIN_API_KEY", key)
        rc = await asyncio.to_thread(main, ["admin", "api", "--url", h.url, "listClients"])
        assert rc == 0 and json.loads(capsys.readouterr().out)["total"] == 1
        rc = await asyncio.to_thread(main, ["admin", "api", "--url", h.url, "removeClient", "-p",
                                            "client_id=DEV:GOV:1001:cli"])
        assert rc == 1 and "Client.Forbidden" in capsys.readouterr().out
        assert await asyncio.to_thread(main, ["admin", "api", "--url", h.url, "getClient"]) == 1
        assert "getClient needs --param client_id=VALUE" in capsys.readouterr().err
        [entry] = await h.audit(action="addClient")
        assert (entry.actor, entry.result) == ("root", "success")


def test_openapi_of_the_central_server(db: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.admin.central.routes import central_api
    from gateway.admin.openapi import build_document

    monkeypatch.setenv("GATEWAY_CENTRAL__INSTANCE", "EE")
    capsys.readouterr()
    assert main(["admin", "--central", "openapi"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == build_document(central_api("EE")) and doc["info"]["title"] == "Gateway central server admin API"


def test_serverconf_changes_from_a_cli_process_are_audited(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {**os.environ, "GATEWAY_SERVER__DATABASE_URL": f"sqlite+aiosqlite:///{db}",
           "GATEWAY_LOGGING__FORMAT": "console"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", "serverconf", *args], env=env, capture_output=True,
                              text=True, timeout=60, check=False)

    assert run("client", "add", "DEV/GOV/1001/consumer").returncode == 0
    refused = run("client", "add", "DEV/GOV/1001/consumer")
    assert refused.returncode == 1 and "already" in refused.stderr
    assert run("service", "add", "DEV/GOV/1001/consumer/pets", "--url", "http://127.0.0.1:9/").returncode == 0
    assert run("access", "grant", "DEV/GOV/1001/consumer/pets", "DEV/GOV/1001/consumer").returncode == 0
    assert run("client", "list").returncode == 0  # reading changes nothing and is not audited
    entries = _audit(capsys)
    assert [(e["action"], e["result"], e["details"]["target"]) for e in entries] == [  # type: ignore[index]
        ("grantAccess", "success", "SUBSYSTEM:DEV/GOV/1001/consumer * ** of DEV/GOV/1001/consumer/pets"),
        ("addService", "success", "DEV/GOV/1001/consumer/pets"),
        ("addClient", "refused", "SUBSYSTEM:DEV/GOV/1001/consumer"),
        ("addClient", "success", "SUBSYSTEM:DEV/GOV/1001/consumer"),
    ]
    assert {(e["actor"], e["remote"], e["auth"], e["method"]) for e in entries} == {
        (f"cli:{getpass.getuser()}", f"cli@{socket.gethostname()}", "cli", "CLI")}
    assert entries[2]["status"] == 409 and "already" in str(entries[2]["details"]["error"])  # type: ignore[index]
    assert str(entries[0]["path"]) == "gateway serverconf grantAccess"
    # and the chain of the audit log verifies
    assert main(["admin", "audit", "verify"]) == 0
    assert "audit log: 4 entries" in capsys.readouterr().out


def test_token_changes_are_audited(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIN", "a token pin of some length")
    token = ["token", "--dir", str(tmp_path / "token"), "--pin-env", "PIN"]
    assert main([*token, "init"]) == 0
    assert main([*token, "generate-key", "--usage", "sign"]) == 0
    monkeypatch.setenv("PIN", "the wrong pin entirely")
    assert main([*token, "login"]) == 1
    assert main([*token, "activate", "00000000deadbeef"]) == 1
    entries = _audit(capsys)
    assert [(e["action"], e["result"]) for e in entries] == [
        ("activateCertificate", "refused"), ("loginToken", "refused"), ("generateKey", "success"),
        ("initToken", "success")]
    assert entries[2]["details"] == {"target": "sign"}
    assert "the PIN is incorrect" in str(entries[1]["details"]["error"])  # type: ignore[index]
    assert "a token pin" not in json.dumps(entries) and "the wrong pin" not in json.dumps(entries)


def test_audit_verify_and_export_on_the_command_line(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["admin", "audit", "verify"]) == 0
    assert "audit log: 0 entries, 0 checkpoints" in capsys.readouterr().out
    # the central server has no checkpoints to export: refused, saying what to use instead
    assert main(["admin", "--central", "audit", "export", "--out", str(tmp_path / "c.zip")]) == 1
    assert "the central server's audit log has no checkpoints to export" in capsys.readouterr().err
    # nothing to export before the first checkpoint, unless asked for (the entries are then not covered)
    assert main(["admin", "audit", "export", "--out", str(tmp_path / "n.zip")]) == 1
    assert "the audit log has no checkpoint yet" in capsys.readouterr().err
    assert main(["admin", "audit", "export", "--out", str(tmp_path / "u.zip"), "--include-uncovered"]) == 0
    assert "wrote " in capsys.readouterr().out and (tmp_path / "u.zip").exists()
    # a server's export without a valid [server] id is a settings error
    monkeypatch.setenv("GATEWAY_SERVER__ID", "not-an-id")
    assert main(["admin", "audit", "export", "--out", str(tmp_path / "s.zip")]) == 2
    assert "[server] id" in capsys.readouterr().err
    # gateway log verify on a damaged audit archive: the form is refused before anything is trusted
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("manifest.json", b'{"format":"gateway-audit-archive","version":9}')
    anchor = tmp_path / "anchor.json"
    anchor.write_bytes(GlobalConfSimulator(now=datetime.now(UTC)).anchor_bytes())
    assert main(["log", "verify", str(bad), "--anchor", str(anchor)]) == 1
    out = capsys.readouterr().out
    assert "FAIL archive: audit archive: version 9 is not supported (this verifier knows 1)" in out
