"""The witness endpoint on the server-to-server port: ``POST /witness/add-checkpoint`` (I/O shell).

docs/witness.md section 1. :class:`WitnessEndpoint` reads the request (the TLS client's certificate, one header,
the bounded body), asks :func:`gateway.witness.service.decide`, persists the new state atomically
(:class:`gateway.witness.state.WitnessStore`) and only then answers with the cosignature. It knows nothing of
the HTTP layer beyond the few attributes of :class:`WitnessRequest` (the server proxy's lean
``gateway.proxy.http.Request`` has them) and answers a :class:`WitnessAnswer` that the proxy writes.

Per request, in order:

1. the path is ``/witness/add-checkpoint`` (else 404) and the method ``POST`` (else 405 with ``Allow``);
2. the TLS client is a registered security server (its authentication certificate, as for an exchange; else
   403);
3. the body, at most ``max_request_bytes`` (else 413), parses (else 400);
4. read the origin's state, decide; a refusal with evidence keeps the evidence, then answers;
5. a cosignature: compare and set the state; if another request changed it meanwhile, go back to 4 (the
   decision is then made against the new state); committed, answer 200.

A database that fails answers 500 and nothing is cosigned.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from gateway.errors import GatewayError, PayloadTooLarge, TrustError
from gateway.globalconf.model import GlobalConf
from gateway.identifiers import SecurityServerId
from gateway.witness import service
from gateway.witness.service import ADD_CHECKPOINT, CERT_HEADER, Cosigned, Refused, WitnessSigner
from gateway.witness.state import WitnessStore

log = structlog.get_logger("gateway.witness")

MAX_ATTEMPTS = 8  # decisions per request while concurrent requests for the origin keep changing its state

_TEXT = "text/plain; charset=utf-8"


class BodyHold(Protocol):
    def take(self, size: int, what: str) -> None: ...


class WitnessRequest(Protocol):
    """What the endpoint reads of a request (``gateway.proxy.http.Request`` has it)."""

    method: str
    raw_path: str
    peer_cert: bytes | None

    def header(self, name: str) -> str | None: ...

    async def body(self, *, hold: BodyHold | None = None, what: str = "request body") -> bytes: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessAnswer:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


class WitnessObserver(Protocol):
    """Where answers are counted (``gateway.ops.metrics.ServerMetrics.witness_answered``)."""

    def witness_answered(self, status: int) -> None: ...


class _Cap:
    """A body hold that refuses more than ``limit`` bytes (413)."""

    __slots__ = ("_limit", "_taken")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._taken = 0

    def take(self, size: int, what: str) -> None:
        self._taken += size
        if self._taken > self._limit:
            raise PayloadTooLarge(f"{what} is larger than the witness's maximum of {self._limit} bytes")


@dataclass(slots=True, kw_only=True)
class WitnessEndpoint:
    """The witness of one security server (module docstring)."""

    store: WitnessStore
    signer: WitnessSigner
    conf: Callable[[], GlobalConf]  # the current, valid global configuration (raises when there is none)
    check_peer: Callable[[bytes | None], Awaitable[SecurityServerId]]  # the TLS client's server, or raises
    clock: Callable[[], datetime]
    max_request_bytes: int = service.MAX_REQUEST_BYTES
    observer: WitnessObserver | None = None

    async def handle(self, request: WitnessRequest) -> WitnessAnswer:
        answer = await self._answer(request)
        if self.observer is not None:
            self.observer.witness_answered(answer.status)
        return answer

    async def _answer(self, request: WitnessRequest) -> WitnessAnswer:
        # (1) path and method
        path = request.raw_path.partition("?")[0]
        if path != ADD_CHECKPOINT:
            return _text(404, f"{path[:200]} is not a witness endpoint (POST {ADD_CHECKPOINT})")
        if request.method != "POST":
            return _text(405, f"{ADD_CHECKPOINT} takes POST, not {request.method[:20]}", (("Allow", "POST"),))
        try:
            # (2) the calling security server
            try:
                peer = await self.check_peer(request.peer_cert)
            except TrustError as e:
                return _text(403, e.message)
            # (3) the body
            body = await request.body(hold=_Cap(self.max_request_bytes), what="add-checkpoint body")
            parsed = service.parse_request(body, max_bytes=self.max_request_bytes)
            cert_header = request.header(CERT_HEADER)
            conf = self.conf()
            # (4)-(5) decide against the stored state; persist; again if the state moved meanwhile
            for _ in range(MAX_ATTEMPTS):
                stored = await self.store.get(parsed.origin)
                # off the event loop: a device's signature (PKCS#11) blocks for the device's time
                decision = await asyncio.to_thread(
                    functools.partial(service.decide, parsed, peer=peer, cert_header=cert_header, conf=conf,
                                      signer=self.signer, stored=stored, now=self.clock()))
                if isinstance(decision, Refused):
                    return await self._refuse(decision)
                if await self.store.compare_and_set(stored, decision.state):
                    return self._cosigned(decision, peer)
            return _text(503, f"the state of {parsed.origin[:120]} kept changing while this request was decided; "
                              "try again")
        except GatewayError as e:
            if e.http_status >= 500:
                log.warning("witness request failed", error=e.message)
            return _text(e.http_status, e.message)

    async def _refuse(self, refused: Refused) -> WitnessAnswer:
        if refused.evidence is not None:
            kept = await self.store.add_evidence(refused.evidence)
            log.warning("witness refused a checkpoint that shows a fork or inconsistent history",
                        origin=refused.evidence.origin, peer=refused.evidence.peer, reason=refused.evidence.reason,
                        evidence_id=kept, message=refused.message)
        return WitnessAnswer(status=refused.status, headers=(("Content-Type", refused.content_type),),
                             body=refused.body())

    def _cosigned(self, cosigned: Cosigned, peer: SecurityServerId) -> WitnessAnswer:
        log.info("checkpoint cosigned", origin=cosigned.state.origin, size=cosigned.state.size, peer=str(peer))
        return WitnessAnswer(status=200, headers=(("Content-Type", _TEXT),), body=cosigned.body())


def _text(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> WitnessAnswer:
    return WitnessAnswer(status=status, headers=(("Content-Type", _TEXT), *headers),
                         body=f"{message}\n".encode())


__all__ = ["WitnessAnswer", "WitnessEndpoint", "WitnessRequest"]
