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
(:meth:`SecurityServer.reload_keys`), and on PostgreSQL the check of the origin claim.

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
checkpointer, the origin claim's check) are started into the stack of step 7, once every port listens.

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
from gateway.admin.store import AdminStore
from gateway.central.management import RequestType
from gateway.errors import CLIENT_PROXY, SERVER_PROXY, ConfigError, GatewayError, Side
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
from gateway.protocol.signatures import KeySigner
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
from gateway.serverconf.models import KEYS_VERSION, SERVERCONF_VERSION
from gateway.serverconf.store import ServerConfStore
from gateway.settings import ServerSettings, Settings
from gateway.storage.db import make_engine, sqlite_sibling_url
from gateway.token import model as token_model
from gateway.token.metrics import ExpiryGauge, update_expiry_gauge
from gateway.token.pkcs11 import Pkcs11Token
from gateway.token.soft import SoftToken, TlsMaterial, read_pin
from gateway.transparency.index import UsageIndex
from gateway.transparency.service import TransparencyState, load_key
from gateway.trust import keys

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
        self._client_https_ssl: ssl.SSLContext | None = None  # trusts the registered IS certificates
        self.token: SoftToken | None = None  # with [server] token_dir: the logged-in software token
        self.device: Pkcs11Token | None = None  # with [server] pkcs11_library: the signing key's PKCS#11 token
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

    async def start(self) -> None:
        """Open everything and listen; on failure, close what was opened (in reverse order) and re-raise.

        Raises:
            ConfigError: missing keys, bad settings, a port that cannot be bound.
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
        if s.pkcs11_library:
            self.device = await self._open_device()
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
        auth_paths: tuple[str, str, bytes | None]
        if self.token is not None:
            self._token_stamp = self._stat_token()
            signer = await self._signing_token().signer(now=self.clock())
            auth = await self.token.tls_material(now=self.clock(), registered=self._registered())
            auth_cert, auth_paths = auth.cert, (str(auth.cert_path), str(auth.key_path), auth.password)
            self._auth_sha256 = auth.sha256
        else:
            if self.device is not None:
                signer = await self.device.signer(now=self.clock())
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
        # signed, timestamped checkpoints of the message log; the proxies ask it before each exchange
        self.checkpointer = Checkpointer(
            store=self.messagelog, origin=ctx.origin, signer=signer, conf=lambda: self.globalconf.current,
            fetch=HttpTimestampFetcher(self.http), interval_seconds=s.checkpoint_interval_seconds,
            max_records=s.checkpoint_max_records, grace_seconds=s.timestamp_grace_seconds,
            timeout_seconds=s.timestamp_timeout_seconds,
        )
        await self.checkpointer.start(self.clock())  # reads the store; nothing to close
        ctx.timestamping = _LogGate(self.lease, self.checkpointer)
        self.health = ServerHealth(
            settings=s, clock=self.clock, metrics=self.metrics, store=self.store, globalconf=self.globalconf,
            checkpointer=self.checkpointer, context=ctx, token=self.token, device=self.device,
            lease=self.lease,
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
                checkpointer=self.checkpointer, readiness=self.health.checks, tokens=self.tokens,
                management=self.send_management, transparency=ctx.transparency,
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
        if self.token is not None or self.device is not None:
            _spawn(tasks, self._key_watch_loop(), "token-watch")
        await self._update_expiry_metrics()
        _spawn(tasks, self.checkpointer.run(self._stop, self.clock), "checkpointer")
        if self.lease is not None:
            _spawn(tasks, self.lease.run(self._stop), "origin-lease")
        log.info("security server started", server=str(self.server_id), origin=self.origin,
                 client_url=self.client_url, server_address=self.server_address, ops_url=self.ops_url)

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

    async def _open_device(self) -> Pkcs11Token:
        """Open the PKCS#11 token of ``[server] pkcs11_library``/``pkcs11_token_label`` and log in.

        Raises:
            ConfigError: no PIN source, a bad setting, a wrong or locked PIN, or the device cannot be reached.
        """
        s = self.settings.server
        device = Pkcs11Token(s.pkcs11_library, s.pkcs11_token_label, sessions=s.pkcs11_sessions)
        pin = read_pin(pin_file=s.pkcs11_pin_file, pin_env=s.pkcs11_pin_env, setting="pkcs11_pin")
        try:
            await device.login(pin, now=self.clock())
        except GatewayError as e:
            device.close()
            raise ConfigError(f"PKCS#11 token {s.pkcs11_token_label!r} ({s.pkcs11_library}): {e.message}") from e

        async def close() -> None:
            device.close()

        self._stack.push_async_callback(close)
        return device

    async def _device_choice_changed(self) -> bool:
        """Whether the device's signing certificate to use now is another than the one in use (``gateway token
        --device activate`` in another process changes the device, which has no file to watch)."""
        assert self.device is not None
        if self.context is None:
            return False
        chosen = token_model.select_cert(await self.device.state(), "sign", now=self.clock())
        in_use = keys.cert_sha256_hex(self.context.signer.cert)
        return chosen is not None and chosen[1].sha256 != in_use

    def _signing_token(self) -> SoftToken | Pkcs11Token:
        """Where the signing key lives: the PKCS#11 device when one is set, else the software token."""
        if self.device is not None:
            return self.device
        assert self.token is not None
        return self.token

    def tokens(self) -> list[dict[str, object]]:
        """Every token of this server with its state (the admin API's and the web interface's list)."""
        out: list[dict[str, object]] = []
        if self.token is not None:
            out.append({"name": "software", "kind": "software", "state": "available" if self.token.logged_in
                        else "logged-out", "error": "", "usage": "auth" if self.device is not None else "auth, sign"})
        if self.device is not None:
            out.append({**self.device.status().to_dict(), "usage": "sign"})
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
        if (self.token is None and self.device is None) or ctx is None:
            return False
        async with self._keys_lock:
            self._token_stamp = self._stat_token()
            now = self.clock()
            changed = False
            signer = await self._signing_token().signer(now=now)
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
                changed = True
                log.info("signing certificate switched", sha256=keys.cert_sha256_hex(signer.cert))
            if self.token is not None:
                auth = await self.token.tls_material(now=now, registered=self._registered())
                if auth.sha256 != self._auth_sha256:
                    self._load_auth(auth)
                    ctx.auth_cert = auth.cert
                    changed = True
                    log.info("authentication certificate switched", sha256=auth.sha256)
        await self._update_expiry_metrics()
        return changed

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
        return await regclient.send(self.settings, type_, key=key, cert=cert, now=now,
                                    client=client)

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
        if self.device is not None:  # its keys join the list; the files' signing certificate is not in use
            device_state = await self.device.state()
            if state is None:
                certs = certs[1:]
            certs += [c.certificate for k in device_state.keys for c in k.certs]
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
        if self.device is not None:
            out = token_model.report(device_state, now=now, ocsp=ocsp)
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
        """Reload keys when token.json changes or a new global configuration arrives; refresh metrics hourly."""
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
                device_changed = False
                if self.device is not None:
                    before = self.device.available
                    after = (await self.device.probe()).state == "available"
                    if before != after:
                        log.warning("PKCS#11 token " + ("available again" if after else "unavailable"),
                                    token=self.device.token_label, error=self.device.status().error)
                    device_changed = after and await self._device_choice_changed()
                if self._stat_token() != self._token_stamp or version != seen_version or device_changed:
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
