"""gateway.protocol.signatures: the RFC 9421 + RFC 9530 profile between security servers (pure)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from faultside import CLIENT_PROXY, SERVER_PROXY, detected_at
from pkihelpers import make_cert

from gateway.errors import CertValidation, ConfigError, GatewayError, TrustError
from gateway.protocol import signatures

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
T = int(NOW.timestamp())
SKEW = 30
OCSP = b"\x30\x03\x0a\x01\x00"  # the bytes are opaque to this module; the resolver checks them
BODY = b'{"query": "1234"}'
PATH, QUERY = "/r1/DEV/GOV/1002/registry/persons/v1/p/1", "full=true"


@dataclass(frozen=True)
class Party:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    cert: x509.Certificate
    signer: signatures.KeySigner


def make_party(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, cn: str) -> Party:
    cert = make_cert(key, cn, now=NOW)
    return Party(key=key, cert=cert, signer=signatures.KeySigner(key=key, cert=cert))


@pytest.fixture(scope="module")
def consumer() -> Party:
    return make_party(ec.generate_private_key(ec.SECP256R1()), "DEV/GOV/1001 signing")


@pytest.fixture(scope="module")
def provider() -> Party:
    return make_party(ec.generate_private_key(ec.SECP256R1()), "DEV/GOV/1002 signing")


@pytest.fixture(scope="module")
def rsa_party() -> Party:
    return make_party(rsa.generate_private_key(public_exponent=65537, key_size=2048), "DEV/COM/7 signing")


def resolver(*trusted: x509.Certificate) -> signatures.CertResolver:
    by_id = {signatures.cert_keyid(c): c for c in trusted}

    def resolve(keyid: str, cert_der: bytes, ocsp_der: bytes) -> x509.Certificate:
        # a real resolver validates the chain and the stapled OCSP response; this one trusts by keyid
        if keyid not in by_id:
            raise CertValidation("signing certificate is not trusted")
        return by_id[keyid]

    return resolve


def request_headers(**extra: str) -> dict[str, str]:
    return {
        "content-digest": signatures.content_digest_header(hashlib.sha256(BODY).digest()),
        "content-type": "application/json",
        "x-road-client": "DEV/GOV/1001/consumer",
        "x-road-service": "DEV/GOV/1002/registry/persons",
        "x-road-id": "DEV-7f0c",
        "x-road-request-id": "0b6c5e2e-5b7e-4d55-a4b5-9b8a4f7f3e11",
        **extra,
    }


def signed_request(
    party: Party, *, created: int = T, **extra: str
) -> tuple[dict[str, str], signatures.SignedMessage]:
    headers = request_headers(**extra)
    sm = signatures.sign_request(
        method="POST",
        path=PATH,
        query=QUERY,
        headers=headers,
        signer=party.signer,
        created=created,
        ocsp=OCSP,
    )
    return {**headers, **sm.headers}, sm


def verify_req(
    headers: dict[str, str],
    party: Party,
    *,
    method: str = "POST",
    path: str = PATH,
    query: str | None = QUERY,
    now: datetime = NOW,
) -> signatures.VerifiedSignature:
    return signatures.verify_request(
        method=method,
        path=path,
        query=query,
        headers=headers,
        now=now,
        max_skew_seconds=SKEW,
        resolve_cert=resolver(party.cert),
    )


def response_headers(**extra: str) -> dict[str, str]:
    return {
        "content-digest": signatures.content_digest_header(hashlib.sha256(b"{}").digest()),
        "x-road-client": "DEV/GOV/1001/consumer",
        "x-road-service": "DEV/GOV/1002/registry/persons",
        "x-road-id": "DEV-7f0c",
        "x-road-request-id": "0b6c5e2e-5b7e-4d55-a4b5-9b8a4f7f3e11",
        "x-road-request-hash": "7zmQ9CwnVrEWzWnCyXbXkQ==",
        **extra,
    }


# --------------------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------------------


def test_request_round_trip(consumer: Party) -> None:
    headers, sm = signed_request(consumer, **{"x-road-userid": "EE12345678901", "x-road-issue": "I-1"})
    assert set(sm.headers) == {"x-road-signing-cert", "x-road-signing-ocsp", "signature-input", "signature"}
    v = verify_req(headers, consumer)
    assert (
        v.keyid == hashlib.sha256(consumer.cert.public_bytes(signatures.serialization.Encoding.DER)).hexdigest()
    )
    assert (v.created, v.alg, v.cert, v.ocsp_der) == (T, "ecdsa-p256-sha256", consumer.cert, OCSP)
    assert v.signature_base == sm.signature_base and v.signature == sm.signature
    assert v.covered == (
        '"@method"',
        '"@path"',
        '"@query"',
        '"content-digest"',
        '"x-road-client"',
        '"x-road-service"',
        '"x-road-id"',
        '"x-road-request-id"',
        '"x-road-issue"',
        '"x-road-userid"',
        '"x-road-signing-cert"',
        '"x-road-signing-ocsp"',
    )
    # RFC 9421 3.3.4: ECDSA P-256 signatures are the 64-byte r || s, not DER
    assert len(sm.signature) == 64


def test_signature_base_is_rfc9421_text(consumer: Party) -> None:
    headers, sm = signed_request(consumer)
    cert_b64 = base64.b64encode(consumer.cert.public_bytes(signatures.serialization.Encoding.DER)).decode()
    keyid = signatures.cert_keyid(consumer.cert)
    params = (
        '("@method" "@path" "@query" "content-digest" "x-road-client" "x-road-service" "x-road-id" '
        '"x-road-request-id" "x-road-signing-cert" "x-road-signing-ocsp")'
        f';created={T};keyid="{keyid}";alg="ecdsa-p256-sha256";tag="x-road-r1"'
    )
    assert sm.signature_base.decode() == "\n".join(
        [
            '"@method": POST',
            f'"@path": {PATH}',
            f'"@query": ?{QUERY}',
            f'"content-digest": sha-256=:{base64.b64encode(hashlib.sha256(BODY).digest()).decode()}:',
            '"x-road-client": DEV/GOV/1001/consumer',
            '"x-road-service": DEV/GOV/1002/registry/persons',
            '"x-road-id": DEV-7f0c',
            '"x-road-request-id": 0b6c5e2e-5b7e-4d55-a4b5-9b8a4f7f3e11',
            f'"x-road-signing-cert": {cert_b64}',
            f'"x-road-signing-ocsp": {base64.b64encode(OCSP).decode()}',
            f'"@signature-params": {params}',
        ]
    )
    assert headers["signature-input"] == f"xroad={params}"
    assert headers["signature"] == f"xroad=:{base64.b64encode(sm.signature).decode()}:"
    # the signature is an ordinary ECDSA signature over exactly these bytes
    der = signatures.keys.raw_to_der_ecdsa(sm.signature)
    consumer.key.public_key().verify(der, sm.signature_base, ec.ECDSA(hashes.SHA256()))


def test_empty_path_and_query(consumer: Party) -> None:
    sm = signatures.sign_request(
        method="GET",
        path="",
        query=None,
        headers=request_headers(),
        signer=consumer.signer,
        created=T,
        ocsp=OCSP,
    )
    assert b'"@path": /\n"@query": ?\n' in sm.signature_base
    verify_req({**request_headers(), **sm.headers}, consumer, method="GET", path="/", query="")


def test_rsa_round_trip(rsa_party: Party) -> None:
    headers, sm = signed_request(rsa_party)
    assert sm.alg == "rsa-v1_5-sha256" and len(sm.signature) == 256
    assert verify_req(headers, rsa_party).alg == "rsa-v1_5-sha256"


Mutation = Callable[[dict[str, str], Party, Party], None]


def _set(name: str, value: str) -> Mutation:
    def mutate(h: dict[str, str], _me: Party, _other: Party) -> None:
        h[name] = value

    return mutate


def _drop(name: str) -> Mutation:
    def mutate(h: dict[str, str], _me: Party, _other: Party) -> None:
        del h[name]

    return mutate


def _input(fn: Callable[[str], str]) -> Mutation:
    def mutate(h: dict[str, str], _me: Party, _other: Party) -> None:
        h["signature-input"] = fn(h["signature-input"])

    return mutate


def _resign_with_other_key(h: dict[str, str], me: Party, other: Party) -> None:
    # a valid-looking signature by another key, stapling (and naming) the original certificate
    base = h.pop("__base__").encode()
    h["signature"] = "xroad=:" + base64.b64encode(other.signer.sign(base)).decode() + ":"


def _staple_other_cert(h: dict[str, str], me: Party, other: Party) -> None:
    h["x-road-signing-cert"] = base64.b64encode(
        other.cert.public_bytes(signatures.serialization.Encoding.DER)
    ).decode()


def _der_signature(h: dict[str, str], me: Party, other: Party) -> None:
    raw = base64.b64decode(h["signature"][len("xroad=:") : -1])
    der = signatures.keys.raw_to_der_ecdsa(raw)
    h["signature"] = "xroad=:" + base64.b64encode(der).decode() + ":"


def _flip_signature_bit(h: dict[str, str], me: Party, other: Party) -> None:
    raw = bytearray(base64.b64decode(h["signature"][len("xroad=:") : -1]))
    raw[5] ^= 1
    h["signature"] = "xroad=:" + base64.b64encode(bytes(raw)).decode() + ":"


SP = "Server.ServerProxy"


@pytest.mark.parametrize(
    ("mutate", "code", "fragment"),
    [
        # tampered covered values
        (_set("x-road-client", "DEV/GOV/6666/evil"), f"{SP}.InvalidSignatureValue", "does not verify"),
        (
            _set("x-road-service", "DEV/GOV/1002/registry/admin"),
            f"{SP}.InvalidSignatureValue",
            "does not verify",
        ),
        (_set("x-road-request-id", "other"), f"{SP}.InvalidSignatureValue", "does not verify"),
        (
            _set("content-digest", "sha-256=:" + base64.b64encode(b"\0" * 32).decode() + ":"),
            f"{SP}.InvalidSignatureValue",
            "does not verify",
        ),
        (
            _set("x-road-signing-ocsp", base64.b64encode(b"\x30\x00").decode()),
            f"{SP}.InvalidSignatureValue",
            "does not verify",
        ),
        (_flip_signature_bit, f"{SP}.InvalidSignatureValue", "does not verify"),
        (_der_signature, f"{SP}.InvalidSignatureValue", "RFC 9421 requires 64 (r || s)"),
        (_resign_with_other_key, f"{SP}.InvalidSignatureValue", "does not verify"),
        # headers added or removed around the signature
        (
            _set("x-road-userid", "EE1"),
            f"{SP}.MalformedSignature",
            'signature does not cover "x-road-userid"',
        ),
        (_set("x-road-purpose", "audit"), f"{SP}.MalformedSignature", 'does not cover "x-road-purpose"'),
        (_drop("x-road-id"), f"{SP}.MalformedSignature", "covered header x-road-id is missing"),
        (_drop("signature"), f"{SP}.MissingSignature", "Signature header is missing"),
        (_drop("signature-input"), f"{SP}.MissingSignature", "Signature-Input header is missing"),
        (
            _staple_other_cert,
            f"{SP}.MalformedSignature",
            "keyid does not match the stapled signing certificate",
        ),
        (_set("x-road-signing-cert", "@@@"), f"{SP}.MalformedSignature", "not base64"),
        # Signature-Input / Signature syntax and parameters
        (_set("signature-input", 'xroad=("@method"'), f"{SP}.MalformedSignature", "does not parse"),
        (_set("signature", "xroad=abc"), f"{SP}.MalformedSignature", "is not a byte sequence"),
        (_set("signature", "other=:AAAA:"), f"{SP}.MissingSignature", "no signature labelled 'xroad'"),
        (_input(lambda s: s.replace("xroad=", "other=")), f"{SP}.MissingSignature", "no signature labelled"),
        (
            _input(lambda s: s.replace("xroad=(", "xroad=").replace(");created", ";created")),
            f"{SP}.MalformedSignature",
            "does not parse",
        ),
        (_input(lambda s: "xroad=1"), f"{SP}.MalformedSignature", "is not an inner list"),
        (
            _input(lambda s: s + ";nonce2=1"),
            f"{SP}.MalformedSignature",
            "unknown signature parameter(s) nonce2",
        ),
        (
            _input(lambda s: s.replace('tag="x-road-r1"', 'tag="other"')),
            f"{SP}.MalformedSignature",
            'tag must be "x-road-r1"',
        ),
        (
            _input(lambda s: s.replace('tag="x-road-r1"', "tag=x-road-r1")),
            f"{SP}.MalformedSignature",
            'tag must be "x-road-r1"',
        ),
        (_input(lambda s: s.replace(';tag="x-road-r1"', "")), f"{SP}.MalformedSignature", "tag must be"),
        (
            _input(lambda s: s.replace('alg="ecdsa-p256-sha256"', 'alg="rsa-v1_5-sha256"')),
            f"{SP}.MalformedSignature",
            "does not fit the certificate's key (ecdsa-p256-sha256)",
        ),
        (
            _input(lambda s: s.replace('alg="ecdsa-p256-sha256"', 'alg="hmac-sha256"')),
            f"{SP}.MalformedSignature",
            "alg must be one of",
        ),
        (
            _input(lambda s: s.replace(f"created={T}", f'created="{T}"')),
            f"{SP}.MalformedSignature",
            "created must be an integer",
        ),
        (
            _input(lambda s: s.replace('keyid="', 'keyid="X')),
            f"{SP}.MalformedSignature",
            "keyid must be the hex",
        ),
        (_input(lambda s: s.replace('"@method"', '"@METHOD"')), f"{SP}.MalformedSignature", "lower-case"),
        (_input(lambda s: s.replace('"@method"', "@method")), f"{SP}.MalformedSignature", "does not parse"),
        (_input(lambda s: s.replace('"@query"', '"@method"')), f"{SP}.MalformedSignature", "covered twice"),
        (
            _input(lambda s: s.replace('"@query"', '"@authority"')),
            f"{SP}.MalformedSignature",
            '"@authority" is not allowed',
        ),
        (
            _input(lambda s: s.replace('"x-road-id"', '"x-road-id";sf')),
            f"{SP}.MalformedSignature",
            'component "x-road-id";sf is not allowed',
        ),
        (_input(lambda s: s.replace('"@path" ', "")), f"{SP}.MalformedSignature", 'does not cover "@path"'),
        (
            _input(lambda s: s.replace(' "x-road-signing-ocsp"', "")),
            f"{SP}.MalformedSignature",
            'does not cover "x-road-signing-ocsp"',
        ),
        (_input(lambda s: s + f";expires={T - 100}"), f"{SP}.InvalidSignatureTime", "signature has expired"),
    ],
)
def test_request_refused(
    consumer: Party, provider: Party, mutate: Mutation, code: str, fragment: str
) -> None:
    headers, sm = signed_request(consumer)
    headers["__base__"] = sm.signature_base.decode()
    mutate(headers, consumer, provider)
    headers.pop("__base__", None)
    with pytest.raises(TrustError) as info, detected_at(SERVER_PROXY):
        verify_req(headers, consumer)
    assert info.value.xroad_type == code
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [("GET", PATH, QUERY), ("POST", PATH + "/x", QUERY), ("POST", PATH, "full=false"), ("POST", PATH, None)],
)
def test_request_line_tampered(consumer: Party, method: str, path: str, query: str | None) -> None:
    headers, _ = signed_request(consumer)
    with pytest.raises(TrustError, match="does not verify") as info, detected_at(SERVER_PROXY):
        verify_req(headers, consumer, method=method, path=path, query=query)
    assert info.value.xroad_type == "Server.ServerProxy.InvalidSignatureValue"


def test_untrusted_certificate(consumer: Party, provider: Party) -> None:
    headers, _ = signed_request(consumer)
    with pytest.raises(TrustError, match="signing certificate is not trusted"):
        signatures.verify_request(
            method="POST",
            path=PATH,
            query=QUERY,
            headers=headers,
            now=NOW,
            max_skew_seconds=SKEW,
            resolve_cert=resolver(provider.cert),
        )


def test_resolver_returning_another_cert_is_refused(consumer: Party, provider: Party) -> None:
    headers, _ = signed_request(consumer)
    with (
        pytest.raises(TrustError, match="resolved certificate does not match keyid") as info,
        detected_at(SERVER_PROXY),
    ):
        signatures.verify_request(
            method="POST",
            path=PATH,
            query=QUERY,
            headers=headers,
            now=NOW,
            max_skew_seconds=SKEW,
            resolve_cert=lambda keyid, der, ocsp: provider.cert,
        )
    assert info.value.xroad_type == "Server.ServerProxy.MalformedSignature"


@pytest.mark.parametrize(
    ("created", "fragment"),
    [
        (T - SKEW - 1, f"is +{SKEW + 1} s from now; at most {SKEW} s of clock skew is allowed"),
        (T + SKEW + 1, f"is -{SKEW + 1} s from now"),
        (T - 86400, "is +86400 s from now"),
    ],
)
def test_created_outside_skew(consumer: Party, created: int, fragment: str) -> None:
    headers, _ = signed_request(consumer, created=created)
    with pytest.raises(TrustError) as info, detected_at(SERVER_PROXY):
        verify_req(headers, consumer)
    assert info.value.xroad_type == "Server.ServerProxy.InvalidSignatureTime"
    assert fragment in info.value.message


@pytest.mark.parametrize("created", [T - SKEW, T + SKEW, T])
def test_created_inside_skew(consumer: Party, created: int) -> None:
    headers, _ = signed_request(consumer, created=created)
    assert verify_req(headers, consumer).created == created


def test_naive_now_is_a_bug(consumer: Party) -> None:
    headers, _ = signed_request(consumer)
    with pytest.raises(ValueError, match="aware datetime"):
        verify_req(headers, consumer, now=NOW.replace(tzinfo=None))


@pytest.mark.parametrize(
    ("drop", "ocsp", "fragment"),
    [
        ("x-road-request-id", OCSP, "cannot sign: header x-road-request-id is missing"),
        ("content-digest", OCSP, "cannot sign: header content-digest is missing"),
        (None, b"", "no OCSP response to staple"),
    ],
)
def test_sign_request_refuses(consumer: Party, drop: str | None, ocsp: bytes, fragment: str) -> None:
    headers = request_headers()
    if drop:
        del headers[drop]
    with pytest.raises(GatewayError) as info, detected_at(CLIENT_PROXY):
        signatures.sign_request(
            method="POST",
            path=PATH,
            query=None,
            headers=headers,
            signer=consumer.signer,
            created=T,
            ocsp=ocsp,
        )
    assert info.value.xroad_type == "Server.ClientProxy.CannotCreateSignature"
    assert fragment in info.value.message


def test_sign_refuses_line_breaks(consumer: Party) -> None:
    with pytest.raises(GatewayError, match="line break or non-ASCII") as info, detected_at(CLIENT_PROXY):
        signatures.sign_request(
            method="POST",
            path=PATH,
            query=None,
            headers=request_headers(**{"x-road-issue": "a\nb"}),
            signer=consumer.signer,
            created=T,
            ocsp=OCSP,
        )
    assert info.value.xroad_type == "Server.ClientProxy.CannotCreateSignature"


def test_key_signer_refuses_mismatched_cert(consumer: Party, provider: Party) -> None:
    with pytest.raises(ConfigError, match="does not belong to the signing key"):
        signatures.KeySigner(key=consumer.key, cert=provider.cert)
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ConfigError, match="only P-256"):
        signatures.KeySigner(key=p384, cert=make_cert(p384, "p384", now=NOW))


# --------------------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------------------


def signed_response(provider: Party, request_signature: bytes, **extra: str) -> dict[str, str]:
    headers = response_headers(**extra)
    sm = signatures.sign_response(
        status=200,
        headers=headers,
        request_signature=request_signature,
        signer=provider.signer,
        created=T,
        ocsp=OCSP,
    )
    return {**headers, **sm.headers}


def test_response_round_trip_bound_to_request(consumer: Party, provider: Party) -> None:
    _, req = signed_request(consumer)
    headers = signed_response(provider, req.signature, **{"x-road-error": "x"})
    v = signatures.verify_response(
        status=200,
        headers=headers,
        request_signature=req.signature,
        now=NOW,
        max_skew_seconds=SKEW,
        resolve_cert=resolver(provider.cert),
    )
    assert v.covered[0] == '"@status"' and v.covered[-1] == '"signature";req;key="xroad"'
    assert '"x-road-request-hash"' in v.covered and '"x-road-error"' in v.covered
    assert v.signature_base.endswith(
        b'"signature";req;key="xroad": :'
        + base64.b64encode(req.signature)
        + b':\n"@signature-params": '
        + v.signature_params.encode()
    )


CP = "Server.ClientProxy"


@pytest.mark.parametrize(
    ("case", "code", "fragment"),
    [
        ("other-request", f"{CP}.InvalidSignatureValue", "does not verify"),
        ("status", f"{CP}.InvalidSignatureValue", "does not verify"),
        ("hash", f"{CP}.InvalidSignatureValue", "does not verify"),
        ("unbound", f"{CP}.MalformedSignature", 'does not cover "signature";req;key="xroad"'),
        ("no-hash", f"{CP}.MalformedSignature", "covered header x-road-request-hash is missing"),
    ],
)
def test_response_refused(consumer: Party, provider: Party, case: str, code: str, fragment: str) -> None:
    _, req = signed_request(consumer)
    _, other_req = signed_request(consumer, **{"x-road-request-id": "another"})
    headers = signed_response(provider, req.signature)
    status = 200
    expected_sig = req.signature
    if case == "other-request":
        expected_sig = other_req.signature
    elif case == "status":
        status = 500
    elif case == "hash":
        headers["x-road-request-hash"] = "forged"
    elif case == "unbound":
        headers["signature-input"] = headers["signature-input"].replace(' "signature";req;key="xroad"', "")
    elif case == "no-hash":
        del headers["x-road-request-hash"]
    with pytest.raises(TrustError) as info, detected_at(CLIENT_PROXY):
        signatures.verify_response(
            status=status,
            headers=headers,
            request_signature=expected_sig,
            now=NOW,
            max_skew_seconds=SKEW,
            resolve_cert=resolver(provider.cert),
        )
    assert info.value.xroad_type == code
    assert fragment in info.value.message


def test_sign_response_requires_request_hash(provider: Party) -> None:
    headers = response_headers()
    del headers["x-road-request-hash"]
    with pytest.raises(GatewayError, match="header x-road-request-hash is missing") as info, detected_at(SERVER_PROXY):
        signatures.sign_response(
            status=200,
            headers=headers,
            request_signature=b"x",
            signer=provider.signer,
            created=T,
            ocsp=OCSP,
        )
    assert info.value.xroad_type == "Server.ServerProxy.CannotCreateSignature"


def test_response_req_component_parameter_order_is_free(consumer: Party, provider: Party) -> None:
    # RFC 9421 2: a component is identified by name and parameters, in any order; the base keeps the order.
    _, req = signed_request(consumer)
    headers = response_headers()
    sm = signatures.sign_response(
        status=200,
        headers=headers,
        request_signature=req.signature,
        signer=provider.signer,
        created=T,
        ocsp=OCSP,
    )
    reordered_input = sm.headers["signature-input"].replace(
        '"signature";req;key="xroad"',
        '"signature";key="xroad";req',
    )
    base = sm.signature_base.replace(b'"signature";req;key="xroad"', b'"signature";key="xroad";req')
    resigned = {
        **headers,
        **sm.headers,
        "signature-input": reordered_input,
        "signature": "xroad=:" + base64.b64encode(provider.signer.sign(base)).decode() + ":",
    }
    v = signatures.verify_response(
        status=200,
        headers=resigned,
        request_signature=req.signature,
        now=NOW,
        max_skew_seconds=SKEW,
        resolve_cert=resolver(provider.cert),
    )
    assert v.signature_base == base


# --------------------------------------------------------------------------------------------------------
# Content-Digest, header fields, replay cache
# --------------------------------------------------------------------------------------------------------


def test_content_digest_streaming() -> None:
    d = signatures.ContentDigester()
    for i in range(0, len(BODY), 4):
        d.update(BODY[i : i + 4])
    assert d.size == len(BODY)
    assert d.digest() == hashlib.sha256(BODY).digest()
    assert d.header() == "sha-256=:" + base64.b64encode(hashlib.sha256(BODY).digest()).decode() + ":"
    signatures.verify_content_digest(d.header(), hashlib.sha256(BODY).digest())
    empty = signatures.ContentDigester()
    assert (
        empty.header() == "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"
    )  # RFC 9530 B: empty body
    signatures.verify_content_digest(
        "sha-512=:AAAA:, sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
        hashlib.sha256().digest(),
    )


@pytest.mark.parametrize(
    ("value", "code", "fragment"),
    [
        (None, "Server.ServerProxy.MissingSignature", "Content-Digest header is missing"),
        (
            "sha-256=:" + base64.b64encode(hashlib.sha256(b"tampered").digest()).decode() + ":",
            "Server.ServerProxy.InvalidSignatureValue",
            "message body does not match its Content-Digest",
        ),
        ("sha-512=:AAAA:", "Server.ServerProxy.MalformedSignature", "no sha-256 byte sequence"),
        ("sha-256=abc", "Server.ServerProxy.MalformedSignature", "no sha-256 byte sequence"),
        ("sha-256=:!!:", "Server.ServerProxy.MalformedSignature", "does not parse"),
        ("sha-256", "Server.ServerProxy.MalformedSignature", "no sha-256 byte sequence"),
    ],
)
def test_content_digest_refused(value: str | None, code: str, fragment: str) -> None:
    with pytest.raises(TrustError) as info, detected_at(SERVER_PROXY):
        signatures.verify_content_digest(value, hashlib.sha256(BODY).digest())
    assert info.value.xroad_type == code
    assert fragment in info.value.message


def test_fields_from_pairs() -> None:
    pairs = [("Accept", "a"), ("X-Road-Client", " A/B/C "), ("accept", "b"), ("X-Custom", "1")]
    assert signatures.fields_from_pairs(pairs) == {"accept": "a, b", "x-road-client": "A/B/C", "x-custom": "1"}


@pytest.mark.parametrize(
    "name",
    [
        "X-Road-Client",
        "Signature",
        "signature-input",
        "Content-Digest",
        "x-road-signing-cert",
        "X-Road-Request-Id",
    ],
)
def test_fields_from_pairs_refuses_repeated_single_fields(name: str) -> None:
    with (
        pytest.raises(TrustError, match=f"header {name.lower()} appears more than once") as info,
        detected_at(CLIENT_PROXY),
    ):
        signatures.fields_from_pairs([(name, "a"), (name.upper(), "b")])
    assert info.value.xroad_type == "Server.ClientProxy.MalformedSignature"
