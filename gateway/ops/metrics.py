"""The Prometheus metrics of a security server and of the central server (I/O: process metrics).

Every metric is in base units as Prometheus names them (seconds, bytes; counters end in ``_total``). Each
server object owns a :class:`ServerMetrics` with a registry of its own, so that several servers in one process
(the demo, tests) each serve only their own series on their ops port.

**Several workers** (``[server] workers = N``): prometheus-client's multiprocess mode. The supervisor gives
every worker the same ``PROMETHEUS_MULTIPROC_DIR`` (:func:`prepare_multiprocess_dir`: a 0700 directory of the
node, emptied at start); each worker writes its counters, histograms and gauges to memory-mapped files there,
and whichever worker answers a scrape of the shared ops port reads them all (:func:`render`). Counters and
histograms add up across workers; a gauge says how its workers' values combine (``multiprocess_mode``): the
queue depth is summed over live workers, per-origin and per-certificate gauges take the most recent value of a
live worker. The supervisor removes an exited worker's live gauges (:func:`mark_worker_dead`). Why this rather
than a ``worker`` label: the ops port is shared with ``SO_REUSEPORT`` like the data ports, so a scrape reaches
any one worker, and it must see the node's totals, not that worker's share.

Gauges that are ages or time left (configuration age, grace left, OCSP age, certificate expiry) are set by
the server's refresh (:meth:`gateway.server.runtime.SecurityServer.refresh_metrics`) before every scrape it
answers and every :data:`REFRESH_SECONDS` in every worker.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _mp

REFRESH_SECONDS = 5.0  # seconds between refreshes of the time-derived gauges in every worker
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# seconds: from a sub-millisecond local exchange to a peer's or service's timeout
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# bytes: empty bodies up to the 10 MiB loggable maximum
SIZE_BUCKETS = (0.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 10485760.0)
# records per group commit, up to the default messagelog_batch_size (256)
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)

Outcome = str  # "ok", "client_error" (a Client.* fault), "server_error" (a Server.* fault)


class ServerMetrics:
    """The metrics of one security server (module docstring); ``registry`` is what its ops port serves."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        side = ["side"]  # "client" (the client-facing proxy) or "server" (the server-to-server proxy)
        self.exchanges = Counter(
            "gateway_exchanges", "Exchanges answered, by side, client, service and outcome "
            "(ok: the exchange went through, whatever the service's status; client_error/server_error: refused "
            "with a Client.* or Server.* fault)", [*side, "client", "service", "outcome"], registry=r)
        self.errors = Counter("gateway_exchange_errors", "Exchanges refused, by side and X-Road fault type",
                              [*side, "type"], registry=r)
        self.duration = Histogram("gateway_exchange_duration_seconds", "Whole exchange, from the request's "
                                  "arrival to the answer", [*side, "service"], buckets=LATENCY_BUCKETS, registry=r)
        self.peer_wait = Histogram("gateway_peer_wait_seconds", "Client side: time waiting on the provider's "
                                   "security server (send to whole response)", buckets=LATENCY_BUCKETS, registry=r)
        self.service_wait = Histogram("gateway_service_wait_seconds", "Server side: time waiting on the service",
                                      ["service"], buckets=LATENCY_BUCKETS, registry=r)
        self.log_wait = Histogram("gateway_messagelog_wait_seconds", "Time a message-log record waits from queueing "
                                  "to durable commit", side, buckets=LATENCY_BUCKETS, registry=r)
        self.request_bytes = Histogram("gateway_exchange_request_bytes", "Request body size", side,
                                       buckets=SIZE_BUCKETS, registry=r)
        self.response_bytes = Histogram("gateway_exchange_response_bytes", "Response body size", side,
                                        buckets=SIZE_BUCKETS, registry=r)
        self.log_queue = Gauge("gateway_messagelog_queue_records", "Message-log records queued, not yet committed",
                               registry=r, multiprocess_mode="livesum")
        self.log_batch = Histogram("gateway_messagelog_batch_records", "Records per group commit",
                                   buckets=BATCH_BUCKETS, registry=r)
        self.log_commit = Histogram("gateway_messagelog_commit_seconds", "Duration of one group commit",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.log_failures = Counter("gateway_messagelog_commit_failures", "Group commits that failed (their "
                                    "exchanges failed closed)", registry=r)
        self.uncheckpointed = Gauge("gateway_messagelog_uncheckpointed_records", "Records of the log origin that no "
                                    "checkpoint covers yet", ["origin"], registry=r, multiprocess_mode="livemostrecent")
        self.untimestamped = Gauge("gateway_messagelog_untimestamped_records", "Records of the log origin that no "
                                   "timestamped checkpoint covers yet", ["origin"], registry=r,
                                   multiprocess_mode="livemostrecent")
        self.grace_left = Gauge("gateway_timestamping_grace_remaining_seconds", "Seconds left before exchanges "
                                "stop for want of a timestamp (the whole grace period while everything is "
                                "stamped; negative: past it)", ["origin"], registry=r,
                                multiprocess_mode="livemostrecent")
        self.ocsp_age = Gauge("gateway_ocsp_response_age_seconds", "Age (since thisUpdate) of the cached OCSP "
                              "response, per certificate", ["sha256", "subject"], registry=r,
                              multiprocess_mode="livemostrecent")
        self.ocsp_failures = Counter("gateway_ocsp_fetch_failures", "OCSP fetches that failed, by reason "
                                     "(timeout, unreachable, bad_response)", ["reason"], registry=r)
        for reason in ("timeout", "unreachable", "bad_response"):
            self.ocsp_failures.labels(reason)  # each series exists from the start, at 0
        self.ocsp_fetches = Counter("gateway_ocsp_fetches", "OCSP fetches that gave a checked response",
                                    registry=r)
        self.conf_version = Gauge("gateway_globalconf_version", "Version of the trusted global configuration "
                                  "(0: none)", registry=r, multiprocess_mode="livemax")
        self.conf_age = Gauge("gateway_globalconf_age_seconds", "Seconds since the trusted global configuration "
                              "was issued", registry=r, multiprocess_mode="livemin")
        self.conf_expiry = Gauge("gateway_globalconf_expires_in_seconds", "Seconds until the trusted global "
                                 "configuration expires (negative: expired)", registry=r,
                                 multiprocess_mode="livemax")
        self.cert_expiry = Gauge("gateway_certificate_expires_in_seconds", "Seconds until the certificate expires "
                                 "(negative: expired)", ["server", "usage", "sha256", "identity", "state"],
                                 registry=r, multiprocess_mode="livemostrecent")
        self.cert_expiring = Gauge("gateway_certificates_expiring", "Active certificates that expire within "
                                   "[server] cert_expiry_warning_days", ["server"], registry=r,
                                   multiprocess_mode="livemostrecent")
        self.ready = Gauge("gateway_readiness_check", "1 while the readiness check passes, else 0 (/readyz)",
                           ["check"], registry=r, multiprocess_mode="livemin")
        self.opmon_dropped = Counter("gateway_opmon_records_dropped", "Operational-monitoring records not kept, "
                                     "by reason (queue_full: more waiting than opmon_queue_records; database: "
                                     "the insert of their batch failed)", ["reason"], registry=r)
        for reason in ("queue_full", "database"):
            self.opmon_dropped.labels(reason)  # each series exists from the start, at 0
        # witnessing (docs/witness.md section 4)
        self.witness_lag = Gauge("gateway_witness_lag_seconds", "Seconds since the oldest checkpoint of the log "
                                 "after the newest one cosigned by the witness policy's quorum was made (0: up to "
                                 "date)", ["origin"], registry=r, multiprocess_mode="livemostrecent")
        self.witness_pushes = Counter("gateway_witness_pushes", "Checkpoints pushed to a witness, by witness and "
                                      "outcome (cosigned, conflict, refused, bad_answer, unreachable)",
                                      ["witness", "outcome"], registry=r)
        self.witness_requests = Counter("gateway_witness_requests", "add-checkpoint requests this server's witness "
                                        "answered, by HTTP status (200: cosigned; docs/witness.md section 1)",
                                        ["status"], registry=r)
        # The hot path's label children, looked up once (``labels()`` costs a lock and a validation per call):
        # per (side, client, service, outcome) its counter and duration histogram; per side its size and wait
        # histograms. Bounded as the labels are (gateway.proxy.observe).
        self._exchange_children: dict[tuple[str, str, str, str], tuple[Counter, Histogram]] = {}
        self._side_children = {
            side: (self.request_bytes.labels(side), self.response_bytes.labels(side), self.log_wait.labels(side))
            for side in ("client", "server")
        }

    def exchange_done(
        self, side: str, *, client: str, service: str, seconds: float, fault: str | None,
        request_bytes: int | None, response_bytes: int | None,
    ) -> None:
        """Count one answered exchange; ``fault`` is the X-Road fault type it was refused with, or None."""
        outcome = "ok" if fault is None else "client_error" if fault.startswith("Client.") else "server_error"
        key = (side, client, service, outcome)
        children = self._exchange_children.get(key)
        if children is None:
            children = self._exchange_children[key] = (self.exchanges.labels(*key), self.duration.labels(side, service))
        children[0].inc()
        children[1].observe(seconds)
        if fault is not None:
            self.errors.labels(side, fault).inc()
        req, resp, _ = self._side_children[side]
        if request_bytes is not None:
            req.observe(request_bytes)
        if response_bytes is not None:
            resp.observe(response_bytes)

    def commit_done(self, records: int, seconds: float, *, failed: bool) -> None:
        """One group commit of the message log (its size and duration)."""
        if failed:
            self.log_failures.inc()
            return
        self.log_batch.observe(records)
        self.log_commit.observe(seconds)

    def record_waited(self, side: str, seconds: float) -> None:
        """One message-log record became durable ``seconds`` after it was queued."""
        self._side_children[side][2].observe(seconds)

    def witness_answered(self, status: int) -> None:
        """One add-checkpoint request answered by the witness with ``status``."""
        self.witness_requests.labels(str(status)).inc()

    def opmon_records_dropped(self, reason: str, count: int) -> None:
        self.opmon_dropped.labels(reason).inc(count)

    def witness_pushed(self, witness: str, outcome: str) -> None:
        """One push of a checkpoint to a witness (gateway.witness.pusher)."""
        self.witness_pushes.labels(witness, outcome).inc()

    def ocsp_fetched(self) -> None:
        self.ocsp_fetches.inc()

    def ocsp_failed(self, reason: str) -> None:
        self.ocsp_failures.labels(reason).inc()


class CentralMetrics:
    """The metrics of the central server."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.version = Gauge("gateway_central_globalconf_version", "Version of the last published global "
                             "configuration (0: none yet)", registry=r)
        self.age = Gauge("gateway_central_globalconf_age_seconds", "Seconds since the last published global "
                         "configuration was issued", registry=r)
        self.expiry = Gauge("gateway_central_globalconf_expires_in_seconds", "Seconds until the last published "
                            "global configuration expires", registry=r)
        self.ready = Gauge("gateway_readiness_check", "1 while the readiness check passes, else 0 (/readyz)",
                           ["check"], registry=r)


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry``, or in multiprocess mode of every worker's files."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        merged = CollectorRegistry()
        _mp.MultiProcessCollector(merged, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
    return generate_latest(registry)


def prepare_multiprocess_dir(path: Path) -> Path:
    """Empty (or create) the node's multiprocess directory, owner-only (0700), before any worker starts.

    Raises:
        OSError: it cannot be created or emptied.
    """
    if path.is_symlink():
        path.unlink()
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(mode=0o700, parents=True)
    os.chmod(path, 0o700)  # whatever the umask
    return path


def mark_worker_dead(path: Path, pid: int) -> None:
    """Drop an exited worker's live gauges (its counters and histograms stay: they are totals)."""
    _mp.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


__all__ = [
    "CONTENT_TYPE",
    "MULTIPROC_ENV",
    "REFRESH_SECONDS",
    "CentralMetrics",
    "ServerMetrics",
    "mark_worker_dead",
    "prepare_multiprocess_dir",
    "render",
]
