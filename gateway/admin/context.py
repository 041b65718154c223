"""What every part of the admin API shares: the context it works on and the per-request call state (no I/O).

:class:`AdminContext` is opened by :mod:`gateway.server.runtime` and stored in the application under
:data:`CONTEXT`; :class:`Call` is what one request has established so far (caller, body, audit details),
stored in the request under :data:`CALL` by :mod:`gateway.admin.middleware` and passed to every handler
(:data:`Impl`). Nothing here does I/O; the callables it holds do.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web

from gateway.admin import auth
from gateway.admin.auth import Principal
from gateway.admin.routes import Route
from gateway.admin.store import AdminStore
from gateway.central.management import RequestType
from gateway.globalconf.updater import GlobalConfUpdater
from gateway.identifiers import ClientId, SecurityServerId
from gateway.messagelog.checkpointer import Checkpointer
from gateway.messagelog.store import MessageLogStore
from gateway.opmon.store import OpMonStore
from gateway.ops.readiness import Check
from gateway.serverconf.store import ServerConfStore
from gateway.settings import AdminSettings
from gateway.token.model import CertReport
from gateway.token.pkcs11 import Pkcs11Token
from gateway.token.soft import SoftToken
from gateway.transparency.service import TransparencyState
from gateway.witness.http import WitnessEndpoint

Clock = Callable[[], datetime]


class ApiContext(Protocol):
    """What the shared steps (authentication, roles, audit) and the shared handlers (session, users, API keys,
    session keys, audit log) need of a server's admin API: the security server's :class:`AdminContext` and
    the central server's context both have it."""

    @property
    def settings(self) -> AdminSettings: ...

    @property
    def store(self) -> AdminStore: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def token_policy(self) -> auth.TokenPolicy: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminContext:
    """What the admin API works on; opened by :mod:`gateway.server.runtime` and passed in."""

    server_id: SecurityServerId
    settings: AdminSettings
    store: AdminStore
    serverconf: ServerConfStore
    globalconf: GlobalConfUpdater
    messagelog: MessageLogStore
    reload_serverconf: Callable[[], Awaitable[None]]  # SecurityServer.reload_serverconf
    clock: Clock
    token: SoftToken | None = None  # with [server] token_dir: the server's software token
    reload_keys: Callable[[], Awaitable[bool]] | None = None  # SecurityServer.reload_keys
    log_origin: str = ""  # the log origin of the process serving the API ("" : the server id)
    opmon: OpMonStore | None = None  # operational-monitoring records (docs/admin-api.md)
    # the web interface's dashboard: SecurityServer.certificates (expiry, OCSP) and the log's checkpointer
    certificates: Callable[[], Awaitable[list[CertReport]]] | None = None
    checkpointer: Checkpointer | None = None
    readiness: Callable[[], Awaitable[Sequence[Check]]] | None = None  # ServerHealth.checks, as /readyz runs them
    tokens: Callable[[], list[dict[str, object]]] | None = None  # SecurityServer.tokens: software and PKCS#11
    devices: Mapping[str, Pkcs11Token] = field(default_factory=dict)  # SecurityServer.devices, by name
    # SecurityServer.send_management: a management request ("auth_cert_reg", "client_reg"), signed with the
    # server's authentication key, sent to the central server; its answer (docs/registration.md)
    management: Callable[[RequestType, ClientId | None], Awaitable[dict[str, Any]]] | None = None
    transparency: TransparencyState | None = None  # the usage records' index (docs/transparency.md section 4)
    witness: WitnessEndpoint | None = None  # with [witness] enabled: the witness (docs/witness.md)
    witness_name: str = ""  # the witness key's name ([witness] name or <server id>/witness)

    @property
    def origin(self) -> str:
        """The message-log origin the API shows by default: the one its own process logs under."""
        return self.log_origin or str(self.server_id)

    @property
    def token_policy(self) -> auth.TokenPolicy:
        return auth.TokenPolicy(
            issuer=f"gateway:{self.server_id}", audience=self.settings.audience,
            ttl_seconds=self.settings.session_ttl_seconds,
        )


@dataclass(slots=True, kw_only=True)
class Call:
    """What one request has established so far (mutable, per request): read by the audit step."""

    action: str
    correlation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    route: Route | None = None
    actor: str = "-"
    auth: str = "none"
    principal: Principal | None = None
    body: Any = None
    details: dict[str, Any] = field(default_factory=dict)


CONTEXT = web.AppKey("admin_context", AdminContext)
CALL = web.RequestKey("admin_call", Call)
Impl = Callable[[Call, web.Request, AdminContext], Awaitable[Any]]
"""A handler: the call so far, the request and the context in; a JSON value, ``None`` or a response out."""

__all__ = ["CALL", "CONTEXT", "AdminContext", "ApiContext", "Call", "Clock", "Impl"]
