"""``gateway token ...``: the security server's software token (I/O shell; docs/tokens.md; this module is
the parser, the handlers are in :mod:`gateway.cli.commands.token`).

The token is ``[server] token_dir`` (or ``--dir``). Commands that need the private keys ask for the PIN:
``--pin-file FILE``, ``--pin-env VAR``, the settings' ``token_pin_file``/``token_pin_env``, or a prompt.
The CLI keeps no session: ``login`` checks the PIN (and clears the wrong-PIN count), ``logout`` has nothing
to forget; a running server logs in at start-up (and through the admin API).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gateway.cli.choices import KEY_TYPES
from gateway.cli.common import command, handlers

if TYPE_CHECKING:
    from gateway.cli.common import SubParsers

_handler = handlers("gateway.cli.commands.token")


def register(subparsers: SubParsers) -> None:
    p = subparsers.add_parser("token", help="software token: PIN, keys, CSRs, certificates")
    p.add_argument("-c", "--config", default=argparse.SUPPRESS, help="settings file (TOML)")
    p.add_argument("--dir", help="token directory (default: [server] token_dir)")
    p.add_argument("--pin-file", help="read the PIN from this file (mode 0600)")
    p.add_argument("--pin-env", help="read the PIN from this environment variable")
    p.add_argument("--device", action="store_true",
                   help="the PKCS#11 device of the settings instead (the only one; with several, see the "
                        "commands' --device NAME)")
    sub = p.add_subparsers(dest="token_command", metavar="COMMAND", required=True)

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        q = command(sub, name, _handler(f"cmd_{name.replace('-', '_')}"), help, description=help)
        if name not in ("init", "logout", "devices"):
            q.add_argument("--device", dest="device_name", metavar="NAME",
                           help="the PKCS#11 device of this name ([[server.pkcs11]] name; \"device\" is the one "
                                "of [server] pkcs11_library)" + ("; without it, status lists every device"
                                                                 if name == "status" else ""))
        return q

    cmd("init", "create an empty token protected by a PIN")
    cmd("login", "check the PIN (clears the wrong-PIN count)")
    cmd("logout", "nothing to do for the CLI (explains why)")
    cmd("status", "KDF parameters, keys, wrong-PIN count and lock")
    q = cmd("devices", "every PKCS#11 device of the settings with its state (exit code 1 if one is unavailable)")
    q.add_argument("--json", action="store_true")
    q = cmd("keys", "list keys and certificates with expiry and use")
    q.add_argument("--ocsp", action="store_true", help="fetch OCSP status (uses the cached global configuration)")
    q.add_argument("--json", action="store_true")
    q = cmd("generate-key", "generate a key for authentication or signing certificates, or the witness key")
    q.add_argument("--usage", required=True, choices=("auth", "sign", "witness"),
                   help="witness: the Ed25519 key the witness cosigns with (docs/witness.md); prints its vkey")
    q.add_argument("--key-type", default="ec-p256", choices=KEY_TYPES, help="auth and sign keys (a witness key "
                   "is always Ed25519)")
    q.add_argument("--label", default="")
    cmd("witness-key", "print the witness's vkey (from the token, or [server] state_dir/witness.key without one)")
    q = cmd("csr", "a CSR for a key; the identity comes from [server] id")
    q.add_argument("key", metavar="KEY_ID", help="key id or a unique prefix of at least 8 hex digits")
    q.add_argument("--member", help="for a signing key: the member (default: the server's owner)")
    q.add_argument("--name", help="organisation name in the subject")
    q.add_argument("--out", help="write the PEM here instead of standard output")
    q = cmd("import-cert", "import a certificate issued for one of the token's keys")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--member", action="append", help="another member this server signs for (repeatable)")
    q = cmd("activate", "put a certificate to use (the running server switches to it)")
    q.add_argument("cert", metavar="SHA256", help="fingerprint or a unique prefix of at least 8 hex digits")
    q = cmd("deactivate", "retire a certificate")
    q.add_argument("cert", metavar="SHA256")
    q = cmd("expiring", "active certificates close to expiry (exit code 1 if any)")
    q.add_argument("--days", type=float, help="default: [server] cert_expiry_warning_days")
    q.add_argument("--json", action="store_true")
