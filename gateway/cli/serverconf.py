"""``gateway serverconf ...``: this server's clients, services, access rights and local groups (I/O shell;
this module is the parser, the handlers are in :mod:`gateway.cli.commands.serverconf`).

Every command works on the database named by ``[server] database_url`` and first brings the serverconf
schema up to date (migrations are idempotent). A running server picks changes up when it next rebuilds
its snapshot. Errors print their diagnostics: a refused value, a duplicate or a missing object exits 1,
unusable settings (a bad database URL) exit 2.

    gateway serverconf client add DEV/GOV/1001/consumer [--auth none|https|https-cert] [--is-cert PEM]
    gateway serverconf service add DEV/GOV/1001/provider/pets --url http://127.0.0.1:8000/ [--timeout 30]
    gateway serverconf access grant DEV/GOV/1001/provider/pets DEV/GOV/1002/consumer --method GET \\
        --path '/pets/*'
    gateway serverconf group add-member friends DEV/GOV/1002/consumer
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.cli.choices import CLIENT_STATUSES, IS_AUTH_MODES
from gateway.cli.common import command, group, handlers

if TYPE_CHECKING:
    from gateway.cli.common import SubParsers

_handler = handlers("gateway.cli.commands.serverconf")


def register(subparsers: SubParsers) -> None:
    p = subparsers.add_parser("serverconf", help="this security server's clients, services, access rights")
    sub = p.add_subparsers(dest="serverconf_command", metavar="OBJECT", required=True)

    g = group(sub, "client", "members and subsystems hosted on this server")
    c = command(g, "add", _handler("cmd_client_add"), "host a member or subsystem")
    c.add_argument("id", help="INSTANCE/CLASS/MEMBER[/SUBSYSTEM]")
    c.add_argument("--auth", choices=IS_AUTH_MODES, default="https-cert",
                   help="how its information systems connect (default https-cert, as X-Road)")
    c.add_argument(
        "--is-cert", action="append", metavar="PEM", help="an information system's TLS certificate (file)"
    )
    c.add_argument("--status", choices=CLIENT_STATUSES, default="registered")
    c.add_argument("--no-body-logging", dest="body_logging", action="store_false",
                   help="keep message bodies out of the message log")
    command(g, "list", _handler("cmd_client_list"), "list hosted clients")
    c = command(g, "remove", _handler("cmd_client_remove"), "remove a client with its services and their access rights")
    c.add_argument("id")

    g = group(sub, "service", "REST services of hosted subsystems")
    s = command(g, "add", _handler("cmd_service_add"), "add a REST service")
    s.add_argument("id", help="INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE")
    s.add_argument("--url", required=True, help="base URL; the request path and query are appended")
    s.add_argument("--openapi", help="URL of the service's OpenAPI description")
    s.add_argument("--timeout", type=float, default=60.0, metavar="S", help="seconds (default 60, as X-Road)")
    s.add_argument(
        "--endpoint", action="append", metavar="'METHOD PATH'", help="an endpoint, e.g. 'GET /pets/*'"
    )
    s.add_argument("--disabled", action="store_true", help="add it disabled")
    s.add_argument("--data-subject", metavar="WHERE",
                   help="where its requests carry the data subject: path:N, query:NAME or json:POINTER "
                        "(docs/transparency.md)")
    s.add_argument("--subject-mismatch", choices=("refuse", "flag"), default="refuse",
                   help="a declared subject not in X-Road-Data-Subject: refuse the request or flag its record")
    s.add_argument("--purpose-required", action="store_true", help="refuse requests without X-Road-Purpose")
    s = command(g, "transparency", _handler("cmd_service_transparency"),
                "change a service's data-subject declaration and purpose requirement (docs/transparency.md)")
    s.add_argument("id", help="INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE")
    s.add_argument("--data-subject", metavar="WHERE", help="path:N, query:NAME or json:POINTER; '' removes it")
    s.add_argument("--subject-mismatch", choices=("refuse", "flag"))
    s.add_argument("--purpose-required", choices=("yes", "no"))
    command(g, "list", _handler("cmd_service_list"), "list services")
    s = command(g, "remove", _handler("cmd_service_remove"), "remove a service with its endpoints and access rights")
    s.add_argument("id")

    g = group(sub, "access", "access rights (default deny)")
    for name, text in (
        ("grant", "allow a subject to call a service or one endpoint of it"),
        ("revoke", "remove an access right"),
    ):
        a = command(g, name, _handler(f"cmd_access_{name}"), text)
        a.add_argument("service", help="INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE")
        a.add_argument(
            "subject",
            help="a client (INSTANCE/CLASS/MEMBER[/SUBSYSTEM]), GLOBALGROUP:INSTANCE/CODE or LOCALGROUP:CODE",
        )
        a.add_argument("--method", help="'*' or an HTTP method (default '*')")
        a.add_argument(
            "--path", help="path pattern: exact, /a/* (one segment), /a/** (any depth); default all paths"
        )
    a = command(g, "list", _handler("cmd_access_list"), "list access rights")
    a.add_argument("service", nargs="?", help="only this service")

    g = group(sub, "group", "local groups of this server")
    c = command(g, "add", _handler("cmd_group_add"), "add a local group")
    c.add_argument("code")
    c.add_argument("--description", default="")
    c = command(g, "add-member", _handler("cmd_group_add_member"), "add a client to a local group")
    c.add_argument("code")
    c.add_argument("client", help="INSTANCE/CLASS/MEMBER[/SUBSYSTEM]")
    command(g, "list", _handler("cmd_group_list"), "list local groups and their members")
