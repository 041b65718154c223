"""OCSP responses for our own and our peers' certificates, fetched from the CAs' responders and cached (I/O).

A response is re-fetched when it is older than ``refresh_seconds`` (so that a revocation is seen within that
time), and kept while the responder is down for as long as it stays fresh (the global configuration's
``ocsp_freshness_seconds``). Every response is checked by :func:`gateway.trust.ocsp.check_response` before use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp
from cryptography import x509

from gateway.errors import IncorrectValidationInfo, PeerError, TrustError
from gateway.globalconf.model import CertificateAuthority
from gateway.trust import ocsp
from gateway.trust.keys import cert_sha256_hex
from gateway.trust.ocsp_fetch import fetch_ocsp


@dataclass(frozen=True, slots=True)
class _Entry:
    status: ocsp.OcspStatus
    fetched_at: datetime


class OcspCache:
    """Fetch-and-check OCSP responses, one in flight per certificate."""

    def __init__(
        self, session: aiohttp.ClientSession, *, clock: Callable[[], datetime], refresh_seconds: float = 300.0,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._session = session
        self._clock = clock
        self.refresh = timedelta(seconds=refresh_seconds)
        self._timeout = timeout_seconds
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _usable(self, entry: _Entry | None, now: datetime, max_age: timedelta) -> bool:
        return entry is not None and now - entry.status.this_update <= max_age and (
            entry.status.next_update is None or entry.status.next_update >= now
        )

    async def status(
        self, cert: x509.Certificate, ca: CertificateAuthority, *, max_age_seconds: int,
    ) -> ocsp.OcspStatus:
        """A checked OCSP status for ``cert`` (good, revoked or unknown: the caller decides).

        Raises:
            IncorrectValidationInfo: if no fresh, valid response can be had
                (responder down and nothing fresh cached, or a bad response).
        """
        fp = cert_sha256_hex(cert)
        max_age = timedelta(seconds=max_age_seconds)
        now = self._clock()
        entry = self._entries.get(fp)
        if entry is not None and now - entry.fetched_at < self.refresh and self._usable(entry, now, max_age):
            return entry.status
        lock = self._locks.setdefault(fp, asyncio.Lock())
        async with lock:
            now = self._clock()
            entry = self._entries.get(fp)
            if entry is not None and now - entry.fetched_at < self.refresh and self._usable(entry, now, max_age):
                return entry.status
            try:
                status = await self._fetch(cert, ca, now=now, max_age_seconds=max_age_seconds)
            except (PeerError, TrustError) as e:
                if entry is not None and self._usable(entry, now, max_age):
                    return entry.status  # the responder is down; what we have is still fresh
                raise IncorrectValidationInfo(
                    f"no fresh OCSP response for {cert.subject.rfc4514_string()}: {e.message}",
                ) from e
            self._entries[fp] = _Entry(status=status, fetched_at=now)
            return status

    async def _fetch(
        self, cert: x509.Certificate, ca: CertificateAuthority, *, now: datetime, max_age_seconds: int,
    ) -> ocsp.OcspStatus:
        if not ca.ocsp_urls:
            raise PeerError(f"the global configuration names no OCSP responder for CA {ca.name}")
        request = ocsp.build_request(cert, ca.certificate)
        errors = []
        for url in ca.ocsp_urls:
            try:
                der = await fetch_ocsp(self._session, url, request, timeout_seconds=self._timeout)
                return ocsp.check_response(
                    der, cert=cert, issuer=ca.certificate, now=now, max_age_seconds=max_age_seconds,
                )
            except (PeerError, TrustError) as e:
                errors.append(f"{url}: {e.message}")
        raise PeerError("; ".join(errors))

    def forget(self, cert: x509.Certificate) -> None:
        """Drop a cached response (used after a certificate is replaced)."""
        self._entries.pop(cert_sha256_hex(cert), None)
