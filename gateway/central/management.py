"""Management requests from security servers to the central server: format, signing, checks (pure).

A security server asks the central server to register its authentication certificate (``auth_cert_reg``,
also how a new server joins), to delete one (``auth_cert_deletion``), or to add or remove a client
(``client_reg``, ``client_deletion``). The wire format (``POST /registration``, docs/registration.md) is one
RFC 8785 canonical JSON object::

    {"alg": "ecdsa-p256-sha256",
     "request": {"address": "...", "auth_cert": "<base64 DER>", "created": "2025-01-01T00:00:00Z",
                 "server": "DEV/GOV/1001/ss3", "type": "auth_cert_reg"},
     "signature": "<base64>",
     "signer_cert": "<base64 DER>"}

``signature`` is made with the authentication key of ``signer_cert`` over the canonical bytes of
``request`` (which, the body being canonical, are exactly the bytes received); ``alg`` and the signature
encoding are those of :mod:`gateway.trust.keys` (DER for ECDSA). For ``auth_cert_reg`` the signer certificate is
the certificate to register (proof of possession); for the other types it must be an authentication
certificate already registered for ``server`` (checked by :mod:`gateway.central.registration`, which
reads the registry and checks ``address`` as ``HOST:PORT``). Fields per type: ``address`` + ``auth_cert``
(auth_cert_reg), ``auth_cert_sha256`` (auth_cert_deletion), ``client`` (client_reg, client_deletion).

A **renewal** (``auth_cert_reg`` only) carries a second signature over the same canonical ``request`` bytes,
``renewal_alg``/``renewal_signature``, made with the key of ``renewal_cert``, an authentication certificate of
the same server (the one registered now): the central server may approve such a request without an officer
(``[central] auto_approve_auth_renewal``, docs/registration.md).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.errors import (
    GatewayError,
    IdentifierError,
    InvalidCertificate,
    InvalidSignature,
    InvalidTime,
    PayloadTooLarge,
    RequestError,
    TrustError,
)
from gateway.globalconf.model import format_time
from gateway.identifiers import ClientId, SecurityServerId, parse_client
from gateway.trust import certprofile, keys
from gateway.trust.canonical import canonical_bytes, loads_canonical

RequestType = Literal["auth_cert_reg", "auth_cert_deletion", "client_reg", "client_deletion"]
REQUEST_TYPES: Final[tuple[RequestType, ...]] = ("auth_cert_reg", "auth_cert_deletion", "client_reg",
                                                 "client_deletion")
MAX_REQUEST_BYTES: Final = 256 * 1024  # bytes; a request holds one or two certificates
MAX_ADDRESS_LENGTH: Final = 1024  # characters (the registry's column); the registry checks HOST:PORT
MAX_SKEW: Final = timedelta(minutes=10)  # a request's created may differ this much from the central clock
_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "auth_cert_reg": frozenset({"type", "server", "created", "address", "auth_cert"}),
    "auth_cert_deletion": frozenset({"type", "server", "created", "auth_cert_sha256"}),
    "client_reg": frozenset({"type", "server", "created", "client"}),
    "client_deletion": frozenset({"type", "server", "created", "client"}),
}
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _bad(message: str) -> RequestError:
    return RequestError(f"management request: {message}")


def _forbidden(message: str, fault: type[RequestError]) -> RequestError:
    return fault(f"management request: {message}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagementRequest:
    """A verified request: the signature checks out with ``signer_cert`` and the fields are well formed."""

    type: RequestType
    server: SecurityServerId
    created: datetime
    signer_cert: x509.Certificate
    address: str | None = None
    auth_cert: x509.Certificate | None = None
    auth_cert_sha256: str | None = None  # auth_cert_reg: of auth_cert; auth_cert_deletion: the one to delete
    client: ClientId | None = None
    renewal_cert: x509.Certificate | None = None  # auth_cert_reg: the current certificate that co-signed

    @property
    def signer_sha256(self) -> str:
        return keys.cert_sha256_hex(self.signer_cert)


def build_request(
    type: RequestType,
    *,
    server: SecurityServerId,
    signer_key: keys.PrivateKey,
    signer_cert: x509.Certificate,
    now: datetime,
    address: str | None = None,
    client: ClientId | None = None,
    auth_cert_sha256: str | None = None,
    renewal_key: keys.PrivateKey | None = None,
    renewal_cert: x509.Certificate | None = None,
) -> bytes:
    """Build and sign a management request; returns the canonical JSON body to POST.

    ``renewal_key``/``renewal_cert`` (auth_cert_reg only): the current authentication key co-signs, which makes
    the request a renewal (module docstring).

    Raises:
        RequestError: a field the type needs is missing.
        PkiError: the key type is not allowed.
    """
    request: dict[str, Any] = {"type": type, "server": str(server), "created": format_time(now)}
    if type == "auth_cert_reg":
        if not address:
            raise RequestError("an auth_cert_reg request needs the server's address")
        request["address"] = address
        request["auth_cert"] = _der_b64(signer_cert)
    elif type == "auth_cert_deletion":
        if not auth_cert_sha256:
            raise RequestError("an auth_cert_deletion request needs the fingerprint to delete")
        request["auth_cert_sha256"] = auth_cert_sha256.lower()
    else:
        if client is None:
            raise RequestError(f"a {type} request needs the client")
        request["client"] = str(client)
    alg, sig = keys.sign_bytes(signer_key, canonical_bytes(request))
    doc: dict[str, Any] = {
        "alg": alg, "request": request, "signature": base64.b64encode(sig).decode("ascii"),
        "signer_cert": _der_b64(signer_cert),
    }
    if (renewal_key is None) != (renewal_cert is None):
        raise RequestError("a renewal needs both the current authentication key and its certificate")
    if renewal_key is not None and renewal_cert is not None:
        if type != "auth_cert_reg":
            raise RequestError(f"a {type} request cannot be a renewal (only auth_cert_reg)")
        renewal_alg, renewal_sig = keys.sign_bytes(renewal_key, canonical_bytes(request))
        doc |= {"renewal_alg": renewal_alg, "renewal_cert": _der_b64(renewal_cert),
                "renewal_signature": base64.b64encode(renewal_sig).decode("ascii")}
    return canonical_bytes(doc)


def _der_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


def _cert(value: Any, what: str) -> x509.Certificate:
    if not isinstance(value, str):
        raise _bad(f"{what} must be a base64 string")
    try:
        der = base64.b64decode(value, validate=True)
        return x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError) as e:
        raise _bad(f"{what} is not a base64 DER certificate: {e}") from e


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise _bad(f"field {key!r} must be a non-empty string")
    return value


def _signed_by(
    doc: Mapping[str, Any], req: Mapping[str, Any], cert_key: str, alg_key: str, sig_key: str, *,
    server: SecurityServerId, ca_for: Callable[[x509.Certificate], object | None], now: datetime,
) -> x509.Certificate:
    """The certificate ``doc[cert_key]``, checked as an authentication certificate of ``server`` from a trusted CA
    valid now, whose key made ``doc[sig_key]`` over the canonical bytes of ``req``."""
    cert = _cert(doc[cert_key], cert_key)
    try:
        named = certprofile.auth_identity_of(cert)
    except GatewayError as e:
        raise _forbidden(f"{cert_key} is not an authentication certificate: {e.message}",
                         InvalidCertificate) from e
    if named != server:
        raise _forbidden(f"{cert_key} names {named}, not {server}", InvalidCertificate)
    if ca_for(cert) is None:
        raise _forbidden(f"{cert_key} is not issued by a CA trusted by this central server",
                         InvalidCertificate)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise _forbidden(f"{cert_key} is not valid at {format_time(now)}", InvalidCertificate)
    alg, sig_text = doc[alg_key], doc[sig_key]
    if not isinstance(alg, str) or not isinstance(sig_text, str):
        raise _bad(f"{alg_key} and {sig_key} must be strings")
    try:
        sig = base64.b64decode(sig_text, validate=True)
    except binascii.Error as e:
        raise _bad(f"{sig_key} is not base64: {e}") from e
    try:
        keys.verify_bytes(cert, alg, canonical_bytes(req), sig)
    except TrustError as e:
        raise _forbidden(f"{sig_key} does not verify with {cert_key} ({e.message})", InvalidSignature) from e
    return cert


def verify_request(
    body: bytes,
    *,
    instance: str,
    ca_for: Callable[[x509.Certificate], object | None],
    now: datetime,
) -> ManagementRequest:
    """Check a management request as received; return it verified.

    ``ca_for`` finds the trusted CA that issued a certificate (None if none did).

    Raises:
        IdentifierError: a malformed identifier in any field, or one of another instance.
        RequestError: 400 for a malformed body or field, or a ``created`` outside the allowed skew; 403
            (``Client.InvalidCertificate``) when the signer certificate is not an authentication
            certificate of ``server`` issued by a trusted CA and valid now, 403 (``Client.InvalidSignature``)
            when the signature does not verify.
    """
    # (1) bounded, canonical JSON of the expected shape
    if len(body) > MAX_REQUEST_BYTES:
        raise PayloadTooLarge(f"management request is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        doc = loads_canonical(body, what="management request")
    except TrustError as e:
        raise _bad(e.message.removeprefix("management request ")) from e
    except RecursionError as e:
        raise _bad("nested too deeply") from e
    plain, renewal = {"alg", "request", "signature", "signer_cert"}, {"renewal_alg", "renewal_cert",
                                                                      "renewal_signature"}
    if not isinstance(doc, dict) or set(doc) not in (plain, plain | renewal):
        raise _bad("the body must be an object with exactly alg, request, signature and signer_cert (and, for a "
                   "renewal, renewal_alg, renewal_cert and renewal_signature)")
    req = doc["request"]
    if not isinstance(req, dict):
        raise _bad("field 'request' must be an object")
    rtype = req.get("type")
    if rtype not in REQUEST_TYPES:
        raise _bad(f"type {rtype!r} is not one of {', '.join(REQUEST_TYPES)}")
    want = _FIELDS[rtype]
    if set(req) != want:
        missing, extra = sorted(want - set(req)), sorted(set(req) - want)
        raise _bad(f"a {rtype} request has fields {', '.join(sorted(want))}"
                   + (f"; missing {', '.join(missing)}" if missing else "")
                   + (f"; unknown {', '.join(extra)}" if extra else ""))
    # (2) identifiers: well formed, of this instance
    server = SecurityServerId.parse(_text(req, "server"), encoded=False)
    client: ClientId | None = None
    if "client" in req:
        client = parse_client(_text(req, "client"), encoded=False)
    for ident in (server, client):
        if ident is not None and ident.instance != instance:
            raise IdentifierError(f"{ident.kind} {ident} belongs to instance {ident.instance!r}; this central "
                                  f"server serves instance {instance!r}")
    # (3) the time it was made
    try:
        created = datetime.fromisoformat(_text(req, "created").replace("Z", "+00:00"))
    except ValueError as e:
        raise _bad(f"field 'created' is not an RFC 3339 time: {e}") from e
    if created.tzinfo is None:
        raise _bad("field 'created' has no time zone")
    if abs(created - now) > MAX_SKEW:
        raise InvalidTime(
            f"management request was created at {format_time(created)}, more than {MAX_SKEW} from the central "
            f"server's time {format_time(now)}",
        )
    # (4) the signer certificate: an authentication certificate of this server from a trusted CA, valid now;
    # (5) the signature over the request's canonical bytes
    signer_cert = _signed_by(doc, req, "signer_cert", "alg", "signature", server=server, ca_for=ca_for, now=now)
    renewal_cert = None
    if "renewal_cert" in doc:
        # (5a) a renewal: the same checks for the co-signing certificate, which must be another one
        if rtype != "auth_cert_reg":
            raise _bad(f"a {rtype} request cannot be a renewal (only auth_cert_reg)")
        renewal_cert = _signed_by(doc, req, "renewal_cert", "renewal_alg", "renewal_signature", server=server,
                                  ca_for=ca_for, now=now)
        if renewal_cert == signer_cert:
            raise _forbidden("renewal_cert is the certificate to register; a renewal is co-signed by the current "
                             "one", InvalidCertificate)
    # (6) the type's own fields
    result = ManagementRequest(type=cast(RequestType, rtype), server=server, created=created,
                               signer_cert=signer_cert, client=client)
    if rtype == "auth_cert_reg":
        auth_cert = _cert(req["auth_cert"], "auth_cert")
        if keys.cert_sha256_hex(auth_cert) != result.signer_sha256:
            raise _forbidden("auth_cert must be the signer certificate (proof of possession of its key)",
                             InvalidSignature)
        address = _text(req, "address")
        if len(address) > MAX_ADDRESS_LENGTH:
            raise _bad(f"address is longer than {MAX_ADDRESS_LENGTH} characters")
        return ManagementRequest(type="auth_cert_reg", server=server, created=created, signer_cert=signer_cert,
                                 address=address, auth_cert=auth_cert,
                                 auth_cert_sha256=result.signer_sha256, renewal_cert=renewal_cert)
    if rtype == "auth_cert_deletion":
        fingerprint = _text(req, "auth_cert_sha256")
        if not _HEX64.fullmatch(fingerprint):
            raise _bad("auth_cert_sha256 must be 64 lower-case hex digits")
        return ManagementRequest(type="auth_cert_deletion", server=server, created=created,
                                 signer_cert=signer_cert, auth_cert_sha256=fingerprint)
    return result
