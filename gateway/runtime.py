"""One security server process: opens the shared resources once and runs the two proxies (I/O).

Resources (STYLE.md "aiohttp"): the database engine (serverconf + message log), the global configuration
updater, the signing key and authentication certificate, one pooled mTLS session per peer, one session for
services and OCSP, the message-log writer. Background tasks: global-configuration polling and serverconf
reloads. Shutdown stops the client-facing side first so that nothing new arrives, then the server side, then
flushes the message log.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web
from cryptography import x509

from gateway import keys
from gateway.db import make_engine
from gateway.errors import ConfigError, GatewayError
from gateway.globalconf.model import GlobalConf
from gateway.globalconf.updater import GlobalConfUpdater
from gateway.identifiers import SecurityServerId
from gateway.messagelog.store import SqlMessageLogStore, migrate_messagelog
from gateway.proxy import tls
from gateway.proxy.client_proxy import build_client_app
from gateway.proxy.context import ProxyContext, ProxyLimits
from gateway.proxy.ocspcache import OcspCache
from gateway.proxy.peers import PeerPool
from gateway.proxy.server_proxy import build_server_app
from gateway.serverconf.store import ServerConfStore
from gateway.settings import Settings
from gateway.signing import KeySigner

log = structlog.get_logger("gateway.runtime")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyFiles:
    """Where ``gateway server init`` keeps this server's keys and certificates (``[server] state_dir``)."""

    dir: Path

    @property
    def sign_key(self) -> Path:
        return self.dir / "sign.key"

    @property
    def sign_cert(self) -> Path:
        return self.dir / "sign.pem"

    @property
    def auth_key(self) -> Path:
        return self.dir / "auth.key"

    @property
    def auth_cert(self) -> Path:
        return self.dir / "auth.pem"

    @property
    def internal_key(self) -> Path:
        return self.dir / "internal.key"

    @property
    def internal_cert(self) -> Path:
        return self.dir / "internal.pem"

    def require(self) -> None:
        """Raises: ConfigError naming the first missing file."""
        for path in (self.sign_key, self.sign_cert, self.auth_key, self.auth_cert):
            if not path.is_file():
                raise ConfigError(
                    f"{path} is missing", hint="run 'gateway server init', get the CSRs signed, then "
                    "'gateway server import-cert'",
                )


def ensure_internal_tls(files: KeyFiles, server_id: SecurityServerId, *, now: datetime) -> None:
    """Create the self-signed TLS certificate of the client-facing HTTPS port if there is none
    (X-Road's "internal TLS certificate"; information systems pin it)."""
    if files.internal_cert.is_file() and files.internal_key.is_file():
        return
    import datetime as dt

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = keys.generate_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{server_id} internal TLS")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    keys.write_private_key(files.internal_key, key)
    keys.write_public_file(files.internal_cert, keys.cert_pem(cert).encode())


class SecurityServer:
    """A running security server: ``await start()``, then ``await stop()``."""

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.settings = settings
        self.clock = clock
        try:
            self.server_id = SecurityServerId.parse(settings.server.id)
        except GatewayError as e:
            raise ConfigError(f"[server] id: {e.message}") from e
        self.files = KeyFiles(dir=Path(settings.server.state_dir))
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.client_url = ""
        self.client_https_url = ""
        self.server_address = ""
        self.context: ProxyContext | None = None
        self._client_https_ssl: ssl.SSLContext | None = None  # trusts the registered IS certificates

    async def start(self) -> None:
        """Open everything and listen; on failure, close what was opened.

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
        self.files.require()
        ensure_internal_tls(self.files, self.server_id, now=self.clock())
        # storage
        self.engine = make_engine(s.database_url)
        await migrate_messagelog(self.engine)
        self.store = ServerConfStore(self.engine)
        await self.store.migrate()
        # keys
        sign_cert = keys.read_certificate(self.files.sign_cert)
        signer = KeySigner(key=keys.read_private_key(self.files.sign_key), cert=sign_cert)
        auth_cert = keys.read_certificate(self.files.auth_cert)
        # global configuration
        self.globalconf = GlobalConfUpdater.from_settings(self.settings.globalconf, clock=self.clock)
        self.globalconf.load_cached()
        result = await self.globalconf.refresh()
        if self.globalconf.current is None:
            log.warning("no global configuration yet; exchanges will fail until one is downloaded",
                        error=getattr(result, "error", None))
        cas = self._cas(self.globalconf.current)
        peer_client_ssl = tls.peer_client_context(str(self.files.auth_cert), str(self.files.auth_key), cas,
                                                  allow_tls12=s.allow_tls12)
        peer_server_ssl = tls.peer_server_context(str(self.files.auth_cert), str(self.files.auth_key), cas,
                                                  allow_tls12=s.allow_tls12)
        self.globalconf.on_update(lambda conf: self._on_conf(conf, peer_client_ssl, peer_server_ssl))
        # sessions, caches, log
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60), auto_decompress=False,
        )
        ocsp_cache = OcspCache(self.http, clock=self.clock, refresh_seconds=s.ocsp_refresh_seconds)
        limits = ProxyLimits(
            max_body_bytes=s.max_body_bytes, max_clock_skew_seconds=s.max_clock_skew_seconds,
            replay_window_seconds=s.replay_window_seconds, connect_timeout_seconds=s.connect_timeout_seconds,
            max_uri_bytes=s.max_uri_bytes,
        )
        ctx_ref: list[ProxyContext] = []

        async def check(server_id: SecurityServerId, der: bytes | None) -> None:
            await ctx_ref[0].check_peer(der, expected=server_id, side="Server.ClientProxy")

        peers = PeerPool(peer_client_ssl, check, connect_timeout=s.connect_timeout_seconds)
        self.messagelog = SqlMessageLogStore(
            self.engine, max_body_bytes=s.max_loggable_body_bytes, max_batch=s.messagelog_batch_size,
        )
        ctx = ProxyContext(
            server_id=self.server_id, globalconf=self.globalconf, snapshot=await self.store.snapshot(),
            signer=signer, auth_cert=auth_cert, messagelog=self.messagelog, ocsp_cache=ocsp_cache, peers=peers,
            service_session=self.http, peer_ssl=peer_client_ssl, limits=limits, clock=self.clock,
        )
        ctx_ref.append(ctx)
        self.context = ctx
        # sockets: server side first, so that peers can reach us by the time clients can
        server_runner = await self._serve(build_server_app(ctx), s.server_host, s.server_port, peer_server_ssl)
        self.server_address = f"{s.server_host}:{self._port(server_runner)}"
        client_runner = await self._serve(build_client_app(ctx), s.client_host, s.client_port, None)
        self.client_url = f"http://{s.client_host}:{self._port(client_runner)}"
        if s.client_https_port >= 0:
            https = tls.client_facing_context(str(self.files.internal_cert), str(self.files.internal_key),
                                              client_cas=await self._is_certs())
            self._client_https_ssl = https
            https_runner = await self._serve(build_client_app(ctx), s.client_host, s.client_https_port, https)
            self.client_https_url = f"https://{s.client_host}:{self._port(https_runner)}"
        self._tasks.append(asyncio.create_task(self.globalconf.run(self._stop), name="globalconf-poll"))
        self._tasks.append(asyncio.create_task(self._reload_loop(), name="serverconf-reload"))
        log.info("security server started", server=str(self.server_id), client_url=self.client_url,
                 server_address=self.server_address)

    @staticmethod
    def _cas(conf: GlobalConf | None) -> list[x509.Certificate]:
        return [] if conf is None else [ca.certificate for ca in conf.certificate_authorities]

    def _on_conf(self, conf: GlobalConf, *contexts: ssl.SSLContext) -> None:
        for ctx in contexts:
            tls.add_trusted_cas(ctx, self._cas(conf))

    async def _serve(
        self, app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None,
    ) -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=1024)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        self._runners.append(runner)
        return runner

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

    async def _reload_loop(self) -> None:
        interval = self.settings.server.serverconf_reload_seconds
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
            if self._stop.is_set():
                return
            try:
                await self.reload_serverconf()
            except GatewayError as e:
                log.warning("serverconf reload failed", error=e.message)
            except Exception:
                log.exception("serverconf reload failed")

    async def stop(self) -> None:
        self._stop.set()
        for runner in reversed(self._runners):  # client-facing sites were started last
            await runner.cleanup()
        self._runners.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.context is not None:
            await self.context.peers.close()
        if hasattr(self, "messagelog"):
            await self.messagelog.close()
        if hasattr(self, "http"):
            await self.http.close()
        if hasattr(self, "globalconf"):
            await self.globalconf.close()
        if hasattr(self, "engine"):
            await self.engine.dispose()
        log.info("security server stopped", server=str(self.server_id))
