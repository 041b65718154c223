"""A whole federation on loopback: development PKI, central server, security servers, adapters (I/O).

``gateway demo`` runs it until Ctrl-C; the integration tests run the same code in a temporary directory.
Everything is registered the way an operator would do it: keys generated on each security server, CSRs
signed by the development CA (which issues only the identity it is asked to certify), certificates
registered at the central server, access rights granted on the provider's server.

The description of what was started goes to ``federation.json`` (see ``docs/demo.md`` for the contract).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.demo_data import demo_adapters, write_demo_data
from adapters.server import RunningAdapters, start_adapters
from gateway.admin.central.app import CentralAdminHandle, start_central_admin
from gateway.admin.roles import CENTRAL_ROLES, ROLES
from gateway.central import registry
from gateway.central.app import CentralHandle, start_central
from gateway.central.publisher import current_anchor
from gateway.dev.idp import DevIdentityProvider, RunningIdentityProvider, TestCitizen, start_identity_provider
from gateway.dev.pki.acme import AcmeServer, new_eab_key
from gateway.dev.pki.ca import DevCA
from gateway.dev.pki.http import PkiServers, start_pki_servers
from gateway.errors import ConfigError
from gateway.files import private_dir, write_private_text
from gateway.globalconf.fetcher import AiohttpFetcher
from gateway.globalconf.updater import GlobalConfUpdater
from gateway.identifiers import MemberId, SecurityServerId, ServiceId, SubsystemId
from gateway.portal.app import Portal, RunningPortal, start_portal
from gateway.portal.usage import anchor_verifier
from gateway.server.keyfiles import KeyFiles
from gateway.server.runtime import SecurityServer
from gateway.serverconf.access import AccessRule
from gateway.settings import (
    AdminSettings,
    CentralSettings,
    GlobalConfSettings,
    PkiSettings,
    PortalSettings,
    ServerSettings,
    Settings,
    WitnessSettings,
)
from gateway.trust import certprofile, keys

log = structlog.get_logger("gateway.dev.demo")

MARKER = ".gateway-demo"  # a directory holding this file may be wiped by the next demo run
LOCK_FILE = ".gateway-demo.lock"  # held (flock) while a demo runs on the directory: DemoLock


SOAP_ADAPTERS = frozenset({"persons-soap"})  # the demo's SOAP services (adapters/soap.py), the rest REST


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberSpec:
    id: MemberId
    name: str
    subsystems: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSpec:
    id: SecurityServerId
    clients: tuple[SubsystemId, ...]
    services: dict[ServiceId, str] = field(default_factory=dict)  # service -> adapter name


def default_layout(instance: str = "DEV") -> tuple[list[MemberSpec], list[ServerSpec]]:
    """Agency A (GOV/1001) consumes through ss1; agency B (GOV/1002) provides two registries through ss2."""
    a = MemberId(instance=instance, member_class="GOV", member_code="1001")
    b = MemberId(instance=instance, member_class="GOV", member_code="1002")
    consumer = a.subsystem("consumer")
    registry_ = b.subsystem("registry")
    members = [
        MemberSpec(id=a, name="Agency A", subsystems=("consumer",)),
        MemberSpec(id=b, name="Agency B", subsystems=("registry",)),
    ]
    servers = [
        ServerSpec(id=a.server("ss1"), clients=(consumer,)),
        ServerSpec(
            id=b.server("ss2"), clients=(registry_,),
            services={registry_.service("persons"): "persons", registry_.service("companies"): "companies",
                      registry_.service("getPerson"): "persons-soap"},
        ),
    ]
    return members, servers


@dataclass
class Federation:
    """What :func:`start_federation` started; :meth:`close` stops it all."""

    workdir: Path
    instance: str
    ca: DevCA
    pki: PkiServers
    central: CentralHandle
    anchor_path: Path
    adapters: RunningAdapters | None
    servers: dict[SecurityServerId, SecurityServer]
    specs: list[ServerSpec]
    members: list[MemberSpec]
    central_admin: CentralAdminHandle | None = None  # the central server's admin API
    portal: DemoPortal | None = None  # the citizen portal and its identity provider (portal=True)
    admin_credentials: Path | None = None  # admin-credentials.json (0600): the first admin user of each server
    lock: DemoLock | None = None  # the hold on workdir, released by close()
    acme: AcmeServer | None = None  # the development CA's ACME endpoint (acme_validity=; docs/acme.md)
    # ACME host name -> the server whose http-01 responder answers for it (a test may put a restarted one in)
    acme_hosts: dict[str, SecurityServer] = field(default_factory=dict)
    _stopped: bool = False

    def server(self, code: str) -> SecurityServer:
        return next(s for sid, s in self.servers.items() if sid.server_code == code)

    async def publish_and_refresh(self) -> None:
        """Publish the central registry now and make every security server download it now."""
        await self.central.publish_now()
        for server in self.servers.values():
            await server.globalconf.refresh()

    def describe(self) -> dict[str, Any]:
        """The ``federation.json`` contract (docs/demo.md)."""
        servers = []
        for spec in self.specs:
            ss = self.servers[spec.id]
            servers.append({
                "id": str(spec.id),
                "client_url": ss.client_url,
                "client_https_url": ss.client_https_url,
                "server_address": ss.server_address,
                "admin_url": ss.admin_url or None,
                "metrics_url": f"{ss.ops_url}/metrics" if ss.ops_url else None,
                "readiness_url": f"{ss.ops_url}/readyz" if ss.ops_url else None,
                "database_url": ss.settings.server.database_url,
                "state_dir": str(Path(ss.settings.server.state_dir).resolve()),
                "settings": str((self.workdir / f"{spec.id.server_code}.toml").resolve()),
                "clients": [str(c) for c in spec.clients],
                "services": [str(s) for s in spec.services],
            })
        adapters = {}
        if self.adapters is not None:
            for spec in self.specs:
                for service, name in spec.services.items():
                    adapters[str(service)] = self.adapters.urls[name]
        return {
            "instance": self.instance,
            "central": {
                "url": self.central.url, "globalconf_url": f"{self.central.url}/globalconf",
                "admin_url": None if self.central_admin is None else self.central_admin.url,
                "settings": str((self.workdir / "central.toml").resolve()),
                "metrics_url": f"{self.central.ops_url}/metrics" if self.central.ops_url else None,
                "readiness_url": f"{self.central.ops_url}/readyz" if self.central.ops_url else None,
            },
            "anchor": str(self.anchor_path.resolve()),
            "pki": {
                "ca_cert": str((self.workdir / "pki" / "ca.pem").resolve()),
                "ocsp_url": self.pki.ocsp_url,
                "tsa_url": self.pki.tsa_url,
            },
            "members": [{"id": str(m.id), "name": m.name, "subsystems": list(m.subsystems)} for m in self.members],
            "servers": servers,
            "adapters": adapters,
            "admin_credentials": None if self.admin_credentials is None else str(self.admin_credentials),
            "portal": None if self.portal is None else self.portal.describe(),
            "pid": os.getpid(),
            "processes": None,  # gateway demo --processes: each part's pid, argv, log (gateway/dev/processes.py)
        }

    async def stop_parts(self, *, keep_identity_provider: bool = False) -> None:
        """Stop every part started in this process (once), keeping the directory's lock (and the portal's
        identity provider if ``keep_identity_provider``: :meth:`close` stops it)."""
        if self._stopped:
            return
        self._stopped = True
        if self.portal is not None:
            await (self.portal.close_portal() if keep_identity_provider else self.portal.close())
        for server in self.servers.values():
            await server.stop()
        if self.adapters is not None:
            await self.adapters.close()
        if self.central_admin is not None:
            await self.central_admin.close()
        await self.central.close()
        await self.pki.close()

    async def close(self) -> None:
        await self.stop_parts()
        if self.portal is not None:
            await self.portal.close()  # the identity provider, if stop_parts kept it
        if self.lock is not None:
            self.lock.release()


PORTAL_SUBSYSTEM = "portal"  # the portal's subsystem, of the first consuming member, on its server
DEMO_PURPOSES = (  # the purpose list the demo publishes with the portal ("CODE=text", [central])
    "BENEFITS=Checking eligibility for social benefits",
    "TAX=Tax assessment",
    "POLICE=Criminal investigation",
)


@dataclass
class DemoPortal:
    """The citizen portal (:mod:`gateway.portal`), its development identity provider and its own global
    configuration client, all in the demo's process."""

    client: SubsystemId
    idp: RunningIdentityProvider
    running: RunningPortal
    updater: GlobalConfUpdater
    fetcher: AiohttpFetcher
    citizens: tuple[TestCitizen, ...]

    def describe(self) -> dict[str, Any]:
        return {"url": self.running.url, "client": str(self.client), "issuer": self.idp.url,
                "client_id": self.running.portal.settings.client_id,
                "citizens": [{"subject": c.subject, "name": c.name} for c in self.citizens]}

    _portal_closed: bool = field(default=False, init=False, repr=False)
    _idp_closed: bool = field(default=False, init=False, repr=False)

    async def close_portal(self) -> None:
        """Stop the portal and its configuration client, keeping the identity provider (``--processes``: the
        portal becomes a process of its own, and the provider stays in the demo's). Idempotent."""
        if self._portal_closed:
            return
        self._portal_closed = True
        await self.running.close()
        await self.updater.close()
        await self.fetcher.close()

    async def close(self) -> None:
        """Stop the portal and the identity provider. Idempotent."""
        await self.close_portal()
        if not self._idp_closed:
            self._idp_closed = True
            await self.idp.close()


def with_portal(layout: tuple[list[MemberSpec], list[ServerSpec]]) -> tuple[list[MemberSpec], list[ServerSpec]]:
    """The layout plus the portal's subsystem, for the first member that only consumes, on its server."""
    members, specs = layout
    consumer = next(s for s in specs if not s.services)
    owner = consumer.id.owner
    portal = owner.subsystem(PORTAL_SUBSYSTEM)
    members = [dataclasses.replace(m, subsystems=(*m.subsystems, PORTAL_SUBSYSTEM)) if m.id == owner else m
               for m in members]
    specs = [dataclasses.replace(s, clients=(*s.clients, portal)) if s.id == consumer.id else s for s in specs]
    return members, specs


async def _start_portal(
    workdir: Path, anchor: Path, server: SecurityServer, client: SubsystemId, *, clock: Callable[[], datetime],
) -> DemoPortal:
    """The identity provider, then the portal calling through ``server``'s client port as ``client``."""
    provider = DevIdentityProvider(clients={}, clock=clock)
    idp = await start_identity_provider(provider)
    fetcher = AiohttpFetcher()
    updater = GlobalConfUpdater(anchor, workdir / "portal" / "globalconf", fetcher, clock=clock)
    try:
        await updater.refresh()
        settings = PortalSettings(port=0, security_server_url=server.client_url, client=str(client),
                                  issuer=idp.url)
        running = await start_portal(Portal(settings=settings, globalconf=updater.require_valid, clock=clock,
                                            verify=anchor_verifier(updater.anchor)))
    except BaseException:
        await idp.close()
        await updater.close()
        await fetcher.close()
        raise
    provider.clients[settings.client_id] = (running.portal.redirect_uri,)
    return DemoPortal(client=client, idp=idp, running=running, updater=updater, fetcher=fetcher,
                      citizens=provider.citizens)


class DemoLock:
    """The running demo's hold on its directory: ``flock(2)`` on ``<dir>/.gateway-demo.lock``, which the
    operating system drops when the last process holding it ends (``kill -9`` included). The file says which
    process took it. ``gateway demo --processes`` hands the descriptor to each part it starts, so the directory
    stays held while any of them runs."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def take(cls, workdir: Path) -> DemoLock:
        """Take the lock of ``workdir`` (which exists), or refuse.

        Raises:
            ConfigError: a running demo (or a part it started) holds the directory.
        """
        path = workdir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise ConfigError(f"cannot lock {path}: {e.strerror or e}") from e
            raise ConfigError(
                f"{workdir} is in use by a running 'gateway demo' ({holder}); nothing in it was changed",
                hint="stop that demo first (Ctrl-C, or the PIDs in its federation.json), or choose another "
                     "directory with --dir",
            ) from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {utc_now():%Y-%m-%dT%H:%M:%SZ}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # the lock goes with the last descriptor of this open file
            self.fd = -1


def _prepare_workdir(path: str | Path, *, fresh: bool) -> tuple[Path, DemoLock]:
    """Check that the directory is ours, lock it (before anything in it is touched), wipe it if ``fresh``.

    Raises:
        ConfigError: not empty and not made by the demo, or held by a running demo.
    """
    workdir = Path(path).resolve()
    if workdir.exists() and any(workdir.iterdir()) and not (workdir / MARKER).exists():
        raise ConfigError(
            f"{workdir} is not empty and was not made by 'gateway demo'",
            hint="choose another directory with --dir, or empty this one",
        )
    private_dir(workdir)
    lock = DemoLock.take(workdir)
    os.chmod(workdir, 0o700)  # made by the demo (or empty): the service user's alone, as every state directory
    try:
        if fresh:  # everything but the lock file, whose open description holds the lock
            for entry in workdir.iterdir():
                if entry.name == LOCK_FILE:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        (workdir / MARKER).write_text("made by gateway demo; the next run may delete this directory\n")
    except BaseException:
        lock.release()
        raise
    return workdir, lock


async def _issue_token_keys(
    ca: DevCA, files: KeyFiles, server_id: SecurityServerId, *, name: str, now: datetime,
    validity: timedelta | None = None,
) -> dict[str, Any]:
    """The same with a software token (``key_store="token"``): a random PIN in ``token.pin`` (0600), keys
    generated in the token, certificates imported and activated. Returns the ``[server]`` token settings."""
    import secrets

    from gateway.token.model import ca_finder
    from gateway.token.soft import SoftToken

    private_dir(files.dir)
    pin = secrets.token_urlsafe(18)
    pin_file = files.dir / "token.pin"
    write_private_text(pin_file, pin + "\n")
    token = await SoftToken.init(files.dir / "token", pin)
    pairs: tuple[tuple[certprofile.CertKind, certprofile.Identity], ...] = (
        ("auth", server_id), ("sign", server_id.owner),
    )
    for kind, identity in pairs:
        entry = await token.generate_key(kind, now=now)
        csr = await token.csr(entry.id, server_id=server_id, name=name)
        cert = ca.issue(csr, kind=kind, expected_identity=identity, now=now, validity=validity)
        imported = await token.import_cert(keys.cert_pem(cert).encode(), server_id=server_id,
                                           ca_for=ca_finder([ca.ca_cert]), now=now)
        await token.activate(imported.sha256)
        if kind == "auth":  # the central registration below reads it from here, as with key files
            keys.write_public_file(files.auth_cert, keys.cert_pem(cert).encode())
    token.logout()
    return {"token_dir": str(files.dir / "token"), "token_pin_file": str(pin_file)}


async def _create_admin_users(
    workdir: Path, servers: dict[SecurityServerId, SecurityServer], *, now: datetime,
    central_admin: CentralAdminHandle | None = None,
) -> Path | None:
    """An ``admin`` user with every role on each server whose admin API is on (the central server's too), with
    a random password written to ``<workdir>/admin-credentials.json`` (mode 0600; docs/demo.md). None if no
    admin API is on."""
    import secrets

    central: dict[str, str] = {}
    if central_admin is not None:
        password = secrets.token_urlsafe(18)
        await central_admin.ctx.store.add_user("admin", password, frozenset(CENTRAL_ROLES), now=now)
        central = {"admin_url": central_admin.url, "username": "admin", "password": password}
    found: dict[str, dict[str, str]] = {}
    for server_id, ss in servers.items():
        if not ss.admin_url:
            continue
        password = secrets.token_urlsafe(18)
        await ss.admin_store.add_user("admin", password, frozenset(ROLES), now=now)
        found[str(server_id)] = {"admin_url": ss.admin_url, "username": "admin", "password": password}
    if not found and not central:
        return None
    path = workdir / "admin-credentials.json"
    document = {"servers": found, **({"central": central} if central else {})}
    write_private_text(path, json.dumps(document, indent=2) + "\n")
    return path


def _issue_server_keys(ca: DevCA, files: KeyFiles, server_id: SecurityServerId, *, name: str, now: datetime,
                       validity: timedelta | None = None) -> None:
    """What an operator does on a new security server: keys, CSRs, certificates from the CA."""
    private_dir(files.dir)
    plan: tuple[tuple[certprofile.CertKind, certprofile.Identity, Path, Path], ...] = (
        ("auth", server_id, files.auth_key, files.auth_cert),
        ("sign", server_id.owner, files.sign_key, files.sign_cert),
    )
    for kind, identity, key_path, cert_path in plan:
        key = keys.generate_private_key()
        csr = certprofile.build_csr(key, identity, kind=kind, name=name)
        cert = ca.issue(csr, kind=kind, expected_identity=identity, now=now, validity=validity)
        keys.write_private_key(key_path, key)
        keys.write_public_file(cert_path, keys.cert_pem(cert).encode())


async def start_federation(
    workdir: str | Path,
    *,
    instance: str = "DEV",
    layout: tuple[list[MemberSpec], list[ServerSpec]] | None = None,
    database_urls: dict[str, str] | None = None,
    with_adapters: bool = True,
    adapter_urls: dict[str, str] | None = None,
    fresh: bool = True,
    clock: Callable[[], datetime] = utc_now,
    server_overrides: dict[str, Any] | None = None,
    key_store: Literal["files", "token"] = "files",
    central_overrides: dict[str, Any] | None = None,
    portal: bool = False,
    cert_validity: timedelta | None = None,
    acme_validity: timedelta | None = None,
    witness: bool = False,
    witness_policies: bool = False,
) -> Federation:
    """Start and register a complete federation on 127.0.0.1 with free ports.

    ``database_urls`` maps a server code (or ``central``) to a database URL (default: SQLite files in
    ``workdir``); ``adapter_urls`` maps adapter names to URLs when ``with_adapters`` is false (a service whose
    adapter it does not name is left out).
    ``key_store="token"`` keeps each server's keys in a software token (docs/tokens.md) with a random PIN
    in ``<server>/token.pin`` (0600) instead of plain key files. ``portal`` adds the portal's subsystem to the
    layout (:func:`with_portal`) and starts the citizen portal and the development identity provider.
    ``witness`` switches every server's witness on (``[witness] enabled``, docs/witness.md);
    ``witness_policies`` (with ``witness``) then sets, for each server, a witness policy naming the witnesses of
    every other member's servers with quorum 1 (docs/witness.md section 3), published before this returns.
    ``cert_validity``: the lifetime of the servers' first certificates (default 730 days). ``acme_validity``
    gives the development CA an ACME endpoint issuing certificates of that lifetime, and every server (which
    needs ``key_store="token"``) an EAB key of its owner and the ``[server] acme_*`` settings, with its host name
    ``<server code>.<instance>.test`` resolved to its own http-01 responder (docs/acme.md).

    Raises:
        ConfigError: the directory is not ours, or a part cannot start.
    """
    workdir, lock = _prepare_workdir(workdir, fresh=fresh)
    try:
        members, specs = layout or default_layout(instance)
        if portal:
            members, specs = with_portal((members, specs))
        portal_client = next((c for spec in specs for c in spec.clients if c.subsystem_code == PORTAL_SUBSYSTEM),
                             None) if portal else None
        if portal_client is not None:  # published in the global configuration (docs/transparency.md section 1)
            central_overrides = {"transparency_portal": str(portal_client),
                                 "transparency_purposes": DEMO_PURPOSES, **(central_overrides or {})}
        dbs = database_urls or {}
        now = clock()
        # (1) development PKI: CA, OCSP responder, TSA
        ca = DevCA.init(workdir / "pki", name=f"{instance} Development CA", now=now)
        acme = None if acme_validity is None else AcmeServer(ca, validity=acme_validity)
        responders: dict[str, SecurityServer] = {}  # ACME host name -> the server answering its http-01

        def http01_target(identifier: str) -> tuple[str, int]:
            ss = responders.get(identifier)
            port = ss.renewal.responder.port if ss is not None and ss.renewal is not None else 9  # 9: discard
            return "127.0.0.1", port

        pki = await start_pki_servers(ca, "127.0.0.1", 0, 0, clock=clock, acme=acme, http01_target=http01_target)
        started: list[Any] = [pki]
        try:
            # (2) central server, and the trust anchors it publishes
            central_settings = CentralSettings(
                instance=instance, host="127.0.0.1", port=0,
                database_url=dbs.get("central", f"sqlite+aiosqlite:///{workdir / 'central.db'}"),
                key_dir=str(workdir / "central"), ops_port=0, **(central_overrides or {}),
            )
            central = await start_central(central_settings, host="127.0.0.1", port=0, clock=clock)
            started.append(central)
            central_admin = await start_central_admin(central, AdminSettings(), host="127.0.0.1", port=0)
            started.append(central_admin)
            engine = central.engine
            await registry.add_ca(engine, name=f"{instance} Development CA", certificate=keys.cert_pem(ca.ca_cert),
                                  ocsp_urls=[pki.ocsp_url])
            await registry.add_tsa(engine, name=f"{instance} Development TSA", url=pki.tsa_url,
                                   certificate=keys.cert_pem(ca.tsa_cert))
            for m in members:
                await registry.add_member(engine, m.id, name=m.name, instance=instance)
                for code in m.subsystems:
                    await registry.add_subsystem(engine, m.id.subsystem(code), instance=instance)
            await central.publish_now()
            # the running central server's settings (real port), for `gateway -c central.toml central ...`
            write_settings(workdir / "central.toml", Settings(central=central.settings,
                                                               pki=PkiSettings(dir=str(workdir / "pki"))),
                            sections={"central": None, "pki": ("dir",)})
            anchor_path = workdir / "anchor.json"
            anchor_path.write_bytes(await current_anchor(engine, central.settings))
            # (3) adapters with generated registries
            adapters = None
            if with_adapters:
                data = write_demo_data(workdir / "registries")
                adapters = await start_adapters(demo_adapters(data), "127.0.0.1", 0)
                started.append(adapters)
            urls = adapters.urls if adapters is not None else (adapter_urls or {})
            skipped: set[ServiceId] = set()
            # (4) security servers: keys and certificates, start, register centrally
            names = {m.id: m.name for m in members}
            servers: dict[SecurityServerId, SecurityServer] = {}
            for spec in specs:
                code = spec.id.server_code
                files = KeyFiles(dir=workdir / code)
                token_settings: dict[str, Any] = {}
                if key_store == "token":
                    token_settings = await _issue_token_keys(ca, files, spec.id, name=names[spec.id.owner], now=clock(),
                                                             validity=cert_validity)
                else:
                    _issue_server_keys(ca, files, spec.id, name=names[spec.id.owner], now=clock(),
                                       validity=cert_validity)
                acme_identifier = f"{code}.{instance}.test".lower()
                if acme is not None:
                    if key_store != "token":
                        raise ConfigError("ACME renewal needs key_store=\"token\"")
                    eab = acme.add_eab(new_eab_key(spec.id.owner))
                    eab_file = write_private_text(files.dir / "acme-eab.key", eab.hmac_b64 + "\n")
                    assert pki.acme_directory_url is not None
                    token_settings |= {
                        "acme_directory_url": pki.acme_directory_url, "acme_eab_kid": eab.kid,
                        "acme_eab_key_file": str(eab_file), "acme_identifier": acme_identifier,
                        "acme_http01_host": "127.0.0.1", "acme_http01_port": 0,
                    }
                server_settings = ServerSettings(
                    id=str(spec.id), database_url=dbs.get(code, f"sqlite+aiosqlite:///{workdir / (code + '.db')}"),
                    state_dir=str(files.dir), client_port=0, client_https_port=0, server_port=0,
                    **{"admin_port": 0, "ops_port": 0, **token_settings, **(server_overrides or {})},
                )
                settings = Settings(
                    central=central_settings, server=server_settings,
                    globalconf=GlobalConfSettings(anchor=str(anchor_path),
                                                  cache_dir=str(workdir / code / "globalconf")),
                    witness=WitnessSettings(enabled=witness),
                )
                write_settings(workdir / f"{code}.toml", settings)
                ss = SecurityServer(settings, clock=clock)
                responders[acme_identifier] = ss
                await ss.start()
                servers[spec.id] = ss
                started.append(ss)
                await registry.add_server(engine, spec.id, address=ss.server_address, instance=instance)
                await registry.add_auth_cert(engine, spec.id, files.auth_cert.read_bytes(), instance=instance)
                for client in spec.clients:
                    await registry.add_server_client(engine, spec.id, client, instance=instance)
                # (5) this server's own configuration: clients, services, access rights
                store = ss.store
                for client in spec.clients:
                    await store.add_client(client, is_auth="none")
                for service, adapter in spec.services.items():
                    if adapter not in urls and not with_adapters:
                        skipped.add(service)  # adapter_urls names only some adapters: the other services are out
                        continue
                    url = urls[adapter]
                    # a SOAP service's description is its WSDL (getWsdl fetches it), a REST one's its OpenAPI
                    description = f"{url}?wsdl" if adapter in SOAP_ADAPTERS else f"{url}/openapi.json"
                    await store.add_service(service, url=url, openapi_url=description)
            # (6) witness policies, once every witness key is known: each server witnessed by the other members'
            if witness and witness_policies:
                await set_demo_witness_policies(engine, servers, instance=instance)
            # every client of every consuming server may call every service of the demo
            consumers = [c for spec in specs if not spec.services for c in spec.clients if c != portal_client]
            for spec in specs:
                for service in spec.services:
                    if service in skipped:
                        continue
                    for client in consumers:
                        await servers[spec.id].store.grant(AccessRule(subject=client, service=service))
            fed = Federation(
                workdir=workdir, instance=instance, ca=ca, pki=pki, central=central, anchor_path=anchor_path,
                adapters=adapters, servers=servers, specs=specs, members=members, central_admin=central_admin,
                admin_credentials=await _create_admin_users(workdir, servers, now=clock(), central_admin=central_admin),
                lock=lock, acme=acme, acme_hosts=responders,
            )
            for ss in servers.values():
                await ss.reload_serverconf()
            await fed.publish_and_refresh()
            if portal_client is not None:
                host = next(spec.id for spec in specs if portal_client in spec.clients)
                fed.portal = await _start_portal(workdir, anchor_path, servers[host], portal_client, clock=clock)
            return fed
        except BaseException:
            for part in reversed(started):
                try:
                    await (part.stop() if isinstance(part, SecurityServer) else part.close())
                except Exception:
                    log.exception("cleanup failed")
            raise
    except BaseException:
        lock.release()  # a demo that did not start holds nothing
        raise


async def set_demo_witness_policies(
    engine: AsyncEngine, servers: Mapping[SecurityServerId, SecurityServer], *, instance: str,
) -> None:
    """For each server, a witness policy naming the witness of every server of another member (quorum 1; the
    URL the default, ``https://<its address>/witness``). A server with no other member's witness gets none."""
    keys = {sid: ss.witness.signer.key for sid, ss in servers.items() if ss.witness is not None}
    for sid in servers:
        others = [registry.WitnessSpec(vkey=key.vkey, url="", server=host)
                  for host, key in keys.items() if host.owner != sid.owner]
        if others:
            await registry.set_witness_policy(engine, sid, quorum=1, witnesses=others, instance=instance)


def write_settings(
    path: Path, settings: Settings,
    sections: dict[str, tuple[str, ...] | None] | None = None,
) -> None:
    """Write the settings a part was started with, so ``gateway -c FILE ...`` commands can use them.

    ``sections`` maps a section to the keys to write (None: every key); default ``[server]`` and
    ``[globalconf]`` in full."""
    lines = []
    for section, only in (sections or {"server": None, "globalconf": None}).items():
        lines.append(f"[{section}]")
        for f in dataclasses.fields(getattr(settings, section)):
            if only is not None and f.name not in only:
                continue
            value = getattr(getattr(settings, section), f.name)
            lines.append(f"{f.name} = {json.dumps(value)}")
        lines.append("")
    path.write_text("\n".join(lines))
    os.chmod(path, 0o644)


def curl_example(fed: Federation) -> str:
    consumer_spec = next(s for s in fed.specs if not s.services)
    provider_spec = next(s for s in fed.specs if s.services)
    client = consumer_spec.clients[0]
    service = next(iter(provider_spec.services))
    url = fed.servers[consumer_spec.id].client_url
    return (
        f"curl -s -H 'X-Road-Client: {client}' -H 'Accept: application/json' \\\n"
        f"     '{url}/r1/{service}/?limit=2'"
    )


def soap_hint(fed: Federation) -> str:
    """Where the demo's SOAP service is (README shows a whole call)."""
    consumer_spec = next(s for s in fed.specs if not s.services)
    url = fed.servers[consumer_spec.id].client_url
    client = consumer_spec.clients[0]
    soap = [s for spec in fed.specs for s, adapter in spec.services.items() if adapter in SOAP_ADAPTERS]
    if not soap:
        return ""
    service = soap[0]
    return (
        f"SOAP (X-Road message protocol 4.0): POST the message to {url}/ (service {service}); its WSDL:\n"
        f"     '{url}/wsdl?xRoadInstance={service.instance}&memberClass={service.member_class}"
        f"&memberCode={service.member_code}&subsystemCode={service.subsystem_code}"
        f"&serviceCode={service.service_code}&client={client}'"
    )


def print_banner(
    fed: Federation, federation_json: Path, out: Callable[[str], None] = print,
    processes: dict[str, Any] | None = None,
) -> None:
    d = fed.describe()
    out(f"Federation {fed.instance} is running (Ctrl-C stops it).")
    out(f"  central server   {d['central']['url']}   anchor {d['anchor']}")
    out(f"  OCSP responder   {d['pki']['ocsp_url']}   TSA {d['pki']['tsa_url']}")
    for s in d["servers"]:
        out(f"  {s['id']:<22} clients {s['client_url']}  peers {s['server_address']}")
        if s.get("metrics_url"):
            out(f"  {'':<22} metrics {s['metrics_url']}  readiness {s['readiness_url']}")
    if d.get("admin_credentials"):
        out(f"  admin APIs       {', '.join(s['admin_url'] for s in d['servers'] if s['admin_url'])}")
        out(f"  web interface    {', '.join(s['admin_url'] + '/ui/' for s in d['servers'] if s['admin_url'])}")
        out(f"                   user 'admin', passwords in {d['admin_credentials']}")
    if d["central"].get("admin_url"):
        out(f"  central admin    {d['central']['admin_url']} (user 'admin', password in the same file)")
        out(f"  central web      {d['central']['admin_url']}/ui/")
    if d.get("portal"):
        p = d["portal"]
        out(f"  citizen portal   {p['url']}/  as {p['client']}; identity provider {p['issuer']}")
        out(f"                   test citizens {', '.join(c['subject'] for c in p['citizens'])}")
    if processes:
        pids = ", ".join(f"{name} {part['pid']}" for name, part in processes.items())
        out(f"  processes        {pids}")
    out(f"  description      {federation_json}")
    out("")
    out("Try:")
    out(curl_example(fed))
    out(soap_hint(fed))


def member_names(members: Sequence[MemberSpec]) -> dict[MemberId, str]:
    return {m.id: m.name for m in members}
