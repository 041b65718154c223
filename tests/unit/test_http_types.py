"""The HTTP layer's value types and limits (gateway.proxy.http.types): no sockets."""

from __future__ import annotations

import pytest

from gateway.proxy.http import (
    FRAMING_HEADERS,
    ClientLimits,
    ClientResponse,
    ConnectFailed,
    ResponseTimeout,
    ServerLimits,
)


def test_client_response_header_is_case_insensitive_and_first_wins() -> None:
    resp = ClientResponse(status=200, reason="OK", http_version="1.1",
                          raw_headers=[(b"X-Road-Id", b"1"), (b"x-road-id", b"2"), (b"Date", b"d")])
    assert resp.header("x-ROAD-id") == "1" and resp.header("missing") is None


def test_framing_is_the_layers_and_connect_failures_say_nothing_was_sent() -> None:
    assert {"content-length", "transfer-encoding", "connection", "keep-alive"} == FRAMING_HEADERS
    assert ConnectFailed("x").sent is False and ResponseTimeout("y").sent is True
    assert isinstance(ResponseTimeout("y"), TimeoutError)


@pytest.mark.parametrize(("cls", "field", "value"), [
    (ServerLimits, "max_target_bytes", 0), (ServerLimits, "max_header_bytes", -1), (ServerLimits, "body_timeout", 0),
    (ServerLimits, "write_buffer_high", 0), (ClientLimits, "max_headers", 0), (ClientLimits, "read_timeout", -1.0),
    (ClientLimits, "max_header_bytes", 0),
])
def test_limits_name_the_field_they_refuse(cls: type, field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})


def test_default_limits_match_the_proxies_today() -> None:
    assert ServerLimits().max_body_bytes == ClientLimits().max_body_bytes == 10 * 2**20
    assert ServerLimits().max_target_bytes == 8190 and ServerLimits().max_headers == 128
    assert ClientLimits().max_connections == 100 and ClientLimits().idle_timeout == 60.0
