"""``gateway server ...``: a security server's keys, certificates and the server itself (I/O shell; this
module is the parser, the handlers are in :mod:`gateway.cli.commands.server`).

- ``init``: generate the authentication and signing keys (files 0600 in ``[server] state_dir``) and CSRs
  whose identity comes from ``[server] id``;
- ``import-cert FILE``: install a certificate issued for one of those CSRs (its key must match);
- ``fetch-conf``: download and verify the global configuration into ``[globalconf] cache_dir`` (a new
  server's token needs it to check imported certificates before the server first starts);
- ``serve``: run the client-facing and server-to-server proxies until SIGINT/SIGTERM; with ``[server] workers``
  above 1, as that many supervised worker processes sharing the ports (:mod:`gateway.server.workers`);
- ``register``, ``register-client``, ``unregister-client``, ``delete-auth-cert``: signed management
  requests to the central server, for its registration officer to approve (docs/registration.md);
- ``backup --out FILE``, ``restore FILE``: the server's configuration, token and settings in one archive,
  optionally encrypted with a passphrase (:mod:`gateway.server.backup`, docs/operations.md).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gateway.cli.choices import KEY_TYPES
from gateway.cli.common import command, handlers

if TYPE_CHECKING:
    from gateway.cli.common import SubParsers

_handler = handlers("gateway.cli.commands.server")


def register(subparsers: SubParsers) -> None:
    p = subparsers.add_parser("server", help="security server: keys, certificates, serve")
    p.add_argument("-c", "--config", default=argparse.SUPPRESS, help="settings file (TOML)")
    sub = p.add_subparsers(dest="server_command", metavar="COMMAND", required=True)
    q = command(sub, "init", _handler("cmd_init"), "generate keys and CSRs for [server] id")
    q.add_argument("--name", help="organisation name for the certificates")
    q.add_argument("--key-type", default="ec-p256", choices=KEY_TYPES)
    q.add_argument("--force", action="store_true", help="replace existing keys")
    q = command(sub, "import-cert", _handler("cmd_import_cert"), "install an issued authentication or signing "
                                                                 "certificate")
    q.add_argument("file", metavar="FILE")
    command(sub, "fetch-conf", _handler("cmd_fetch_conf"), "download the global configuration now, verify it "
            "against the anchor and cache it (token import-cert checks certificates against it)")
    q = command(sub, "serve", _handler("cmd_serve"), "run the proxies until SIGINT/SIGTERM ([server] workers "
                "processes, supervised, when it is more than 1)")
    # Set by the supervisor of several workers (gateway.server.workers), never by hand.
    q.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    q.add_argument("--channel", type=int, help=argparse.SUPPRESS)
    for name, help in (
        ("register", "ask the central server to register an authentication certificate "
                     "(the newest in the token, or --cert; also how a new server joins)"),
        ("register-client", "ask the central server to add a client to this server"),
        ("unregister-client", "ask the central server to remove a client"),
        ("delete-auth-cert", "ask the central server to delete an authentication certificate of this server"),
    ):
        q = command(sub, name, _handler(f"cmd_{name.replace('-', '_')}"), help, description=help)
        q.add_argument("--central", help="central server URL (default: from the anchor's download URL)")
        q.add_argument("--cert", help="token: the authentication certificate to sign with (SHA-256 prefix)")
        if name in ("register-client", "unregister-client"):
            q.add_argument("client", metavar="CLIENT_ID")
        if name == "delete-auth-cert":
            q.add_argument("fingerprint", metavar="SHA256", help="the certificate to delete")
    for name, help in (("backup", "write the server's configuration, token and settings into an archive "
                                  "(not the message log)"),
                       ("restore", "put a backup into the server these settings describe")):
        q = command(sub, name, _handler(f"cmd_{name}"), help, description=help)
        secret = q.add_mutually_exclusive_group()
        secret.add_argument("--passphrase-env", metavar="VAR", help="encrypt (backup) or decrypt (restore) with "
                                                                    "the passphrase in this environment variable")
        secret.add_argument("--passphrase-file", metavar="FILE", help="... with the passphrase in this file")
        if name == "backup":
            q.add_argument("--out", required=True, metavar="FILE", help="the archive to write (mode 0600)")
        else:
            q.add_argument("archive", metavar="FILE")
            q.add_argument("--force", action="store_true",
                           help="replace the files and configuration of an existing server (stop it first)")
            q.add_argument("--settings-out", metavar="FILE",
                           help="also write the settings file kept in the backup here")
