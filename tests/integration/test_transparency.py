"""Transparency through a real federation (docs/transparency.md): the transparency headers, the access and
disclosure records both servers log, ``findUsage``/``usagePeriod``/``heartbeat`` answered to the portal's
subsystem only, each item's evidence verified offline (and a tampered one refused, saying where), embargoes,
and ``gateway log verify`` still passing on an archive that holds usage records.

One module-scoped federation: the consumer (DEV/GOV/1001/consumer on ss1) is the portal's subsystem and
entitled to embargo; the registry (DEV/GOV/1002/registry on ss2) is a client too, entitled to neither.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from gateway.central import registry
from gateway.cli import main
from gateway.dev.demo import Federation, start_federation
from gateway.errors import RequestError
from gateway.globalconf.anchor import Anchor
from gateway.identifiers import ServiceId, SubsystemId
from gateway.messagelog.record import LogRecord
from gateway.server.runtime import SecurityServer
from gateway.serverconf.access import AccessRule
from gateway.transparency.evidence import UsageVerifier, verify_usage_item

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CONSUMER = "DEV/GOV/1001/consumer"
REGISTRY = "DEV/GOV/1002/registry"
PERSONS = f"{REGISTRY}/persons/?limit=1"
ALICE = "EE38001085718"
BOB = "EE49002124277"
CENTRAL = {
    "transparency_purposes": ("TAX=Tax assessment", "POLICE=Criminal investigation"),
    "transparency_portal": CONSUMER,
    "transparency_embargo_clients": (CONSUMER,),
}


@dataclass
class Env:
    fed: Federation
    anchor: Anchor

    @property
    def ss1(self) -> SecurityServer:
        return self.fed.server("ss1")

    @property
    def ss2(self) -> SecurityServer:
        return self.fed.server("ss2")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    fed = await start_federation(tmp_path_factory.mktemp("transparency"), central_overrides=CENTRAL)
    try:
        yield Env(fed=fed, anchor=Anchor.from_file(fed.anchor_path))
    finally:
        await fed.close()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    server: SecurityServer,
    target: str,
    *,
    client: str = CONSUMER,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> Reply:
    h = {"X-Road-Client": client, "X-Road-Id": str(uuid.uuid4()), **(headers or {})}
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        h["Content-Type"] = "application/json"
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method,
            f"{server.client_url}/r1/{target}",
            headers=h,
            data=data,
        ) as resp,
    ):
        return Reply(resp.status, dict(resp.headers), await resp.read())


async def find(
    env: Env, provider: str, subject: str, *, client: str = CONSUMER, via: SecurityServer | None = None, **extra: Any
) -> Reply:
    return await call(
        via or env.ss1,
        f"{provider}/findUsage",
        client=client,
        method="POST",
        body={
            "userCode": subject,
            "periodStart": "2000-01-01T00:00:00Z",
            "periodEnd": "2100-01-01T00:00:00Z",
            "offset": 0,
            "limit": 50,
            **extra,
        },
    )


async def checkpoint(env: Env) -> None:
    for ss in (env.ss1, env.ss2):
        assert ss.checkpointer is not None
        await ss.checkpointer.run_once(ss.clock(), force=True)


async def test_exchange_about_a_subject_is_recorded_on_both_sides_without_the_subject(env: Env) -> None:
    reply = await call(
        env.ss1,
        PERSONS,
        headers={
            "X-Road-Data-Subject": ALICE,
            "X-Road-Purpose": "TAX",
            "X-Road-Purpose-Text": "annual assessment",
            "X-Road-Legal-Basis": "Taxation Act s. 12",
            "X-Road-UserId": "EE-official-7",
        },
    )
    assert reply.status == 200, reply.body
    message_id = reply.headers["X-Road-Id"]
    for ss, side in ((env.ss1, "client"), (env.ss2, "server")):
        assert ss.context is not None
        stored = await ss.messagelog.read(ss.context.origin, limit=10_000)
        mine = [s.decode() for s in stored if s.decode().message_id == message_id]
        assert [r.kind for r in mine] == ["request", "response", "usage"]
        usage = mine[2]
        assert usage.side == side and usage.status == 200 and usage.user_id is None
        assert usage.extensions["usage.purpose"] == "TAX"
        assert usage.extensions["usage.legal-basis"] == "Taxation Act s. 12"
        assert str(usage.extensions["usage.user"]).startswith("hmac-sha256:")
        assert len(usage.extensions["usage.subjects"]) == 1
        # the subject is in no record of the log in clear; the official only in the exchange's own records
        assert all(ALICE.encode() not in s.encoded for s in stored)
        assert b"EE-official-7" not in usage.encode()


async def test_find_usage_answers_the_portal_with_items_proven_offline(env: Env, tmp_path: Path) -> None:
    assert (await call(env.ss1, PERSONS, headers={"X-Road-Data-Subject": ALICE})).status == 200
    ok = await call(env.ss1, PERSONS, headers={"X-Road-Data-Subject": f"{BOB}, {ALICE}", "X-Road-Purpose": "TAX"})
    assert ok.status == 200
    await checkpoint(env)
    reply = await find(env, REGISTRY, ALICE)
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert doc["total"] >= 2 and len(doc["usages"]) == doc["total"]
    first = doc["usages"][0]
    assert first["messageId"] == ok.headers["X-Road-Id"]  # newest first
    assert first["role"] == "disclosure" and first["receiverCode"] == "1001" and first["receiverSystem"] == "consumer"
    assert first["receiverName"] == "Agency A" and first["purpose"] == "TAX" and first["status"] == 200
    assert first["action"] == f"{REGISTRY}/persons GET /"
    assert first["embargoUntil"] is None and first["evidence"]["proof"].startswith("c2sp.org/tlog-proof@v1\n")
    for item in doc["usages"]:
        verdict = verify_usage_item(item, env.anchor)
        assert verdict.proven, verdict.problems
    # the consumer's own access records, from its own server (findUsage of the consumer subsystem)
    access = (await find(env, CONSUMER, ALICE)).json()
    assert {u["role"] for u in access["usages"]} == {"access"}
    assert {u["requestHash"] for u in access["usages"]} == {u["requestHash"] for u in doc["usages"]}
    assert all(verify_usage_item(u, env.anchor).proven for u in access["usages"])
    # neither server keeps a findUsage body (the subject asked about, the salts): digests only
    for ss in (env.ss1, env.ss2):
        assert all(ALICE.encode() not in r.encoded for r in await ss.messagelog.read(ss.context.origin, limit=10_000))
    # Bob's records are his: the first exchange was about Alice only
    assert (await find(env, REGISTRY, BOB)).json()["total"] == 1
    assert (await find(env, REGISTRY, "FI010101A1234")).json() == {"total": 0, "usages": []}
    # the evidence file, offline through the CLI; a tampered copy fails and says where
    good = tmp_path / "evidence.json"
    good.write_text(json.dumps({"subject": ALICE, "generated": "2026-12-02T00:00:00Z", "entries": doc["usages"]}))
    assert await asyncio.to_thread(main, ["log", "verify-usage", str(good), "--anchor", str(env.fed.anchor_path)]) == 0
    bad = json.loads(good.read_text())
    proof_lines = bad["entries"][0]["evidence"]["proof"].split("\n")
    proof_lines[2] = base64.b64encode(b"\x00" * 32).decode()  # one hash of the inclusion proof
    bad["entries"][0]["evidence"]["proof"] = "\n".join(proof_lines)
    bad["entries"][1]["purpose"] = "POLICE"
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(bad))
    v0 = verify_usage_item(bad["entries"][0], env.anchor)
    assert not v0.proven and "evidence.proof: the record is not leaf" in v0.problems[0]
    v1 = verify_usage_item(bad["entries"][1], env.anchor)
    assert not v1.proven and any("item field purpose is 'POLICE'" in p for p in v1.problems)
    assert (
        await asyncio.to_thread(main, ["log", "verify-usage", str(tampered), "--anchor", str(env.fed.anchor_path)]) == 1
    )
    item = doc["usages"][0]

    def altered(path: str, value: Any) -> dict[str, Any]:
        copy = json.loads(json.dumps(item))
        copy["evidence"][path] = value
        return copy

    record = base64.b64decode(item["evidence"]["record"])
    note = item["evidence"]["proof"].partition("\n\n")[2]
    for case, where in (
        (
            altered("record", base64.b64encode(record.replace(b'"status":200', b'"status":204')).decode()),
            "item field status is '200', the record says '204'",
        ),
        (altered("salt", "00" * 16), "evidence.salt: the subject's commitment with this salt is not in the record"),
        (altered("subject", BOB), "evidence.salt: the subject's commitment"),
        (
            altered(
                "proof", item["evidence"]["proof"].replace(note, note.replace("/messagelog\n", "/messagelog2\n", 1))
            ),
            "evidence checkpoint",
        ),
        (altered("timestamp", None), "has no RFC 3161 timestamp token"),
        (altered("globalConf", []), "evidence.globalConf: no global configuration"),
        (altered("proof", "not a proof"), "proof: no blank line"),
    ):
        verdict = verify_usage_item(case, env.anchor)
        assert not verdict.proven and any(where in p for p in verdict.problems), (where, verdict.problems)


async def test_one_verifier_checks_a_shared_checkpoint_once_and_still_refuses_tampering(env: Env) -> None:
    subject = "LV12345678901"
    for _ in range(5):
        assert (await call(env.ss1, PERSONS, headers={"X-Road-Data-Subject": subject})).status == 200
    await checkpoint(env)
    items = (await find(env, REGISTRY, subject)).json()["usages"]
    assert len(items) == 5
    verifier = UsageVerifier(env.anchor)
    assert all(verifier.verify(item).proven for item in items)
    # one check of the configurations, one per distinct checkpoint input (note, token, certificates, OCSP)
    shared = {(i["evidence"]["proof"].partition("\n\n")[2], tuple(sorted(i["evidence"]["blobs"]))) for i in items}
    assert len({s[0] for s in shared}) == 1  # all five under the one checkpoint just made
    assert verifier.checks == 1 + len(shared)
    assert all(verifier.verify(item).proven for item in items) and verifier.checks == 1 + len(shared)
    # what it remembers never lets a tampered item through: each gets what a fresh check says
    item = items[0]
    note = item["evidence"]["proof"].partition("\n\n")[2]
    token = base64.b64decode(item["evidence"]["timestamp"])
    cases = []
    for path, value in (
        ("proof", item["evidence"]["proof"].replace(note, note.replace("/messagelog\n", "/messagelog2\n", 1))),
        ("timestamp", None),
        ("timestamp", base64.b64encode(token[:-1] + bytes([token[-1] ^ 1])).decode()),
        ("globalConf", []),
        ("blobs", {}),
    ):
        copy = json.loads(json.dumps(item))
        copy["evidence"][path] = value
        cases.append(copy)
    for case in cases:
        warm, fresh = verifier.verify(case), verify_usage_item(case, env.anchor)
        assert not warm.proven and warm == fresh, (warm.problems, fresh.problems)
    assert verifier.verify(item).proven  # and the good one still is


async def test_find_usage_usage_period_heartbeat_refuse_other_clients(env: Env) -> None:
    for code, method in (("findUsage", "POST"), ("usagePeriod", "GET"), ("heartbeat", "GET")):
        reply = await call(
            env.ss2,
            f"{CONSUMER}/{code}",
            client=REGISTRY,
            method=method,
            body={"userCode": ALICE} if method == "POST" else None,
        )
        assert reply.status == 403, reply.body
        assert reply.headers["X-Road-Error"] == "Client.AccessDenied"
        assert "only the portal's subsystem" in reply.json()["message"]
    beat = await call(env.ss1, f"{REGISTRY}/heartbeat")
    assert beat.status == 200 and beat.json()["status"] == "ok"
    period = (await call(env.ss1, f"{REGISTRY}/usagePeriod")).json()
    assert period["periodStart"] <= period["periodEnd"]


@pytest.mark.parametrize(
    ("headers", "status", "error", "message"),
    [
        ({"X-Road-Data-Subject": "38001085718"}, 400, "Client.BadRequest", "is not a subject identifier"),
        ({"X-Road-Data-Subject": ""}, 400, "Client.BadRequest", "is not a subject identifier"),
        (
            {"X-Road-Data-Subject": ",".join(f"EE{i}" for i in range(17))},
            400,
            "Client.BadRequest",
            "more than the maximum of 16",
        ),
        ({"X-Road-Purpose": "FUN"}, 400, "Client.UnknownPurpose", "not in the global configuration's purpose list"),
        ({"X-Road-Purpose": "no spaces"}, 400, "Client.BadRequest", "is not a purpose code"),
        ({"X-Road-Legal-Basis": "x" * 501}, 400, "Client.BadRequest", "longer than 500"),
        ({"X-Road-Purpose-Text": "\u00e9t\u00e9"}, 400, "Client.BadRequest", "printable ASCII"),
        ({"X-Road-Transparency": "embargo"}, 400, "Client.BadRequest", "exactly one parameter, until"),
        (
            {"X-Road-Transparency": 'embargo; until="2001-01-01T00:00:00Z"'},
            400,
            "Client.BadRequest",
            "not in the future",
        ),
        ({"X-Road-Transparency": "hide; until=2000000000"}, 400, "Client.BadRequest", "exactly 'embargo; until=DATE'"),
        ({"X-Road-Transparency": "embargo; until=tomorrow"}, 400, "Client.BadRequest", "RFC 3339"),
    ],
    ids=[
        "no-country",
        "empty",
        "too-many",
        "unknown-purpose",
        "bad-purpose",
        "long-basis",
        "non-ascii",
        "no-until",
        "past",
        "not-embargo",
        "bad-date",
    ],
)
async def test_malformed_transparency_headers_are_refused(
    env: Env,
    headers: dict[str, str],
    status: int,
    error: str,
    message: str,
) -> None:
    reply = await call(env.ss1, PERSONS, headers=headers)
    assert reply.status == status, reply.body
    assert reply.headers["X-Road-Error"] == error
    assert message in reply.json()["message"]


async def test_embargo_from_a_client_not_entitled_is_refused(env: Env) -> None:
    reply = await call(
        env.ss2,
        PERSONS,
        client=REGISTRY,
        headers={"X-Road-Data-Subject": ALICE, "X-Road-Transparency": "embargo; until=2000000000"},
    )
    assert reply.status == 403 and reply.headers["X-Road-Error"] == "Client.AccessDenied"
    assert "not entitled to embargo" in reply.json()["message"]


async def test_find_usage_bad_bodies(env: Env) -> None:
    for body, message in (
        ({"userCode": "nobody"}, "userCode must be a subject identifier"),
        ({"userCode": ALICE, "limit": 101}, "limit must be 1 to 100"),
        ({"userCode": ALICE, "offset": -1}, "offset must be a non-negative integer"),
        ({"userCode": ALICE, "periodStart": "yesterday"}, "is not an RFC 3339 date-time"),
        (
            {"userCode": ALICE, "periodStart": "2030-01-01T00:00:00Z", "periodEnd": "2020-01-01T00:00:00Z"},
            "periodEnd is before periodStart",
        ),
        ({"userCode": ALICE, "who": 1}, "unknown fields ['who']"),
    ):
        reply = await call(env.ss1, f"{REGISTRY}/findUsage", method="POST", body=body)
        assert reply.status == 400, (body, reply.body)
        assert message in reply.json()["message"]


async def test_embargoed_record_hidden_until_its_date_then_proven_logged_on_time(env: Env) -> None:
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    subject = "EE50001010000"
    reply = await call(
        env.ss1,
        PERSONS,
        headers={
            "X-Road-Data-Subject": subject,
            "X-Road-Purpose": "POLICE",
            "X-Road-Transparency": f'embargo; until="{until.strftime("%Y-%m-%dT%H:%M:%SZ")}"',
        },
    )
    assert reply.status == 200, reply.body
    await checkpoint(env)
    assert (await find(env, REGISTRY, subject)).json() == {"total": 0, "usages": []}
    state = env.ss2.context.transparency if env.ss2.context is not None else None
    assert state is not None
    state.clock = lambda: until + timedelta(seconds=1)
    try:
        doc = (await find(env, REGISTRY, subject)).json()
    finally:
        state.clock = None
    assert doc["total"] == 1
    item = doc["usages"][0]
    assert item["embargoUntil"] == until.strftime("%Y-%m-%dT%H:%M:%SZ") and item["purpose"] == "POLICE"
    verdict = verify_usage_item(item, env.anchor)
    assert verdict.proven, verdict.problems
    assert verdict.logged_by is not None and verdict.logged_by < until
    # auditors see the embargoed count per client: the admin API, and the message-log page of the web interface
    entry = json.loads(Path(env.fed.describe()["admin_credentials"]).read_text())["servers"][str(env.ss2.server_id)]
    async with aiohttp.ClientSession(env.ss2.admin_url) as http:
        async with http.post(
            "/api/v1/login", json={"username": entry["username"], "password": entry["password"]}
        ) as resp:
            token = (await resp.json())["token"]
        async with http.get("/api/v1/messagelog/transparency", headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
            counts = await resp.json()
    assert counts["enabled"] is True and counts["index_failures"] == 0
    [mine] = [c for c in counts["clients"] if c["client"] == CONSUMER]
    assert mine["embargoed"] == 1 and mine["records"] >= 1


async def test_log_verify_passes_on_an_archive_with_usage_records(env: Env, tmp_path: Path) -> None:
    await call(env.ss1, PERSONS, headers={"X-Road-Data-Subject": ALICE})
    await checkpoint(env)
    out = tmp_path / "ss2.zip"
    settings = env.fed.workdir / "ss2.toml"
    assert await asyncio.to_thread(main, ["-c", str(settings), "log", "export", "--out", str(out)]) == 0
    assert ALICE.encode() not in out.read_bytes()
    assert (
        await asyncio.to_thread(
            main, ["log", "verify", str(out), "--anchor", str(env.fed.anchor_path), "--workers", "1"]
        )
        == 0
    )
    # the consumer's archive too: its access records verify, no subject in it
    consumer = tmp_path / "ss1.zip"
    assert (
        await asyncio.to_thread(
            main, ["-c", str(env.fed.workdir / "ss1.toml"), "log", "export", "--out", str(consumer)]
        )
        == 0
    )
    assert ALICE.encode() not in consumer.read_bytes()
    assert (
        await asyncio.to_thread(
            main, ["log", "verify", str(consumer), "--anchor", str(env.fed.anchor_path), "--workers", "1"]
        )
        == 0
    )


async def test_declared_subject_recorded_refused_or_flagged_and_purpose_required(env: Env) -> None:
    assert env.fed.adapters is not None
    store, url = env.ss2.store, env.fed.adapters.urls["persons"]
    people = {name: ServiceId.parse(f"{REGISTRY}/{name}") for name in ("people", "people-flag", "people-purpose")}
    if people["people"] not in {s.id for s in await store.list_services()}:
        await store.add_service(people["people"], url=url, data_subject="path:1")
        await store.add_service(people["people-flag"], url=url, data_subject="query:person", subject_mismatch="flag")
        await store.add_service(people["people-purpose"], url=url, purpose_required=True)
        for service in people.values():
            await store.grant(AccessRule(subject=SubsystemId.parse(CONSUMER), service=service))
        await env.ss2.reload_serverconf()
    for bad, message in (
        ("body:/id", "must be path:N, query:NAME or json:/POINTER"),
        ("path:0", "1 to 64"),
        ("json:id", "not an RFC 6901 JSON pointer"),
        ("query:a b", "must match"),
    ):
        with pytest.raises(RequestError, match=re.escape(message)):
            await store.add_service(ServiceId.parse(f"{REGISTRY}/bad"), url=url, data_subject=bad)
    with pytest.raises(RequestError, match="must be 'refuse' or 'flag'"):
        await store.add_service(ServiceId.parse(f"{REGISTRY}/bad"), url=url, subject_mismatch="ignore")
    # (1) the consumer sends nothing: the provider's server records the declared subject all the same
    assert (await call(env.ss1, f"{REGISTRY}/people/EE10000000001")).status < 500
    await checkpoint(env)
    doc = (await find(env, REGISTRY, "EE10000000001")).json()
    assert doc["total"] == 1 and doc["usages"][0]["role"] == "disclosure"
    assert verify_usage_item(doc["usages"][0], env.anchor).proven
    # (2) a declared subject that the header does not name: refused...
    refused = await call(env.ss1, f"{REGISTRY}/people/EE10000000002", headers={"X-Road-Data-Subject": "EE10000000003"})
    assert refused.status == 400 and refused.headers["X-Road-Error"] == "Client.SubjectMismatch"
    # ... or flagged, with both subjects recorded
    flagged = await call(
        env.ss1, f"{REGISTRY}/people-flag/?person=EE10000000002", headers={"X-Road-Data-Subject": "EE10000000003"}
    )
    assert flagged.status < 500
    ss2_usage = [
        r for r in await _records(env.ss2) if r.message_id == flagged.headers["X-Road-Id"] and r.kind == "usage"
    ]
    assert ss2_usage[0].extensions["usage.flags"] == ("subject-mismatch",)
    assert len(ss2_usage[0].extensions["usage.subjects"]) == 2
    # (3) a service that requires a purpose
    missing = await call(env.ss1, f"{REGISTRY}/people-purpose/?limit=1")
    assert missing.status == 400 and missing.headers["X-Road-Error"] == "Client.PurposeRequired"
    assert "requires an X-Road-Purpose header" in missing.json()["message"]
    assert (await call(env.ss1, f"{REGISTRY}/people-purpose/?limit=1", headers={"X-Road-Purpose": "TAX"})).status == 200


async def _records(ss: SecurityServer) -> list[LogRecord]:
    assert ss.context is not None
    return [s.decode() for s in await ss.messagelog.read(ss.context.origin, limit=10_000)]


async def test_central_registry_and_cli_publish_the_parameters(env: Env) -> None:
    """Last in the module: it replaces the parameters the other tests use (then puts them back)."""
    central_toml = str(env.fed.workdir / "central.toml")
    run = ["-c", central_toml, "central", "transparency"]
    assert await asyncio.to_thread(main, [*run, "set", "--purpose", "HEALTH=Treatment", "--portal", CONSUMER]) == 0
    await env.fed.publish_and_refresh()
    assert (await call(env.ss1, PERSONS, headers={"X-Road-Purpose": "HEALTH"})).status == 200
    refused = await call(env.ss1, PERSONS, headers={"X-Road-Purpose": "TAX"})
    assert refused.status == 400 and refused.headers["X-Road-Error"] == "Client.UnknownPurpose"
    # bad values are refused and change nothing
    assert await asyncio.to_thread(main, [*run, "set", "--portal", "DEV/GOV/1001"]) != 0
    assert await asyncio.to_thread(main, [*run, "set", "--purpose", "no code=x"]) != 0
    assert await asyncio.to_thread(main, [*run, "set", "--purpose", "TAX"]) != 0
    with pytest.raises(RequestError, match="belongs to instance 'OTHER'"):
        await registry.set_transparency(
            env.fed.central.engine, purposes={}, portal="", instance="DEV", embargo_clients=["OTHER/GOV/1001/x"]
        )
    doc = await registry.get_transparency(env.fed.central.engine)
    assert doc == {"purposes": {"HEALTH": "Treatment"}, "portal": CONSUMER, "embargo_clients": []}
    # the central admin API: read them, set them (a security officer's), a bad value refused
    creds = json.loads(Path(env.fed.describe()["admin_credentials"]).read_text())["central"]
    async with aiohttp.ClientSession(creds["admin_url"]) as http:
        async with http.post("/api/v1/login", json={"username": creds["username"], "password": creds["password"]}) as r:
            auth = {"Authorization": f"Bearer {(await r.json())['token']}"}
        async with http.get("/api/v1/transparency", headers=auth) as r:
            assert r.status == 200 and (await r.json())["purposes"] == {"HEALTH": "Treatment"}
        body = {
            "purposes": {"TAX": "Tax assessment", "POLICE": "Criminal investigation"},
            "portal": CONSUMER,
            "embargo_clients": [CONSUMER],
        }
        async with http.put("/api/v1/transparency", json=body, headers=auth) as r:
            assert r.status == 200 and (await r.json())["embargo_clients"] == [CONSUMER]
        async with http.put("/api/v1/transparency", json={**body, "portal": "DEV/GOV"}, headers=auth) as r:
            assert r.status == 400
    assert (await registry.get_transparency(env.fed.central.engine))["purposes"]["POLICE"] == "Criminal investigation"
    await registry.set_transparency(
        env.fed.central.engine,
        purposes=dict(p.split("=") for p in CENTRAL["transparency_purposes"]),
        portal=CONSUMER,
        embargo_clients=[CONSUMER],
        instance="DEV",
    )
    await env.fed.publish_and_refresh()
