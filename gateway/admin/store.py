"""The admin API's tables behind async methods: users, API keys, session keys, audit log (I/O).

Password hashing (Argon2id, tens of milliseconds of CPU by design) runs in a worker thread so that a login never
stalls the event loop. Errors: a duplicate is :class:`~gateway.errors.RequestError` 409, a missing object 404,
bad credentials 401 and a locked account 429 (:mod:`gateway.admin.auth`); any other database failure is
:class:`~gateway.errors.GatewayError` ``Server.ServerProxy.DatabaseError``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.admin import auth
from gateway.admin.auditlog import EntryFields, entry_leaf
from gateway.admin.models import (
    VERSION_TABLE,
    api_keys,
    audit,
    audit_checkpoints,
    audit_cosignatures,
    audit_head,
    revoked_tokens,
    session_keys,
    users,
)
from gateway.admin.roles import Role, parse_roles, sorted_roles
from gateway.admin.schema import Page
from gateway.errors import AlreadyExists, AlreadyRevoked, DatabaseError, NotFound, RequestError
from gateway.messagelog.merkle import HASH_SIZE
from gateway.storage.db import migrate
from gateway.storage.transaction import describe, transaction
from gateway.trust.cosignature import Cosignature

MIGRATIONS = Path(__file__).parent / "migrations"
MAX_DETAILS_CHARS = 8192  # characters of an audit entry's details; longer ones are cut
AUDIT_READ = 5000  # audit entries per query when the whole log is read (verify, export, proofs)


def _changed_concurrently(e: IntegrityError) -> AlreadyExists:
    return AlreadyExists(f"admin data changed concurrently: {str(e.orig)[:200]}")


def _database_error(e: SQLAlchemyError | OSError) -> DatabaseError:
    return DatabaseError(f"admin database error: {describe(e)}")


def _roles_text(roles: frozenset[Role]) -> str:
    return ",".join(sorted_roles(roles))


def _roles_of(text: str) -> frozenset[Role]:
    return parse_roles(r for r in text.split(",") if r)


@dataclass(frozen=True, slots=True, kw_only=True)
class UserInfo:
    username: str
    roles: frozenset[Role]
    created_at: datetime
    failed_logins: int = 0
    locked_until: datetime | None = None
    sessions_valid_after: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyInfo:
    id: str
    name: str
    roles: frozenset[Role]
    created_by: str
    created_at: datetime
    revoked_at: datetime | None = None
    revoked_by: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One line of the audit log: who did what, when, from where, with which result."""

    at: datetime
    actor: str  # user name, "apikey:<id>", "cli:<os user>" or "-"
    auth: str  # jwt, apikey, password, cli, none
    remote: str  # peer address of the connection, or "local" for the CLI
    action: str  # operation id, e.g. addClient
    method: str
    path: str
    result: str  # success, refused (4xx), failed (5xx)
    status: int
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    seq: int | None = None  # its place in the audit log's Merkle tree (gateway.admin.auditlog)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "seq": self.seq, "at": _iso(self.at), "actor": self.actor, "auth": self.auth,
            "remote": self.remote, "action": self.action, "method": self.method, "path": self.path,
            "result": self.result, "status": self.status, "details": self.details,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditCheckpoint:
    """A signed checkpoint of the audit log as stored, with its RFC 3161 timestamp once it has one."""

    size: int
    root_hash: bytes
    note: bytes = field(repr=False)  # the signed note, exactly as signed (no cosignatures)
    signing_cert: bytes = field(repr=False)  # DER
    signing_ocsp: bytes | None = field(default=None, repr=False)  # DER OCSP response for it, when signed
    frontier: tuple[bytes, ...] = field(default=(), repr=False)  # compact range of the tree at size
    created: datetime
    timestamp_token: bytes | None = field(default=None, repr=False)
    timestamp_time: datetime | None = None
    tsa_name: str | None = None

    @property
    def stamped(self) -> bool:
        return self.timestamp_token is not None


def _audit_checkpoint(r: Any) -> AuditCheckpoint:
    f = bytes(r.frontier)
    return AuditCheckpoint(
        size=int(r.size), root_hash=bytes(r.root_hash), note=bytes(r.note), signing_cert=bytes(r.signing_cert),
        signing_ocsp=None if r.signing_ocsp is None else bytes(r.signing_ocsp),
        frontier=tuple(f[i:i + HASH_SIZE] for i in range(0, len(f), HASH_SIZE)), created=r.created,
        timestamp_token=None if r.timestamp_token is None else bytes(r.timestamp_token),
        timestamp_time=r.timestamp_time, tsa_name=r.tsa_name,
    )


def _fields(r: Any) -> EntryFields:
    return EntryFields(
        seq=int(r.seq), at=r.at, actor=r.actor, auth=r.auth, remote=r.remote, action=r.action, method=r.method,
        path=r.path, result=r.result, status=int(r.status), details=r.details,
    )


def _clean(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, as the audit log stores it: a lone surrogate (which no UTF-8
    database or canonical JSON takes) becomes ``?`` and NUL ``\\0``, so that no caller-chosen name can keep its
    entry out of the log."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\\0")[:limit]


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _user(row: Any) -> UserInfo:
    return UserInfo(
        username=row.username, roles=_roles_of(row.roles), created_at=row.created_at,
        failed_logins=int(row.failed_logins), locked_until=row.locked_until,
        sessions_valid_after=row.sessions_valid_after,
    )


def _api_key(row: Any) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.key_id, name=row.name, roles=_roles_of(row.roles), created_by=row.created_by,
        created_at=row.created_at, revoked_at=row.revoked_at, revoked_by=row.revoked_by,
    )


async def migrate_admin(engine: AsyncEngine) -> None:
    """Bring the admin schema up to date (its own Alembic version table)."""
    await migrate(engine, MIGRATIONS, VERSION_TABLE)


class AdminStore:
    """The ``adm_*`` tables; the engine is the caller's."""

    def __init__(self, engine: AsyncEngine, *, hasher: PasswordHasher = auth.HASHER) -> None:
        """``hasher``: Argon2id parameters (argon2-cffi's defaults; tests pass cheaper ones)."""
        self._engine = engine
        self._hasher = hasher
        self._public_keys: dict[str, ec.EllipticCurvePublicKey] = {}  # parsed once per kid

    async def migrate(self) -> None:
        await migrate_admin(self._engine)

    def _tx(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return transaction(self._engine.begin(), conflict=_changed_concurrently, database_error=_database_error)

    # ------------------------------------------------------------------------------------------------ users

    @staticmethod
    async def _user_row(conn: AsyncConnection, username: str) -> Any:
        return (await conn.execute(sa.select(users).where(users.c.username == username))).first()

    async def _need_user(self, conn: AsyncConnection, username: str) -> Any:
        row = await self._user_row(conn, username)
        if row is None:
            raise NotFound(f"user {username[:64]!r} does not exist")
        return row

    async def add_user(self, username: str, password: str, roles: frozenset[Role], *, now: datetime) -> UserInfo:
        """Raises: RequestError: 400 for a bad name, password or roles; 409 if the user exists."""
        auth.check_username(username)
        auth.check_password_policy(password)
        parse_roles(roles)
        async with self._tx() as conn:
            if await self._user_row(conn, username) is not None:
                raise AlreadyExists(f"user {username!r} already exists")
        hashed = await asyncio.to_thread(auth.hash_password, password, self._hasher)
        async with self._tx() as conn:
            await conn.execute(users.insert().values(
                username=username, password_hash=hashed, roles=_roles_text(roles), created_at=now, failed_logins=0,
            ))
        return UserInfo(username=username, roles=roles, created_at=now)

    async def get_user(self, username: str) -> UserInfo:
        """Raises: RequestError: 404 if there is no such user."""
        async with self._tx() as conn:
            return _user(await self._need_user(conn, username))

    async def find_user(self, username: str) -> UserInfo | None:
        async with self._tx() as conn:
            row = await self._user_row(conn, username)
        return None if row is None else _user(row)

    async def list_users(self) -> list[UserInfo]:
        async with self._tx() as conn:
            return [_user(r) for r in await conn.execute(sa.select(users).order_by(users.c.username))]

    async def set_password(self, username: str, password: str, *, now: datetime) -> None:
        """Replace the password, clear a lock-out and end every session issued until ``now``.

        Raises:
            RequestError: 400 if the password breaks the policy; 404 if there is no such user.
        """
        auth.check_password_policy(password)
        async with self._tx() as conn:
            await self._need_user(conn, username)
        hashed = await asyncio.to_thread(auth.hash_password, password, self._hasher)
        async with self._tx() as conn:
            await conn.execute(users.update().where(users.c.username == username).values(
                password_hash=hashed, failed_logins=0, locked_until=None, sessions_valid_after=now,
            ))

    async def set_roles(self, username: str, roles: frozenset[Role]) -> UserInfo:
        """Raises: RequestError: 400 for bad roles; 404 if there is no such user."""
        parse_roles(roles)
        async with self._tx() as conn:
            await self._need_user(conn, username)
            await conn.execute(users.update().where(users.c.username == username).values(roles=_roles_text(roles)))
            return _user(await self._need_user(conn, username))

    async def unlock(self, username: str) -> None:
        """Raises: RequestError: 404 if there is no such user."""
        async with self._tx() as conn:
            await self._need_user(conn, username)
            await conn.execute(
                users.update().where(users.c.username == username).values(failed_logins=0, locked_until=None)
            )

    async def remove_user(self, username: str) -> None:
        """Raises: RequestError: 404 if there is no such user."""
        async with self._tx() as conn:
            await self._need_user(conn, username)
            await conn.execute(users.delete().where(users.c.username == username))

    async def login(
        self, username: str, password: str, *, now: datetime, max_failures: int, base_seconds: int,
        max_seconds: int,
    ) -> UserInfo:
        """Check a user name and password.

        Raises:
            RequestError: 401 ``Client.Unauthorized`` if the name or the password is wrong (the message does not
                say which); 429 ``Client.AccountLocked`` while the account is locked.
        """
        # (1) look the user up; an unknown name goes through the same hash work below
        async with self._tx() as conn:
            row = await self._user_row(conn, username)
        # (2) a locked account is refused before the password is checked, so guessing stops during the lock
        if row is not None and row.locked_until is not None and row.locked_until > now:
            raise auth.locked(
                f"account {username!r} is locked after {row.failed_logins} wrong passwords until "
                f"{_iso(row.locked_until)}",
            )
        # (3) verify the password off the event loop
        ok = await asyncio.to_thread(
            auth.verify_password, None if row is None else row.password_hash, password, self._hasher
        )
        if row is None:
            raise auth.unauthorized("user name or password is wrong")
        if not ok:
            # (4) count the failure atomically (concurrent guesses all count) and lock when due
            async with self._tx() as conn:
                await conn.execute(users.update().where(users.c.username == username).values(
                    failed_logins=users.c.failed_logins + 1))
                failures = int(await conn.scalar(
                    sa.select(users.c.failed_logins).where(users.c.username == username)) or 0)
                until = auth.lockout_until(failures, now, max_failures=max_failures, base_seconds=base_seconds,
                                           max_seconds=max_seconds)
                if until is not None:
                    await conn.execute(users.update().where(users.c.username == username).values(locked_until=until))
            if until is not None:
                raise auth.locked(
                    f"user name or password is wrong; account {username!r} is now locked until {_iso(until)}",
                )
            raise auth.unauthorized("user name or password is wrong")
        # (5) success: clear the failure count; upgrade the hash if the parameters have grown
        changes: dict[str, Any] = {"failed_logins": 0, "locked_until": None}
        if auth.needs_rehash(row.password_hash, self._hasher):
            changes["password_hash"] = await asyncio.to_thread(auth.hash_password, password, self._hasher)
        async with self._tx() as conn:
            await conn.execute(users.update().where(users.c.username == username).values(**changes))
        return _user(row)

    # --------------------------------------------------------------------------------------------- API keys

    async def create_api_key(
        self, name: str, roles: frozenset[Role], *, created_by: str, now: datetime
    ) -> tuple[ApiKeyInfo, str]:
        """A new API key; returns its description and the key itself (never stored, shown once).

        Raises:
            RequestError: 400 for an empty name or bad roles.
        """
        if not name.strip() or len(name) > 128:
            raise RequestError("API key name must be 1-128 characters")
        parse_roles(roles)
        key_id, digest, key = auth.new_api_key()
        async with self._tx() as conn:
            await conn.execute(api_keys.insert().values(
                key_id=key_id, secret_sha256=digest, name=name, roles=_roles_text(roles), created_by=created_by,
                created_at=now,
            ))
        return ApiKeyInfo(id=key_id, name=name, roles=roles, created_by=created_by, created_at=now), key

    async def list_api_keys(self) -> list[ApiKeyInfo]:
        async with self._tx() as conn:
            return [_api_key(r) for r in await conn.execute(sa.select(api_keys).order_by(api_keys.c.id))]

    async def revoke_api_key(self, key_id: str, *, by: str, now: datetime) -> None:
        """Raises: RequestError: 404 if there is no such key; 409 if it is already revoked."""
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id))).first()
            if row is None:
                raise NotFound(f"API key {key_id[:32]!r} does not exist")
            if row.revoked_at is not None:
                raise AlreadyRevoked(f"API key {key_id} was already revoked at {_iso(row.revoked_at)}")
            await conn.execute(api_keys.update().where(api_keys.c.key_id == key_id).values(
                revoked_at=now, revoked_by=by))

    async def authenticate_api_key(self, presented: str) -> auth.Principal:
        """The principal of a presented API key.

        Raises:
            RequestError: 401 if the key is malformed, unknown, wrong or revoked.
        """
        key_id, secret = auth.split_api_key(presented)
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id))).first()
        if row is None or not auth.api_key_matches(secret, row.secret_sha256):
            raise auth.unauthorized("API key is not valid")
        if row.revoked_at is not None:
            raise auth.unauthorized(f"API key {key_id} has been revoked")
        return auth.Principal(name=f"apikey:{key_id}", kind="apikey", roles=_roles_of(row.roles))

    # ------------------------------------------------------------------------------------- session keys

    async def session_keys(self) -> list[auth.SigningKey]:
        async with self._tx() as conn:
            rows = await conn.execute(sa.select(session_keys).order_by(session_keys.c.created_at))
            return [
                auth.SigningKey(kid=r.kid, private_pem=r.private_pem.encode("ascii"), created_at=r.created_at,
                                retired_at=r.retired_at)
                for r in rows
            ]

    async def verification_keys(self, *, now: datetime, ttl_seconds: int) -> dict[str, ec.EllipticCurvePublicKey]:
        """Public keys that may verify a session token now, by kid."""
        found: dict[str, ec.EllipticCurvePublicKey] = {}
        for key in auth.usable_keys(await self.session_keys(), now=now, ttl_seconds=ttl_seconds):
            public = self._public_keys.get(key.kid)
            if public is None:
                public = self._public_keys[key.kid] = key.private_key().public_key()
            found[key.kid] = public
        return found

    async def signing_key(self, *, now: datetime) -> auth.SigningKey:
        """The key that signs new session tokens; the first one is made on first need."""
        key = auth.active_key(await self.session_keys())
        return key if key is not None else await self.rotate_session_key(now=now, ttl_seconds=0)

    async def rotate_session_key(self, *, now: datetime, ttl_seconds: int) -> auth.SigningKey:
        """Retire the active keys, make a new one, and drop keys retired more than a token lifetime ago."""
        key = auth.new_signing_key(now)
        async with self._tx() as conn:
            expired = now - timedelta(seconds=ttl_seconds)
            await conn.execute(session_keys.delete().where(
                session_keys.c.retired_at.is_not(None), session_keys.c.retired_at <= expired
            ))
            await conn.execute(session_keys.update().where(session_keys.c.retired_at.is_(None)).values(retired_at=now))
            await conn.execute(session_keys.insert().values(
                kid=key.kid, private_pem=key.private_pem.decode("ascii"), created_at=now))
        return key

    # ----------------------------------------------------------------------------------- revoked sessions

    async def revoke_token(self, jti: str, *, expires_at: datetime, now: datetime) -> None:
        """End a session token (logout); rows of tokens that have expired anyway are dropped."""
        async with self._tx() as conn:
            await conn.execute(revoked_tokens.delete().where(revoked_tokens.c.expires_at <= now))
            if await conn.scalar(sa.select(revoked_tokens.c.jti).where(revoked_tokens.c.jti == jti)) is None:
                await conn.execute(revoked_tokens.insert().values(jti=jti, expires_at=expires_at))

    async def is_token_revoked(self, jti: str) -> bool:
        async with self._tx() as conn:
            return await conn.scalar(sa.select(revoked_tokens.c.jti).where(revoked_tokens.c.jti == jti)) is not None

    # ---------------------------------------------------------------------------------------------- audit

    async def write_audit(self, entry: AuditEntry) -> int:
        """Append an entry to the audit log; its sequence number.

        The transaction first increments the tree head (``adm_audit_head``): that update takes the row lock
        on PostgreSQL and the database's write lock on SQLite before anything is read, so concurrent writers
        (the server and CLI processes) are serialised and ``seq`` has no gap and no duplicate. The entry's
        leaf hash (:func:`gateway.admin.auditlog.entry_leaf`) is written with the row.
        """
        details = json.dumps(entry.details, sort_keys=True, default=str)
        if len(details) > MAX_DETAILS_CHARS:
            details = json.dumps({"truncated": details[:MAX_DETAILS_CHARS]})
        async with self._tx() as conn:
            size = await conn.scalar(
                audit_head.update().where(audit_head.c.id == 1).values(size=audit_head.c.size + 1)
                .returning(audit_head.c.size)
            )
            if size is None:
                raise DatabaseError("admin database error: the audit log's tree head (adm_audit_head) is missing")
            fields = EntryFields(
                seq=int(size) - 1, at=entry.at, actor=_clean(entry.actor, 255), auth=_clean(entry.auth, 16),
                remote=_clean(entry.remote, 64), action=_clean(entry.action, 64), method=_clean(entry.method, 16),
                path=_clean(entry.path, 2048), result=_clean(entry.result, 16), status=entry.status,
                details=details,
            )
            await conn.execute(audit.insert().values(
                at=fields.at, actor=fields.actor, auth=fields.auth, remote=fields.remote, action=fields.action,
                method=fields.method, path=fields.path, result=fields.result, status=fields.status,
                details=details, seq=fields.seq, leaf_hash=entry_leaf(fields),
            ))
        return fields.seq

    async def list_audit(
        self, page: Page, *, actor: str | None = None, action: str | None = None, result: str | None = None,
    ) -> tuple[list[AuditEntry], int]:
        """Audit entries, newest first, and the total number that match."""
        where: list[sa.ColumnElement[bool]] = []
        if actor is not None:
            where.append(audit.c.actor == actor)
        if action is not None:
            where.append(audit.c.action == action)
        if result is not None:
            where.append(audit.c.result == result)
        async with self._tx() as conn:
            total = int(await conn.scalar(sa.select(sa.func.count()).select_from(audit).where(*where)) or 0)
            rows = await conn.execute(
                sa.select(audit).where(*where).order_by(audit.c.id.desc()).limit(page.limit).offset(page.offset)
            )
            entries = [
                AuditEntry(
                    id=int(r.id), at=r.at, actor=r.actor, auth=r.auth, remote=r.remote, action=r.action,
                    method=r.method, path=r.path, result=r.result, status=int(r.status), details=json.loads(r.details),
                    seq=int(r.seq),
                )
                for r in rows
            ]
        return entries, total

    # ------------------------------------------------------------------- audit log as a Merkle log

    async def audit_size(self) -> int:
        """The number of audit entries (the tree size)."""
        async with self._tx() as conn:
            return int(await conn.scalar(sa.select(audit_head.c.size).where(audit_head.c.id == 1)) or 0)

    async def audit_leaves(self, start: int, end: int) -> list[bytes]:
        """The stored leaf hashes of entries ``start`` .. ``end - 1``, in order (at most :data:`AUDIT_READ`)."""
        end = min(end, start + AUDIT_READ)
        async with self._tx() as conn:
            rows = await conn.execute(
                sa.select(audit.c.leaf_hash).where(audit.c.seq >= start, audit.c.seq < end).order_by(audit.c.seq))
            return [bytes(r.leaf_hash) for r in rows]

    async def audit_chain(self, start: int = 0, limit: int = AUDIT_READ) -> list[tuple[EntryFields, bytes]]:
        """Entries from ``seq >= start`` in ``seq`` order, as the tree sees them, with their stored leaf hashes."""
        async with self._tx() as conn:
            rows = await conn.execute(
                sa.select(audit).where(audit.c.seq >= start).order_by(audit.c.seq).limit(min(limit, AUDIT_READ)))
            return [(_fields(r), bytes(r.leaf_hash)) for r in rows]

    async def add_audit_checkpoint(self, cp: AuditCheckpoint) -> bool:
        """Store a checkpoint; False if one of that size is stored already (another process made it)."""
        try:
            async with self._tx() as conn:
                await conn.execute(audit_checkpoints.insert().values(
                    size=cp.size, root_hash=cp.root_hash, note=cp.note, signing_cert=cp.signing_cert,
                    signing_ocsp=cp.signing_ocsp, frontier=b"".join(cp.frontier), created=cp.created,
                    timestamp_token=cp.timestamp_token, timestamp_time=cp.timestamp_time, tsa_name=cp.tsa_name,
                ))
        except AlreadyExists:
            return False
        return True

    async def latest_audit_checkpoint(self, *, stamped_only: bool = False) -> AuditCheckpoint | None:
        q = sa.select(audit_checkpoints).order_by(audit_checkpoints.c.size.desc()).limit(1)
        if stamped_only:
            q = q.where(audit_checkpoints.c.timestamp_token.is_not(None))
        async with self._tx() as conn:
            row = (await conn.execute(q)).first()
        return None if row is None else _audit_checkpoint(row)

    async def audit_checkpoint(self, size: int) -> AuditCheckpoint | None:
        async with self._tx() as conn:
            row = (await conn.execute(
                sa.select(audit_checkpoints).where(audit_checkpoints.c.size == size))).first()
        return None if row is None else _audit_checkpoint(row)

    async def audit_checkpoints(self, *, unstamped_only: bool = False, limit: int | None = None,
                                ) -> list[AuditCheckpoint]:
        """Checkpoints, smallest first (with ``unstamped_only``: newest first, those without a token)."""
        q = sa.select(audit_checkpoints)
        if unstamped_only:
            q = q.where(audit_checkpoints.c.timestamp_token.is_(None)).order_by(audit_checkpoints.c.size.desc())
        else:
            q = q.order_by(audit_checkpoints.c.size)
        if limit is not None:
            q = q.limit(limit)
        async with self._tx() as conn:
            return [_audit_checkpoint(r) for r in await conn.execute(q)]

    async def set_audit_timestamp(self, size: int, *, token: bytes, gen_time: datetime, tsa_name: str) -> None:
        async with self._tx() as conn:
            await conn.execute(audit_checkpoints.update().where(audit_checkpoints.c.size == size).values(
                timestamp_token=token, timestamp_time=gen_time, tsa_name=tsa_name[:255]))

    async def add_audit_cosignatures(self, size: int, cosignatures: Sequence[Cosignature]) -> None:
        """Keep cosignatures of the checkpoint at ``size``; one per witness (a later one is ignored).

        Raises:
            RequestError: 404 if there is no checkpoint of that size.
        """
        async with self._tx() as conn:
            if await conn.scalar(sa.select(audit_checkpoints.c.size).where(audit_checkpoints.c.size == size)) is None:
                raise NotFound(f"the audit log has no checkpoint of size {size}")
            have = set((await conn.scalars(
                sa.select(audit_cosignatures.c.witness).where(audit_cosignatures.c.size == size))).all())
            for c in cosignatures:
                if c.name in have:
                    continue
                have.add(c.name)
                await conn.execute(audit_cosignatures.insert().values(
                    size=size, witness=c.name, key_id=c.key_id, timestamp=c.timestamp,
                    line=c.line().decode("utf-8"),
                ))

    async def audit_cosignatures(self, size: int | None = None) -> list[tuple[int, str]]:
        """``(checkpoint size, cosignature line)`` pairs, by size then witness name."""
        q = sa.select(audit_cosignatures.c.size, audit_cosignatures.c.line).order_by(
            audit_cosignatures.c.size, audit_cosignatures.c.witness)
        if size is not None:
            q = q.where(audit_cosignatures.c.size == size)
        async with self._tx() as conn:
            return [(int(r.size), r.line) for r in await conn.execute(q)]

