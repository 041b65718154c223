"""The admin API's operations over real HTTP on loopback, on SQLite and PostgreSQL: clients, services,
endpoints, access rights, local groups, pagination, global-configuration status, the message log (auditor),
the OpenAPI document; every change is in the audit log and reaches the proxies' snapshot."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from admin_kit import SERVER, AdminHarness, admin_harness
from pkihelpers import make_cert

from gateway.admin.app import build_admin_app
from gateway.admin.openapi import build_document
from gateway.admin.roles import ROLES
from gateway.identifiers import ServiceId, SubsystemId
from gateway.messagelog.record import LogRecord
from gateway.trust.keys import generate_private_key

pytestmark = pytest.mark.integration

CONSUMER = "DEV/GOV/1001/consumer"
SERVICE = "DEV/GOV/1001/consumer/pets"


@pytest.fixture
async def h(database_url: str, tmp_path: Path) -> AsyncIterator[AdminHarness]:
    async with admin_harness(database_url, tmp_path) as harness:
        yield harness


async def test_serverconf_round_trip_is_audited_and_reloads_the_snapshot(h: AdminHarness) -> None:
    reg = await h.user_token("reg", "registration-officer")
    svc = await h.user_token("svc", "service-administrator")
    obs = await h.user_token("obs", "observer")
    status, client = await h.call("addClient", token=reg, json={"id": CONSUMER, "is_auth": "none"})
    assert status == 201
    assert client == {"id": CONSUMER, "encoded_id": "DEV:GOV:1001:consumer", "type": "SUBSYSTEM", "status": "saved",
                      "is_auth": "none", "body_logging": True, "is_cert_fingerprints": []}
    assert len(h.reloads) == 1
    status, client = await h.call("setClientStatus", params={"client_id": "DEV:GOV:1001:consumer"}, token=reg,
                                  json={"status": "registered"})
    assert client["status"] == "registered"
    status, client = await h.call("updateClient", params={"client_id": "DEV:GOV:1001:consumer"}, token=svc,
                                  json={"body_logging": False})
    assert (client["body_logging"], client["is_auth"]) == (False, "none")
    status, service = await h.call("addService", token=svc, json={
        "id": SERVICE, "url": "http://127.0.0.1:9/pets", "timeout_seconds": 5,
        "openapi_url": "http://127.0.0.1:9/openapi.json", "endpoints": [{"method": "GET", "path": "/pets/*"}]})
    assert status == 201
    assert service["openapi_url"] == "http://127.0.0.1:9/openapi.json"
    assert service["endpoints"] == [{"method": "GET", "path": "/pets/*"}]
    sid = {"service_id": "DEV:GOV:1001:consumer:pets"}
    assert (await h.call("addEndpoint", params=sid, token=svc, json={"method": "POST", "path": "/pets"}))[0] == 201
    status, service = await h.call("updateService", params=sid, token=svc, json={"enabled": False, "openapi_url": ""})
    assert (service["enabled"], service["openapi_url"]) == (False, None)
    assert (await h.call("addLocalGroup", token=svc, json={"code": "friends"}))[0] == 201
    status, group = await h.call("addLocalGroupMember", params={"code": "friends"}, token=svc,
                                 json={"client": "DEV/GOV/1002/other"})
    assert group == {"code": "friends", "members": ["DEV/GOV/1002/other"]}
    for subject, method, path in (("LOCALGROUP:friends", "GET", "/pets/*"), (CONSUMER, "*", "**"),
                                  ("GLOBALGROUP:DEV/security-server-owners", "POST", "/pets")):
        status, right = await h.call("grantAccess", params=sid, token=svc,
                                     json={"subject": subject, "method": method, "path": path})
        assert status == 201
    assert right == {"service": SERVICE, "subject": "GLOBALGROUP:DEV/security-server-owners", "method": "POST",
                     "path": "/pets"}
    status, body = await h.call("grantAccess", params=sid, token=svc, json={"subject": CONSUMER})
    assert status == 409 and body["type"] == "Client.AlreadyExists"
    # reads, with pagination
    status, page = await h.call("listAccessRights", params=sid, token=obs)
    assert page["total"] == 3 and page["items"][0]["subject"] == "LOCALGROUP:friends"
    status, page = await h.request("GET", "/api/v1/services/DEV:GOV:1001:consumer:pets/access-rights",
                                   token=obs, params={"limit": "1", "offset": "1"})
    assert (page["total"], page["limit"], page["offset"]) == (3, 1, 1)
    assert [r["subject"] for r in page["items"]] == ["SUBSYSTEM:DEV/GOV/1001/consumer"]
    status, page = await h.request("GET", "/api/v1/clients", token=obs, params={"offset": "5"})
    assert (status, page["items"], page["total"]) == (200, [], 1)
    status, services = await h.request("GET", "/api/v1/services", token=obs, params={"provider": CONSUMER})
    assert [s["id"] for s in services["items"]] == [SERVICE]
    status, groups = await h.call("listLocalGroups", token=obs)
    assert groups["items"] == [{"code": "friends", "members": ["DEV/GOV/1002/other"]}]
    # the store holds what the API said
    [rule_service] = {r.service for r in await h.serverconf.list_rules()}
    assert rule_service == ServiceId.parse(SERVICE)
    # revoke and remove
    status, _ = await h.request("DELETE", "/api/v1/services/DEV:GOV:1001:consumer:pets/access-rights", token=svc,
                                params={"subject": "LOCALGROUP:friends", "method": "GET", "path": "/pets/*"})
    assert status == 204
    status, body = await h.request("DELETE", "/api/v1/services/DEV:GOV:1001:consumer:pets/access-rights", token=svc,
                                   params={"subject": "LOCALGROUP:friends", "method": "GET", "path": "/pets/*"})
    assert status == 404 and "has no access right" in body["message"]
    status, _ = await h.request("DELETE", "/api/v1/services/DEV:GOV:1001:consumer:pets/endpoints", token=svc,
                                params={"method": "POST", "path": "/pets"})
    assert status == 204
    assert (await h.call("removeLocalGroupMember", params={"code": "friends", "client_id": "DEV:GOV:1002:other"},
                         token=svc))[0] == 204
    assert (await h.call("removeLocalGroup", params={"code": "friends"}, token=svc))[0] == 204
    assert (await h.call("removeService", params=sid, token=svc))[0] == 204
    assert (await h.call("removeClient", params={"client_id": "DEV:GOV:1001:consumer"}, token=reg))[0] == 204
    status, body = await h.call("getClient", params={"client_id": "DEV:GOV:1001:consumer"}, token=obs)
    assert status == 404 and body["type"] == "Client.NotFound"
    assert await h.serverconf.list_clients() == []
    # every change is in the audit log, with who, from where and the result; reads are not
    changes = [e for e in await h.audit() if e.method != "GET"]
    assert len(h.reloads) == len([e for e in changes if e.result == "success" and e.action != "login"])
    by_action = {(e.action, e.result) for e in changes}
    assert by_action >= {("addClient", "success"), ("setClientStatus", "success"), ("updateClient", "success"),
                         ("addService", "success"), ("addEndpoint", "success"), ("grantAccess", "success"),
                         ("grantAccess", "refused"), ("revokeAccess", "success"), ("revokeAccess", "refused"),
                         ("removeEndpoint", "success"), ("removeLocalGroupMember", "success"),
                         ("removeLocalGroup", "success"), ("removeService", "success"), ("removeClient", "success")}
    assert all(e.remote == "127.0.0.1" and e.auth in ("jwt", "password") for e in changes)
    [add] = await h.audit(action="addClient")
    assert (add.actor, add.details["request"]) == ("reg", {"id": CONSUMER, "is_auth": "none"})
    assert {e.action for e in await h.audit() if e.method == "GET" and e.status < 400} == set()


async def test_is_certificates(h: AdminHarness) -> None:
    from cryptography.hazmat.primitives import hashes, serialization

    cert = make_cert(generate_private_key(), "information system")
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    token = await h.user_token("root", *ROLES)
    await h.call("addClient", token=token, json={"id": CONSUMER})
    cid = {"client_id": "DEV:GOV:1001:consumer"}
    status, body = await h.call("addIsCert", params=cid, token=token, json={"pem": pem})
    assert status == 201 and body["fingerprint"] == cert.fingerprint(hashes.SHA256()).hex()
    status, client = await h.call("getClient", params=cid, token=token)
    assert client["is_cert_fingerprints"] == [body["fingerprint"]]
    status, err = await h.call("addIsCert", params=cid, token=token, json={"pem": "-----BEGIN CERTIFICATE-----"})
    assert status == 400 and "is not a PEM or DER X.509 certificate" in err["message"]
    assert (await h.call("removeIsCert", params={**cid, "fingerprint": body["fingerprint"]}, token=token))[0] == 204


async def test_users_and_audit_log_listing(h: AdminHarness) -> None:
    admin = await h.user_token("root", "system-administrator")
    status, user = await h.call("addUser", token=admin,
                                json={"username": "bob", "password": "a long enough pw", "roles": ["observer"]})
    assert status == 201 and user["roles"] == ["observer"] and user["locked_until"] is None
    status, body = await h.call("addUser", token=admin,
                                json={"username": "bob", "password": "a long enough pw", "roles": ["observer"]})
    assert status == 409
    status, users = await h.call("listUsers", token=admin)
    assert [u["username"] for u in users["items"]] == ["bob", "root"]
    status, audit = await h.request("GET", "/api/v1/audit-log", token=admin, params={"action": "addUser"})
    assert status == 200 and audit["total"] == 2
    assert [(e["result"], e["status"]) for e in audit["items"]] == [("refused", 409), ("success", 201)]  # newest first
    assert audit["items"][1]["details"]["request"]["password"] == "<redacted>"
    status, audit = await h.request("GET", "/api/v1/audit-log", token=admin,
                                    params={"result": "refused", "limit": "1"})
    assert (audit["total"], len(audit["items"])) == (1, 1)
    status, body = await h.request("GET", "/api/v1/audit-log", token=admin, params={"result": "maybe"})
    assert status == 400 and "query parameter result 'maybe' is not one of success, refused, failed" in body["message"]


async def test_globalconf_status_and_refresh(h: AdminHarness) -> None:
    obs = await h.user_token("obs", "observer")
    admin = await h.user_token("root", "system-administrator")
    status, gc = await h.call("getGlobalConfStatus", token=obs)
    assert (gc["version"], gc["expired"], gc["last_error"]) == (1, False, None)
    h.sim.publish()
    status, result = await h.call("refreshGlobalConf", token=admin)
    assert status == 200
    assert (result["accepted"], result["changed"], result["version"]) == (True, True, 2)
    assert (await h.call("getGlobalConfStatus", token=obs))[1]["version"] == 2
    [entry] = await h.audit(action="refreshGlobalConf")
    assert entry.details["refresh"] == {"accepted": True, "changed": True, "version": 2}


def _record(seq: int) -> LogRecord:
    return LogRecord(
        origin=str(SERVER), kind="request", side="client", message_id=f"m{seq}", request_id=f"r{seq}",
        client=SubsystemId.parse(CONSUMER), service=ServiceId.parse("DEV/GOV/1002/registry/persons"),
        created=datetime(2026, 1, 2, 3, 4, seq, tzinfo=UTC), method="GET", path=f"/persons/{seq}",
        signature_base=b"base", signature_input="sig1=()", signature="sig1=:AAAA:", signing_cert=b"\x30\x00",
        ocsp_response=b"\x30\x00", body_digest="sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:", body=b"",
    )


async def test_auditor_reads_and_exports_the_message_log(h: AdminHarness) -> None:
    appended = [await h.messagelog.append(_record(i)) for i in range(3)]
    auditor = await h.user_token("eve", "auditor")
    status, page = await h.request("GET", "/api/v1/messagelog/records", token=auditor,
                                   params={"offset": "1", "limit": "5"})
    assert status == 200 and (page["total"], page["offset"]) == (3, 1)
    assert [(r["seq"], r["record"]["message_id"], r["leaf_hash"]) for r in page["items"]] == [
        (1, "m1", appended[1].leaf_hash.hex()), (2, "m2", appended[2].leaf_hash.hex())]
    async with h.http.get(f"{h.url}/api/v1/messagelog/records/2",
                          headers={"Authorization": f"Bearer {auditor}"}) as resp:
        assert resp.status == 200 and await resp.read() == _record(2).encode()
        assert resp.headers["X-Leaf-Hash"] == appended[2].leaf_hash.hex()
    status, body = await h.call("exportMessageLogRecord", params={"seq": "7"}, token=auditor)
    assert status == 404 and "has no record 7" in body["message"]
    status, page = await h.request("GET", "/api/v1/messagelog/records", token=auditor, params={"origin": "other"})
    assert (page["total"], page["items"]) == (0, [])
    status, body = await h.request("GET", "/api/v1/messagelog/records", token=auditor, params={"origin": "a b"})
    assert status == 400 and "printable ASCII" in body["message"]
    # reads of the message log are audited (personal data), with the records read
    [listed, *_] = await h.audit(action="listMessageLogRecords", result="success")
    assert (listed.actor, listed.method) == ("eve", "GET")
    assert [e.details.get("records") for e in await h.audit(action="listMessageLogRecords", result="success")] == [
        [], [1, 2]]
    assert len(await h.audit(action="exportMessageLogRecord")) == 2


async def test_openapi_document_is_generated_and_covers_the_router(h: AdminHarness) -> None:
    status, doc = await h.call("getOpenApi")
    assert status == 200
    assert doc == json.loads(json.dumps(build_document()))
    assert doc["openapi"] == "3.1.0"
    served = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    app = build_admin_app(h.ctx)
    routed = set()
    for route in app.router.routes():
        info = route.resource.canonical if route.resource is not None else ""
        if route.method != "HEAD" and not info.startswith("/ui"):  # the web interface (docs/web-ui.md)
            routed.add((route.method, info))
    assert routed == served
    for path, item in doc["paths"].items():
        for op in item.values():
            assert op["x-roles"] and op["responses"], path


async def test_software_token(database_url: str, tmp_path: Path) -> None:
    from cryptography import x509

    async with admin_harness(database_url, tmp_path, token_pin="1234-5678-pin") as h:
        officer = await h.user_token("sec", "security-officer")
        obs = await h.user_token("obs", "observer")
        status, state = await h.call("getToken", token=obs)
        assert state == {"logged_in": False, "failed_pins": 0, "locked_until": None, "keys": []}
        status, body = await h.call("generateKey", token=officer, json={"usage": "sign"})
        assert status == 409 and "not logged in" in body["message"]
        status, body = await h.call("loginToken", token=officer, json={"pin": "wrong-pin-0000"})
        assert status == 400 and body["type"] == "Signer.PinIncorrect"
        assert (await h.call("loginToken", token=officer, json={"pin": "1234-5678-pin"}))[0] == 204
        status, key = await h.call("generateKey", token=officer, json={"usage": "sign", "label": "signing 1"})
        assert status == 201 and (key["usage"], key["label"], key["certs"]) == ("sign", "signing 1", [])
        status, body = await h.call("createCsr", params={"token_key_id": key["id"]}, token=officer,
                                    json={"name": "Agency A"})
        csr = x509.load_pem_x509_csr(body["csr"].encode())
        assert csr.is_signature_valid and "DEV/GOV/1001" in csr.subject.rfc4514_string().replace("\\", "")
        status, body = await h.call("importCertificate", token=officer, json={"pem": "not a certificate"})
        assert status == 400
        status, body = await h.call("activateCertificate", params={"sha256": "ab" * 32}, token=officer)
        assert status == 404
        status, state = await h.call("getToken", token=obs)
        assert state["logged_in"] and [k["id"] for k in state["keys"]] == [key["id"]]
        assert (await h.call("deleteKey", params={"token_key_id": key["id"]}, token=officer))[0] == 204
        assert (await h.call("logoutToken", token=officer))[0] == 204
        login = [e for e in await h.audit(action="loginToken")]
        assert [(e.result, e.details["request"]) for e in login] == [
            ("success", {"pin": "<redacted>"}), ("refused", {"pin": "<redacted>"})]
        assert "1234-5678-pin" not in json.dumps([e.to_dict() for e in await h.audit()])


async def test_token_endpoints_without_a_token(h: AdminHarness) -> None:
    token = await h.user_token("sec", "security-officer")
    status, body = await h.call("getToken", token=token)
    assert status == 404 and "keeps its keys in files" in body["message"]
