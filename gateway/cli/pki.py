"""``gateway pki ...``: the development PKI from the command line (I/O shell; this module is the parser, the
handlers are in :mod:`gateway.cli.commands.pki`).

Subcommands: ``init``, ``csr``, ``issue``, ``revoke``, ``list``, ``acme-eab``, ``serve``. Every one takes ``--dir``
(default: ``[pki] dir`` of the settings, ``certs``). See ``docs/pki.md`` for a walk-through.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gateway.cli.choices import CERT_KINDS, KEY_TYPES, REASONS
from gateway.cli.common import command, handlers

if TYPE_CHECKING:
    from gateway.cli.common import SubParsers

_handler = handlers("gateway.cli.commands.pki")


def register(subparsers: SubParsers) -> None:
    """Add ``gateway pki`` and its subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", help="the CA directory (default: [pki] dir, 'certs')")
    pki = subparsers.add_parser("pki", help="development PKI: CA, OCSP responder, TSA")
    sub = pki.add_subparsers(dest="pki_command", metavar="PKI_COMMAND", required=True)

    p = command(sub, "init", _handler("cmd_init"), "create the development CA, OCSP and TSA certificates",
                parents=[common])
    p.add_argument("--name", help="CA name (default: [pki] ca_name)")
    p.add_argument("--ocsp-url", help="OCSP URL put in issued certificates ('' for none; "
                                      "default http://[pki] host:ocsp_port)")

    p = command(sub, "csr", _handler("cmd_csr"),
                "generate a key and a certificate signing request following the profile")
    p.add_argument("--kind", required=True, choices=CERT_KINDS)
    p.add_argument("--identity", required=True,
                   help="INSTANCE/CLASS/MEMBER/SERVER for auth, INSTANCE/CLASS/MEMBER for sign")
    p.add_argument("--name", help="organisation name (subject O)")
    p.add_argument("--key-type", default="ec-p256", choices=KEY_TYPES)
    p.add_argument("--key-out", required=True, help="private key file to create (mode 0600)")
    p.add_argument("--out", required=True, help="CSR file (PEM)")

    p = command(sub, "issue", _handler("cmd_issue"), "issue a certificate from a CSR", parents=[common])
    p.add_argument("--kind", required=True, choices=CERT_KINDS)
    p.add_argument("--csr", required=True, help="CSR file (PEM or DER)")
    p.add_argument("--identity", required=True, help="the identity the certificate must name")
    p.add_argument("--out", required=True, help="certificate file to write (PEM)")
    p.add_argument("--days", type=int, help="validity in days (default: [pki] cert_validity_days)")

    p = command(sub, "revoke", _handler("cmd_revoke"), "revoke an issued certificate", parents=[common])
    p.add_argument("serial", help="serial number in hex, as 'gateway pki list' prints it")
    p.add_argument("--reason", default="unspecified", choices=REASONS)

    p = command(sub, "list", _handler("cmd_list"), "list issued certificates and their status", parents=[common])
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command(sub, "acme-eab", _handler("cmd_acme_eab"),
                "issue an ACME external account binding key for a member (docs/acme.md)", parents=[common])
    p.add_argument("--member", required=True, help="INSTANCE/CLASS/MEMBER whose servers may order with it")
    p.add_argument("--key-out", required=True,
                   help="file to write the HMAC key to (mode 0600), for [server] acme_eab_key_file")

    p = command(sub, "serve", _handler("cmd_serve"),
                "run the OCSP responder and the TSA (and the ACME endpoint if [pki] acme_port is set) until stopped",
                parents=[common])
    p.add_argument("--acme-port", type=int, help="ACME port (default: [pki] acme_port; -1 off, 0 picks one)")
    p.add_argument("--host", help="listen address (default: [pki] host)")
    p.add_argument("--ocsp-port", type=int, help="OCSP port (default: [pki] ocsp_port; 0 picks one)")
    p.add_argument("--tsa-port", type=int, help="TSA port (default: [pki] tsa_port; 0 picks one)")
