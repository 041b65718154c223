"""OCSP responses for our own and our peers' certificates, fetched from the CAs' responders and cached (I/O).

Rules (issue 11: a responder that hangs must never hold an exchange):

1. A cached response that is still fresh (younger than the global configuration's ``ocsp_freshness_seconds``
   and not past its ``nextUpdate``) is answered at once, always.
2. Once it is older than ``refresh_seconds``, a refresh starts **in the background** (one per certificate at
   a time, bounded by ``timeout_seconds``); the request that noticed does not wait for it.
3. A refresh that fails (the responder hangs, refuses, or answers something :func:`gateway.trust.ocsp.check_response`
   rejects) is retried after a back-off that doubles per failure in a row, from ``refresh_seconds / 10`` up to
   ``refresh_seconds``, each delay jittered by ±25 % so that many servers do not retry in step. It is counted
   (``gateway_ocsp_fetch_failures_total{reason}``) and logged once per change of state (working → failing,
   failing for another reason, failing → working), never once per request.
4. Only without a fresh response does a request wait, and then for at most one fetch (``timeout_seconds``),
   shared with every other request for the same certificate; during a back-off it does not wait at all. It
   then fails with :class:`~gateway.errors.IncorrectValidationInfo` naming the certificate and the last error.

Every response is checked by :func:`gateway.trust.ocsp.check_response` before it is cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

import aiohttp
import structlog
from cryptography import x509

from gateway.errors import IncorrectValidationInfo, PeerError, TrustError
from gateway.globalconf.model import CertificateAuthority
from gateway.trust import ocsp
from gateway.trust.keys import cert_sha256_hex
from gateway.trust.ocsp_fetch import fetch_ocsp

log = structlog.get_logger("gateway.proxy.ocsp")

Reason = Literal["timeout", "unreachable", "bad_response"]
JITTER = 0.25  # ± fraction of each back-off delay


class OcspObserver(Protocol):
    """Where fetch outcomes are counted (:class:`gateway.ops.metrics.ServerMetrics` fits)."""

    def ocsp_fetched(self) -> None: ...

    def ocsp_failed(self, reason: Reason) -> None: ...


@dataclass(frozen=True, slots=True)
class _Entry:
    status: ocsp.OcspStatus
    fetched_at: datetime


@dataclass(slots=True)
class _State:
    """What the cache knows about fetching one certificate's status."""

    cert: x509.Certificate
    ca: CertificateAuthority
    max_age_seconds: int  # the freshness limit the last caller asked for
    failures: int = 0  # failed fetches in a row
    retry_at: datetime | None = None  # no fetch before this (back-off)
    last_error: str = ""
    reported: str = "ok"  # the state last logged: "ok" or the failing reason
    task: asyncio.Task[None] | None = None


class OcspFetchError(PeerError):
    """A fetch failed; ``reason`` says how (rule 3)."""

    def __init__(self, message: str, *, reason: Reason) -> None:
        super().__init__(message)
        self.reason: Reason = reason


class OcspCache:
    """Fetch-and-check OCSP responses (module docstring): ``await status(...)``, ``peek(...)``, ``close()``."""

    def __init__(
        self, session: aiohttp.ClientSession, *, clock: Callable[[], datetime], refresh_seconds: float = 300.0,
        timeout_seconds: float = 10.0, observer: OcspObserver | None = None,
    ) -> None:
        if refresh_seconds <= 0 or timeout_seconds <= 0:
            raise ValueError("the OCSP refresh interval and timeout must be positive")
        self._session = session
        self._clock = clock
        self.refresh = timedelta(seconds=refresh_seconds)
        self._timeout = timeout_seconds
        self._observer = observer
        self._entries: dict[str, _Entry] = {}
        self._states: dict[str, _State] = {}
        self._closed = False

    @staticmethod
    def _usable(entry: _Entry | None, now: datetime, max_age: timedelta) -> bool:
        return entry is not None and now - entry.status.this_update <= max_age and (
            entry.status.next_update is None or entry.status.next_update >= now
        )

    async def status(
        self, cert: x509.Certificate, ca: CertificateAuthority, *, max_age_seconds: int,
    ) -> ocsp.OcspStatus:
        """A checked OCSP status for ``cert`` (good, revoked or unknown: the caller decides).

        Raises:
            IncorrectValidationInfo: no fresh, valid response can be had (the responder hangs, refuses or
                answers badly, and nothing fresh is cached); the message names the last error.
        """
        fp = cert_sha256_hex(cert)
        max_age = timedelta(seconds=max_age_seconds)
        now = self._clock()
        entry = self._entries.get(fp)
        state = self._states.get(fp)
        if state is None:
            state = self._states[fp] = _State(cert=cert, ca=ca, max_age_seconds=max_age_seconds)
        state.ca, state.max_age_seconds = ca, max_age_seconds
        # (1) fresh: answered at once; (2) a refresh in the background once it is due
        if self._usable(entry, now, max_age):
            assert entry is not None
            if now - entry.fetched_at >= self.refresh:
                self._start_fetch(fp, state, ca, now=now, max_age_seconds=max_age_seconds)
            return entry.status
        # (4) nothing fresh: wait for one fetch at most (none during a back-off)
        task = self._start_fetch(fp, state, ca, now=now, max_age_seconds=max_age_seconds)
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout=self._timeout + 1.0)
        now = self._clock()
        entry = self._entries.get(fp)
        if self._usable(entry, now, max_age):
            assert entry is not None
            return entry.status
        why = state.last_error or "no response fetched yet"
        if state.retry_at is not None and state.retry_at > now:
            why += f" (next attempt in {(state.retry_at - now).total_seconds():.0f} s)"
        raise IncorrectValidationInfo(f"no fresh OCSP response for {cert.subject.rfc4514_string()}: {why}")

    def peek(self, cert: x509.Certificate) -> ocsp.OcspStatus | None:
        """The cached status of ``cert`` (fresh or not), without fetching; None if there is none."""
        entry = self._entries.get(cert_sha256_hex(cert))
        return None if entry is None else entry.status

    def cached(self) -> list[tuple[x509.Certificate, ocsp.OcspStatus]]:
        """Every certificate with a cached response, and that response (for the age metric)."""
        return [(self._states[fp].cert, e.status) for fp, e in self._entries.items() if fp in self._states]

    async def refresh_due(self, *, wait: bool = False) -> None:
        """Start the background refresh of every cached certificate whose response is due (the server's
        periodic task calls this, so that responses stay fresh without traffic); ``wait``: until they end."""
        now = self._clock()
        tasks = []
        for fp, state in self._states.items():
            entry = self._entries.get(fp)
            if entry is None or now - entry.fetched_at >= self.refresh:
                task = self._start_fetch(fp, state, state.ca, now=now, max_age_seconds=state.max_age_seconds)
                if task is not None:
                    tasks.append(task)
        if wait and tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _start_fetch(
        self, fp: str, state: _State, ca: CertificateAuthority, *, now: datetime, max_age_seconds: int,
    ) -> asyncio.Task[None] | None:
        """The fetch in flight for ``fp``, or a new one unless the back-off says wait (rule 3) or we are closed."""
        if state.task is not None and not state.task.done():
            return state.task
        if self._closed or (state.retry_at is not None and now < state.retry_at):
            return None
        # a context of its own: the request that started it must not lend the fetch its log fields
        state.task = asyncio.get_running_loop().create_task(
            self._fetch_into(fp, state, ca, max_age_seconds=max_age_seconds), name=f"ocsp-fetch-{fp[:12]}",
            context=contextvars.Context())
        return state.task

    async def _fetch_into(self, fp: str, state: _State, ca: CertificateAuthority, *, max_age_seconds: int) -> None:
        try:
            status = await self._fetch(state.cert, ca, now=self._clock(), max_age_seconds=max_age_seconds)
        except OcspFetchError as e:
            self._failed(state, e)
            return
        self._entries[fp] = _Entry(status=status, fetched_at=self._clock())
        state.failures, state.retry_at, state.last_error = 0, None, ""
        if self._observer is not None:
            self._observer.ocsp_fetched()
        if state.reported != "ok":
            log.info("OCSP responder answers again", subject=state.cert.subject.rfc4514_string(),
                     sha256=fp[:16], status=status.status)
            state.reported = "ok"

    def _failed(self, state: _State, e: OcspFetchError) -> None:
        state.failures += 1
        base = self.refresh.total_seconds()
        delay = min(base, base / 10 * 2 ** (state.failures - 1)) * random.uniform(1 - JITTER, 1 + JITTER)
        state.retry_at = self._clock() + timedelta(seconds=delay)
        state.last_error = e.message
        if self._observer is not None:
            self._observer.ocsp_failed(e.reason)
        if state.reported != e.reason:
            log.warning("OCSP refresh failing; cached responses are used while they stay fresh",
                        subject=state.cert.subject.rfc4514_string(), sha256=cert_sha256_hex(state.cert)[:16],
                        reason=e.reason, error=e.message, retry_in_seconds=round(delay, 1))
            state.reported = e.reason

    async def _fetch(
        self, cert: x509.Certificate, ca: CertificateAuthority, *, now: datetime, max_age_seconds: int,
    ) -> ocsp.OcspStatus:
        """Ask each responder of ``ca`` in turn; the first checked answer.

        Raises:
            OcspFetchError: none answered with a valid response (the reason of the last attempt).
        """
        if not ca.ocsp_urls:
            raise OcspFetchError(f"the global configuration names no OCSP responder for CA {ca.name}",
                                 reason="unreachable")
        request = ocsp.build_request(cert, ca.certificate)
        errors = []
        reason: Reason = "unreachable"
        for url in ca.ocsp_urls:
            try:
                async with asyncio.timeout(self._timeout):
                    der = await fetch_ocsp(self._session, url, request, timeout_seconds=self._timeout)
                return ocsp.check_response(
                    der, cert=cert, issuer=ca.certificate, now=now, max_age_seconds=max_age_seconds,
                )
            except TimeoutError:
                reason = "timeout"
                errors.append(f"{url}: no answer within {self._timeout:g} s")
            except TrustError as e:
                reason = "bad_response"
                errors.append(f"{url}: {e.message}")
            except PeerError as e:
                reason = _reason(e)
                errors.append(f"{url}: {e.message}")
        raise OcspFetchError("; ".join(errors), reason=reason)

    def forget(self, cert: x509.Certificate) -> None:
        """Drop a cached response (used after a certificate is replaced)."""
        self._entries.pop(cert_sha256_hex(cert), None)

    async def close(self) -> None:
        """Cancel the fetches in flight (before the HTTP session closes); no new ones start."""
        self._closed = True
        tasks = [s.task for s in self._states.values() if s.task is not None and not s.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _reason(e: PeerError) -> Reason:
    """How :func:`fetch_ocsp` failed: its timeout, no connection, or an answer that is not an OCSP response."""
    if isinstance(e.__cause__, TimeoutError):
        return "timeout"
    if e.__cause__ is not None:  # aiohttp's connection errors
        return "unreachable"
    return "bad_response"  # an HTTP error status, another Content-Type, too large


__all__ = ["OcspCache", "OcspFetchError", "OcspObserver"]
