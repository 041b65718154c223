"""The certificate profile (identity binding) and the key helpers."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from faultside import SERVER_PROXY, detected_at
from pkihelpers import ThrowawayPki, make_cert, make_pki

from gateway.errors import PkiError, TrustError
from gateway.identifiers import MemberId, SecurityServerId
from gateway.trust.certprofile import (
    auth_identity_of,
    build_csr,
    check_cert_kind,
    identity_of,
    identity_urn,
    key_usage,
    parse_identity,
    parse_identity_urn,
    sign_identity_of,
)
from gateway.trust.keys import (
    cert_sha256_hex,
    der_to_raw_ecdsa,
    generate_private_key,
    key_type_of,
    load_private_key_pem,
    private_key_to_pem,
    raw_to_der_ecdsa,
    read_private_key,
    sign_bytes,
    verify_bytes,
    write_private_key,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def pki(tmp_path: Path) -> ThrowawayPki:
    return make_pki(tmp_path / "pki", now=NOW)


# ---- the profile ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "ident", "key_type", "name"),
    [
        ("auth", "DEV/GOV/1001/ss1", "ec-p256", "Agency A"),
        ("auth", "DEV/GOV/1001/ss1", "rsa-2048", None),
        ("sign", "DEV/GOV/1001", "ec-p256", "Agency A"),
        ("sign", "DEV/COM/a?b'(x)+,-.=", "rsa-2048", None),
        ("auth", "EE-test/GOV/70000001/ss.2", "ec-p256", "Ümlaut Agency"),
    ],
)
def test_profile_round_trip(
    pki: ThrowawayPki, kind: str, ident: str, key_type: str, name: str | None
) -> None:
    identity = parse_identity(kind, ident)  # type: ignore[arg-type]
    issued = pki.issue(kind, identity, name=name, key_type=key_type, now=NOW)  # type: ignore[arg-type]
    assert identity_of(issued.cert) == (kind, identity)
    assert check_cert_kind(issued.cert, kind) == identity  # type: ignore[arg-type]
    other = "sign" if kind == "auth" else "auth"
    with pytest.raises(TrustError, match=f"is an? {kind} certificate, not an? {other} one"):
        check_cert_kind(issued.cert, other)  # type: ignore[arg-type]
    san = issued.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [identity_urn(identity)]
    subject = issued.cert.subject
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == ident
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        name or identity.member_code
    )
    ku = issued.cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert ku.value.key_encipherment == (kind == "auth" and key_type.startswith("rsa"))
    assert ku.value.content_commitment == (kind == "sign")


def test_typed_helpers(pki: ThrowawayPki) -> None:
    auth = pki.issue_auth("DEV/GOV/1001/ss1", now=NOW)
    sign = pki.issue_sign("DEV/GOV/1001", now=NOW)
    assert auth_identity_of(auth.cert) == SecurityServerId.parse("DEV/GOV/1001/ss1")
    assert sign_identity_of(sign.cert) == MemberId.parse("DEV/GOV/1001")
    with pytest.raises(TrustError, match="is a sign certificate, not an auth one"):
        auth_identity_of(sign.cert)


@pytest.mark.parametrize(
    ("identity", "urn"),
    [
        (SecurityServerId.parse("DEV/GOV/1001/ss1"), "urn:x-road:server:DEV/GOV/1001/ss1"),
        (MemberId.parse("DEV/GOV/1001"), "urn:x-road:member:DEV/GOV/1001"),
        (MemberId.parse("DEV/GOV/a?b"), "urn:x-road:member:DEV/GOV/a%3Fb"),
    ],
)
def test_urn_form(identity: SecurityServerId | MemberId, urn: str) -> None:
    assert identity_urn(identity) == urn
    assert parse_identity_urn(urn)[1] == identity


@pytest.mark.parametrize(
    ("urn", "message"),
    [
        ("https://example.org/", "is not an X-Road identity"),
        ("urn:x-road:subsystem:DEV/GOV/1001/x", "unknown identity type 'subsystem'"),
        ("urn:x-road:member", "unknown identity type 'member'"),
        ("urn:x-road:member:DEV/GOV", "names no valid identifier: member identifier 'DEV/GOV' has 2 parts"),
        ("urn:x-road:server:DEV/GOV/1001", "names no valid identifier"),
        ("urn:x-road:member:DEV/GOV/%31001", "not in canonical form ('urn:x-road:member:DEV/GOV/1001')"),
        ("urn:x-road:member:DEV/GOV/a%2Fb", "names no valid identifier"),
        ("urn:x-road:member:DEV/GOV/a b", "names no valid identifier"),
    ],
)
def test_urn_rejections(urn: str, message: str) -> None:
    with pytest.raises(TrustError) as err:
        parse_identity_urn(urn)
    assert message in err.value.message


# Hand-built certificates that break one rule of the profile each.


def _cert(
    *,
    uris: list[str] | None = None,
    serial_attr: str | None = "DEV/GOV/1001/ss1",
    cn: str = "ss1",
    ca: bool = False,
    ku: x509.KeyUsage | None = None,
    ekus: list[x509.ObjectIdentifier] | None = None,
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if serial_attr is not None:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_attr))
    extensions: list[tuple[x509.ExtensionType, bool]] = [(x509.BasicConstraints(ca=ca, path_length=None), True)]
    if uris is not None:
        san = [x509.UniformResourceIdentifier(u) for u in uris] + [x509.DNSName("ss1.example")]
        extensions.append((x509.SubjectAlternativeName(san), False))
    if ku is not None:
        extensions.append((ku, True))
    if ekus is not None:
        extensions.append((x509.ExtendedKeyUsage(ekus), False))
    return make_cert(key, x509.Name(attrs), not_before=NOW, not_after=NOW + timedelta(days=1), extensions=extensions)


AUTH_URN = "urn:x-road:server:DEV/GOV/1001/ss1"
SIGN_URN = "urn:x-road:member:DEV/GOV/1001"
TLS = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
KU_AUTH = key_usage(digital_signature=True)
KU_SIGN = key_usage(digital_signature=True, content_commitment=True)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: _cert(uris=None, ku=KU_AUTH, ekus=TLS), "has no subjectAltName naming an X-Road identity"),
        (lambda: _cert(uris=[], ku=KU_AUTH, ekus=TLS), "has 0 X-Road identity URIs in subjectAltName"),
        (
            lambda: _cert(uris=[AUTH_URN, "urn:x-road:server:DEV/GOV/1001/ss2"], ku=KU_AUTH, ekus=TLS),
            "has 2 X-Road identity URIs",
        ),
        (
            lambda: _cert(uris=[AUTH_URN], serial_attr="DEV/GOV/1002/ss1", ku=KU_AUTH, ekus=TLS),
            "subject serialNumber (DEV/GOV/1002/ss1) does not equal its identity URI (DEV/GOV/1001/ss1)",
        ),
        (
            lambda: _cert(uris=[AUTH_URN], serial_attr=None, ku=KU_AUTH, ekus=TLS),
            "subject serialNumber (none) does not equal",
        ),
        (
            lambda: _cert(uris=[AUTH_URN], cn="ss2", ku=KU_AUTH, ekus=TLS),
            "subject CN (ss2) is not the code 'ss1' of DEV/GOV/1001/ss1",
        ),
        (lambda: _cert(uris=[AUTH_URN], ca=True, ku=KU_AUTH, ekus=TLS), "is a CA certificate"),
        (lambda: _cert(uris=[AUTH_URN], ekus=TLS), "has no keyUsage extension"),
        (
            lambda: _cert(uris=[AUTH_URN], ku=key_usage(content_commitment=True), ekus=TLS),
            "keyUsage lacks digitalSignature",
        ),
        (
            lambda: _cert(uris=[AUTH_URN], ku=KU_AUTH, ekus=[ExtendedKeyUsageOID.SERVER_AUTH]),
            "an auth certificate needs extKeyUsage serverAuth and clientAuth",
        ),
        (
            lambda: _cert(uris=[AUTH_URN], ku=KU_SIGN, ekus=TLS),
            "an auth certificate must not have keyUsage contentCommitment",
        ),
        (
            lambda: _cert(uris=[SIGN_URN], serial_attr="DEV/GOV/1001", cn="1001", ku=KU_AUTH),
            "a sign certificate needs keyUsage contentCommitment",
        ),
        (
            lambda: _cert(uris=[SIGN_URN], serial_attr="DEV/GOV/1001", cn="1001", ku=KU_SIGN, ekus=TLS),
            "a sign certificate must not have extKeyUsage serverAuth/clientAuth",
        ),
    ],
)
def test_identity_of_rejections(make: Callable[[], x509.Certificate], message: str) -> None:
    with pytest.raises(TrustError) as err, detected_at(SERVER_PROXY):
        identity_of(make())
    assert message in err.value.message
    assert err.value.xroad_type == "Server.ServerProxy.CertValidation"


def test_hand_built_certificate_following_the_profile_is_accepted() -> None:
    cert = _cert(uris=[SIGN_URN], serial_attr="DEV/GOV/1001", cn="1001", ku=KU_SIGN)
    assert identity_of(cert) == ("sign", MemberId.parse("DEV/GOV/1001"))


@pytest.mark.parametrize(
    ("kind", "identity", "name", "message"),
    [
        ("auth", MemberId.parse("DEV/GOV/1001"), None, "an auth certificate must name a security server"),
        ("sign", SecurityServerId.parse("DEV/GOV/1001/ss1"), None, "a sign certificate must name a member"),
        ("sign", MemberId.parse("DEV/GOV/1001"), "x" * 65, "organisation name has 65 characters"),
        ("sign", MemberId.parse("DEV/GOV/1001"), "  ", "organisation name is empty"),
        ("sign", MemberId.parse("DEV/GOV/1001"), "A\nB", "organisation name contains a control character"),
    ],
)
def test_build_csr_rejections(
    kind: str, identity: MemberId | SecurityServerId, name: str | None, message: str
) -> None:
    with pytest.raises(PkiError) as err:
        build_csr(generate_private_key(), identity, kind=kind, name=name)  # type: ignore[arg-type]
    assert message in err.value.message


def test_csr_carries_the_identity() -> None:
    csr = build_csr(generate_private_key(), MemberId.parse("DEV/GOV/1001"), kind="sign", name="Agency A")
    assert csr.is_signature_valid
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [SIGN_URN]
    assert csr.subject.rfc4514_string() == "2.5.4.5=DEV/GOV/1001,O=Agency A,CN=1001"


# ---- keys ----------------------------------------------------------------------------------------


def test_private_key_file_is_0600_even_when_replacing_a_wider_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "k.key"
    path.parent.mkdir()
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    key = generate_private_key()
    write_private_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_type_of(read_private_key(path)) == "ec-p256"
    assert [p.name for p in path.parent.iterdir()] == ["k.key"]  # no temporary file left behind


def test_encrypted_private_key(tmp_path: Path) -> None:
    key = generate_private_key("rsa-2048")
    path = tmp_path / "k.key"
    write_private_key(path, key, passphrase=b"1234")
    assert b"ENCRYPTED" in path.read_bytes()
    loaded = read_private_key(path, passphrase=b"1234")
    assert loaded.private_numbers() == key.private_numbers()  # type: ignore[union-attr]
    with pytest.raises(PkiError, match="wrong passphrase"):
        read_private_key(path, passphrase=b"0000")
    with pytest.raises(PkiError, match="private key: Password was not given but private key is encrypted"):
        read_private_key(path)
    with pytest.raises(PkiError, match="cannot be read"):
        read_private_key(tmp_path / "missing.key")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ec.generate_private_key(ec.SECP384R1()), "curve secp384r1 is not allowed"),
        (
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),  # noqa: S505 - refused
            "RSA key of 1024 bits",
        ),
    ],
)
def test_disallowed_keys(
    make: Callable[[], ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey], message: str
) -> None:
    key = make()
    with pytest.raises(PkiError, match=message):
        key_type_of(key)
    with pytest.raises(PkiError, match=message):
        load_private_key_pem(private_key_to_pem(key))


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_sign_verify_round_trip(pki: ThrowawayPki, key_type: str) -> None:
    issued = pki.issue_sign("DEV/GOV/1001", key_type=key_type, now=NOW)
    alg, sig = sign_bytes(issued.key, b"data")
    assert alg == ("ecdsa-p256-sha256" if key_type == "ec-p256" else "rsa-v1_5-sha256")
    verify_bytes(issued.cert, alg, b"data", sig)
    verify_bytes(issued.cert.public_key(), alg, b"data", sig)  # type: ignore[arg-type]


def test_verify_rejections(pki: ThrowawayPki) -> None:
    ec_cert = pki.issue_sign("DEV/GOV/1001", now=NOW)
    rsa_cert = pki.issue_sign("DEV/GOV/1002", key_type="rsa-2048", now=NOW)
    alg, sig = sign_bytes(ec_cert.key, b"data")
    cases = [
        (ec_cert.cert, "hmac-sha256", b"data", sig, "unknown signature algorithm 'hmac-sha256'"),
        (
            ec_cert.cert,
            "rsa-v1_5-sha256",
            b"data",
            sig,
            "does not match the key (expected 'ecdsa-p256-sha256')",
        ),
        (ec_cert.cert, alg, b"datA", sig, "ecdsa-p256-sha256 signature does not verify"),
        (ec_cert.cert, alg, b"data", sig[:-1] + bytes([sig[-1] ^ 1]), "signature does not verify"),
        (ec_cert.cert, alg, b"data", b"garbage", "signature does not verify"),
        (
            rsa_cert.cert,
            "rsa-v1_5-sha256",
            b"data",
            b"\x00" * 256,
            "rsa-v1_5-sha256 signature does not verify",
        ),
    ]
    for cert, a, data, s, message in cases:
        with pytest.raises(TrustError) as err:
            verify_bytes(cert, a, data, s)
        assert message in err.value.message


def test_fingerprint_and_ecdsa_forms(pki: ThrowawayPki) -> None:
    issued = pki.issue_auth("DEV/GOV/1001/ss1", now=NOW)
    der = issued.cert.public_bytes(serialization.Encoding.DER)
    assert cert_sha256_hex(issued.cert) == hashlib.sha256(der).hexdigest()
    _, sig = sign_bytes(issued.key, b"x")
    raw = der_to_raw_ecdsa(sig)
    assert len(raw) == 64 and raw_to_der_ecdsa(raw) == sig
    with pytest.raises(TrustError, match="raw ECDSA signature has 63 bytes; expected 64"):
        raw_to_der_ecdsa(raw[:-1])
    with pytest.raises(TrustError, match="malformed DER ECDSA signature"):
        der_to_raw_ecdsa(b"\x01\x02")
