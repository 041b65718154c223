"""The proxy boundary for tests: apply a side to faults raised inside, as the proxy's middleware does.

Security-core functions raise ``Server.*`` faults without a side (``Server.MissingSignature``); the proxy that
detects one names itself when it answers (:meth:`gateway.errors.GatewayError.at_side`). A unit test that
checks the type a client sees calls the function inside ``detected_at(SERVER_PROXY)``::

    with pytest.raises(TrustError) as info, detected_at(SERVER_PROXY):
        signatures.verify_request(...)
    assert info.value.xroad_type == "Server.ServerProxy.MissingSignature"
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gateway.errors import CLIENT_PROXY, SERVER_PROXY, GatewayError, Side

__all__ = ["CLIENT_PROXY", "SERVER_PROXY", "detected_at"]


@contextmanager
def detected_at(side: Side) -> Iterator[None]:
    """Name ``side`` on a :class:`GatewayError` raised inside (the first side named wins), and re-raise it."""
    try:
        yield
    except GatewayError as e:
        e.at_side(side)
        raise
