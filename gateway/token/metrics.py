"""Certificate expiry as Prometheus gauges, in seconds (I/O: process metrics).

``gateway_certificate_expires_in_seconds{server, usage, sha256, identity, state}`` (negative: expired) and
``gateway_certificates_expiring{server}`` (active certificates within ``cert_expiry_warning_days``), in the
server's own registry (:class:`gateway.ops.metrics.ServerMetrics`), served on its ops port.
:class:`ExpiryGauge` keeps each certificate's ``notAfter``: :meth:`ExpiryGauge.update` replaces the set (at
start-up, after every key change, hourly), :meth:`ExpiryGauge.refresh` sets the seconds left as of ``now``
(before every scrape).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from gateway.ops.metrics import ServerMetrics
from gateway.token.model import CertReport


class ExpiryGauge:
    """The expiry gauges of one security server."""

    def __init__(self, metrics: ServerMetrics, server: str) -> None:
        self._metrics = metrics
        self._server = server
        self._not_after: dict[tuple[str, ...], datetime] = {}

    def update(self, reports: Iterable[CertReport], *, now: datetime, warning_days: float) -> None:
        """Replace the series with one per certificate in ``reports``."""
        for labels in self._not_after:
            self._metrics.cert_expiry.remove(*labels)
        self._not_after = {}
        expiring = 0
        for r in reports:
            if r.sha256 is None or r.not_after is None or r.identity is None or r.state is None:
                continue
            self._not_after[(self._server, r.usage, r.sha256, r.identity, r.state)] = r.not_after
            if r.state == "active" and (r.not_after - now).total_seconds() <= warning_days * 86400:
                expiring += 1
        self._metrics.cert_expiring.labels(self._server).set(expiring)
        self.refresh(now)

    def refresh(self, now: datetime) -> None:
        for labels, not_after in self._not_after.items():
            self._metrics.cert_expiry.labels(*labels).set(round((not_after - now).total_seconds()))


def update_expiry_gauge(gauge: ExpiryGauge, reports: Iterable[CertReport], *, now: datetime,
                        warning_days: float) -> None:
    """:meth:`ExpiryGauge.update` (the runtime's seam: a test replaces it)."""
    gauge.update(reports, now=now, warning_days=warning_days)
