"""One security server process: opens the shared resources once and runs the two proxies (I/O).

Resources: the database engine (serverconf + message log), the claim on this process's log origin
(:mod:`gateway.server.lease`), the global configuration
updater, the signing key and authentication certificate (plain key files, or the software token of
``[server] token_dir`` unlocked with the PIN from ``token_pin_file``/``token_pin_env``; docs/tokens.md),
one connection pool per peer server (mutual TLS), one per service origin, an aiohttp session for OCSP,
timestamps and OpenAPI descriptions, the message-log writer. Background
tasks: global-configuration polling, serverconf reloads (when its change counter moves: a change made by
any process of the server, :meth:`SecurityServer.poll_versions`) and, with a token, a watch that switches the
signer and the TLS certificate without restart when another certificate becomes the one to use
(:meth:`SecurityServer.reload_keys`), and on PostgreSQL the check of the origin claim. A software token with no
active signing or authentication certificate yet starts the server uninitialised: placeholders stand in for
them and ``ProxyContext.not_configured`` says what is missing (exchanges get ``NotConfigured``, readiness a
red ``keys`` check) until ``reload_keys`` finds them activated (docs/operations.md section 2.6).

Every resource is entered into one :class:`contextlib.AsyncExitStack` right after it is opened, so that closing
is always the reverse of opening: a :meth:`SecurityServer.start` that fails halfway closes exactly what it had
opened, and :meth:`SecurityServer.stop` is the same unwinding. Opening order, and so (reversed) shutdown order
(the client-facing side stops first so that nothing new arrives while logs are flushed):

1. the database engine; 2. the claim on the log origin; 3. the global configuration updater (its fetcher); 4. the
session for OCSP, timestamps and OpenAPI descriptions; 5. the message-log writer; 6. the peer pool (one mTLS
connection pool per peer) and the service pools (one per origin); 7. a nested stack for the background tasks;
8. the server port, the client port, the client HTTPS port (each an :class:`~gateway.proxy.http.HttpServer`),
the admin port (an aiohttp runner and site, in worker 0 only), the ops port (``/metrics``, ``/healthz``,
``/readyz``: :mod:`gateway.ops`, :mod:`gateway.server.health`); then the background tasks (the ops refresh: our
OCSP responses and the gauges; global-configuration polling, serverconf reloads, the token watch, the
checkpointer, the witness pusher, the origin claim's check) are started into the stack of step 7, once every port
listens.

Shutdown therefore closes the admin port, the client ports and the server port (each drains its requests), then
stops the background tasks, closes the service and peer pools, flushes and closes the message log, then closes
the session and the updater, gives up the origin and disposes of the engine. A stopped server's stores stay
readable (its message log, say); what that reopens (a pooled database connection) is released by the next
``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.admin.app import AdminContext, build_admin_app
from gateway.admin.auditcheckpointer import AuditCheckpointer, audit_log_source
from gateway.admin.store import AdminStore
from gateway.central.management import RequestType
from gateway.errors import CLIENT_PROXY, SERVER_PROXY, ConfigError, GatewayError, NotConfigured, Side
from gateway.globalconf.model import GlobalConf
from gateway.globalconf.updater import GlobalConfUpdater
from gateway.identifiers import ClientId, SecurityServerId
from gateway.messagelog.checkpointer import Checkpointer, HttpTimestampFetcher
from gateway.messagelog.origins import MAX_WORKERS, check_node, log_origin
from gateway.messagelog.store import (
    MemoryMessageLogStore,
    MessageLogStore,
    SqlMessageLogStore,
    migrate_messagelog,
)
from gateway.opmon.store import MAX_BATCH as OPMON_MAX_BATCH
from gateway.opmon.store import OpMonStore
from gateway.opmon.writer import OpMonWriter
from gateway.ops.app import build_ops_app
from gateway.ops.metrics import REFRESH_SECONDS, ServerMetrics
from gateway.protocol.signatures import ALG_ECDSA_P256, KeySigner, Signer
from gateway.proxy import http, tls
from gateway.proxy.client_proxy import build_client_handler
from gateway.proxy.common import refusal_renderer
from gateway.proxy.context import ProxyContext, ProxyLimits
from gateway.proxy.ocspcache import OcspCache
from gateway.proxy.peers import PeerPool
from gateway.proxy.server_proxy import build_server_handler
from gateway.proxy.services import ServicePools
from gateway.proxy.spool import MEMORY_LIMIT as SPOOL_MEMORY_LIMIT
from gateway.proxy.spool import spool_directory
from gateway.server import regclient
from gateway.server.health import ServerHealth
from gateway.server.keyfiles import KeyFiles, ensure_internal_tls
from gateway.server.lease import OriginLease
from gateway.server.renewal import CertRenewer, RenewalHost
from gateway.server.witnessing import PeerWitnessTransport
from gateway.serverconf.models import KEYS_VERSION, SERVERCONF_VERSION
from gateway.serverconf.store import ServerConfStore
from gateway.settings import LEGACY_DEVICE_NAME, Pkcs11Device, ServerSettings, Settings, pkcs11_devices
from gateway.storage.db import make_engine, sqlite_sibling_url
from gateway.token import model as token_model
from gateway.token.metrics import ExpiryGauge, update_expiry_gauge
from gateway.token.pkcs11 import Pkcs11Token
from gateway.token.soft import SoftToken, TlsMaterial, read_pin
from gateway.transparency.index import UsageIndex
from gateway.transparency.service import TransparencyState, load_key
from gateway.trust import keys
from gateway.witness import signer as witness_signer
from gateway.witness.http import WitnessEndpoint
from gateway.witness.pusher import MessageLogSource, Pusher, PushSettings
from gateway.witness.source import CheckpointSource
from gateway.witness.state import WitnessStore

log = structlog.get_logger("gateway.server.runtime")

FULL_RELOAD_SECONDS = 60.0  # seconds between full re-reads of serverconf, whatever its change counter says


def utc_now() -> datetime:
    return datetime.now(UTC)


class SecurityServer:
    """A running security server: ``await start()``, then ``await stop()``.

    ``worker`` is this process's index among the ``[server] workers`` of its node (given by the supervisor,
    :mod:`gateway.server.workers`); with the node name and the server id it names the process's log origin
    (:mod:`gateway.messagelog.origins`).
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] = utc_now, worker: int = 0) -> None:
        self.settings = settings
        self.clock = clock
        try:
            self.server_id = SecurityServerId.parse(settings.server.id)
        except GatewayError as e:
            raise ConfigError(f"[server] id: {e.message}") from e
        if not 1 <= settings.server.workers <= MAX_WORKERS:
            raise ConfigError(f"[server] workers = {settings.server.workers} is outside 1..{MAX_WORKERS}")
        if not 0 <= worker < settings.server.workers:
            raise ConfigError(f"worker index {worker} is outside 0..{settings.server.workers - 1} ([server] workers)")
        self.worker = worker
        self.origin = log_origin(self.server_id, node=check_node(settings.server.node), worker=worker)
        self.lease: OriginLease | None = None  # this process's claim on its log origin (start())
        # One exchange holds in memory at most its request's and its response's share: a body up to the spool's
        # memory threshold whole, a larger one that threshold (the rest is in spool_dir).
        needed = 2 * min(settings.server.max_body_bytes, SPOOL_MEMORY_LIMIT)
        if settings.server.max_inflight_body_bytes < needed:
            raise ConfigError(
                f"[server] max_inflight_body_bytes ({settings.server.max_inflight_body_bytes}) is smaller than "
                f"{needed} bytes, what one exchange may hold in memory (a request and a response of "
                f"min(max_body_bytes, {SPOOL_MEMORY_LIMIT}) bytes each): such an exchange could never be served",
                hint="raise max_inflight_body_bytes or lower max_body_bytes",
            )
        _check_ops_settings(settings.server)
        try:
            # the data-path ports' own limits (the body's is checked above, against the budget)
            self.port_limits = http.ServerLimits(
                max_body_bytes=settings.server.max_body_bytes, max_target_bytes=settings.server.max_uri_bytes,
                max_header_bytes=settings.server.max_header_bytes,
                header_timeout=settings.server.header_timeout_seconds,
                keepalive_timeout=settings.server.keepalive_timeout_seconds,
                max_connections=settings.server.max_connections,
            )
        except ValueError as e:
            raise ConfigError(f"[server] {_port_setting(str(e))}") from e
        if settings.server.max_client_exchanges < 1:
            raise ConfigError(f"[server] max_client_exchanges = {settings.server.max_client_exchanges} must be "
                              "at least 1")
        self.files = KeyFiles(dir=Path(settings.server.state_dir))
        # Everything start() opens, in opening order; stop() unwinds it (module docstring).
        self._stack = contextlib.AsyncExitStack()
        self._stop = asyncio.Event()  # set first by stop(): the background tasks end their loops
        self.client_url = ""
        self.client_https_url = ""
        self.admin_url = ""  # the admin REST API (docs/admin-api.md); "" while it is off
        self.server_address = ""
        self.context: ProxyContext | None = None
        self.checkpointer: Checkpointer | None = None  # signs and timestamps the message log (start())
        self.audit_checkpointer: AuditCheckpointer | None = None  # the admin audit log's checkpoints (worker 0)
        self.pusher: Pusher | None = None  # pushes the checkpoints to witnesses (start(); [witness] push)
        self._client_https_ssl: ssl.SSLContext | None = None  # trusts the registered IS certificates
        self.token: SoftToken | None = None  # with [server] token_dir: the logged-in software token
        self.device: Pkcs11Token | None = None  # the PKCS#11 token that holds the signing key in use, if one does
        self.devices: dict[str, Pkcs11Token] = {}  # every PKCS#11 device of the settings, by name (docs/tokens.md)
        self.witness_device: Pkcs11Token | None = None  # the device that holds the witness key, if one does
        self._peer_ssl: tuple[ssl.SSLContext, ...] = ()  # the two server-to-server contexts (auth cert)
        self._auth_sha256 = ""  # the authentication certificate the TLS contexts hold
        self._token_stamp: tuple[int, int] | None = None  # token.json (mtime_ns, size) when last read
        self._keys_lock = asyncio.Lock()
        self._versions: dict[str, int] = {}  # serverconf's change counters the snapshot and keys reflect
        self.metrics = ServerMetrics()  # served on the ops port (docs/operations.md section 8)
        self._expiry = ExpiryGauge(self.metrics, str(self.server_id))
        self.health: ServerHealth | None = None  # readiness checks and gauges (start())
        self.ops_url = ""  # /metrics, /healthz, /readyz; "" while the ops port is off
        self.opmon: OpMonWriter | None = None  # operational-monitoring records (start(); docs/operations.md)
        self.renewal: CertRenewer | None = None  # ACME renewal of the certificates (worker 0; docs/acme.md)
        self.witness: WitnessEndpoint | None = None  # with [witness] enabled: the witness (start(); docs/witness.md)

    async def start(self) -> None:
        """Open everything and listen; on failure, close what was opened (in reverse order) and re-raise.

        Raises:
            ConfigError: missing key files or no signing certificate on the PKCS#11 device (an empty software
                token starts the server uninitialised instead), bad settings, a port that cannot be bound.
        """
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings.server
        if s.token_dir:
            self.token = await self._open_token()
        else:
            self.files.require()
        for spec in pkcs11_devices(s):
            self.devices[spec.name] = await self._open_device(spec)
        ensure_internal_tls(self.files, self.server_id, now=self.clock())
        stack = self._stack
        # storage
        self.engine = make_engine(s.database_url, connect_timeout=s.database_connect_timeout_seconds,
                                  statement_timeout=s.database_statement_timeout_seconds)
        self._close_at_every_stop(self.engine.dispose)
        await migrate_messagelog(self.engine)
        self.store = ServerConfStore(self.engine)
        await self.store.migrate()
        self.admin_store = AdminStore(self.engine)
        await self.admin_store.migrate()
        # On SQLite the operational-monitoring records live in a file of their own (<database>-opmon): their batch
        # inserts would otherwise hold the write lock that every message-log commit needs (docs/operations.md
        # section 12). On PostgreSQL they share the server's database.
        opmon_url = sqlite_sibling_url(s.database_url, "-opmon")
        opmon_engine = self.engine
        if opmon_url is not None:
            opmon_engine = make_engine(opmon_url)
            self._close_at_every_stop(opmon_engine.dispose)
        self.opmon_store = OpMonStore(opmon_engine)
        self._close_at_every_stop(self.opmon_store.close)  # after the writer's last batch (the stack unwinds LIFO)
        await self.opmon_store.migrate()
        # the claim on our log origin, before anything is logged; given up after the log is closed
        if s.messagelog_backend == "sql":
            self.lease = await OriginLease.acquire(self.engine, self.origin)
            stack.push_async_callback(self.lease.release)
        # global configuration
        self.globalconf = GlobalConfUpdater.from_settings(self.settings.globalconf, clock=self.clock)
        self._close_at_every_stop(self.globalconf.close)
        self.globalconf.load_cached()
        result = await self.globalconf.refresh()
        if self.globalconf.current is None:
            log.warning("no global configuration yet; exchanges will fail until one is downloaded",
                        error=getattr(result, "error", None))
        # keys: the token's certificates in use now (for TLS, preferring one registered centrally), or files
        auth_paths: tuple[str | None, str, bytes | None]
        if self.token is not None:
            # A token without active keys yet starts the server uninitialised (docs/operations.md, "Starting a
            # new server"): placeholders until reload_keys finds the certificates activated.
            self._token_stamp = self._stat_token()
            signer = await self._token_signer(None, self.clock())
            auth = await self._token_auth(None, self.clock())
            if auth is None:
                auth_cert, auth_paths = keys.read_certificate(self.files.internal_cert), (None, "", None)
            else:
                auth_cert, auth_paths = auth.cert, (str(auth.cert_path), str(auth.key_path), auth.password)
                self._auth_sha256 = auth.sha256
        else:
            if self.devices:
                signer = await (await self._signing_token()).signer(now=self.clock())
            else:
                sign_cert = keys.read_certificate(self.files.sign_cert)
                signer = KeySigner(key=keys.read_private_key(self.files.sign_key), cert=sign_cert)
            auth_cert = keys.read_certificate(self.files.auth_cert)
            auth_paths = (str(self.files.auth_cert), str(self.files.auth_key), None)
        cas = self._cas(self.globalconf.current)
        peer_client_ssl = tls.peer_client_context(auth_paths[0], auth_paths[1], cas, allow_tls12=s.allow_tls12,
                                                  password=auth_paths[2])
        peer_server_ssl = tls.peer_server_context(auth_paths[0], auth_paths[1], cas, allow_tls12=s.allow_tls12,
                                                  password=auth_paths[2])
        self._peer_ssl = (peer_client_ssl, peer_server_ssl)
        self.globalconf.on_update(lambda conf: self._on_conf(conf, peer_client_ssl, peer_server_ssl))
        # sessions, caches, log
        # No cookie jar: a Set-Cookie from one service must never ride along on another client's request.
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60), auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        stack.push_async_callback(self.http.close)
        ocsp_cache = OcspCache(self.http, clock=self.clock, refresh_seconds=s.ocsp_refresh_seconds,
                               timeout_seconds=s.ocsp_timeout_seconds, observer=self.metrics)
        stack.push_async_callback(ocsp_cache.close)  # its fetches end before the session closes
        limits = ProxyLimits(
            max_body_bytes=s.max_body_bytes, max_clock_skew_seconds=s.max_clock_skew_seconds,
            replay_window_seconds=s.replay_window_seconds, connect_timeout_seconds=s.connect_timeout_seconds,
            max_uri_bytes=s.max_uri_bytes, max_inflight_body_bytes=s.max_inflight_body_bytes,
            max_client_exchanges=s.max_client_exchanges,
        )
        self.messagelog: MessageLogStore
        if s.messagelog_backend == "memory":
            log.warning("MESSAGE LOG IN MEMORY: records and checkpoints are NOT durable and are lost at exit; "
                        "[server] messagelog_backend = \"memory\" is for benchmarks only, never for real exchanges",
                        messagelog_backend="memory")
            self.messagelog = MemoryMessageLogStore(
                max_body_bytes=s.max_loggable_body_bytes, max_batch=s.messagelog_batch_size,
            )
        else:
            self.messagelog = SqlMessageLogStore(
                self.engine, max_body_bytes=s.max_loggable_body_bytes, max_batch=s.messagelog_batch_size,
            )
        self.messagelog.observer = self.metrics
        stack.push_async_callback(self.messagelog.close)  # closed after the ports and tasks, which log
        # The pool checks each provider's TLS certificate with the context built next, which holds the pool:
        # its check is a method of this server that reaches the context through self.context.
        peers = PeerPool(peer_client_ssl, self._check_provider, connect_timeout=s.connect_timeout_seconds,
                         max_body_bytes=limits.max_body_bytes)
        peers.on_wait = self.metrics.peer_wait.observe
        self._close_at_every_stop(peers.close)
        services = ServicePools(max_body_bytes=limits.max_body_bytes)
        stack.push_async_callback(services.close)  # after the ports: a call in progress ends first
        self._versions = await self.store.versions()  # before the snapshot: a change between is read again
        ctx = ProxyContext(
            server_id=self.server_id, globalconf=self.globalconf, snapshot=await self.store.snapshot(),
            signer=signer, auth_cert=auth_cert, messagelog=self.messagelog, ocsp_cache=ocsp_cache, peers=peers,
            services=services, service_session=self.http, peer_ssl=peer_client_ssl, limits=limits, clock=self.clock,
            origin=self.origin, metrics=self.metrics,
        )
        ctx.not_configured = self._missing_keys(signer, auth_paths[0] is None)
        ctx.body_logging = s.body_logging
        ctx.exchange_log = s.exchange_log
        if s.transparency:
            ctx.transparency = TransparencyState(
                key=load_key(s.state_dir), index=UsageIndex(self.messagelog), max_subjects=s.transparency_max_subjects,
                max_page=s.transparency_max_page, envelope_path=self.globalconf.cache_path,
            )
        if s.opmon_records:
            ctx.opmon = self.opmon = OpMonWriter(
                self.opmon_store, max_queue=s.opmon_queue_records, max_batch=s.opmon_batch_records,
                gather_seconds=s.opmon_batch_seconds, retention_days=s.opmon_retention_days, clock=self.clock,
                on_drop=self.metrics.opmon_records_dropped,
            )
        try:
            ctx.spool_dir = spool_directory(s.spool_dir or Path(s.state_dir) / "spool")
        except ConfigError as e:
            raise ConfigError(f"[server] spool_dir: {e.message}") from e
        if not s.body_logging:
            log.info("body logging is off: the message log keeps body digests only", body_logging=False)
        self.context = ctx
        if self.settings.witness.enabled:  # POST /witness/add-checkpoint on the server port (docs/witness.md)
            ctx.witness = self.witness = await self._open_witness(ctx)
        # signed, timestamped checkpoints of the message log; the proxies ask it before each exchange
        self.checkpointer = Checkpointer(
            store=self.messagelog, origin=ctx.origin, signer=signer, conf=lambda: self.globalconf.current,
            fetch=HttpTimestampFetcher(self.http), interval_seconds=s.checkpoint_interval_seconds,
            max_records=s.checkpoint_max_records, grace_seconds=s.timestamp_grace_seconds,
            timeout_seconds=s.timestamp_timeout_seconds,
        )
        await self.checkpointer.start(self.clock())  # reads the store; nothing to close
        ctx.timestamping = _LogGate(self.lease, self.checkpointer)
        self.pusher = self._make_pusher(peer_client_ssl)  # witnesses cosign our checkpoints (docs/witness.md)
        self.health = ServerHealth(
            settings=s, clock=self.clock, metrics=self.metrics, store=self.store, globalconf=self.globalconf,
            checkpointer=self.checkpointer, context=ctx, token=self.token, devices=self.devices,
            device_usage=self._device_usage,
            lease=self.lease, pusher=self.pusher, lag_warning_seconds=self.settings.witness.lag_warning_seconds,
        )
        # The background tasks start once every port listens but stop after the ports have closed (so that
        # they keep running while requests drain): their own stack, entered here, between the log and ports.
        tasks = await stack.enter_async_context(contextlib.AsyncExitStack())
        # sockets: server side first, so that peers can reach us by the time clients can
        server_port = await self._serve_data_path(build_server_handler(ctx), s.server_host, s.server_port,
                                                  peer_server_ssl, side=SERVER_PROXY)
        self.server_address = f"{s.server_host}:{server_port.port}"
        client_handler = build_client_handler(ctx)
        client_port = await self._serve_data_path(client_handler, s.client_host, s.client_port, None,
                                                  side=CLIENT_PROXY)
        self.client_url = f"http://{s.client_host}:{client_port.port}"
        if s.client_https_port >= 0:
            https = tls.client_facing_context(str(self.files.internal_cert), str(self.files.internal_key),
                                              client_cas=await self._is_certs())
            self._client_https_ssl = https
            https_port = await self._serve_data_path(client_handler, s.client_host, s.client_https_port, https,
                                                     side=CLIENT_PROXY)
            self.client_https_url = f"https://{s.client_host}:{https_port.port}"
        # The admin API runs in worker 0 only (docs/operations.md, "Several workers"); its changes reach the
        # other workers through the database (the serverconf version, the token's state).
        if s.admin_port >= 0 and self.worker == 0:  # its own port, after the proxies; stopped first
            admin = AdminContext(
                server_id=self.server_id, settings=self.settings.admin, store=self.admin_store,
                opmon=self.opmon_store,
                serverconf=self.store, globalconf=self.globalconf, messagelog=self.messagelog,
                reload_serverconf=self.reload_serverconf, clock=self.clock, token=self.token,
                reload_keys=self.keys_changed, log_origin=self.origin, certificates=self.certificates,
                checkpointer=self.checkpointer, readiness=self.health.checks, tokens=self.tokens, devices=self.devices,
                management=self.send_management, transparency=ctx.transparency, witness=self.witness,
                witness_name=witness_signer.default_name(str(self.server_id), self.settings.witness.name),
            )
            admin_runner = await self._serve(build_admin_app(admin), s.admin_host, s.admin_port, None)
            self.admin_url = f"http://{s.admin_host}:{self._port(admin_runner)}"
        if s.ops_port >= 0:  # /metrics, /healthz, /readyz on a port of their own, in every worker
            health = self.health
            ops_runner = await self._serve(build_ops_app(self.metrics.registry, refresh=self.refresh_metrics,
                                                         checks=health.checks), s.ops_host, s.ops_port, None)
            self.ops_url = f"http://{s.ops_host}:{self._port(ops_runner)}"
        _spawn(tasks, self._ops_loop(), "ops-refresh")
        if self.opmon is not None:
            _spawn(tasks, self.opmon.run(self._stop), "opmon-writer")
        _spawn(tasks, self.globalconf.run(self._stop), "globalconf-poll")
        _spawn(tasks, self._reload_loop(), "serverconf-reload")
        if self.token is not None or self.devices:
            _spawn(tasks, self._key_watch_loop(), "token-watch")
        await self._update_expiry_metrics()
        _spawn(tasks, self.checkpointer.run(self._stop, self.clock), "checkpointer")
        if self.worker == 0:  # one audit log per server: its checkpoints are made where the admin API runs
            self.audit_checkpointer = self._audit_checkpointer(ctx)
            _spawn(tasks, self.audit_checkpointer.run(self._stop, self.clock), "audit-checkpointer")
        if self.pusher is not None:
            _spawn(tasks, self.pusher.run(self._stop), "witness-pusher")
        if self.lease is not None:
            _spawn(tasks, self.lease.run(self._stop), "origin-lease")
        if s.acme_directory_url and self.worker == 0:  # certificate renewal over ACME (docs/acme.md)
            self.renewal = await CertRenewer.open(RenewalHost(
                settings=self.settings, server_id=self.server_id, token=self.token, device=self.device,
                conf=lambda: self.globalconf.current, registered=self._registered, audit=self.admin_store.write_audit,
                keys_changed=self.keys_changed, clock=self.clock, registry=self.metrics.registry,
            ))
            tasks.push_async_callback(self.renewal.close)  # after the task has ended (the stack unwinds LIFO)
            self.health.renewal = self.renewal
            _spawn(tasks, self.renewal.run(self._stop), "cert-renewal")
        log.info("security server started", server=str(self.server_id), origin=self.origin,
                 client_url=self.client_url, server_address=self.server_address, ops_url=self.ops_url)

    def _audit_checkpointer(self, ctx: ProxyContext) -> AuditCheckpointer:
        """Checkpoints of the admin audit log (docs/witness.md section 7), signed with the signing key in use
        and stored with a good OCSP response for it; :func:`gateway.admin.auditcheckpointer.audit_log_source`
        gives the same log to the witness pusher."""
        s = self.settings.server

        async def own_ocsp() -> bytes | None:
            conf = self.globalconf.current
            return None if conf is None else await ctx.own_ocsp(conf)

        return AuditCheckpointer(
            store=self.admin_store, server_id=self.server_id, signer=lambda: ctx.signer,
            conf=lambda: self.globalconf.current, fetch=HttpTimestampFetcher(self.http), own_ocsp=own_ocsp,
            can_sign=lambda: not isinstance(ctx.signer, _NoSigningKey) and (
                self.device is None or self.device.available),
            interval_seconds=s.checkpoint_interval_seconds, timeout_seconds=s.timestamp_timeout_seconds,
        )

    def _make_pusher(self, peer_ssl: ssl.SSLContext) -> Pusher | None:
        """The pusher of this process's message-log origin and, in worker 0, of the server's audit log
        (``[witness] push``; docs/witness.md sections 4 and 7), with its transport entered into the stack (closed
        after the background tasks stop).

        Raises:
            ConfigError: a ``[witness]`` interval, timeout or back-off out of range.
        """
        w = self.settings.witness
        if not w.push:
            return None
        try:
            push_settings = PushSettings(
                interval_seconds=w.push_interval_seconds, timeout_seconds=w.push_timeout_seconds,
                backoff_min_seconds=w.backoff_min_seconds, backoff_max_seconds=w.backoff_max_seconds,
            )
        except ValueError as e:
            raise ConfigError(f"[witness] {e}") from e
        transport = PeerWitnessTransport(peer_ssl, self._check_provider)
        self._stack.push_async_callback(transport.close)
        sources: list[CheckpointSource] = [MessageLogSource(self.messagelog, self.origin)]
        if self.worker == 0:  # the audit log's checkpoints are made there (_audit_checkpointer)
            sources.append(audit_log_source(self.admin_store, self.server_id))
        return Pusher(sources=sources, server_id=self.server_id,
                      conf=lambda: self.globalconf.current, transport=transport, settings=push_settings,
                      clock=self.clock, observer=self.metrics)

    async def _open_witness(self, ctx: ProxyContext) -> WitnessEndpoint:
        """The witness: its state (migrated), its key (made if missing: docs/witness.md section 2), its endpoint.

        Raises:
            ConfigError: the witness key cannot be read or made, or its name is not a key name.
        """
        w = self.settings.witness
        store = WitnessStore(self.engine)
        await store.migrate()
        name = witness_signer.default_name(str(self.server_id), w.name)
        try:
            device = await self._find_witness_device()
            signer = await witness_signer.load_signer(
                name=name, token=self.token, state_dir=self.settings.server.state_dir, create=True, now=self.clock(),
                device=device)
            if isinstance(signer, witness_signer.DeviceWitnessSigner):
                self.witness_device = device
            assert signer is not None  # create=True
            vkey = signer.key.vkey  # checks the name
        except ConfigError:
            raise
        except GatewayError as e:
            raise ConfigError(f"[witness]: the witness key cannot be used: {e.message}") from e
        if w.max_request_bytes < 1:
            raise ConfigError(f"[witness] max_request_bytes = {w.max_request_bytes} must be at least 1")
        log.info("witness enabled", vkey=vkey)

        async def check_peer(der: bytes | None) -> SecurityServerId:
            return await ctx.check_peer(der, expected=None)

        return WitnessEndpoint(store=store, signer=signer, conf=ctx.conf, check_peer=check_peer, clock=self.clock,
                               max_request_bytes=w.max_request_bytes, observer=self.metrics)

    def _close_at_every_stop(self, close: Callable[[], Awaitable[None]]) -> None:
        """Enter ``close`` into the stack so that stop() runs it in its place and again at every later stop().

        For what reopens on use after a stop: the engine's pool (reading a stopped server's message log or
        serverconf, as tests and tools do), the updater's download session (a refresh) and the peer sessions; a
        later stop() releases them again, as it always has. stop() unwinds the stack after swapping in a fresh
        one, which is where the callback enters itself again.
        """
        async def close_now_and_at_next_stop() -> None:
            self._stack.push_async_callback(close_now_and_at_next_stop)
            await close()

        self._stack.push_async_callback(close_now_and_at_next_stop)

    async def _check_provider(self, server_id: SecurityServerId, der: bytes | None) -> None:
        """The peer pool's check of a provider server's TLS certificate (:meth:`ProxyContext.check_peer`).

        The pool is built before the context that holds it, so it gets this method rather than the context's;
        the pool connects only for exchanges, which the proxies serve once :attr:`context` is set.

        Raises:
            TrustError: ``Server.ClientProxy.SslAuthenticationFailed``.
            GlobalConfError: ``Server.ClientProxy.OutdatedGlobalConf``.
        """
        if self.context is None:
            raise RuntimeError("the security server is not started")
        await self.context.check_peer(der, expected=server_id)

    # ---- keys and certificates (docs/tokens.md) ------------------------------------------------------------

    async def _open_token(self) -> SoftToken:
        """Open the token of ``[server] token_dir`` and log in with the PIN the settings point to.

        Raises:
            ConfigError: no token there, no PIN source, a wrong PIN or a locked token.
        """
        s = self.settings.server
        token = SoftToken(s.token_dir)
        if not token.exists():
            raise ConfigError(f"[server] token_dir {s.token_dir} holds no token",
                              hint="create it with `gateway token init`")
        pin = read_pin(pin_file=s.token_pin_file, pin_env=s.token_pin_env)
        try:
            await token.login(pin, now=self.clock())
        except GatewayError as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"token {s.token_dir}: {e.message}") from e
        return token

    async def _open_device(self, spec: Pkcs11Device) -> Pkcs11Token:
        """Open one PKCS#11 device of the settings (:func:`~gateway.settings.pkcs11_devices`) and log in.

        Raises:
            ConfigError: no PIN source, a bad setting, a wrong or locked PIN, or the device cannot be reached.
        """
        legacy = spec.name == LEGACY_DEVICE_NAME and spec.library == self.settings.server.pkcs11_library
        device = Pkcs11Token(spec.library, spec.token_label, sessions=spec.sessions, name=spec.name)
        try:
            pin = read_pin(pin_file=spec.pin_file, pin_env=spec.pin_env,
                           setting="pkcs11_pin" if legacy else f"pkcs11 {spec.name!r} pin")
            await device.login(pin, now=self.clock())
        except GatewayError as e:
            device.close()
            raise ConfigError(f"PKCS#11 token {spec.name!r} (label {spec.token_label!r}, {spec.library}): "
                              f"{e.message}") from e

        async def close() -> None:
            device.close()

        self._stack.push_async_callback(close)
        return device

    async def _device_choice_changed(self) -> bool:
        """Whether the signing certificate to use now is another than the one in use, as far as the devices
        tell (``gateway token activate --device NAME`` in another process changes a device, which has no file to
        watch)."""
        if self.context is None or (self.device is not None and not self.device.available):
            return False  # (the device in use is away: nothing switches until it is back)
        for device in self.devices.values():
            if not device.available:
                continue
            chosen = token_model.select_cert(await device.state(), "sign", now=self.clock())
            if chosen is not None:
                return chosen[1].sha256 != keys.cert_sha256_hex(self.context.signer.cert)
        # no device has a signing certificate to use now: signing moves from the device to the software token
        # when that has one (else the device's last certificate stays in use, as with a single device)
        if self.device is None or self.token is None:
            return False
        return token_model.select_cert(await self.token.state(), "sign", now=self.clock()) is not None

    async def _signing_token(self) -> SoftToken | Pkcs11Token:
        """Where the signing key lives: the first device (in the settings' order) with an active signing
        certificate valid now, else the software token; sets :attr:`device`. A device in use that is
        unavailable stays the one (exchanges fail closed; no silent switch to another token's key).

        Raises:
            ConfigError: no token holds an active signing certificate (naming the devices asked).
            TokenUnavailable: the device in use cannot be reached.
        """
        now = self.clock()
        if not self.devices:  # the software token (its signer() says when it has no certificate to use)
            assert self.token is not None
            return self.token
        for device in self.devices.values():
            try:
                state = await device.state()
            except GatewayError:
                if device is self.device:
                    raise
                continue  # an unavailable device that is not in use is skipped (readiness warns)
            if token_model.select_cert(state, "sign", now=now) is not None:
                self.device = device
                return device
        if self.token is not None and token_model.select_cert(await self.token.state(), "sign", now=now):
            self.device = None
            return self.token
        asked = ", ".join(repr(n) for n in self.devices) + (" nor in the software token" if self.token else "")
        raise ConfigError(f"no active signing certificate valid now on PKCS#11 token(s) {asked}",
                          hint="import one and `gateway token activate --device NAME` it")

    async def _find_witness_device(self) -> Pkcs11Token | None:
        """The device that holds the witness key (the first in the settings' order), else the signing device
        (where :func:`~gateway.witness.signer.load_signer` makes a new one), else None."""
        for device in self.devices.values():
            with contextlib.suppress(GatewayError):
                if await device.witness_public_key() is not None:
                    return device
        return self.device

    def _device_usage(self, device: Pkcs11Token) -> str:
        usage = [u for u, d in (("sign", self.device), ("witness", self.witness_device)) if d is device]
        return ", ".join(usage)

    def tokens(self) -> list[dict[str, object]]:
        """Every token of this server with its state and the keys in use on it (the admin API's and the web
        interface's list): the software token, then every device in the settings' order."""
        out: list[dict[str, object]] = []
        if self.token is not None:
            usage = "auth" if self.device is not None else "auth, sign"
            out.append({"name": "software", "kind": "software", "state": "available" if self.token.logged_in
                        else "logged-out", "error": "", "usage": usage})
        for device in self.devices.values():
            out.append({**device.status().to_dict(), "usage": self._device_usage(device)})
        return out

    def _registered(self) -> set[str] | None:
        """Fingerprints the current global configuration registers for this server (None without one)."""
        conf = self.globalconf.current
        if conf is None:
            return None
        server = conf.server(self.server_id)
        return set() if server is None else set(server.auth_certs)

    def _stat_token(self) -> tuple[int, int] | None:
        if self.token is None:
            return None
        try:
            st = self.token.state_path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    async def reload_keys(self) -> bool:
        """Switch to the signing and authentication certificates the token says to use now, without restart.

        Called after a certificate is activated or deactivated (the admin API calls it; the token watch
        notices changes made by ``gateway token`` in another process) and after a new global configuration
        (an approved authentication certificate becomes usable). The new signing certificate's OCSP response
        is fetched *before* the switch, and the switch itself is one synchronous step, so no exchange sees
        a half-switched state. Returns whether anything changed.

        Raises:
            ConfigError: the token has no usable certificate (the current ones stay in use).
            TrustError: no good OCSP response for the new signing certificate (the current one stays).
        """
        ctx = self.context
        if (self.token is None and not self.devices) or ctx is None:
            return False
        async with self._keys_lock:
            self._token_stamp = self._stat_token()
            now = self.clock()
            changed = False
            signer = await self._token_signer(ctx.signer, now)
            if signer.cert != ctx.signer.cert:
                conf = ctx.conf()
                ca = conf.ca_for(signer.cert)
                if ca is None:
                    raise ConfigError("the new signing certificate is not issued by a CA of the global "
                                      "configuration; keeping the current one")
                status = await ctx.ocsp_cache.status(signer.cert, ca, max_age_seconds=conf.ocsp_freshness_seconds)
                if status.status != "good":
                    raise ConfigError(f"the new signing certificate is {status.status} according to OCSP; "
                                      "keeping the current one")
                # one synchronous step: the proxies read signer, its DER and the OCSP cache together
                ctx.signer = signer
                ctx.sign_cert_der = signer.cert.public_bytes(serialization.Encoding.DER)
                ctx._own_ocsp = None
                if self.checkpointer is not None:  # the message log's next checkpoints: the key in use now
                    self.checkpointer.use_signer(signer)
                changed = True
                log.info("signing certificate switched", sha256=keys.cert_sha256_hex(signer.cert))
            if self.token is not None:
                auth = await self._token_auth(self._auth_sha256, now)
                if auth is not None and auth.sha256 != self._auth_sha256:
                    self._load_auth(auth)
                    ctx.auth_cert = auth.cert
                    changed = True
                    log.info("authentication certificate switched", sha256=auth.sha256)
            missing = self._missing_keys(ctx.signer, not self._auth_sha256)
            if missing != ctx.not_configured:
                ctx.not_configured = missing
                changed = True
                log.info("keys missing: exchanges refused" if missing else "keys active: exchanges served",
                         missing=missing)
        await self._update_expiry_metrics()
        return changed

    async def _token_signer(self, current: Signer | None, now: datetime) -> Signer:
        """The signer of the certificate to use now; a :class:`_NoSigningKey` placeholder while the software
        token has no active signing certificate and none is in use yet (an uninitialised server).

        Raises:
            ConfigError: a signing certificate was in use and the token has none now (it stays in use), or the
                PKCS#11 device has none.
        """
        try:
            return await (await self._signing_token()).signer(now=now)
        except ConfigError:
            if self.devices or not (current is None or isinstance(current, _NoSigningKey)):
                raise
            return current or _NoSigningKey(keys.read_certificate(self.files.internal_cert))

    async def _token_auth(self, current: str | None, now: datetime) -> TlsMaterial | None:
        """The authentication certificate to use now; None while the token has none active and none is in use
        (``current``: the fingerprint in use, "" or None for none).

        Raises:
            ConfigError: one was in use and the token has none now (it stays in use).
        """
        assert self.token is not None
        try:
            return await self.token.tls_material(now=now, registered=self._registered())
        except ConfigError:
            if current:
                raise
            return None

    def _missing_keys(self, signer: Signer, no_auth: bool) -> str | None:
        """What keeps this server from exchanging, as readiness and the NotConfigured fault say it (None: nothing)."""
        missing = []
        if no_auth:
            missing.append("no active authentication certificate registered in the global configuration")
        if isinstance(signer, _NoSigningKey):
            missing.append(f"no active signing certificate for member {self.server_id.owner}")
        if not missing:
            return None
        return "; ".join(missing) + " (this security server is not initialised: generate the keys, import " \
            "and activate the certificates, register the server; docs/operations.md)"

    def _load_auth(self, auth: TlsMaterial) -> None:
        """Put another authentication certificate into the live TLS contexts (new connections use it)."""
        for ctx in self._peer_ssl:
            try:
                ctx.load_cert_chain(str(auth.cert_path), str(auth.key_path), password=auth.password)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"cannot load authentication certificate {auth.cert_path}: {e}") from e
        self._auth_sha256 = auth.sha256

    async def send_management(self, type_: RequestType, client: ClientId | None) -> dict[str, Any]:
        """A management request (``auth_cert_reg``: the newest authentication certificate; ``client_reg``),
        signed with this server's authentication key and sent to the central server named by the anchor; the
        central server's record of it (the admin API's ``registerServer`` and ``registerClient``).

        Raises:
            RequestError: the token is not logged in; the central server refused the request.
            PeerError: the central server cannot be reached.
        """
        now = self.clock()
        key, cert = await regclient.auth_key_and_cert(self.settings, token=self.token, newest=type_ == "auth_cert_reg",
                                                      now=now)
        # the address peers reach: [server] address, else the bound port (server_port 0 picks one at start)
        return await regclient.send(self.settings, type_, key=key, cert=cert, now=now, client=client,
                                    address=self.settings.server.address or self.server_address or None)

    async def certificates(self, *, with_ocsp: bool = True) -> list[token_model.CertReport]:
        """This server's keys and certificates with expiry and (optionally fetched) OCSP status: what
        ``gateway token keys`` shows and the admin API lists."""
        now = self.clock()
        ocsp: dict[str, token_model.OcspState] = {}
        if self.token is not None:
            state = await self.token.state()
            certs = [c.certificate for k in state.keys for c in k.certs]
        else:
            state = None
            certs = [keys.read_certificate(self.files.sign_cert), keys.read_certificate(self.files.auth_cert)]
        device_states: list[tuple[Pkcs11Token, token_model.TokenState]] = []
        for device in self.devices.values():  # their keys join the list (an unavailable device's cannot)
            with contextlib.suppress(GatewayError):
                device_states.append((device, await device.state()))
        if self.device is not None and state is None:  # the files' signing certificate is not in use
            certs = certs[1:]
        certs += [c.certificate for _d, ds in device_states for k in ds.keys for c in k.certs]
        conf = self.globalconf.current if hasattr(self, "globalconf") else None
        if with_ocsp and self.context is not None and conf is not None:
            for cert in certs:
                ca = conf.ca_for(cert)
                if ca is None:
                    ocsp[keys.cert_sha256_hex(cert)] = "unavailable"
                    continue
                try:
                    status = await self.context.ocsp_cache.status(
                        cert, ca, max_age_seconds=conf.ocsp_freshness_seconds)
                    ocsp[keys.cert_sha256_hex(cert)] = status.status
                except GatewayError:
                    ocsp[keys.cert_sha256_hex(cert)] = "unavailable"
        out: list[token_model.CertReport] = []
        for device, device_state in device_states:  # only the signing device's signing key is in use
            out += [r if device is self.device or r.usage != "sign" else dataclasses.replace(r, in_use=False)
                    for r in token_model.report(device_state, now=now, ocsp=ocsp)]
        if state is not None:
            soft = token_model.report(state, now=now, ocsp=ocsp, registered=self._registered())
            if self.device is not None:  # the device signs: the software token's signing keys are not in use
                soft = [dataclasses.replace(r, in_use=False) if r.usage == "sign" else r for r in soft]
            return soft + out
        files = [keys.read_certificate(self.files.auth_cert)] if self.device is not None else certs
        return token_model.file_report(files, now=now, ocsp=ocsp) + out

    async def _update_expiry_metrics(self) -> None:
        try:
            reports = await self.certificates(with_ocsp=False)
        except GatewayError as e:  # metrics never stop the server
            log.warning("certificate expiry metrics not updated", error=e.message)
            return
        update_expiry_gauge(self._expiry, reports, now=self.clock(),
                            warning_days=self.settings.server.cert_expiry_warning_days)
        for r in token_model.expiring(reports, within_days=self.settings.server.cert_expiry_warning_days):
            log.warning("certificate expires soon", usage=r.usage, sha256=r.sha256, days_left=round(r.days_left or 0))

    async def refresh_metrics(self) -> None:
        """Set the time-derived gauges as of now (before a scrape, and every few seconds in every worker)."""
        if self.health is not None:
            self.health.refresh_gauges()
            self._expiry.refresh(self.clock())

    async def refresh_ocsp(self) -> None:
        """Keep our own certificates' OCSP responses fresh (fetched at once if there is none, else refreshed in
        the background when due), and every other cached response too, without waiting for traffic."""
        ctx = self.context
        conf = self.globalconf.current
        if ctx is None or conf is None:
            return
        for cert in (ctx.signer.cert, ctx.auth_cert):
            ca = conf.ca_for(cert)
            if ca is not None:
                with contextlib.suppress(GatewayError):  # counted and logged by the cache
                    await ctx.ocsp_cache.status(cert, ca, max_age_seconds=conf.ocsp_freshness_seconds)
        await ctx.ocsp_cache.refresh_due()

    async def _ops_loop(self) -> None:
        """Every :data:`~gateway.ops.metrics.REFRESH_SECONDS`: our OCSP responses, then the gauges."""
        while not self._stop.is_set():
            try:
                await self.refresh_ocsp()
                await self.refresh_metrics()
            except Exception:
                log.exception("ops refresh failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=REFRESH_SECONDS)

    async def _key_watch_loop(self) -> None:
        """Reload keys when token.json changes or a new global configuration arrives, and every round while the
        server is uninitialised; refresh metrics hourly."""
        interval = self.settings.server.serverconf_reload_seconds
        seen_version = self.globalconf.current.version if self.globalconf.current is not None else None
        metrics_at = self.clock()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
            if self._stop.is_set():
                return
            conf = self.globalconf.current
            version = conf.version if conf is not None else None
            try:
                returned = False
                for device in self.devices.values():
                    before = device.available
                    after = (await device.probe()).state == "available"
                    if before != after:
                        log.warning("PKCS#11 token " + ("available again" if after else "unavailable"),
                                    device=device.name, token=device.token_label, error=device.status().error)
                    returned = returned or after
                device_changed = returned and await self._device_choice_changed()
                # uninitialised: look every round (a certificate whose OCSP status was not good yet is retried)
                waiting = self.context is not None and self.context.not_configured is not None
                if self._stat_token() != self._token_stamp or version != seen_version or device_changed or waiting:
                    seen_version = version
                    await self.reload_keys()
                elif (self.clock() - metrics_at).total_seconds() >= 3600:
                    metrics_at = self.clock()
                    await self._update_expiry_metrics()
            except GatewayError as e:
                log.warning("key reload failed", error=e.message)
            except Exception:
                log.exception("key reload failed")

    @staticmethod
    def _cas(conf: GlobalConf | None) -> list[x509.Certificate]:
        return [] if conf is None else [ca.certificate for ca in conf.certificate_authorities]

    def _on_conf(self, conf: GlobalConf, *contexts: ssl.SSLContext) -> None:
        for ctx in contexts:
            tls.add_trusted_cas(ctx, self._cas(conf))

    async def _serve(
        self, app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None,
    ) -> web.AppRunner:
        """Listen on ``host:port`` with ``app``; the runner (and its site) is closed when the stack unwinds.

        Raises:
            ConfigError: the port cannot be bound.
        """
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        # Several workers share each port: SO_REUSEPORT, the kernel spreads new connections over them.
        reuse = self.settings.server.workers > 1 or None
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=1024, reuse_port=reuse)
        try:
            await site.start()
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        return runner

    async def _serve_data_path(
        self, handler: http.Handler, host: str, port: int, ssl_context: ssl.SSLContext | None, *, side: Side,
    ) -> http.HttpServer:
        """Listen on ``host:port`` with a data-path ``handler`` on the lean HTTP layer (:mod:`gateway.proxy.http`);
        closed when the stack unwinds.

        Raises:
            ConfigError: the port cannot be bound.
        """
        server = http.HttpServer(handler, limits=self.port_limits, render_refusal=refusal_renderer(side))
        reuse = self.settings.server.workers > 1 or None  # as _serve: several workers share the port
        try:
            await server.start(host, port, ssl=ssl_context, backlog=1024, reuse_port=reuse)
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        self._stack.push_async_callback(server.close)
        return server

    @staticmethod
    def _port(runner: web.AppRunner) -> int:
        return int(runner.addresses[0][1])

    async def _is_certs(self) -> list[x509.Certificate]:
        return [x509.load_der_x509_certificate(der) for der in await self.store.is_certificates()]

    async def reload_serverconf(self) -> None:
        """Re-read clients, services, access rights and groups into a new in-memory snapshot; trust newly
        registered information-system certificates on the HTTPS port first, so that they work once listed."""
        if self.context is not None:
            if self._client_https_ssl is not None:
                tls.add_trusted_cas(self._client_https_ssl, await self._is_certs())
            self.context.snapshot = await self.store.snapshot()

    async def keys_changed(self) -> bool:
        """The admin API changed the token: count the change for the other processes of this server (they
        reload at their next poll, :meth:`poll_versions`), then reload here at once."""
        await self.store.keys_changed()
        return await self.reload_keys()

    async def poll_versions(self) -> tuple[bool, bool]:
        """One poll of serverconf's change counters (``sc_versions``): reload the snapshot if serverconf
        changed, the keys if the token did, in whichever process of the server made the change. Returns what
        was reloaded (serverconf, keys).

        Raises:
            GatewayError: the database failed, or reloading the keys failed (the current ones stay).
        """
        now = await self.store.versions()
        serverconf = now.get(SERVERCONF_VERSION) != self._versions.get(SERVERCONF_VERSION)
        if serverconf:
            self._versions[SERVERCONF_VERSION] = now.get(SERVERCONF_VERSION, 0)
            await self.reload_serverconf()
        keys_ = now.get(KEYS_VERSION) != self._versions.get(KEYS_VERSION)
        if keys_:
            self._versions[KEYS_VERSION] = now.get(KEYS_VERSION, 0)
            await self.reload_keys()
        return serverconf, keys_

    async def _reload_loop(self) -> None:
        """Every ``serverconf_reload_seconds``: :meth:`poll_versions` (one small query); and a full reload of
        the snapshot every :data:`FULL_RELOAD_SECONDS` whatever the counters say."""
        interval = self.settings.server.serverconf_reload_seconds
        loop = asyncio.get_running_loop()
        full_at = loop.time() + FULL_RELOAD_SECONDS
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
            if self._stop.is_set():
                return
            try:
                reloaded, _ = await self.poll_versions()
                if reloaded or loop.time() >= full_at:
                    if not reloaded:
                        await self.reload_serverconf()
                    full_at = loop.time() + FULL_RELOAD_SECONDS
            except GatewayError as e:
                log.warning("serverconf reload failed", error=e.message)
            except Exception:
                log.exception("serverconf reload failed")

    async def stop(self) -> None:
        """Close everything :meth:`start` opened, in reverse order (module docstring); idempotent.

        The background tasks are told to stop first, so that they end their loops while the ports drain. A
        later call closes only what reopens on use (:meth:`_close_at_every_stop`).
        """
        self._stop.set()
        stack, self._stack = self._stack, contextlib.AsyncExitStack()
        await stack.aclose()
        log.info("security server stopped", server=str(self.server_id), origin=self.origin)


class _NoSigningKey:
    """The signer of a server without an active signing certificate yet: it signs nothing (NotConfigured).

    Its ``cert`` is the server's internal TLS certificate, which no CA of the global configuration issued, so it
    is never offered as a signing certificate; the proxies refuse exchanges before they would sign
    (``ProxyContext.not_configured``)."""

    __slots__ = ("alg", "cert")

    def __init__(self, cert: x509.Certificate) -> None:
        self.cert = cert
        self.alg = ALG_ECDSA_P256

    def sign(self, data: bytes) -> bytes:
        raise NotConfigured("no active signing certificate yet: nothing can be signed")


def _check_ops_settings(s: ServerSettings) -> None:
    """Refuse unusable ops, OCSP, database timeout and readiness settings (docs/operations.md section 8) before
    anything opens.

    Raises:
        ConfigError: naming the key and the value.
    """
    if not -1 <= s.ops_port <= 65535:
        raise ConfigError(f"[server] ops_port = {s.ops_port} is not a TCP port (0-65535) or -1 (off)")
    for key in ("ocsp_refresh_seconds", "ocsp_timeout_seconds", "database_connect_timeout_seconds",
                "database_statement_timeout_seconds"):
        if not getattr(s, key) > 0:
            raise ConfigError(f"[server] {key} = {getattr(s, key)} must be a positive number of seconds")
    for key in ("readiness_conf_margin_seconds", "readiness_grace_margin_seconds", "readiness_ocsp_margin_seconds"):
        if not getattr(s, key) >= 0:
            raise ConfigError(f"[server] {key} = {getattr(s, key)} must be 0 or more seconds")
    for key, low, high in (("opmon_retention_days", 1, 36500), ("opmon_queue_records", 1, 10**7),
                           ("opmon_batch_records", 1, OPMON_MAX_BATCH)):
        if not low <= getattr(s, key) <= high:
            raise ConfigError(f"[server] {key} = {getattr(s, key)} is outside {low}..{high}")
    if not 0 <= s.opmon_batch_seconds <= 1:
        raise ConfigError(f"[server] opmon_batch_seconds = {s.opmon_batch_seconds} is outside 0..1 seconds")
    if not s.readiness_disk_free_bytes >= 0:
        raise ConfigError(f"[server] readiness_disk_free_bytes = {s.readiness_disk_free_bytes} must be 0 or more "
                          f"bytes (0: not checked)")


class _LogGate:
    """What the proxies ask before an exchange (``ProxyContext.timestamping``): that this process still holds
    its log origin (:meth:`OriginLease.check`), then that its log is timestamped within the grace period."""

    __slots__ = ("_checkpointer", "_lease")

    def __init__(self, lease: OriginLease | None, checkpointer: Checkpointer) -> None:
        self._lease = lease
        self._checkpointer = checkpointer

    def check_timestamping(self, now: datetime) -> None:
        """Raises: MessageLogError: ``LoggingFailed`` (origin lost) or ``TimestampingFailed``."""
        if self._lease is not None:
            self._lease.check()
        self._checkpointer.check_timestamping(now)


_PORT_SETTINGS = {
    "max_body_bytes": "max_body_bytes", "max_target_bytes": "max_uri_bytes", "max_header_bytes": "max_header_bytes",
    "header_timeout": "header_timeout_seconds", "keepalive_timeout": "keepalive_timeout_seconds",
    "max_connections": "max_connections",
}


def _port_setting(message: str) -> str:
    """``ServerLimits``' complaint about one of its fields, named as the ``[server]`` setting it came from."""
    field, _, rest = message.partition(" ")
    return f"{_PORT_SETTINGS.get(field, field)} {rest}"


def _spawn(tasks: contextlib.AsyncExitStack, coro: Coroutine[None, None, None], name: str) -> None:
    """Start a background task whose cancellation ``tasks`` awaits when it unwinds."""
    task = asyncio.create_task(coro, name=name)
    tasks.push_async_callback(_cancel, task)


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it to end; its result or error is not re-raised, so shutdown goes on."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
