"""``gateway admin ...``: users, API keys, session keys and the audit log of the admin API (I/O shell; this
module is the parser, the handlers are in :mod:`gateway.cli.commands.admin`).

Every command works on the database named by ``[server] database_url`` (as ``gateway serverconf`` does),
brings the admin schema up to date first, and writes its change to the audit log with actor ``cli:<OS user>``
and address ``cli@<host name>``. Clients, services, access rights and local groups are ``gateway serverconf ...``
(docs/admin-api.md has the API-to-CLI table).

    gateway admin user add alice --role system-administrator [--password-file F | --password-env VAR]
    gateway admin user passwd alice ; gateway admin user list ; gateway admin user remove alice
    gateway admin apikey create --name monitoring --role observer      (prints the key once)
    gateway admin apikey revoke 0123456789abcdef ; gateway admin apikey list
    gateway admin audit list [--actor A] [--action OP] [--result refused] [--limit N] [--offset N]
    gateway admin audit verify ; gateway admin audit export --out audit.zip   (docs/auditing.md section 7)
    gateway admin session-key rotate ; gateway admin openapi
    gateway admin api --url http://127.0.0.1:4000 listClients --query limit=10     (any operation, over HTTP)

``gateway admin api OPERATION`` calls any route of the admin API by its operation id (``gateway admin openapi``
lists them), so every API operation is also a CLI command. Credentials come from the environment, never from
the command line: ``GATEWAY_ADMIN_TOKEN`` (a session token), ``GATEWAY_ADMIN_API_KEY`` (an API key), or
``--user NAME`` with the password from ``--password-env VAR`` or a prompt (the CLI logs in first).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gateway.admin.roles import ROLES  # pure, no imports of its own: cheap enough for the parser
from gateway.cli.common import command, group, handlers

if TYPE_CHECKING:
    from gateway.cli.common import SubParsers

_handler = handlers("gateway.cli.commands.admin")


def _password_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password-file", help="read the password from this file (first line)")
    g.add_argument("--password-env", metavar="VAR", help="read the password from this environment variable")
    g.add_argument("--generate-password", action="store_true",
                   help="generate a random password and print it once (the default without a terminal)")


def register(subparsers: SubParsers) -> None:
    p = subparsers.add_parser("admin", help="admin API users, API keys, session keys and audit log")
    p.add_argument("--central", action="store_true", default=argparse.SUPPRESS,
                   help="the central server's admin API ([central] database_url) instead of the security server's")
    sub = p.add_subparsers(dest="admin_command", metavar="WHAT", required=True)
    role_help = f"a role (repeatable): {', '.join(ROLES)}"

    g = group(sub, "user", "local users of the admin API")
    u = command(g, "add", _handler("cmd_user_add"), "add a user")
    u.add_argument("name")
    u.add_argument("--role", action="append", choices=ROLES, required=True, help=role_help)
    _password_options(u)
    u = command(g, "passwd", _handler("cmd_user_passwd"), "set a user's password (ends the user's sessions)")
    u.add_argument("name")
    _password_options(u)
    command(g, "list", _handler("cmd_user_list"), "list users")
    for name, help in (("remove", "remove a user (its sessions end at once)"),
                       ("unlock", "clear a lock-out after wrong passwords")):
        command(g, name, _handler(f"cmd_user_{name}"), help).add_argument("name")

    g = group(sub, "apikey", "API keys for automation")
    a = command(g, "create", _handler("cmd_apikey_create"), "create an API key (printed once)")
    a.add_argument("--name", required=True, help="what the key is for")
    a.add_argument("--role", action="append", choices=ROLES, required=True, help=role_help)
    a = command(g, "revoke", _handler("cmd_apikey_revoke"), "revoke an API key at once")
    a.add_argument("id", help="the key's public id (apikey list)")
    command(g, "list", _handler("cmd_apikey_list"), "list API keys (never the keys themselves)")

    g = group(sub, "audit", "the audit log")
    d = command(g, "list", _handler("cmd_audit_list"), "audit entries, newest first")
    d.add_argument("--actor")
    d.add_argument("--action", help="operation id, e.g. addClient")
    d.add_argument("--result", choices=("success", "refused", "failed"))
    d.add_argument("--limit", type=int, default=100)
    d.add_argument("--offset", type=int, default=0)
    d.add_argument("--json", action="store_true", help="the API's JSON page instead of lines")
    command(g, "verify", _handler("cmd_audit_verify"),
            "check the audit log's chain: every entry against its leaf hash, the leaves against the signed "
            "checkpoints (exit 1 naming each changed or removed entry)")
    d = command(g, "export", _handler("cmd_audit_export"),
                "write the audit log up to its latest checkpoint as an archive for `gateway log verify` "
                "(docs/auditing.md section 7)")
    d.add_argument("--out", required=True, help="the archive file to write")
    d.add_argument("--globalconf", action="append", metavar="FILE",
                   help="a further signed global configuration to include (besides the cached one)")
    d.add_argument("--include-uncovered", action="store_true",
                   help="export the entries after the latest checkpoint too (verify reports them as not covered)")

    g = group(sub, "session-key", "keys that sign session tokens")
    command(g, "rotate", _handler("cmd_session_key_rotate"), "sign new session tokens with a new key")
    command(g, "list", _handler("cmd_session_key_list"), "list session signing keys")

    command(sub, "openapi", _handler("cmd_openapi"), "print the admin API's OpenAPI 3.1 document")

    api = command(sub, "api", _handler("cmd_api"), "call any admin API operation by its operation id (over HTTP)")
    api.add_argument("operation", help="operation id, e.g. listClients (see 'gateway admin openapi')")
    api.add_argument("--url", required=True, help="the server's admin URL, e.g. http://127.0.0.1:4000")
    api.add_argument("--param", "-p", action="append", metavar="NAME=VALUE", help="a path parameter")
    api.add_argument("--query", "-q", action="append", metavar="NAME=VALUE", help="a query parameter")
    api.add_argument("--body", help="JSON request body, or @FILE")
    api.add_argument("--user", help="log in as this user first (password from --password-env or a prompt)")
    api.add_argument("--password-env", metavar="VAR", help="the password's environment variable (with --user)")
