"""What both proxies of one security server share at run time (I/O holder, built by :mod:`gateway.server.runtime`).

Everything the hot path reads is in memory: the verified global configuration (swapped by the updater), the
serverconf snapshot (swapped on reload), our signing key, cached OCSP responses and the replay cache. No
per-request database read; the only per-request write is the group-committed message log.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import aiohttp
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.errors import CertValidation, GatewayError, PeerError, SslAuthenticationFailed, TrustError
from gateway.globalconf import peertrust
from gateway.globalconf.model import GlobalConf
from gateway.globalconf.updater import GlobalConfUpdater
from gateway.identifiers import ClientId, GlobalGroupId, MemberId, SecurityServerId
from gateway.messagelog.store import MessageLogStore
from gateway.opmon.writer import OpMonWriter
from gateway.ops.metrics import ServerMetrics
from gateway.protocol.replay import ReplayCache
from gateway.protocol.signatures import CertResolver, Signer
from gateway.proxy.common import BodyBudget
from gateway.proxy.ocspcache import OcspCache
from gateway.proxy.peers import PeerPool
from gateway.proxy.services import ServicePools
from gateway.serverconf import ServerConfSnapshot
from gateway.serverconf.access import LocalGroupId
from gateway.transparency.service import TransparencyState
from gateway.trust.keys import cert_sha256_hex
from gateway.witness.http import WitnessEndpoint

log = structlog.get_logger("gateway.proxy")


class TimestampingGate(Protocol):
    """What the proxies ask before an exchange (:class:`gateway.messagelog.checkpointer.Checkpointer`)."""

    def check_timestamping(self, now: datetime) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyLimits:
    max_body_bytes: int = 10 * 2**20  # bytes; X-Road's max loggable body size
    max_clock_skew_seconds: int = 60  # seconds between the servers' clocks that a signature may show
    replay_window_seconds: int = 300  # seconds a request id is remembered; at least twice the skew
    replay_max_entries: int = 1_000_000  # live request ids; beyond this, fail closed
    connect_timeout_seconds: float = 10.0  # seconds to reach a peer security server
    max_uri_bytes: int = 8192  # bytes of path and query
    max_inflight_body_bytes: int = 256 * 2**20  # bytes of bodies held in memory by all exchanges at once (BodyBudget)
    max_client_exchanges: int = 512  # exchanges of one client in progress at once on the client-facing ports


class _Groups:
    """Group membership: global groups from the global configuration, local ones from serverconf."""

    __slots__ = ("_conf", "_local")

    def __init__(self, conf: GlobalConf, snapshot: ServerConfSnapshot) -> None:
        self._conf = conf
        self._local = snapshot.local_groups

    def in_global_group(self, client: ClientId, group: GlobalGroupId) -> bool:
        return self._conf.is_member_of_group(client, group)

    def in_local_group(self, client: ClientId, group: LocalGroupId) -> bool:
        return client in self._local.get(group, ())


class ProxyContext:
    """The shared state of one security server's proxies."""

    def __init__(
        self,
        *,
        server_id: SecurityServerId,
        globalconf: GlobalConfUpdater,
        snapshot: ServerConfSnapshot,
        signer: Signer,
        auth_cert: x509.Certificate,
        messagelog: MessageLogStore,
        ocsp_cache: OcspCache,
        peers: PeerPool,
        services: ServicePools,
        service_session: aiohttp.ClientSession,
        peer_ssl: ssl.SSLContext,
        limits: ProxyLimits,
        clock: Callable[[], datetime],
        origin: str | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.server_id = server_id
        self.origin = str(server_id) if origin is None else origin  # the log origin we write (messagelog.origins)
        self.globalconf = globalconf
        self.snapshot = snapshot
        self.signer = signer
        self.sign_cert_der = signer.cert.public_bytes(serialization.Encoding.DER)
        self.auth_cert = auth_cert
        # What the server lacks before it can exchange (set by runtime while it has no active signing or
        # authentication certificate: signer and auth_cert are then placeholders that sign nothing); the
        # proxies answer every exchange with NotConfigured (HTTP 503) meanwhile. None: configured.
        self.not_configured: str | None = None
        self.messagelog = messagelog
        self.ocsp_cache = ocsp_cache
        self.peers = peers
        self.services = services  # the calls to services (server_proxy)
        self.service_session = service_session  # OpenAPI descriptions (metaservices)
        self.peer_ssl = peer_ssl
        self.limits = limits
        self.clock = clock
        self.metrics = ServerMetrics() if metrics is None else metrics  # gateway.proxy.observe reports here
        self.replay = ReplayCache(limits.replay_window_seconds, limits.replay_max_entries)
        self.bodies = BodyBudget(limits.max_inflight_body_bytes)
        self.client_exchanges: dict[ClientId, int] = {}  # in progress on the client-facing ports, per client
        # keyid + sha256(ocsp) -> (certificate, valid until, configuration version)
        self._signing_certs: dict[tuple[str, bytes, MemberId], tuple[x509.Certificate, datetime, int]] = {}
        self._peer_certs: dict[bytes, tuple[SecurityServerId, datetime, int]] = {}
        self._own_ocsp: tuple[bytes, int, datetime] | None = None
        self.timestamping: TimestampingGate | None = None  # set by runtime: the message log's checkpointer
        self.body_logging = True  # [server] body_logging (set by runtime); False: only digests, for every client
        self.opmon: OpMonWriter | None = None  # [server] opmon_records (set by runtime): records go here
        self.exchange_log = True  # [server] exchange_log (set by runtime): one log line per exchange
        # [server] spool_dir (set by runtime, from spool.spool_directory): where a body over the spool's memory
        # threshold goes while it passes; None: such a body is refused (PayloadTooLarge)
        self.spool_dir: Path | None = None
        # [server] transparency (set by runtime): usage records and the findUsage metaservices
        # (docs/transparency.md); None: transparency headers pass through unrecorded
        self.transparency: TransparencyState | None = None
        # [witness] enabled (set by runtime): POST /witness/add-checkpoint on the server port (docs/witness.md)
        self.witness: WitnessEndpoint | None = None

    # ---- global configuration -------------------------------------------------------------------------

    def conf(self) -> GlobalConf:
        """The current, unexpired global configuration.

        Raises:
            GlobalConfError: ``OutdatedGlobalConf`` when there is none or it has expired.
        """
        return self.globalconf.require_valid()

    def check_timestamping(self) -> None:
        """Refuse an exchange while the message log cannot take it: this process has lost the claim on its log
        origin, or the log has gone untimestamped past its grace period.

        Raises:
            MessageLogError: ``LoggingFailed`` (origin claim lost) or ``TimestampingFailed``.
        """
        gate = self.timestamping
        if gate is not None:
            gate.check_timestamping(self.clock())

    def groups(self, conf: GlobalConf) -> _Groups:
        return _Groups(conf, self.snapshot)

    # ---- our own signing certificate's OCSP response, stapled to every message ----------------------------

    async def own_ocsp(self, conf: GlobalConf) -> bytes:
        """A fresh, good OCSP response for our signing certificate (cached per configuration version until
        the OCSP cache would fetch again).

        Raises:
            CertValidation: our certificate is not good, or there is no fresh response for it.
        """
        now = self.clock()
        cached = self._own_ocsp
        if cached is not None and cached[1] == conf.version and cached[2] > now:
            return cached[0]
        cert = self.signer.cert
        ca = conf.ca_for(cert)
        if ca is None:
            raise CertValidation("our signing certificate is not issued by a CA trusted in the global configuration")
        try:
            status = await self.ocsp_cache.status(cert, ca, max_age_seconds=conf.ocsp_freshness_seconds)
        except TrustError as e:
            raise CertValidation(e.message) from e
        if status.status != "good":
            raise CertValidation(f"our signing certificate is {status.status} according to OCSP")
        if self.signer.cert is not cert:  # the signing key was switched (runtime.reload_keys) meanwhile
            return await self.own_ocsp(conf)
        until = min(now + self.ocsp_cache.refresh,
                    status.this_update + timedelta(seconds=conf.ocsp_freshness_seconds))
        self._own_ocsp = (status.response_der, conf.version, until)
        return status.response_der

    # ---- peers' signing certificates (stapled) --------------------------------------------------------------

    def cert_resolver(self, conf: GlobalConf, member: MemberId) -> CertResolver:
        """A :mod:`~gateway.protocol.signatures` resolver that accepts only ``member``'s valid signing certificate."""

        def resolve(keyid: str, cert_der: bytes, ocsp_der: bytes, /) -> x509.Certificate:
            now = self.clock()
            key = (keyid, hashlib.sha256(ocsp_der).digest(), member)
            hit = self._signing_certs.get(key)
            if hit is not None and hit[1] > now and hit[2] == conf.version:
                return hit[0]
            cert = peertrust.check_signing_cert(cert_der, ocsp_der, conf, member=member, now=now)
            # The verified answer holds until the OCSP response is no longer fresh, or the cert expires.
            this_update = x509.ocsp.load_der_ocsp_response(ocsp_der).this_update_utc
            until = min(this_update + timedelta(seconds=conf.ocsp_freshness_seconds), cert.not_valid_after_utc)
            if len(self._signing_certs) > 10_000:
                self._signing_certs.clear()
            self._signing_certs[key] = (cert, until, conf.version)
            return cert

        return resolve

    # ---- peers' authentication certificates (TLS) -------------------------------------------------------------

    async def check_peer(
        self, der: bytes | None, *, expected: SecurityServerId | None,
    ) -> SecurityServerId:
        """Accept a peer's TLS certificate or raise; answers are cached per certificate and configuration.

        Raises:
            SslAuthenticationFailed: no certificate, not parseable, refused by
                :func:`~gateway.globalconf.peertrust.check_peer_auth_cert`, or not good according to OCSP.
            GlobalConfError: ``OutdatedGlobalConf`` (see :meth:`conf`).
        """
        if der is None:
            raise SslAuthenticationFailed("the peer presented no TLS certificate")
        conf = self.conf()
        now = self.clock()
        hit = self._peer_certs.get(der)
        if hit is not None and hit[1] > now and hit[2] == conf.version and (expected is None or hit[0] == expected):
            return hit[0]
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as e:
            raise SslAuthenticationFailed(f"the peer's TLS certificate cannot be parsed: {e}") from e
        server_id = peertrust.check_peer_auth_cert(cert, conf, now=now, expected=expected)
        ca = conf.ca_for(cert)
        assert ca is not None  # checked by check_peer_auth_cert
        try:
            status = await self.ocsp_cache.status(cert, ca, max_age_seconds=conf.ocsp_freshness_seconds)
        except (TrustError, PeerError) as e:
            raise SslAuthenticationFailed(
                f"OCSP status of {server_id}'s authentication certificate: {e.message}") from e
        if status.status != "good":
            raise SslAuthenticationFailed(
                f"authentication certificate of {server_id} is {status.status} according to OCSP")
        until = min(now + self.ocsp_cache.refresh, cert.not_valid_after_utc)
        if len(self._peer_certs) > 10_000:
            self._peer_certs.clear()
        self._peer_certs[der] = (server_id, until, conf.version)
        log.debug("peer accepted", peer=str(server_id), fingerprint=cert_sha256_hex(cert)[:16])
        return server_id


def describe(e: BaseException) -> str:
    return e.message if isinstance(e, GatewayError) else f"{type(e).__name__}: {e}"
