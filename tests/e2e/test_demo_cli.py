"""``gateway demo`` as a real process: it starts a whole federation, writes ``federation.json`` (the contract of
``docs/demo.md``), answers the request its banner prints, and stops cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from ops_kit import samples, total
from waiting import wait_for_condition

pytestmark = pytest.mark.e2e

GATEWAY = Path(sys.executable).parent / "gateway"
START_TIMEOUT = 60  # seconds until the banner; about two on an idle machine
STOP_TIMEOUT = 30  # seconds from SIGINT to exit


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[str]:
    while line := await stream.readline():
        yield line.decode()


async def _read_banner(stream: asyncio.StreamReader) -> list[str]:
    """stdout up to the banner's request line. The banner is printed after federation.json is in place, so
    reading it is how the test waits for the file, without polling."""
    out = []
    async for line in _lines(stream):
        out.append(line)
        if "/r1/" in line:
            return out
    raise AssertionError(f"gateway demo closed stdout before its banner: {''.join(out)!r}")


def _curl(banner: list[str]) -> tuple[dict[str, str], str]:
    """The headers and URL of the printed curl command."""
    text = "".join(banner)
    command = text[text.index("curl "):].replace("\\\n", " ")
    words = shlex.split(command)
    headers = dict(w.split(": ", 1) for prev, w in itertools.pairwise(words) if prev == "-H")
    (url,) = [w for w in words if w.startswith("http://")]
    return headers, url


async def test_demo_runs_writes_its_description_answers_and_stops_on_sigint(tmp_path: Path) -> None:
    stderr = (tmp_path / "stderr.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        str(GATEWAY), "demo", cwd=tmp_path, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=stderr,
    )
    assert proc.stdout is not None
    try:
        banner = await asyncio.wait_for(_read_banner(proc.stdout), START_TIMEOUT)
        assert banner[0] == "Federation DEV is running (Ctrl-C stops it).\n"

        # (1) federation.json in the working directory, with the documented keys
        desc = json.loads((tmp_path / "federation.json").read_text())
        assert desc["instance"] == "DEV"
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", desc["central"]["url"])
        assert desc["central"]["globalconf_url"] == desc["central"]["url"] + "/globalconf"
        assert Path(desc["anchor"]).is_file() and Path(desc["anchor"]).is_absolute()
        assert Path(desc["anchor"]).is_relative_to(tmp_path / "demo")
        assert Path(desc["pki"]["ca_cert"]).is_file()
        assert [m["id"] for m in desc["members"]] == ["DEV/GOV/1001", "DEV/GOV/1002"]
        servers = {s["id"]: s for s in desc["servers"]}
        assert set(servers) == {"DEV/GOV/1001/ss1", "DEV/GOV/1002/ss2"}
        for s in servers.values():
            assert set(s) >= {"id", "client_url", "client_https_url", "server_address", "admin_url", "clients",
                              "services", "database_url", "state_dir", "settings"}
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", s["client_url"])
            assert re.fullmatch(r"https://127\.0\.0\.1:\d+", s["client_https_url"])
            assert re.fullmatch(r"127\.0\.0\.1:\d+", s["server_address"])
            assert s["admin_url"] is None or s["admin_url"].startswith("http")
            assert Path(s["state_dir"], "internal.pem").is_file()
            assert Path(s["settings"]).is_file()
        ss1, ss2 = servers["DEV/GOV/1001/ss1"], servers["DEV/GOV/1002/ss2"]
        assert (ss1["clients"], ss1["services"]) == (["DEV/GOV/1001/consumer", "DEV/GOV/1001/portal"], [])
        assert desc["portal"]["client"] == "DEV/GOV/1001/portal"  # the citizen portal, docs/portal.md
        assert ss2["clients"] == ["DEV/GOV/1002/registry"]
        assert sorted(ss2["services"]) == ["DEV/GOV/1002/registry/companies", "DEV/GOV/1002/registry/getPerson",
                                           "DEV/GOV/1002/registry/persons"]
        assert set(desc["adapters"]) == set(ss2["services"])

        async with aiohttp.ClientSession() as http:
            # (2) the parts answer at the URLs given
            async with http.get(desc["central"]["globalconf_url"]) as resp:
                assert resp.status == 200
            # the central admin API, with the credentials the demo wrote (mode 0600)
            creds_path = Path(desc["admin_credentials"])
            assert creds_path.stat().st_mode & 0o777 == 0o600
            central = json.loads(creds_path.read_text())["central"]
            assert central["admin_url"] == desc["central"]["admin_url"]
            async with http.post(central["admin_url"] + "/api/v1/login",
                                 json={"username": central["username"], "password": central["password"]}) as resp:
                assert resp.status == 200
                token = (await resp.json())["token"]
            async with http.get(central["admin_url"] + "/api/v1/members",
                                headers={"Authorization": f"Bearer {token}"}) as resp:
                assert [m["id"] for m in (await resp.json())["items"]] == ["DEV/GOV/1001", "DEV/GOV/1002"]
            # ... and its web interface, which the banner names
            assert f"  central web      {central['admin_url']}/ui/\n" in banner
            async with http.get(central["admin_url"] + "/ui/login") as resp:
                assert resp.status == 200 and "<title>Log in · central server</title>" in await resp.text()
            async with http.get(desc["portal"]["url"] + "/") as resp:
                assert resp.status == 200 and "Sign in" in await resp.text()
            async with http.get(desc["portal"]["issuer"] + "/.well-known/openid-configuration") as resp:
                assert (await resp.json())["issuer"] == desc["portal"]["issuer"]
            for service, url in desc["adapters"].items():
                soap = service.endswith("/getPerson")  # the SOAP service: a WSDL, not an OpenAPI document
                async with http.get(f"{url}?wsdl" if soap else f"{url}/openapi.json") as resp:
                    assert resp.status == 200
                    assert (b"wsdl:definitions" in await resp.read()) == soap
            # (3) the request the banner suggests works through ss1's client URL
            headers, url = _curl(banner)
            assert headers == {"X-Road-Client": "DEV/GOV/1001/consumer", "Accept": "application/json"}
            assert url.startswith(ss1["client_url"] + "/r1/DEV/GOV/1002/registry/")
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                assert re.fullmatch(r"DEV-[0-9a-f-]{36}", resp.headers["X-Road-Id"])
                assert resp.headers["X-Road-Client"] == "DEV/GOV/1001/consumer"
                assert len((await resp.json())["items"]) == 2
            # ... and is counted on both servers' metrics; each part reports ready (docs/operations.md section 8)
            for part, side in ((ss1, "client"), (ss2, "server")):
                assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", part["metrics_url"])
                async with http.get(part["metrics_url"]) as resp:
                    assert resp.status == 200
                    found = samples(await resp.text())
                assert total(found, "gateway_exchanges_total", side=side, client="DEV/GOV/1001/consumer",
                             outcome="ok") == 1
            for url in (ss1["readiness_url"], ss2["readiness_url"], desc["central"]["readiness_url"]):
                await wait_for_condition(lambda url=url: _ready(http, url), timeout=START_TIMEOUT,
                                         what=f"{url} answers 200")
            async with http.get(desc["central"]["metrics_url"]) as resp:
                assert resp.status == 200 and "gateway_central_globalconf_version" in await resp.text()

            # (4) Ctrl-C: a clean exit 0, sockets closed
            proc.send_signal(signal.SIGINT)
            rest = "".join([line async for line in _lines(proc.stdout)])
            rc = await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            assert rc == 0, (tmp_path / "stderr.log").read_text()[-3000:]
            assert rest.endswith("stopping...\nstopped.\n")
            with pytest.raises(aiohttp.ClientConnectionError):
                async with http.get(ss1["client_url"] + "/healthz"):
                    pass
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stderr.close()
    assert "Traceback" not in (tmp_path / "stderr.log").read_text()


async def _ready(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(url) as resp:
        return resp.status == 200 and (await resp.json())["status"] == "ready"


def test_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    workdir = tmp_path / "precious"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("keep me")

    res = subprocess.run(
        [str(GATEWAY), "demo", "--dir", str(workdir)], cwd=tmp_path, env=_env(), capture_output=True, text=True,
        timeout=START_TIMEOUT, check=False,
    )

    assert res.returncode == 2
    assert f"{workdir} is not empty and was not made by 'gateway demo'" in res.stderr
    assert "choose another directory with --dir" in res.stderr
    assert (workdir / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "federation.json").exists()
