"""Backup and restore of a security server's configuration, token and settings (I/O; the encryption is pure).

docs/operations.md, "Backup and restore". ``gateway server backup`` writes one archive; ``gateway server
restore`` puts it into the server that the settings describe (a fresh directory and database, or, with
``--force``, an existing server). The message log is not in it: it has its own export (docs/auditing.md).

**Content.** A ZIP file (members stored, not compressed) with:

| member | what |
|---|---|
| ``manifest.json`` | format, version, ``server_id``, ``created``, and each member's ``sha256`` and ``mode`` |
| ``settings.toml`` | the settings file the server runs with, as it is |
| ``state/<path>`` | every file of ``[server] state_dir``: keys or the software token, certificates, internal TLS key |
| ``token/<path>`` | the software token's files, when ``[server] token_dir`` lies outside ``state_dir`` |
| ``database.json`` | the rows of the serverconf tables (clients, IS certificates, services, endpoints, access |
| | rights, local groups, change counters) and of the admin API's users and API keys |

Left out: the token's PIN file (the operator keeps the PIN apart, as X-Road's backups do not carry it either),
lock files, the SQLite database itself, and the global configuration cache (downloaded again at start). Not
in ``database.json``: the message log, the admin audit log (a log too), the admin API's session-signing keys and
revoked sessions (new keys are made at start, so sessions of the old server end).

**Encryption** (``--passphrase-env`` / ``--passphrase-file``): the ZIP bytes are sealed with AES-256-GCM under a
key derived from the passphrase with scrypt (RFC 7914; N = 2^15, r = 8, p = 1, a random 16-byte salt). The file
is the line ``GATEWAY-BACKUP-ENCRYPTED 1``, a line of canonical JSON ``{"kdf": "scrypt", "n", "r", "p", "salt",
"nonce", "check"}`` (base64 values), then the ciphertext with its 16-byte tag; the two lines are the GCM
associated data, so a changed header fails too. scrypt yields 64 bytes: the first 32 are the AES key, the last
32 key an HMAC-SHA256 of ``gateway backup passphrase check`` stored as ``check``, which tells a wrong passphrase
(the check differs) from a damaged file (the check matches, the tag does not).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import os
import secrets
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.admin import models as admin_models
from gateway.admin.store import migrate_admin
from gateway.errors import Conflict, RequestError
from gateway.files import private_dir
from gateway.serverconf import models as sc_models
from gateway.serverconf.store import migrate_serverconf
from gateway.settings import Settings

FORMAT = "gateway-server-backup"
VERSION = 1
MAGIC = b"GATEWAY-BACKUP-ENCRYPTED 1\n"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1  # about 32 MiB and a tenth of a second per derivation
_CHECK_TEXT = b"gateway backup passphrase check"
MAX_ARCHIVE_BYTES = 1 << 30  # bytes; a backup holds keys and configuration, not logs: far below this

# What database.json holds, in insertion order (parents first); deleting goes the other way.
TABLES: tuple[sa.Table, ...] = (
    *sc_models.metadata.sorted_tables,
    admin_models.users, admin_models.api_keys,
)


# ---- encryption (pure) --------------------------------------------------------------------------------------


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes]:
    out = Scrypt(salt=salt, length=64, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))
    return out[:32], out[32:]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encrypt(data: bytes, passphrase: str) -> bytes:
    """Seal ``data`` under ``passphrase`` (module docstring)."""
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    key, check_key = _derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    header = {"kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt), "nonce": _b64(nonce),
              "check": _b64(hmac.new(check_key, _CHECK_TEXT, hashlib.sha256).digest())}
    head = MAGIC + json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"
    return head + AESGCM(key).encrypt(nonce, data, head)


def is_encrypted(blob: bytes) -> bool:
    return blob.startswith(MAGIC)


def decrypt(blob: bytes, passphrase: str | None) -> bytes:
    """The ZIP bytes inside an encrypted archive.

    Raises:
        RequestError: no passphrase given, the wrong passphrase, or a damaged file.
    """
    if passphrase is None:
        raise RequestError("the backup is encrypted: give its passphrase (--passphrase-env or --passphrase-file)")
    end = blob.find(b"\n", len(MAGIC))
    try:
        header = json.loads(blob[len(MAGIC):end])
        salt, nonce, check = (base64.b64decode(header[k], validate=True) for k in ("salt", "nonce", "check"))
        n, r, p = (int(header[k]) for k in ("n", "r", "p"))
        if end < 0 or header.get("kdf") != "scrypt" or len(nonce) != 12 or not (2 <= n <= 2**20 and r * p <= 64):
            raise ValueError("unexpected parameters")
    except (ValueError, KeyError, TypeError) as e:
        raise RequestError(f"the backup is damaged: its encryption header cannot be read ({e})") from e
    key, check_key = _derive(passphrase, salt, n, r, p)
    if not hmac.compare_digest(hmac.new(check_key, _CHECK_TEXT, hashlib.sha256).digest(), check):
        raise RequestError("wrong passphrase for this backup")
    try:
        return AESGCM(key).decrypt(nonce, blob[end + 1:], blob[:end + 1])
    except InvalidTag as e:
        raise RequestError("the backup is damaged: the passphrase is right but the content fails its "
                           "authentication tag (changed or truncated)") from e


# ---- database rows --------------------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, bytes):
        return {"$bytes": _b64(value)}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "$datetime" in value:
            return datetime.fromisoformat(value["$datetime"])
        if "$bytes" in value:
            return base64.b64decode(value["$bytes"])
    return value


async def dump_tables(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    """Every row of :data:`TABLES`, in primary-key order, as JSON values."""
    out: dict[str, list[dict[str, Any]]] = {}
    try:
        async with engine.connect() as conn:
            for table in TABLES:
                rows = (await conn.execute(sa.select(table).order_by(*table.primary_key.columns))).mappings()
                out[table.name] = [{k: _encode(v) for k, v in row.items()} for row in rows]
    except SQLAlchemyError as e:
        raise RequestError(f"cannot read the server's configuration from its database: {str(e)[:300]}",
                           hint="back up a server that has run (its database holds the serverconf tables)") from e
    return out


async def _count(engine: AsyncEngine) -> dict[str, int]:
    """Rows of the tables that make a configured server (the change counters do not)."""
    async with engine.connect() as conn:
        return {t.name: int((await conn.execute(sa.select(sa.func.count()).select_from(t))).scalar_one())
                for t in TABLES if t is not sc_models.versions}


async def load_tables(engine: AsyncEngine, tables: dict[str, list[dict[str, Any]]]) -> None:
    """Replace the rows of :data:`TABLES` with ``tables``, in one transaction (schema migrated first).

    Raises:
        RequestError: the rows do not fit this schema (an archive of another version).
    """
    await migrate_serverconf(engine)
    await migrate_admin(engine)
    unknown = set(tables) - {t.name for t in TABLES}
    if unknown:
        raise RequestError(f"the backup holds tables this version does not know: {', '.join(sorted(unknown))}")
    try:
        async with engine.begin() as conn:
            for table in reversed(TABLES):
                await conn.execute(table.delete())
            for table in TABLES:
                rows = [{k: _decode(v) for k, v in row.items()} for row in tables.get(table.name, [])]
                if rows:
                    await conn.execute(table.insert(), rows)
                await _advance_sequence(conn, table)
    except SQLAlchemyError as e:
        raise RequestError(f"the backup's configuration does not fit this database: {str(e)[:300]}") from e


async def _advance_sequence(conn: Any, table: sa.Table) -> None:
    """PostgreSQL: rows inserted with their ids leave the id sequence behind; move it past them."""
    if conn.dialect.name != "postgresql":
        return
    pk = list(table.primary_key.columns)
    if len(pk) != 1 or not isinstance(pk[0].type, sa.Integer) or pk[0].autoincrement is False:
        return
    column = pk[0].name
    await conn.execute(sa.text(
        f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column}'), "  # noqa: S608 - our own names
        f"COALESCE((SELECT MAX({column}) FROM {table.name}), 0) + 1, false) "
        f"WHERE pg_get_serial_sequence('{table.name}', '{column}') IS NOT NULL"
    ))


# ---- files ----------------------------------------------------------------------------------------------------


def _skipped(settings: Settings) -> set[Path]:
    s = settings.server
    out = {Path(s.token_pin_file).resolve()} if s.token_pin_file else set()
    url = sa.engine.make_url(s.database_url)
    if url.drivername.startswith("sqlite") and url.database:
        db = Path(url.database).resolve()
        out |= {db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")}
    return out


def _walk(root: Path, skip: set[Path], excluded_dirs: set[Path]) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        resolved = path.resolve()
        if any(resolved == d or d in resolved.parents for d in excluded_dirs):
            continue
        if path.is_file() and not path.is_symlink() and resolved not in skip and not path.name.endswith(".lock"):
            yield path.relative_to(root).as_posix(), path


def _trees(settings: Settings) -> list[tuple[str, Path]]:
    """(archive prefix, directory) of the files to keep: ``state/`` and, when elsewhere, ``token/``."""
    state = Path(settings.server.state_dir).resolve()
    out = [("state/", state)]
    if settings.server.token_dir:
        token = Path(settings.server.token_dir).resolve()
        if token != state and state not in token.parents:
            out.append(("token/", token))
    return out


def _excluded_dirs(settings: Settings) -> set[Path]:
    cache = Path(settings.globalconf.cache_dir).resolve()
    out = {cache}
    url = sa.engine.make_url(settings.server.database_url)
    if url.drivername.startswith("sqlite") and url.database:  # the log origins' lock files (server/lease.py)
        db = Path(url.database).resolve()
        out.add(db.with_name(db.name + "-origins"))
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupSummary:
    server_id: str
    files: int
    rows: dict[str, int]
    encrypted: bool

    def line(self) -> str:
        total = sum(self.rows.values())
        return (f"{self.server_id}: {self.files} files, {total} configuration rows"
                f"{' (encrypted)' if self.encrypted else ''}")


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` into ``path`` atomically with mode 0600 (temp file, then rename)."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _collect(settings: Settings, settings_file: Path) -> tuple[dict[str, bytes], dict[str, int]]:
    """The settings file and the state (and token) files, by archive name, with their modes.

    Raises:
        RequestError: the settings file or state directory cannot be read.
    """
    try:
        members: dict[str, bytes] = {"settings.toml": settings_file.read_bytes()}
    except OSError as e:
        raise RequestError(f"cannot read the settings file {settings_file}: {e.strerror or e}") from e
    modes: dict[str, int] = {"settings.toml": 0o600}
    state = Path(settings.server.state_dir)
    if not state.is_dir():
        raise RequestError(f"[server] state_dir {state} is not a directory: nothing to back up",
                           hint="run the backup with the settings of the server itself")
    skip, excluded = _skipped(settings), _excluded_dirs(settings)
    for prefix, root in _trees(settings):
        for rel, path in _walk(root, skip, excluded):
            members[prefix + rel] = path.read_bytes()
            modes[prefix + rel] = stat.S_IMODE(path.stat().st_mode)
    return members, modes


async def backup(
    settings: Settings, settings_file: Path, engine: AsyncEngine, out: Path, *, passphrase: str | None, now: datetime,
) -> BackupSummary:
    """Write the backup of the server ``settings`` describe into ``out`` (mode 0600).

    Raises:
        RequestError: the settings file or state directory cannot be read.
    """
    members, modes = await asyncio.to_thread(_collect, settings, settings_file)
    tables = await dump_tables(engine)
    members["database.json"] = json.dumps(tables, sort_keys=True, separators=(",", ":")).encode("utf-8")
    modes["database.json"] = 0o600
    manifest = {
        "format": FORMAT, "version": VERSION, "server_id": settings.server.id, "created": now.isoformat(),
        "members": {name: {"sha256": hashlib.sha256(data).hexdigest(), "mode": modes[name]}
                    for name, data in sorted(members.items())},
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
        for name, data in sorted(members.items()):
            z.writestr(name, data)
    data = buf.getvalue()
    sealed = await asyncio.to_thread(encrypt, data, passphrase) if passphrase is not None else data
    await asyncio.to_thread(_write_private, out, sealed)
    return BackupSummary(server_id=settings.server.id, files=len(members) - 2,
                         rows={k: len(v) for k, v in tables.items()}, encrypted=passphrase is not None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Opened:
    """An archive read and checked: its manifest and members."""

    manifest: dict[str, Any]
    members: dict[str, bytes]


def open_archive(path: Path, *, passphrase: str | None) -> Opened:
    """Read ``path``, decrypt it if it is encrypted, and check every member against the manifest.

    Raises:
        RequestError: unreadable, not a backup, encrypted without (or with the wrong) passphrase, damaged.
    """
    try:
        if path.stat().st_size > MAX_ARCHIVE_BYTES:
            raise RequestError(f"{path} is larger than {MAX_ARCHIVE_BYTES} bytes: not a backup of this kind")
        blob = path.read_bytes()
    except OSError as e:
        raise RequestError(f"cannot read {path}: {e.strerror or e}") from e
    data = decrypt(blob, passphrase) if is_encrypted(blob) else blob
    if not data.startswith(b"PK\x03\x04"):
        raise RequestError(f"{path} is not a gateway server backup (neither a ZIP file nor an encrypted backup)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = {info.filename: z.read(info) for info in z.infolist()}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as e:
        raise RequestError(f"the backup {path} is damaged: {e}") from e
    try:
        manifest = json.loads(members.pop("manifest.json"))
    except (KeyError, ValueError) as e:
        raise RequestError(f"the backup {path} is damaged: no readable manifest.json") from e
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise RequestError(f"{path} is not a version-{VERSION} gateway server backup "
                           f"(format {manifest.get('format')!r}, version {manifest.get('version')!r})")
    listed = manifest.get("members", {})
    if set(listed) != set(members):
        missing, extra = sorted(set(listed) - set(members)), sorted(set(members) - set(listed))
        raise RequestError(f"the backup {path} is damaged: members missing {missing}, not listed {extra}")
    for name, data in members.items():
        if hashlib.sha256(data).hexdigest() != listed[name]["sha256"]:
            raise RequestError(f"the backup {path} is damaged: member {name} does not match its SHA-256")
        if name.startswith("/") or ".." in name.split("/"):
            raise RequestError(f"the backup {path} names a member outside its directories: {name!r}")
    return Opened(manifest=manifest, members=members)


def _targets(settings: Settings, members: dict[str, bytes]) -> dict[str, Path]:
    trees = dict(_trees(settings))
    if "token/" not in trees and any(name.startswith("token/") for name in members):
        if not settings.server.token_dir:
            raise RequestError("the backup holds a software token kept outside state_dir, and these settings have "
                               "no [server] token_dir to restore it to")
        trees["token/"] = Path(settings.server.token_dir).resolve()
    out = {}
    for name in members:
        prefix = name[:name.index("/") + 1] if "/" in name else ""
        if prefix in trees:
            out[name] = trees[prefix] / name[len(prefix):]
    return out


def _put_files(opened: Opened, targets: dict[str, Path]) -> None:
    for name, path in targets.items():
        mode = opened.manifest["members"][name]["mode"] & 0o744  # nothing writable by others, as they were
        _write_private(path, opened.members[name])
        os.chmod(path, mode)


async def restore(
    settings: Settings, engine: AsyncEngine, opened: Opened, *, force: bool, settings_out: Path | None,
) -> BackupSummary:
    """Put an opened backup into the server ``settings`` describe: files into its state (and token) directory,
    configuration rows into its database; the archived settings file into ``settings_out`` if given.

    Raises:
        Conflict: the target holds a server already (its files or configuration) and ``force`` is false.
        RequestError: the archive does not fit these settings or this database.
    """
    members = opened.members
    if opened.manifest.get("server_id") != settings.server.id:
        raise RequestError(f"the backup is of {opened.manifest.get('server_id')}, these settings are of "
                           f"{settings.server.id}", hint="restore with the settings of that server ([server] id)")
    targets = _targets(settings, members)
    await migrate_serverconf(engine)
    await migrate_admin(engine)
    present = await asyncio.to_thread(lambda: [str(p) for p in targets.values() if p.exists()])
    rows = {k: v for k, v in (await _count(engine)).items() if v}
    if (present or rows) and not force:
        what = (f"files such as {present[0]}" if present else "") + (" and " if present and rows else "") + (
            f"configuration ({', '.join(f'{n} {k}' for k, n in sorted(rows.items()))})" if rows else "")
        raise Conflict(f"the target holds a security server already: {what}",
                       hint="restore into a fresh state directory and database, or replace it with --force "
                            "(stop the server first)")
    tables = json.loads(members["database.json"])
    await asyncio.to_thread(_put_files, opened, targets)
    await load_tables(engine, tables)
    if settings_out is not None:
        await asyncio.to_thread(_write_private, settings_out, members["settings.toml"])
    return BackupSummary(server_id=settings.server.id, files=len(targets),
                         rows={k: len(v) for k, v in tables.items()}, encrypted=False)

