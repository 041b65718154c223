"""Readiness for systemd: the ``sd_notify(3)`` datagram, without libsystemd (I/O).

A unit with ``Type=notify`` (deploy/systemd/) sets ``NOTIFY_SOCKET`` to a Unix datagram socket; the service
sends ``READY=1`` once it serves (its ports listen) and ``STOPPING=1`` when it begins to stop. The address
is a path, or starts with ``@`` for an abstract socket (Linux). Without ``NOTIFY_SOCKET`` nothing is sent, so
the same commands run unchanged outside systemd. A send that fails is logged and otherwise ignored: systemd
then reports the start as timed out, which says more than a crashed service would.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("gateway.sdnotify")


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``"READY=1"``, ``"STOPPING=1"``, ``"STATUS=..."``: newline-separated assignments) to the
    service manager. True if it was sent, False without ``NOTIFY_SOCKET`` or on failure."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("NOTIFY_SOCKET is neither a path nor an abstract socket; not notifying", address=address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode("utf-8"), address)
    except OSError as e:
        log.warning("sd_notify failed", address=address.replace("\0", "@"), error=str(e))
        return False
    return True
