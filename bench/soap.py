"""SOAP beside REST: the same federation, the same load, alternated in one run (a short bench; asserts nothing).

    .venv/bin/python bench/soap.py [--rounds 2] [--duration 5] [--connections 16]

One process runs a demo federation (``start_federation``: central server, ss1, ss2, message logs in SQLite,
signing and logging on) and two constant services, both answered from memory: ``rest1k`` (a 1 KiB JSON body for
``GET /r1/.../rest1k/items``) and ``soap1k`` (a SOAP response of about 1 KiB, its header echoing the request's,
for a ~1 KiB SOAP request ``POST /``). ``bench/loadgen.py`` (its own process) runs a closed loop against ss1's
client port, REST then SOAP each round. Because both security servers and the services share this one process
and its event loop, the figures are lower than bench/exchange.py's (a process per server); what they show is what
SOAP costs beside REST on the same path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

# bench/adapters.py would shadow the adapters package that gateway.dev.demo imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from aiohttp import web  # noqa: E402

from gateway.dev.demo import start_federation  # noqa: E402
from gateway.identifiers import SubsystemId  # noqa: E402
from gateway.protocol import soap  # noqa: E402
from gateway.serverconf.access import AccessRule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONSUMER = SubsystemId.parse("DEV/GOV/1001/consumer")
REGISTRY = SubsystemId.parse("DEV/GOV/1002/registry")
PAD = "x" * 700


def soap_request() -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:p="urn:bench"
    xmlns:xrd="http://x-road.eu/xsd/xroad.xsd" xmlns:id="http://x-road.eu/xsd/identifiers">
  <SOAP-ENV:Header>
    <xrd:client id:objectType="SUBSYSTEM"><id:xRoadInstance>DEV</id:xRoadInstance><id:memberClass>GOV</id:memberClass>
      <id:memberCode>1001</id:memberCode><id:subsystemCode>consumer</id:subsystemCode></xrd:client>
    <xrd:service id:objectType="SERVICE"><id:xRoadInstance>DEV</id:xRoadInstance><id:memberClass>GOV</id:memberClass>
      <id:memberCode>1002</id:memberCode><id:subsystemCode>registry</id:subsystemCode>
      <id:serviceCode>soap1k</id:serviceCode><id:serviceVersion>v1</id:serviceVersion></xrd:service>
    <xrd:id>bench</xrd:id><xrd:userId>EE12345678901</xrd:userId>
    <xrd:protocolVersion>4.0</xrd:protocolVersion>
  </SOAP-ENV:Header>
  <SOAP-ENV:Body><p:soap1k><p:pad>{PAD[:300]}</p:pad></p:soap1k></SOAP-ENV:Body>
</SOAP-ENV:Envelope>""".encode()


async def loadgen(url: str, headers: list[str], duration: float, connections: int, body: Path | None) -> dict:
    args = [
        sys.executable,
        str(ROOT / "bench" / "loadgen.py"),
        "--url",
        url,
        "--mode",
        "closed",
        "--connections",
        str(connections),
        "--duration",
        str(duration),
    ]
    for h in headers:
        args += ["--header", h]
    if body is not None:
        args += ["--body-file", str(body)]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return json.loads(out.decode().strip().splitlines()[-1])


async def main(rounds: int, duration: float, connections: int) -> None:
    request = soap_request()
    soap_answer = soap.render_response(
        soap.parse_message("text/xml", request),
        f'<p:soap1kResponse xmlns:p="urn:bench"><p:pad>{PAD}</p:pad></p:soap1kResponse>',
    )
    rest_answer = json.dumps({"pad": PAD + "x" * (1024 - len(PAD) - 11)}).encode()

    async def rest(_: web.Request) -> web.Response:
        return web.Response(body=rest_answer, content_type="application/json")

    async def soap_service(req: web.Request) -> web.Response:
        await req.read()
        return web.Response(body=soap_answer, content_type="text/xml")

    app = web.Application()
    app.router.add_get("/rest/items", rest)
    app.router.add_post("/soap", soap_service)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory() as tmp:
        body_file = Path(tmp) / "request.xml"
        body_file.write_bytes(request)
        fed = await start_federation(Path(tmp) / "fed", with_adapters=False, adapter_urls={})
        try:
            ss1, ss2 = fed.server("ss1"), fed.server("ss2")
            await ss2.store.add_service(REGISTRY.service("rest1k"), url=f"http://127.0.0.1:{port}/rest")
            await ss2.store.add_service(REGISTRY.service("soap1k"), url=f"http://127.0.0.1:{port}/soap")
            for code in ("rest1k", "soap1k"):
                await ss2.store.grant(AccessRule(subject=CONSUMER, service=REGISTRY.service(code)))
            await ss2.reload_serverconf()
            chains = {
                "rest": (f"{ss1.client_url}/r1/{REGISTRY}/rest1k/items", [f"X-Road-Client:{CONSUMER}"], None),
                "soap": (f"{ss1.client_url}/", ["Content-Type:text/xml; charset=utf-8"], body_file),
            }
            for url, headers, body in chains.values():  # warm-up
                await loadgen(url, headers, 1.0, connections, body)
            rows = []
            for r in range(rounds):
                for name, (url, headers, body) in chains.items():
                    res = await loadgen(url, headers, duration, connections, body)
                    rows.append((r + 1, name, res))
                    print(f"round {r + 1} {name}: {json.dumps(res)}", flush=True)
            print("\n| round | protocol | requests/s | p50 ms | p99 ms | errors |")
            print("|---|---|---|---|---|---|")
            for r, name, res in rows:
                print(
                    f"| {r} | {name} | {res.get('rps', 0):.0f} | {res.get('p50_ms', 0):.2f} | "
                    f"{res.get('p99_ms', 0):.2f} | {res.get('errors', 0)} |"
                )
        finally:
            await fed.close()
            await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    a = parser.parse_args()
    asyncio.run(main(a.rounds, a.duration, a.connections))
