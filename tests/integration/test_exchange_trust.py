"""Trust between security servers, end to end over real mutual TLS (issue items 4, 5, 6 and the bad inputs).

One federation (development PKI with OCSP responder, central server, ss1 for the consumer, ss2 for the
registry) serves the whole module; tests that revoke certificates or move the clock start their own. A
recording probe service behind ss2 shows whether anything reached a service, and both message logs are
checked after every refusal.

- Peers: an unregistered, expired, untrusted, revoked or impostor authentication certificate is refused in
  both directions (a rogue client calling ss2's server port; ss1 dialling a rogue provider server).
- Requests between the servers: crafted with ss1's real keys, then tampered with byte by byte; replayed;
  signed at the wrong time; signed with a revoked, stale, untrusted or wrong-member certificate.
- Responses: a fake provider server with a registered certificate and a real member signing key answers with
  a wrong request hash, a wrong id, a changed body, no signature, a signature bound to another request...
- Access rights at the provider: default deny, endpoint rules, encoded escapes, global and local groups.
- Interop: a logged request and response verified with the independent ``http-message-signatures`` package.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from cryptography import x509
from exchange_kit import (
    CONSUMER,
    PROBE,
    Answer,
    Crafted,
    FailingLog,
    FakeProvider,
    KeyPair,
    Probe,
    ShiftClock,
    auth_ssl,
    b64,
    call,
    craft_request,
    issue,
    kinds,
    ocsp_for,
    ocsp_refreshed,
    probed_federation,
    records,
    send_to_server_port,
    signer_of,
    swapped_log,
)
from http_message_signatures import HTTPMessageVerifier, HTTPSignatureKeyResolver, InvalidSignature, algorithms
from pkihelpers import make_pki

from gateway.central import registry
from gateway.dev.demo import Federation, start_federation
from gateway.identifiers import GlobalGroupId, ServiceId, SubsystemId
from gateway.protocol import rest, signatures
from gateway.proxy import tls
from gateway.server.runtime import SecurityServer
from gateway.serverconf.access import AccessRule, Endpoint, LocalGroupId
from gateway.trust import keys

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

OTHER_CLIENT = "DEV/GOV/1001/other"  # a second client of ss1, registered centrally
FAKESUB = "DEV/GOV/1002/fakesub"  # hosted only by the fake and rogue provider servers
ROGUE_CASES = ("unregistered", "expired", "untrusted", "revoked", "impostor")


@dataclass
class World:
    fed: Federation
    ss1: SecurityServer
    ss2: SecurityServer
    probe: Probe
    tmp: Path
    fake: FakeProvider  # registered as DEV/GOV/1002/ss3, a correct certificate
    rogues: dict[str, FakeProvider] = field(default_factory=dict)  # registered as DEV/GOV/1002/r-<case>

    def crafted(self, **kw: object) -> Crafted:
        """A request signed by ss1's member key with a fresh OCSP response, to the probe unless told."""
        signer = signer_of(self.ss1)
        kw.setdefault("service", PROBE)
        return craft_request(signer=signer, ocsp=ocsp_for(self.fed.ca, signer.cert, now=datetime.now(UTC)),
                             **kw)  # type: ignore[arg-type]

    async def send(self, crafted: Crafted, *, headers: dict[str, str] | None = None,
                   body: bytes | None = None) -> Answer:
        """Send as ss1 would: ss1's real authentication certificate, to ss2's server port."""
        return await send_to_server_port(self.ss2.server_address, auth_ssl(self.ss1, self.fed.ca), crafted,
                                         headers=headers, body=body)

    async def grant(self, service_code: str, *rules: AccessRule) -> ServiceId:
        """Add a probe-backed service on ss2 with ``rules`` and make ss2 use it now."""
        service = ServiceId.parse(f"DEV/GOV/1002/registry/{service_code}")
        await self.ss2.store.add_service(service, url=self.probe.url)
        for rule in rules:
            await self.ss2.store.grant(rule)
        await self.ss2.reload_serverconf()
        return service


async def _register(fed: Federation, code: str, address: str, cert_pem: str, *clients: str) -> None:
    engine = fed.central.engine
    server = f"DEV/GOV/1002/{code}"
    await registry.add_server(engine, server, address=address, instance="DEV")
    await registry.add_auth_cert(engine, server, cert_pem, instance="DEV")
    for client in clients:
        await registry.add_server_client(engine, server, client, instance="DEV")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("trust")
    probe = await Probe().start()
    fed = await start_federation(tmp / "fed")
    ss1, ss2 = fed.server("ss1"), fed.server("ss2")
    engine, ca, now = fed.central.engine, fed.ca, datetime.now(UTC)
    fakes: list[FakeProvider] = []
    try:
        # a second client of ss1 (so that a changed X-Road-Client still names a client ss1 hosts)
        await registry.add_subsystem(engine, OTHER_CLIENT, instance="DEV")
        await registry.add_server_client(engine, "DEV/GOV/1001/ss1", OTHER_CLIENT, instance="DEV")
        await ss1.store.add_client(SubsystemId.parse(OTHER_CLIENT), is_auth="none")
        # the probe service on ss2, granted to the consumer
        await ss2.store.add_service(ServiceId.parse(PROBE), url=probe.url)
        await ss2.store.grant(AccessRule(subject=SubsystemId.parse(CONSUMER), service=ServiceId.parse(PROBE)))
        # fake provider servers of DEV/GOV/1002 for the subsystem fakesub: member signing key from the CA
        await registry.add_subsystem(engine, FAKESUB, instance="DEV")
        member_key = issue(ca, tmp / "fake", "sign", "DEV/GOV/1002", now=now)
        member_signer = signatures.KeySigner(key=member_key.key, cert=member_key.cert)
        ss3 = issue(ca, tmp / "fake", "auth", "DEV/GOV/1002/ss3", now=now)
        fake = await FakeProvider(tls_cert=ss3.cert_path, tls_key=ss3.key_path, ca=ca, signer=member_signer).start()
        fake.other_signer = signer_of(ss1)  # member DEV/GOV/1001 signing as if it were the provider
        fakes.append(fake)
        await _register(fed, "ss3", fake.address, ss3.pem, FAKESUB)
        # rogue provider servers, one per way a TLS certificate can be wrong
        other_pki = make_pki(tmp / "other-pki", name="Untrusted CA")
        rogues: dict[str, FakeProvider] = {}
        for case in ROGUE_CASES:
            code = f"r-{case}"
            presented: KeyPair | None = None
            if case == "expired":
                presented = issue(ca, tmp / code, "auth", f"DEV/GOV/1002/{code}", now=now - timedelta(days=3),
                                  days=1)
                registered = presented.pem
            elif case == "untrusted":
                c = other_pki.issue_auth(f"DEV/GOV/1002/{code}")
                presented = KeyPair(cert=c.cert, key=c.key, cert_path=c.cert_path, key_path=c.key_path)
                registered = presented.pem
            elif case == "unregistered":  # a valid certificate, but another one is registered for the server
                presented = issue(ca, tmp / code, "auth", f"DEV/GOV/1002/{code}", now=now)
                registered = issue(ca, tmp / code, "auth", f"DEV/GOV/1002/{code}", now=now).pem
            elif case == "revoked":
                presented = issue(ca, tmp / code, "auth", f"DEV/GOV/1002/{code}", now=now)
                registered = presented.pem
                ca.revoke(presented.cert.serial_number, reason="keyCompromise", now=now)
            else:  # impostor: ss2's real certificate and key (stolen), at another server's address
                files = Path(ss2.settings.server.state_dir)
                presented = KeyPair(cert=x509.load_pem_x509_certificate((files / "auth.pem").read_bytes()),
                                    key=keys.read_private_key(files / "auth.key"), cert_path=files / "auth.pem",
                                    key_path=files / "auth.key")
                registered = issue(ca, tmp / code, "auth", f"DEV/GOV/1002/{code}", now=now).pem
            rogue = await FakeProvider(tls_cert=presented.cert_path, tls_key=presented.key_path, ca=ca,
                                       signer=member_signer).start()
            fakes.append(rogue)
            rogues[case] = rogue
            await _register(fed, code, rogue.address, registered, FAKESUB)
        await ss2.reload_serverconf()
        await ss1.reload_serverconf()
        await fed.publish_and_refresh()
        yield World(fed=fed, ss1=ss1, ss2=ss2, probe=probe, tmp=tmp, fake=fake, rogues=rogues)
    finally:
        await fed.close()
        for f in fakes:
            await f.close()
        await probe.close()


def probe_saw(world: World, request_id: str) -> bool:
    return any(s.headers.get("X-Road-Request-Id") == request_id for s in world.probe.seen)


# ---------------------------------------------------------------------------------------------------------
# Baseline: what a crafted request looks like when nothing is wrong
# ---------------------------------------------------------------------------------------------------------


async def test_crafted_request_is_accepted_and_logged_on_the_provider(world: World) -> None:
    crafted = world.crafted(method="POST", service_path="/persons/7", body=b'{"q": 1}', user_id="EE3810")
    answer = await world.send(crafted)
    assert answer.status == 200, answer.body
    assert answer.json == {"method": "POST", "path": "/persons/7", "body": '{"q": 1}'}
    assert answer.headers["X-Road-Request-Id"] == crafted.request_id
    assert "Signature" in answer.headers and "X-Road-Error" not in answer.headers
    recs = await records(world.ss2, request_id=crafted.request_id)
    assert kinds(recs) == [("request", None), ("response", 200)]
    assert recs[0].user_id == "EE3810" and recs[0].body == b'{"q": 1}'
    assert recs[0].signature_base == crafted.signed.signature_base
    assert probe_saw(world, crafted.request_id)


# ---------------------------------------------------------------------------------------------------------
# 1. Peers: authentication certificates, both directions
# ---------------------------------------------------------------------------------------------------------


async def test_rogue_client_with_unregistered_certificate_is_refused(world: World) -> None:
    # a valid certificate from the federation's CA for a server that is not registered
    rogue = issue(world.fed.ca, world.tmp / "rogue-client", "auth", "DEV/GOV/1001/rogue", now=datetime.now(UTC))
    crafted = world.crafted()  # correctly signed by the member: the connection alone must be refused
    ctx = tls.peer_client_context(str(rogue.cert_path), str(rogue.key_path), [world.fed.ca.ca_cert])
    answer = await send_to_server_port(world.ss2.server_address, ctx, crafted)
    answer.assert_error(500, "Server.ServerProxy.SslAuthenticationFailed",
                        contains="is not registered for any security server")
    assert "Signature" not in answer.headers
    assert await records(world.ss2, request_id=crafted.request_id) == []
    assert not probe_saw(world, crafted.request_id)


async def test_rogue_client_with_registered_but_revoked_certificate_is_refused(world: World) -> None:
    # a second authentication certificate registered for ss1, then revoked
    now = datetime.now(UTC)
    extra = issue(world.fed.ca, world.tmp / "ss1-extra", "auth", "DEV/GOV/1001/ss1", now=now)
    await registry.add_auth_cert(world.fed.central.engine, "DEV/GOV/1001/ss1", extra.pem, instance="DEV")
    await world.fed.publish_and_refresh()
    world.fed.ca.revoke(extra.cert.serial_number, reason="keyCompromise", now=now)
    crafted = world.crafted()
    ctx = tls.peer_client_context(str(extra.cert_path), str(extra.key_path), [world.fed.ca.ca_cert])
    answer = await send_to_server_port(world.ss2.server_address, ctx, crafted)
    answer.assert_error(500, "Server.ServerProxy.SslAuthenticationFailed", contains="is revoked")
    assert await records(world.ss2, request_id=crafted.request_id) == []
    assert not probe_saw(world, crafted.request_id)


@pytest.mark.parametrize("case", ["expired", "untrusted"])
async def test_rogue_client_failing_the_handshake_is_refused_before_http(world: World, case: str) -> None:
    # expired or untrusted certificates never complete TLS: no HTTP request is read, nothing can be logged
    now = datetime.now(UTC)
    if case == "expired":
        c = issue(world.fed.ca, world.tmp / "old-client", "auth", "DEV/GOV/1001/ss1", now=now - timedelta(days=5),
                  days=1)
        cert_path, key_path = c.cert_path, c.key_path
    else:
        other = make_pki(world.tmp / f"client-{uuid.uuid4().hex[:6]}", name="Another CA").issue_auth(
            "DEV/GOV/1001/ss1")
        cert_path, key_path = other.cert_path, other.key_path
    crafted = world.crafted()
    ctx = tls.peer_client_context(str(cert_path), str(key_path), [world.fed.ca.ca_cert])
    with pytest.raises(aiohttp.ClientConnectionError):
        await send_to_server_port(world.ss2.server_address, ctx, crafted)
    assert await records(world.ss2, request_id=crafted.request_id) == []
    assert not probe_saw(world, crafted.request_id)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unregistered", "is not registered for any security server"),
        ("expired", "certificate has expired"),
        ("untrusted", "unable to get local issuer certificate"),
        ("revoked", "is revoked according to OCSP"),
        ("impostor", "is registered for DEV/GOV/1002/ss2, not for DEV/GOV/1002/r-impostor"),
    ],
)
async def test_client_side_refuses_rogue_provider_server(world: World, case: str, message: str) -> None:
    message_id = f"DEV-rogue-{case}-{uuid.uuid4()}"
    answer = await call(world.ss1, f"{FAKESUB}/svc/ok", headers={
        "X-Road-Security-Server": f"DEV/GOV/1002/r-{case}", "X-Road-Id": message_id,
    })
    answer.assert_error(500, "Server.ClientProxy.SslAuthenticationFailed", contains=message)
    assert world.rogues[case].seen == []  # not one request byte reached the rogue server
    # the consumer's log holds the signed request (written before sending), and no response
    assert kinds(await records(world.ss1, message_id=message_id)) == [("request", None)]


async def test_client_side_accepts_the_registered_fake_provider(world: World) -> None:
    # the counterpart of the rogue cases: the same fake code with a registered certificate is accepted
    message_id = f"DEV-fake-ok-{uuid.uuid4()}"
    answer = await call(world.ss1, f"{FAKESUB}/svc/ok", headers={
        "X-Road-Security-Server": "DEV/GOV/1002/ss3", "X-Road-Id": message_id,
    })
    assert answer.status == 200, answer.body
    assert answer.json == {"answer": "from the provider"}
    recs = await records(world.ss1, message_id=message_id)
    assert kinds(recs) == [("request", None), ("response", 200)]
    assert x509.load_der_x509_certificate(recs[1].signing_cert) == world.fake.signer.cert


# ---------------------------------------------------------------------------------------------------------
# 2. Tampering with requests between the servers
# ---------------------------------------------------------------------------------------------------------


def _flip_signature(value: str) -> str:
    raw = bytearray(base64.b64decode(value.split(":")[1]))
    raw[10] ^= 0x01
    return f"xroad=:{b64(bytes(raw))}:"


def _der(world: World, code: str) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return signer_of(world.fed.server(code)).cert.public_bytes(serialization.Encoding.DER)


Tamper = Callable[[World, Crafted], tuple[dict[str, str], bytes]]


def _headers(c: Crafted, **changes: str | None) -> dict[str, str]:
    out = dict(c.headers)
    for name, value in changes.items():
        key = name.replace("_", "-")
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


TAMPERING: list[tuple[str, Tamper, str, str]] = [
    ("body changed", lambda w, c: (c.headers, c.body + b" "),
     "Server.ServerProxy.InvalidSignatureValue", "Content-Digest"),
    ("user id changed", lambda w, c: (_headers(c, x_road_userid="EE0000"), c.body),
     "Server.ServerProxy.InvalidSignatureValue", "does not verify"),
    ("client changed to another client of ss1", lambda w, c: (_headers(c, x_road_client=OTHER_CLIENT), c.body),
     "Server.ServerProxy.InvalidSignatureValue", "does not verify"),
    ("client changed to a client ss1 does not host",
     lambda w, c: (_headers(c, x_road_client="DEV/GOV/1002/registry"), c.body),
     "Server.ServerProxy.SslAuthenticationFailed", "does not host client"),
    ("unsigned X-Road-Issue slipped in", lambda w, c: (_headers(c, x_road_issue="INC-1"), c.body),
     "Server.ServerProxy.MalformedSignature", "x-road-issue"),
    ("signature value flipped", lambda w, c: (_headers(c, signature=_flip_signature(c.headers["signature"])), c.body),
     "Server.ServerProxy.InvalidSignatureValue", "does not verify"),
    ("stapled certificate swapped for another member's",
     lambda w, c: (_headers(c, x_road_signing_cert=b64(_der(w, "ss2"))), c.body),
     "Server.ServerProxy.MalformedSignature", "keyid"),
    ("service header changed", lambda w, c: (_headers(c, x_road_service="DEV/GOV/1002/registry/persons"), c.body),
     "Server.ServerProxy.MalformedSignature", "X-Road-Service does not match"),
    ("request id changed", lambda w, c: (_headers(c, x_road_request_id=str(uuid.uuid4())), c.body),
     "Server.ServerProxy.InvalidSignatureValue", "does not verify"),
    ("signature removed", lambda w, c: (_headers(c, signature=None, signature_input=None), c.body),
     "Server.ServerProxy.MissingSignature", "Signature"),
    ("content digest removed", lambda w, c: (_headers(c, content_digest=None), c.body),
     "Server.ServerProxy.MissingSignature", "Content-Digest"),
    ("signature label renamed", lambda w, c: (_headers(
        c, signature=c.headers["signature"].replace("xroad=", "other="),
        signature_input=c.headers["signature-input"].replace("xroad=", "other=")), c.body),
     "Server.ServerProxy.MissingSignature", "xroad"),
]


@pytest.mark.parametrize(("what", "tamper", "xroad_type", "message"), TAMPERING, ids=[t[0] for t in TAMPERING])
async def test_tampered_request_is_refused_unsigned_and_not_logged(
    world: World, what: str, tamper: Tamper, xroad_type: str, message: str,
) -> None:
    crafted = world.crafted(method="POST", service_path="/persons/1", body=b'{"q": 1}', user_id="EE3810")
    headers, body = tamper(world, crafted)
    answer = await world.send(crafted, headers=headers, body=body)
    answer.assert_error(500, xroad_type, contains=message)
    assert "Signature" not in answer.headers  # refused before verification: nothing to bind a signature to
    assert await records(world.ss2, request_id=headers.get("x-road-request-id", crafted.request_id)) == []
    assert await records(world.ss2, request_id=crafted.request_id) == []
    assert not probe_saw(world, crafted.request_id)


@pytest.mark.parametrize(
    ("target", "xroad_type", "message"),
    [
        ({"method": "DELETE"}, "Server.ServerProxy.InvalidSignatureValue", "does not verify"),
        ({"path": "/r1/DEV/GOV/1002/registry/probe/persons/2"}, "Server.ServerProxy.InvalidSignatureValue",
         "does not verify"),
        ({"query": "all=true"}, "Server.ServerProxy.InvalidSignatureValue", "does not verify"),
    ],
)
async def test_changed_method_path_or_query_is_refused(
    world: World, target: dict[str, str], xroad_type: str, message: str,
) -> None:
    crafted = world.crafted(method="POST", service_path="/persons/1", body=b'{"q": 1}')
    for name, value in target.items():
        setattr(crafted, name, value)
    answer = await world.send(crafted)
    answer.assert_error(500, xroad_type, contains=message)
    assert await records(world.ss2, request_id=crafted.request_id) == []
    assert not probe_saw(world, crafted.request_id)


async def test_replayed_request_is_refused_and_logged_once(world: World) -> None:
    crafted = world.crafted(method="POST", service_path="/transfer", body=b'{"amount": 100}')
    first = await world.send(crafted)
    assert first.status == 200, first.body
    again = await world.send(crafted)  # byte for byte the same request
    again.assert_error(500, "Server.ServerProxy.ReplayedRequest", contains="was already received")
    # the same request id signed afresh is a replay too: the id is the key, not the signature
    resigned = world.crafted(method="POST", service_path="/transfer", body=b'{"amount": 100}',
                             request_id=crafted.request_id)
    (await world.send(resigned)).assert_error(500, "Server.ServerProxy.ReplayedRequest", contains="already")
    assert kinds(await records(world.ss2, request_id=crafted.request_id)) == [("request", None), ("response", 200)]
    assert sum(s.headers.get("X-Road-Request-Id") == crafted.request_id for s in world.probe.seen) == 1


async def test_same_message_id_with_a_new_request_id_is_a_legitimate_retry(world: World) -> None:
    first = world.crafted()
    retry = world.crafted(message_id=first.headers["x-road-id"])  # a client system retrying: new request id
    for c in (first, retry):
        assert (await world.send(c)).status == 200
    recs = await records(world.ss2, message_id=first.headers["x-road-id"])
    assert [(r.request_id, r.kind) for r in recs] == [
        (first.request_id, "request"), (first.request_id, "response"),
        (retry.request_id, "request"), (retry.request_id, "response"),
    ]


@pytest.mark.parametrize("shift", [-3600, -121, 121, 3600])
async def test_created_outside_the_allowed_skew_is_refused(world: World, shift: int) -> None:
    created = int(datetime.now(UTC).timestamp()) + shift  # the allowed skew is 60 s
    crafted = world.crafted(created=created)
    answer = await world.send(crafted)
    answer.assert_error(500, "Server.ServerProxy.InvalidSignatureTime", contains=str(created))
    assert await records(world.ss2, request_id=crafted.request_id) == []
    assert not probe_saw(world, crafted.request_id)


async def test_request_signed_by_another_member_is_refused(world: World) -> None:
    # member DEV/GOV/1002's real key and certificate, claiming a client of DEV/GOV/1001
    signer = signer_of(world.ss2)
    crafted = craft_request(signer=signer, ocsp=ocsp_for(world.fed.ca, signer.cert, now=datetime.now(UTC)),
                            service=PROBE)
    answer = await world.send(crafted)
    answer.assert_error(500, "Server.ServerProxy.CertValidation",
                        contains="signed by DEV/GOV/1002, but it must be signed by DEV/GOV/1001")
    assert await records(world.ss2, request_id=crafted.request_id) == []
    assert not probe_saw(world, crafted.request_id)


def _signing_cases() -> list[str]:
    return ["revoked", "stale-ocsp", "ocsp-of-another-cert", "untrusted-ca", "auth-cert-as-signing-cert"]


@pytest.mark.parametrize("case", _signing_cases())
async def test_request_with_bad_signing_certificate_is_refused(world: World, case: str) -> None:
    now = datetime.now(UTC)
    ca = world.fed.ca
    expected = {
        "revoked": ("Server.ServerProxy.CertValidation", "is revoked"),
        "stale-ocsp": ("Server.ServerProxy.IncorrectValidationInfo", "OCSP"),
        "ocsp-of-another-cert": ("Server.ServerProxy.IncorrectValidationInfo", "OCSP"),
        "untrusted-ca": ("Server.ServerProxy.CertValidation", "not issued by a CA trusted"),
        "auth-cert-as-signing-cert": ("Server.ServerProxy.CertValidation", "not a signing certificate"),
    }[case]
    if case == "untrusted-ca":
        c = make_pki(world.tmp / f"sign-{uuid.uuid4().hex[:6]}", name="Another CA").issue_sign("DEV/GOV/1001")
        pair = KeyPair(cert=c.cert, key=c.key, cert_path=c.cert_path, key_path=c.key_path)
        ocsp = ocsp_for(ca, signer_of(world.ss1).cert, now=now)  # any well-formed response
    elif case == "auth-cert-as-signing-cert":
        pair = issue(ca, world.tmp / "sign-bad", "auth", "DEV/GOV/1001/ss1", now=now)
        ocsp = ocsp_for(ca, pair.cert, now=now)
    else:
        pair = issue(ca, world.tmp / "sign-bad", "sign", "DEV/GOV/1001", now=now)
        if case == "revoked":
            ca.revoke(pair.cert.serial_number, reason="keyCompromise", now=now)
            ocsp = ocsp_for(ca, pair.cert, now=now)
        elif case == "stale-ocsp":
            ocsp = ocsp_for(ca, pair.cert, now=now - timedelta(hours=2))  # freshness is 1 h
        else:
            ocsp = ocsp_for(ca, signer_of(world.ss1).cert, now=now)
    crafted = craft_request(signer=signatures.KeySigner(key=pair.key, cert=pair.cert), ocsp=ocsp, service=PROBE)
    answer = await world.send(crafted)
    answer.assert_error(500, expected[0], contains=expected[1])
    assert await records(world.ss2, request_id=crafted.request_id) == []
    assert not probe_saw(world, crafted.request_id)


# ---------------------------------------------------------------------------------------------------------
# 2b. Tampering with responses: a fake provider server with a registered certificate
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "xroad_type", "message"),
    [
        ("wrong-hash", "Server.ClientProxy.InconsistentResponse", "x-road-request-hash"),
        ("wrong-id", "Server.ClientProxy.InconsistentResponse", "x-road-id"),
        ("wrong-request-id", "Server.ClientProxy.InconsistentResponse", "x-road-request-id"),
        ("tampered-body", "Server.ClientProxy.InvalidSignatureValue", "Content-Digest"),
        ("tampered-status", "Server.ClientProxy.InvalidSignatureValue", "does not verify"),
        ("unsigned", "Server.ClientProxy.MissingSignature", "Signature"),
        ("other-request", "Server.ClientProxy.InvalidSignatureValue", "does not verify"),
        ("wrong-member", "Server.ClientProxy.CertValidation", "must be signed by DEV/GOV/1002"),
        ("old", "Server.ClientProxy.InvalidSignatureTime", "created"),
    ],
)
async def test_bad_response_from_provider_server_is_refused(
    world: World, mode: str, xroad_type: str, message: str,
) -> None:
    message_id = f"DEV-fake-{mode}-{uuid.uuid4()}"
    answer = await call(world.ss1, f"{FAKESUB}/svc/{mode}", headers={
        "X-Road-Security-Server": "DEV/GOV/1002/ss3", "X-Road-Id": message_id,
    })
    answer.assert_error(500, xroad_type, contains=message)
    assert b"from the provider" not in answer.body and b"changed on the way" not in answer.body
    # the request reached the fake provider; ss1 logged it, and accepted no response
    assert [s.headers["X-Road-Id"] for s in world.fake.seen].count(message_id) == 1
    assert kinds(await records(world.ss1, message_id=message_id)) == [("request", None)]


@pytest.mark.parametrize("mode", ["wrong-hash", "unsigned", "good"])
async def test_a_response_with_an_unwritable_request_record_answers_the_log_error(world: World, mode: str) -> None:
    # The consumer's request record commits while the request travels; whether the response verifies or not,
    # the answer waits for that record, and its failed write is the answer (docs/messagelog.md section 11).
    # Here the write fails once the request has reached the provider's server.
    message_id = f"DEV-fake-nolog-{mode}-{uuid.uuid4()}"
    world.fake.arrived.clear()
    async with swapped_log(world.ss1, FailingLog("request", "response", after=world.fake.arrived)) as failing:
        answer = await call(world.ss1, f"{FAKESUB}/svc/{mode}", headers={
            "X-Road-Security-Server": "DEV/GOV/1002/ss3", "X-Road-Id": message_id,
        })
        answer.assert_error(500, "Server.ClientProxy.LoggingFailed", contains="No space left on device")
        assert failing.stats.failed_batches == 1 and failing.stats.batches == 0
    assert b"from the provider" not in answer.body
    assert [s.headers["X-Road-Id"] for s in world.fake.seen].count(message_id) == 1  # it did travel


# ---------------------------------------------------------------------------------------------------------
# 3. Access rights at the provider: default deny, endpoints, escapes, groups
# ---------------------------------------------------------------------------------------------------------


async def test_service_without_grant_is_denied_signed_and_logged_on_both_sides(world: World) -> None:
    await world.grant("acl-none")  # the service exists; nobody is granted
    message_id = f"DEV-deny-{uuid.uuid4()}"
    seen_before = len(world.probe.seen)
    answer = await call(world.ss1, "DEV/GOV/1002/registry/acl-none/x", headers={"X-Road-Id": message_id})
    answer.assert_error(500, "Server.ServerProxy.AccessDenied",
                        contains="client SUBSYSTEM:DEV/GOV/1001/consumer is not allowed to call GET /x")
    assert len(world.probe.seen) == seen_before
    request_id = answer.headers["X-Road-Request-Id"]  # a signed refusal, bound to the request
    for server in (world.ss1, world.ss2):
        recs = await records(server, request_id=request_id)
        assert kinds(recs) == [("request", None), ("response", 500)]
        assert b"Server.ServerProxy.AccessDenied" in (recs[1].body or b"")
        assert recs[1].signature_base.endswith(b'tag="x-road-r1"')


ENDPOINT_CASES = [
    # method, service path sent, status, error type, path the service gets (the one the rule was checked on)
    ("GET", "/persons/1", 200, None, "/persons/1"),
    ("GET", "/persons/%31", 200, None, "/persons/1"),  # an unreserved escape is decoded before matching
    ("GET", "/persons//1", 200, None, "/persons/1"),  # empty segments collapse
    ("GET", "/persons/1?full=true&x=%2F", 200, None, "/persons/1?full=true&x=%2F"),  # the query stays raw
    ("GET", "/admin/../persons/1", 200, None, "/persons/1"),  # not /admin/..: a router would see /admin/
    ("GET", "/admin/%2E%2E/persons/1", 200, None, "/persons/1"),
    ("POST", "/persons/1", 500, "Server.ServerProxy.AccessDenied", None),
    ("GET", "/persons", 500, "Server.ServerProxy.AccessDenied", None),
    ("GET", "/persons/1/documents", 500, "Server.ServerProxy.AccessDenied", None),
    ("GET", "/companies/1", 500, "Server.ServerProxy.AccessDenied", None),
    ("GET", "/persons/%2E%2E/admin", 500, "Server.ServerProxy.AccessDenied", None),  # normalised to /admin
    ("GET", "/persons/1/../../admin", 500, "Server.ServerProxy.AccessDenied", None),
    ("GET", "/persons/%2e%2e/%2e%2e/etc", 400, "Client.BadRequest", None),  # climbs above /
    ("GET", "/persons/..%2Fadmin", 400, "Client.BadRequest", None),  # encoded slash
    ("GET", "/persons/%2F..%2Fadmin", 400, "Client.BadRequest", None),
    ("GET", "/persons/%252E%252E/admin", 400, "Client.BadRequest", None),  # double encoding
    ("GET", "/persons/%252F", 400, "Client.BadRequest", None),
    ("GET", "/persons/1/..;/admin", 400, "Client.BadRequest", None),  # servlet-style dot segment
    ("GET", "/persons/%00", 400, "Client.BadRequest", None),  # encoded control character
    ("GET", "/persons/%5C..%5Cadmin", 400, "Client.BadRequest", None),  # encoded backslash
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def endpoint_service(world: World) -> ServiceId:
    service = ServiceId.parse("DEV/GOV/1002/registry/acl-endpoint")
    return await world.grant("acl-endpoint", AccessRule(subject=SubsystemId.parse(CONSUMER), service=service,
                                                        endpoint=Endpoint(method="GET", path="/persons/*")))


@pytest.mark.parametrize(("method", "path", "status", "xroad_type", "served"), ENDPOINT_CASES,
                         ids=[f"{c[0]} {c[1]}" for c in ENDPOINT_CASES])
async def test_endpoint_rules_match_the_normalised_path_which_the_service_gets(
    world: World, endpoint_service: ServiceId, method: str, path: str, status: int, xroad_type: str | None,
    served: str | None,
) -> None:
    message_id = f"DEV-ep-{uuid.uuid4()}"
    answer = await call(world.ss1, f"{endpoint_service}{path}", method=method, headers={"X-Road-Id": message_id})
    seen = [s for s in world.probe.seen if s.headers.get("X-Road-Id") == message_id]
    if xroad_type is None:
        assert answer.status == status, answer.body
        assert answer.json["path"] == served
        assert len(seen) == 1
    else:
        answer.assert_error(status, xroad_type)
        assert seen == []
    for server in (world.ss1, world.ss2):
        assert kinds(await records(server, message_id=message_id)) == [("request", None), ("response", status)]


async def test_global_group_grant(world: World) -> None:
    engine = world.fed.central.engine
    readers, others = GlobalGroupId.parse("DEV/readers"), GlobalGroupId.parse("DEV/others")
    await registry.add_group(engine, readers, description="may read", instance="DEV")
    await registry.add_group(engine, others, description="may not", instance="DEV")
    await registry.add_group_member(engine, readers, CONSUMER, instance="DEV")
    await registry.add_group_member(engine, others, OTHER_CLIENT, instance="DEV")
    await world.fed.publish_and_refresh()
    granted = ServiceId.parse("DEV/GOV/1002/registry/acl-global")
    refused = ServiceId.parse("DEV/GOV/1002/registry/acl-global-other")
    await world.grant("acl-global", AccessRule(subject=readers, service=granted))
    await world.grant("acl-global-other", AccessRule(subject=others, service=refused))
    ok = await call(world.ss1, f"{granted}/x")
    assert ok.status == 200, ok.body
    (await call(world.ss1, f"{refused}/x")).assert_error(500, "Server.ServerProxy.AccessDenied")
    # leaving the group (a new global configuration) takes the right away
    await registry.remove_group_member(engine, readers, CONSUMER, instance="DEV")
    await world.fed.publish_and_refresh()
    (await call(world.ss1, f"{granted}/x")).assert_error(500, "Server.ServerProxy.AccessDenied")


async def test_local_group_grant(world: World) -> None:
    store = world.ss2.store
    partners, strangers = LocalGroupId(code="partners"), LocalGroupId(code="strangers")
    await store.add_group(partners, description="partners")
    await store.add_group(strangers, description="strangers")
    await store.add_group_member(partners, SubsystemId.parse(CONSUMER))
    granted = ServiceId.parse("DEV/GOV/1002/registry/acl-local")
    refused = ServiceId.parse("DEV/GOV/1002/registry/acl-local-other")
    await world.grant("acl-local", AccessRule(subject=partners, service=granted))
    await world.grant("acl-local-other", AccessRule(subject=strangers, service=refused))
    ok = await call(world.ss1, f"{granted}/x")
    assert ok.status == 200, ok.body
    (await call(world.ss1, f"{refused}/x")).assert_error(500, "Server.ServerProxy.AccessDenied")
    await store.remove_group_member(partners, SubsystemId.parse(CONSUMER))
    await world.ss2.reload_serverconf()
    (await call(world.ss1, f"{granted}/x")).assert_error(500, "Server.ServerProxy.AccessDenied")


# ---------------------------------------------------------------------------------------------------------
# 6. Interop: a logged exchange checked with an independent RFC 9421 implementation
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Message:
    method: str
    url: str
    headers: dict[str, str]


@dataclass
class _Response:
    status_code: int
    request: _Message
    headers: dict[str, str]


class _Stapled(HTTPSignatureKeyResolver):
    def __init__(self, cert_der: bytes) -> None:
        self.cert = x509.load_der_x509_certificate(cert_der)
        self.keyid = hashlib.sha256(cert_der).hexdigest()

    def resolve_public_key(self, key_id: str):  # type: ignore[no-untyped-def]
        assert key_id == self.keyid
        return self.cert.public_key()


def _headers_from_base(base: bytes) -> dict[str, str]:
    """The header fields a signature base shows (``"name": value`` lines that are not derived components)."""
    out = {}
    for line in base.decode("ascii").split("\n"):
        name, _, value = line.partition(": ")
        if name.startswith('"') and not name.startswith('"@') and ";" not in name:
            out[name.strip('"')] = value
    return out


async def test_logged_exchange_verifies_with_an_independent_implementation(world: World) -> None:
    message_id = f"DEV-interop-{uuid.uuid4()}"
    body = b'{"query": "interop"}'
    answer = await call(world.ss1, f"{PROBE}/persons/1?full=true", method="POST", data=body, headers={
        "X-Road-Id": message_id, "X-Road-UserId": "EE12345678901", "Content-Type": "application/json",
    })
    assert answer.status == 200, answer.body
    request, response = await records(world.ss2, message_id=message_id)
    assert (request.kind, response.kind) == ("request", "response")
    # the request, rebuilt from the provider's log record alone
    headers = _headers_from_base(request.signature_base)
    headers["signature-input"], headers["signature"] = request.signature_input, request.signature
    req = _Message(request.method, f"https://any-host{request.path}", headers)
    [result] = HTTPMessageVerifier(signature_algorithm=algorithms.ECDSA_P256_SHA256,
                                   key_resolver=_Stapled(request.signing_cert)).verify(
        req, expect_tag="x-road-r1", body=request.body,
        require_components=("@method", "@path", "@query", "content-digest", "x-road-client", "x-road-service",
                            "x-road-id", "x-road-request-id", "x-road-userid", "x-road-signing-cert",
                            "x-road-signing-ocsp"))
    assert result.covered_components['"x-road-userid"'] == "EE12345678901"
    assert result.body == body
    # the response, bound to that request, from the consumer's log record
    _, consumer_response = await records(world.ss1, message_id=message_id)
    assert consumer_response.signature == response.signature
    resp_headers = _headers_from_base(consumer_response.signature_base)
    resp_headers["signature-input"] = consumer_response.signature_input
    resp_headers["signature"] = consumer_response.signature
    resp = _Response(200, req, resp_headers)
    [resp_result] = HTTPMessageVerifier(signature_algorithm=algorithms.ECDSA_P256_SHA256,
                                        key_resolver=_Stapled(consumer_response.signing_cert)).verify(
        resp, expect_tag="x-road-r1", body=consumer_response.body,
        require_components=("@status", "content-digest", "x-road-request-hash", '"signature";req;key="xroad"'))
    assert resp_result.body == answer.body
    # and a byte changed in the logged request no longer verifies
    headers["x-road-userid"] = "EE00000000000"
    with pytest.raises(InvalidSignature):
        HTTPMessageVerifier(signature_algorithm=algorithms.ECDSA_P256_SHA256,
                            key_resolver=_Stapled(request.signing_cert)).verify(req, expect_tag="x-road-r1")


# ---------------------------------------------------------------------------------------------------------
# Revocation while connections and caches are warm (own federations: they revoke and move the clock)
# ---------------------------------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def clocked(tmp_path: Path) -> AsyncIterator[tuple[Federation, ShiftClock, Probe]]:
    clock = ShiftClock()
    async with probed_federation(tmp_path / "fed", clock=clock) as (fed, probe):
        yield fed, clock, probe


async def test_revoked_consumer_server_is_refused_once_the_ocsp_cache_expires(
    clocked: tuple[Federation, ShiftClock, Probe],
) -> None:
    fed, clock, probe = clocked
    ss1, ss2 = fed.server("ss1"), fed.server("ss2")
    assert (await call(ss1, f"{PROBE}/warm")).status == 200  # caches and a pooled connection are warm
    auth = x509.load_pem_x509_certificate(Path(ss1.files.auth_cert).read_bytes())
    fed.ca.revoke(auth.serial_number, reason="keyCompromise", now=clock())
    clock.advance(ss2.settings.server.ocsp_refresh_seconds + 1)  # the cached "good" answer is now too old
    await ocsp_refreshed(fed)  # the refresh runs in the background
    message_id = f"DEV-revoked-{uuid.uuid4()}"
    answer = await call(ss1, f"{PROBE}/after", headers={"X-Road-Id": message_id})
    answer.assert_error(500, "Server.ServerProxy.SslAuthenticationFailed", contains="is revoked")
    assert [s.path_qs for s in probe.seen] == ["/warm"]
    assert await records(ss2, message_id=message_id) == []
    assert kinds(await records(ss1, message_id=message_id)) == [("request", None)]


async def test_revoked_provider_server_is_refused_on_a_pooled_connection(
    clocked: tuple[Federation, ShiftClock, Probe],
) -> None:
    fed, clock, probe = clocked
    ss1, ss2 = fed.server("ss1"), fed.server("ss2")
    assert (await call(ss1, f"{PROBE}/warm")).status == 200  # the kept-alive connection stays in ss1's pool
    auth = x509.load_pem_x509_certificate(Path(ss2.files.auth_cert).read_bytes())
    fed.ca.revoke(auth.serial_number, reason="keyCompromise", now=clock())
    clock.advance(ss1.settings.server.ocsp_refresh_seconds + 1)
    await ocsp_refreshed(fed)  # the refresh runs in the background
    message_id = f"DEV-revoked-provider-{uuid.uuid4()}"
    answer = await call(ss1, f"{PROBE}/after", headers={"X-Road-Id": message_id})
    answer.assert_error(500, "Server.ClientProxy.SslAuthenticationFailed", contains="is revoked")
    assert [s.path_qs for s in probe.seen] == ["/warm"]
    assert await records(ss2, message_id=message_id) == []
    assert kinds(await records(ss1, message_id=message_id)) == [("request", None)]


async def test_revoked_signing_certificate_stops_the_consumer_from_signing(
    clocked: tuple[Federation, ShiftClock, Probe],
) -> None:
    fed, clock, probe = clocked
    ss1, ss2 = fed.server("ss1"), fed.server("ss2")
    assert (await call(ss1, f"{PROBE}/warm")).status == 200
    fed.ca.revoke(signer_of(ss1).cert.serial_number, reason="keyCompromise", now=clock())
    clock.advance(ss1.settings.server.ocsp_refresh_seconds + 1)
    await ocsp_refreshed(fed)  # the refresh runs in the background
    message_id = f"DEV-revoked-sign-{uuid.uuid4()}"
    answer = await call(ss1, f"{PROBE}/after", headers={"X-Road-Id": message_id})
    answer.assert_error(500, "Server.ClientProxy.CertValidation", contains="revoked")
    assert [s.path_qs for s in probe.seen] == ["/warm"]
    assert await records(ss1, message_id=message_id) == []
    assert await records(ss2, message_id=message_id) == []


async def test_deregistered_consumer_server_is_refused_by_the_provider(
    clocked: tuple[Federation, ShiftClock, Probe],
) -> None:
    fed, _clock, probe = clocked
    ss1, ss2 = fed.server("ss1"), fed.server("ss2")
    assert (await call(ss1, f"{PROBE}/warm")).status == 200
    auth = x509.load_pem_x509_certificate(Path(ss1.files.auth_cert).read_bytes())
    await registry.remove_auth_cert(fed.central.engine, "DEV/GOV/1001/ss1", keys.cert_sha256_hex(auth),
                                    instance="DEV")
    await fed.publish_and_refresh()  # a new configuration: cached acceptances are void at once
    message_id = f"DEV-deregistered-{uuid.uuid4()}"
    answer = await call(ss1, f"{PROBE}/after", headers={"X-Road-Id": message_id})
    answer.assert_error(500, "Server.ServerProxy.SslAuthenticationFailed", contains="is not registered")
    assert [s.path_qs for s in probe.seen] == ["/warm"]
    assert await records(ss2, message_id=message_id) == []


async def test_deregistered_provider_server_is_refused_on_a_pooled_connection(
    clocked: tuple[Federation, ShiftClock, Probe],
) -> None:
    fed, _clock, probe = clocked
    ss1, ss2 = fed.server("ss1"), fed.server("ss2")
    assert (await call(ss1, f"{PROBE}/warm")).status == 200
    auth = x509.load_pem_x509_certificate(Path(ss2.files.auth_cert).read_bytes())
    await registry.remove_auth_cert(fed.central.engine, "DEV/GOV/1002/ss2", keys.cert_sha256_hex(auth),
                                    instance="DEV")
    await fed.publish_and_refresh()
    message_id = f"DEV-deregistered-provider-{uuid.uuid4()}"
    answer = await call(ss1, f"{PROBE}/after", headers={"X-Road-Id": message_id})
    answer.assert_error(500, "Server.ClientProxy.SslAuthenticationFailed", contains="is not registered")
    assert [s.path_qs for s in probe.seen] == ["/warm"]
    assert await records(ss2, message_id=message_id) == []
    assert kinds(await records(ss1, message_id=message_id)) == [("request", None)]


# ---------------------------------------------------------------------------------------------------------
# What a service puts in its response
# ---------------------------------------------------------------------------------------------------------


async def test_service_x_road_headers_travel_signed_and_server_headers_cannot_be_forged(world: World) -> None:
    message_id = f"DEV-service-headers-{uuid.uuid4()}"
    answer = await call(world.ss1, f"{PROBE}/xroad-headers", headers={"X-Road-Id": message_id})
    assert answer.status == 200, answer.body
    assert answer.headers["X-Road-UserId"] == "set-by-service"
    assert answer.headers["X-Road-Custom"] == "1"
    assert answer.headers["X-Road-Request-Hash"] != "forged"  # only the provider's server sets it
    for server in (world.ss1, world.ss2):
        _, response = await records(server, message_id=message_id)
        assert b'"x-road-userid": set-by-service' in response.signature_base
        assert b'"x-road-custom": 1' in response.signature_base
        assert b"forged" not in response.signature_base


async def test_provider_whose_signing_certificate_is_revoked_calls_no_service(
    clocked: tuple[Federation, ShiftClock, Probe],
) -> None:
    fed, clock, probe = clocked
    ss1, ss2 = fed.server("ss1"), fed.server("ss2")
    assert (await call(ss1, f"{PROBE}/warm")).status == 200
    fed.ca.revoke(signer_of(ss2).cert.serial_number, reason="keyCompromise", now=clock())
    clock.advance(ss2.settings.server.ocsp_refresh_seconds + 1)
    await ocsp_refreshed(fed)  # the refresh runs in the background
    message_id = f"DEV-provider-cannot-sign-{uuid.uuid4()}"
    answer = await call(ss1, f"{PROBE}/after", headers={"X-Road-Id": message_id})
    # it could not sign the answer, so it must not have asked the service (nor logged a request it cannot answer)
    answer.assert_error(500, "Server.ServerProxy.CertValidation", contains="our signing certificate is revoked")
    assert [s.path_qs for s in probe.seen] == ["/warm"]
    assert await records(ss2, message_id=message_id) == []
    assert kinds(await records(ss1, message_id=message_id)) == [("request", None)]


async def test_provider_request_hash_follows_pr_rest(world: World) -> None:
    # PR-REST 4.3: base64(SHA-512(SHA-512(header part) || SHA-512(body))), the header part being the request as
    # the provider received it. Accept is given so that the HTTP client adds no header of its own.
    body = b'{"query": "hash me"}'
    crafted = world.crafted(method="POST", service_path="/items", query="x=1", body=body)
    headers = {"Accept": "application/json", **crafted.headers}
    answer = await world.send(crafted, headers=headers)
    assert answer.status == 200, answer.body[:300]
    header_part = rest.request_header_part("POST", crafted.path, "x=1", list(headers.items()))
    expected = base64.b64encode(hashlib.sha512(
        hashlib.sha512(header_part).digest() + hashlib.sha512(body).digest()
    ).digest()).decode()
    assert answer.headers["X-Road-Request-Hash"] == expected
    # and not the value a SHA-256 body digest would give
    assert expected != rest.request_hash(header_part, hashlib.sha256(body).digest())
