"""What the central server's admin API works on (no I/O; the callables it holds do).

:class:`CentralAdminContext` has what the shared steps need (:class:`gateway.admin.context.ApiContext`:
settings, the ``adm_*`` store, the clock, the token policy) plus the central server's database engine and
settings, and two hooks into the running publication loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.admin import auth
from gateway.admin.context import Call, Clock
from gateway.admin.store import AdminStore
from gateway.central.publisher import Publication
from gateway.settings import AdminSettings, CentralSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class CentralAdminContext:
    settings: AdminSettings
    store: AdminStore
    clock: Clock
    engine: AsyncEngine
    central: CentralSettings
    publish_now: Callable[[], Awaitable[Publication]]  # sign and publish at once (publishGlobalConf)
    changed: Callable[[], None] = lambda: None  # after a change: ask the publication loop to check now

    @property
    def instance(self) -> str:
        return self.central.instance

    @property
    def token_policy(self) -> auth.TokenPolicy:
        return auth.TokenPolicy(
            issuer=f"gateway-central:{self.central.instance}", audience=self.settings.audience,
            ttl_seconds=self.settings.session_ttl_seconds,
        )


CENTRAL_CONTEXT = web.AppKey("central_admin_context", CentralAdminContext)
CentralImpl = Callable[[Call, web.Request, CentralAdminContext], Awaitable[Any]]

__all__ = ["CENTRAL_CONTEXT", "CentralAdminContext", "CentralImpl"]
