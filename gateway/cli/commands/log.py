"""The handlers of ``gateway log ...``: the message log for operators and auditors (I/O shell).

Checkpoints, proofs and pruning run on the online database of ``[server]`` (docs/messagelog.md sections
7-10): :func:`log_command` gives such a body the message log store, migrated first, and the log's origin.
``export`` writes an archive for auditors, ``match`` checks two offline (docs/auditing.md); ``verify`` is in
:mod:`gateway.cli.commands.logverify`, which imports no database layer. The parser, with what each command
does, is :mod:`gateway.cli.log`.
"""

import argparse
import asyncio
import base64
import functools
import hashlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from gateway.cli.common import database_setting, settings_from_args
from gateway.errors import ConfigError, GatewayError, NotFound, RequestError, TrustError
from gateway.files import private_dir
from gateway.globalconf.updater import CACHE_FILE
from gateway.identifiers import SecurityServerId
from gateway.messagelog import merkle
from gateway.messagelog.checkpoint import checkpoint_origin, verify_checkpoint
from gateway.messagelog.origins import log_origin, parse_origin
from gateway.messagelog.store import MAX_LEAF_READ, SqlMessageLogStore, StoredCheckpoint, migrate_messagelog
from gateway.settings import Settings
from gateway.storage.db import open_database
from gateway.trust.timestamp import verify_token

Handler = Callable[[argparse.Namespace, SqlMessageLogStore, str], Awaitable[int]]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def _with_store(
    args: argparse.Namespace, settings: Settings, body: Callable[[Any, SqlMessageLogStore], Awaitable[int]],
) -> int:
    """Run ``body`` with the engine of ``[server] database_url`` and the message log store on it.

    Raises:
        ConfigError: the database URL is unusable or the database cannot be opened.
    """
    engine = await open_database(settings.server.database_url, where=database_setting(args, "server"))
    try:
        await migrate_messagelog(engine)
        store = SqlMessageLogStore(engine)
        try:
            return await body(engine, store)
        finally:
            await store.close()
    finally:
        await engine.dispose()


def _server_id(settings: Settings) -> SecurityServerId:
    try:
        return SecurityServerId.parse(settings.server.id)
    except GatewayError as e:
        raise ConfigError(f"[server] id: {e.message}") from e


def default_origin(settings: Settings) -> str:
    """The origin a log command works on without ``--origin``: this node's first worker (docs/messagelog.md
    section 5): ``[server] id``, plus ``/NODE`` when ``[server] node`` is set.

    Raises:
        ConfigError: a bad ``[server] id`` or ``node``.
    """
    return log_origin(_server_id(settings), node=settings.server.node)


def log_command(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """Make a command of ``handler``, run on the store with the origin of ``--origin`` or :func:`default_origin`.

    The command raises ConfigError for unusable settings or database URL, and whatever ``handler`` raises.
    """

    @functools.wraps(handler)
    def command(args: argparse.Namespace) -> int:
        settings: Settings = settings_from_args(args)
        origin = args.origin or default_origin(settings)
        return asyncio.run(_with_store(args, settings, lambda _engine, store: handler(args, store, origin)))

    return command


def cmd_origins(args: argparse.Namespace) -> int:
    """``gateway log origins``: every log origin of this server, with its count and newest checkpoint."""
    from gateway.messagelog.export import server_origins

    settings: Settings = settings_from_args(args)
    server = str(_server_id(settings))

    async def body(engine: Any, store: SqlMessageLogStore) -> int:
        out = []
        for origin in await server_origins(engine, server):
            name = parse_origin(origin)
            latest = await store.latest_checkpoint(origin)
            stamped = await store.latest_checkpoint(origin, stamped_only=True)
            out.append({
                "origin": origin, "node": name.node, "worker": name.worker, "records": await store.size(origin),
                "checkpoint": None if latest is None else latest.size,
                "timestamped": None if stamped is None else stamped.size,
            })
        print(json.dumps({"server": server, "origins": out}, indent=2))
        return 0

    return asyncio.run(_with_store(args, settings, body))


def _describe(cp: StoredCheckpoint) -> dict[str, Any]:
    return {
        "size": cp.size, "root_hash": _b64(cp.root_hash), "created": cp.created.isoformat(),
        "timestamped": cp.stamped, "tsa": cp.tsa_name,
        "timestamp_time": None if cp.timestamp_time is None else cp.timestamp_time.isoformat(),
        "note": cp.note.decode("utf-8"),
    }


async def _all_checkpoints(store: SqlMessageLogStore, origin: str) -> list[StoredCheckpoint]:
    out: list[StoredCheckpoint] = []
    while True:
        page = await store.checkpoints(origin, min_size=out[-1].size + 1 if out else 0, limit=1000)
        out.extend(page)
        if len(page) < 1000:
            return out


async def _verify_log(store: SqlMessageLogStore, origin: str, cps: list[StoredCheckpoint]) -> None:
    """Re-check the online log (the ``--verify`` steps). Raises: TrustError at the first problem."""
    # (1) Every stored record hashes to its stored leaf hash.
    start = await store.pruned_before(origin)
    while True:
        batch = await store.read(origin, start=start, limit=1000)
        for rec in batch:
            if merkle.leaf_hash(rec.encoded) != rec.leaf_hash:
                raise TrustError(f"record {rec.seq} of {origin} does not match its leaf hash (altered)")
            rec.decode()
        if len(batch) < 1000:
            break
        start = batch[-1].seq + 1
    # (2) Each checkpoint: its root over the leaf hashes, its signature, its timestamp token.
    tree = merkle.MerkleTree()
    expected_origin = checkpoint_origin(origin)
    previous: StoredCheckpoint | None = None
    for cp in cps:
        while tree.size < cp.size:
            tree.extend(await store.leaf_hashes(origin, tree.size, min(cp.size, tree.size + MAX_LEAF_READ)))
        if tree.root() != cp.root_hash:
            raise TrustError(f"checkpoint {cp.size} of {origin}: the leaf hashes give another root (log altered)")
        body = verify_checkpoint(cp.note, x509.load_der_x509_certificate(cp.signing_cert), origin=expected_origin)
        if body.size != cp.size or body.root_hash != cp.root_hash:
            raise TrustError(f"checkpoint {cp.size} of {origin}: the signed note says otherwise than its row")
        if cp.timestamp_token is not None:
            assert cp.tsa_cert is not None
            verify_token(cp.timestamp_token, hashlib.sha256(cp.note).digest(),
                         x509.load_der_x509_certificate(cp.tsa_cert))
        # (3) Consistent with the previous checkpoint (a proof from the store, checked like an auditor).
        if previous is not None:
            proof = await store.consistency_proof(origin, previous.size, cp.size)
            merkle.verify_consistency(previous.size, cp.size, previous.root_hash, cp.root_hash, proof)
        previous = cp


def _write_files(out: Path, cps: list[StoredCheckpoint]) -> None:
    private_dir(out)
    for cp in cps:
        (out / f"{cp.size}.note").write_bytes(cp.note)
        if cp.timestamp_token is not None:
            (out / f"{cp.size}.tsr").write_bytes(cp.timestamp_token)


# ---- checkpoints and proofs -------------------------------------------------------------------------------


@log_command
async def cmd_checkpoints(args: argparse.Namespace, store: SqlMessageLogStore, origin: str) -> int:
    cps = await _all_checkpoints(store, origin)
    if args.out:
        await asyncio.to_thread(_write_files, Path(args.out), cps)
    if args.verify:
        await _verify_log(store, origin, cps)
    cosigners: dict[int, list[str]] = {}
    for kept in await store.cosignatures(origin):  # verified against the witness policy when kept (witness.md)
        cosigners.setdefault(kept.size, []).append(kept.cosignature.name)
    doc = {
        "origin": origin, "records": await store.size(origin), "pruned_before": await store.pruned_before(origin),
        "checkpoints": [_describe(cp) | {"cosigned_by": cosigners.get(cp.size, [])} for cp in cps],
        "verified": bool(args.verify),
    }
    print(json.dumps(doc, indent=2))
    return 0


async def _target_checkpoint(store: SqlMessageLogStore, origin: str, size: int | None) -> StoredCheckpoint:
    cp = await (store.latest_checkpoint(origin) if size is None else store.checkpoint(origin, size))
    if cp is None:
        raise RequestError(
            f"log {origin} has no checkpoint" + ("" if size is None else f" of size {size}"),
            hint="list them with 'gateway log checkpoints'",
        )
    return cp


@log_command
async def cmd_prove_inclusion(args: argparse.Namespace, store: SqlMessageLogStore, origin: str) -> int:
    cp = await _target_checkpoint(store, origin, args.size)
    if not 0 <= args.seq < cp.size:
        raise RequestError(f"record {args.seq} is not in the checkpoint of size {cp.size}")
    (leaf,) = await store.leaf_hashes(origin, args.seq, args.seq + 1)
    proof = await store.inclusion_proof(origin, args.seq, cp.size)
    merkle.verify_inclusion(leaf, args.seq, cp.size, proof, cp.root_hash)  # never hand out a wrong proof
    print(json.dumps({
        "origin": origin, "seq": args.seq, "leaf_hash": _b64(leaf), "size": cp.size,
        "root_hash": _b64(cp.root_hash), "proof": [_b64(h) for h in proof], "checkpoint": cp.note.decode("utf-8"),
        "timestamp_token": None if cp.timestamp_token is None else _b64(cp.timestamp_token),
    }, indent=2))
    return 0


@log_command
async def cmd_prove_consistency(args: argparse.Namespace, store: SqlMessageLogStore, origin: str) -> int:
    old = await _target_checkpoint(store, origin, args.old)
    new = await _target_checkpoint(store, origin, args.new)
    if old.size > new.size:
        raise RequestError(f"--old {old.size} is larger than --new {new.size}")
    proof = await store.consistency_proof(origin, old.size, new.size)
    merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    print(json.dumps({
        "origin": origin, "old_size": old.size, "old_root_hash": _b64(old.root_hash), "new_size": new.size,
        "new_root_hash": _b64(new.root_hash), "proof": [_b64(h) for h in proof],
        "old_checkpoint": old.note.decode("utf-8"), "new_checkpoint": new.note.decode("utf-8"),
    }, indent=2))
    return 0


@log_command
async def cmd_prune(args: argparse.Namespace, store: SqlMessageLogStore, origin: str) -> int:
    removed = await store.prune(origin, args.before, now=datetime.now(UTC))
    print(json.dumps({"origin": origin, "pruned_before": await store.pruned_before(origin), "removed": removed}))
    return 0


# ---- archives for auditors: export, verify, match (docs/auditing.md) ---------------------------------------


def _parse_time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise RequestError(f"{text!r} is not an ISO 8601 time such as 2026-01-02T03:04:05Z") from e
    if t.tzinfo is None:
        raise RequestError(f"time {text!r} has no time zone; add Z for UTC")
    return t.astimezone(UTC)


async def _export(args: argparse.Namespace, settings: Settings, engine: Any, store: SqlMessageLogStore,
                  origin: str) -> int:
    from gateway.messagelog.export import choose_range, write_range

    cps = await _all_checkpoints(store, origin)
    start, end, selection = await choose_range(
        store, origin, cps, start=args.start, end=args.end,
        from_time=_parse_time(args.from_time) if args.from_time else None,
        to_time=_parse_time(args.to_time) if args.to_time else None,
        engine=engine, include_uncovered=args.include_uncovered,
    )
    if args.from_time or args.to_time:  # as given on the command line
        selection.update({"from": args.from_time, "to": args.to_time})
    confs = [Path(settings.globalconf.cache_dir) / CACHE_FILE, *(Path(p) for p in args.globalconf or ())]
    envelopes = [p.read_bytes() for p in confs if p.exists()]
    manifest = await write_range(store, origin, args.out, start=start, end=end, checkpoints=cps,
                                 globalconfs=envelopes, selection=selection, now=datetime.now(UTC))
    print(json.dumps({
        "archive": args.out_path, "origin": origin, "start": manifest.start, "end": manifest.end,
        "records": manifest.end - manifest.start, "checkpoints": len(manifest.checkpoints),
        "globalconf": len(manifest.globalconf),
    }, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    settings: Settings = settings_from_args(args)
    if getattr(args, "all_origins", False):
        return _export_all(args, settings)
    args.out_path = os.path.abspath(args.out)
    origin = args.origin or default_origin(settings)
    return asyncio.run(
        _with_store(args, settings, lambda engine, store: _export(args, settings, engine, store, origin)),
    )


def _export_all(args: argparse.Namespace, settings: Settings) -> int:
    """``export --all-origins --out DIR``: one archive per log origin of this server, named by
    :func:`~gateway.messagelog.export.archive_file_name`, each as ``export --origin`` would write it."""
    from gateway.messagelog.export import archive_file_name, server_origins

    if args.origin:
        raise RequestError("--origin and --all-origins exclude each other")
    if args.start is not None or args.end is not None:
        raise RequestError("--start and --end are sequence numbers of one origin; with --all-origins select by "
                           "time (--from, --to)")
    out_dir = Path(os.path.abspath(args.out))
    if out_dir.exists() and not out_dir.is_dir():
        raise RequestError(f"--out {args.out}: with --all-origins it names a directory, and this is a file")
    private_dir(out_dir)
    server = str(_server_id(settings))

    async def body(engine: Any, store: SqlMessageLogStore) -> int:
        origins = await server_origins(engine, server)
        if not origins:
            raise RequestError(f"the message log holds no records of {server}")
        written = 0
        for origin in origins:
            args.out = args.out_path = str(out_dir / archive_file_name(origin))
            try:
                await _export(args, settings, engine, store, origin)
            except NotFound as e:  # a time range in which this worker or node logged nothing
                if not (args.from_time or args.to_time):
                    raise
                print(f"note: {e.message}; no archive for it", file=sys.stderr)
                continue
            written += 1
        if not written:
            raise NotFound(f"no log origin of {server} has records created in the given time range")
        return 0

    return asyncio.run(_with_store(args, settings, body))


def _entries(path: str) -> tuple[str, list[Any]]:
    """The records of an archive, or of every archive (``*.zip``) in a directory: one per log origin of a
    server (``export --all-origins``); their origins, joined with ", ", and the entries."""
    from gateway.messagelog.archive import LogArchive
    from gateway.messagelog.match import Entry

    p = Path(path)
    files = sorted(p.glob("*.zip")) if p.is_dir() else [p]
    if not files:
        raise RequestError(f"{path} holds no archive (*.zip)")
    out: list[Entry] = []
    origins: list[str] = []
    for file in files:
        with LogArchive(file) as archive:
            m = archive.manifest
            origins.append(m.origin)
            for chunk in m.chunks:
                lines = archive.read_chunk(chunk).split(b"\n")
                for i, line in enumerate(lines[:-1] if lines and lines[-1] == b"" else lines):
                    try:
                        fields = json.loads(line)
                    except ValueError:
                        continue  # not a record: 'gateway log verify' names it
                    if isinstance(fields, dict):  # the origin is named only where a side has several
                        out.append(Entry(seq=chunk.first + i, fields=fields, origin=m.origin if len(files) > 1 else ""))
    return ", ".join(origins), out


def cmd_match(args: argparse.Namespace) -> int:
    from gateway.messagelog.match import match_logs

    consumer_origin, consumer = _entries(args.consumer)
    provider_origin, provider = _entries(args.provider)
    report = match_logs(consumer, provider, consumer_origin=consumer_origin, provider_origin=provider_origin)
    print(report.summary())
    return 0 if report.ok else 1
