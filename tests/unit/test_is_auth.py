"""X-Road's information-system authentication (gateway.proxy.client_proxy.check_is_auth) as a table.

``check_is_auth`` is pure: the client's setting, whether the connection is TLS and the certificate the
information system presented (DER or ``None``) in; nothing out, or ``ClientAuthenticationFailed``.
"""

from __future__ import annotations

import hashlib

import pytest
from faultside import CLIENT_PROXY, detected_at

from gateway.errors import ClientAuthenticationFailed, RequestError
from gateway.identifiers import parse_client
from gateway.proxy.client_proxy import check_is_auth
from gateway.serverconf import ClientInfo, IsAuth

CLIENT = parse_client("DEV/GOV/1001/consumer")
REGISTERED = b"0\x03\x02\x01\x01 (the DER of a registered certificate; only its SHA-256 is compared)"
OTHER = b"0\x03\x02\x01\x02 (another certificate)"


def _client(is_auth: IsAuth) -> ClientInfo:
    fingerprints = frozenset({hashlib.sha256(REGISTERED).hexdigest()})
    return ClientInfo(id=CLIENT, is_auth=is_auth, is_cert_fingerprints=fingerprints)


CASES: list[tuple[IsAuth, bool, bytes | None, str | None]] = [
    # setting, TLS, client certificate, refusal
    ("none", False, None, None),
    ("none", True, OTHER, None),
    ("https", False, None, f"client {CLIENT.typed()} must connect over HTTPS"),
    ("https", True, None, None),
    ("https", True, OTHER, None),  # any certificate, or none: only TLS is required
    ("https-cert", False, None, f"client {CLIENT.typed()} must connect over HTTPS"),
    ("https-cert", False, REGISTERED, f"client {CLIENT.typed()} must connect over HTTPS"),
    ("https-cert", True, None, f"client {CLIENT.typed()} must present its registered TLS certificate"),
    ("https-cert", True, OTHER, f"the TLS certificate presented is not registered for client {CLIENT.typed()}"),
    ("https-cert", True, REGISTERED, None),
]


@pytest.mark.parametrize(("is_auth", "tls", "cert", "refusal"), CASES)
def test_check_is_auth(is_auth: IsAuth, tls: bool, cert: bytes | None, refusal: str | None) -> None:
    client = _client(is_auth)
    if refusal is None:
        check_is_auth(client, tls=tls, peer_cert_der=cert)
        return
    with pytest.raises(ClientAuthenticationFailed) as info, detected_at(CLIENT_PROXY):
        check_is_auth(client, tls=tls, peer_cert_der=cert)
    err = info.value
    assert err.message == refusal
    assert isinstance(err, RequestError)  # the information system's fault ...
    assert (err.xroad_type, err.http_status) == ("Server.ClientProxy.SslAuthenticationFailed", 500)  # ... as X-Road
