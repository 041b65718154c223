"""A listening TCP socket bound before its server starts (so that port 0 gives a known free port at once)."""

from __future__ import annotations

import socket

from gateway.errors import ConfigError


def listen(host: str, port: int, *, what: str) -> socket.socket:
    """A non-blocking socket listening on ``host:port`` (0: a free port), for ``what`` (named in the error).

    Raises:
        ConfigError: the address cannot be bound.
    """
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
    except OSError as e:
        raise ConfigError(f"{what} cannot listen on {host}:{port}: {e.strerror or e}") from e
    return sock


__all__ = ["listen"]
