"""The certificate profile that binds an X-Road identity to a certificate (pure).

Two kinds of end-entity certificate (the full profile, with examples, is in ``docs/pki.md``):

``auth``  authentication certificate of a **security server**, used for mutual TLS between servers.
          Identity: a :class:`~gateway.identifiers.SecurityServerId`.
          keyUsage (critical): digitalSignature (+ keyEncipherment for RSA keys).
          extKeyUsage: serverAuth, clientAuth. No contentCommitment.
``sign``  signing certificate of a **member**, used to sign messages and checkpoints.
          Identity: a :class:`~gateway.identifiers.MemberId`.
          keyUsage (critical): digitalSignature, contentCommitment (nonRepudiation). No extKeyUsage.

The identity is carried twice, and both copies must agree:

* subjectAltName, exactly one URI: ``urn:x-road:server:INSTANCE/CLASS/MEMBER/SERVER`` or
  ``urn:x-road:member:INSTANCE/CLASS/MEMBER`` (each part percent-encoded as in a URL path; only ``?``
  ever needs it, since identifier parts are restricted to ``A-Z a-z 0-9 ' ( ) + , - . = ?``);
* the subject: ``serialNumber`` = the ``/``-joined identifier, ``CN`` = the server code (auth) or member
  code (sign), ``O`` = the organisation's name (informational only, never used for a decision).

The URI is authoritative: it cannot be confused with a host name and it says which kind of entity it
names. Note that for authentication certificates docs/architecture.md section 3 still applies: what binds a
certificate to a security server is the registration of its SHA-256 fingerprint in the global
configuration, not this subject; the profile only lets tools and humans see what a certificate is for.
"""

from __future__ import annotations

from typing import Literal, cast
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import IdentifierError, PkiError, TrustError
from gateway.identifiers import MemberId, SecurityServerId
from gateway.trust.keys import PrivateKey, PublicKey

CertKind = Literal["auth", "sign"]
CERT_KINDS: tuple[CertKind, ...] = ("auth", "sign")
Identity = MemberId | SecurityServerId

URN_PREFIX = "urn:x-road:"
_URN_TYPE: dict[CertKind, str] = {"auth": "server", "sign": "member"}
_KIND_OF_URN_TYPE: dict[str, CertKind] = {v: k for k, v in _URN_TYPE.items()}
MAX_ORG_NAME = 64  # characters; ub-organization-name in RFC 5280 Appendix A


def a_kind(kind: CertKind) -> str:
    """``an auth`` / ``a sign``: the kind with its article, for messages."""
    return f"an {kind}" if kind == "auth" else f"a {kind}"


def kind_of_identity(identity: Identity) -> CertKind:
    """``auth`` for a security server identifier, ``sign`` for a member identifier."""
    return "auth" if isinstance(identity, SecurityServerId) else "sign"


def parse_identity(kind: CertKind, text: str) -> Identity:
    """Parse the identifier a certificate of ``kind`` names (``SecurityServerId`` or ``MemberId``).

    Raises:
        IdentifierError: the text is not an identifier of that kind.
    """
    if kind == "auth":
        return SecurityServerId.parse(text, encoded=False)
    return MemberId.parse(text, encoded=False)


def _check_kind_matches(kind: CertKind, identity: Identity) -> None:
    if kind_of_identity(identity) != kind:
        want = "a security server (INSTANCE/CLASS/MEMBER/SERVER)" if kind == "auth" else (
            "a member (INSTANCE/CLASS/MEMBER)"
        )
        raise PkiError(f"{a_kind(kind)} certificate must name {want}; got {identity.typed()}")


def identity_urn(identity: Identity) -> str:
    """The subjectAltName URI naming ``identity``, e.g. ``urn:x-road:server:DEV/GOV/1001/ss1``."""
    parts = "/".join(quote(p, safe="'()+,=") for p in identity.parts())
    return f"{URN_PREFIX}{_URN_TYPE[kind_of_identity(identity)]}:{parts}"


def parse_identity_urn(urn: str) -> tuple[CertKind, Identity]:
    """Parse a subjectAltName URI made by :func:`identity_urn`; only the canonical spelling is accepted.

    Raises:
        TrustError: not an X-Road identity URI, a malformed identifier, or a non-canonical spelling.
    """
    if not urn.startswith(URN_PREFIX):
        raise TrustError(f"URI {urn[:100]!r} is not an X-Road identity ({URN_PREFIX}...)")
    urn_type, sep, rest = urn[len(URN_PREFIX):].partition(":")
    kind = _KIND_OF_URN_TYPE.get(urn_type)
    if not sep or kind is None:
        raise TrustError(f"URI {urn[:100]!r}: unknown identity type {urn_type!r}; expected server or member")
    try:
        identity: Identity = (SecurityServerId if kind == "auth" else MemberId).parse(rest, encoded=True)
    except IdentifierError as e:
        raise TrustError(f"URI {urn[:100]!r} names no valid identifier: {e.message}") from e
    if identity_urn(identity) != urn:
        raise TrustError(f"URI {urn[:100]!r} is not in canonical form ({identity_urn(identity)!r})")
    return kind, identity


def _code_of(identity: Identity) -> str:
    return identity.server_code if isinstance(identity, SecurityServerId) else identity.member_code


def check_org_name(name: str) -> str:
    """Validate an organisation name for the subject ``O`` attribute.

    Raises:
        PkiError: empty, longer than 64 characters, or containing control characters.
    """
    if not name.strip():
        raise PkiError("organisation name is empty")
    if len(name) > MAX_ORG_NAME:
        raise PkiError(f"organisation name has {len(name)} characters; at most {MAX_ORG_NAME} are allowed")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise PkiError("organisation name contains a control character")
    return name


def subject_name(identity: Identity, name: str | None = None) -> x509.Name:
    """The subject distinguished name of the profile: ``CN=code, O=name, serialNumber=identifier``.

    Raises:
        PkiError: an invalid organisation name.
    """
    org = check_org_name(name) if name is not None else identity.member_code
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, _code_of(identity)),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, str(identity)),
    ])


def profile_extensions(
    kind: CertKind, identity: Identity, public_key: PublicKey
) -> list[tuple[x509.ExtensionType, bool]]:
    """The profile's extensions (and criticality) for an end-entity certificate of ``kind``.

    The issuing CA adds subjectKeyIdentifier, authorityKeyIdentifier and authorityInfoAccess itself.

    Raises:
        PkiError: ``identity`` is not of the kind the certificate names.
    """
    _check_kind_matches(kind, identity)
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    exts: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity_urn(identity))]), False),
    ]
    if kind == "auth":
        exts.append((key_usage(digital_signature=True, key_encipherment=is_rsa), True))
        exts.append(
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        )
    else:
        exts.append((key_usage(digital_signature=True, content_commitment=True), True))
    return exts


def key_usage(
    *, digital_signature: bool = False, content_commitment: bool = False, key_encipherment: bool = False,
    key_cert_sign: bool = False, crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=content_commitment,
        key_encipherment=key_encipherment, data_encipherment=False, key_agreement=False,
        key_cert_sign=key_cert_sign, crl_sign=crl_sign, encipher_only=False, decipher_only=False,
    )


def build_csr(
    key: PrivateKey, identity: Identity, *, kind: CertKind, name: str | None = None
) -> x509.CertificateSigningRequest:
    """A certificate signing request following the profile, signed with ``key`` (SHA-256).

    Raises:
        PkiError: ``identity`` does not fit ``kind``, or an invalid organisation name.
    """
    _check_kind_matches(kind, identity)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"key of type {type(key).__name__} cannot sign a CSR")
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject_name(identity, name))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity_urn(identity))]),
                       critical=False)
    )
    return builder.sign(key, hashes.SHA256())


def _urn_identities(san: x509.SubjectAlternativeName, what: str) -> tuple[CertKind, Identity]:
    urns = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(URN_PREFIX)]
    if len(urns) != 1:
        raise TrustError(f"{what} has {len(urns)} X-Road identity URIs in subjectAltName; one is required")
    return parse_identity_urn(urns[0])


def _check_subject(subject: x509.Name, identity: Identity, what: str) -> None:
    serials = subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    cns = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(serials) != 1 or serials[0].value != str(identity):
        got = ", ".join(str(s.value) for s in serials) or "none"
        raise TrustError(f"{what}: subject serialNumber ({got}) does not equal its identity URI ({identity})")
    if len(cns) != 1 or cns[0].value != _code_of(identity):
        got = ", ".join(str(c.value) for c in cns) or "none"
        raise TrustError(f"{what}: subject CN ({got}) is not the code {_code_of(identity)!r} of {identity}")


def csr_identity(csr: x509.CertificateSigningRequest) -> tuple[CertKind, Identity]:
    """The identity a CSR asks to be certified (its subjectAltName URI, agreeing with its subject).

    Does not check the CSR's signature; the CA does that first.

    Raises:
        PkiError: the CSR names no identity, or its subject and URI disagree.
    """
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as e:
        raise PkiError("CSR has no subjectAltName naming an X-Road identity") from e
    except ValueError as e:  # duplicate or malformed extensions
        raise PkiError(f"CSR extensions are malformed: {e}") from e
    try:
        kind, identity = _urn_identities(san, "CSR")
        _check_subject(csr.subject, identity, "CSR")
    except TrustError as e:
        raise PkiError(e.message) from e
    return kind, identity


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType] | None:
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None


def identity_of(cert: x509.Certificate) -> tuple[CertKind, Identity]:
    """The kind and identity a certificate certifies, checking that it follows the profile.

    Raises:
        TrustError: the certificate does not follow the profile (no or several identity URIs, subject
            disagreeing with the URI, a CA certificate, or key usages that do not fit its kind).
    """
    what = f"certificate {cert.serial_number:X}"
    try:
        _ = cert.extensions  # parsed lazily: surface malformed extensions as ours, once
    except ValueError as e:
        raise TrustError(f"{what} has malformed extensions: {e}") from e
    # (1) exactly one identity URI in subjectAltName; it says the kind and the identifier
    san_ext = _ext(cert, x509.SubjectAlternativeName)
    if san_ext is None:
        raise TrustError(f"{what} has no subjectAltName naming an X-Road identity")
    kind, identity = _urn_identities(cast(x509.SubjectAlternativeName, san_ext.value), what)
    # (2) the subject agrees with the URI
    _check_subject(cert.subject, identity, what)
    # (3) an end-entity certificate
    bc = _ext(cert, x509.BasicConstraints)
    if bc is not None and cast(x509.BasicConstraints, bc.value).ca:
        raise TrustError(f"{what} is a CA certificate, not {a_kind(kind)} certificate")
    # (4) key usages of its kind, and none that would let it pass for the other kind
    ku_ext = _ext(cert, x509.KeyUsage)
    if ku_ext is None:
        raise TrustError(f"{what} has no keyUsage extension")
    ku = cast(x509.KeyUsage, ku_ext.value)
    eku_ext = _ext(cert, x509.ExtendedKeyUsage)
    ekus = set(cast(x509.ExtendedKeyUsage, eku_ext.value)) if eku_ext is not None else set()
    tls = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    if not ku.digital_signature:
        raise TrustError(f"{what}: keyUsage lacks digitalSignature")
    if kind == "auth":
        if not tls <= ekus:
            raise TrustError(f"{what}: an auth certificate needs extKeyUsage serverAuth and clientAuth")
        if ku.content_commitment:
            raise TrustError(f"{what}: an auth certificate must not have keyUsage contentCommitment")
    else:
        if not ku.content_commitment:
            raise TrustError(f"{what}: a sign certificate needs keyUsage contentCommitment (nonRepudiation)")
        if ekus & tls:
            raise TrustError(f"{what}: a sign certificate must not have extKeyUsage serverAuth/clientAuth")
    return kind, identity


def check_cert_kind(cert: x509.Certificate, kind: CertKind) -> Identity:
    """Check that ``cert`` follows the profile for ``kind``; return the identity it certifies.

    Raises:
        TrustError: the certificate does not follow the profile, or is of the other kind.
    """
    got, identity = identity_of(cert)
    if got != kind:
        raise TrustError(
            f"certificate {cert.serial_number:X} is {a_kind(got)} certificate, not {a_kind(kind)} one"
        )
    return identity


def auth_identity_of(cert: x509.Certificate) -> SecurityServerId:
    """The security server an authentication certificate names.

    Raises:
        TrustError: not an authentication certificate following the profile.
    """
    identity = check_cert_kind(cert, "auth")
    assert isinstance(identity, SecurityServerId)
    return identity


def sign_identity_of(cert: x509.Certificate) -> MemberId:
    """The member a signing certificate names.

    Raises:
        TrustError: not a signing certificate following the profile.
    """
    identity = check_cert_kind(cert, "sign")
    assert isinstance(identity, MemberId)
    return identity
