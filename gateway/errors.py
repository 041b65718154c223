"""The one error hierarchy of the gateway: whose fault an error is, and which X-Road fault type it carries (pure).

Two things describe every error, and each has one place:

- **Whose fault** is the base class: the request (:class:`RequestError`), a signed artefact
  (:class:`TrustError`), a remote party (:class:`PeerError`), this installation's settings
  (:class:`ConfigError`), the message log (:class:`MessageLogError`). Callers catch these.
- **The fault type** is the leaf class. It carries, as class attributes, X-Road's type name (``fault``), its
  prefix (``Client``, ``Server`` or ``Signer``) and the HTTP status it maps to. X-Road's REST rule
  (PR-REST 4.6, ``sendErrorResponse``) is that ``Server.*`` faults are HTTP 500 and ``Client.*`` faults 4xx;
  each class states its status, and ``tests/unit/test_errors.py`` checks the whole table against that rule.
  The type names are the CamelCase ones X-Road used up to 7.7, which is what the published PR-REST
  examples show.

``Server.*`` faults are raised **without a side**. X-Road names the proxy that detected the fault in the type
(``Server.ClientProxy.NetworkError``, ``Server.ServerProxy.AccessDenied``); each proxy applies its side once,
at its single entry point (its error middleware), with :meth:`GatewayError.at_side`. The same signature check
therefore reads ``Server.ServerProxy.InvalidSignatureValue`` when the provider verifies a request and
``Server.ClientProxy.InvalidSignatureValue`` when the client side verifies the response, the way h11 raises a
local protocol error and re-raises it as the peer's at its one entry point. Outside the proxies (central
server, admin API, command line) a ``Server.*`` fault has no side and reads ``Server.<Fault>``.

Renderers ask an error for :attr:`GatewayError.http_status`, which is the class's ``status``; only an error
relayed from another server (whose type and status come off the wire) overrides it.

Foreign exceptions are wrapped at the seam with ``raise OurError(...) from e``. Exactly one middleware per HTTP
application turns these into responses; the command line prints :meth:`GatewayError.diagnostics` and exits
with :attr:`GatewayError.exit_code`.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self, TypeVar, cast

Side = Literal["ClientProxy", "ServerProxy"]
Prefix = Literal["Client", "Server", "Signer", ""]

CLIENT_PROXY: Side = "ClientProxy"
SERVER_PROXY: Side = "ServerProxy"
SIDES: tuple[Side, ...] = (CLIENT_PROXY, SERVER_PROXY)


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose; itself ``Server.InternalError`` (HTTP 500)."""

    status: ClassVar[int] = 500
    prefix: ClassVar[Prefix] = "Server"
    fault: ClassVar[str] = "InternalError"
    exit_code: ClassVar[int] = 1
    whose_fault: ClassVar[str] = "the gateway"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.side: Side | None = None

    @classmethod
    def type_name(cls, side: Side | None = None) -> str:
        """The X-Road fault type of this class as raised on ``side`` (only ``Server.*`` faults take a side)."""
        if cls.prefix == "Server" and side is not None:
            return f"Server.{side}.{cls.fault}"
        return f"{cls.prefix}.{cls.fault}" if cls.prefix else cls.fault

    @property
    def xroad_type(self) -> str:
        """The fault type as it goes on the wire (``X-Road-Error``, the error body's ``type``)."""
        return self.type_name(self.side)

    @property
    def http_status(self) -> int:
        """The HTTP status this error is answered with: its class's ``status``."""
        return self.status

    def at_side(self, side: Side) -> Self:
        """Name the proxy that detected this fault, unless one already has (the first boundary wins)."""
        if self.side is None:
            self.side = side
        return self

    def diagnostics(self) -> str:
        """A human explanation: what went wrong, whose fault it is and what to do."""
        text = f"{self.xroad_type}: {self.message} (fault of {self.whose_fault})"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


# ---- whose fault ---------------------------------------------------------------------------------------------


class RequestError(GatewayError):
    """The caller sent something we refuse, or asked for what it may not have."""

    status = 400
    prefix: ClassVar[Prefix] = "Client"
    fault = "BadRequest"
    whose_fault = "the request"


class TrustError(GatewayError):
    """A signature, certificate, OCSP status, expiry or version does not meet the trust rules."""

    fault = "CertValidation"
    whose_fault = "a signed artefact (signature, certificate, configuration)"


class PeerError(GatewayError):
    """A remote party (peer security server, service, central server, TSA, OCSP responder) failed."""

    fault = "NetworkError"
    whose_fault = "a remote party"


class ConfigError(GatewayError):
    """Our own settings are wrong: the process refuses to start (exit code 2).

    To a client system a configuration error met while serving is an internal error of the server
    (``Server.<side>.InternalError``); to an operator it reads as what it is (:meth:`diagnostics`).
    """

    exit_code = 2
    whose_fault = "this installation's settings"

    def diagnostics(self) -> str:
        text = f"configuration error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class MessageLogError(GatewayError):
    """The message log cannot be written: the exchange fails closed (``Server.LoggingFailed``)."""

    fault = "LoggingFailed"
    whose_fault = "the message log"


# ---- client faults: the request does not follow the protocol, or asks for what is not there (4xx) -----------


class IdentifierError(RequestError):
    """A malformed X-Road identifier (member, subsystem, service, security server, group)."""

    fault = "InvalidClientIdentifier"


class BadIdentifier(IdentifierError):
    """A malformed identifier in the request path or an optional header, which X-Road answers as
    ``Client.BadRequest`` (only ``X-Road-Client`` is ``Client.InvalidClientIdentifier``)."""

    fault = "BadRequest"


class PkiError(RequestError):
    """A certificate request, certificate or OCSP/TSA request that the development PKI or a token refuses."""


class PayloadTooLarge(RequestError):
    """A body larger than the limit (``Client.BadRequest`` with HTTP 413)."""

    status = 413


class UriTooLong(RequestError):
    """A request target longer than the limit (``Client.BadRequest`` with HTTP 414)."""

    status = 414


class UnsupportedMediaType(RequestError):
    """A body in a media type the API does not take (``Client.BadRequest`` with HTTP 415; admin API)."""

    status = 415


class InvalidHttpMethod(RequestError):
    """An HTTP method that X-Road's REST protocol does not carry."""

    fault = "InvalidHttpMethod"


class InvalidRequest(RequestError):
    """A well-formed request for something this X-Road instance does not have (``listClients``)."""

    fault = "InvalidRequest"


class InvalidTime(RequestError):
    """A management request created too far from the central server's time."""

    fault = "InvalidTime"


class InvalidCertificate(RequestError):
    """A management request's signer certificate that may not sign it (HTTP 403)."""

    status = 403
    fault = "InvalidCertificate"


class InvalidSignature(RequestError):
    """A management request whose signature does not prove what it must (HTTP 403)."""

    status = 403
    fault = "InvalidSignature"


class Unauthorized(RequestError):
    """The caller is not (or no longer) authenticated (HTTP 401; admin API)."""

    status = 401
    fault = "Unauthorized"


class Forbidden(RequestError):
    """Authenticated, but none of the caller's roles may do this (HTTP 403; admin API)."""

    status = 403
    fault = "Forbidden"


class NotFound(RequestError):
    """What the request names does not exist (HTTP 404)."""

    status = 404
    fault = "NotFound"


class MethodNotAllowed(RequestError):
    """The resource exists but does not take this method (HTTP 405; admin API)."""

    status = 405
    fault = "MethodNotAllowed"


class Conflict(RequestError):
    """The request conflicts with the current state (HTTP 409)."""

    status = 409
    fault = "Conflict"


class AlreadyExists(RequestError):
    """What the request would create exists already (HTTP 409)."""

    status = 409
    fault = "AlreadyExists"


class AlreadyRevoked(RequestError):
    """An API key that is revoked already (HTTP 409)."""

    status = 409
    fault = "AlreadyRevoked"


class AccountLocked(RequestError):
    """An account locked after too many wrong passwords (HTTP 429)."""

    status = 429
    fault = "AccountLocked"


class TooManyExchanges(RequestError):
    """A client subsystem has as many exchanges in progress on this security server as it may have at once
    (``[server] max_client_exchanges``): HTTP 429, retry later."""

    status = 429
    fault = "TooManyRequests"


# ---- faults of a SOAP message (PR-MESS; X-Road's ErrorCodes names) ---------------------------------------------


class InvalidXml(RequestError):
    """The XML is not well-formed, or uses what the hardened parser refuses: a DTD, an entity, more nesting or a
    longer attribute than the limits allow (gateway/xmlsafe.py)."""

    fault = "InvalidXml"


class InvalidSoap(RequestError):
    """The XML is well-formed but not a SOAP 1.1 envelope as PR-MESS needs it (no Body, several Body elements,
    a wrong namespace, a multipart message without its SOAP part)."""

    fault = "InvalidSoap"


class MissingHeaderField(RequestError):
    """A mandatory X-Road header field (``client``, ``service``, ``id``, ``protocolVersion``) is missing."""

    fault = "MissingHeaderField"


class DuplicateHeaderField(RequestError):
    """An X-Road header field appears twice."""

    fault = "DuplicateHeaderField"


class InvalidProtocolVersion(RequestError):
    """``protocolVersion`` is not of X-Road message protocol major version 4 (PR-MESS 2.2)."""

    fault = "InvalidProtocolVersion"


class InconsistentHeaders(PeerError):
    """The service's SOAP response does not echo the request's X-Road header fields (PR-MESS 2.2)."""

    fault = "InconsistentResponse"


# ---- server faults of the request: X-Road answers these with HTTP 500 although the caller caused them ---------


class _ServerRequestFault(RequestError):
    """A refusal of the request that X-Road types ``Server.<side>.*`` and answers with HTTP 500."""

    status = 500
    prefix = "Server"


class UnknownMember(_ServerRequestFault):
    """The client (or the provider) is not registered, or not hosted here."""

    fault = "UnknownMember"


class InvalidSecurityServer(_ServerRequestFault):
    """The pinned security server does not host the provider."""

    fault = "InvalidSecurityServer"


class ClientNotRegistered(_ServerRequestFault):
    """The client subsystem is hosted here but not in the registered state."""

    fault = "ClientNotRegistered"


class ClientAuthenticationFailed(_ServerRequestFault):
    """The information system's connection does not meet its client's authentication setting."""

    fault = "SslAuthenticationFailed"


class AccessDenied(_ServerRequestFault):
    """The access rights do not let the client call this service or endpoint."""

    fault = "AccessDenied"


class UnknownService(_ServerRequestFault):
    """No such service is provided here."""

    fault = "UnknownService"


class ServiceDisabled(_ServerRequestFault):
    """The service is disabled on this security server."""

    fault = "ServiceDisabled"


class ServiceMissingUrl(_ServerRequestFault):
    """The service has no OpenAPI description to answer ``getOpenAPI`` with."""

    fault = "ServiceMissingUrl"


# ---- server faults of a signed artefact (HTTP 500) --------------------------------------------------------------


class CertValidation(TrustError):
    """A certificate is untrusted, not valid now, of the wrong profile or member, revoked or unknown."""


class SslAuthenticationFailed(TrustError):
    """A peer security server's TLS certificate is not accepted (or it does not host the client it claims)."""

    fault = "SslAuthenticationFailed"


class IncorrectValidationInfo(TrustError):
    """An OCSP response that is malformed, stale, for another certificate, or not to be had."""

    fault = "IncorrectValidationInfo"


class MissingSignature(TrustError):
    """The message is not signed, or a header the signature needs is missing."""

    fault = "MissingSignature"


class MalformedSignature(TrustError):
    """The signature, its input or a covered header does not follow the profile."""

    fault = "MalformedSignature"


class InvalidSignatureValue(TrustError):
    """A signature (or a body digest) that does not verify."""

    fault = "InvalidSignatureValue"


class InvalidSignatureTime(TrustError):
    """A signature created outside the allowed clock skew, or expired."""

    fault = "InvalidSignatureTime"


class InconsistentResponse(TrustError):
    """A signed response whose echoed ids or request hash are not our request's."""

    fault = "InconsistentResponse"


class ReplayedRequest(TrustError):
    """A request id seen before, or a request signed before the replay window."""

    fault = "ReplayedRequest"


class ReplayCacheFull(TrustError):
    """The replay cache is full: new requests are refused until ids expire (fail closed)."""

    fault = "ReplayCacheFull"


class TimestampInvalid(TrustError):
    """A time-stamp response that the TSA refused or that does not answer our request."""

    fault = "TimestampingFailed"


class MalformedArchive(TrustError):
    """A message-log archive that cannot be read as one."""

    fault = "MalformedArchive"


class GlobalConfError(TrustError):
    """The global configuration is unusable; itself ``Server.OutdatedGlobalConf`` (none valid, expired, rollback)."""

    fault = "OutdatedGlobalConf"


class MalformedGlobalConf(GlobalConfError):
    """A global configuration (or anchor) that does not parse or is for another format or instance."""

    fault = "MalformedGlobalConf"


class GlobalConfSignatureInvalid(GlobalConfError):
    """A global configuration that no key of the anchor signed validly."""

    fault = "InvalidSignatureValue"


# ---- server faults of a remote party (HTTP 500) -----------------------------------------------------------------


class ServiceFailed(PeerError):
    """The service (or its OpenAPI description) failed: an error status, or a response larger than the limit."""

    fault = "ServiceFailed"


class ResponseTooLarge(PeerError):
    """The provider's security server sent a response larger than the limit."""

    fault = "IOError"


class GlobalConfDownloadFailed(PeerError):
    """No configuration could be downloaded from the central server."""

    fault = "GlobalConfDownloadFailed"


# ---- server faults of the gateway itself (HTTP 500) ---------------------------------------------------------------


class CannotCreateSignature(GatewayError):
    """We cannot sign: a required header is missing or unfit, or there is no OCSP response to staple."""

    fault = "CannotCreateSignature"


class Overloaded(GatewayError):
    """The bodies of the exchanges in progress fill the security server's body budget."""

    fault = "Overloaded"


class NotConfigured(GatewayError):
    """The security server has no active keys yet (it started uninitialised: an empty software token), so it
    cannot sign or authenticate an exchange: HTTP 503 until the keys are imported and activated, like the HTTP
    layer's 503 for a server that cannot take the request now (docs/protocol.md, docs/operations.md)."""

    status = 503
    fault = "NotConfigured"
    whose_fault = "this security server's set-up (no active keys yet)"


class DatabaseError(GatewayError):
    """A configuration database operation failed."""

    fault = "DatabaseError"


class Unreachable(GatewayError):
    """A local service of this installation (the admin API, for the command line) cannot be reached."""

    fault = "NetworkError"


class TimestampingFailed(MessageLogError):
    """The message log has gone untimestamped past its grace period: exchanges are refused."""

    fault = "TimestampingFailed"


# ---- signer (token) faults: the operator's request to the token (4xx) -------------------------------------------


class _SignerFault(RequestError):
    prefix = "Signer"


class KeyNotFound(_SignerFault):
    """No key with this id in the token (HTTP 404)."""

    status = 404
    fault = "KeyNotFound"


class KeyIdUnclear(_SignerFault):
    """A key id prefix that is too short or matches several keys."""

    fault = "KeyNotFound"


class CertNotFound(_SignerFault):
    """No certificate with this fingerprint in the token (HTTP 404)."""

    status = 404
    fault = "CertNotFound"


class CertIdUnclear(_SignerFault):
    """A fingerprint prefix that is too short or matches several certificates."""

    fault = "CertNotFound"


class PinFormat(_SignerFault):
    """A PIN that is too short, too long or holds control characters."""

    fault = "PinFormat"


class PinIncorrect(_SignerFault):
    """A wrong PIN (HTTP 401)."""

    status = 401
    fault = "PinIncorrect"


class PinRefused(_SignerFault):
    """A wrong PIN as the admin API answers it: HTTP 400, because 401 there means "log in again"."""

    fault = "PinIncorrect"


class TokenLocked(_SignerFault):
    """The token is locked after wrong PINs (HTTP 423)."""

    status = 423
    fault = "TokenLocked"


class TokenNotActive(_SignerFault):
    """The token is not logged in (HTTP 409)."""

    status = 409
    fault = "TokenNotActive"


class TokenUnavailable(GatewayError):
    """A PKCS#11 device cannot be used now: its library failed, the token was removed or its session broke.

    Exchanges fail closed with it (``Server.ClientProxy.TokenNotAvailable`` / ``Server.ServerProxy...``, HTTP
    500) until the device answers again; readiness is 503 meanwhile (docs/tokens.md, "PKCS#11 tokens").
    """

    status = 500
    fault = "TokenNotAvailable"
    whose_fault = "the signing device (PKCS#11 token)"


class KeyInUse(_SignerFault):
    """A key with an active certificate, which may not be deleted (HTTP 409)."""

    status = 409
    fault = "KeyInUse"


class _SignerPkiFault(PkiError):
    prefix = "Signer"


class NoKeyForCert(_SignerPkiFault):
    """A certificate whose key is not in the token (it was not issued for one of its CSRs)."""

    fault = "KeyNotFound"


class WrongCertUsage(_SignerPkiFault):
    """A certificate of the other usage than its key."""

    fault = "WrongCertUsage"


class WrongIdentity(_SignerPkiFault):
    """A certificate naming another server, or a member this server does not sign for."""

    fault = "WrongIdentity"


class CertExpired(_SignerPkiFault):
    """A certificate that has expired."""

    fault = "CertExpired"


class ImportedCertInvalid(_SignerPkiFault):
    """A certificate to import that does not follow the certificate profile (``Signer.CertValidation``)."""

    fault = "CertValidation"


class CertExists(_SignerPkiFault):
    """A certificate that is in the token already (HTTP 409)."""

    status = 409
    fault = "CertExists"


class UntrustedSignerCert(TrustError):
    """A certificate to import that no CA of the global configuration issued (``Signer.CertValidation``).

    Imported by an operator, so its status is the request's 400 (the admin API answers it so).
    """

    status = 400
    prefix = "Signer"


# ---- a fault relayed from another server -------------------------------------------------------------------


class RelayedFault(GatewayError):
    """A fault another server answered, passed on as it came: its type and status are data off the wire.

    The one kind of fault that is not a class of this closed set. Subclasses say whose answer it relays (the
    provider's security server, the central server) and may apply X-Road's status rule to what arrived.
    """

    def __init__(self, message: str, *, remote_type: str, remote_status: int) -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_status = remote_status

    @property
    def xroad_type(self) -> str:
        return self.remote_type

    @property
    def http_status(self) -> int:
        return self.remote_status



_E = TypeVar("_E", bound=GatewayError)


def fault_class(xroad_type: str, status: int, base: type[_E]) -> type[_E] | None:
    """The class of this closed set (``base`` or one of its subclasses) with this type and status, if any.

    For a fault another server of ours answered (the central server's JSON error), so that it is raised here
    as the same class: the most general matching class wins (``RequestError`` for ``Client.BadRequest``/400).
    A ``Server.<side>.*`` type matches its side-less class.
    """
    prefix, _, fault = _parse_code(xroad_type)
    for klass in sorted(_closed_set(base), key=lambda k: len(k.__mro__)):
        if (klass.prefix, klass.fault, klass.status) == (prefix, fault, status):
            return cast(type[_E], klass)  # a subclass of base: _closed_set walks base's subclasses
    return None


# ---- parsing a type string ----------------------------------------------------------------------------------

_PREFIXES: dict[str, Prefix] = {"Client": "Client", "Server": "Server", "Signer": "Signer"}


def _parse_code(code: str) -> tuple[Prefix, Side | None, str]:
    head, _, tail = code.partition(".")
    prefix = _PREFIXES.get(head)
    if prefix is None or not tail:
        return "", None, code
    side_text, _, fault = tail.partition(".")
    for side in SIDES:
        if prefix == "Server" and side_text == side and fault:
            return prefix, side, fault
    return prefix, None, tail


def _closed_set(base: type[GatewayError]) -> list[type[GatewayError]]:
    """``base`` and its subclasses defined in this module, most general first."""
    found = [base] if base.__module__ == __name__ else []
    for sub in base.__subclasses__():
        found.extend(k for k in _closed_set(sub) if k not in found)
    return found
