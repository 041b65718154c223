"""Prometheus gauge of the days left before each certificate of the token expires (I/O: process metrics).

``gateway_certificate_expiry_days{server, usage, sha256, identity, state}`` in the default ``prometheus_client``
registry, so that whatever serves ``/metrics`` (the admin API) exposes it; :func:`update_expiry_gauge` is
called by the security server at start-up, after every key change and once a day.
``gateway_certificate_expiring{server}`` counts the active certificates within ``cert_expiry_warning_days``.
Several security servers in one process (the demo, tests) each keep their own series.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Gauge

from gateway.token.model import CertReport

EXPIRY_DAYS = Gauge(
    "gateway_certificate_expiry_days",
    "Days until the certificate expires (negative: expired)",
    ["server", "usage", "sha256", "identity", "state"],
)
EXPIRING = Gauge(
    "gateway_certificate_expiring",
    "Active certificates that expire within the warning period ([server] cert_expiry_warning_days)",
    ["server"],
)
_series: dict[str, set[tuple[str, ...]]] = {}  # server -> label values it has set


def update_expiry_gauge(server: str, reports: Iterable[CertReport], *, warning_days: float) -> None:
    """Replace ``server``'s series with one per certificate in ``reports``."""
    for labels in _series.pop(server, set()):
        EXPIRY_DAYS.remove(*labels)
    current: set[tuple[str, ...]] = set()
    expiring = 0
    for r in reports:
        if r.sha256 is None or r.days_left is None or r.identity is None or r.state is None:
            continue
        labels = (server, r.usage, r.sha256, r.identity, r.state)
        EXPIRY_DAYS.labels(*labels).set(round(r.days_left, 3))
        current.add(labels)
        if r.state == "active" and r.days_left <= warning_days:
            expiring += 1
    _series[server] = current
    EXPIRING.labels(server).set(expiring)
