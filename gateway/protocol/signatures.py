"""Message signatures between security servers: RFC 9421 HTTP Message Signatures with an RFC 9530
``Content-Digest`` (pure).

No sockets and no clock: headers, bytes, keys and ``now`` in; headers to add, verified facts or a
:class:`~gateway.errors.TrustError` out. The profile is specified in ``docs/protocol.md`` ("Server-to-server
profile") precisely enough that an independent RFC 9421 implementation can check our messages;
``tests/unit/test_signing_interop.py`` does so with the ``http-message-signatures`` package.

Profile in short:

- every request and response carries ``Content-Digest: sha-256=:<b64>:``, also for an empty body;
- the request signature (label ``xroad``, ``tag="x-road-r1"``) covers ``"@method" "@path" "@query"
  "content-digest"`` and every ``x-road-*`` header present, which must include ``x-road-client``,
  ``x-road-service``, ``x-road-id``, ``x-road-request-id``, ``x-road-signing-cert`` (the signing certificate,
  base64 DER) and ``x-road-signing-ocsp`` (its OCSP response, base64 DER);
- the response signature covers ``"@status" "content-digest"``, every ``x-road-*`` header present (including
  ``x-road-request-hash``) and ``"signature";req;key="xroad"``, which binds it to the request's signature;
- parameters ``created``, ``keyid`` (lower-case hex SHA-256 of the signing certificate's DER), ``alg``,
  ``tag``.

Faults (classes of :mod:`gateway.errors`, raised without a side): ``MissingSignature``, ``MalformedSignature``,
``InvalidSignatureValue`` (also for a body that does not match its digest), ``InvalidSignatureTime``
(``created`` outside the allowed clock skew), ``CannotCreateSignature`` when signing. The proxy that verifies
names itself when it answers: ``Server.ServerProxy.*`` when the provider verifies a request,
``Server.ClientProxy.*`` when the client side verifies a response. ``ReplayedRequest`` and ``ReplayCacheFull``
come from :class:`~gateway.protocol.replay.ReplayCache`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Final, Generic, NamedTuple, Protocol, TypeAlias, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.errors import (
    CannotCreateSignature,
    ConfigError,
    GatewayError,
    InvalidSignatureTime,
    InvalidSignatureValue,
    MalformedSignature,
    MissingSignature,
    TrustError,
)
from gateway.protocol.sfv import BareItem, SFError, parse_dictionary, serialize_item, serialize_params
from gateway.trust import keys

LABEL: Final = "xroad"
TAG: Final = "x-road-r1"

H_SIGNATURE: Final = "signature"
H_SIGNATURE_INPUT: Final = "signature-input"
H_CONTENT_DIGEST: Final = "content-digest"
H_SIGNING_CERT: Final = "x-road-signing-cert"
H_SIGNING_OCSP: Final = "x-road-signing-ocsp"

# RFC 9421 3.3 names; the key types gateway.trust.keys allows (P-256 by default, RSA 2048/3072).
ALG_ECDSA_P256: Final = "ecdsa-p256-sha256"
ALG_RSA_V1_5: Final = "rsa-v1_5-sha256"
ALGORITHMS: Final = frozenset(keys.SIGNATURE_ALGS)

# Covered components, in the order we sign them. The optional x-road-* headers (x-road-userid,
# x-road-issue, x-road-security-server, x-road-represented-party, and any future one) follow the required
# headers in name order; the stapled certificate and OCSP response come last.
REQUEST_DERIVED: Final = ("@method", "@path", "@query")
REQUEST_REQUIRED_HEADERS: Final = (
    H_CONTENT_DIGEST, "x-road-client", "x-road-service", "x-road-id", "x-road-request-id",
)
RESPONSE_REQUIRED_HEADERS: Final = (
    H_CONTENT_DIGEST, "x-road-client", "x-road-service", "x-road-id", "x-road-request-id",
    "x-road-request-hash",
)
_STAPLED: Final = (H_SIGNING_CERT, H_SIGNING_OCSP)
_STAPLED_IDENTS: Final = tuple(f'"{name}"' for name in _STAPLED)
REQUEST_SIGNATURE_COMPONENT: Final = '"signature";req;key="xroad"'
_REQ_SIGNATURE_IDENTITY: Final[_Identity] = (
    "signature", frozenset({("req", True), ("key", "xroad")}),
)

# Fields that must appear at most once: a second copy would be ambiguous about what was signed.
SINGLE_FIELDS: Final = frozenset({
    H_SIGNATURE, H_SIGNATURE_INPUT, *RESPONSE_REQUIRED_HEADERS, *_STAPLED,
})

_KNOWN_PARAMS: Final = frozenset({"created", "expires", "keyid", "alg", "tag", "nonce"})


# --------------------------------------------------------------------------------------------------------
# Content-Digest (RFC 9530)
# --------------------------------------------------------------------------------------------------------


def content_digest_header(digest: bytes) -> str:
    """``Content-Digest`` for a SHA-256 body digest: ``sha-256=:<base64>:``."""
    return "sha-256=:" + base64.b64encode(digest).decode("ascii") + ":"


class ContentDigester:
    """SHA-256 of a body fed in chunks, for ``Content-Digest``. One per message; not thread-safe."""

    __slots__ = ("_h", "size")

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.size = 0  # bytes seen

    def update(self, chunk: bytes) -> None:
        self._h.update(chunk)
        self.size += len(chunk)

    def digest(self) -> bytes:
        return self._h.digest()

    def header(self) -> str:
        return content_digest_header(self._h.digest())


_DIGEST_FAST_RE = re.compile(r"sha-256=:([A-Za-z0-9+/]*={0,2}):")


def _digest_bytes(header_value: str) -> bytes | None:
    m = _DIGEST_FAST_RE.fullmatch(header_value)
    if m is None:
        return None
    try:
        return base64.b64decode(m.group(1), validate=True)
    except binascii.Error:
        return None


def verify_content_digest(header_value: str | None, digest: bytes) -> None:
    """Check that the ``sha-256`` member of a ``Content-Digest`` value equals ``digest`` (the SHA-256 of the
    body as received). Other members (``sha-512``...) are ignored; ``sha-256`` is mandatory in this profile.

    Raises:
        TrustError: ``MissingSignature`` if the header is absent, ``MalformedSignature`` if it does not parse
            or has no ``sha-256`` byte sequence, ``InvalidSignatureValue`` on mismatch.
    """
    if header_value is None:
        raise MissingSignature("Content-Digest header is missing")
    value = _digest_bytes(header_value)  # the one form we send; anything else takes the general parser
    if value is None:
        try:
            members = parse_dictionary(header_value)
        except SFError as e:
            raise MalformedSignature(f"Content-Digest does not parse: {e}") from e
        member = members.get("sha-256")
        if member is None or not isinstance(member[0], bytes):
            raise MalformedSignature("Content-Digest has no sha-256 byte sequence")
        value = member[0]
    if not hmac.compare_digest(value, digest):
        raise InvalidSignatureValue("message body does not match its Content-Digest")


# --------------------------------------------------------------------------------------------------------
# Keys and algorithms (RFC 9421 section 3.3)
# --------------------------------------------------------------------------------------------------------


class Signer(Protocol):
    """Something that signs with a member's signing key: a soft token now, an HSM later.

    ``alg`` is an RFC 9421 algorithm name (:data:`ALGORITHMS`); ``sign`` returns the RFC 9421 signature
    bytes for it: for ``ecdsa-p256-sha256`` the fixed 64-byte ``r || s`` (RFC 9421 3.3.4), not DER.
    """

    @property
    def alg(self) -> str: ...

    @property
    def cert(self) -> x509.Certificate: ...

    def sign(self, data: bytes) -> bytes: ...


class KeySigner:
    """A :class:`Signer` over a ``cryptography`` private key (P-256 or RSA 2048/3072, as
    :mod:`gateway.trust.keys` allows) and its certificate.

    Raises:
        ConfigError: the key type is not allowed or the certificate is not for this key.
    """

    __slots__ = ("_ec_key", "_key", "alg", "cert")

    def __init__(self, *, key: keys.PrivateKey, cert: x509.Certificate) -> None:
        pub_fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if key.public_key().public_bytes(*pub_fmt) != cert.public_key().public_bytes(*pub_fmt):
            raise ConfigError("the signing certificate does not belong to the signing key")
        try:
            self.alg: str = keys.signature_alg_for(key)
        except GatewayError as e:
            raise ConfigError(f"signing key: {e.message}") from e
        self._key = key
        # The key type was checked above, once: per message, a P-256 key signs directly.
        self._ec_key = key if self.alg == ALG_ECDSA_P256 and isinstance(key, ec.EllipticCurvePrivateKey) else None
        self.cert = cert

    def sign(self, data: bytes) -> bytes:
        if self._ec_key is not None:
            # RFC 9421 3.3.4: r || s
            return keys.der_to_raw_ecdsa(self._ec_key.sign(data, keys.ECDSA_SHA256))
        return keys.sign_bytes(self._key, data)[1]


def _key_of(cert: x509.Certificate) -> tuple[keys.PublicKey, str]:
    pub = keys.public_key_of(cert)
    return pub, keys.signature_alg_for(pub)


def _verify_value(cert: x509.Certificate, alg: str, data: bytes, sig: bytes) -> None:
    # (a) the algorithm must be the one the certificate's key implies: the signer never picks the pairing
    try:
        pub, expected = _CERT_KEYS.get(cert, _key_of)
    except GatewayError as e:
        raise _malformed(f"signing certificate key: {e.message}") from e
    if alg != expected:
        raise _malformed(f"signature algorithm {alg!r} does not fit the certificate's key ({expected})")
    # (b) the value verifies (ECDSA arrives as r || s; gateway.trust.keys verifies DER)
    try:
        if alg == ALG_ECDSA_P256:
            if len(sig) != 64:
                raise TrustError(f"{alg} signature has {len(sig)} bytes; RFC 9421 requires 64 (r || s)")
            sig = keys.raw_to_der_ecdsa(sig)
        keys.verify_bytes(pub, alg, data, sig)
    except TrustError as e:
        raise InvalidSignatureValue(
            f"signature value does not verify with the signing certificate ({e.message})") from e


_K = TypeVar("_K")
_V = TypeVar("_V")


class _ByIdentity(Generic[_K, _V]):
    """Values derived from immutable objects (certificates, DER bytes), cached per object.

    Keyed by ``id(obj)``; each entry holds the object itself, so its id cannot be reused while the entry
    lives, and a hit requires the very same object (``is``). Cheaper than hashing a certificate's DER per
    look-up, and never stale: another certificate or response is another object, hence a miss. Bounded:
    when full it starts again empty. Errors raised by ``make`` are not cached.
    """

    __slots__ = ("_entries", "_max")

    def __init__(self, max_entries: int) -> None:
        self._entries: dict[int, tuple[_K, _V]] = {}
        self._max = max_entries

    def get(self, obj: _K, make: Callable[[_K], _V]) -> _V:
        hit = self._entries.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        value = make(obj)
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[id(obj)] = (obj, value)
        return value


def _make_cert_info(cert: x509.Certificate) -> tuple[str, str, bytes]:
    der = cert.public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest(), base64.b64encode(der).decode("ascii"), der


_CERT_INFO: Final[_ByIdentity[x509.Certificate, tuple[str, str, bytes]]] = _ByIdentity(256)
_CERT_KEYS: Final[_ByIdentity[x509.Certificate, tuple[keys.PublicKey, str]]] = _ByIdentity(256)
_OCSP_B64: Final[_ByIdentity[bytes, str]] = _ByIdentity(64)


def _cert_info(cert: x509.Certificate) -> tuple[str, str, bytes]:
    """keyid, base64 DER and DER of a certificate."""
    return _CERT_INFO.get(cert, _make_cert_info)


def cert_keyid(cert: x509.Certificate) -> str:
    """The ``keyid`` of a signing certificate: lower-case hex SHA-256 of its DER encoding."""
    return _cert_info(cert)[0]


# --------------------------------------------------------------------------------------------------------
# Signature base (RFC 9421 section 2.5)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedMessage:
    """What :func:`sign_request`/:func:`sign_response` produce: the headers to add (lower-case names:
    ``x-road-signing-cert``, ``x-road-signing-ocsp``, ``signature-input``, ``signature``) and, for the
    message log, the exact signature base and signature."""

    headers: dict[str, str]
    keyid: str
    alg: str
    created: int
    covered: tuple[str, ...]
    signature_params: str
    signature_base: bytes
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedSignature:
    """A signature that verified: who signed (certificate, as the resolver accepted it), when, over what."""

    keyid: str
    alg: str
    created: int
    covered: tuple[str, ...]
    signature_params: str
    signature_base: bytes
    signature: bytes
    cert: x509.Certificate
    cert_der: bytes
    ocsp_der: bytes


class CertResolver(Protocol):
    """Validate the stapled signing certificate and return it (chain to a trusted CA, fresh OCSP, member).

    Called with the ``keyid`` and the stapled DER certificate and OCSP response; raises
    :class:`~gateway.errors.TrustError` to refuse. May cache by ``keyid``.
    """

    def __call__(self, keyid: str, cert_der: bytes, ocsp_der: bytes, /) -> x509.Certificate: ...


def _malformed(message: str) -> TrustError:
    return MalformedSignature(message)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _check_value(name: str, value: str) -> str:
    # RFC 9421 2.1/2.5: values are trimmed; the signature base is ASCII with no line breaks.
    value = value.strip(" \t")
    if not value.isascii() or "\r" in value or "\n" in value:
        raise MalformedSignature(
            f"covered component {name} holds a line break or non-ASCII character")
    return value


def _base(lines: list[tuple[str, str]], params_text: str) -> bytes:
    out = [f"{ident}: {value}" for ident, value in lines]
    out.append(f'"@signature-params": {params_text}')
    return "\n".join(out).encode("ascii")


# x-road-* headers that the profile does not cover: X-Road-Data-Subject names persons, and a signed value would
# be kept in clear in the signature base of both servers' message-log records (docs/transparency.md section 2);
# the request hash, which the provider's signed response carries, covers it end to end.
UNSIGNED_XROAD: Final = frozenset({"x-road-data-subject"})


def _xroad_headers(headers: Mapping[str, str], required: tuple[str, ...]) -> list[str]:
    extra = sorted(n for n in headers if n.startswith("x-road-") and n not in required and n not in _STAPLED
                   and n not in UNSIGNED_XROAD)
    return [*required, *extra, *_STAPLED]


class _Prepared(NamedTuple):  # internal, short-lived: a tuple is built faster than a frozen dataclass
    headers: dict[str, str]
    params_text: str
    covered: tuple[str, ...]
    keyid: str
    alg: str
    created: int
    base: bytes


# What a signature base of ours has that does not change from one message to the next, for one signing
# certificate and one stapled OCSP response (the same response is stapled for a while): the stapled values'
# base64 and their two lines of the base, checked once; the parameters after ``created``. Keyed by the OCSP
# response's identity (an entry holds the response and the certificate; a hit needs both, the very objects).
_OwnStatic: TypeAlias = tuple[str, str, str, str]  # cert base64, OCSP base64, their base lines, params after created
_OWN_STATIC: Final[dict[int, tuple[bytes, x509.Certificate, str, _OwnStatic]]] = {}
_OWN_STATIC_MAX: Final = 64
# The "(...)" of @signature-params for a list of covered components: a signer covers the same few lists.
_COVERED_TEXT: Final[dict[tuple[str, ...], str]] = {}
_COVERED_TEXT_MAX: Final = 256


def _own_static(signer: Signer, ocsp: bytes) -> _OwnStatic:
    cert = signer.cert
    hit = _OWN_STATIC.get(id(ocsp))
    if hit is not None and hit[0] is ocsp and hit[1] is cert and hit[2] == signer.alg:
        return hit[3]
    keyid, cert_b64, _der = _cert_info(cert)
    ocsp_b64 = _OCSP_B64.get(ocsp, _b64)
    lines = "\n".join(f"{ident}: {_check_value(ident, value)}"
                      for ident, value in zip(_STAPLED_IDENTS, (cert_b64, ocsp_b64), strict=True))
    value = (cert_b64, ocsp_b64, lines, f';keyid="{keyid}";alg="{signer.alg}";tag="{TAG}"')
    if len(_OWN_STATIC) >= _OWN_STATIC_MAX:
        _OWN_STATIC.clear()
    _OWN_STATIC[id(ocsp)] = (ocsp, cert, signer.alg, value)
    return value


def _covered_text(covered: tuple[str, ...]) -> str:
    text = _COVERED_TEXT.get(covered)
    if text is None:
        if len(_COVERED_TEXT) >= _COVERED_TEXT_MAX:
            _COVERED_TEXT.clear()
        text = _COVERED_TEXT[covered] = "(" + " ".join(covered) + ")"
    return text


def _prepare(
    *, derived: list[tuple[str, str]], headers: Mapping[str, str], required: tuple[str, ...],
    tail: list[tuple[str, str]], signer: Signer, created: int, ocsp: bytes,
) -> _Prepared:
    if not ocsp:
        raise CannotCreateSignature("no OCSP response to staple for the signing certificate")
    cert_b64, ocsp_b64, stapled_lines, params_tail = _own_static(signer, ocsp)
    all_headers = dict(headers)
    all_headers[H_SIGNING_CERT] = cert_b64
    all_headers[H_SIGNING_OCSP] = ocsp_b64
    lines = [(ident, _check_value(ident, value)) for ident, value in derived]
    for name in _xroad_headers(all_headers, required)[:-len(_STAPLED)]:  # the stapled two come last: static
        value = all_headers.get(name)
        if value is None:
            raise CannotCreateSignature(f"cannot sign: header {name} is missing")
        try:
            lines.append((f'"{name}"', _check_value(f'"{name}"', value)))
        except TrustError as e:
            raise CannotCreateSignature(e.message) from e
    covered = (*(ident for ident, _ in lines), *_STAPLED_IDENTS, *(ident for ident, _ in tail))
    params_text = f"{_covered_text(covered)};created={created}{params_tail}"
    # The base as _base(lines + stapled + tail, params_text) writes it, the stapled lines precomputed.
    text = [f"{ident}: {value}" for ident, value in lines]
    text.append(stapled_lines)
    text.extend(f"{ident}: {value}" for ident, value in tail)
    text.append(f'"@signature-params": {params_text}')
    return _Prepared(headers=all_headers, params_text=params_text, covered=covered, keyid=_cert_info(signer.cert)[0],
                     alg=signer.alg, created=created, base="\n".join(text).encode("ascii"))


def _finish(p: _Prepared, sig: bytes) -> SignedMessage:
    return SignedMessage(
        headers={
            H_SIGNING_CERT: p.headers[H_SIGNING_CERT],
            H_SIGNING_OCSP: p.headers[H_SIGNING_OCSP],
            H_SIGNATURE_INPUT: f"{LABEL}={p.params_text}",
            H_SIGNATURE: f"{LABEL}=:{_b64(sig)}:",
        },
        keyid=p.keyid, alg=p.alg, created=p.created, covered=p.covered, signature_params=p.params_text,
        signature_base=p.base, signature=sig,
    )


def _sign(
    *, derived: list[tuple[str, str]], headers: Mapping[str, str], required: tuple[str, ...],
    tail: list[tuple[str, str]], signer: Signer, created: int, ocsp: bytes,
) -> SignedMessage:
    p = _prepare(derived=derived, headers=headers, required=required, tail=tail, signer=signer, created=created,
                 ocsp=ocsp)
    return _finish(p, signer.sign(p.base))


async def sign_value(signer: Signer, data: bytes) -> bytes:
    """``signer``'s signature over ``data``; a signer with ``sign_async`` (a PKCS#11 device's, which signs in
    a worker thread) is awaited, any other signs at once."""
    sign_async = getattr(signer, "sign_async", None)
    if sign_async is not None:
        sig: bytes = await sign_async(data)
        return sig
    return signer.sign(data)


async def _sign_async(
    *, derived: list[tuple[str, str]], headers: Mapping[str, str], required: tuple[str, ...],
    tail: list[tuple[str, str]], signer: Signer, created: int, ocsp: bytes,
) -> SignedMessage:
    p = _prepare(derived=derived, headers=headers, required=required, tail=tail, signer=signer, created=created,
                 ocsp=ocsp)
    return _finish(p, await sign_value(signer, p.base))


def sign_request(
    *, method: str, path: str, query: str | None, headers: Mapping[str, str], signer: Signer, created: int,
    ocsp: bytes,
) -> SignedMessage:
    """Sign a request going to a provider's security server.

    ``path`` and ``query`` are raw (percent-encoded) as they go on the wire; ``query`` without ``?``.
    ``headers`` (lower-case names) must hold ``content-digest``, ``x-road-client``, ``x-road-service``,
    ``x-road-id`` and ``x-road-request-id``; every other ``x-road-*`` header in it is covered too. ``ocsp`` is
    the DER OCSP response for ``signer.cert``; ``created`` the signing time in Unix seconds.

    Raises:
        GatewayError: ``CannotCreateSignature`` when a required header or the OCSP response is missing or a
            covered value cannot be signed.
    """
    derived = [
        ('"@method"', method),
        ('"@path"', path or "/"),
        ('"@query"', "?" + (query or "")),
    ]
    return _sign(
        derived=derived, headers=headers, required=REQUEST_REQUIRED_HEADERS, tail=[], signer=signer,
        created=created, ocsp=ocsp,
    )


def sign_response(
    *, status: int, headers: Mapping[str, str], request_signature: bytes, signer: Signer, created: int,
    ocsp: bytes,
) -> SignedMessage:
    """Sign a response, bound to the request's ``xroad`` signature (RFC 9421 2.4).

    ``headers`` (lower-case names) must hold ``content-digest``, ``x-road-client``, ``x-road-service``,
    ``x-road-id``, ``x-road-request-id`` and ``x-road-request-hash``; ``request_signature`` is the verified
    request's signature bytes (:attr:`VerifiedSignature.signature`).

    Raises:
        GatewayError: ``CannotCreateSignature`` as for :func:`sign_request`.
    """
    return _sign(
        derived=[('"@status"', str(status))], headers=headers, required=RESPONSE_REQUIRED_HEADERS,
        tail=[(REQUEST_SIGNATURE_COMPONENT, f":{_b64(request_signature)}:")], signer=signer,
        created=created, ocsp=ocsp,
    )


async def sign_request_async(
    *, method: str, path: str, query: str | None, headers: Mapping[str, str], signer: Signer, created: int,
    ocsp: bytes,
) -> SignedMessage:
    """:func:`sign_request` with the signature from :func:`sign_value` (the proxies call this one)."""
    derived = [('"@method"', method), ('"@path"', path or "/"), ('"@query"', "?" + (query or ""))]
    return await _sign_async(
        derived=derived, headers=headers, required=REQUEST_REQUIRED_HEADERS, tail=[], signer=signer,
        created=created, ocsp=ocsp,
    )


async def sign_response_async(
    *, status: int, headers: Mapping[str, str], request_signature: bytes, signer: Signer, created: int,
    ocsp: bytes,
) -> SignedMessage:
    """:func:`sign_response` with the signature from :func:`sign_value` (the proxies call this one)."""
    return await _sign_async(
        derived=[('"@status"', str(status))], headers=headers, required=RESPONSE_REQUIRED_HEADERS,
        tail=[(REQUEST_SIGNATURE_COMPONENT, f":{_b64(request_signature)}:")], signer=signer,
        created=created, ocsp=ocsp,
    )


# --------------------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------------------


def fields_from_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header pairs as received → ``{lower-case name: value}``; repeated fields are joined with ``", "`` as
    RFC 9421 2.1 requires, except :data:`SINGLE_FIELDS`, which may appear once only.

    Raises:
        TrustError: ``MalformedSignature`` for a repeated single field.
    """
    out: dict[str, str] = {}
    for name, value in pairs:
        low = name.lower()
        value = value.strip(" \t")
        if low in out:
            if low in SINGLE_FIELDS:
                raise MalformedSignature(f"header {low} appears more than once")
            out[low] = out[low] + ", " + value
        else:
            out[low] = value
    return out


_Identity: TypeAlias = tuple[str, frozenset[tuple[str, BareItem]]]


@dataclass(frozen=True, slots=True)
class _Input:
    # (name, identity, serialised identifier, has parameters) per covered component, in the listed order
    components: tuple[tuple[str, _Identity, str, bool], ...]
    identities: frozenset[_Identity]
    params: tuple[tuple[str, BareItem], ...]
    params_text: str  # the @signature-params value
    # _static_params() of params: (created, keyid, alg, expires), or why they are malformed
    static: tuple[int, str, str, BareItem | None] | str


@lru_cache(maxsize=1024)
def _parse_input(raw_input: str) -> _Input:
    # Cached: under load a peer sends the same Signature-Input (same created second, same keyid) many
    # times. The result is immutable; errors are not cached.
    try:
        inputs = parse_dictionary(raw_input)
    except SFError as e:
        raise _malformed(f"Signature-Input does not parse: {e}") from e
    if LABEL not in inputs:
        raise MissingSignature(f"message has no signature labelled {LABEL!r}")
    inner, params = inputs[LABEL]
    if not isinstance(inner, list):
        raise _malformed(f"Signature-Input {LABEL!r} is not an inner list")
    comps: list[tuple[str, _Identity, str, bool]] = []
    seen: set[_Identity] = set()
    for name, cparams in inner:
        if type(name) is not str or name != name.lower():
            raise _malformed("covered component identifiers must be lower-case strings")
        ident = serialize_item(name, cparams)  # as listed: parameter order is kept (RFC 9421 2.5)
        identity = (name, frozenset(cparams.items()))
        if identity in seen:
            raise _malformed(f"component {ident} is covered twice")
        seen.add(identity)
        comps.append((name, identity, ident, bool(cparams)))
    params_text = "(" + " ".join(c[2] for c in comps) + ")" + serialize_params(params)
    return _Input(
        components=tuple(comps), identities=frozenset(seen), params=tuple(params.items()),
        params_text=params_text, static=_static_params(params),
    )


# The one form our own signer produces, ``xroad=:<base64>:``; anything else takes the general parser.
_SIGNATURE_FAST_RE = re.compile(r"xroad=:([A-Za-z0-9+/]+={0,2}):")


def _signature_bytes(raw_sig: str) -> bytes | None:
    m = _SIGNATURE_FAST_RE.fullmatch(raw_sig)
    if m is None:
        return None
    try:
        return base64.b64decode(m.group(1), validate=True)
    except binascii.Error:
        return None  # let the general parser say what is wrong


def _select(headers: Mapping[str, str]) -> tuple[_Input, bytes]:
    # (1) both fields present and parsed, our label in both, of the right shapes
    raw_input = headers.get(H_SIGNATURE_INPUT)
    raw_sig = headers.get(H_SIGNATURE)
    if raw_input is None or raw_sig is None:
        missing = "Signature-Input" if raw_input is None else "Signature"
        raise MissingSignature(
            f"message is not signed: {missing} header is missing")
    if H_CONTENT_DIGEST not in headers:  # docs/protocol.md 2.4: no digest is no signed message, as no signature
        raise MissingSignature("message is not signed: Content-Digest header is missing")
    parsed = _parse_input(raw_input)
    fast = _signature_bytes(raw_sig)
    if fast:
        return parsed, fast
    try:
        sigs = parse_dictionary(raw_sig)
    except SFError as e:
        raise _malformed(f"Signature does not parse: {e}") from e
    if LABEL not in sigs:
        raise MissingSignature(f"message has no signature labelled {LABEL!r}")
    sig = sigs[LABEL][0]
    if not isinstance(sig, bytes) or not sig:
        raise _malformed(f"Signature {LABEL!r} is not a byte sequence")
    return parsed, sig


_KEYID_RE = re.compile(r"[0-9a-f]{64}")


def _static_params(params: Mapping[str, BareItem]) -> tuple[int, str, str, BareItem | None] | str:
    # The checks of the parameters that do not depend on the time, in order: the values, or the first
    # problem found. Part of the cached _Input, so they run once per distinct Signature-Input.
    bad = sorted(set(params) - _KNOWN_PARAMS)
    if bad:
        return f"unknown signature parameter(s) {', '.join(bad)}"
    created, keyid, alg, tag = (params.get(k) for k in ("created", "keyid", "alg", "tag"))
    if type(created) is not int:
        return "signature parameter created must be an integer"
    if type(keyid) is not str or not _KEYID_RE.fullmatch(keyid):
        return "signature parameter keyid must be the hex SHA-256 of the signing certificate"
    if type(alg) is not str or alg not in ALGORITHMS:
        return f"signature parameter alg must be one of {', '.join(sorted(ALGORITHMS))}"
    if type(tag) is not str or tag != TAG:
        return f'signature parameter tag must be "{TAG}"'
    return created, keyid, alg, params.get("expires")


def _check_params(sel: _Input, now: datetime, max_skew_seconds: int) -> tuple[int, str, str]:
    if isinstance(sel.static, str):
        raise _malformed(sel.static)
    created, keyid, alg, expires = sel.static
    ts = int(now.timestamp())
    if abs(ts - created) > max_skew_seconds:
        raise InvalidSignatureTime(
            f"signature created at {created} is {ts - created:+d} s from now; at most {max_skew_seconds} s "
            "of clock skew is allowed (clock out of sync, or a replayed message)")
    if expires is not None and (type(expires) is not int or expires + max_skew_seconds < ts):
        raise InvalidSignatureTime("signature has expired")
    return created, keyid, alg


_NO_PARAMS: Final[frozenset[tuple[str, BareItem]]] = frozenset()

# Decoded stapled certificate and OCSP response by their base64 text: a peer staples the same pair on
# thousands of messages. Keyed by value (the text), so a different pair is a different entry.
_STAPLED_CACHE: Final[dict[tuple[str, str], tuple[bytes, bytes, str]]] = {}
_STAPLED_CACHE_MAX: Final = 256


def _decode_stapled(cert_b64: str, ocsp_b64: str) -> tuple[bytes, bytes, str]:
    """DER certificate, DER OCSP response and the certificate's hex SHA-256.

    Raises:
        binascii.Error: either is not valid base64.
    """
    key = (cert_b64, ocsp_b64)
    hit = _STAPLED_CACHE.get(key)
    if hit is not None:
        return hit
    cert_der = base64.b64decode(cert_b64, validate=True)
    ocsp_der = base64.b64decode(ocsp_b64, validate=True)
    value = (cert_der, ocsp_der, hashlib.sha256(cert_der).hexdigest())
    if len(_STAPLED_CACHE) >= _STAPLED_CACHE_MAX:
        _STAPLED_CACHE.clear()
    _STAPLED_CACHE[key] = value
    return value


def _verify(
    *, derived: dict[str, str], headers: Mapping[str, str], required: tuple[str, ...],
    request_signature: bytes | None, now: datetime, max_skew_seconds: int, resolve_cert: CertResolver,
) -> VerifiedSignature:
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    sel, signature = _select(headers)
    # (2) parameters known and well typed, created within the allowed clock skew
    created, keyid, alg = _check_params(sel, now, max_skew_seconds)
    # (3) each listed component is one the profile allows; rebuild the signature base lines
    lines: list[tuple[str, str]] = []
    for name, identity, ident, has_params in sel.components:
        if request_signature is not None and identity == _REQ_SIGNATURE_IDENTITY:
            value = f":{_b64(request_signature)}:"
        elif has_params:
            raise _malformed(f"component {ident} is not allowed in this profile")
        elif name[:1] == "@":
            if name not in derived:
                raise _malformed(f"component {ident} is not allowed in this profile")
            value = _check_value(ident, derived[name])
        else:
            header = headers.get(name)
            if header is None:
                raise _malformed(f"covered header {name} is missing")
            value = _check_value(ident, header)
        lines.append((ident, value))
    # (4) coverage: every component the profile requires is listed
    must = {(n, _NO_PARAMS) for n in (*derived, *_xroad_headers(headers, required))}
    if request_signature is not None:
        must.add(_REQ_SIGNATURE_IDENTITY)
    if not must <= sel.identities:
        uncovered = sorted(
            REQUEST_SIGNATURE_COMPONENT if i == _REQ_SIGNATURE_IDENTITY else serialize_item(i[0], dict(i[1]))
            for i in must - sel.identities
        )
        raise _malformed(f"signature does not cover {' '.join(uncovered)}")
    # (5) the stapled certificate is the one keyid names
    try:
        cert_der, ocsp_der, cert_sha256 = _decode_stapled(headers[H_SIGNING_CERT], headers[H_SIGNING_OCSP])
    except binascii.Error as e:
        raise _malformed("stapled certificate or OCSP response is not base64") from e
    if not hmac.compare_digest(cert_sha256, keyid):
        raise _malformed("keyid does not match the stapled signing certificate")
    # (6) the certificate is trusted (chain, OCSP, member): the caller's policy
    cert = resolve_cert(keyid, cert_der, ocsp_der)
    if cert_keyid(cert) != keyid:
        raise _malformed("resolved certificate does not match keyid")
    # (7) the signature value over the rebuilt signature base
    base = _base(lines, sel.params_text)
    _verify_value(cert, alg, base, signature)
    return VerifiedSignature(
        keyid=keyid, alg=alg, created=created, covered=tuple(ident for ident, _ in lines),
        signature_params=sel.params_text, signature_base=base, signature=signature, cert=cert,
        cert_der=cert_der, ocsp_der=ocsp_der,
    )


def verify_request(
    *, method: str, path: str, query: str | None, headers: Mapping[str, str], now: datetime,
    max_skew_seconds: int, resolve_cert: CertResolver,
) -> VerifiedSignature:
    """Verify the ``xroad`` signature of a request from a client's security server.

    ``headers`` as from :func:`fields_from_pairs`. The body is checked separately, once read, with
    :func:`verify_content_digest` (the digest header is covered, so that check completes this one).

    Steps: (1) find and parse ``Signature-Input``/``Signature`` and select label ``xroad``; (2) parameters
    ``created`` (within ``max_skew_seconds`` of ``now``), ``keyid``, ``alg``, ``tag="x-road-r1"``, nothing
    unknown; (3) every covered component is one the profile allows; (4) they include the profile's and every
    ``x-road-*`` header present; (5) the stapled certificate hashes to ``keyid``; (6) ``resolve_cert`` accepts
    it; (7) the signature value verifies over the rebuilt signature base.

    Raises:
        TrustError: ``MissingSignature``, ``MalformedSignature``, ``InvalidSignatureTime`` or
            ``InvalidSignatureValue`` (``Server.ServerProxy.*`` once the server proxy answers); whatever
            ``resolve_cert`` raises.
    """
    derived = {"@method": method, "@path": path or "/", "@query": "?" + (query or "")}
    return _verify(
        derived=derived, headers=headers, required=REQUEST_REQUIRED_HEADERS, request_signature=None, now=now,
        max_skew_seconds=max_skew_seconds, resolve_cert=resolve_cert,
    )


def verify_response(
    *, status: int, headers: Mapping[str, str], request_signature: bytes, now: datetime,
    max_skew_seconds: int, resolve_cert: CertResolver,
) -> VerifiedSignature:
    """Verify the ``xroad`` signature of a response, which must be bound to ``request_signature`` (the
    signature bytes of the request we sent) through ``"signature";req;key="xroad"``.

    Same steps as :func:`verify_request`, with ``@status`` and ``x-road-request-hash`` required.

    Raises:
        TrustError: ``MissingSignature``, ``MalformedSignature``, ``InvalidSignatureTime`` or
            ``InvalidSignatureValue`` (also when the response is bound to another request;
            ``Server.ClientProxy.*`` once the client proxy answers); whatever ``resolve_cert`` raises.
    """
    return _verify(
        derived={"@status": str(status)}, headers=headers, required=RESPONSE_REQUIRED_HEADERS,
        request_signature=request_signature, now=now, max_skew_seconds=max_skew_seconds,
        resolve_cert=resolve_cert,
    )
