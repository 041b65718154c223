"""A body held while it passes through a security server: in memory while small, in a private file past a
threshold, hashed as it arrives, read back as often as needed (I/O: files, a worker thread).

Why: the ``Content-Digest`` header is signed, so a sender must know the SHA-256 of a body before it writes the
headers, and the message log must hold the body that was signed; a body of 1 GiB must still not be held in
memory. A :class:`Spool` takes the body in chunks (:meth:`Spool.write`), computes its SHA-256 (and its SHA-512,
for X-Road's request hash, when asked) as the chunks come, keeps it in memory up to ``memory_limit`` bytes and
moves it to a file in ``directory`` past that; once :meth:`Spool.finish` is called, its ``size`` and digests are
known and :meth:`Spool.chunks` reads it back, as many times as wanted.

The rules it keeps:

- **Bounded memory**: at most ``memory_limit`` bytes of body in memory, plus the chunks of one flush
  (:data:`FLUSH_BYTES`); a spilled body is read back one chunk at a time.
- **The event loop is not blocked**: chunks are gathered until :data:`FLUSH_BYTES`, then hashed and written
  to the file in a worker thread (``hashlib`` releases the GIL for large buffers); only the tail of a body
  under :data:`INLINE_HASH_BYTES` is hashed on the loop (about 0.1 ms at the slowest SHA-256 seen here).
- **Nothing stays on disk**: the file is created 0600 (``tempfile.mkstemp``) in a directory that must be 0700
  and ours (:func:`spool_directory`), and unlinked at once: only the open descriptor holds it, so it is gone
  when the spool is closed, when the task using it is cancelled or fails, and even when the process dies.
- **Order**: writes are one at a time (a second concurrent :meth:`Spool.write` is a bug: RuntimeError); reads
  only after :meth:`Spool.finish`, and several reads may run at once (each reads at its own offset).
- **Limit**: past ``max_bytes`` a write fails with :class:`~gateway.errors.PayloadTooLarge` (HTTP 413), and
  nothing past the limit is kept.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from gateway.errors import ConfigError, PayloadTooLarge
from gateway.proxy.http.types import BodyHold

MEMORY_LIMIT = 1 * 2**20  # bytes of body held in memory before it moves to a file
FLUSH_BYTES = 256 * 2**10  # bytes gathered before they are hashed and written in a worker thread
INLINE_HASH_BYTES = 64 * 2**10  # bytes of a tail that may be hashed on the event loop (about 0.1 ms)
READ_CHUNK = 256 * 2**10  # bytes per chunk read back from a file

_T = TypeVar("_T")


def spool_directory(path: str | os.PathLike[str]) -> Path:
    """The directory spools write their files in: created 0700 if missing, else checked to be a directory
    owned by this user that no one else may enter.

    Raises:
        ConfigError: the path exists but is not a directory, is not owned by this user, or is open to its
            group or others (mode is not 0700 or stricter), or it cannot be created.
    """
    p = Path(path)
    try:
        if not p.exists():
            p.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = p.lstat()
    except OSError as e:
        raise ConfigError(f"spool directory {p}: cannot be created: {e.strerror or e}") from e
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"spool directory {p}: is not a directory")
    if st.st_uid != os.geteuid():
        raise ConfigError(f"spool directory {p}: is owned by uid {st.st_uid}, not by this process's {os.geteuid()}")
    if st.st_mode & 0o077:
        raise ConfigError(f"spool directory {p}: mode {stat.S_IMODE(st.st_mode):04o} lets others in; it must be 0700")
    return p


def content_digest(sha256: bytes) -> str:
    """RFC 9530 ``Content-Digest`` of a SHA-256 digest: ``sha-256=:<base64>:`` (as the signature covers it)."""
    return "sha-256=:" + base64.b64encode(sha256).decode("ascii") + ":"


class Spool:
    """One body, held while it passes (see the module docstring). Use as ``async with Spool(...) as s:`` or
    call :meth:`close` in a ``finally``."""

    def __init__(
        self, *, directory: Path | None = None, memory_limit: int = MEMORY_LIMIT, max_bytes: int | None = None,
        sha512: bool = False, what: str = "body", hold: BodyHold | None = None,
    ) -> None:
        """``directory``: where a body larger than ``memory_limit`` goes (from :func:`spool_directory`); without
        one, a body over ``memory_limit`` is refused like one over ``max_bytes``. ``hold`` (the exchange's
        ``BodyAccount``): what the spool holds in memory is taken from it as it comes, at most
        ``memory_limit`` bytes (a spilled body's bytes are on disk); giving it back is the holder's (its
        ``close``).

        Raises:
            ValueError: ``memory_limit`` or ``max_bytes`` is negative.
        """
        if memory_limit < 0 or (max_bytes is not None and max_bytes < 0):
            raise ValueError("memory_limit and max_bytes must not be negative")
        self.directory = directory
        self.memory_limit = memory_limit
        self.max_bytes = max_bytes
        self.what = what
        self.hold = hold
        self.size = 0  # bytes written so far
        self._sha256 = hashlib.sha256()
        self._sha512 = hashlib.sha512() if sha512 else None
        self._held: list[bytes] = []  # in memory: the whole body so far (none once spilled)
        self._gathered: list[bytes] = []  # written but not yet hashed (and, once spilled, not yet in the file)
        self._gathered_size = 0
        self._fd: int | None = None
        self._jobs = 0  # worker-thread jobs running (they may use the descriptor)
        self._writing = False
        self._finished = False
        self.closed = False

    # ---- state ----

    @property
    def spilled(self) -> bool:
        """Whether the body is in a file (it grew past ``memory_limit``)."""
        return self._fd is not None

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def sha256(self) -> bytes:
        """SHA-256 of the whole body. Raises: RuntimeError: before :meth:`finish`."""
        self._check_finished()
        return self._sha256.digest()

    @property
    def sha512(self) -> bytes | None:
        """SHA-512 of the whole body, if the spool was made with ``sha512=True``, else None.
        Raises: RuntimeError: before :meth:`finish`."""
        self._check_finished()
        return None if self._sha512 is None else self._sha512.digest()

    @property
    def content_digest(self) -> str:
        """The body's RFC 9530 ``Content-Digest`` value. Raises: RuntimeError: before :meth:`finish`."""
        return content_digest(self.sha256)

    def _check_finished(self) -> None:
        if not self._finished:
            raise RuntimeError("the spool is not finished: its size and digests are not known yet")

    # ---- writing ----

    async def write(self, data: bytes) -> None:
        """Add ``data`` to the body; returns once it is taken (after a hash-and-write in the worker thread when
        :data:`FLUSH_BYTES` have gathered), which is the producer's back-pressure.

        Raises:
            PayloadTooLarge: (HTTP 413) the body would be larger than ``max_bytes`` (or than ``memory_limit``
                without a directory); the spool keeps what it had and may only be closed.
            Exception: whatever ``hold.take`` raises (``Overloaded``), before the chunk is kept.
            RuntimeError: the spool is closed or finished, or another write is in progress.
            OSError: the spool file could not be created or written (disk full).
        """
        if self.closed or self._finished:
            raise RuntimeError(f"cannot write to a {'closed' if self.closed else 'finished'} spool")
        if self._writing:
            raise RuntimeError("another write to this spool is in progress")
        if not data:
            return
        size = self.size + len(data)
        limit = self.max_bytes
        if self.directory is None and (limit is None or limit > self.memory_limit):
            limit = self.memory_limit
        if limit is not None and size > limit:
            raise PayloadTooLarge(f"{self.what} is larger than the maximum of {limit} bytes")
        if self.hold is not None and self._fd is None and self.size < self.memory_limit:
            self.hold.take(min(size, self.memory_limit) - self.size, self.what)
        self._writing = True
        try:
            self.size = size
            data = bytes(data)  # a bytearray or memoryview could change under the worker thread
            self._gathered.append(data)
            self._gathered_size += len(data)
            if self._fd is None:
                self._held.append(data)
                if self.size > self.memory_limit:
                    await self._spill()
            if self._gathered_size >= FLUSH_BYTES:
                await self._flush()
        finally:
            self._writing = False

    async def finish(self) -> None:
        """Mark the body complete: what is gathered is hashed (and written); ``size`` and the digests are then
        known and :meth:`chunks` may be called.

        Raises:
            RuntimeError: the spool is closed, or a write is in progress.
            OSError: the spool file could not be written.
        """
        if self.closed:
            raise RuntimeError("cannot finish a closed spool")
        if self._writing:
            raise RuntimeError("a write to this spool is in progress")
        if self._finished:
            return
        self._writing = True
        try:
            if self._gathered_size > INLINE_HASH_BYTES or (self._fd is not None and self._gathered):
                await self._flush()
            else:
                self._hash(self._gathered)
                self._gathered = []
                self._gathered_size = 0
            self._finished = True
        finally:
            self._writing = False

    async def write_from(self, chunks: AsyncIterator[bytes]) -> None:
        """:meth:`write` every chunk of ``chunks``, then :meth:`finish` (same errors)."""
        async for chunk in chunks:
            await self.write(chunk)
        await self.finish()

    def _hash(self, chunks: list[bytes]) -> None:
        h256, h512 = self._sha256, self._sha512
        for c in chunks:
            h256.update(c)
            if h512 is not None:
                h512.update(c)

    async def _spill(self) -> None:
        """Past ``memory_limit``: the file is made (unlinked at once) and what is held and hashed already is
        written to it, in the worker thread; the chunks gathered since are written by the next flush."""
        assert self.directory is not None
        hashed = self._held[: len(self._held) - len(self._gathered)]
        self._held = []
        await self._in_thread(self._open_and_write, self.directory, hashed)

    def _open_and_write(self, directory: Path, chunks: list[bytes]) -> None:  # in the worker thread
        self._fd = _open_unlinked(directory)
        _write_all(self._fd, chunks)

    async def _flush(self) -> None:
        chunks = self._gathered
        self._gathered = []
        self._gathered_size = 0
        await self._in_thread(self._hash_and_write, chunks)

    def _hash_and_write(self, chunks: list[bytes]) -> None:  # in the worker thread
        self._hash(chunks)
        if self._fd is not None:
            _write_all(self._fd, chunks)

    async def _in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` in the default executor. While any such job runs, :meth:`close` leaves the descriptor
        open (the last job to end closes it), so a job never writes to or reads a descriptor closed (or reused)
        under it; a cancelled caller leaves its job to end on its own."""
        if self.closed:
            raise RuntimeError("the spool is closed")
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(None, fn, *args)
        self._jobs += 1
        job.add_done_callback(self._job_done)
        return await asyncio.shield(job)

    def _job_done(self, _job: asyncio.Future[Any]) -> None:
        self._jobs -= 1
        if self.closed and self._jobs == 0:
            self._close_fd()

    # ---- reading ----

    async def chunks(self, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """The body from its first byte, in chunks of at most ``chunk_size`` bytes (a file is read in the
        worker thread). May be called again, and run several at once.

        Raises:
            RuntimeError: the spool is not finished, or is closed (also when closed during the read).
            ValueError: ``chunk_size`` is below 1.
            OSError: the spool file could not be read.
        """
        self._check_finished()
        if self.closed:
            raise RuntimeError("the spool is closed")
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        if self._fd is None:
            for held in self._held:
                for i in range(0, len(held), chunk_size):
                    if self.closed:
                        raise RuntimeError("the spool was closed during the read")
                    yield held if len(held) <= chunk_size else held[i:i + chunk_size]
            return
        offset = 0
        while offset < self.size:
            fd = self._fd
            if self.closed or fd is None:
                raise RuntimeError("the spool was closed during the read")
            n = min(chunk_size, self.size - offset)
            data = await self._in_thread(os.pread, fd, n, offset)
            if len(data) != n:
                raise OSError(f"spool file: {n} bytes expected at offset {offset}, {len(data)} read")
            offset += n
            yield data

    def chunks_then_close(self, chunk_size: int = READ_CHUNK) -> _ClosingChunks:
        """:meth:`chunks`, then :meth:`close`: once the last chunk is read, or when the reader stops early,
        fails or closes it (``aclose``) without reading any: a response stream
        (``Response(stream=spool.chunks_then_close(), length=spool.size)``) that releases the spool once sent,
        or not sent at all (``HEAD``).

        Raises: as :meth:`chunks`."""
        return _ClosingChunks(self, chunk_size)

    async def read_all(self) -> bytes:
        """The whole body as one bytes object (for a small body; a spilled one is read whole into memory).

        Raises: as :meth:`chunks`."""
        self._check_finished()
        if self.closed:
            raise RuntimeError("the spool is closed")
        if self._fd is None:
            return self._held[0] if len(self._held) == 1 else b"".join(self._held)
        return b"".join([c async for c in self.chunks()])

    # ---- closing ----

    def close(self) -> None:
        """Give up the body: memory released, the file's descriptor closed (its name was never left on disk),
        at once or, while a worker-thread job still runs, when the last one ends. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._held = []
        self._gathered = []
        if self._jobs == 0:
            self._close_fd()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    async def __aenter__(self) -> Spool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        self.close()


class _ClosingChunks:
    """An async iterator over a spool's chunks that closes the spool at its end, on error, or on ``aclose``
    (an async generator would not run its ``finally`` when closed before its first step)."""

    __slots__ = ("_chunks", "_spool")

    def __init__(self, spool: Spool, chunk_size: int) -> None:
        self._spool = spool
        self._chunks = spool.chunks(chunk_size)

    def __aiter__(self) -> _ClosingChunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._chunks)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        try:
            await self._chunks.aclose()  # type: ignore[attr-defined]
        finally:
            self._spool.close()


def _open_unlinked(directory: Path) -> int:
    """A new file in ``directory``, mode 0600, already unlinked: only the returned descriptor holds it."""
    fd, name = tempfile.mkstemp(prefix=".spool-", dir=directory)
    try:
        os.unlink(name)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, chunks: list[bytes]) -> None:
    for c in chunks:
        view = memoryview(c)
        while view:
            n = os.write(fd, view)
            view = view[n:]
