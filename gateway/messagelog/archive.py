"""Message-log archives for auditors: the file format, written and read (I/O).

docs/messagelog.md. An archive is one log origin's records over a contiguous range of sequence numbers,
with everything needed to verify them offline against nothing but the instance's anchor: the signed
checkpoints that commit to the range, their RFC 3161 timestamp tokens, the signed global configuration(s)
that name the trusted CAs and TSAs, the blobs that the records name (their stapled certificates and OCSP
responses) and the certificates and OCSP responses of the log's signing key.

The format (specified for independent implementations in ``docs/auditing.md``) is a ZIP file whose members
are all **stored** (not compressed), so that every byte of a record sits at one place in the file and damage
is attributed to the record it hits::

    manifest.json                      canonical JSON (RFC 8785): what the archive holds (below)
    leaves.bin                         the stored leaf hash of every record, 32 bytes each, in seq order
    records/<first seq, 20 digits>.jsonl  up to CHUNK_RECORDS records each: the stored encoding, one per line
    checkpoints/<n, 6 digits>.note     signed notes (C2SP checkpoints), oldest first
    checkpoints/<n, 6 digits>.tst      the RFC 3161 timestamp token of that checkpoint, if it has one
    checkpoints/<n, 6 digits>.cosig    the witnesses' cosignature lines of that checkpoint, if it has any (v3)
    globalconf/<sha-256 hex>.json      signed global configuration envelopes, exactly as downloaded
    certs/<sha-256 hex>.der            certificates, DER: those the records name, and the log's signing certificates
    ocsp/<sha-256 hex>.der             OCSP responses, DER: those the records name

Nothing in the manifest is trusted by the verifier: it says where things are. What is trusted comes from
signatures that chain to the anchor. The reader checks the form only and raises :class:`TrustError` for a
file that is not an archive, is truncated, or has an inconsistent manifest.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from gateway.errors import MalformedArchive, TrustError
from gateway.globalconf.model import format_time
from gateway.messagelog.merkle import HASH_SIZE
from gateway.trust.canonical import canonical_bytes, loads_canonical

FORMAT = "gateway-messagelog-archive"
VERSION = 3  # version 3: checkpoints carry their witnesses' cosignatures (docs/witness.md section 5)
VERSIONS = (2, 3)  # what the reader takes; version 2: records of format version 2, no cosignatures
CHUNK_RECORDS = 2048  # records per records/ member: the unit of parallel verification
MANIFEST = "manifest.json"
LEAVES = "leaves.bin"
MAX_MANIFEST_BYTES = 64 * 2**20  # bytes; a manifest lists members, not data
MAX_SMALL_MEMBER_BYTES = 64 * 2**20  # bytes; configuration envelopes, notes, tokens, certificates

_CHUNK_RE = re.compile(r"records/[0-9]{20}\.jsonl")
_NOTE_RE = re.compile(r"checkpoints/[0-9]{6}\.note")
_TOKEN_RE = re.compile(r"checkpoints/[0-9]{6}\.tst")
_COSIG_RE = re.compile(r"checkpoints/[0-9]{6}\.cosig")
_HASHED_RE = {
    "globalconf": re.compile(r"globalconf/[0-9a-f]{64}\.json"),
    "certificates": re.compile(r"certs/[0-9a-f]{64}\.der"),
    "ocsp_responses": re.compile(r"ocsp/[0-9a-f]{64}\.der"),
}
_HEX_RE = re.compile(r"[0-9a-f]{64}")
_MANIFEST_KEYS = frozenset({
    "format", "version", "origin", "exported_at", "start", "end", "prefix", "records", "leaves",
    "checkpoints", "globalconf", "certificates", "ocsp_responses", "selection",
})


def _bad(message: str) -> TrustError:
    return MalformedArchive(f"archive: {message}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunk:
    """One ``records/`` member: records ``first`` .. ``first + count - 1``."""

    name: str
    first: int
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkSpan:
    """Where a records member's bytes lie in the archive file: what a worker process is sent instead of the
    bytes themselves (a few dozen bytes to pickle rather than megabytes)."""

    name: str
    path: str
    offset: int
    size: int

    def read(self) -> bytes:
        """The member's raw bytes.

        Raises:
            TrustError: the file cannot be read or ends early.
        """
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(self.size)
        except OSError as e:
            raise _bad(f"member {self.name} cannot be read: {e.strerror or e}") from e
        if len(data) != self.size:
            raise _bad(f"member {self.name} is truncated")
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointEntry:
    note: str  # member name of the signed note
    timestamp: str | None  # member name of its RFC 3161 token
    cosignatures: str | None = None  # member name of its witnesses' cosignature lines (version 3)


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """``manifest.json``: where everything is (untrusted: the verifier checks what it points to)."""

    origin: str
    exported_at: str
    start: int  # first sequence number in the archive
    end: int  # one past the last
    prefix: tuple[bytes, ...]  # the compact range (merkle.frontier_ranges) roots of the records before start
    chunks: tuple[Chunk, ...]
    checkpoints: tuple[CheckpointEntry, ...]
    globalconf: tuple[str, ...]
    certificates: tuple[str, ...]
    ocsp_responses: tuple[str, ...]
    selection: Mapping[str, Any] = field(default_factory=dict)  # how the range was chosen (informational)
    version: int = VERSION

    def to_bytes(self) -> bytes:
        entries: list[dict[str, Any]] = []
        for c in self.checkpoints:
            entry: dict[str, Any] = {"note": c.note, "timestamp": c.timestamp}
            if self.version >= 3:
                entry["cosignatures"] = c.cosignatures
            entries.append(entry)
        return canonical_bytes({
            "format": FORMAT,
            "version": self.version,
            "origin": self.origin,
            "exported_at": self.exported_at,
            "start": self.start,
            "end": self.end,
            "prefix": [h.hex() for h in self.prefix],
            "records": [{"file": c.name, "first": c.first, "count": c.count} for c in self.chunks],
            "leaves": LEAVES,
            "checkpoints": entries,
            "globalconf": list(self.globalconf),
            "certificates": list(self.certificates),
            "ocsp_responses": list(self.ocsp_responses),
            "selection": dict(self.selection),
        })

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse and check the manifest's form.

        Raises:
            TrustError: not canonical JSON, another format or version, or an inconsistent layout.
        """
        # (1) Canonical JSON of a known format and version, with exactly the documented keys.
        try:
            obj = loads_canonical(data, what="archive manifest")
        except TrustError as e:
            raise _bad(e.message) from e
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise _bad(f"manifest.json is not a {FORMAT} manifest")
        version = obj.get("version")
        if version not in VERSIONS:
            raise _bad(f"archive version {version!r} is not supported (this verifier knows "
                       f"{', '.join(map(str, VERSIONS))})")
        assert isinstance(version, int)
        if set(obj) != _MANIFEST_KEYS:
            missing, extra = sorted(_MANIFEST_KEYS - set(obj)), sorted(set(obj) - _MANIFEST_KEYS)
            raise _bad(f"manifest keys differ from version {version}: missing {missing}, unexpected {extra}")
        # (2) Field by field.
        origin, exported_at, start, end = obj["origin"], obj["exported_at"], obj["start"], obj["end"]
        if not isinstance(origin, str) or not origin or not isinstance(exported_at, str):
            raise _bad("manifest origin and exported_at must be strings")
        if not (_is_int(start) and _is_int(end) and 0 <= start <= end):
            raise _bad(f"manifest range start={start!r} end={end!r} is not 0 <= start <= end")
        prefix = obj["prefix"]
        if not isinstance(prefix, list) or not all(isinstance(h, str) and _HEX_RE.fullmatch(h) for h in prefix):
            raise _bad("manifest prefix must be a list of hex SHA-256 hashes")
        if len(prefix) != start.bit_count():
            raise _bad(f"manifest prefix has {len(prefix)} hashes; a tree of {start} records has {start.bit_count()}")
        if obj["leaves"] != LEAVES:
            raise _bad(f"manifest leaves must be {LEAVES!r}")
        # (3) Record chunks: contiguous, in order, covering [start, end) exactly.
        chunks: list[Chunk] = []
        expect = start
        records = obj["records"]
        if not isinstance(records, list):
            raise _bad("manifest records must be a list")
        for i, c in enumerate(records):
            if not isinstance(c, dict) or set(c) != {"file", "first", "count"}:
                raise _bad(f"manifest records[{i}] must have exactly file, first, count")
            name, first, count = c["file"], c["first"], c["count"]
            if not isinstance(name, str) or not _CHUNK_RE.fullmatch(name) or not _is_int(first) or not _is_int(count):
                raise _bad(f"manifest records[{i}] is malformed")
            if first != expect or not 0 < count <= CHUNK_RECORDS or name != chunk_name(first):
                raise _bad(f"manifest records[{i}] does not continue the range at {expect}")
            chunks.append(Chunk(name=name, first=first, count=count))
            expect = first + count
        if expect != end:
            raise _bad(f"manifest records cover {start}..{expect}, not {start}..{end}")
        # (4) Checkpoints and the hashed members.
        entries: list[CheckpointEntry] = []
        if not isinstance(obj["checkpoints"], list):
            raise _bad("manifest checkpoints must be a list")
        keys = {"note", "timestamp"} | ({"cosignatures"} if version >= 3 else set())
        for i, c in enumerate(obj["checkpoints"]):
            if not isinstance(c, dict) or set(c) != keys:
                raise _bad(f"manifest checkpoints[{i}] must have exactly {', '.join(sorted(keys))}")
            note, token, cosigs = c["note"], c["timestamp"], c.get("cosignatures")
            if not isinstance(note, str) or not _NOTE_RE.fullmatch(note):
                raise _bad(f"manifest checkpoints[{i}].note is malformed")
            if token is not None and (not isinstance(token, str) or not _TOKEN_RE.fullmatch(token)):
                raise _bad(f"manifest checkpoints[{i}].timestamp is malformed")
            if cosigs is not None and (not isinstance(cosigs, str) or not _COSIG_RE.fullmatch(cosigs)):
                raise _bad(f"manifest checkpoints[{i}].cosignatures is malformed")
            entries.append(CheckpointEntry(note=note, timestamp=token, cosignatures=cosigs))
        hashed: dict[str, tuple[str, ...]] = {}
        for key, pattern in _HASHED_RE.items():
            names = obj[key]
            if not isinstance(names, list) or not all(isinstance(n, str) and pattern.fullmatch(n) for n in names):
                raise _bad(f"manifest {key} must be a list of member names like {pattern.pattern}")
            hashed[key] = tuple(names)
        if not isinstance(obj["selection"], dict):
            raise _bad("manifest selection must be an object")
        return cls(
            origin=origin, exported_at=exported_at, start=start, end=end,
            prefix=tuple(bytes.fromhex(h) for h in prefix), chunks=tuple(chunks), checkpoints=tuple(entries),
            globalconf=hashed["globalconf"], certificates=hashed["certificates"],
            ocsp_responses=hashed["ocsp_responses"], selection=obj["selection"], version=version,
        )


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def chunk_name(first: int) -> str:
    return f"records/{first:020d}.jsonl"


def hashed_name(directory: str, data: bytes, ext: str) -> str:
    return f"{directory}/{hashlib.sha256(data).hexdigest()}.{ext}"


def blob_member(directory: str, name: str) -> str:
    """The member name of blob ``name`` (hex SHA-256) in ``certs`` or ``ocsp``."""
    return f"{directory}/{name}.der"


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointData:
    """A checkpoint as exported: the signed note, its timestamp token (DER), if any, and its witnesses'
    cosignature lines (signed-note lines, c2sp.org/tlog-cosignature@v1.0.1), if any."""

    note: bytes
    timestamp: bytes | None
    cosignatures: bytes | None = None


class ArchiveWriter:
    """Writes an archive to a temporary file next to ``path`` and renames it into place on :meth:`close`.

    Records must be added in sequence order starting at ``start``.
    """

    def __init__(
        self, path: str | Path, *, origin: str, start: int, prefix: Sequence[bytes], exported_at: datetime,
        selection: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.origin = origin
        self.start = start
        self.prefix = tuple(prefix)
        self.exported_at = exported_at
        self.selection = dict(selection or {})
        self.next_seq = start
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent or ".")
        os.close(fd)
        self._tmp = Path(tmp)
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._leaves = bytearray()
        self._chunk: list[bytes] = []
        self._chunk_first = start
        self._chunks: list[Chunk] = []
        self._checkpoints: list[CheckpointEntry] = []
        self._hashed: dict[str, list[str]] = {"globalconf": [], "certificates": [], "ocsp_responses": []}
        self._names: set[str] = set()

    def add_record(self, encoded: bytes, leaf_hash: bytes) -> None:
        """Add the next record: its stored encoding and its stored leaf hash."""
        if b"\n" in encoded:  # canonical JSON never holds a raw line feed; a stored record that does is broken
            raise _bad(f"record {self.next_seq} holds a raw line feed and cannot be exported")
        self._chunk.append(encoded)
        self._leaves += leaf_hash
        self.next_seq += 1
        if len(self._chunk) == CHUNK_RECORDS:
            self._flush_chunk()

    def add_records(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        for encoded, leaf in records:
            self.add_record(encoded, leaf)

    def open_record(self, leaf_hash: bytes) -> IO[bytes]:
        """Start the next record as a records member of its own, to be written piece by piece into the
        returned file (a record too large to hold whole: one whose body the log stores apart). The caller
        writes the record's encoding and one line feed, then closes the file, before adding anything else.
        """
        self._flush_chunk()
        name = chunk_name(self.next_seq)
        member = self._zip.open(name, "w", force_zip64=True)
        self._chunks.append(Chunk(name=name, first=self.next_seq, count=1))
        self._leaves += leaf_hash
        self.next_seq += 1
        self._chunk_first = self.next_seq
        return member

    def _flush_chunk(self) -> None:
        if not self._chunk:
            return
        name = chunk_name(self._chunk_first)
        self._zip.writestr(name, b"".join(r + b"\n" for r in self._chunk))
        self._chunks.append(Chunk(name=name, first=self._chunk_first, count=len(self._chunk)))
        self._chunk_first += len(self._chunk)
        self._chunk = []

    def add_checkpoint(self, note: bytes, timestamp: bytes | None, cosignatures: bytes | None = None) -> None:
        """A checkpoint: its signed note exactly as signed (the timestamp covers its bytes), its token, and
        its witnesses' cosignature lines apart from the note (so the note's bytes stay those stamped)."""
        n = len(self._checkpoints) + 1
        note_name = f"checkpoints/{n:06d}.note"
        self._zip.writestr(note_name, note)
        token_name = None
        if timestamp is not None:
            token_name = f"checkpoints/{n:06d}.tst"
            self._zip.writestr(token_name, timestamp)
        cosig_name = None
        if cosignatures:
            cosig_name = f"checkpoints/{n:06d}.cosig"
            self._zip.writestr(cosig_name, cosignatures)
        self._checkpoints.append(CheckpointEntry(note=note_name, timestamp=token_name, cosignatures=cosig_name))

    def _add_hashed(self, key: str, directory: str, ext: str, data: bytes) -> None:
        name = hashed_name(directory, data, ext)
        if name not in self._names:
            self._zip.writestr(name, data)
            self._hashed[key].append(name)
            self._names.add(name)

    def has_member(self, name: str) -> bool:
        """Whether a member of this name (e.g. ``certs/<hex>.der``) was added already."""
        return name in self._names

    def add_globalconf(self, envelope: bytes) -> None:
        self._add_hashed("globalconf", "globalconf", "json", envelope)

    def add_certificate(self, der: bytes) -> None:
        """A certificate: one that records name (a blob) or one that signed checkpoints."""
        self._add_hashed("certificates", "certs", "der", der)

    def add_ocsp_response(self, der: bytes) -> None:
        """An OCSP response: one that records name (a blob)."""
        self._add_hashed("ocsp_responses", "ocsp", "der", der)

    def close(self) -> Manifest:
        """Write ``leaves.bin`` and ``manifest.json``, fsync, and rename the archive into place."""
        self._flush_chunk()
        self._zip.writestr(LEAVES, bytes(self._leaves))
        manifest = Manifest(
            origin=self.origin, exported_at=format_time(self.exported_at), start=self.start, end=self.next_seq,
            prefix=self.prefix, chunks=tuple(self._chunks), checkpoints=tuple(self._checkpoints),
            globalconf=tuple(self._hashed["globalconf"]), certificates=tuple(self._hashed["certificates"]),
            ocsp_responses=tuple(self._hashed["ocsp_responses"]), selection=self.selection,
        )
        self._zip.writestr(MANIFEST, manifest.to_bytes())
        self._zip.close()
        with self._tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)
        return manifest

    def abort(self) -> None:
        self._zip.close()
        self._tmp.unlink(missing_ok=True)


_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # ZIP local file header (APPNOTE 4.3.7), 30 bytes


class LogArchive:
    """An archive opened for reading. Small members are read at once; record chunks on demand."""

    def __init__(self, path: str | Path) -> None:
        """Open and check the form of an archive.

        Raises:
            TrustError: not a ZIP file, a truncated one, no or a malformed manifest, a member missing.
        """
        self.path = Path(path)
        try:
            with self.path.open("rb") as f:
                head = f.read(4)
        except OSError as e:
            raise _bad(f"{self.path} cannot be read: {e.strerror or e}") from e
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            if head == b"PK\x03\x04":
                raise _bad(f"{self.path} is a damaged or truncated ZIP file (its central directory is "
                           f"missing or unreadable: {e})") from e
            raise _bad(f"{self.path} is not a log archive (not a ZIP file)") from e
        try:
            self._names = {i.filename: i for i in self._zip.infolist()}
            if MANIFEST not in self._names:
                raise _bad(f"{self.path} is a ZIP file but not a log archive (no {MANIFEST})")
            self.manifest = Manifest.from_bytes(self.read_member(MANIFEST, MAX_MANIFEST_BYTES))
            m = self.manifest
            self.leaves = self.read_member(LEAVES, HASH_SIZE * (m.end - m.start + 1) + HASH_SIZE)
            self.checkpoints = tuple(
                CheckpointData(
                    note=self.read_member(c.note),
                    timestamp=None if c.timestamp is None else self.read_member(c.timestamp),
                    cosignatures=None if c.cosignatures is None else self.read_member(c.cosignatures),
                )
                for c in m.checkpoints
            )
            self.globalconfs = tuple(self.read_member(n) for n in m.globalconf)
            self.certificates = tuple(self.read_member(n) for n in m.certificates)
            self.ocsp_responses = tuple(self.read_member(n) for n in m.ocsp_responses)
            for c in m.chunks:
                if c.name not in self._names:
                    raise _bad(f"member {c.name} (records {c.first}..{c.first + c.count - 1}) is missing")
        except BaseException:
            self._zip.close()
            raise

    def read_member(self, name: str, limit: int = MAX_SMALL_MEMBER_BYTES) -> bytes:
        """The bytes of a small member (CRC checked).

        Raises:
            TrustError: missing, too large or damaged.
        """
        info = self._names.get(name)
        if info is None:
            raise _bad(f"member {name} named in the manifest is missing")
        if info.file_size > limit:
            raise _bad(f"member {name} is larger than {limit} bytes")
        try:
            return self._zip.read(info)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise _bad(f"member {name} is damaged: {e}") from e

    def chunk_span(self, chunk: Chunk) -> ChunkSpan:
        """Where the raw bytes of a records member lie in the file (for a worker process to read them).

        Raises:
            TrustError: the member is compressed, has no local header, or its bytes lie outside the file.
        """
        info = self._names[chunk.name]
        if info.compress_type != zipfile.ZIP_STORED:
            raise _bad(f"member {chunk.name} is compressed; record members must be stored")
        fp = self._zip.fp
        assert fp is not None
        fp.seek(info.header_offset)
        header = fp.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise _bad(f"member {chunk.name} has no local header where the central directory says")
        fields = _LOCAL_HEADER.unpack(header)
        name_len, extra_len = fields[-2], fields[-1]
        offset = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        if offset + info.compress_size > fp.seek(0, os.SEEK_END):
            raise _bad(f"member {chunk.name} is truncated")
        return ChunkSpan(name=chunk.name, path=str(self.path), offset=offset, size=info.compress_size)

    def read_chunk(self, chunk: Chunk) -> bytes:
        """The raw bytes of a records member, as stored, without the CRC check: a damaged byte must reach
        the record verifier, which says which record it hit.

        Raises:
            TrustError: the member is compressed, or its bytes lie outside the file (truncated).
        """
        span = self.chunk_span(chunk)
        fp = self._zip.fp
        assert fp is not None
        fp.seek(span.offset)
        data = fp.read(span.size)
        if len(data) != span.size:
            raise _bad(f"member {chunk.name} is truncated")
        return data

    def blobs(self) -> tuple[tuple[str, bytes], ...]:
        """The ``certs/`` and ``ocsp/`` members as ``(name, bytes)``, the name being the hex SHA-256 that the
        member's name gives (not checked here: the verifier compares it with the bytes)."""
        m = self.manifest
        return tuple((n.split("/", 1)[1][:-4], d) for n, d in zip(
            (*m.certificates, *m.ocsp_responses), (*self.certificates, *self.ocsp_responses), strict=True))

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> LogArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "CHUNK_RECORDS",
    "FORMAT",
    "VERSION",
    "VERSIONS",
    "ArchiveWriter",
    "CheckpointData",
    "CheckpointEntry",
    "Chunk",
    "ChunkSpan",
    "LogArchive",
    "Manifest",
    "chunk_name",
]
