"""This security server's own configuration: hosted clients, services, access rights, local groups (pure).

Serverconf is edited through the admin API and the ``gateway serverconf`` CLI and kept in the database by
:class:`gateway.serverconf.store.ServerConfStore`. The proxies never read the database per request: they
hold a :class:`ServerConfSnapshot`, a frozen, dict-indexed view built by ``ServerConfStore.snapshot()``,
and swap it for a new one when serverconf changes.

This module holds the value objects only (no I/O), so the proxies and the admin API can use them without
importing SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from gateway.errors import ServiceDisabled, UnknownMember, UnknownService
from gateway.identifiers import ClientId, GlobalGroupId, ServiceId, SubsystemId
from gateway.serverconf.access import AccessPolicy, Endpoint, GroupMembership, LocalGroupId
from gateway.serverconf.subject import Mismatch, SubjectLocation

# How a hosted client's information system must connect to the client-facing proxy (X-Road UG-SS 9.1):
# plain HTTP, HTTPS without a client certificate, or HTTPS with a registered client certificate.
IsAuth = Literal["none", "https", "https-cert"]
IS_AUTH_MODES: tuple[str, ...] = get_args(IsAuth)

# A hosted client's state on this server. Registration itself happens at the central server; "saved" is a
# client added here but not (yet) registered, "disabled" one that may not send or receive messages.
ClientStatus = Literal["saved", "registered", "disabled"]
CLIENT_STATUSES: tuple[str, ...] = get_args(ClientStatus)

DEFAULT_SERVICE_TIMEOUT = 60.0  # seconds; X-Road's default service timeout
MAX_SERVICE_TIMEOUT = 3600.0  # seconds; anything longer is a mistake, not a service


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientInfo:
    """A member or subsystem hosted on this security server."""

    id: ClientId
    status: ClientStatus = "registered"
    is_auth: IsAuth = "https-cert"  # X-Road's default for a new client: HTTPS with a registered certificate
    is_cert_fingerprints: frozenset[str] = frozenset()  # SHA-256 of the DER, lower-case hex
    body_logging: bool = True  # whether message bodies of this client go into the message log


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceInfo:
    """A REST service that a hosted subsystem provides through this security server."""

    id: ServiceId
    url: str  # base URL; the request's service path and query are appended
    timeout_seconds: float = DEFAULT_SERVICE_TIMEOUT
    openapi_url: str | None = None
    enabled: bool = True
    disabled_notice: str = ""  # shown to clients while the service is disabled (X-Road ServiceDisabled)
    endpoints: tuple[Endpoint, ...] = ()  # what listMethods reports; access rules are separate
    # docs/transparency.md section 2: where the service's requests carry their data subject, and what a mismatch
    # with X-Road-Data-Subject does; whether a request needs an X-Road-Purpose
    data_subject: SubjectLocation | None = None
    subject_mismatch: Mismatch = "refuse"
    purpose_required: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfSnapshot:
    """Serverconf as the hot path sees it: dict lookups only, no database."""

    clients: Mapping[ClientId, ClientInfo] = field(default_factory=dict)
    services: Mapping[ServiceId, ServiceInfo] = field(default_factory=dict)
    local_groups: Mapping[LocalGroupId, frozenset[ClientId]] = field(default_factory=dict)
    policy: AccessPolicy = field(default_factory=lambda: AccessPolicy(()))

    def client(self, client_id: ClientId) -> ClientInfo:
        """The hosted client.

        Raises:
            UnknownMember: (``Server.ClientProxy.UnknownMember``, HTTP 500 as X-Road) if it is not hosted
                here. Its status (disabled...) is left to the caller, which knows which side it is on.
        """
        info = self.clients.get(client_id)
        if info is None:
            raise UnknownMember(f"client {client_id.typed()} is not a client of this security server")
        return info

    def service(self, service_id: ServiceId) -> ServiceInfo:
        """The service, if it exists and is enabled.

        Raises:
            UnknownService: (``Server.ServerProxy.UnknownService``) if no such service is provided here.
            ServiceDisabled: (``Server.ServerProxy.ServiceDisabled``) if it is disabled (both HTTP 500, as
                X-Road).
        """
        info = self.services.get(service_id)
        if info is None:
            raise UnknownService(f"service {service_id} is not provided by this security server")
        if not info.enabled:
            notice = f": {info.disabled_notice}" if info.disabled_notice else ""
            raise ServiceDisabled(f"service {service_id} is disabled{notice}")
        return info

    def services_of(self, provider: SubsystemId) -> tuple[ServiceInfo, ...]:
        """The services of one hosted subsystem, sorted by service code (``listMethods``)."""
        return tuple(
            sorted(
                (s for s in self.services.values() if s.id.subsystem == provider),
                key=lambda s: s.id.service_code,
            )
        )

    def groups(
        self, global_groups: Mapping[GlobalGroupId, Collection[ClientId]] | None = None
    ) -> GroupMembership:
        """A group resolver over this snapshot's local groups and the global configuration's groups."""
        return GroupMembership(global_groups=global_groups or {}, local_groups=self.local_groups)


__all__ = [
    "CLIENT_STATUSES",
    "IS_AUTH_MODES",
    "ClientInfo",
    "ClientStatus",
    "IsAuth",
    "ServerConfSnapshot",
    "ServiceInfo",
]
