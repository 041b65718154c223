"""Metaservices through a real federation (PR-MREST): ``listClients`` answered by the client's own security
server from the global configuration; ``listMethods``, ``allowedMethods`` and ``getOpenAPI`` answered by the
provider's security server, travelling signed and logged like any other service call.
"""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from multidict import CIMultiDict

from gateway.dev.demo import Federation, start_federation
from gateway.identifiers import SubsystemId
from gateway.messagelog.record import LogRecord
from gateway.server.runtime import SecurityServer
from gateway.serverconf.access import AccessRule, Endpoint

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CONSUMER = SubsystemId.parse("DEV/GOV/1001/consumer")
REGISTRY = SubsystemId.parse("DEV/GOV/1002/registry")
PERSONS = REGISTRY.service("persons")
COMPANIES = REGISTRY.service("companies")
SECRET = REGISTRY.service("secret")  # provided, never granted to the consumer
PARTIAL = REGISTRY.service("partial")  # granted for one endpoint only
IDS_NS = "http://x-road.eu/xsd/identifiers"
XROAD_NS = "http://x-road.eu/xsd/xroad.xsd"


@dataclass
class Env:
    fed: Federation

    @property
    def ss1(self) -> SecurityServer:
        return self.fed.server("ss1")

    @property
    def ss2(self) -> SecurityServer:
        return self.fed.server("ss2")

    @property
    def persons_url(self) -> str:
        assert self.fed.adapters is not None
        return self.fed.adapters.urls["persons"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    fed = await start_federation(tmp_path_factory.mktemp("meta"))
    try:
        e = Env(fed=fed)
        store = e.ss2.store
        await store.add_service(SECRET, url=e.persons_url, openapi_url=f"{e.persons_url}/openapi.json")
        await store.add_service(PARTIAL, url=e.persons_url, endpoints_=(
            Endpoint(method="GET", path="/v1/a/*"), Endpoint(method="POST", path="/v1/a"),
        ))
        await store.grant(AccessRule(subject=CONSUMER, service=PARTIAL, endpoint=Endpoint(method="GET",
                                                                                         path="/v1/a/*")))
        await e.ss2.reload_serverconf()
        yield e
    finally:
        await fed.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def call(env: Env, target: str, *, accept: str | None = "application/json", method: str = "GET",
               message_id: str | None = None) -> Reply:
    headers = {"X-Road-Client": str(CONSUMER)}
    if accept is not None:
        headers["Accept"] = accept
    if message_id is not None:
        headers["X-Road-Id"] = message_id
    async with aiohttp.ClientSession() as http, http.request(
        method, env.ss1.client_url + target, headers=headers, skip_auto_headers=("Accept",),
    ) as resp:
        return Reply(status=resp.status, headers=CIMultiDict(resp.headers), body=await resp.read())


async def records(ss: SecurityServer, message_id: str) -> list[LogRecord]:
    stored = await ss.messagelog.read(str(ss.server_id), start=0, limit=10_000)
    return [r for r in (s.decode() for s in stored) if r.message_id == message_id]


async def log_sizes(env: Env) -> tuple[int, int]:
    return (await env.ss1.messagelog.size(str(env.ss1.server_id)),
            await env.ss2.messagelog.size(str(env.ss2.server_id)))


async def check_logged(env: Env, reply: Reply, message_id: str, service_code: str) -> None:
    """The metaservice call is in both logs: request and signed response, with the body we got."""
    assert reply.headers["X-Road-Id"] == message_id
    assert reply.headers["X-Road-Service"] == str(REGISTRY.service(service_code))
    for ss in (env.ss1, env.ss2):
        recs = await records(ss, message_id)
        assert [(r.kind, r.status) for r in recs] == [("request", None), ("response", reply.status)]
        assert {(r.client, r.service, r.request_id) for r in recs} == {
            (CONSUMER, REGISTRY.service(service_code), reply.headers["X-Road-Request-Id"])
        }
        assert recs[1].body == reply.body


def new_id() -> str:
    return f"meta-{uuid.uuid4()}"


# ------------------------------------------------------------------------------------------ listClients

EXPECTED_CLIENTS = [
    {"id": {"member_class": "GOV", "member_code": "1001", "object_type": "MEMBER", "xroad_instance": "DEV"},
     "name": "Agency A"},
    {"id": {"member_class": "GOV", "member_code": "1001", "subsystem_code": "consumer", "object_type": "SUBSYSTEM",
            "xroad_instance": "DEV"}, "name": "Agency A"},
    {"id": {"member_class": "GOV", "member_code": "1002", "object_type": "MEMBER", "xroad_instance": "DEV"},
     "name": "Agency B"},
    {"id": {"member_class": "GOV", "member_code": "1002", "subsystem_code": "registry", "object_type": "SUBSYSTEM",
            "xroad_instance": "DEV"}, "name": "Agency B"},
]


@pytest.mark.parametrize("query", ["", "?xRoadInstance=DEV"])
async def test_list_clients_as_json(env: Env, query: str) -> None:
    before = await log_sizes(env)

    reply = await call(env, "/listClients" + query)

    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json;charset=utf-8"
    members = reply.json()["member"]
    key = json.dumps  # order-independent comparison of the entries
    assert sorted(map(key, members)) == sorted(map(key, EXPECTED_CLIENTS))
    assert await log_sizes(env) == before  # answered locally from the global configuration, not an exchange


@pytest.mark.parametrize("accept", [None, "text/xml", "application/xml", "*/*"])
async def test_list_clients_as_xml_otherwise(env: Env, accept: str | None) -> None:
    reply = await call(env, "/listClients", accept=accept)

    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/xml;charset=utf-8"
    root = ET.fromstring(reply.body)  # noqa: S314 - our own server's answer, no entities
    assert root.tag == f"{{{XROAD_NS}}}clientList"
    found = []
    for member in root.findall(f"{{{XROAD_NS}}}member"):
        ident = member.find(f"{{{XROAD_NS}}}id")
        assert ident is not None
        parts = {child.tag.split("}")[1]: child.text for child in ident}
        found.append((ident.get(f"{{{IDS_NS}}}objectType"), parts, member.findtext(f"{{{XROAD_NS}}}name")))
    assert sorted(found, key=repr) == sorted([
        ("MEMBER", {"xRoadInstance": "DEV", "memberClass": "GOV", "memberCode": "1001"}, "Agency A"),
        ("SUBSYSTEM", {"xRoadInstance": "DEV", "memberClass": "GOV", "memberCode": "1001",
                       "subsystemCode": "consumer"}, "Agency A"),
        ("MEMBER", {"xRoadInstance": "DEV", "memberClass": "GOV", "memberCode": "1002"}, "Agency B"),
        ("SUBSYSTEM", {"xRoadInstance": "DEV", "memberClass": "GOV", "memberCode": "1002",
                       "subsystemCode": "registry"}, "Agency B"),
    ], key=repr)


async def test_list_clients_of_another_instance_is_refused(env: Env) -> None:
    reply = await call(env, "/listClients?xRoadInstance=OTHER")

    assert reply.status == 400
    assert reply.headers["X-Road-Error"] == "Client.InvalidRequest"
    assert reply.json()["message"] == "unknown X-Road instance 'OTHER'"


# ------------------------------------------------------------------------------------------ listMethods


def service_entry(code: str, service_type: str, endpoints: list[dict[str, str]]) -> dict[str, Any]:
    return {"member_class": "GOV", "member_code": "1002", "object_type": "SERVICE", "service_code": code,
            "service_type": service_type, "subsystem_code": "registry", "xroad_instance": "DEV",
            "endpoint_list": endpoints}


async def test_list_methods_lists_every_service_of_the_provider(env: Env) -> None:
    message_id = new_id()

    reply = await call(env, f"/r1/{REGISTRY}/listMethods", message_id=message_id)

    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/json;charset=utf-8"
    assert reply.json() == {"service": [
        service_entry("companies", "OPENAPI", []),
        service_entry("getPerson", "WSDL", []),
        service_entry("partial", "REST", [{"method": "GET", "path": "/v1/a/*"},
                                          {"method": "POST", "path": "/v1/a"}]),
        service_entry("persons", "OPENAPI", []),
        service_entry("secret", "OPENAPI", []),
    ]}
    await check_logged(env, reply, message_id, "listMethods")


async def test_allowed_methods_lists_what_the_client_may_call(env: Env) -> None:
    message_id = new_id()

    reply = await call(env, f"/r1/{REGISTRY}/allowedMethods", message_id=message_id)

    assert reply.status == 200, reply.body
    assert reply.json() == {"service": [
        service_entry("companies", "OPENAPI", [{"method": "*", "path": "**"}]),
        service_entry("getPerson", "WSDL", [{"method": "*", "path": "**"}]),
        service_entry("partial", "REST", [{"method": "GET", "path": "/v1/a/*"}]),
        service_entry("persons", "OPENAPI", [{"method": "*", "path": "**"}]),
    ]}
    await check_logged(env, reply, message_id, "allowedMethods")


async def test_allowed_methods_follows_a_revoked_right(env: Env) -> None:
    rule = AccessRule(subject=CONSUMER, service=COMPANIES)
    await env.ss2.store.revoke(rule)
    await env.ss2.reload_serverconf()
    try:
        message_id = new_id()
        reply = await call(env, f"/r1/{REGISTRY}/allowedMethods", message_id=message_id)
        assert reply.status == 200
        assert [s["service_code"] for s in reply.json()["service"]] == ["getPerson", "partial", "persons"]
        await check_logged(env, reply, message_id, "allowedMethods")
        # and the service itself is refused now
        denied = await call(env, f"/r1/{COMPANIES}/")
        assert denied.status == 500
        assert denied.headers["X-Road-Error"] == "Server.ServerProxy.AccessDenied"
    finally:
        await env.ss2.store.grant(rule)
        await env.ss2.reload_serverconf()
    reply = await call(env, f"/r1/{REGISTRY}/allowedMethods")
    assert [s["service_code"] for s in reply.json()["service"]] == ["companies", "getPerson", "partial", "persons"]


# ------------------------------------------------------------------------------------------ getOpenAPI


async def test_get_openapi_returns_the_adapters_description(env: Env) -> None:
    message_id = new_id()
    async with aiohttp.ClientSession() as http, http.get(f"{env.persons_url}/openapi.json") as direct:
        assert direct.status == 200
        expected = await direct.read()

    reply = await call(env, f"/r1/{REGISTRY}/getOpenAPI?serviceCode=persons", message_id=message_id)

    assert reply.status == 200, reply.body
    assert reply.body == expected
    doc = reply.json()
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] == "Population register"
    await check_logged(env, reply, message_id, "getOpenAPI")


@pytest.mark.parametrize(
    ("case", "target", "method", "status", "xroad_type", "message"),
    [
        ("not-allowed", "getOpenAPI?serviceCode=secret", "GET", 500, "Server.ServerProxy.AccessDenied",
         f"client SUBSYSTEM:{CONSUMER} may not call service {SECRET}"),
        ("unknown-service", "getOpenAPI?serviceCode=nosuch", "GET", 500, "Server.ServerProxy.UnknownService",
         f"service {REGISTRY.service('nosuch')} is not provided by this security server"),
        ("no-description", "getOpenAPI?serviceCode=partial", "GET", 500, "Server.ServerProxy.ServiceMissingUrl",
         f"service {PARTIAL} has no OpenAPI description"),
        ("no-service-code", "getOpenAPI", "GET", 400, "Client.BadRequest",
         "getOpenAPI needs exactly one serviceCode query parameter"),
        ("two-service-codes", "getOpenAPI?serviceCode=persons&serviceCode=companies", "GET", 400,
         "Client.BadRequest", "getOpenAPI needs exactly one serviceCode query parameter"),
        ("post", "listMethods", "POST", 400, "Client.BadRequest", "metaservice listMethods answers GET only"),
    ],
)
async def test_metaservice_refusals_are_signed_and_logged(
    env: Env, case: str, target: str, method: str, status: int, xroad_type: str, message: str,
) -> None:
    message_id = new_id()

    reply = await call(env, f"/r1/{REGISTRY}/{target}", method=method, message_id=message_id)

    assert reply.status == status, reply.body
    assert reply.headers["X-Road-Error"] == xroad_type
    err = reply.json()
    assert (err["type"], err["message"]) == (xroad_type, message)
    await check_logged(env, reply, message_id, target.split("?")[0])
