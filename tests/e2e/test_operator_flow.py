"""The operator's scenario (docs/operations.md), through the command line and the admin APIs only.

Starting from ``gateway demo`` (a real process), an operator adds a third agency with its own security server
(ss3, keys in a software token), gets its certificates issued by the demo's CA and registered at the central
server, grants it access to a service on ss2, makes an exchange, renews ss3's signing certificate while
requests flow (none may fail), revokes ss3's authentication certificate and sees the next request refused
(``SslAuthenticationFailed``) and logged by both servers.

Every change goes through ``gateway ...`` processes or HTTP calls to the admin APIs and client ports: no
gateway module is imported. Waiting is on output lines or bounded polling, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

GATEWAY = Path(sys.executable).parent / "gateway"
START_TIMEOUT = 60.0  # seconds until a started process reports that it is listening
COMMAND_TIMEOUT = 60.0  # seconds for one CLI command
STOP_TIMEOUT = 30.0  # seconds from SIGINT to exit
WAIT_TIMEOUT = 30.0  # seconds of bounded polling for a change to take effect
POLL = 0.1  # seconds between two polls

MEMBER = "DEV/GOV/1003"
SERVER = "DEV/GOV/1003/ss3"
CLIENT = "DEV/GOV/1003/client3"
SERVICE = "DEV/GOV/1002/registry/persons"
SS2 = "DEV/GOV/1002/ss2"
SS3_ADMIN_PASSWORD = "ss3 admin password for the test"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra)
    return env


async def gw(*args: str, env: dict[str, str] | None = None) -> str:
    """Run ``gateway ARGS`` to completion (without blocking the event loop); its standard output."""
    proc = await asyncio.create_subprocess_exec(
        str(GATEWAY), *args, env=env or _env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, f"gateway {' '.join(args)} -> {proc.returncode}\n{out.decode()}{err.decode()}"
    return out.decode()


def _match(pattern: str, text: str) -> re.Match[str]:
    m = re.search(pattern, text)
    assert m is not None, f"{pattern!r} not in {text!r}"
    return m


async def _line_matching(stream: asyncio.StreamReader, pattern: str) -> re.Match[str]:
    seen = []
    while line := (await stream.readline()).decode():
        seen.append(line)
        if m := re.search(pattern, line):
            return m
    raise AssertionError(f"stdout closed before a line matching {pattern!r}: {''.join(seen)!r}")


async def wait_until(what: str, check: Callable[[], Awaitable[Any]]) -> Any:
    """Poll ``check`` until it returns something truthy, for at most WAIT_TIMEOUT seconds."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while True:
        if result := await check():
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(POLL)


class Process:
    """A long-running ``gateway`` process: standard output piped, standard error to a file."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    async def start(self, *args: str, cwd: Path) -> None:
        self._log = self.log_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            str(GATEWAY), *args, cwd=cwd, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._log,
        )

    @property
    def stdout(self) -> asyncio.StreamReader:
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout

    def log_entries(self) -> list[dict[str, Any]]:
        """The JSON lines of its operational log (structlog writes JSON when stderr is not a terminal)."""
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    async def stop(self) -> str:
        """SIGINT, then the rest of its standard output; asserts a clean exit."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        rest = (await asyncio.wait_for(self.stdout.read(), STOP_TIMEOUT)).decode()
        rc = await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
        assert rc == 0, f"{self.name} exited {rc}: {self.log_path.read_text()[-3000:]}"
        return rest

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._log is not None:
            self._log.close()


class Admin:
    """A logged-in session on one server's admin API."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url, self.token = http, url, ""

    async def login(self, username: str, password: str) -> Admin:
        async with self.http.post(f"{self.url}/api/v1/login",
                                  json={"username": username, "password": password}) as resp:
            assert resp.status == 200, await resp.text()
            self.token = (await resp.json())["token"]
        return self

    async def call(self, method: str, path: str, *, status: int = 200, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.request(method, f"{self.url}/api/v1{path}", headers=headers, **kwargs) as resp:
            assert resp.status == status, f"{method} {path}: {resp.status} {await resp.text()}"
            return await resp.json() if resp.content_type == "application/json" else None

    async def refresh_globalconf(self) -> int:
        result = await self.call("POST", "/globalconf/refresh")
        assert result["accepted"], result
        return int(result["version"])

    async def newest_request_records(self, n: int = 20) -> list[dict[str, Any]]:
        """The newest ``n`` message-log records of kind ``request`` (auditor role)."""
        total = (await self.call("GET", "/messagelog/records", params={"limit": "1"}))["total"]
        page = await self.call("GET", "/messagelog/records", params={"limit": str(n), "offset": str(max(0, total - n))})
        return [item["record"] for item in page["items"] if item["record"]["kind"] == "request"]


def _cert_sha256(record: dict[str, Any]) -> str:
    return hashlib.sha256(base64.b64decode(record["signing_cert"])).hexdigest()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def test_operator_adds_an_agency_renews_and_revokes_its_certificates(
    tmp_path: Path, http: aiohttp.ClientSession,
) -> None:
    demo = Process("gateway demo", tmp_path / "demo.log")
    ss3 = Process("ss3", tmp_path / "ss3.log")
    try:
        # (0) the federation, with short OCSP refresh times so that a revocation shows within seconds
        await demo.start("demo", "--dir", str(tmp_path / "demo"), "--out", str(tmp_path / "federation.json"),
                         "--set", "ocsp_refresh_seconds=1", cwd=tmp_path)
        await asyncio.wait_for(_line_matching(demo.stdout, r"/r1/"), START_TIMEOUT)
        fed = json.loads((tmp_path / "federation.json").read_text())
        central = ["-c", fed["central"]["settings"]]
        ca_dir = str(Path(fed["pki"]["ca_cert"]).parent)  # the demo's CA: gateway pki ... --dir ca_dir
        creds = json.loads(Path(fed["admin_credentials"]).read_text())["servers"]
        ss2 = next(s for s in fed["servers"] if s["id"] == SS2)
        ss2_admin = await Admin(http, ss2["admin_url"]).login(creds[SS2]["username"], creds[SS2]["password"])

        # (1) agency C at the central server
        assert "member DEV/GOV/1003 added" in await gw(*central, "central", "member", "add", MEMBER,
                                                         "--name", "Agency C")
        assert f"subsystem {CLIENT} added" in await gw(*central, "central", "subsystem", "add", CLIENT)

        # (2) ss3: settings, token, keys, CSRs, certificates from the demo's CA
        d = tmp_path / "ss3"
        d.mkdir()
        pin_file = d / "token.pin"
        pin_file.write_text("ss3 token pin, long enough\n")
        pin_file.chmod(0o600)
        settings = d / "ss3.toml"
        settings.write_text("\n".join([
            "[server]",
            f'id = "{SERVER}"',
            f'database_url = "sqlite+aiosqlite:///{d / "ss3.db"}"',
            f'state_dir = "{d}"',
            "client_port = 0", "client_https_port = -1", "server_port = 0", "admin_port = 0", "ops_port = 0",
            f'token_dir = "{d / "token"}"', f'token_pin_file = "{pin_file}"',
            "ocsp_refresh_seconds = 1", "serverconf_reload_seconds = 1",
            "[globalconf]",
            f'anchor = "{fed["anchor"]}"', f'cache_dir = "{d / "globalconf"}"',
            "",
        ]))
        s3 = ["-c", str(settings)]
        assert "token created" in await gw(*s3, "token", "init")
        assert "PIN correct" in await gw(*s3, "token", "login")
        issued: dict[str, re.Match[str]] = {}
        for usage, identity in (("auth", SERVER), ("sign", MEMBER)):
            key_id = _match(r"generated \S+ key ([0-9a-f]{64})",
                            await gw(*s3, "token", "generate-key", "--usage", usage))[1]
            await gw(*s3, "token", "csr", key_id, "--name", "Agency C", "--out", str(d / f"{usage}.csr"))
            issued[usage] = _match(
                r"issued \w+ certificate ([0-9A-F]+) .*\n\s+sha256 ([0-9a-f]{64})",
                await gw("pki", "issue", "--dir", ca_dir, "--kind", usage, "--csr", str(d / f"{usage}.csr"),
                         "--identity", identity, "--out", str(d / f"{usage}.pem")),
            )
        # the token checks imported certificates against the CAs of the global configuration
        assert "global configuration version" in await gw(*s3, "server", "fetch-conf")
        for usage in ("auth", "sign"):
            sha = issued[usage][2]
            out = await gw(*s3, "token", "import-cert", str(d / f"{usage}.pem"))
            assert f"imported {usage} certificate {sha}" in out
            assert f"{usage} certificate {sha} is active" in await gw(*s3, "token", "activate", sha[:16])
        await gw(*s3, "serverconf", "client", "add", CLIENT, "--auth", "none")
        await gw(*s3, "admin", "user", "add", "admin", "--role", "system-administrator", "--role", "auditor",
                 "--password-env", "SS3_ADMIN_PASSWORD", env=_env(SS3_ADMIN_PASSWORD=SS3_ADMIN_PASSWORD))

        await ss3.start(*s3, "server", "serve", cwd=tmp_path)
        banner = await asyncio.wait_for(
            _line_matching(ss3.stdout, r"clients (http://\S+), peers (\S+), admin (http://\S+)$"), START_TIMEOUT)
        client_url, address, ss3_admin_url = banner[1], banner[2], banner[3]
        ss3_admin = await Admin(http, ss3_admin_url).login("admin", SS3_ADMIN_PASSWORD)
        url = f"{client_url}/r1/{SERVICE}/?limit=2"
        headers = {"X-Road-Client": CLIENT, "Accept": "application/json"}

        async def exchange() -> tuple[int, dict[str, Any], Any]:
            async with http.get(url, headers=headers) as resp:
                return resp.status, dict(resp.headers), await resp.json()

        # registration: the server asks, the registration officer approves, the central server publishes
        register_env = _env(GATEWAY_SERVER__ADDRESS=address)  # the port ss3 bound; normally fixed in ss3.toml
        rid = _match(r"auth_cert_reg request (\d+) is submitted",
                     await gw(*s3, "server", "register", env=register_env))[1]
        assert "approved" in await gw(*central, "central", "registration", "approve", rid, "--officer", "olga")
        rid = _match(r"client_reg request (\d+) is submitted",
                     await gw(*s3, "server", "register-client", CLIENT, env=register_env))[1]
        assert "approved" in await gw(*central, "central", "registration", "approve", rid, "--officer", "olga")
        version = int(_match(r"published version (\d+)", await gw(*central, "central", "publish"))[1])
        assert await ss2_admin.refresh_globalconf() == version
        assert await ss3_admin.refresh_globalconf() == version

        # registered, but ss2 grants nothing to client3 yet: default deny
        status, _, body = await exchange()
        assert (status, body["type"]) == (500, "Server.ServerProxy.AccessDenied"), body

        # (3) ss2's service administrator grants client3 access to persons
        service_path = "/services/" + SERVICE.replace("/", ":") + "/access-rights"
        await ss2_admin.call("POST", service_path, json={"subject": CLIENT}, status=201)

        # (4) a successful exchange client3 -> ss3 -> ss2 -> persons
        status, h, body = await exchange()
        assert status == 200, body
        assert re.fullmatch(r"DEV-[0-9a-f-]{36}", h["X-Road-Id"])
        assert (h["X-Road-Client"], h["X-Road-Service"]) == (CLIENT, SERVICE)
        assert h["X-Road-Request-Id"] and h["X-Road-Request-Hash"]
        assert len(body["items"]) == 2
        (first,) = (r for r in await ss3_admin.newest_request_records() if r["message_id"] == h["X-Road-Id"])
        old_sign = issued["sign"][2]
        assert _cert_sha256(first) == old_sign

        # (5) renew ss3's signing certificate while requests flow: none may fail
        stop = asyncio.Event()
        results: list[tuple[int, Any]] = []

        async def traffic() -> None:
            while not stop.is_set():
                status, _, body = await exchange()
                results.append((status, body))

        workers = [asyncio.create_task(traffic()) for _ in range(2)]
        try:
            key_id = _match(r"generated \S+ key ([0-9a-f]{64})",
                            await gw(*s3, "token", "generate-key", "--usage", "sign", "--label", "renewed"))[1]
            await gw(*s3, "token", "csr", key_id, "--name", "Agency C", "--out", str(d / "sign2.csr"))
            new_sign = _match(r"sha256 ([0-9a-f]{64})", await gw(
                "pki", "issue", "--dir", ca_dir, "--kind", "sign", "--csr", str(d / "sign2.csr"), "--identity", MEMBER,
                "--out", str(d / "sign2.pem")))[1]
            await gw(*s3, "token", "import-cert", str(d / "sign2.pem"))
            await gw(*s3, "token", "activate", new_sign[:16])

            async def signs_with_new() -> bool:
                records = await ss3_admin.newest_request_records()
                return bool(records) and _cert_sha256(records[-1]) == new_sign

            await wait_until("ss3 to sign with the renewed certificate", signs_with_new)
            assert f"sign certificate {old_sign} is inactive" in await gw(*s3, "token", "deactivate", old_sign[:16])
            after = len(results)

            async def more_after_retiring() -> bool:
                return len(results) >= after + 10

            await wait_until("more exchanges after the old certificate was retired", more_after_retiring)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        failures = [(s, b) for s, b in results if s != 200]
        assert not failures, failures[:3]
        assert len(results) >= 10
        records = await ss3_admin.newest_request_records(50)
        assert {_cert_sha256(r) for r in records[-5:]} == {new_sign}
        token_keys = {r["sha256"]: r for r in json.loads(await gw(*s3, "token", "keys", "--json"))}
        assert (token_keys[new_sign]["state"], token_keys[new_sign]["in_use"]) == ("active", True)
        assert (token_keys[old_sign]["state"], token_keys[old_sign]["in_use"]) == ("inactive", False)

        # (6) revoke ss3's authentication certificate at the CA: ss2 refuses ss3 once its cached OCSP
        # answer is older than ocsp_refresh_seconds
        serial = issued["auth"][1]
        assert "revoked" in await gw("pki", "revoke", "--dir", ca_dir, serial, "--reason", "keyCompromise")

        async def refused() -> tuple[int, dict[str, Any], Any] | None:
            answer = await exchange()
            return None if answer[0] == 200 else answer

        status, h, body = await wait_until("ss2 to refuse ss3's revoked certificate", refused)
        assert status == 500, body
        assert body["type"] == "Server.ServerProxy.SslAuthenticationFailed", body
        assert h["X-Road-Error"] == body["type"]
        assert "revoked" in body["message"], body
        status, _, again = await exchange()  # and the next one too
        assert (status, again["type"]) == (500, "Server.ServerProxy.SslAuthenticationFailed")
        # logged: ss3 with the detail id it answered, ss2 (in the demo process) with the reason
        assert any(e.get("event") == "request refused" and e.get("detail") == body["detail"]
                   and e.get("type") == body["type"] for e in ss3.log_entries()), ss3.log_path.read_text()[-2000:]
        assert any(e.get("event") == "request refused" and e.get("type") == body["type"]
                   and "revoked" in e.get("error", "") and SERVER in e.get("error", "")
                   for e in demo.log_entries()), demo.log_path.read_text()[-2000:]

        # stop everything: ss3 first, then the federation
        await ss3.stop()
        assert (await demo.stop()).endswith("stopping...\nstopped.\n")
    finally:
        await ss3.kill()
        await demo.kill()
    for p in (demo, ss3):
        assert "Traceback" not in p.log_path.read_text(), p.log_path.read_text()[-3000:]


@pytest.mark.parametrize(("arg", "message"), [
    ("ocsp_refresh_seconds", "--set 'ocsp_refresh_seconds': expected KEY=VALUE"),
    ("no_such_key=1", "--set 'no_such_key=1': key 'no_such_key' is not a known setting"),
    ("ocsp_refresh_seconds=soon", "--set 'ocsp_refresh_seconds=soon': key 'ocsp_refresh_seconds': expected a number"),
    ("server_port=5500", "--set server_port: the demo sets [server] server_port itself"),
])
def test_demo_refuses_a_bad_server_setting(tmp_path: Path, arg: str, message: str) -> None:
    res = subprocess.run(
        [str(GATEWAY), "demo", "--dir", str(tmp_path / "demo"), "--set", arg], cwd=tmp_path, env=_env(),
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
    )
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert not (tmp_path / "demo").exists() and not (tmp_path / "federation.json").exists()


@pytest.mark.parametrize(("case", "rc", "message"), [
    ("no anchor", 2, "anchor file {dir}/anchor.json cannot be read"),
    ("central down", 1, "no global configuration could be downloaded and verified against the anchor "
                        "{dir}/anchor.json: download of http://127.0.0.1:{port}/globalconf failed"),
])
def test_fetch_conf_refuses_without_a_verified_configuration(tmp_path: Path, case: str, rc: int, message: str) -> None:
    import socket

    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        settings = tmp_path / "s.toml"
        settings.write_text("\n".join([
            "[central]", f'database_url = "sqlite+aiosqlite:///{tmp_path / "c.db"}"',
            f'key_dir = "{tmp_path / "keys"}"', f'public_url = "http://127.0.0.1:{port}"',
            "[globalconf]", f'anchor = "{tmp_path / "anchor.json"}"', f'cache_dir = "{tmp_path / "gc"}"', "",
        ]))

        def gateway(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(GATEWAY), "-c", str(settings), *args], env=_env(), capture_output=True,
                                  text=True, timeout=COMMAND_TIMEOUT, check=False)

        if case == "central down":  # a real anchor whose download URL answers nothing
            for args in (("central", "init"), ("central", "anchor", "--out", str(tmp_path / "anchor.json"))):
                assert gateway(*args).returncode == 0
        res = gateway("server", "fetch-conf")
    assert res.returncode == rc, res.stderr
    assert message.format(dir=tmp_path, port=port) in res.stderr
    assert not (tmp_path / "gc" / "globalconf.json").exists()
