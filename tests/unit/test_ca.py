"""The development CA, its OCSP responder and TSA cores, client-side OCSP and timestamp checks, the CLI."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import ocsp as aocsp
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp as x_ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from faultside import CLIENT_PROXY, SERVER_PROXY, detected_at
from pkihelpers import IssuedCert, ThrowawayPki, make_cert, make_pki, sha256

from gateway.cli import main
from gateway.dev.pki import tsa
from gateway.dev.pki.ca import DevCA
from gateway.dev.pki.ocsp_responder import respond
from gateway.errors import PkiError, TrustError
from gateway.identifiers import MemberId, SecurityServerId
from gateway.trust import ocsp, timestamp
from gateway.trust.certprofile import build_csr, identity_urn
from gateway.trust.keys import generate_private_key
from gateway.trust.timestamp import TimeStampResp

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SS1 = SecurityServerId.parse("DEV/GOV/1001/ss1")
M1 = MemberId.parse("DEV/GOV/1001")
IVI = "Server.ServerProxy.IncorrectValidationInfo"


@pytest.fixture
def pki(tmp_path: Path) -> ThrowawayPki:
    return make_pki(tmp_path / "pki", now=NOW, ocsp_url="http://127.0.0.1:8888")


@pytest.fixture
def other(tmp_path: Path) -> ThrowawayPki:
    """A second CA with the same name: same issuer DN, different key."""
    return make_pki(tmp_path / "other", now=NOW)


# ---- the CA --------------------------------------------------------------------------------------


def test_init_writes_the_layout_with_private_keys_0600(tmp_path: Path) -> None:
    d = tmp_path / "certs"
    DevCA.init(d, name="Dev CA", now=NOW)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in d.iterdir()}
    assert modes == {
        "ca.key": 0o600,
        "ocsp.key": 0o600,
        "tsa.key": 0o600,
        "ca.pem": 0o644,
        "ocsp.pem": 0o644,
        "tsa.pem": 0o644,
        "index.json": 0o644,
    }
    with pytest.raises(PkiError, match=f"a development CA already exists in {d}"):
        DevCA.init(d, name="Dev CA", now=NOW)
    with pytest.raises(PkiError, match=f"no development CA in {tmp_path}"):
        DevCA.load(tmp_path)


def test_ca_responder_and_tsa_certificates(pki: ThrowawayPki) -> None:
    ca = pki.ca
    bc = ca.ca_cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    assert isinstance(ca.ca_cert.public_key(), ec.EllipticCurvePublicKey)
    ocsp_eku = ca.ocsp_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(ocsp_eku.value) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    ca.ocsp_cert.extensions.get_extension_for_class(x509.OCSPNoCheck)
    tsa_eku = ca.tsa_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert tsa_eku.critical and list(tsa_eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    for c in (ca.ocsp_cert, ca.tsa_cert):
        c.verify_directly_issued_by(ca.ca_cert)


def test_issue_records_and_loads_back(pki: ThrowawayPki) -> None:
    issued = pki.issue_auth(SS1, name="Agency A", now=NOW)
    cert = issued.cert
    assert 0 < cert.serial_number < 2**128
    cert.verify_directly_issued_by(pki.ca_cert)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = pki.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(d.access_method, d.access_location.value) for d in aia] == [
        (AuthorityInformationAccessOID.OCSP, "http://127.0.0.1:8888")
    ]
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(days=730)
    loaded = DevCA.load(pki.directory)
    record = loaded.status(cert.serial_number)
    assert (record.kind, record.identity, record.status, record.sha256) == (
        "auth",
        str(SS1),
        "good",
        issued.sha256,
    )
    assert record.certificate() == cert
    assert [r.serial for r in loaded.list()] == [cert.serial_number]
    assert loaded.ocsp_url == "http://127.0.0.1:8888"
    index = json.loads((pki.directory / "index.json").read_text())
    assert index["certs"][0]["serial"] == f"{cert.serial_number:X}"


def _tamper_signature(csr: x509.CertificateSigningRequest) -> bytes:
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte belongs to the signature value
    return bytes(der)


def _csr_without_identity() -> x509.CertificateSigningRequest:
    key = generate_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ss1")])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())


def _csr_with_mismatched_subject() -> x509.CertificateSigningRequest:
    key = generate_private_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "ss1"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "DEV/GOV/1001/ss9"),
        ]
    )
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity_urn(SS1))]), critical=False
        )
        .sign(key, hashes.SHA256())
    )


@pytest.mark.parametrize(
    ("make_csr", "kind", "expected", "message"),
    [
        (
            lambda: _tamper_signature(build_csr(generate_private_key(), SS1, kind="auth")),
            "auth",
            SS1,
            "CSR signature does not verify",
        ),
        (
            lambda: _tamper_signature(build_csr(generate_private_key("rsa-2048"), M1, kind="sign")),
            "sign",
            M1,
            "CSR signature does not verify",
        ),
        (
            lambda: build_csr(generate_private_key(), SS1.owner.server("ss2"), kind="auth"),
            "auth",
            SS1,
            "CSR asks for an auth certificate of SERVER:DEV/GOV/1001/ss2, but the CA was asked to certify "
            "an auth certificate of SERVER:DEV/GOV/1001/ss1",
        ),
        (
            lambda: build_csr(generate_private_key(), MemberId.parse("DEV/GOV/1002"), kind="sign"),
            "sign",
            M1,
            "CSR asks for a sign certificate of MEMBER:DEV/GOV/1002, but the CA was asked to certify "
            "a sign certificate of MEMBER:DEV/GOV/1001",
        ),
        (
            lambda: build_csr(generate_private_key(), M1, kind="sign"),
            "auth",
            SS1,
            "CSR asks for a sign certificate of MEMBER:DEV/GOV/1001, but the CA was asked to certify an auth",
        ),
        (
            lambda: build_csr(generate_private_key(), SS1, kind="auth"),
            "sign",
            SS1,
            "a sign certificate cannot certify SERVER:DEV/GOV/1001/ss1",
        ),
        (
            lambda: build_csr(ec.generate_private_key(ec.SECP384R1()), SS1, kind="auth"),
            "auth",
            SS1,
            "EC key on curve secp384r1 is not allowed",
        ),
        (_csr_without_identity, "auth", SS1, "CSR has no subjectAltName naming an X-Road identity"),
        (
            _csr_with_mismatched_subject,
            "auth",
            SS1,
            "CSR: subject serialNumber (DEV/GOV/1001/ss9) does not equal its identity URI",
        ),
        (
            lambda: b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "auth",
            SS1,
            "not a valid certificate signing request",
        ),
        (lambda: b"\x30\x03\x02\x01\x01", "auth", SS1, "not a valid certificate signing request"),
    ],
)
def test_issue_rejections(
    pki: ThrowawayPki, make_csr: Callable[[], Any], kind: str, expected: Any, message: str
) -> None:
    with pytest.raises(PkiError) as err:
        pki.ca.issue(make_csr(), kind=kind, expected_identity=expected, now=NOW)  # type: ignore[arg-type]
    assert message in err.value.message
    assert pki.ca.list() == []  # nothing was issued
    assert err.value.status == 400


def test_issue_rsa_3072_and_non_positive_validity(pki: ThrowawayPki) -> None:
    issued = pki.issue_sign(M1, key_type="rsa-3072", now=NOW)
    assert issued.cert.public_key().key_size == 3072  # type: ignore[union-attr]
    with pytest.raises(PkiError, match="validity of 0 days is not positive"):
        pki.ca.issue(
            build_csr(generate_private_key(), M1, kind="sign"),
            kind="sign",
            expected_identity=M1,
            now=NOW,
            validity_days=0,
        )


def test_revoke_status_and_refresh_across_instances(pki: ThrowawayPki) -> None:
    issued = pki.issue_sign(M1, now=NOW)
    serial = issued.cert.serial_number
    server_view = DevCA.load(pki.directory)  # as 'gateway pki serve' holds it
    assert server_view.refresh() is False
    record = DevCA.load(pki.directory).revoke(serial, reason="keyCompromise", now=NOW + timedelta(hours=1))
    assert (record.status, record.reason, record.revoked_at) == (
        "revoked",
        "keyCompromise",
        NOW + timedelta(hours=1),
    )
    assert server_view.status(serial).status == "good"
    assert server_view.refresh() is True
    assert server_view.status(serial).status == "revoked"
    again = server_view.revoke(serial, reason="superseded", now=NOW + timedelta(hours=2))
    assert again == record  # the first revocation stands
    with pytest.raises(PkiError, match="certificate ABC was not issued by this CA"):
        pki.ca.revoke(0xABC, now=NOW)
    with pytest.raises(PkiError, match="unknown revocation reason 'stolen'"):
        pki.ca.revoke(serial, reason="stolen", now=NOW)


def test_in_memory_ca_writes_nothing(tmp_path: Path) -> None:
    ca = DevCA.create(name="Mem CA", now=NOW)
    cert = ca.issue(
        build_csr(generate_private_key(), M1, kind="sign"), kind="sign", expected_identity=M1, now=NOW
    )
    ca.revoke(cert.serial_number, now=NOW)
    assert ca.status(cert.serial_number).status == "revoked"
    assert ca.refresh() is False
    assert list(tmp_path.iterdir()) == []


# ---- OCSP: responder and client check ------------------------------------------------------------


def _check(
    pki: ThrowawayPki,
    der: bytes,
    cert: IssuedCert | x509.Certificate,
    *,
    now: datetime = NOW,
    max_age: int = 3600,
    nonce: bytes | None = None,
) -> ocsp.OcspStatus:
    c = cert.cert if isinstance(cert, IssuedCert) else cert
    return ocsp.check_response(der, cert=c, issuer=pki.ca_cert, now=now, max_age_seconds=max_age, nonce=nonce)


def test_ocsp_good_and_revoked(pki: ThrowawayPki) -> None:
    issued = pki.issue_auth(SS1, now=NOW)
    nonce = b"0123456789abcdef"
    der = respond(ocsp.build_request(issued.cert, pki.ca_cert, nonce=nonce), pki.ca.ocsp_state(), NOW)
    status = _check(pki, der, issued, nonce=nonce)
    assert (status.status, status.this_update, status.next_update) == ("good", NOW, NOW + timedelta(hours=1))
    assert status.response_der == der and ocsp.require_good(status) is status
    revoked_at = NOW + timedelta(minutes=1)
    pki.revoke(issued, reason="keyCompromise", now=revoked_at)
    later = NOW + timedelta(minutes=2)
    status = _check(pki, pki.ocsp_response(issued, now=later), issued, now=later)
    assert (status.status, status.revocation_time, status.revocation_reason) == (
        "revoked",
        revoked_at,
        "keyCompromise",
    )
    with pytest.raises(TrustError) as err, detected_at(SERVER_PROXY):
        ocsp.require_good(status)
    assert err.value.xroad_type == "Server.ServerProxy.CertValidation"
    assert (
        f"certificate {issued.cert.serial_number:X} is revoked at {revoked_at.isoformat()} (keyCompromise)"
        in (err.value.message)
    )


def test_ocsp_sha256_cert_id_is_echoed(pki: ThrowawayPki) -> None:
    issued = pki.issue_sign(M1, now=NOW)
    der = respond(ocsp.build_request(issued.cert, pki.ca_cert, hash_name="sha256"), pki.ca.ocsp_state(), NOW)
    assert x_ocsp.load_der_ocsp_response(der).hash_algorithm.name == "sha256"
    assert _check(pki, der, issued).status == "good"


def test_ocsp_unknown_serial_and_foreign_issuer(pki: ThrowawayPki, other: ThrowawayPki) -> None:
    # a certificate made with the CA's key but never recorded: the responder does not know it
    key = generate_private_key()
    stray = make_cert(key, "stray", issuer=(pki.ca.ca_key, pki.ca_cert), serial=4242, now=NOW)
    status = _check(pki, pki.ocsp_response(stray, now=NOW), stray)
    assert status.status == "unknown"
    with pytest.raises(TrustError, match=f"certificate {stray.serial_number:X} is unknown"):
        ocsp.require_good(status)
    # a certificate of another CA with the same issuer name: we are not authoritative
    foreign = other.issue_sign(M1, now=NOW).cert
    der = respond(ocsp.build_request(foreign, other.ca_cert), pki.ca.ocsp_state(), NOW)
    assert x_ocsp.load_der_ocsp_response(der).response_status == x_ocsp.OCSPResponseStatus.UNAUTHORIZED
    with pytest.raises(TrustError, match="OCSP response: responder answered unauthorized"):
        _check(pki, der, foreign)


def _request_with(pki: ThrowawayPki, *, copies: int = 1, hash_name: str | None = None) -> bytes:
    cert = pki.issue_sign(M1, now=NOW).cert
    one = aocsp.OCSPRequest.load(ocsp.build_request(cert, pki.ca_cert))["tbs_request"]["request_list"][0]
    if hash_name is not None:
        one["req_cert"]["hash_algorithm"] = {"algorithm": hash_name}
    return aocsp.OCSPRequest({"tbs_request": {"request_list": [one.copy() for _ in range(copies)]}}).dump()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "make_request",
    [
        lambda p: b"",
        lambda p: b"garbage",
        lambda p: b"\x30\x03\x02\x01\x01",
        lambda p: b"\x30" + b"\x80" * 10,
        lambda p: _request_with(p, copies=2),
        lambda p: _request_with(p, copies=0),
        lambda p: _request_with(p, hash_name="md5"),
        lambda p: _request_with(p) + b"\x00",
    ],
    ids=[
        "empty",
        "garbage",
        "integer",
        "bad length",
        "two CertIDs",
        "no CertID",
        "MD5 CertID",
        "trailing byte",
    ],
)
def test_ocsp_malformed_request(pki: ThrowawayPki, make_request: Callable[[ThrowawayPki], bytes]) -> None:
    der = respond(make_request(pki), pki.ca.ocsp_state(), NOW)
    assert x_ocsp.load_der_ocsp_response(der).response_status == x_ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def _sign_response(
    pki: ThrowawayPki,
    cert: x509.Certificate,
    *,
    key: Any,
    signer: x509.Certificate,
    include: list[x509.Certificate],
) -> bytes:
    builder = (
        (
            x_ocsp.OCSPResponseBuilder()
            .add_response(
                cert=cert,
                issuer=pki.ca_cert,
                algorithm=hashes.SHA1(),  # noqa: S303 - the usual CertID hash
                cert_status=x_ocsp.OCSPCertStatus.GOOD,
                this_update=NOW,
                next_update=NOW + timedelta(hours=1),
                revocation_time=None,
                revocation_reason=None,
            )
            .responder_id(x_ocsp.OCSPResponderEncoding.HASH, signer)
            .certificates(include)
        )
        if include
        else (
            x_ocsp.OCSPResponseBuilder()
            .add_response(
                cert=cert,
                issuer=pki.ca_cert,
                algorithm=hashes.SHA1(),  # noqa: S303 - the usual CertID hash
                cert_status=x_ocsp.OCSPCertStatus.GOOD,
                this_update=NOW,
                next_update=NOW + timedelta(hours=1),
                revocation_time=None,
                revocation_reason=None,
            )
            .responder_id(x_ocsp.OCSPResponderEncoding.NAME, signer)
        )
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_ocsp_response_signed_by_the_issuer_itself_is_accepted(pki: ThrowawayPki) -> None:
    issued = pki.issue_sign(M1, now=NOW)
    der = _sign_response(pki, issued.cert, key=pki.ca.ca_key, signer=pki.ca_cert, include=[])
    assert _check(pki, der, issued).status == "good"


def _flip_signature(der: bytes) -> bytes:
    sig = x_ocsp.load_der_ocsp_response(der).signature
    i = der.index(sig) + len(sig) - 1
    return der[:i] + bytes([der[i] ^ 0x01]) + der[i + 1 :]


@dataclass(frozen=True)
class Ctx:
    p: ThrowawayPki  # our CA
    o: ThrowawayPki  # another CA with the same name
    r: ThrowawayPki  # another CA with another name
    a: IssuedCert  # the certificate asked about
    b: IssuedCert  # another certificate of our CA


OcspCase = Callable[[Ctx], tuple[bytes, dict[str, Any]]]

OCSP_REJECTIONS: list[tuple[str, OcspCase, str]] = [
    ("garbage", lambda c: (b"garbage", {}), "not a valid OCSP response"),
    (
        "malformed status",
        lambda c: (respond(b"x", c.p.ca.ocsp_state(), NOW), {}),
        "responder answered malformed_request",
    ),
    (
        "signer of another CA with the same name",
        lambda c: (
            _sign_response(
                c.p, c.a.cert, key=c.o.ca.ocsp_key, signer=c.o.ca.ocsp_cert, include=[c.o.ca.ocsp_cert]
            ),
            {},
        ),
        "responder certificate O=Test CA,CN=Test CA OCSP Responder is not signed by the issuer",
    ),
    (
        "signer issued by another CA",
        lambda c: (
            _sign_response(
                c.p, c.a.cert, key=c.r.ca.ocsp_key, signer=c.r.ca.ocsp_cert, include=[c.r.ca.ocsp_cert]
            ),
            {},
        ),
        "was not issued by the certificate's issuer O=Test CA,CN=Test CA",
    ),
    (
        "delegated signer without OCSPSigning",
        lambda c: (
            _sign_response(
                c.p, c.a.cert, key=c.p.ca.tsa_key, signer=c.p.ca.tsa_cert, include=[c.p.ca.tsa_cert]
            ),
            {},
        ),
        "responder certificate O=Test CA,CN=Test CA TSA lacks extKeyUsage OCSPSigning",
    ),
    (
        "signer not named",
        lambda c: (_sign_response(c.p, c.a.cert, key=c.r.ca.ca_key, signer=c.r.ca_cert, include=[]), {}),
        "signed neither by the issuer nor by a responder certificate",
    ),
    (
        "signer the issuer's name, another key",
        lambda c: (_sign_response(c.p, c.a.cert, key=c.o.ca.ca_key, signer=c.o.ca_cert, include=[]), {}),
        "signature by O=Test CA,CN=Test CA does not verify",
    ),
    (
        "tampered signature",
        lambda c: (_flip_signature(c.p.ocsp_response(c.a, now=NOW)), {}),
        "signature by O=Test CA,CN=Test CA OCSP Responder does not verify",
    ),
    (
        "another certificate's status",
        lambda c: (c.p.ocsp_response(c.b, now=NOW), {}),
        "0 answers are about certificate",
    ),
    (
        "stale",
        lambda c: (c.p.ocsp_response(c.a, now=NOW - timedelta(minutes=61), validity_seconds=7200), {}),
        "is older than 3600 s",
    ),
    (
        "future thisUpdate",
        lambda c: (c.p.ocsp_response(c.a, now=NOW + timedelta(minutes=5)), {}),
        "thisUpdate 2026-11-27T12:05:00+00:00 is in the future",
    ),
    (
        "nextUpdate passed",
        lambda c: (c.p.ocsp_response(c.a, now=NOW - timedelta(minutes=10), validity_seconds=60), {}),
        "nextUpdate 2026-11-27T11:51:00+00:00 has passed",
    ),
    (
        "nonce missing",
        lambda c: (c.p.ocsp_response(c.a, now=NOW), {"nonce": b"0123456789abcdef"}),
        "the nonce sent in the request is missing",
    ),
    (
        "nonce differs",
        lambda c: (
            respond(ocsp.build_request(c.a.cert, c.p.ca_cert, nonce=b"A" * 16), c.p.ca.ocsp_state(), NOW),
            {"nonce": b"B" * 16},
        ),
        "the nonce does not match the request's",
    ),
]


@pytest.mark.parametrize(("case", "make", "message"), OCSP_REJECTIONS, ids=[c[0] for c in OCSP_REJECTIONS])
def test_ocsp_check_rejections(
    pki: ThrowawayPki, other: ThrowawayPki, tmp_path: Path, case: str, make: OcspCase, message: str
) -> None:
    renamed = make_pki(tmp_path / "renamed", name="Renamed CA", now=NOW)
    ctx = Ctx(p=pki, o=other, r=renamed, a=pki.issue_auth(SS1, now=NOW), b=pki.issue_sign(M1, now=NOW))
    der, kw = make(ctx)
    with pytest.raises(TrustError) as err, detected_at(SERVER_PROXY):
        _check(pki, der, ctx.a, **kw)
    assert message in err.value.message
    assert err.value.xroad_type == IVI


# ---- TSA: responder and client check -------------------------------------------------------------


def test_timestamp_round_trip_and_offline_verification(pki: ThrowawayPki) -> None:
    h = sha256(b"checkpoint")
    resp = tsa.respond(
        timestamp.build_request(h, nonce=12345),
        tsa_key=pki.ca.tsa_key,
        tsa_cert=pki.tsa_cert,
        now=NOW + timedelta(microseconds=999),
        serial=77,
    )
    token = timestamp.check_response(
        resp, data_hash=h, tsa_cert=pki.tsa_cert, nonce=12345, policy=tsa.TSA_POLICY_OID
    )
    assert (token.gen_time, token.serial, token.nonce, token.policy, token.hash_algorithm) == (
        NOW,
        77,
        12345,
        tsa.TSA_POLICY_OID,
        "sha256",
    )
    assert timestamp.verify_token(token.token_der, h, pki.tsa_cert) == token
    parsed = TimeStampResp.load(resp)
    assert len(parsed["time_stamp_token"]["content"]["certificates"]) == 1  # certReq honoured


@pytest.mark.parametrize("digest", [sha256(b"x")[:32], b"\x01" * 48, b"\x02" * 64])
def test_timestamp_imprint_hashes(pki: ThrowawayPki, digest: bytes) -> None:
    resp = tsa.respond(
        timestamp.build_request(digest, nonce=None, cert_req=False),
        tsa_key=pki.ca.tsa_key,
        tsa_cert=pki.tsa_cert,
        now=NOW,
        serial=1,
    )
    token = timestamp.check_response(resp, data_hash=digest, tsa_cert=pki.tsa_cert)
    assert (
        token.nonce is None
        and token.hash_algorithm == {32: "sha256", 48: "sha384", 64: "sha512"}[len(digest)]
    )
    assert not TimeStampResp.load(resp)["time_stamp_token"]["content"]["certificates"]


def _req(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": b"\x00" * 32},
    }
    base.update(fields)
    return tsp.TimeStampReq(base).dump()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("request_der", "fail", "text"),
    [
        (b"garbage", "bad_data_format", "not a DER TimeStampReq"),
        (_req() + b"\x00", "bad_data_format", "not a DER TimeStampReq"),
        (_req(version=2), "bad_data_format", "TimeStampReq version 2 is not supported"),
        (
            _req(message_imprint={"hash_algorithm": {"algorithm": "sha1"}, "hashed_message": b"\x00" * 20}),
            "bad_alg",
            "hash algorithm sha1 is not accepted",
        ),
        (
            _req(message_imprint={"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": b"\x00" * 20}),
            "bad_alg",
            "hashed message is not a sha256 digest",
        ),
        (_req(req_policy="1.2.3.4"), "unaccepted_policy", "policy 1.2.3.4 is not offered"),
        (
            _req(extensions=[{"extn_id": "1.2.3.4", "critical": False, "extn_value": b"\x05\x00"}]),
            "unaccepted_extensions",
            "request extensions are not supported",
        ),
    ],
    ids=["garbage", "trailing data", "version 2", "sha1", "wrong length", "other policy", "extension"],
)
def test_tsa_rejections(pki: ThrowawayPki, request_der: bytes, fail: str, text: str) -> None:
    resp = TimeStampResp.load(
        tsa.respond(request_der, tsa_key=pki.ca.tsa_key, tsa_cert=pki.tsa_cert, now=NOW, serial=1)
    )
    assert resp["status"]["status"].native == "rejection"
    assert resp["status"]["fail_info"].native == {fail}
    assert text in resp["status"]["status_string"].native[0]
    with pytest.raises(TrustError) as err, detected_at(CLIENT_PROXY):
        timestamp.check_response(resp.dump(), data_hash=b"\x00" * 32, tsa_cert=pki.tsa_cert)
    assert f"TSA refused: rejection; failInfo {fail}" in err.value.message
    assert err.value.xroad_type == "Server.ClientProxy.TimestampingFailed"


def _replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1
    return data.replace(old, new)


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


TsCase = Callable[[ThrowawayPki, ThrowawayPki, bytes], tuple[bytes, dict[str, Any]]]
H = sha256(b"data")

TS_REJECTIONS: list[tuple[str, TsCase, str]] = [
    ("garbage", lambda p, o, r: (b"garbage", {}), "not a DER TimeStampResp"),
    ("wrong imprint", lambda p, o, r: (r, {"data_hash": sha256(b"other")}), "message imprint does not match"),
    ("wrong nonce", lambda p, o, r: (r, {"nonce": 8}), "nonce 7 does not match the request's 8"),
    ("wrong policy", lambda p, o, r: (r, {"policy": "1.2.3"}), "is not the required 1.2.3"),
    (
        "wrong TSA certificate",
        lambda p, o, r: (r, {"tsa_cert": o.tsa_cert}),
        "token is not signed by the TSA certificate O=Test CA,CN=Test CA TSA",
    ),
    (
        "certificate without timeStamping",
        lambda p, o, r: (
            tsa.respond(
                timestamp.build_request(H, nonce=7),
                tsa_key=p.ca.ocsp_key,
                tsa_cert=p.ca.ocsp_cert,
                now=NOW,
                serial=1,
            ),
            {"tsa_cert": p.ca.ocsp_cert},
        ),
        "lacks extKeyUsage timeStamping",
    ),
    (
        "tampered genTime",
        lambda p, o, r: (_replace_once(r, b"20261127120000Z", b"20251127120000Z"), {}),
        "signed messageDigest does not match the TSTInfo",
    ),
    (
        "tampered signature",
        lambda p, o, r: (_flip_last(r), {}),
        "signature by O=Test CA,CN=Test CA TSA does not verify",
    ),
    (
        "granted without token",
        lambda p, o, r: (TimeStampResp({"status": {"status": "granted"}}).dump(), {}),
        "granted response carries no token",
    ),
]


@pytest.mark.parametrize(("case", "make", "message"), TS_REJECTIONS, ids=[c[0] for c in TS_REJECTIONS])
def test_timestamp_check_rejections(
    pki: ThrowawayPki, other: ThrowawayPki, case: str, make: TsCase, message: str
) -> None:
    resp = tsa.respond(
        timestamp.build_request(H, nonce=7), tsa_key=pki.ca.tsa_key, tsa_cert=pki.tsa_cert, now=NOW, serial=5
    )
    der, kw = make(pki, other, resp)
    args: dict[str, Any] = {"data_hash": H, "tsa_cert": pki.tsa_cert, "nonce": 7, **kw}
    with pytest.raises(TrustError) as err, detected_at(CLIENT_PROXY):
        timestamp.check_response(der, **args)
    assert message in err.value.message
    assert err.value.xroad_type == "Server.ClientProxy.TimestampingFailed"


def test_verify_token_rejects_a_tampered_stored_token(pki: ThrowawayPki) -> None:
    token = timestamp.check_response(pki.timestamp_response(H, now=NOW), data_hash=H, tsa_cert=pki.tsa_cert)
    with pytest.raises(TrustError, match="signed messageDigest does not match"):
        timestamp.verify_token(
            _replace_once(token.token_der, b"20261127120000Z", b"20261127120001Z"), H, pki.tsa_cert
        )
    with pytest.raises(TrustError, match="token is not a DER CMS SignedData"):
        timestamp.verify_token(token.token_der[:-3], H, pki.tsa_cert)
    with pytest.raises(ValueError, match="data_hash has 20 bytes"):
        timestamp.build_request(b"\x00" * 20, nonce=None)


# ---- the CLI (no server) -------------------------------------------------------------------------


def test_cli_init_csr_issue_list_revoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("GATEWAY_CONFIG",):
        monkeypatch.delenv(name, raising=False)
    d = str(tmp_path / "certs")
    assert main(["pki", "init", "--dir", d, "--name", "CLI CA", "--ocsp-url", ""]) == 0
    assert main(["pki", "init", "--dir", d]) == 1
    assert "a development CA already exists" in capsys.readouterr().err
    assert (
        main(
            [
                "pki",
                "csr",
                "--kind",
                "auth",
                "--identity",
                "DEV/GOV/1001/ss1",
                "--name",
                "Agency A",
                "--key-out",
                "ss1.key",
                "--out",
                "ss1.csr",
            ]
        )
        == 0
    )
    assert stat.S_IMODE((tmp_path / "ss1.key").stat().st_mode) == 0o600
    assert (
        main(
            [
                "pki",
                "csr",
                "--kind",
                "auth",
                "--identity",
                "DEV/GOV/1001/ss1",
                "--key-out",
                "ss1.key",
                "--out",
                "x.csr",
            ]
        )
        == 1
    )
    assert "refusing to overwrite a private key" in capsys.readouterr().err
    # the CA refuses to certify another identity than the CSR's
    assert (
        main(
            [
                "pki",
                "issue",
                "--dir",
                d,
                "--kind",
                "auth",
                "--csr",
                "ss1.csr",
                "--identity",
                "DEV/GOV/1001/ss2",
                "--out",
                "ss1.pem",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "Client.BadRequest: CSR asks for an auth certificate of SERVER:DEV/GOV/1001/ss1" in err
    assert not (tmp_path / "ss1.pem").exists()
    assert (
        main(
            [
                "pki",
                "issue",
                "--dir",
                d,
                "--kind",
                "auth",
                "--csr",
                "ss1.csr",
                "--identity",
                "DEV/GOV/1001/ss1",
                "--out",
                "ss1.pem",
                "--days",
                "30",
            ]
        )
        == 0
    )
    cert = x509.load_pem_x509_certificate((tmp_path / "ss1.pem").read_bytes())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30, minutes=5)
    capsys.readouterr()
    assert main(["pki", "list", "--dir", d, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(c["serial"], c["status"], c["identity"]) for c in listed] == [
        (f"{cert.serial_number:X}", "good", "DEV/GOV/1001/ss1")
    ]
    assert main(["pki", "revoke", "--dir", d, f"{cert.serial_number:x}", "--reason", "superseded"]) == 0
    assert main(["pki", "list", "--dir", d]) == 0
    out = capsys.readouterr().out
    assert f"{cert.serial_number:X}" in out and "revoked" in out
    assert main(["pki", "revoke", "--dir", d, "XYZ"]) == 1
    assert "serial 'XYZ' is not a hexadecimal number" in capsys.readouterr().err
    assert (
        main(
            [
                "pki",
                "issue",
                "--dir",
                d,
                "--kind",
                "sign",
                "--csr",
                "missing.csr",
                "--identity",
                "DEV/GOV/1001",
                "--out",
                "x.pem",
            ]
        )
        == 1
    )
    assert "CSR file missing.csr cannot be read" in capsys.readouterr().err
    assert main(["pki", "list", "--dir", str(tmp_path / "nothing")]) == 1
    assert "no development CA in" in capsys.readouterr().err


def test_cli_bad_settings_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_PKI__OCSP_PORT", "eighty")
    assert main(["pki", "list", "--dir", str(tmp_path)]) == 2
    assert "expected an integer, got 'eighty'" in capsys.readouterr().err
