"""Registration requests: a security server submits over HTTP, the registration officer decides, the next
global configuration shows the change. SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from pkihelpers import IssuedCert, ThrowawayPki, make_pki

from gateway.central import registration, registry
from gateway.central.app import CentralHandle, start_central
from gateway.central.management import build_request
from gateway.central.publisher import latest_publication
from gateway.errors import GatewayError, IdentifierError, RequestError
from gateway.globalconf.model import GlobalConf, format_time
from gateway.identifiers import SecurityServerId, SubsystemId
from gateway.server.regclient import submit
from gateway.settings import CentralSettings
from gateway.trust import keys
from gateway.trust.canonical import canonical_bytes

SS3 = SecurityServerId.parse("DEV/GOV/1003/ss3")


@dataclass
class World:
    central: CentralHandle
    pki: ThrowawayPki
    other_pki: ThrowawayPki
    auth: IssuedCert

    @property
    def url(self) -> str:
        return f"{self.central.url}/registration"

    async def conf(self) -> GlobalConf:
        await self.central.publish_now()
        pub = await latest_publication(self.central.engine)
        assert pub is not None
        return GlobalConf.from_dict(json.loads(pub.data)["signed"])


@pytest_asyncio.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    pki, other = make_pki(tmp_path / "pki"), make_pki(tmp_path / "other", name="Other CA")
    central = await start_central(CentralSettings(database_url=database_url, key_dir=str(tmp_path / "keys")),
                                  host="127.0.0.1", port=0, background=False)
    try:
        await registry.add_ca(central.engine, name="Test CA", certificate=keys.cert_pem(pki.ca_cert),
                              ocsp_urls=["http://127.0.0.1:1/ocsp"])
        await registry.add_member(central.engine, "DEV/GOV/1003", name="Agency C", instance="DEV")
        yield World(central=central, pki=pki, other_pki=other, auth=pki.issue_auth(SS3))
    finally:
        await central.close()


def now() -> datetime:
    return datetime.now(UTC)


def reg_body(w: World, cert: IssuedCert | None = None, **kw: Any) -> bytes:
    c = cert or w.auth
    return build_request("auth_cert_reg", server=SS3, signer_key=c.key, signer_cert=c.cert, now=now(),
                         address="ss3.example.org:5500", **kw)


async def test_auth_cert_registration_client_registration_and_deletion(world: World) -> None:
    w = world
    # (1) a new server submits its authentication certificate; the request waits for the officer
    record = await submit(w.url, reg_body(w))
    assert (record["type"], record["state"], record["server"]) == ("auth_cert_reg", "submitted", str(SS3))
    assert record["auth_cert_sha256"] == w.auth.sha256
    assert (await w.conf()).server(SS3) is None
    # (2) submitting it again is a duplicate
    with pytest.raises(RequestError) as dup:
        await submit(w.url, reg_body(w))
    assert dup.value.status == 409 and "already pending" in dup.value.message
    # (3) the officer approves: the next configuration lists the server with the fingerprint
    approved = await registration.approve(w.central.engine, record["id"], instance="DEV", officer="olga", now=now())
    assert (approved.state, approved.decided_by) == ("approved", "olga")
    server = (await w.conf()).server(SS3)
    assert server is not None and server.address == "ss3.example.org:5500"
    assert server.auth_certs == frozenset({w.auth.sha256})
    with pytest.raises(RequestError) as again:
        await submit(w.url, reg_body(w))
    assert again.value.status == 409 and "is already registered" in again.value.message
    with pytest.raises(RequestError, match="is approved already"):
        await registration.reject(w.central.engine, record["id"], officer="olga", now=now())
    # (4) a client subsystem, signed by the registered certificate; the subsystem is registered with it
    client = SubsystemId.parse("DEV/GOV/1003/newsub")
    body = build_request("client_reg", server=SS3, signer_key=w.auth.key, signer_cert=w.auth.cert, now=now(),
                         client=client)
    rec = await submit(w.url, body)
    await registration.approve(w.central.engine, rec["id"], instance="DEV", officer="olga", now=now())
    conf = await w.conf()
    assert conf.subsystem_exists(client)
    assert [str(s.id) for s in conf.servers_for_client(client)] == [str(SS3)]
    # (5) replacing the certificate: register a second one, then delete the first (signed with the second)
    second = w.pki.issue_auth(SS3)
    rec = await submit(w.url, reg_body(w, second))
    await registration.approve(w.central.engine, rec["id"], instance="DEV", officer="olga", now=now())
    body = build_request("auth_cert_deletion", server=SS3, signer_key=second.key, signer_cert=second.cert,
                         now=now(), auth_cert_sha256=w.auth.sha256)
    rec = await submit(w.url, body)
    await registration.approve(w.central.engine, rec["id"], instance="DEV", officer="olga", now=now())
    server = (await w.conf()).server(SS3)
    assert server is not None and server.auth_certs == frozenset({second.sha256})
    # (6) the old certificate can no longer sign requests for the server
    body = build_request("client_deletion", server=SS3, signer_key=w.auth.key, signer_cert=w.auth.cert,
                         now=now(), client=client)
    with pytest.raises(RequestError) as gone:
        await submit(w.url, body)
    assert gone.value.status == 403 and "is not registered for DEV/GOV/1003/ss3" in gone.value.message
    # (7) the request's state can be followed
    async with aiohttp.ClientSession() as s, s.get(f"{w.url}/{record['id']}") as resp:
        assert resp.status == 200 and (await resp.json())["state"] == "approved"
    listed = await registration.list_requests(w.central.engine)
    assert [r.state for r in listed] == ["approved"] * 4


async def test_rejected_request_changes_nothing(world: World) -> None:
    w = world
    rec = await submit(w.url, reg_body(w))
    rejected = await registration.reject(w.central.engine, rec["id"], officer="olga", now=now(), comment="unknown")
    assert (rejected.state, rejected.comment) == ("rejected", "unknown")
    assert (await w.conf()).server(SS3) is None
    assert await registration.list_requests(w.central.engine, state="submitted") == []
    with pytest.raises(RequestError, match="is rejected already"):
        await registration.approve(w.central.engine, rec["id"], instance="DEV", officer="olga", now=now())
    with pytest.raises(RequestError) as missing:
        await registration.approve(w.central.engine, 999, instance="DEV", officer="olga", now=now())
    assert missing.value.status == 404


def resign(doc_request: dict[str, Any], cert: IssuedCert) -> bytes:
    alg, sig = keys.sign_bytes(cert.key, canonical_bytes(doc_request))
    der = base64.b64encode(cert.cert.public_bytes(serialization.Encoding.DER)).decode()
    return canonical_bytes({"alg": alg, "request": doc_request, "signature": base64.b64encode(sig).decode(),
                            "signer_cert": der})


def base_request(w: World) -> dict[str, Any]:
    der = base64.b64encode(w.auth.cert.public_bytes(serialization.Encoding.DER)).decode()
    return {"type": "auth_cert_reg", "server": str(SS3), "created": format_time(now()),
            "address": "ss3.example.org:5500", "auth_cert": der}


def mutate(**changes: Any) -> Callable[[World], bytes]:
    def make(w: World) -> bytes:
        req = {**base_request(w), **changes}
        return resign({k: v for k, v in req.items() if v is not None}, w.auth)

    return make


def other_ca(w: World) -> bytes:
    foreign = w.other_pki.issue_auth(SS3)
    return build_request("auth_cert_reg", server=SS3, signer_key=foreign.key, signer_cert=foreign.cert,
                         now=now(), address="ss3.example.org:5500")


def wrong_key(w: World) -> bytes:
    doc = json.loads(reg_body(w))
    other = w.pki.issue_auth(SS3)
    _alg, sig = keys.sign_bytes(other.key, canonical_bytes(doc["request"]))
    doc["signature"] = base64.b64encode(sig).decode()
    return canonical_bytes(doc)


def other_server(w: World) -> bytes:
    ss4 = w.pki.issue_auth("DEV/GOV/1003/ss4")
    req = {**base_request(w), "server": "DEV/GOV/1003/ss3"}
    req["auth_cert"] = base64.b64encode(ss4.cert.public_bytes(serialization.Encoding.DER)).decode()
    return resign(req, ss4)


def unregistered_owner(w: World) -> bytes:
    ss9 = w.pki.issue_auth("DEV/GOV/1009/ss9")
    return build_request("auth_cert_reg", server=ss9.identity, signer_key=ss9.key,  # type: ignore[arg-type]
                         signer_cert=ss9.cert, now=now(), address="ss9.example.org:5500")


def client_from_unregistered(w: World) -> bytes:
    return build_request("client_reg", server=SS3, signer_key=w.auth.key, signer_cert=w.auth.cert, now=now(),
                         client=SubsystemId.parse("DEV/GOV/1003/sub"))


def sign_cert_as_signer(w: World) -> bytes:
    sign = w.pki.issue_sign("DEV/GOV/1003")
    return resign(base_request(w), sign)


BAD: list[tuple[str, Callable[[World], bytes], type[GatewayError], int, str]] = [
    ("untrusted CA", other_ca, RequestError, 403, "is not issued by a CA trusted by this central server"),
    ("signature by another key", wrong_key, RequestError, 403, "signature does not verify with signer_cert"),
    ("certificate of another server", other_server, RequestError, 403,
     "signer_cert names DEV/GOV/1003/ss4, not DEV/GOV/1003/ss3"),
    ("signing certificate", sign_cert_as_signer, RequestError, 403, "signer_cert is not an authentication"),
    ("malformed server id", mutate(server="DEV/GOV/1003/s;3"), IdentifierError, 400, "s;3"),
    ("server id of another kind", mutate(server="DEV/GOV/1003"), IdentifierError, 400, "DEV/GOV/1003"),
    ("other instance", mutate(server="EE/GOV/1003/ss3"), IdentifierError, 400, "belongs to instance 'EE'"),
    ("old request", mutate(created=format_time(datetime.now(UTC) - timedelta(hours=1))), RequestError, 400,
     "more than 0:10:00 from the central server's time"),
    ("unknown type", mutate(type="make_me_admin"), RequestError, 400, "type 'make_me_admin' is not one of"),
    ("missing address", mutate(address=None), RequestError, 400, "missing address"),
    ("extra field", mutate(role="admin"), RequestError, 400, "unknown role"),
    ("bad address", mutate(address="no-port"), RequestError, 400, "must be HOST:PORT"),
    ("missing auth_cert", mutate(auth_cert=None), RequestError, 400, "missing auth_cert"),
    ("auth_cert not the signer", lambda w: mutate(auth_cert=base64.b64encode(w.pki.issue_auth(SS3).cert.public_bytes(
        serialization.Encoding.DER)).decode())(w), RequestError, 403, "auth_cert must be the signer certificate"),
    ("owner not registered", unregistered_owner, RequestError, 404, "member DEV/GOV/1009 is not registered"),
    ("client request from an unregistered server", client_from_unregistered, RequestError, 404,
     "security server DEV/GOV/1003/ss3 is not registered"),
    ("not canonical JSON", lambda w: reg_body(w).replace(b'{"alg"', b'{ "alg"'), RequestError, 400,
     "not in canonical JSON form"),
    ("not JSON", lambda w: b"\xff\xfe", RequestError, 400, "is not valid JSON"),
]


@pytest.mark.parametrize(("name", "make", "cls", "status", "message"), BAD, ids=[b[0] for b in BAD])
async def test_bad_requests_are_refused_over_http(
    world: World, name: str, make: Callable[[World], bytes], cls: type[GatewayError], status: int, message: str,
) -> None:
    body = make(world)
    with pytest.raises(cls) as direct:
        await registration.submit(world.central.engine, body, instance="DEV", now=now())
    assert direct.value.status == status and message in direct.value.message, direct.value.message
    with pytest.raises(RequestError) as remote:  # the same through POST /registration
        await submit(world.url, body)
    assert remote.value.status == status and message in remote.value.message
    assert await registration.list_requests(world.central.engine) == []


async def test_a_renewal_is_approved_by_the_policy_only_when_cosigned_by_a_registered_certificate(
    world: World,
) -> None:
    w = world
    engine = w.central.engine
    rec = await submit(w.url, reg_body(w))
    await registration.approve(engine, rec["id"], instance="DEV", officer="olga", now=now())
    # (1) policy on, co-signed by the registered certificate: approved at submission, listed at once
    renewed = w.pki.issue_auth(SS3)
    body = reg_body(w, renewed, renewal_key=w.auth.key, renewal_cert=w.auth.cert)
    record = await registration.submit(engine, body, instance="DEV", now=now(), auto_approve_renewal=True)
    assert (record.state, record.decided_by) == ("approved", registration.AUTO_RENEWAL_OFFICER)
    assert record.comment == f"renewal co-signed by registered certificate {w.auth.sha256}"
    server = (await w.conf()).server(SS3)
    assert server is not None and server.auth_certs == frozenset({w.auth.sha256, renewed.sha256})
    assert server.address == "ss3.example.org:5500"
    # (2) policy off: the same kind of request waits for an officer
    second = w.pki.issue_auth(SS3)
    record = await registration.submit(engine, reg_body(w, second, renewal_key=w.auth.key, renewal_cert=w.auth.cert),
                                       instance="DEV", now=now())
    assert (record.state, record.decided_by) == ("submitted", None)
    # (3) policy on, but co-signed by a certificate of the server that is not registered: an officer decides
    stranger, third = w.pki.issue_auth(SS3), w.pki.issue_auth(SS3)
    record = await registration.submit(engine, reg_body(w, third, renewal_key=stranger.key,
                                                        renewal_cert=stranger.cert),
                                       instance="DEV", now=now(), auto_approve_renewal=True)
    assert record.state == "submitted"
    # (4) policy on, not a renewal: an officer decides
    fourth = w.pki.issue_auth(SS3)
    record = await registration.submit(engine, reg_body(w, fourth), instance="DEV", now=now(),
                                       auto_approve_renewal=True)
    assert record.state == "submitted"


def renewal_doc(w: World, **changes: Any) -> bytes:
    new = w.pki.issue_auth(SS3)
    doc = json.loads(reg_body(w, new, renewal_key=w.auth.key, renewal_cert=w.auth.cert))
    for key, value in changes.items():
        if callable(value):
            value = value(w, doc)
        if value is None:
            doc.pop(key)
        else:
            doc[key] = value
    return canonical_bytes(doc)


def der64(cert: Any) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def renewal_signed_by(w: World, doc: dict[str, Any]) -> str:
    _alg, sig = keys.sign_bytes(w.pki.issue_auth(SS3).key, canonical_bytes(doc["request"]))
    return base64.b64encode(sig).decode()


BAD_RENEWALS: list[tuple[str, Callable[[World], bytes], int, str]] = [
    ("renewal fields incomplete", lambda w: renewal_doc(w, renewal_alg=None), 400,
     "for a renewal, renewal_alg, renewal_cert and renewal_signature"),
    ("renewal signature by another key", lambda w: renewal_doc(w, renewal_signature=renewal_signed_by), 403,
     "renewal_signature does not verify with renewal_cert"),
    ("co-signer of another server", lambda w: renewal_doc(
        w, renewal_cert=lambda w, d: der64(w.pki.issue_auth("DEV/GOV/1003/ss4").cert)), 403,
     "renewal_cert names DEV/GOV/1003/ss4, not DEV/GOV/1003/ss3"),
    ("co-signer from an untrusted CA", lambda w: renewal_doc(
        w, renewal_cert=lambda w, d: der64(w.other_pki.issue_auth(SS3).cert)), 403,
     "renewal_cert is not issued by a CA trusted"),
    ("co-signed by the new certificate itself", lambda w: renewal_doc(
        w, renewal_cert=lambda w, d: d["signer_cert"], renewal_signature=lambda w, d: d["signature"]), 403,
     "renewal_cert is the certificate to register"),
    ("a renewal of another type", lambda w: canonical_bytes({**json.loads(build_request(
        "client_reg", server=SS3, signer_key=w.auth.key, signer_cert=w.auth.cert, now=now(),
        client=SubsystemId.parse("DEV/GOV/1003/sub"))), "renewal_alg": "x", "renewal_cert": der64(w.auth.cert),
        "renewal_signature": "AA=="}), 400, "a client_reg request cannot be a renewal"),
]


@pytest.mark.parametrize(("name", "make", "status", "message"), BAD_RENEWALS, ids=[b[0] for b in BAD_RENEWALS])
async def test_bad_renewals_are_refused(world: World, name: str, make: Callable[[World], bytes], status: int,
                                        message: str) -> None:
    with pytest.raises(RequestError) as refused:
        await registration.submit(world.central.engine, make(world), instance="DEV", now=now(),
                                  auto_approve_renewal=True)
    assert refused.value.status == status and message in refused.value.message, refused.value.message
    assert await registration.list_requests(world.central.engine) == []


def test_build_request_refuses_half_a_renewal_and_renewals_of_other_types(world: World) -> None:
    with pytest.raises(RequestError, match="needs both the current authentication key and its certificate"):
        reg_body(world, renewal_key=world.auth.key)
    with pytest.raises(RequestError, match="a client_reg request cannot be a renewal"):
        build_request("client_reg", server=SS3, signer_key=world.auth.key, signer_cert=world.auth.cert, now=now(),
                      client=SubsystemId.parse("DEV/GOV/1003/sub"), renewal_key=world.auth.key,
                      renewal_cert=world.auth.cert)
