"""The signing profile checked with an independent RFC 9421 implementation (the ``http-message-signatures``
package): it verifies what we sign, rejects what was tampered with, and we verify what it signs.

``http-message-signatures`` checks ``created`` against the real clock, so these tests sign with the current
time.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from faultside import CLIENT_PROXY, SERVER_PROXY, detected_at
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)
from pkihelpers import make_cert

from gateway.errors import TrustError
from gateway.protocol import signatures

PROVIDER_URL = "https://ss2.example.org:5500"  # authority is not covered: any address or balancer works
PATH, QUERY = "/r1/DEV/GOV/1002/registry/persons/v1/p/1", "full=true&x=%2F"
BODY = b'{"query": "1234"}'
OCSP = b"\x30\x03\x0a\x01\x00"
REQUEST_COMPONENTS = (
    "@method",
    "@path",
    "@query",
    "content-digest",
    "x-road-client",
    "x-road-service",
    "x-road-id",
    "x-road-request-id",
    "x-road-userid",
    "x-road-signing-cert",
    "x-road-signing-ocsp",
)
RESPONSE_COMPONENTS = (
    "@status",
    "content-digest",
    "x-road-client",
    "x-road-service",
    "x-road-id",
    "x-road-request-id",
    "x-road-request-hash",
    "x-road-signing-cert",
    "x-road-signing-ocsp",
    '"signature";req;key="xroad"',
)


@dataclass
class Request:
    """The message shape http-message-signatures reads: method, absolute URL, headers."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Response:
    status_code: int
    request: Request
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Party:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    signer: signatures.KeySigner

    @property
    def keyid(self) -> str:
        return signatures.cert_keyid(self.cert)


def make_party(cn: str) -> Party:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_cert(key, cn)
    return Party(key=key, cert=cert, signer=signatures.KeySigner(key=key, cert=cert))


@pytest.fixture(scope="module")
def consumer() -> Party:
    return make_party("consumer signing")


@pytest.fixture(scope="module")
def provider() -> Party:
    return make_party("provider signing")


class KeyResolver(HTTPSignatureKeyResolver):
    def __init__(self, *parties: Party) -> None:
        self.parties = {p.keyid: p for p in parties}

    def resolve_public_key(self, key_id: str) -> ec.EllipticCurvePublicKey | None:
        party = self.parties.get(key_id)
        return None if party is None else party.key.public_key()

    def resolve_private_key(self, key_id: str) -> ec.EllipticCurvePrivateKey:
        return self.parties[key_id].key


def trust(*parties: Party) -> signatures.CertResolver:
    by_id = {p.keyid: p.cert for p in parties}

    def resolve(keyid: str, cert_der: bytes, ocsp_der: bytes) -> x509.Certificate:
        if keyid not in by_id:
            raise TrustError("untrusted signing certificate")
        return by_id[keyid]

    return resolve


def their_verifier(*parties: Party) -> HTTPMessageVerifier:
    return HTTPMessageVerifier(
        signature_algorithm=algorithms.ECDSA_P256_SHA256, key_resolver=KeyResolver(*parties)
    )


def their_signer(*parties: Party) -> HTTPMessageSigner:
    return HTTPMessageSigner(
        signature_algorithm=algorithms.ECDSA_P256_SHA256, key_resolver=KeyResolver(*parties)
    )


def base_headers() -> dict[str, str]:
    return {
        "content-type": "application/json",
        "content-digest": signatures.content_digest_header(hashlib.sha256(BODY).digest()),
        "x-road-client": "DEV/GOV/1001/consumer",
        "x-road-service": "DEV/GOV/1002/registry/persons",
        "x-road-id": "DEV-0f9d",
        "x-road-request-id": "3f5e8c55-1c70-4b7c-9d53-3d1d0b8f4a20",
        "x-road-userid": "EE12345678901",
    }


def our_signed_request(consumer: Party) -> tuple[Request, signatures.SignedMessage]:
    headers = base_headers()
    sm = signatures.sign_request(
        method="POST",
        path=PATH,
        query=QUERY,
        headers=headers,
        signer=consumer.signer,
        created=int(datetime.now(UTC).timestamp()),
        ocsp=OCSP,
    )
    return Request("POST", f"{PROVIDER_URL}{PATH}?{QUERY}", {**headers, **sm.headers}), sm


# --------------------------------------------------------------------------------------------------------
# They verify what we sign
# --------------------------------------------------------------------------------------------------------


def test_they_verify_our_request(consumer: Party) -> None:
    request, sm = our_signed_request(consumer)
    assert request.headers["signature"] == sm.headers["signature"]
    [result] = their_verifier(consumer).verify(
        request,
        expect_tag="x-road-r1",
        require_components=REQUEST_COMPONENTS,
        body=BODY,
    )
    assert result.label == "xroad"
    assert result.parameters["keyid"] == consumer.keyid
    assert result.parameters["alg"] == "ecdsa-p256-sha256"
    assert result.body == BODY  # their Content-Digest check of the body passed too
    assert result.covered_components['"x-road-client"'] == "DEV/GOV/1001/consumer"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # None: the signature value does not verify (their error wraps cryptography's InvalidSignature)
        ({"x-road-client": "DEV/GOV/6666/evil"}, None),
        ({"x-road-request-id": "replayed-with-new-id"}, None),
        ({"x-road-signing-ocsp": base64.b64encode(b"\x30\x00").decode()}, None),
        ({"url": f"{PROVIDER_URL}/r1/DEV/GOV/1002/registry/admin?{QUERY}"}, None),
        ({"url": f"{PROVIDER_URL}{PATH}?full=false"}, None),
        ({"method": "DELETE"}, None),
        ({"body": b'{"query": "9999"}'}, "Content-Digest"),
    ],
)
def test_they_reject_our_tampered_request(
    consumer: Party,
    change: dict[str, object],
    message: str | None,
) -> None:
    request, _ = our_signed_request(consumer)
    body = BODY
    for name, value in change.items():
        if name == "url":
            request.url = str(value)
        elif name == "method":
            request.method = str(value)
        elif name == "body":
            assert isinstance(value, bytes)
            body = value
        else:
            request.headers[name] = str(value)
    with pytest.raises(InvalidSignature) as info:
        their_verifier(consumer).verify(request, expect_tag="x-road-r1", body=body)
    if message is None:
        assert isinstance(info.value.__cause__, CryptoInvalidSignature)
    else:
        assert message in str(info.value)


def test_they_reject_our_request_with_wrong_key(consumer: Party, provider: Party) -> None:
    request, _ = our_signed_request(consumer)
    resolver = KeyResolver(provider)
    resolver.parties[consumer.keyid] = provider  # the keyid now resolves to another key
    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ECDSA_P256_SHA256, key_resolver=resolver)
    with pytest.raises(InvalidSignature):
        verifier.verify(request, expect_tag="x-road-r1")


def test_they_verify_our_response(consumer: Party, provider: Party) -> None:
    request, req_sm = our_signed_request(consumer)
    headers = {
        "content-type": "application/json",
        "content-digest": signatures.content_digest_header(hashlib.sha256(b"{}").digest()),
        "x-road-client": "DEV/GOV/1001/consumer",
        "x-road-service": "DEV/GOV/1002/registry/persons",
        "x-road-id": "DEV-0f9d",
        "x-road-request-id": "3f5e8c55-1c70-4b7c-9d53-3d1d0b8f4a20",
        "x-road-request-hash": base64.b64encode(hashlib.sha512(b"request").digest()).decode(),
    }
    sm = signatures.sign_response(
        status=200,
        headers=headers,
        request_signature=req_sm.signature,
        signer=provider.signer,
        created=int(datetime.now(UTC).timestamp()),
        ocsp=OCSP,
    )
    response = Response(200, request, {**headers, **sm.headers})
    [result] = their_verifier(provider).verify(
        response,
        expect_tag="x-road-r1",
        require_components=RESPONSE_COMPONENTS,
        body=b"{}",
    )
    assert result.covered_components['"signature";req;key="xroad"'] == (
        ":" + base64.b64encode(req_sm.signature).decode() + ":"
    )
    # bound to the request: against another request's signature it fails
    other_request, _ = our_signed_request(consumer)
    with pytest.raises(InvalidSignature):
        their_verifier(provider).verify(
            Response(200, other_request, response.headers), expect_tag="x-road-r1"
        )


# --------------------------------------------------------------------------------------------------------
# We verify what they sign
# --------------------------------------------------------------------------------------------------------


def test_we_verify_their_request(consumer: Party) -> None:
    der = consumer.cert.public_bytes(signatures.serialization.Encoding.DER)
    headers = {
        **base_headers(),
        "x-road-signing-cert": base64.b64encode(der).decode(),
        "x-road-signing-ocsp": base64.b64encode(OCSP).decode(),
    }
    request = Request("POST", f"{PROVIDER_URL}{PATH}?{QUERY}", dict(headers))
    now = datetime.now(UTC)
    their_signer(consumer).sign(
        request,
        key_id=consumer.keyid,
        created=now,
        label="xroad",
        tag="x-road-r1",
        covered_component_ids=REQUEST_COMPONENTS,
        use_existing_digest=True,
        body=BODY,
    )
    fields = signatures.fields_from_pairs(request.headers.items())
    v = signatures.verify_request(
        method="POST",
        path=PATH,
        query=QUERY,
        headers=fields,
        now=now,
        max_skew_seconds=30,
        resolve_cert=trust(consumer),
    )
    assert v.keyid == consumer.keyid
    signatures.verify_content_digest(fields["content-digest"], hashlib.sha256(BODY).digest())
    # and we refuse it once tampered with
    fields["x-road-userid"] = "EE00000000000"
    with pytest.raises(TrustError, match="does not verify") as info, detected_at(SERVER_PROXY):
        signatures.verify_request(
            method="POST",
            path=PATH,
            query=QUERY,
            headers=fields,
            now=now,
            max_skew_seconds=30,
            resolve_cert=trust(consumer),
        )
    assert info.value.xroad_type == "Server.ServerProxy.InvalidSignatureValue"


def test_we_verify_their_response(consumer: Party, provider: Party) -> None:
    request, req_sm = our_signed_request(consumer)
    der = provider.cert.public_bytes(signatures.serialization.Encoding.DER)
    headers = {
        "content-digest": signatures.content_digest_header(hashlib.sha256(b"").digest()),
        "x-road-client": "DEV/GOV/1001/consumer",
        "x-road-service": "DEV/GOV/1002/registry/persons",
        "x-road-id": "DEV-0f9d",
        "x-road-request-id": "3f5e8c55-1c70-4b7c-9d53-3d1d0b8f4a20",
        "x-road-request-hash": "aGFzaA==",
        "x-road-signing-cert": base64.b64encode(der).decode(),
        "x-road-signing-ocsp": base64.b64encode(OCSP).decode(),
    }
    response = Response(204, request, dict(headers))
    now = datetime.now(UTC)
    their_signer(provider).sign(
        response,
        key_id=provider.keyid,
        created=now,
        label="xroad",
        tag="x-road-r1",
        covered_component_ids=RESPONSE_COMPONENTS,
        use_existing_digest=True,
    )
    fields = signatures.fields_from_pairs(response.headers.items())
    v = signatures.verify_response(
        status=204,
        headers=fields,
        request_signature=req_sm.signature,
        now=now,
        max_skew_seconds=30,
        resolve_cert=trust(provider),
    )
    assert v.covered[-1] == '"signature";req;key="xroad"'
    _, other_sm = our_signed_request(consumer)
    with pytest.raises(TrustError, match="does not verify") as info, detected_at(CLIENT_PROXY):
        signatures.verify_response(
            status=204,
            headers=fields,
            request_signature=other_sm.signature,
            now=now,
            max_skew_seconds=30,
            resolve_cert=trust(provider),
        )
    assert info.value.xroad_type == "Server.ClientProxy.InvalidSignatureValue"
