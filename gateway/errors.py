"""The one error hierarchy of the gateway, split by whose fault an error is.

Pure: no I/O. Every error carries the HTTP status it maps to and an X-Road-style fault type
(``Client.BadRequest``, ``Server.ServerProxy.AccessDenied``...; the CamelCase form that X-Road used up to
7.7, which is what the published PR-REST examples show). Exactly one middleware per HTTP application turns
these into responses; the CLI prints :meth:`GatewayError.diagnostics` and exits with :attr:`exit_code`.

Foreign exceptions are wrapped at the seam with ``raise OurError(...) from e``.
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose.

    ``xroad_type`` may be narrowed per instance (``code=``) so that one class can carry the precise fault
    type (e.g. ``Server.ServerProxy.SslAuthenticationFailed``) without a subclass per code.
    """

    status: ClassVar[int] = 500
    default_type: ClassVar[str] = "Server.ServerProxy.InternalError"
    exit_code: ClassVar[int] = 1
    whose_fault: ClassVar[str] = "the gateway"

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.xroad_type = code or self.default_type
        self.hint = hint

    def diagnostics(self) -> str:
        """A human explanation: what went wrong, whose fault it is and what to do."""
        text = f"{self.xroad_type}: {self.message} (fault of {self.whose_fault})"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class RequestError(GatewayError):
    """The caller sent something we refuse: HTTP 4xx."""

    status = 400
    default_type = "Client.BadRequest"
    whose_fault = "the request"

    def __init__(
        self, message: str, *, code: str | None = None, hint: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message, code=code, hint=hint)
        if status is not None:
            self.status = status  # type: ignore[misc]


class IdentifierError(RequestError):
    """A malformed X-Road identifier (member, subsystem, service, security server, group)."""

    default_type = "Client.InvalidClientIdentifier"


class TrustError(GatewayError):
    """A signature, certificate, OCSP status, expiry or version does not meet the trust rules."""

    status = 500
    default_type = "Server.ServerProxy.CertValidation"
    whose_fault = "a signed artefact (signature, certificate, configuration)"


class GlobalConfError(TrustError):
    """The global configuration is unusable: bad signature, rollback, expired, malformed."""

    default_type = "Server.ClientProxy.OutdatedGlobalConf"


class PeerError(GatewayError):
    """A remote party (peer security server, service, central server, TSA, OCSP responder) failed."""

    status = 502
    default_type = "Server.ServerProxy.NetworkError"
    whose_fault = "a remote party"


class ConfigError(GatewayError):
    """Our own settings are wrong: the process refuses to start (exit code 2)."""

    default_type = "Server.ClientProxy.InternalError"
    exit_code = 2
    whose_fault = "this installation's settings"


class MessageLogError(GatewayError):
    """The message log cannot be written: the exchange fails closed."""

    default_type = "Server.ClientProxy.LoggingFailed"
    whose_fault = "the message log"


class PkiError(RequestError):
    """A certificate request, certificate or OCSP/TSA request that the development PKI refuses."""

    default_type = "Client.BadRequest"
