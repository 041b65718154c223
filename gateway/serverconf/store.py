"""Serverconf in the database: async CRUD and the in-memory snapshot for the hot path (I/O).

Every change runs in one transaction and checks what it refers to first, so errors are precise:

- a duplicate (client, service, endpoint, access right, group, group member, IS certificate) is
  :class:`~gateway.errors.RequestError` with status **409** (``Client.AlreadyExists``);
- a missing one is status **404** (``Client.NotFound``);
- a malformed value (URL, timeout, certificate, method, path pattern, identifier) is status **400**;
- any other database failure is :class:`~gateway.errors.GatewayError` ``Server.ServerProxy.DatabaseError``.

:meth:`ServerConfStore.snapshot` reads everything once and returns a frozen
:class:`~gateway.serverconf.ServerConfSnapshot`; the proxies hold it and never query per request. Every change
also counts itself in ``sc_versions`` in its own transaction (:meth:`ServerConfStore.versions`): each process
of the server (its workers and nodes) polls that counter and reloads its snapshot when it moves.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import AlreadyExists, DatabaseError, NotFound, RequestError
from gateway.identifiers import ClientId, ServiceId, SubsystemId, parse_client
from gateway.serverconf import (
    CLIENT_STATUSES,
    DEFAULT_SERVICE_TIMEOUT,
    IS_AUTH_MODES,
    MAX_SERVICE_TIMEOUT,
    ClientInfo,
    ClientStatus,
    IsAuth,
    ServerConfSnapshot,
    ServiceInfo,
)
from gateway.serverconf.access import (
    AccessPolicy,
    AccessRule,
    Endpoint,
    LocalGroupId,
    parse_subject,
    subject_type,
)
from gateway.serverconf.models import (
    KEYS_VERSION,
    SERVERCONF_VERSION,
    URL_LENGTH,
    VERSION_TABLE,
    access_rights,
    clients,
    endpoints,
    is_certs,
    local_group_members,
    local_groups,
    services,
    versions,
)
from gateway.serverconf.subject import check_mismatch, parse_location
from gateway.storage.db import migrate
from gateway.storage.transaction import describe, transaction

MIGRATIONS = Path(__file__).parent / "migrations"
MAX_DESCRIPTION_LENGTH = 1024  # characters; the column width





def _changed_concurrently(e: IntegrityError) -> AlreadyExists:
    # a concurrent change slipped between our check and our write
    return AlreadyExists(f"serverconf changed concurrently: {e.orig}")


def _database_error(e: SQLAlchemyError | OSError) -> DatabaseError:
    return DatabaseError(f"serverconf database error: {describe(e)}")


def check_url(url: str, *, what: str = "service URL") -> str:
    """An absolute ``http``/``https`` URL with a host, no credentials, no fragment.

    Raises:
        RequestError: the URL is malformed.
    """
    if len(url) > URL_LENGTH:
        raise RequestError(f"{what} is longer than {URL_LENGTH} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise RequestError(f"{what} {url[:80]!r} contains a space or control character")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as e:
        raise RequestError(f"{what} {url[:80]!r} is malformed: {e}") from e
    if parts.scheme not in ("http", "https"):
        raise RequestError(f"{what} {url[:80]!r} must start with http:// or https://")
    if not parts.hostname:
        raise RequestError(f"{what} {url[:80]!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise RequestError(f"{what} {url[:80]!r} may not carry credentials", hint="use a secret reference")
    if parts.fragment or url.endswith("#"):
        raise RequestError(f"{what} {url[:80]!r} may not have a fragment")
    return url


def check_timeout(seconds: float) -> float:
    """Raises: RequestError: not a number in (0, 3600]."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise RequestError(f"service timeout {seconds!r} is not a number of seconds")
    if not 0 < seconds <= MAX_SERVICE_TIMEOUT:
        raise RequestError(f"service timeout {seconds} s is not in (0, {MAX_SERVICE_TIMEOUT:g}] seconds")
    return float(seconds)


def load_certificate(data: bytes) -> bytes:
    """An X.509 certificate in PEM or DER form, returned as DER.

    Raises:
        RequestError: the data is not one certificate.
    """
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
    except ValueError as e:
        raise RequestError(
            f"information system certificate is not a PEM or DER X.509 certificate: {e}"
        ) from e
    return cert.public_bytes(Encoding.DER)


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, lower-case hex (as IS TLS certificates are matched)."""
    return hashlib.sha256(der).hexdigest()


async def migrate_serverconf(engine: AsyncEngine) -> None:
    """Bring the serverconf schema up to date (its own Alembic version table)."""
    await migrate(engine, MIGRATIONS, VERSION_TABLE)


class ServerConfStore:
    """Serverconf tables behind async methods; the engine is the caller's."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def migrate(self) -> None:
        await migrate_serverconf(self._engine)

    def _tx(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return transaction(self._engine.begin(), conflict=_changed_concurrently, database_error=_database_error)

    @contextlib.asynccontextmanager
    async def _change(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that changes serverconf: it also counts the change (:meth:`versions`), so that every
        process of this server (workers, nodes) sees that it must reload (docs/operations.md)."""
        async with self._tx() as conn:
            yield conn
            await conn.execute(_bump(SERVERCONF_VERSION))

    async def versions(self) -> dict[str, int]:
        """The change counters: ``serverconf`` (clients, services, rights, groups, IS certificates; counted by
        every change made through this store) and ``keys`` (counted by :meth:`keys_changed`).

        Raises:
            GatewayError: the database failed (``DatabaseError``).
        """
        async with self._tx() as conn:
            return {str(name): int(v) for name, v in await conn.execute(sa.select(versions.c.name, versions.c.version))}

    async def keys_changed(self) -> None:
        """Count a change of the token's keys or certificates, which every process reloads (the token's files
        are shared between a node's workers, and must be between nodes: docs/operations.md).

        Raises:
            GatewayError: the database failed (``DatabaseError``).
        """
        async with self._tx() as conn:
            await conn.execute(_bump(KEYS_VERSION))

    async def check_writable(self) -> None:
        """A write that changes nothing (the keys counter set to itself, committed): proves that the database
        takes writes now, for the readiness check.

        Raises:
            GatewayError: the database failed (``DatabaseError``).
        """
        async with self._tx() as conn:
            await conn.execute(sa.update(versions).where(versions.c.name == KEYS_VERSION)
                               .values(version=versions.c.version))

    # ---------------------------------------------------------------------------------------------- helpers

    @staticmethod
    async def _client_pk(conn: AsyncConnection, client: ClientId) -> int | None:
        pk = await conn.scalar(sa.select(clients.c.id).where(clients.c.client == str(client)))
        return None if pk is None else int(pk)

    async def _need_client(self, conn: AsyncConnection, client: ClientId) -> int:
        pk = await self._client_pk(conn, client)
        if pk is None:
            raise NotFound(f"{client.typed()} is not a client of this security server")
        return pk

    @staticmethod
    async def _service_pk(conn: AsyncConnection, service: ServiceId) -> int | None:
        pk = await conn.scalar(sa.select(services.c.id).where(services.c.service == str(service)))
        return None if pk is None else int(pk)

    async def _need_service(self, conn: AsyncConnection, service: ServiceId) -> int:
        pk = await self._service_pk(conn, service)
        if pk is None:
            raise NotFound(f"service {service} does not exist on this security server")
        return pk

    @staticmethod
    async def _group_pk(conn: AsyncConnection, group: LocalGroupId) -> int | None:
        pk = await conn.scalar(sa.select(local_groups.c.id).where(local_groups.c.code == group.code))
        return None if pk is None else int(pk)

    async def _need_group(self, conn: AsyncConnection, group: LocalGroupId) -> int:
        pk = await self._group_pk(conn, group)
        if pk is None:
            raise NotFound(f"local group {group.code!r} does not exist")
        return pk

    # ---------------------------------------------------------------------------------------------- clients

    async def add_client(
        self,
        client: ClientId,
        *,
        status: ClientStatus = "registered",
        is_auth: IsAuth = "https-cert",
        body_logging: bool = True,
    ) -> ClientInfo:
        """Host a member or subsystem on this server.

        Raises:
            RequestError: 409 if it is already a client; 400 for an unknown status or IS auth mode.
        """
        _check_client_fields(status, is_auth)
        async with self._change() as conn:
            if await self._client_pk(conn, client) is not None:
                raise AlreadyExists(f"{client.typed()} is already a client of this security server")
            await conn.execute(
                clients.insert().values(
                    client=str(client), status=status, is_auth=is_auth, body_logging=body_logging
                )
            )
        return ClientInfo(id=client, status=status, is_auth=is_auth, body_logging=body_logging)

    async def update_client(
        self,
        client: ClientId,
        *,
        status: ClientStatus | None = None,
        is_auth: IsAuth | None = None,
        body_logging: bool | None = None,
    ) -> ClientInfo:
        """Change a hosted client's settings; ``None`` leaves a field unchanged.

        Raises:
            RequestError: 404 if it is not a client; 400 for an unknown status or IS auth mode.
        """
        _check_client_fields(status, is_auth)
        changes: dict[str, Any] = {
            k: v for k, v in (("status", status), ("is_auth", is_auth), ("body_logging", body_logging))
            if v is not None
        }
        async with self._change() as conn:
            pk = await self._need_client(conn, client)
            if changes:
                await conn.execute(clients.update().where(clients.c.id == pk).values(**changes))
        return await self.get_client(client)

    async def remove_client(self, client: ClientId) -> None:
        """Remove a client with its IS certificates, services, endpoints and their access rights.

        Raises:
            RequestError: 404 if it is not a client.
        """
        async with self._change() as conn:
            pk = await self._need_client(conn, client)
            await conn.execute(clients.delete().where(clients.c.id == pk))

    async def add_is_cert(self, client: ClientId, cert: bytes) -> str:
        """Register an information system's TLS certificate (PEM or DER) for ``client``; returns its
        SHA-256 fingerprint.

        Raises:
            RequestError: 404 if it is not a client; 409 if the certificate is already registered; 400 if
                the data is not a certificate.
        """
        der = load_certificate(cert)
        fp = fingerprint(der)
        async with self._change() as conn:
            pk = await self._need_client(conn, client)
            exists = await conn.scalar(
                sa.select(is_certs.c.id).where(is_certs.c.client_id == pk, is_certs.c.fingerprint == fp)
            )
            if exists is not None:
                raise AlreadyExists(f"certificate {fp} is already registered for {client.typed()}")
            await conn.execute(is_certs.insert().values(client_id=pk, fingerprint=fp, cert=der))
        return fp

    async def remove_is_cert(self, client: ClientId, fp: str) -> None:
        """Raises: RequestError: 404 if the client or the certificate is not registered."""
        async with self._change() as conn:
            pk = await self._need_client(conn, client)
            result = await conn.execute(
                is_certs.delete().where(is_certs.c.client_id == pk, is_certs.c.fingerprint == fp.lower())
            )
            if result.rowcount == 0:
                raise NotFound(f"certificate {fp[:64]} is not registered for {client.typed()}")

    async def is_certificates(self) -> list[bytes]:
        """The DER of every registered information-system TLS certificate, of every client: the trust store
        of the client-facing HTTPS port (:mod:`gateway.server.runtime`)."""
        async with self._tx() as conn:
            rows = await conn.execute(sa.select(is_certs.c.cert).order_by(is_certs.c.id))
            return [bytes(row.cert) for row in rows]

    async def get_client(self, client: ClientId) -> ClientInfo:
        """Raises: RequestError: 404 if it is not a client."""
        for info in await self.list_clients(only=client):
            return info
        raise NotFound(f"{client.typed()} is not a client of this security server")

    async def list_clients(self, *, only: ClientId | None = None) -> list[ClientInfo]:
        async with self._tx() as conn:
            return await _read_clients(conn, only=only)

    # --------------------------------------------------------------------------------------------- services

    async def add_service(
        self,
        service: ServiceId,
        *,
        url: str,
        timeout_seconds: float = DEFAULT_SERVICE_TIMEOUT,
        openapi_url: str | None = None,
        enabled: bool = True,
        disabled_notice: str = "",
        endpoints_: Iterable[Endpoint] = (),
        data_subject: str | None = None,
        subject_mismatch: str = "refuse",
        purpose_required: bool = False,
    ) -> ServiceInfo:
        """Add a REST service of a hosted subsystem (``data_subject``, ``subject_mismatch``: see
        :mod:`gateway.serverconf.subject`).

        Raises:
            RequestError: 404 if the providing subsystem is not a client here; 409 if the service exists;
                400 for a malformed URL, timeout, notice or data-subject declaration.
        """
        location = None if not data_subject else parse_location(data_subject)
        mismatch = check_mismatch(subject_mismatch)
        check_url(url)
        if openapi_url is not None:
            check_url(openapi_url, what="OpenAPI URL")
        timeout = check_timeout(timeout_seconds)
        _check_notice(disabled_notice)
        eps = tuple(dict.fromkeys(endpoints_))
        async with self._change() as conn:
            owner = await self._client_pk(conn, service.subsystem)
            if owner is None:
                raise NotFound(
                    f"{service.subsystem.typed()} is not a client of this security server; add it first"
                )
            if await self._service_pk(conn, service) is not None:
                raise AlreadyExists(f"service {service} already exists")
            result = await conn.execute(
                services.insert().values(
                    client_id=owner, service=str(service), url=url, timeout_seconds=timeout,
                    openapi_url=openapi_url, enabled=enabled, disabled_notice=disabled_notice,
                    data_subject=None if location is None else str(location), subject_mismatch=mismatch,
                    purpose_required=purpose_required,
                )
            )
            (pk,) = result.inserted_primary_key or (None,)
            if eps:
                await conn.execute(
                    endpoints.insert(), [{"service_id": pk, "method": e.method, "path": e.path} for e in eps]
                )
        return ServiceInfo(
            id=service, url=url, timeout_seconds=timeout, openapi_url=openapi_url, enabled=enabled,
            disabled_notice=disabled_notice, endpoints=eps, data_subject=location, subject_mismatch=mismatch,
            purpose_required=purpose_required,
        )

    async def update_service(
        self,
        service: ServiceId,
        *,
        url: str | None = None,
        timeout_seconds: float | None = None,
        openapi_url: str | None = None,
        enabled: bool | None = None,
        disabled_notice: str | None = None,
        data_subject: str | None = None,
        subject_mismatch: str | None = None,
        purpose_required: bool | None = None,
    ) -> ServiceInfo:
        """Change a service; ``None`` leaves a field unchanged, ``openapi_url=""`` removes the OpenAPI URL,
        ``data_subject=""`` the data-subject declaration.

        Raises:
            RequestError: 404 if the service does not exist; 400 for a malformed value.
        """
        changes: dict[str, Any] = {}
        if url is not None:
            changes["url"] = check_url(url)
        if timeout_seconds is not None:
            changes["timeout_seconds"] = check_timeout(timeout_seconds)
        if openapi_url is not None:
            changes["openapi_url"] = check_url(openapi_url, what="OpenAPI URL") if openapi_url else None
        if enabled is not None:
            changes["enabled"] = enabled
        if disabled_notice is not None:
            changes["disabled_notice"] = _check_notice(disabled_notice)
        if data_subject is not None:
            changes["data_subject"] = str(parse_location(data_subject)) if data_subject else None
        if subject_mismatch is not None:
            changes["subject_mismatch"] = check_mismatch(subject_mismatch)
        if purpose_required is not None:
            changes["purpose_required"] = purpose_required
        async with self._change() as conn:
            pk = await self._need_service(conn, service)
            if changes:
                await conn.execute(services.update().where(services.c.id == pk).values(**changes))
        return await self.get_service(service)

    async def remove_service(self, service: ServiceId) -> None:
        """Remove a service with its endpoints and access rights.

        Raises:
            RequestError: 404 if the service does not exist.
        """
        async with self._change() as conn:
            pk = await self._need_service(conn, service)
            await conn.execute(services.delete().where(services.c.id == pk))

    async def add_endpoint(self, service: ServiceId, endpoint: Endpoint) -> None:
        """Raises: RequestError: 404 if the service does not exist, 409 if the endpoint does."""
        async with self._change() as conn:
            pk = await self._need_service(conn, service)
            exists = await conn.scalar(
                sa.select(endpoints.c.id).where(
                    endpoints.c.service_id == pk,
                    endpoints.c.method == endpoint.method,
                    endpoints.c.path == endpoint.path,
                )
            )
            if exists is not None:
                raise AlreadyExists(f"endpoint {endpoint} of service {service} already exists")
            await conn.execute(
                endpoints.insert().values(service_id=pk, method=endpoint.method, path=endpoint.path)
            )

    async def remove_endpoint(self, service: ServiceId, endpoint: Endpoint) -> None:
        """Raises: RequestError: 404 if the service or the endpoint does not exist."""
        async with self._change() as conn:
            pk = await self._need_service(conn, service)
            result = await conn.execute(
                endpoints.delete().where(
                    endpoints.c.service_id == pk,
                    endpoints.c.method == endpoint.method,
                    endpoints.c.path == endpoint.path,
                )
            )
            if result.rowcount == 0:
                raise NotFound(f"endpoint {endpoint} of service {service} does not exist")

    async def get_service(self, service: ServiceId) -> ServiceInfo:
        """Raises: RequestError: 404 if the service does not exist."""
        for info in await self.list_services(only=service):
            return info
        raise NotFound(f"service {service} does not exist on this security server")

    async def list_services(
        self, *, provider: SubsystemId | None = None, only: ServiceId | None = None
    ) -> list[ServiceInfo]:
        async with self._tx() as conn:
            found = await _read_services(conn, only=only)
        return [s for s in found if provider is None or s.id.subsystem == provider]

    # -------------------------------------------------------------------------------------- access rights

    async def grant(self, rule: AccessRule) -> None:
        """Store an access right.

        Raises:
            RequestError: 404 if the service or the local group does not exist; 409 if the right exists.
        """
        async with self._change() as conn:
            pk = await self._need_service(conn, rule.service)
            if isinstance(rule.subject, LocalGroupId):
                await self._need_group(conn, rule.subject)
            if await conn.scalar(sa.select(access_rights.c.id).where(*_rule_where(pk, rule))) is not None:
                raise AlreadyExists(
                    f"{rule.subject.typed()} already has access to {rule.endpoint} of service {rule.service}"
                )
            await conn.execute(
                access_rights.insert().values(
                    service_id=pk, method=rule.endpoint.method, path=rule.endpoint.path,
                    subject_type=subject_type(rule.subject), subject=str(rule.subject),
                )
            )

    async def revoke(self, rule: AccessRule) -> None:
        """Raises: RequestError: 404 if the service or the access right does not exist."""
        async with self._change() as conn:
            pk = await self._need_service(conn, rule.service)
            result = await conn.execute(access_rights.delete().where(*_rule_where(pk, rule)))
            if result.rowcount == 0:
                raise NotFound(
                    f"{rule.subject.typed()} has no access right to {rule.endpoint} of service {rule.service}"
                )

    async def list_rules(self, *, service: ServiceId | None = None) -> list[AccessRule]:
        """Access rights, optionally of one service, in the order they were granted.

        Raises:
            RequestError: 404 if ``service`` is given and does not exist.
        """
        async with self._tx() as conn:
            if service is not None:
                await self._need_service(conn, service)
            return await _read_rules(conn, only=service)

    # --------------------------------------------------------------------------------------- local groups

    async def add_group(self, group: LocalGroupId, *, description: str = "") -> None:
        """Raises: RequestError: 409 if the group exists; 400 if the description is too long."""
        if len(description) > MAX_DESCRIPTION_LENGTH:
            raise RequestError(f"group description is longer than {MAX_DESCRIPTION_LENGTH} characters")
        async with self._change() as conn:
            if await self._group_pk(conn, group) is not None:
                raise AlreadyExists(f"local group {group.code!r} already exists")
            await conn.execute(local_groups.insert().values(code=group.code, description=description))

    async def remove_group(self, group: LocalGroupId) -> None:
        """Remove a local group, its members and every access right granted to it.

        Raises:
            RequestError: 404 if the group does not exist.
        """
        async with self._change() as conn:
            pk = await self._need_group(conn, group)
            await conn.execute(
                access_rights.delete().where(
                    access_rights.c.subject_type == "LOCALGROUP", access_rights.c.subject == group.code
                )
            )
            await conn.execute(local_groups.delete().where(local_groups.c.id == pk))

    async def add_group_member(self, group: LocalGroupId, client: ClientId) -> None:
        """Raises: RequestError: 404 if the group does not exist; 409 if the client is already a member."""
        async with self._change() as conn:
            pk = await self._need_group(conn, group)
            exists = await conn.scalar(
                sa.select(local_group_members.c.group_id).where(
                    local_group_members.c.group_id == pk, local_group_members.c.client == str(client)
                )
            )
            if exists is not None:
                raise AlreadyExists(f"{client.typed()} is already a member of local group {group.code!r}")
            await conn.execute(local_group_members.insert().values(group_id=pk, client=str(client)))

    async def remove_group_member(self, group: LocalGroupId, client: ClientId) -> None:
        """Raises: RequestError: 404 if the group does not exist or the client is not a member."""
        async with self._change() as conn:
            pk = await self._need_group(conn, group)
            result = await conn.execute(
                local_group_members.delete().where(
                    local_group_members.c.group_id == pk, local_group_members.c.client == str(client)
                )
            )
            if result.rowcount == 0:
                raise NotFound(f"{client.typed()} is not a member of local group {group.code!r}")

    async def list_groups(self) -> dict[LocalGroupId, frozenset[ClientId]]:
        async with self._tx() as conn:
            return await _read_groups(conn)

    # ------------------------------------------------------------------------------------------- snapshot

    async def snapshot(self) -> ServerConfSnapshot:
        """Everything the hot path needs, read in one transaction and indexed for dict lookups.

        Raises:
            GatewayError: the database failed (``Server.ServerProxy.DatabaseError``).
        """
        async with self._tx() as conn:
            if conn.dialect.name == "postgresql":
                # One consistent view across the five reads.
                await conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            client_list = await _read_clients(conn)
            service_list = await _read_services(conn)
            rules = await _read_rules(conn)
            groups = await _read_groups(conn)
        return ServerConfSnapshot(
            clients={c.id: c for c in client_list},
            services={s.id: s for s in service_list},
            local_groups=groups,
            policy=AccessPolicy(rules),
        )


def _bump(name: str) -> sa.Update:
    return versions.update().where(versions.c.name == name).values(version=versions.c.version + 1)


def _check_client_fields(status: str | None, is_auth: str | None) -> None:
    if status is not None and status not in CLIENT_STATUSES:
        raise RequestError(f"client status {status[:20]!r} is not one of {', '.join(CLIENT_STATUSES)}")
    if is_auth is not None and is_auth not in IS_AUTH_MODES:
        raise RequestError(
            f"IS authentication mode {is_auth[:20]!r} is not one of {', '.join(IS_AUTH_MODES)}"
        )


def _check_notice(notice: str) -> str:
    if len(notice) > MAX_DESCRIPTION_LENGTH:
        raise RequestError(f"disabled notice is longer than {MAX_DESCRIPTION_LENGTH} characters")
    return notice


def _rule_where(service_pk: int, rule: AccessRule) -> tuple[sa.ColumnElement[bool], ...]:
    return (
        access_rights.c.service_id == service_pk,
        access_rights.c.method == rule.endpoint.method,
        access_rights.c.path == rule.endpoint.path,
        access_rights.c.subject_type == subject_type(rule.subject),
        access_rights.c.subject == str(rule.subject),
    )


async def _read_clients(conn: AsyncConnection, *, only: ClientId | None = None) -> list[ClientInfo]:
    query = sa.select(clients).order_by(clients.c.id)
    cert_query = sa.select(is_certs.c.client_id, is_certs.c.fingerprint)
    if only is not None:
        query = query.where(clients.c.client == str(only))
        cert_query = cert_query.join(clients, clients.c.id == is_certs.c.client_id).where(
            clients.c.client == str(only)
        )
    fps: dict[int, set[str]] = {}
    for client_pk, fp in await conn.execute(cert_query):
        fps.setdefault(client_pk, set()).add(fp)
    return [
        ClientInfo(
            id=parse_client(row.client, encoded=False),
            status=row.status,
            is_auth=row.is_auth,
            body_logging=bool(row.body_logging),
            is_cert_fingerprints=frozenset(fps.get(row.id, ())),
        )
        for row in await conn.execute(query)
    ]


async def _read_services(conn: AsyncConnection, *, only: ServiceId | None = None) -> list[ServiceInfo]:
    query = sa.select(services).order_by(services.c.id)
    ep_query = sa.select(endpoints.c.service_id, endpoints.c.method, endpoints.c.path).order_by(
        endpoints.c.id
    )
    if only is not None:
        query = query.where(services.c.service == str(only))
        ep_query = ep_query.join(services, services.c.id == endpoints.c.service_id).where(
            services.c.service == str(only)
        )
    eps: dict[int, list[Endpoint]] = {}
    for service_pk, method, path in await conn.execute(ep_query):
        eps.setdefault(service_pk, []).append(Endpoint(method=method, path=path))
    return [
        ServiceInfo(
            id=ServiceId.parse(row.service, encoded=False),
            url=row.url,
            timeout_seconds=float(row.timeout_seconds),
            openapi_url=row.openapi_url,
            enabled=bool(row.enabled),
            disabled_notice=row.disabled_notice,
            endpoints=tuple(eps.get(row.id, ())),
            data_subject=None if not row.data_subject else parse_location(row.data_subject),
            subject_mismatch=check_mismatch(row.subject_mismatch),
            purpose_required=bool(row.purpose_required),
        )
        for row in await conn.execute(query)
    ]


async def _read_rules(conn: AsyncConnection, *, only: ServiceId | None = None) -> list[AccessRule]:
    query = (
        sa.select(
            services.c.service, access_rights.c.method, access_rights.c.path,
            access_rights.c.subject_type, access_rights.c.subject,
        )
        .join(services, services.c.id == access_rights.c.service_id)
        .order_by(access_rights.c.id)
    )
    if only is not None:
        query = query.where(services.c.service == str(only))
    return [
        AccessRule(
            subject=parse_subject(subject, type_=stype),
            service=ServiceId.parse(service, encoded=False),
            endpoint=Endpoint(method=method, path=path),
        )
        for service, method, path, stype, subject in await conn.execute(query)
    ]


async def _read_groups(conn: AsyncConnection) -> dict[LocalGroupId, frozenset[ClientId]]:
    members: dict[int, set[ClientId]] = {}
    for group_pk, client in await conn.execute(sa.select(local_group_members)):
        members.setdefault(group_pk, set()).add(parse_client(client, encoded=False))
    groups = await conn.execute(sa.select(local_groups.c.id, local_groups.c.code).order_by(local_groups.c.id))
    return {LocalGroupId(code=code): frozenset(members.get(pk, ())) for pk, code in groups}
