"""Audit-log archives for auditors: the file format, written and read (I/O: files only, no database).

docs/auditing.md section 7. An audit archive is a security server's whole admin audit log (entries 0 .. N-1)
with everything needed to verify it offline against nothing but the instance's anchor. Like a message-log
archive (:mod:`gateway.messagelog.archive`) it is a ZIP file of **stored** members::

    manifest.json                   canonical JSON (RFC 8785): what the archive holds (below)
    entries.jsonl                   every entry's encoding (gateway.admin.auditlog, version 1), one per line
    leaves.bin                      the leaf hash stored with each entry, 32 bytes each, in seq order
    checkpoints/<n, 6 digits>.note  signed notes (C2SP checkpoints, origin <server id>/audit), oldest first
    checkpoints/<n, 6 digits>.tst   the RFC 3161 timestamp token of that checkpoint, if it has one
    checkpoints/<n, 6 digits>.cosig the witnesses' cosignature lines of that checkpoint, if any
    globalconf/<sha-256 hex>.json   signed global configuration envelopes, exactly as downloaded
    certs/<sha-256 hex>.der         the checkpoints' signing certificates
    ocsp/<sha-256 hex>.der          OCSP responses for them, as fetched when the checkpoints were signed

The manifest (``format`` ``gateway-audit-archive``, ``version`` 1) lists the members; nothing in it is
trusted by the verifier (:mod:`gateway.admin.auditverify`). The reader checks the form only.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.errors import MalformedArchive, TrustError
from gateway.globalconf.model import format_time
from gateway.messagelog.merkle import HASH_SIZE
from gateway.trust.canonical import canonical_bytes, loads_canonical

FORMAT = "gateway-audit-archive"
VERSION = 1
MANIFEST = "manifest.json"
ENTRIES = "entries.jsonl"
LEAVES = "leaves.bin"
MAX_MEMBER_BYTES = 256 * 2**20  # bytes; an audit log of a million entries fits
_MANIFEST_KEYS = frozenset({
    "format", "version", "origin", "exported_at", "size", "entries", "leaves", "checkpoints", "globalconf",
    "certificates", "ocsp_responses",
})
_CP_RE = re.compile(r"checkpoints/[0-9]{6}\.(note|tst|cosig)")
_HASHED_RE = {
    "globalconf": re.compile(r"globalconf/[0-9a-f]{64}\.json"),
    "certificates": re.compile(r"certs/[0-9a-f]{64}\.der"),
    "ocsp_responses": re.compile(r"ocsp/[0-9a-f]{64}\.der"),
}


def _bad(message: str) -> TrustError:
    return MalformedArchive(f"audit archive: {message}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchivedCheckpoint:
    note: bytes
    timestamp: bytes | None
    cosignatures: tuple[bytes, ...]  # signature lines, each without its final newline


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditArchiveContent:
    """An audit archive's contents as read (untrusted until verified)."""

    origin: str
    exported_at: str
    entries: tuple[bytes, ...]
    leaves: bytes
    checkpoints: tuple[ArchivedCheckpoint, ...]
    globalconfs: tuple[bytes, ...]
    certificates: tuple[bytes, ...]
    ocsp_responses: tuple[bytes, ...]


def is_audit_archive(path: str | Path) -> bool:
    """Whether ``path`` is a ZIP file whose manifest says it is an audit archive (anything else: False)."""
    try:
        with zipfile.ZipFile(path) as z:
            info = z.getinfo(MANIFEST)
            if info.file_size > 2**20:
                return False
            return b'"format":"' + FORMAT.encode() + b'"' in z.read(info)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False


def write_archive(
    path: str | Path, *, origin: str, exported_at: datetime, entries: Sequence[bytes], leaves: Sequence[bytes],
    checkpoints: Sequence[ArchivedCheckpoint], globalconfs: Sequence[bytes], certificates: Sequence[bytes],
    ocsp_responses: Sequence[bytes],
) -> None:
    """Write an archive to a temporary file beside ``path``, fsync it and rename it into place.

    Raises:
        TrustError: an entry holds a raw line feed (canonical JSON never does), or entries and leaves differ
            in number.
        OSError: the file cannot be written.
    """
    if len(entries) != len(leaves):
        raise _bad(f"{len(entries)} entries but {len(leaves)} leaf hashes")
    if any(b"\n" in e for e in entries):
        raise _bad("an entry holds a raw line feed")
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
            z.writestr(ENTRIES, b"".join(e + b"\n" for e in entries))
            z.writestr(LEAVES, b"".join(leaves))
            listed: list[dict[str, Any]] = []
            for n, c in enumerate(checkpoints, 1):
                item: dict[str, Any] = {"note": f"checkpoints/{n:06d}.note", "timestamp": None, "cosignatures": None}
                z.writestr(item["note"], c.note)
                if c.timestamp is not None:
                    item["timestamp"] = f"checkpoints/{n:06d}.tst"
                    z.writestr(item["timestamp"], c.timestamp)
                if c.cosignatures:
                    item["cosignatures"] = f"checkpoints/{n:06d}.cosig"
                    z.writestr(item["cosignatures"], b"".join(line + b"\n" for line in c.cosignatures))
                listed.append(item)
            hashed: dict[str, list[str]] = {}
            for key, directory, ext, blobs in (("globalconf", "globalconf", "json", globalconfs),
                                               ("certificates", "certs", "der", certificates),
                                               ("ocsp_responses", "ocsp", "der", ocsp_responses)):
                names = hashed.setdefault(key, [])
                for data in blobs:
                    name = f"{directory}/{hashlib.sha256(data).hexdigest()}.{ext}"
                    if name not in names:
                        z.writestr(name, data)
                        names.append(name)
            z.writestr(MANIFEST, canonical_bytes({
                "format": FORMAT, "version": VERSION, "origin": origin, "exported_at": format_time(exported_at),
                "size": len(entries), "entries": ENTRIES, "leaves": LEAVES, "checkpoints": listed, **hashed,
            }))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(z: zipfile.ZipFile, name: str) -> bytes:
    try:
        info = z.getinfo(name)
    except KeyError as e:
        raise _bad(f"member {name} named in the manifest is missing") from e
    if info.file_size > MAX_MEMBER_BYTES:
        raise _bad(f"member {name} is larger than {MAX_MEMBER_BYTES} bytes")
    try:
        return z.read(info)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise _bad(f"member {name} is damaged: {e}") from e


def read_archive(path: str | Path) -> AuditArchiveContent:
    """Read an audit archive and check its form (not its contents: that is the verifier's).

    Raises:
        TrustError: not a ZIP file, no or a malformed manifest, a member missing or damaged.
    """
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise _bad(f"{path} is not a ZIP file or cannot be read: {e}") from e
    with z:
        # (1) the manifest: canonical JSON of this format and version, exactly the documented keys
        try:
            m = loads_canonical(_read(z, MANIFEST), what="audit archive manifest")
        except MalformedArchive:
            raise
        except TrustError as e:
            raise _bad(e.message) from e
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise _bad(f"manifest.json is not a {FORMAT} manifest")
        if m.get("version") != VERSION:
            raise _bad(f"version {m.get('version')!r} is not supported (this verifier knows {VERSION})")
        if set(m) != _MANIFEST_KEYS:
            raise _bad(f"manifest keys differ from version {VERSION}: missing {sorted(_MANIFEST_KEYS - set(m))}, "
                       f"unexpected {sorted(set(m) - _MANIFEST_KEYS)}")
        origin, size = m["origin"], m["size"]
        if not isinstance(origin, str) or not isinstance(m["exported_at"], str):
            raise _bad("manifest origin and exported_at must be strings")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _bad(f"manifest size {size!r} is not a non-negative integer")
        if m["entries"] != ENTRIES or m["leaves"] != LEAVES:
            raise _bad(f"manifest entries and leaves must be {ENTRIES!r} and {LEAVES!r}")
        # (2) entries and leaves: as many as the manifest says
        data = _read(z, ENTRIES)
        if data and not data.endswith(b"\n"):
            raise _bad(f"{ENTRIES} does not end with a line feed (truncated)")
        entries = tuple(data.split(b"\n")[:-1]) if data else ()
        leaves = _read(z, LEAVES)
        if len(entries) != size or len(leaves) != HASH_SIZE * size:
            raise _bad(f"the manifest says {size} entries; {ENTRIES} has {len(entries)} lines and {LEAVES} "
                       f"{len(leaves) // HASH_SIZE} leaf hashes")
        # (3) checkpoints and hashed members
        if not isinstance(m["checkpoints"], list):
            raise _bad("manifest checkpoints must be a list")
        cps: list[ArchivedCheckpoint] = []
        for i, c in enumerate(m["checkpoints"]):
            if not isinstance(c, dict) or set(c) != {"note", "timestamp", "cosignatures"}:
                raise _bad(f"manifest checkpoints[{i}] must have exactly note, timestamp, cosignatures")
            for key in ("note", "timestamp", "cosignatures"):
                v = c[key]
                if (v is None and key != "note") or (isinstance(v, str) and _CP_RE.fullmatch(v)):
                    continue
                raise _bad(f"manifest checkpoints[{i}].{key} is malformed")
            cosig = () if c["cosignatures"] is None else tuple(
                line for line in _read(z, c["cosignatures"]).split(b"\n") if line)
            cps.append(ArchivedCheckpoint(
                note=_read(z, c["note"]), timestamp=None if c["timestamp"] is None else _read(z, c["timestamp"]),
                cosignatures=cosig,
            ))
        hashed: dict[str, tuple[bytes, ...]] = {}
        for key, pattern in _HASHED_RE.items():
            names = m[key]
            if not isinstance(names, list) or not all(isinstance(n, str) and pattern.fullmatch(n) for n in names):
                raise _bad(f"manifest {key} must be a list of member names like {pattern.pattern}")
            hashed[key] = tuple(_read(z, n) for n in names)
    return AuditArchiveContent(
        origin=origin, exported_at=m["exported_at"], entries=entries, leaves=leaves, checkpoints=tuple(cps),
        globalconfs=hashed["globalconf"], certificates=hashed["certificates"],
        ocsp_responses=hashed["ocsp_responses"],
    )


__all__ = [
    "FORMAT",
    "VERSION",
    "ArchivedCheckpoint",
    "AuditArchiveContent",
    "is_audit_archive",
    "read_archive",
    "write_archive",
]
