"""Who may talk to whom (gateway.globalconf.peertrust): the peer and signing-certificate rules as tables.

Real certificates from a throw-away development CA; the global configuration is built directly, so each
row changes exactly one thing about an otherwise accepted certificate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from pkihelpers import IssuedCert, ThrowawayPki, make_pki

from gateway.dev.pki.ocsp_responder import respond
from gateway.errors import (
    CertValidation,
    GatewayError,
    IncorrectValidationInfo,
    SslAuthenticationFailed,
)
from gateway.globalconf import peertrust
from gateway.globalconf.model import CertificateAuthority, GlobalConf, Member, SecurityServer
from gateway.identifiers import MemberId, SecurityServerId
from gateway.trust import ocsp
from gateway.trust.keys import cert_sha256_hex

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SS1 = SecurityServerId.parse("DEV/GOV/1001/ss1")
SS2 = SecurityServerId.parse("DEV/GOV/1002/ss2")
M1 = MemberId.parse("DEV/GOV/1001")
M2 = MemberId.parse("DEV/GOV/1002")


@dataclass(frozen=True, slots=True, kw_only=True)
class World:
    pki: ThrowawayPki  # the CA of the global configuration
    other: ThrowawayPki  # a CA nobody trusts
    auth: IssuedCert  # ss1's registered authentication certificate
    unregistered: IssuedCert  # an authentication certificate of ss1 that is not registered
    sign: IssuedCert  # member 1001's signing certificate
    conf: GlobalConf


def _conf(pki: ThrowawayPki, *, auth: IssuedCert, other_auth: IssuedCert) -> GlobalConf:
    return GlobalConf(
        instance="DEV", version=1, issued_at=NOW - timedelta(hours=1), expires_at=NOW + timedelta(hours=1),
        central_url="http://127.0.0.1:1",
        members=(Member(id=M1, name="One", subsystems=()), Member(id=M2, name="Two", subsystems=())),
        security_servers=(
            SecurityServer(id=SS1, address="127.0.0.1:1", auth_certs=frozenset({auth.sha256}), clients=()),
            SecurityServer(id=SS2, address="127.0.0.1:2", auth_certs=frozenset({other_auth.sha256}), clients=()),
        ),
        certificate_authorities=(
            CertificateAuthority(name="Test CA", certificate=pki.ca_cert, ocsp_urls=("http://127.0.0.1:1",)),
        ),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp: Path = tmp_path_factory.mktemp("peertrust")
    pki = make_pki(tmp / "pki", now=NOW - timedelta(days=1))
    other = make_pki(tmp / "other", now=NOW - timedelta(days=1))
    auth = pki.issue_auth(SS1, now=NOW - timedelta(days=1))
    ss2_auth = pki.issue_auth(SS2, now=NOW - timedelta(days=1))
    return World(
        pki=pki, other=other, auth=auth, unregistered=pki.issue_auth(SS1, now=NOW - timedelta(days=1)),
        sign=pki.issue_sign(M1, now=NOW - timedelta(days=1)),
        conf=_conf(pki, auth=auth, other_auth=ss2_auth),
    )


# ---- peer authentication certificates (TLS) ---------------------------------------------------------------

AuthCase = Callable[[World], tuple[x509.Certificate, datetime, SecurityServerId | None]]

AUTH_CASES: list[tuple[str, AuthCase, str | None]] = [
    ("registered, dialled", lambda w: (w.auth.cert, NOW, SS1), None),
    ("registered, server side (no expectation)", lambda w: (w.auth.cert, NOW, None), None),
    ("untrusted issuer", lambda w: (w.other.issue_auth(SS1, now=NOW - timedelta(days=1)).cert, NOW, SS1),
     "is not issued by a CA trusted in the global configuration"),
    ("not yet valid", lambda w: (w.auth.cert, w.auth.cert.not_valid_before_utc - timedelta(seconds=1), SS1),
     "is not valid at"),
    ("expired", lambda w: (w.auth.cert, w.auth.cert.not_valid_after_utc + timedelta(seconds=1), SS1),
     "is not valid at"),
    ("not registered", lambda w: (w.unregistered.cert, NOW, SS1),
     "is not registered for any security server in the global configuration"),
    ("registered for another server", lambda w: (w.auth.cert, NOW, SS2),
     f"authentication certificate is registered for {SS1}, not for {SS2}"),
]


@pytest.mark.parametrize(("case", "make", "refusal"), AUTH_CASES, ids=[c[0] for c in AUTH_CASES])
def test_peer_auth_cert(world: World, case: str, make: AuthCase, refusal: str | None) -> None:
    cert, now, expected = make(world)
    if refusal is None:
        assert peertrust.check_peer_auth_cert(cert, world.conf, now=now, expected=expected) == SS1
        return
    with pytest.raises(SslAuthenticationFailed, match=refusal) as info:
        peertrust.check_peer_auth_cert(cert, world.conf, now=now, expected=expected)
    assert info.value.xroad_type == "Server.SslAuthenticationFailed"


# ---- stapled signing certificates --------------------------------------------------------------------------

SignCase = Callable[[World], tuple[bytes, bytes, MemberId, datetime]]


def _der(cert: IssuedCert | x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    c = cert.cert if isinstance(cert, IssuedCert) else cert
    return c.public_bytes(serialization.Encoding.DER)


def _good(w: World) -> tuple[bytes, bytes, MemberId, datetime]:
    return _der(w.sign), w.pki.ocsp_response(w.sign, now=NOW - timedelta(minutes=1)), M1, NOW


def _revoked(w: World) -> tuple[bytes, bytes, MemberId, datetime]:
    victim = w.pki.issue_sign(M1, now=NOW - timedelta(days=1))
    w.pki.revoke(victim, now=NOW - timedelta(hours=1))
    return _der(victim), w.pki.ocsp_response(victim, now=NOW - timedelta(minutes=1)), M1, NOW


def _unknown(w: World) -> tuple[bytes, bytes, MemberId, datetime]:
    # the responder's view from before the certificate was issued: it does not know the serial
    before = w.pki.ca.ocsp_state(3599)
    late = w.pki.issue_sign(M1, now=NOW - timedelta(days=1))
    der = respond(ocsp.build_request(late.cert, w.pki.ca_cert), before, NOW - timedelta(minutes=1))
    return _der(late), der, M1, NOW


SIGN_CASES: list[tuple[str, SignCase, type[GatewayError] | None, str]] = [
    ("good", _good, None, ""),
    ("not DER", lambda w: (b"not a certificate", _good(w)[1], M1, NOW), CertValidation,
     "not a valid DER certificate"),
    ("untrusted issuer", lambda w: (
        _der(w.other.issue_sign(M1, now=NOW - timedelta(days=1))), _good(w)[1], M1, NOW),
     CertValidation, "is not issued by a CA trusted"),
    ("not yet valid", lambda w: (_der(w.sign), _good(w)[1], M1, w.sign.cert.not_valid_before_utc - timedelta(1)),
     CertValidation, "is not valid at"),
    ("expired", lambda w: (_der(w.sign), _good(w)[1], M1, w.sign.cert.not_valid_after_utc + timedelta(1)),
     CertValidation, "is not valid at"),
    ("wrong profile (an auth certificate)", lambda w: (
        _der(w.auth), w.pki.ocsp_response(w.auth, now=NOW - timedelta(minutes=1)), M1, NOW),
     CertValidation, "is not a signing certificate"),
    ("another member", lambda w: (*_good(w)[:2], M2, NOW), CertValidation,
     f"message is signed by {M1}, but it must be signed by {M2}"),
    ("OCSP revoked", _revoked, CertValidation, "is revoked since"),
    ("OCSP unknown", _unknown, CertValidation, "is unknown according to OCSP"),
    ("OCSP stale", lambda w: (
        _der(w.sign), w.pki.ocsp_response(w.sign, now=NOW - timedelta(hours=2), validity_seconds=3 * 3600), M1, NOW),
     IncorrectValidationInfo, "is older than"),
    ("OCSP for another certificate", lambda w: (
        _der(w.sign), w.pki.ocsp_response(w.auth, now=NOW - timedelta(minutes=1)), M1, NOW),
     IncorrectValidationInfo, "OCSP response"),
    ("OCSP not DER", lambda w: (_der(w.sign), b"\x30\x00", M1, NOW), IncorrectValidationInfo,
     "not a valid OCSP response"),
]


@pytest.mark.parametrize(("case", "make", "fault", "refusal"), SIGN_CASES, ids=[c[0] for c in SIGN_CASES])
def test_signing_cert(
    world: World, case: str, make: SignCase, fault: type[GatewayError] | None, refusal: str,
) -> None:
    cert_der, ocsp_der, member, now = make(world)
    if fault is None:
        cert = peertrust.check_signing_cert(cert_der, ocsp_der, world.conf, member=member, now=now)
        assert cert_sha256_hex(cert) == world.sign.sha256
        return
    with pytest.raises(fault, match=refusal) as info:
        peertrust.check_signing_cert(cert_der, ocsp_der, world.conf, member=member, now=now)
    assert type(info.value) is fault and info.value.side is None  # raised without a side


def test_check_ocsp_raises_the_fault_it_is_given(world: World) -> None:
    victim = world.pki.issue_sign(M1, now=NOW - timedelta(days=1))
    world.pki.revoke(victim, now=NOW - timedelta(hours=1))
    der = world.pki.ocsp_response(victim, now=NOW - timedelta(minutes=1))
    ca = world.conf.ca_for(victim.cert)
    assert ca is not None
    with pytest.raises(SslAuthenticationFailed, match="is revoked"):
        peertrust.check_ocsp(victim.cert, der, ca, now=NOW, max_age_seconds=3600, fault=SslAuthenticationFailed)
    good = world.pki.ocsp_response(world.sign, now=NOW - timedelta(minutes=1))
    status = peertrust.check_ocsp(world.sign.cert, good, ca, now=NOW, max_age_seconds=3600, fault=CertValidation)
    assert status.status == "good"
