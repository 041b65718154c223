"""``gateway log ...``: the message log for operators and auditors (I/O shell; this module is the parser,
the handlers are in :mod:`gateway.cli.commands.log`, and ``verify``'s in :mod:`gateway.cli.commands.logverify`).

Checkpoints and proofs (docs/messagelog.md sections 7-10), against the online database of ``[server]``:

- ``checkpoints [--verify] [--out DIR]``: list the signed checkpoints, their timestamps and the witnesses
  that cosigned each (``cosigned_by``, docs/witness.md section 4); ``--verify``
  re-checks everything online (each stored record's leaf hash, each checkpoint's root over the leaf hashes,
  its signature, its timestamp token, consistency between consecutive checkpoints); ``--out`` writes each
  checkpoint's note (``<size>.note``) and token (``<size>.tsr``) for tools such as ``openssl ts -verify``;
- ``origins``: the server's log origins (one per worker and node, docs/messagelog.md section 5) with their
  record counts and newest checkpoints, as JSON;
- ``prove-inclusion --seq N [--size S]``: inclusion proof of record N in the checkpoint of size S (default
  the newest), as JSON;
- ``prove-consistency --old A [--new B]``: consistency proof between two checkpoints, as JSON;
- ``prune --before N``: remove the records below N (already exported) from the online database, keeping
  their leaf hashes so that every proof still works.

Archives for auditors (docs/auditing.md): ``export --out FILE`` writes the records of a range (default: all
covered by a checkpoint) with their checkpoints, timestamps, certificates and global configuration
(``--all-origins --out DIR``: one archive per log origin of the server);
``verify ARCHIVE --anchor FILE`` checks one offline and exits 0 only if everything verifies, its witnesses'
cosignatures included (``--witness-quorum N`` replaces the policy's quorum; ``--against OTHER`` verifies other
archives of the same origin too and reports a split view between them, docs/witness.md sections 5-6); ``match
CONSUMER PROVIDER`` pairs two archives' records of the same exchanges (each side one archive, or a directory of
one archive per origin).

Each group of subcommands is registered by its own function; :func:`register` calls them all, so that more
groups (archive export, verify, match) are added in one place.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gateway.cli.common import command, handlers

if TYPE_CHECKING:
    from gateway.cli.common import SubParsers

_handler = handlers("gateway.cli.commands.log")
ORIGIN_HELP = "log origin (default: this node's first worker: [server] id, plus /NODE with [server] node)"


def _workers(text: str) -> int:
    """``--workers N``: a whole number of processes, at least 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def _quorum(text: str) -> int:
    """``--witness-quorum N``: a whole number of witnesses, at least 0."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {n}")
    return n


def _add(sub: SubParsers, name: str, help_: str) -> argparse.ArgumentParser:
    q = command(sub, name, _handler(f"cmd_{name.replace('-', '_')}"), help_)
    q.add_argument("--origin", help=ORIGIN_HELP)
    return q


def register_checkpoint_commands(sub: SubParsers) -> None:
    """``origins``, ``checkpoints``, ``prove-inclusion``, ``prove-consistency``, ``prune``."""
    command(sub, "origins", _handler("cmd_origins"), "list this server's log origins, one per worker and node (JSON)")
    q = _add(sub, "checkpoints", "list signed checkpoints and timestamps (JSON)")
    q.add_argument("--verify", action="store_true", help="re-check records, roots, signatures, tokens, consistency")
    q.add_argument("--out", help="write <size>.note and <size>.tsr files into this directory")
    q = _add(sub, "prove-inclusion", "inclusion proof of a record in a checkpoint (JSON)")
    q.add_argument("--seq", type=int, required=True, help="the record's sequence number")
    q.add_argument("--size", type=int, help="checkpoint size (default: the newest checkpoint)")
    q = _add(sub, "prove-consistency", "consistency proof between two checkpoints (JSON)")
    q.add_argument("--old", type=int, required=True, help="size of the older checkpoint")
    q.add_argument("--new", type=int, help="size of the newer checkpoint (default: the newest)")
    q = _add(sub, "prune", "remove exported records, keeping their leaf hashes")
    q.add_argument("--before", type=int, required=True, help="remove records with a smaller sequence number")


def register_archive_commands(sub: SubParsers) -> None:
    """``export``, ``verify``, ``match`` (docs/auditing.md)."""
    q = command(sub, "export", _handler("cmd_export"), "write an archive of the log for auditors")
    q.add_argument("--origin", help=ORIGIN_HELP)
    q.add_argument("--all-origins", action="store_true",
                   help="one archive per log origin of this server (every worker and node) into the directory --out")
    q.add_argument("--out", required=True, help="archive file to write (ZIP); with --all-origins a directory")
    q.add_argument("--from", dest="from_time", help="first record created at or after this time (ISO 8601)")
    q.add_argument("--to", dest="to_time", help="records created before this time (ISO 8601)")
    q.add_argument("--start", type=int, help="first sequence number")
    q.add_argument("--end", type=int, help="one past the last sequence number (extended to the next checkpoint)")
    q.add_argument("--globalconf", action="append", help="also include this signed global configuration file")
    q.add_argument("--include-uncovered", action="store_true",
                   help="export records after the latest checkpoint too (verify reports them as unproven)")
    q = command(sub, "verify", handlers("gateway.cli.commands.logverify")("cmd_verify"),
                "verify an archive offline against the instance's anchor")
    q.add_argument("archive", help="the archive file")
    q.add_argument("--anchor", required=True, help="the instance's anchor file (the only thing trusted)")
    q.add_argument("--workers", type=_workers, metavar="N",
                   help="processes checking records (default: one per usable CPU; 1: in this process)")
    q.add_argument("--witness-quorum", type=_quorum, metavar="N",
                   help="require N witnesses' cosignatures per checkpoint instead of the witness policy's quorum "
                        "(the report says so)")
    q.add_argument("--against", action="append", metavar="OTHER_ARCHIVE", default=[],
                   help="also verify this archive of the same log origin and compare their checkpoints: two "
                        "that cannot both be true are a split view (repeatable)")
    q.add_argument("--json", action="store_true",
                   help="print the result as JSON (findings, witnesses, split views with both signed notes)")
    q = command(sub, "verify-usage", handlers("gateway.cli.commands.logverify")("cmd_verify_usage"),
                "verify a citizen portal's evidence file (findUsage items) offline against the anchor")
    q.add_argument("file", help="the evidence file (JSON: subject, generated, entries)")
    q.add_argument("--anchor", required=True, help="the instance's anchor file (the only thing trusted)")
    q = command(sub, "match", _handler("cmd_match"),
                "pair the consumer's and the provider's records of the same exchanges")
    q.add_argument("consumer", help="archive of the consumer's security server, or a directory of its archives "
                                    "(one per log origin: export --all-origins)")
    q.add_argument("provider", help="archive of the provider's security server, or a directory of its archives")


def register(subparsers: SubParsers) -> None:
    p = subparsers.add_parser("log", help="message log: checkpoints, proofs, retention, archives")
    p.add_argument("-c", "--config", default=argparse.SUPPRESS, help="settings file (TOML)")
    sub = p.add_subparsers(dest="log_command", metavar="COMMAND", required=True)
    register_checkpoint_commands(sub)
    register_archive_commands(sub)
