"""The claim of one process on its log origin: two processes that would write one origin fail loudly (I/O).

docs/messagelog.md section 5: the writer numbers an origin's records from what it read and kept, so exactly one
process may write each origin. :class:`OriginLease` is that process's claim, taken before the message log
opens and held until the process ends, by a lock the operating system or the database drops when the holder
dies (``kill -9`` included), so that a restarted worker or node takes its own origin back at once:

- **SQLite** (the workers of one machine): ``flock(2)`` on a file per origin in the directory
  ``<database file>-origins/``; the file says who holds it (process id, host, since when);
- **PostgreSQL** (several nodes): a session-level advisory lock on a connection of its own, in autocommit
  (it holds no transaction open). The server drops it when that connection ends; TCP keepalives on the
  connection (``tcp_keepalives_*``) make a vanished machine's lock go within about 25 s. A background check
  (:meth:`OriginLease.run`) pings the connection every :data:`CHECK_SECONDS`; if the connection is lost, so is
  the lock: :meth:`OriginLease.check` refuses exchanges (``LoggingFailed``, fail closed) until the lock is
  taken back.

A second claim of a held origin raises :class:`~gateway.errors.ConfigError` naming the holder: the process
refuses to start (exit 2); on PostgreSQL only after waiting :data:`CLAIM_WAIT_SECONDS` for the holder to go, so
that a node restarted right after its machine vanished gets its origin back rather than failing. The primary
key ``(origin, seq)`` stays the backstop: a collision fails its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import ConfigError, MessageLogError
from gateway.files import private_dir

log = structlog.get_logger("gateway.server.lease")

CHECK_SECONDS = 2.0  # seconds between checks that the PostgreSQL lock's connection is alive
# seconds a PostgreSQL claim waits for a held origin to be given up: longer than a vanished machine's session
# takes to end (the keepalives below), so that a node restarted at once gets its origin instead of failing
CLAIM_WAIT_SECONDS = 40.0
# Server-side TCP keepalives of the lock's connection: a machine that vanished loses its lock after about
# idle + interval * count seconds, and its origin can be claimed by the node that replaces it.
_KEEPALIVES = {"tcp_keepalives_idle": 10, "tcp_keepalives_interval": 5, "tcp_keepalives_count": 3}
_LOCK_SALT = b"gateway messagelog origin\x00"


def lock_key(origin: str) -> int:
    """The 64-bit PostgreSQL advisory lock key of ``origin`` (first 8 bytes of a salted SHA-256, signed)."""
    return int.from_bytes(hashlib.sha256(_LOCK_SALT + origin.encode()).digest()[:8], "big", signed=True)


def lock_file(database: str, origin: str) -> Path:
    """The file whose ``flock`` is the claim on ``origin`` of the SQLite database file ``database``."""
    name = hashlib.sha256(origin.encode()).hexdigest()[:32]
    return Path(f"{database}-origins") / f"{name}.lock"


class OriginLease:
    """One process's claim on one log origin (module docstring); :meth:`acquire`, then :meth:`release`."""

    def __init__(self, origin: str, *, holder: str) -> None:
        self.origin = origin
        self.holder = holder  # who we are, for the other claimant's error message
        self._fd: int | None = None  # SQLite: the locked file
        self._engine: AsyncEngine | None = None  # PostgreSQL: where the lock lives
        self._conn: AsyncConnection | None = None  # PostgreSQL: the connection holding the lock
        self.lost: str | None = None  # why the lock is not held now (PostgreSQL only), None while held
        self._checking = asyncio.Lock()  # one check_now at a time: two pings on one connection would collide

    @classmethod
    async def acquire(
        cls, engine: AsyncEngine, origin: str, *, wait_seconds: float = CLAIM_WAIT_SECONDS,
        pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> OriginLease:
        """Claim ``origin`` in the database of ``engine`` for this process; on PostgreSQL, wait up to
        ``wait_seconds`` for a holder to give it up (a node that vanished, whose session has not ended yet),
        trying again after each ``pause(1.0)``.

        Raises:
            ConfigError: another process holds it (the message names it), or the claim cannot be made.
        """
        holder = f"process {os.getpid()} on {socket.gethostname()}"
        lease = cls(origin, holder=holder)
        if engine.dialect.name == "sqlite":
            database = engine.url.database
            if not database or database == ":memory:":
                raise ConfigError("the message log needs an SQLite database file, not an in-memory database")
            await asyncio.to_thread(lease._lock_file, database)
        else:
            lease._engine = engine
            loop = asyncio.get_running_loop()
            until = loop.time() + wait_seconds
            taken = await lease._lock_database()
            if taken is not None and wait_seconds > 0:
                log.warning("log origin is held by another process; waiting for it to be given up",
                            origin=origin, holder=taken, wait_seconds=wait_seconds)
            while taken is not None and loop.time() < until:
                await pause(1.0)  # a retry policy: another machine's session ends on its own time
                taken = await lease._lock_database()
            if taken is not None:
                raise ConfigError(
                    f"log origin {origin} is already written by another process ({taken}); two processes must "
                    "never write one origin",
                    hint=f"give each node its own [server] node name (waited {wait_seconds:g} s for the holder to "
                         "go: a node that vanished gives its origin up within about 25 s)",
                )
        log.info("log origin claimed", origin=origin)
        return lease

    # ---- SQLite: flock ------------------------------------------------------------------------------------

    def _lock_file(self, database: str) -> None:
        path = lock_file(database, self.origin)
        try:
            private_dir(path.parent)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise ConfigError(f"cannot create the lock file {path} of log origin {self.origin}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            held = e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
            text = _read_holder(fd) if held else ""
            os.close(fd)
            if held:
                raise ConfigError(
                    f"log origin {self.origin} is already written by another process ({text or 'unknown'}, "
                    f"lock file {path}); two processes must never write one origin",
                    hint="each worker is started by `gateway server serve` with its own index; stop the other "
                         "process first",
                ) from e
            raise ConfigError(f"cannot lock {path} for log origin {self.origin}: {e}") from e
        since = datetime.now(UTC).isoformat(timespec="seconds")
        note = json.dumps({"origin": self.origin, "holder": self.holder, "since": since}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, note + b"\n", 0)
        self._fd = fd

    # ---- PostgreSQL: advisory lock on a connection of its own ----------------------------------------------

    async def _lock_database(self) -> str | None:
        """Take the lock on a new connection; None when taken, else who holds it."""
        assert self._engine is not None
        key = lock_key(self.origin)
        try:
            conn = await self._engine.connect()
        except (OSError, SQLAlchemyError) as e:
            raise ConfigError(f"cannot claim log origin {self.origin}: database unreachable: {e}") from e
        try:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            for name, value in _KEEPALIVES.items():
                await conn.execute(sa.text(f"SET {name} = {int(value)}"))
            await conn.execute(sa.text("SELECT set_config('application_name', :name, false)"),
                               {"name": f"gateway lease {self.origin}"[:63]})
            if await conn.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}):
                self._conn = conn
                return None
            row = (await conn.execute(sa.text(
                "SELECT a.client_addr, a.pid, a.backend_start FROM pg_locks l JOIN pg_stat_activity a "
                "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                "AND l.classid = :hi AND l.objid = :lo"),
                {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF})).first()
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        await conn.close()
        if row is None:
            return "a database session that has just ended"
        addr, pid, since = row
        return f"database session {pid} from {addr or 'a local socket'} since {since:%Y-%m-%d %H:%M:%S}"

    async def run(self, stop: asyncio.Event) -> None:
        """PostgreSQL: check the lock's connection every CHECK_SECONDS; when it is gone, take the lock back on
        a new connection (refusing exchanges meanwhile: :meth:`check`). Returns when ``stop`` is set."""
        if self._engine is None:
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=CHECK_SECONDS)
            if stop.is_set():
                return
            await self.check_now()

    async def check_now(self) -> None:
        """One round of :meth:`run`: ping the lock's connection, or take the lock back (also run by the readiness
        check, so that a server is not reported ready on a lock whose connection an outage broke unseen)."""
        if self._engine is None:
            return
        async with self._checking:
            await self._check_now()

    async def _check_now(self) -> None:
        assert self._engine is not None
        if self._conn is not None:
            try:
                await self._conn.execute(sa.text("SELECT 1"))
                return
            except (OSError, SQLAlchemyError) as e:
                conn, self._conn = self._conn, None
                with contextlib.suppress(Exception):
                    await conn.invalidate()
                self.lost = f"the database connection holding its lock was lost ({type(e).__name__})"
                log.error("log origin lock lost; exchanges are refused until it is taken back",
                          origin=self.origin, error=str(e)[:200])
        try:
            taken = await self._lock_database()
        except ConfigError as e:
            self.lost = e.message
            return
        if taken is None:
            log.warning("log origin lock taken back", origin=self.origin)
            self.lost = None
        else:
            self.lost = f"another process holds it now ({taken})"
            log.error("log origin is held by another process; exchanges are refused", origin=self.origin,
                      holder=taken)

    def check(self) -> None:
        """Raise unless this process holds its origin now (the proxies call it before each exchange).

        Raises:
            MessageLogError: ``LoggingFailed``: the lock was lost and not taken back yet.
        """
        if self.lost is not None:
            raise MessageLogError(f"this process does not hold log origin {self.origin}: {self.lost}")

    async def release(self) -> None:
        """Give the origin up (at stop; a process that dies gives it up too). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(self.origin)})
            with contextlib.suppress(Exception):
                await conn.close()
        self._engine = None


def _read_holder(fd: int) -> str:
    try:
        doc = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return ""
    if not isinstance(doc, dict):
        return ""
    return f"{doc.get('holder', '?')} since {doc.get('since', '?')}"


__all__ = ["CHECK_SECONDS", "CLAIM_WAIT_SECONDS", "OriginLease", "lock_file", "lock_key"]
