"""``gateway central ...``: the parser of the central server's commands (I/O shell; the handlers are in
:mod:`gateway.cli.commands.central`, imported only when a command runs).

Every command works on the database named by ``[central] database_url``. ``init`` creates or upgrades the
schema and the first configuration-signing key; every other command (except ``serve``, which migrates
itself) refuses a database that ``init`` has not brought up to date. Errors print their diagnostics and exit
1; unusable settings (an unknown key, a bad database URL, a database that cannot be opened) exit 2 and name
the settings file (or environment variable) and the key.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gateway.cli import registration
from gateway.cli.common import command, group, handlers

if TYPE_CHECKING:
    from gateway.cli.common import SubParsers

_handler = handlers("gateway.cli.commands.central")


def _cmd(sub: SubParsers, name: str, handler: str, help: str) -> argparse.ArgumentParser:
    return command(sub, name, _handler(handler), help, description=help)


def _group(sub: SubParsers, name: str, help: str) -> SubParsers:
    return group(sub, name, help, description=help)


def register(subparsers: SubParsers) -> None:
    """Add ``gateway central ...``."""
    central = subparsers.add_parser(
        "central", help="central server: registry, signing keys, signed global configuration",
        description="Operate the central server. All commands use [central] database_url.",
    )
    central.add_argument(
        "-c", "--config", default=argparse.SUPPRESS, help="settings file (TOML); as `gateway -c FILE`"
    )
    sub = central.add_subparsers(dest="central_command", metavar="COMMAND", required=True)

    _cmd(sub, "init", "cmd_init", "create or upgrade the database; create the first signing key if none")
    p = _cmd(sub, "serve", "cmd_serve", "serve /globalconf, /anchor and /healthz; publish when due; the admin API")
    p.add_argument("--host", help="listen address (default: [central] host)")
    p.add_argument("--port", type=int, help="listen port, 0 for any free port (default: [central] port)")
    p.add_argument("--admin-port", type=int, help="admin API port on [central] admin_host, 0 for any free port, -1 "
                   "for none (default: [central] admin_port, which is -1)")

    g = _group(sub, "member", "members of the federation")
    p = _cmd(g, "add", "cmd_member_add", "register a member INSTANCE/CLASS/CODE")
    p.add_argument("id", metavar="ID")
    p.add_argument("--name", required=True, help="the member's name")
    p = _cmd(g, "remove", "cmd_member_remove", "remove a member with its subsystems and servers")
    p.add_argument("id", metavar="ID")
    _cmd(g, "list", "cmd_member_list", "list members and their subsystems")

    g = _group(sub, "subsystem", "subsystems of members")
    p = _cmd(g, "add", "cmd_subsystem_add", "register a subsystem INSTANCE/CLASS/CODE/SUBSYSTEM")
    p.add_argument("id", metavar="ID")
    p = _cmd(g, "remove", "cmd_subsystem_remove", "remove a subsystem")
    p.add_argument("id", metavar="ID")

    g = _group(sub, "server", "security servers, their authentication certificates and clients")
    p = _cmd(g, "add", "cmd_server_add", "register a security server INSTANCE/CLASS/CODE/SERVERCODE")
    p.add_argument("id", metavar="ID")
    p.add_argument("--address", required=True, help="HOST:PORT of its server-to-server (mTLS) port")
    p = _cmd(g, "remove", "cmd_server_remove", "remove a security server")
    p.add_argument("id", metavar="ID")
    _cmd(g, "list", "cmd_server_list", "list security servers with certificates and clients")
    p = _cmd(g, "add-cert", "cmd_server_add_cert", "register an authentication certificate for a server")
    p.add_argument("id", metavar="ID")
    p.add_argument("--cert", required=True, metavar="PEM", help="certificate file (PEM or DER)")
    p = _cmd(g, "remove-cert", "cmd_server_remove_cert", "remove an authentication certificate")
    p.add_argument("id", metavar="ID")
    p.add_argument("fingerprint", metavar="SHA256", help="hex SHA-256 of the certificate")
    p = _cmd(g, "add-client", "cmd_server_add_client", "register a member or subsystem as a server's client")
    p.add_argument("server", metavar="SERVER_ID")
    p.add_argument("client", metavar="CLIENT_ID")
    p = _cmd(g, "remove-client", "cmd_server_remove_client", "remove a client from a server")
    p.add_argument("server", metavar="SERVER_ID")
    p.add_argument("client", metavar="CLIENT_ID")

    g = _group(sub, "group", "global groups")
    p = _cmd(g, "add", "cmd_group_add", "register a global group INSTANCE/GROUPCODE")
    p.add_argument("id", metavar="ID")
    p.add_argument("--description", required=True)
    p = _cmd(g, "remove", "cmd_group_remove", "remove a global group")
    p.add_argument("id", metavar="ID")
    p = _cmd(g, "add-member", "cmd_group_add_member", "add a member or subsystem to a global group")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("client", metavar="CLIENT")
    p = _cmd(g, "remove-member", "cmd_group_remove_member", "remove a member or subsystem from a global group")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("client", metavar="CLIENT")
    _cmd(g, "list", "cmd_group_list", "list global groups and their members")

    g = _group(sub, "ca", "trusted certification authorities")
    p = _cmd(g, "add", "cmd_ca_add", "trust a certification authority")
    p.add_argument("--name", required=True)
    p.add_argument("--cert", required=True, metavar="PEM", help="the CA certificate file")
    p.add_argument("--ocsp-url", action="append", metavar="URL", help="OCSP responder URL (repeatable)")
    p = _cmd(g, "remove", "cmd_ca_remove", "stop trusting a certification authority")
    p.add_argument("name", metavar="NAME")
    _cmd(g, "list", "cmd_ca_list", "list trusted certification authorities")

    g = _group(sub, "tsa", "trusted timestamping authorities (in order of preference)")
    p = _cmd(g, "add", "cmd_tsa_add", "trust an RFC 3161 timestamping authority (appended as least preferred)")
    p.add_argument("--name", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--cert", required=True, metavar="PEM", help="the TSA certificate file")
    p = _cmd(g, "remove", "cmd_tsa_remove", "stop trusting a timestamping authority")
    p.add_argument("name", metavar="NAME")
    _cmd(g, "list", "cmd_tsa_list", "list trusted timestamping authorities")

    g = _group(sub, "transparency", "published transparency parameters: purposes, portal, embargo entitlements")
    p = _cmd(g, "set", "cmd_transparency_set", "set them (published from the next publication on; replaces all)")
    p.add_argument("--purpose", action="append", metavar="CODE=TEXT", help="a purpose code and its text (repeatable)")
    p.add_argument("--portal", default="", metavar="SUBSYSTEM", help="the citizen portal's subsystem id")
    p.add_argument("--embargo-client", action="append", metavar="SUBSYSTEM",
                   help="a client subsystem entitled to embargo (repeatable)")
    _cmd(g, "show", "cmd_transparency_show", "show the parameters the registry publishes")

    g = _group(sub, "witness-policy", "witness policies: which witnesses must cosign each server's logs "
               "(docs/witness.md)")
    p = _cmd(g, "set", "cmd_witness_policy_set", "set (create or replace) the witness policy of a security server")
    p.add_argument("--server", required=True, metavar="SERVER_ID", help="the logging security server")
    p.add_argument("--quorum", required=True, type=int, metavar="K", help="how many of the witnesses must cosign")
    p.add_argument("--witness", required=True, action="append", metavar="VKEY,URL,SERVER",
                   help="a witness: its vkey (`gateway token witness-key` on its server), its URL (leave it "
                   "out, VKEY,SERVER, for https://<the server's address>/witness) and the security server that runs "
                   "it (repeatable)")
    p = _cmd(g, "remove", "cmd_witness_policy_remove", "remove the witness policy of a security server")
    p.add_argument("--server", required=True, metavar="SERVER_ID")
    p = _cmd(g, "list", "cmd_witness_policy_list", "list witness policies")
    p.add_argument("--json", action="store_true", help="as JSON, one object per policy, in a list")

    g = _group(sub, "keys", "configuration-signing keys (rollover: add, hand out the anchor, retire)")
    p = _cmd(g, "add", "cmd_keys_add", "create a configuration-signing key (active at once unless --inactive)")
    p.add_argument("--inactive", action="store_true", help="anchored but not signing until `keys activate`")
    p = _cmd(g, "activate", "cmd_keys_activate", "let an inactive key sign from the next publication on")
    p.add_argument("keyid", metavar="KEYID", help="the keyid, or a unique prefix of at least 8 hex digits")
    _cmd(g, "list", "cmd_keys_list", "list configuration-signing keys")
    p = _cmd(g, "retire", "cmd_keys_retire", "stop signing with a key")
    p.add_argument("keyid", metavar="KEYID", help="the keyid, or a unique prefix of at least 8 hex digits")

    registration.add_commands(sub)

    p = _cmd(sub, "publish", "cmd_publish", "sign and publish the global configuration now")
    p.add_argument(
        "--if-due", action="store_true", help="only if the content changed or half the validity passed"
    )
    p = _cmd(sub, "anchor", "cmd_anchor", "write the anchor of the active keys and print its SHA-256")
    p.add_argument("--out", required=True, metavar="FILE")
    p = _cmd(sub, "show", "cmd_show", "print the newest published configuration as JSON")
    p.add_argument("--envelope", action="store_true", help="print the whole envelope with signatures")
