"""The central server's admin REST API as an aiohttp application, and how it is started (I/O).

On its own port (``[central] admin_host``/``admin_port``; off unless ``admin_port`` is set, loopback by
default), never on the port that serves ``/globalconf``. Every route of
:func:`gateway.admin.central.routes.central_api` is wrapped by :func:`gateway.admin.middleware.wrap_route`:
authentication (session token or API key), the role check, validation against the document's schemas, then
the handler; :func:`gateway.admin.middleware.api_middleware` turns errors into JSON and writes the audit entry
of every change and every refusal into the central database's ``adm_audit`` table. The web interface
(:mod:`gateway.admin.central.web`) is mounted under ``/ui`` and runs these same handlers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from gateway.admin.central import handlers as h
from gateway.admin.central.context import CENTRAL_CONTEXT, CentralAdminContext, CentralImpl
from gateway.admin.central.routes import central_api
from gateway.admin.central.web import PREFIX as WEB_PREFIX
from gateway.admin.central.web import build_central_web_app
from gateway.admin.context import Call
from gateway.admin.handlers.accounts import ACCOUNT_HANDLERS
from gateway.admin.middleware import api_middleware, wrap_route
from gateway.admin.openapi import build_document
from gateway.admin.store import AdminStore
from gateway.central.app import CentralHandle
from gateway.errors import ConfigError
from gateway.settings import AdminSettings

log = structlog.get_logger("gateway.central.admin")


async def get_open_api(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    return build_document(central_api(ctx.instance))


HANDLERS: dict[str, CentralImpl] = {
    "getOpenApi": get_open_api,
    **ACCOUNT_HANDLERS,  # session, users, API keys, session keys, audit log: the security server's handlers
    # registry
    "listMembers": h.list_members, "addMember": h.add_member, "getMember": h.get_member,
    "renameMember": h.rename_member, "removeMember": h.remove_member, "addSubsystem": h.add_subsystem,
    "removeSubsystem": h.remove_subsystem,
    "listServers": h.list_servers, "addServer": h.add_server, "getServer": h.get_server,
    "setServerAddress": h.set_server_address, "removeServer": h.remove_server, "addAuthCert": h.add_auth_cert,
    "removeAuthCert": h.remove_auth_cert, "addServerClient": h.add_server_client,
    "removeServerClient": h.remove_server_client,
    "listGlobalGroups": h.list_global_groups, "addGlobalGroup": h.add_global_group,
    "removeGlobalGroup": h.remove_global_group, "addGlobalGroupMember": h.add_global_group_member,
    "removeGlobalGroupMember": h.remove_global_group_member,
    # trust services, signing keys
    "listCas": h.list_cas, "addCa": h.add_ca, "removeCa": h.remove_ca,
    "listTsas": h.list_tsas, "addTsa": h.add_tsa, "removeTsa": h.remove_tsa,
    "getTransparency": h.get_transparency, "setTransparency": h.set_transparency,
    "listWitnessPolicies": h.list_witness_policies, "getWitnessPolicy": h.get_witness_policy,
    "setWitnessPolicy": h.set_witness_policy, "removeWitnessPolicy": h.remove_witness_policy,
    "listSigningKeys": h.list_signing_keys, "createSigningKey": h.create_signing_key,
    "activateSigningKey": h.activate_signing_key, "retireSigningKey": h.retire_signing_key, "getAnchor": h.get_anchor,
    # registration requests, publications
    "listRegistrationRequests": h.list_registration_requests,
    "getRegistrationRequest": h.get_registration_request,
    "approveRegistrationRequest": h.approve_registration_request,
    "rejectRegistrationRequest": h.reject_registration_request,
    "listGlobalConfVersions": h.list_global_conf_versions, "publishGlobalConf": h.publish_global_conf,
}


def build_central_admin_app(ctx: CentralAdminContext) -> web.Application:
    """The central admin application: every route of the instance's table, one middleware.

    Raises:
        RuntimeError: the route table and the handlers disagree (a bug, caught by any test).
    """
    api = central_api(ctx.instance)
    missing = {r.operation_id for r in api.routes} ^ set(HANDLERS)
    if missing:
        raise RuntimeError(f"central admin routes and handlers disagree: {sorted(missing)}")
    app = web.Application(middlewares=[api_middleware(CENTRAL_CONTEXT)], client_max_size=ctx.settings.max_body_bytes)
    app[CENTRAL_CONTEXT] = ctx
    for route in api.routes:
        app.router.add_route(route.method, route.path,
                             wrap_route(route, HANDLERS[route.operation_id], CENTRAL_CONTEXT, api.path_params))
    app.add_subapp(WEB_PREFIX, build_central_web_app(ctx, HANDLERS))  # the web interface (docs/web-ui.md)
    return app


@dataclass
class CentralAdminHandle:
    """A running central admin API: its URL, its context and how to stop it."""

    url: str
    port: int
    ctx: CentralAdminContext
    runner: web.AppRunner

    async def close(self) -> None:
        await self.runner.cleanup()


def _trigger(central: CentralHandle) -> None:
    waiter = central.publisher.trigger()
    # the outcome is logged by the loop; taking it here keeps an unretrieved exception from being reported
    waiter.add_done_callback(lambda f: f.cancelled() or f.exception())


async def start_central_admin(
    central: CentralHandle, settings: AdminSettings, *, host: str | None = None, port: int | None = None,
    store: AdminStore | None = None,
) -> CentralAdminHandle:
    """Migrate the ``adm_*`` tables in the central database and serve the admin API beside ``central``.

    ``host``/``port`` override ``[central] admin_host``/``admin_port`` (port 0: any free port).

    Raises:
        ConfigError: the address cannot be bound.
    """
    store = store or AdminStore(central.engine)
    await store.migrate()
    ctx = CentralAdminContext(
        settings=settings, store=store, clock=central.publisher.clock, engine=central.engine,
        central=central.settings, publish_now=central.publish_now, changed=lambda: _trigger(central),
    )
    bind_host = central.settings.admin_host if host is None else host
    bind_port = central.settings.admin_port if port is None else port
    runner = web.AppRunner(build_central_admin_app(ctx), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, bind_host, bind_port)
        await site.start()
    except OSError as e:
        with contextlib.suppress(Exception):
            await runner.cleanup()
        raise ConfigError(f"central admin API cannot listen on {bind_host}:{bind_port}: {e.strerror or e}") from e
    bound = runner.addresses[0][1]
    shown = f"[{bind_host}]" if ":" in bind_host else bind_host
    url = f"http://{shown}:{bound}"
    log.info("central_admin_api_started", url=url)
    return CentralAdminHandle(url=url, port=bound, ctx=ctx, runner=runner)


__all__ = ["HANDLERS", "CentralAdminHandle", "build_central_admin_app", "start_central_admin"]
