"""Log origins: which writer process of which security server a log belongs to (pure).

docs/messagelog.md section 5, "Origins". Every process that writes a server's message log is a log origin of
its own, with its own sequence numbers, Merkle tree and checkpoints. Its name comes from three things that
stay the same when the process restarts: the server's identifier (``[server] id``), the node it runs on
(``[server] node``, empty for a server on one machine) and the worker's index on that node (0 to
``[server] workers`` - 1, given by the supervisor):

==============  ========  ===============================  ========================================
node            worker    origin                           example
==============  ========  ===============================  ========================================
``""``          0         ``<server id>``                  ``DEV/GOV/1001/ss1``
``""``          k >= 1    ``<server id>/<k>``              ``DEV/GOV/1001/ss1/1``
``n``           0         ``<server id>/<n>``              ``DEV/GOV/1001/ss1/node2``
``n``           k >= 1    ``<server id>/<n>/<k>``          ``DEV/GOV/1001/ss1/node2/1``
==============  ========  ===============================  ========================================

A node name starts with a lower-case letter (:data:`NODE_RE`) and a worker suffix is all digits without a
leading zero, so every origin parses back to exactly one (server, node, worker): the map is injective and two
writers never share an origin unless they share all three. Worker 0 of the default node keeps the server's
own identifier, so a server that goes from one worker to several, or from one node to several, continues
its existing log there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import ConfigError, IdentifierError, TrustError
from gateway.identifiers import SecurityServerId

NODE_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")  # a node name: a letter, then letters, digits, '-'; 32 at most
MAX_WORKERS = 64  # processes per node; each is a log origin with its own checkpointer
MAX_ORIGIN_LENGTH = 255  # characters (docs/messagelog.md section 1)
_WORKER_RE = re.compile(r"[1-9][0-9]{0,2}")


@dataclass(frozen=True, slots=True, kw_only=True)
class OriginName:
    """The parts of a log origin (module docstring)."""

    server: SecurityServerId
    node: str = ""
    worker: int = 0

    def __str__(self) -> str:
        return log_origin(self.server, node=self.node, worker=self.worker)


def check_node(node: str) -> str:
    """``node`` if it is a valid node name ("" is the default node).

    Raises:
        ConfigError: not a node name (:data:`NODE_RE`).
    """
    if node and not NODE_RE.fullmatch(node):
        raise ConfigError(
            f"[server] node {node[:80]!r} is not a node name: a lower-case letter, then up to 31 lower-case "
            "letters, digits or '-'", hint="for example node = \"node2\"; leave it empty on a single machine",
        )
    return node


def log_origin(server: SecurityServerId, *, node: str = "", worker: int = 0) -> str:
    """The log origin of ``worker`` on ``node`` of ``server`` (module docstring).

    Raises:
        ConfigError: a bad node name, a worker index outside 0 to MAX_WORKERS - 1, or an origin longer than
            MAX_ORIGIN_LENGTH characters.
    """
    check_node(node)
    if not 0 <= worker < MAX_WORKERS:
        raise ConfigError(f"worker index {worker} is outside 0..{MAX_WORKERS - 1}")
    parts = [str(server)]
    if node:
        parts.append(node)
    if worker:
        parts.append(str(worker))
    origin = "/".join(parts)
    if len(origin) > MAX_ORIGIN_LENGTH:
        raise ConfigError(f"log origin {origin[:80]!r}... is longer than {MAX_ORIGIN_LENGTH} characters",
                          hint="choose a shorter [server] node")
    return origin


def parse_origin(origin: str) -> OriginName:
    """The (server, node, worker) that ``origin`` names; the inverse of :func:`log_origin`.

    Raises:
        TrustError: ``origin`` does not follow the naming scheme (module docstring).
    """
    if not origin or len(origin) > MAX_ORIGIN_LENGTH:
        raise TrustError(f"log origin {origin[:80]!r} must be 1 to {MAX_ORIGIN_LENGTH} characters")
    parts = origin.split("/")
    try:
        server = SecurityServerId.parse("/".join(parts[:4]), encoded=False)
    except IdentifierError as e:  # a RequestError; here it is a property of a signed log
        raise TrustError(f"log origin {origin[:80]!r} does not begin with a security server: {e.message}") from e
    rest = parts[4:]
    node, worker = "", 0
    if rest and NODE_RE.fullmatch(rest[0]):
        node = rest.pop(0)
    if rest and _WORKER_RE.fullmatch(rest[0]) and int(rest[0]) < MAX_WORKERS:
        worker = int(rest.pop(0))
    if rest:
        raise TrustError(
            f"log origin {origin[:80]!r}: {'/'.join(rest)[:40]!r} is neither a node name nor a worker index "
            f"(1..{MAX_WORKERS - 1}) after the server identifier")
    return OriginName(server=server, node=node, worker=worker)


def server_of(origin: str) -> str:
    """The security server (``INSTANCE/CLASS/MEMBER/SERVERCODE``) whose log ``origin`` is.

    Raises:
        TrustError: as :func:`parse_origin`.
    """
    return str(parse_origin(origin).server)


def is_origin_of(origin: str, server: SecurityServerId | str) -> bool:
    """Whether ``origin`` is one of ``server``'s log origins (never raises)."""
    try:
        return server_of(origin) == str(server)
    except TrustError:
        return False


__all__ = [
    "MAX_ORIGIN_LENGTH",
    "MAX_WORKERS",
    "NODE_RE",
    "OriginName",
    "check_node",
    "is_origin_of",
    "log_origin",
    "parse_origin",
    "server_of",
]
