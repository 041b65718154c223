"""The closed set of fault types (gateway.errors, gateway.adapterapi): one table, every fault, its type and status.

A fault cannot be added without a row here: :func:`test_the_table_has_every_fault` compares the table with the
concrete subclasses of ``GatewayError`` that the two modules define.
"""

from __future__ import annotations

import pytest

from gateway import adapterapi, errors
from gateway.errors import CLIENT_PROXY, SERVER_PROXY, SIDES, GatewayError

FAULTS: list[tuple[type[GatewayError], str, int]] = [
    (errors.BadIdentifier, "Client.BadRequest", 400),
    (errors.PkiError, "Client.BadRequest", 400),
    (errors.RequestError, "Client.BadRequest", 400),
    (errors.IdentifierError, "Client.InvalidClientIdentifier", 400),
    (errors.InvalidHttpMethod, "Client.InvalidHttpMethod", 400),
    (errors.InvalidRequest, "Client.InvalidRequest", 400),
    (errors.InvalidTime, "Client.InvalidTime", 400),
    (errors.Unauthorized, "Client.Unauthorized", 401),
    (errors.Forbidden, "Client.Forbidden", 403),
    (errors.InvalidCertificate, "Client.InvalidCertificate", 403),
    (errors.InvalidSignature, "Client.InvalidSignature", 403),
    (errors.NotFound, "Client.NotFound", 404),
    (errors.MethodNotAllowed, "Client.MethodNotAllowed", 405),
    (errors.AlreadyExists, "Client.AlreadyExists", 409),
    (errors.AlreadyRevoked, "Client.AlreadyRevoked", 409),
    (errors.Conflict, "Client.Conflict", 409),
    (errors.PayloadTooLarge, "Client.BadRequest", 413),
    (errors.UriTooLong, "Client.BadRequest", 414),
    (errors.UnsupportedMediaType, "Client.BadRequest", 415),
    (errors.AccountLocked, "Client.AccountLocked", 429),
    (errors.TooManyExchanges, "Client.TooManyRequests", 429),
    (errors.InvalidXml, "Client.InvalidXml", 400),
    (errors.InvalidSoap, "Client.InvalidSoap", 400),
    (errors.MissingHeaderField, "Client.MissingHeaderField", 400),
    (errors.DuplicateHeaderField, "Client.DuplicateHeaderField", 400),
    (errors.InvalidProtocolVersion, "Client.InvalidProtocolVersion", 400),
    (errors.CertExpired, "Signer.CertExpired", 400),
    (errors.CertIdUnclear, "Signer.CertNotFound", 400),
    (errors.UntrustedSignerCert, "Signer.CertValidation", 400),
    (errors.ImportedCertInvalid, "Signer.CertValidation", 400),
    (errors.KeyIdUnclear, "Signer.KeyNotFound", 400),
    (errors.NoKeyForCert, "Signer.KeyNotFound", 400),
    (errors.PinFormat, "Signer.PinFormat", 400),
    (errors.PinRefused, "Signer.PinIncorrect", 400),
    (errors.WrongCertUsage, "Signer.WrongCertUsage", 400),
    (errors.WrongIdentity, "Signer.WrongIdentity", 400),
    (errors.PinIncorrect, "Signer.PinIncorrect", 401),
    (errors.CertNotFound, "Signer.CertNotFound", 404),
    (errors.KeyNotFound, "Signer.KeyNotFound", 404),
    (errors.CertExists, "Signer.CertExists", 409),
    (errors.KeyInUse, "Signer.KeyInUse", 409),
    (errors.TokenNotActive, "Signer.TokenNotActive", 409),
    (errors.TokenLocked, "Signer.TokenLocked", 423),
    (errors.AccessDenied, "Server.AccessDenied", 500),
    (errors.CannotCreateSignature, "Server.CannotCreateSignature", 500),
    (errors.CertValidation, "Server.CertValidation", 500),
    (errors.TrustError, "Server.CertValidation", 500),
    (errors.ClientNotRegistered, "Server.ClientNotRegistered", 500),
    (errors.DatabaseError, "Server.DatabaseError", 500),
    (errors.GlobalConfDownloadFailed, "Server.GlobalConfDownloadFailed", 500),
    (errors.ResponseTooLarge, "Server.IOError", 500),
    (errors.InconsistentResponse, "Server.InconsistentResponse", 500),
    (errors.IncorrectValidationInfo, "Server.IncorrectValidationInfo", 500),
    (errors.ConfigError, "Server.InternalError", 500),
    (errors.GatewayError, "Server.InternalError", 500),
    (errors.InvalidSecurityServer, "Server.InvalidSecurityServer", 500),
    (errors.InvalidSignatureTime, "Server.InvalidSignatureTime", 500),
    (errors.GlobalConfSignatureInvalid, "Server.InvalidSignatureValue", 500),
    (errors.InvalidSignatureValue, "Server.InvalidSignatureValue", 500),
    (errors.MessageLogError, "Server.LoggingFailed", 500),
    (errors.MalformedArchive, "Server.MalformedArchive", 500),
    (errors.MalformedGlobalConf, "Server.MalformedGlobalConf", 500),
    (errors.MalformedSignature, "Server.MalformedSignature", 500),
    (errors.MissingSignature, "Server.MissingSignature", 500),
    (errors.PeerError, "Server.NetworkError", 500),
    (errors.Unreachable, "Server.NetworkError", 500),
    (errors.GlobalConfError, "Server.OutdatedGlobalConf", 500),
    (errors.Overloaded, "Server.Overloaded", 500),
    (errors.NotConfigured, "Server.NotConfigured", 503),
    (errors.ReplayCacheFull, "Server.ReplayCacheFull", 500),
    (errors.ReplayedRequest, "Server.ReplayedRequest", 500),
    (errors.ServiceDisabled, "Server.ServiceDisabled", 500),
    (errors.ServiceFailed, "Server.ServiceFailed", 500),
    (errors.InconsistentHeaders, "Server.InconsistentResponse", 500),
    (errors.ServiceMissingUrl, "Server.ServiceMissingUrl", 500),
    (errors.ClientAuthenticationFailed, "Server.SslAuthenticationFailed", 500),
    (errors.SslAuthenticationFailed, "Server.SslAuthenticationFailed", 500),
    (errors.TimestampInvalid, "Server.TimestampingFailed", 500),
    (errors.TimestampingFailed, "Server.TimestampingFailed", 500),
    (errors.TokenUnavailable, "Server.TokenNotAvailable", 500),
    (errors.UnknownMember, "Server.UnknownMember", 500),
    (errors.UnknownService, "Server.UnknownService", 500),
    (adapterapi.ServiceBadRequest, "BadRequest", 400),
    (adapterapi.ServiceHttpError, "BadRequest", 400),
    (adapterapi.ServiceNotFound, "NotFound", 404),
    (adapterapi.ServiceMethodNotAllowed, "MethodNotAllowed", 405),
    (adapterapi.ServicePayloadTooLarge, "PayloadTooLarge", 413),
    (adapterapi.ServiceInternalError, "InternalError", 500),
    (adapterapi.BadGateway, "BadGateway", 502),
    (adapterapi.GatewayTimeout, "GatewayTimeout", 504),
]


def _make(cls: type[GatewayError], message: str = "m") -> GatewayError:
    if cls is adapterapi.ServiceHttpError:
        return adapterapi.ServiceHttpError(message, http_status=cls.status)
    return cls(message)


def _concrete_faults() -> set[type[GatewayError]]:
    found: set[type[GatewayError]] = set()
    todo = [GatewayError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        # a RelayedFault's type and status are data off the wire (test_relayed_fault below), not a class's
        if cls.__module__ in ("gateway.errors", "gateway.adapterapi") and not cls.__name__.startswith("_") and (
            cls is not errors.RelayedFault
        ):
            found.add(cls)
    return found


@pytest.mark.parametrize(("cls", "xroad_type", "status"), FAULTS, ids=[c.__name__ for c, _, _ in FAULTS])
def test_fault_type_and_status(cls: type[GatewayError], xroad_type: str, status: int) -> None:
    err = _make(cls)
    # the class carries the type and the status; an instance raised without a side reads the same
    assert (cls.type_name(), cls.status) == (xroad_type, status)
    assert (err.xroad_type, err.http_status, err.status) == (xroad_type, status, status)
    # each proxy names itself in a Server.* type; other types take no side
    for side in SIDES:
        expected = f"Server.{side}.{cls.fault}" if cls.prefix == "Server" else xroad_type
        assert cls.type_name(side) == expected
        assert _make(cls).at_side(side).xroad_type == expected
        assert _make(cls).at_side(side).http_status == status


def test_the_table_has_every_fault() -> None:
    rows = [cls for cls, _, _ in FAULTS]
    assert len(rows) == len(set(rows)), "a fault has two rows"
    assert set(rows) == _concrete_faults()


@pytest.mark.parametrize(("cls", "xroad_type", "status"), FAULTS, ids=[c.__name__ for c, _, _ in FAULTS])
def test_xroad_status_rule(cls: type[GatewayError], xroad_type: str, status: int) -> None:
    """PR-REST 4.6 (X-Road's sendErrorResponse): Server.* is HTTP 500; Client.* and Signer.* are 4xx.
    The adapters' own types (no prefix) are a service's plain HTTP errors, 4xx or 5xx. The one exception is
    ``Server.*.NotConfigured``, 503 like the HTTP layer's refusal of a request it cannot take now: a server
    without keys yet (docs/protocol.md)."""
    if cls is errors.NotConfigured:
        assert status == 503
    elif cls.prefix == "Server":
        assert status == 500
    elif cls.prefix in ("Client", "Signer"):
        assert 400 <= status < 500
    else:
        assert cls.__module__ == "gateway.adapterapi" and 400 <= status < 600
    assert xroad_type.startswith(f"{cls.prefix}.") if cls.prefix else "." not in xroad_type


def test_first_boundary_wins() -> None:
    err = errors.MissingSignature("no signature")
    assert err.side is None and err.xroad_type == "Server.MissingSignature"
    assert err.at_side(SERVER_PROXY) is err
    assert err.at_side(CLIENT_PROXY).xroad_type == "Server.ServerProxy.MissingSignature"
    assert err.side == SERVER_PROXY


def test_client_faults_take_no_side() -> None:
    err = errors.PayloadTooLarge("big").at_side(SERVER_PROXY)
    assert (err.xroad_type, err.http_status) == ("Client.BadRequest", 413)


def test_whose_fault_bases_are_kept() -> None:
    assert issubclass(errors.AccessDenied, errors.RequestError)
    assert issubclass(errors.SslAuthenticationFailed, errors.TrustError)
    assert issubclass(errors.MalformedGlobalConf, errors.GlobalConfError)
    assert issubclass(errors.TimestampingFailed, errors.MessageLogError)
    assert issubclass(errors.ServiceFailed, errors.PeerError)
    assert issubclass(errors.CertExists, errors.PkiError)


def test_diagnostics() -> None:
    err = errors.NotFound("member DEV/GOV/1001 is not registered", hint="add it")
    assert err.diagnostics() == (
        "Client.NotFound: member DEV/GOV/1001 is not registered (fault of the request)\n  hint: add it"
    )
    config = errors.ConfigError("[server] id: bad", hint="see docs")
    assert config.diagnostics() == "configuration error: [server] id: bad\n  hint: see docs"
    assert (config.xroad_type, config.exit_code) == ("Server.InternalError", 2)
    assert config.at_side(CLIENT_PROXY).xroad_type == "Server.ClientProxy.InternalError"


@pytest.mark.parametrize(
    ("xroad_type", "status", "base", "cls"),
    [
        ("Client.Conflict", 409, errors.RequestError, errors.Conflict),
        ("Client.BadRequest", 400, errors.RequestError, errors.RequestError),  # the most general class wins
        ("Client.BadRequest", 413, errors.RequestError, errors.PayloadTooLarge),
        ("Client.InvalidClientIdentifier", 400, errors.RequestError, errors.IdentifierError),
        ("Server.ServerProxy.AccessDenied", 500, errors.GatewayError, errors.AccessDenied),
        ("Client.Conflict", 400, errors.RequestError, None),  # no class has this pair
        ("Server.AccessDenied", 500, errors.TrustError, None),  # not below the base asked for
    ],
)
def test_fault_class_of_a_relayed_fault(
    xroad_type: str, status: int, base: type[GatewayError], cls: type[GatewayError] | None,
) -> None:
    assert errors.fault_class(xroad_type, status, base) is cls


@pytest.mark.parametrize(
    ("remote_type", "remote_status", "xroad_type", "status"),
    [
        ("Server.ServerProxy.AccessDenied", 500, "Server.ServerProxy.AccessDenied", 500),
        ("Server.ServerProxy.AccessDenied", 403, "Server.ServerProxy.AccessDenied", 500),  # Server.* is 500
        ("Client.BadRequest", 413, "Client.BadRequest", 413),
        ("Client.BadRequest", 502, "Client.BadRequest", 400),  # a client fault is 4xx
        ("", 500, "Server.ServerProxy.InternalError", 500),  # an empty X-Road-Error
    ],
)
def test_remote_fault_relays_type_and_status(
    remote_type: str, remote_status: int, xroad_type: str, status: int,
) -> None:
    from gateway.proxy.client_proxy import RemoteFault

    err = RemoteFault("refused", remote_type=remote_type, remote_status=remote_status).at_side(CLIENT_PROXY)
    assert (err.xroad_type, err.http_status) == (xroad_type, status)


def test_relayed_fault_carries_what_came_off_the_wire() -> None:
    err = errors.RelayedFault("refused", remote_type="Client.Odd", remote_status=418)
    assert (err.xroad_type, err.http_status, err.message) == ("Client.Odd", 418, "refused")
    assert err.at_side(SERVER_PROXY).xroad_type == "Client.Odd"  # a relayed type is never re-sided
