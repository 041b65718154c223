"""``gateway central ...`` in real subprocesses: the operator's path from an empty database to a verified
configuration, and the exit codes of bad settings and bad input."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from gateway.central import publisher
from gateway.globalconf.anchor import Anchor
from gateway.globalconf.trust import TrustedGlobalConf
from gateway.storage.db import make_engine

pytestmark = pytest.mark.e2e

CLI = ["-c", "import sys; from gateway.cli import main; sys.exit(main())"]
TIMEOUT = 60  # seconds for one CLI call; they take about two


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}


def gateway(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *CLI, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT,
        check=False,
    )


def ok(*args: str, cwd: Path) -> str:
    res = gateway(*args, cwd=cwd)
    assert res.returncode == 0, f"gateway {' '.join(args)} exited {res.returncode}:\n{res.stderr}"
    return res.stdout


def write_settings(path: Path, database_url: str, **extra: str) -> Path:
    lines = ["[central]", f'database_url = "{database_url}"', f'key_dir = "{path.parent / "keys"}"']
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def openssl_cert(directory: Path, name: str) -> tuple[Path, str]:
    """A self-signed P-256 certificate made by the openssl binary, and its SHA-256 fingerprint per openssl."""
    cert = directory / f"{name}.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(directory / f"{name}.key"), "-out", str(cert), "-subj", f"/CN={name}", "-days", "2"],
        check=True, capture_output=True, timeout=TIMEOUT,
    )
    out = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
        check=True, capture_output=True, text=True, timeout=TIMEOUT,
    ).stdout
    return cert, out.strip().split("=", 1)[1].replace(":", "").lower()


async def test_operator_flow(tmp_path: Path, database_url: str) -> None:
    conf = write_settings(tmp_path / "central.toml", database_url, public_url="http://central.test:4000")
    c = ["-c", str(conf), "central"]

    out = ok(*c, "init", cwd=tmp_path)
    assert re.search(r"^created configuration-signing key 1: [0-9a-f]{64}$", out, re.M), out
    out = ok(*c, "member", "add", "DEV/GOV/1001", "--name", "Agency A", cwd=tmp_path)
    assert out == "member DEV/GOV/1001 added\n"
    assert ok(*c, "server", "add", "DEV/GOV/1001/ss1", "--address", "127.0.0.1:5501", cwd=tmp_path) == (
        "security server DEV/GOV/1001/ss1 added at 127.0.0.1:5501\n"
    )
    cert, fingerprint = openssl_cert(tmp_path, "ss1-auth")
    assert ok(*c, "server", "add-cert", "DEV/GOV/1001/ss1", "--cert", str(cert), cwd=tmp_path) == (
        f"authentication certificate {fingerprint} registered for DEV/GOV/1001/ss1\n"
    )
    out = ok(*c, "publish", cwd=tmp_path)
    assert out.startswith("published version 1 (sha256 ")
    anchor_file = tmp_path / "anchor.json"
    out = ok(*c, "anchor", "--out", str(anchor_file), cwd=tmp_path)
    assert out == hashlib.sha256(anchor_file.read_bytes()).hexdigest() + "\n"
    shown = json.loads(ok(*c, "show", cwd=tmp_path))
    assert (shown["version"], shown["central"]) == (1, {"url": "http://central.test:4000"})

    # what a security server with this anchor makes of the stored publication
    anchor = Anchor.from_file(anchor_file)
    assert anchor.download_urls == ("http://central.test:4000/globalconf",)
    engine = make_engine(database_url)
    try:
        data = await publisher.latest(engine)
    finally:
        await engine.dispose()
    assert data is not None
    now = datetime.now(UTC)
    gc = TrustedGlobalConf(anchor, now=now).update(data, now=now)
    assert [str(m.id) for m in gc.members] == ["DEV/GOV/1001"]
    (server,) = gc.security_servers
    assert (str(server.id), server.address, server.auth_certs) == (
        "DEV/GOV/1001/ss1", "127.0.0.1:5501", frozenset({fingerprint})
    )
    assert json.loads(data)["signed"] == shown


def test_unknown_setting_exits_2(tmp_path: Path) -> None:
    conf = tmp_path / "central.toml"
    conf.write_text('[central]\ninstance = "DEV"\ndatabse_url = "sqlite+aiosqlite:///x.db"\n')
    res = gateway("-c", str(conf), "central", "member", "list", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stdout == ""
    first = res.stderr.splitlines()[0]
    assert first == (
        f"gateway: error: configuration error: {conf} [central]: key 'databse_url' is not a known setting"
    )
    assert "database_url" in res.stderr.splitlines()[1]  # the hint lists the known keys


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://db/central", "database URL 'mysql://db/central' uses driver 'mysql'"),
        ("not a url", "database URL 'not a url' is malformed: "),
    ],
    ids=["unsupported driver", "malformed"],
)
def test_bad_database_url_exits_2(tmp_path: Path, url: str, message: str) -> None:
    conf = write_settings(tmp_path / "central.toml", url)
    res = gateway("-c", str(conf), "central", "init", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith(
        "gateway: error: configuration error: "
        f"settings file {conf}: [central] key 'database_url': {message}"
    )


def test_uninitialised_database_exits_2(tmp_path: Path) -> None:
    conf = write_settings(tmp_path / "central.toml", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    res = gateway("-c", str(conf), "central", "member", "list", cwd=tmp_path)
    assert res.returncode == 2
    assert "is not initialised for the central server (schema revision none, expected 0004)" in res.stderr
    assert "hint: run `gateway central init`" in res.stderr


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A settings file and an initialised SQLite database, shared by the bad-input table (which changes
    nothing)."""
    directory = tmp_path_factory.mktemp("central")
    conf = write_settings(directory / "central.toml", f"sqlite+aiosqlite:///{directory / 'central.db'}")
    ok("-c", str(conf), "central", "init", cwd=directory)
    return directory, conf


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["member", "add", "DEV/GOV", "--name", "X"],
         "Client.InvalidClientIdentifier: member identifier 'DEV/GOV' has 2 parts; expected 3 "
         "(INSTANCE/MEMBER_CLASS/MEMBER_CODE) (fault of the request)"),
        (["member", "add", "DEV/GOV/10 01", "--name", "X"],
         "Client.InvalidClientIdentifier: member identifier part member_code '10 01' contains a forbidden "
         "character ' ' (fault of the request)\n"
         "  hint: allowed characters are A-Z a-z 0-9 ' ( ) + , - . = ?"),
        (["server", "add", "DEV/GOV/1001", "--address", "h:1"],
         "Client.InvalidClientIdentifier: security server identifier 'DEV/GOV/1001' has 3 parts; expected 4 "
         "(INSTANCE/MEMBER_CLASS/MEMBER_CODE/SERVER_CODE) (fault of the request)"),
        (["member", "add", "EE/GOV/1001", "--name", "X"],
         "Client.InvalidClientIdentifier: member EE/GOV/1001 belongs to instance 'EE'; this central server "
         "serves instance 'DEV' (fault of the request)"),
        (["subsystem", "add", "DEV/GOV/1001/x"],
         "Client.NotFound: member DEV/GOV/1001 is not registered (fault of the request)\n"
         "  hint: add it with `gateway central member add`"),
    ],
    ids=["too few parts", "space", "member as server", "other instance", "unknown member"],
)
def test_bad_input_exits_1(initialised: tuple[Path, Path], args: list[str], message: str) -> None:
    directory, conf = initialised
    res = gateway("-c", str(conf), "central", *args, cwd=directory)
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr == f"gateway: error: {message}\n"


async def test_serve(tmp_path: Path) -> None:
    conf = write_settings(tmp_path / "central.toml", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *CLI, "-c", str(conf), "central", "serve", "--port", "0", cwd=tmp_path, env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        url = ""
        while not url:
            line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()
            assert line, "serve exited before listening"
            if line.startswith("central server listening on "):
                url = line.split()[-1]
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/anchor") as resp:
                anchor = Anchor.from_bytes(await resp.read())
            async with http.get(anchor.download_urls[0]) as resp:
                data = await resp.read()
        now = datetime.now(UTC)
        assert TrustedGlobalConf(anchor, now=now).update(data, now=now).central_url == url
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 0


async def test_admin_api_served_with_users_from_the_cli_and_cli_changes_audited(tmp_path: Path) -> None:
    conf = write_settings(tmp_path / "central.toml", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    c = ["-c", str(conf), "central"]
    ok(*c, "init", cwd=tmp_path)
    # (1) the first administrator comes from the CLI (the central server has no service administrator)
    env = {**_env(), "ROOT_PASSWORD": "correct horse battery staple"}
    res = subprocess.run([sys.executable, *CLI, "-c", str(conf), "admin", "--central", "user", "add", "root",
                          "--role", "system-administrator", "--password-env", "ROOT_PASSWORD"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert res.returncode == 0, res.stderr
    refused = gateway("-c", str(conf), "admin", "--central", "user", "add", "eve", "--role", "service-administrator",
                      "--generate-password", cwd=tmp_path)
    assert refused.returncode == 1 and "the central server has no role service-administrator" in refused.stderr
    # (2) registry changes made with the CLI are audited, refusals too; reads are not
    ok(*c, "member", "add", "DEV/GOV/1001", "--name", "Agency A", cwd=tmp_path)
    assert gateway(*c, "member", "add", "DEV/GOV/1001", "--name", "Agency A", cwd=tmp_path).returncode == 1
    ok(*c, "member", "list", cwd=tmp_path)
    added = ok(*c, "keys", "add", "--inactive", cwd=tmp_path)
    keyid = re.search(r"^created configuration-signing key 2: ([0-9a-f]{64}) ", added, re.M)
    assert keyid is not None and "does not sign" in added, added
    assert "\t".join([keyid.group(1), "inactive"]) in ok(*c, "keys", "list", cwd=tmp_path)
    assert "signs from the next publication on" in ok(*c, "keys", "activate", keyid.group(1)[:10], cwd=tmp_path)
    # (3) serve with the admin API on a free port; log in and read the audit log
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *CLI, "-c", str(conf), "central", "serve", "--port", "0", "--admin-port", "0", cwd=tmp_path,
        env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        admin_url = ""
        while not admin_url:
            line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()
            assert line, "serve exited before listening"
            if line.startswith("central admin API listening on "):
                admin_url = line.split()[-1]
        async with aiohttp.ClientSession() as http:
            async with http.post(admin_url + "/api/v1/login",
                                 json={"username": "root", "password": "correct horse battery staple"}) as resp:
                assert resp.status == 200
                token = (await resp.json())["token"]
            async with http.get(admin_url + "/api/v1/audit-log", params={"action": "member add"},
                                headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200
                entries = (await resp.json())["items"]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 0
    assert [(e["result"], e["status"], e["auth"], e["path"]) for e in entries] == [
        ("refused", 409, "cli", "gateway central member add"), ("success", 200, "cli", "gateway central member add")]
    assert entries[0]["actor"].startswith("cli:") and entries[0]["details"]["target"].startswith("DEV/GOV/1001")
