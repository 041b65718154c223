"""The security server's admin REST API as an aiohttp application (I/O).

One application on its own port (``[server] admin_host``/``admin_port``), never on a proxy port. Its routes are
exactly those of :data:`gateway.admin.routes.ROUTES`, and :data:`HANDLERS` is the one table from each route's
``operationId`` to its handler in :mod:`gateway.admin.handlers` (one module per OpenAPI tag). Each route is
wrapped by :func:`gateway.admin.middleware.wrap`, so that, in order:

1. the caller is authenticated (``Authorization: Bearer <session token>`` or
   ``Authorization: X-Road-ApiKey token=<key>``), unless the route is public;
2. one of the caller's current roles is among the route's roles;
3. the JSON body is read (bounded by ``[admin] max_body_bytes``) and validated against the route's schema;
4. the handler runs; identifiers in paths, bodies and queries are parsed with :mod:`gateway.identifiers`;
5. after a serverconf change the security server's in-memory snapshot is rebuilt, so the proxies see it at once
   (:func:`gateway.admin.handlers.common.changes_serverconf`).

The web interface (:mod:`gateway.admin.web`) is mounted under ``/ui`` and runs these same handlers.

The one middleware, :func:`gateway.admin.middleware.admin_middleware`, turns every error into JSON
``{"type","message","detail"}`` with its 4xx/5xx status (``detail`` is a correlation id, also in the audit log)
and writes the audit entry: for every change (any method but GET), every refused or failed call, and reads of
the message log.
"""

from __future__ import annotations

from aiohttp import web

from gateway.admin.context import CONTEXT, AdminContext, Impl
from gateway.admin.handlers import (
    access_rights,
    clients,
    globalconf,
    local_groups,
    messagelog,
    meta,
    opmon,
    services,
    token,
    witness,
)
from gateway.admin.handlers.accounts import ACCOUNT_HANDLERS
from gateway.admin.middleware import admin_middleware, wrap
from gateway.admin.routes import ROUTES
from gateway.admin.web.app import PREFIX as WEB_PREFIX
from gateway.admin.web.app import build_web_app

HANDLERS: dict[str, Impl] = {
    "getOpenApi": meta.get_open_api,
    **ACCOUNT_HANDLERS,  # session, users, API keys, session keys, audit log (the central server's API too)
    "listOpMonRecords": opmon.list_opmon_records,
    # clients, services, access rights, local groups
    "listClients": clients.list_clients, "addClient": clients.add_client, "getClient": clients.get_client,
    "updateClient": clients.update_client, "setClientStatus": clients.set_client_status,
    "removeClient": clients.remove_client, "registerClient": clients.register_client,
    "addIsCert": clients.add_is_cert, "removeIsCert": clients.remove_is_cert,
    "listServices": services.list_services, "addService": services.add_service, "getService": services.get_service,
    "updateService": services.update_service, "removeService": services.remove_service,
    "addEndpoint": services.add_endpoint, "removeEndpoint": services.remove_endpoint,
    "listAccessRights": access_rights.list_access_rights, "grantAccess": access_rights.grant_access,
    "revokeAccess": access_rights.revoke_access,
    "listLocalGroups": local_groups.list_local_groups, "addLocalGroup": local_groups.add_local_group,
    "removeLocalGroup": local_groups.remove_local_group, "addLocalGroupMember": local_groups.add_local_group_member,
    "removeLocalGroupMember": local_groups.remove_local_group_member,
    # software token
    "getToken": token.get_token, "listTokens": token.list_tokens, "loginToken": token.login_token,
    "logoutToken": token.logout_token,
    "changeTokenPin": token.change_token_pin, "generateKey": token.generate_key, "deleteKey": token.delete_key,
    "createCsr": token.create_csr, "importCertificate": token.import_certificate,
    "activateCertificate": token.activate_certificate, "deactivateCertificate": token.deactivate_certificate,
    "registerServer": token.register_server,
    # global configuration
    "getGlobalConfStatus": globalconf.get_global_conf_status, "refreshGlobalConf": globalconf.refresh_global_conf,
    # message log (auditors): records, checkpoints, proofs, archives
    "listMessageLogRecords": messagelog.list_message_log_records,
    "exportMessageLogRecord": messagelog.export_message_log_record,
    "listMessageLogCheckpoints": messagelog.list_message_log_checkpoints,
    "getMessageLogCheckpoint": messagelog.get_message_log_checkpoint,
    "getTransparencyCounts": messagelog.get_transparency_counts,
    "proveMessageLogInclusion": messagelog.prove_message_log_inclusion,
    "proveMessageLogConsistency": messagelog.prove_message_log_consistency,
    "exportMessageLogArchive": messagelog.export_message_log_archive,
    # witness (docs/witness.md)
    "getWitness": witness.get_witness, "listWitnessEvidence": witness.list_witness_evidence,
}


def build_admin_app(ctx: AdminContext) -> web.Application:
    """The admin application: every route of the table, one middleware.

    Raises:
        RuntimeError: the route table and the handlers disagree (a bug, caught by any test).
    """
    missing = {r.operation_id for r in ROUTES} ^ set(HANDLERS)
    if missing:
        raise RuntimeError(f"admin routes and handlers disagree: {sorted(missing)}")
    app = web.Application(middlewares=[admin_middleware], client_max_size=ctx.settings.max_body_bytes)
    app[CONTEXT] = ctx
    for route in ROUTES:
        app.router.add_route(route.method, route.path, wrap(route, HANDLERS[route.operation_id]))
    app.add_subapp(WEB_PREFIX, build_web_app(ctx, HANDLERS))  # the web interface (gateway/admin/web/)
    return app


__all__ = ["CONTEXT", "HANDLERS", "AdminContext", "build_admin_app"]
