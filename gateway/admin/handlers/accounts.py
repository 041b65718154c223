"""The handlers of the routes every admin API has (:func:`gateway.admin.routes.account_routes`): log-in and the
caller, users, API keys, session keys and the audit log; the security server's and the central server's API
both take them from here (I/O)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.admin.context import ApiContext, Call
from gateway.admin.handlers import api_keys, audit_log, session, session_keys, users

# a handler for any API's context (the security server's AdminContext or the central CentralAdminContext)
AccountImpl = Callable[[Call, web.Request, ApiContext], Awaitable[Any]]

ACCOUNT_HANDLERS: dict[str, AccountImpl] = {
    "login": session.login, "logout": session.logout, "getMe": session.get_me,
    "changeOwnPassword": session.change_own_password,
    "listUsers": users.list_users, "addUser": users.add_user, "getUser": users.get_user,
    "setUserPassword": users.set_user_password, "setUserRoles": users.set_user_roles,
    "unlockUser": users.unlock_user, "removeUser": users.remove_user,
    "listApiKeys": api_keys.list_api_keys, "createApiKey": api_keys.create_api_key,
    "revokeApiKey": api_keys.revoke_api_key,
    "listSessionKeys": session_keys.list_session_keys, "rotateSessionKey": session_keys.rotate_session_key,
    "listAuditLog": audit_log.list_audit_log,
}

__all__ = ["ACCOUNT_HANDLERS", "AccountImpl"]
