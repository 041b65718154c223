"""Parts of the failure drills (tests only, real sockets and real filesystems).

- :class:`TcpForwarder`: a TCP proxy on 127.0.0.1 in front of a real server (PostgreSQL), which a test can
  cut (every connection closed at once, new ones accepted and closed at once: refused), make hang (new and
  open connections stay open and carry nothing: a network that drops packets) and bring back.
- :func:`small_filesystem`: a tmpfs of a given size mounted on a directory the test owns, unmounted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

FORWARD_CHUNK = 64 * 2**10  # bytes read at once from either side

Mode = Literal["forward", "refuse", "hang"]


@dataclass
class TcpForwarder:
    """Forwards each connection to ``target`` while :attr:`mode` is ``forward``.

    :meth:`cut` closes every connection and refuses new ones (accepted, then closed at once: the port stays
    ours); :meth:`hang` keeps every connection open but carries nothing either way; :meth:`restore`
    forwards new connections again (those open while cut or hung are gone or useless, as after a real
    outage: :meth:`restore` resets them)."""

    target_host: str
    target_port: int
    port: int = 0
    mode: Mode = "forward"
    accepted: int = 0
    refused: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _generation: int = 0  # bumped by every cut or hang: connections of an older one carry nothing

    async def start(self) -> TcpForwarder:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> None:
        self.mode = "refuse"
        self._generation += 1
        for w in list(self._writers):
            w.transport.abort()  # a reset, as when the database host goes down

    def hang(self) -> None:
        self.mode = "hang"
        self._generation += 1

    def restore(self) -> None:
        self._generation += 1
        for w in list(self._writers):
            w.transport.abort()  # what was hung is reset, as a peer that timed out would have done
        self.mode = "forward"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "refuse":
            self.refused += 1
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            if self.mode == "hang":
                await reader.read()  # until the client gives up
                return
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
            self._writers.add(up_writer)
            generation = self._generation
            try:
                await asyncio.gather(self._pipe(reader, up_writer, generation),
                                     self._pipe(up_reader, writer, generation))
            finally:
                self._writers.discard(up_writer)
                up_writer.transport.abort()
        except OSError:
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, generation: int) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(FORWARD_CHUNK):
                if self._generation != generation:
                    if self.mode == "hang":
                        continue  # swallowed: nothing gets through a hung network
                    return
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@contextlib.contextmanager
def small_filesystem(directory: Path, *, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted on ``directory`` (created), unmounted (lazily, if busy) afterwards.

    Raises:
        AssertionError: not root, or the mount failed (with mount's own message): the drill cannot run.
    """
    assert os.geteuid() == 0, f"the disk-full drill mounts a tmpfs and must run as root (euid {os.geteuid()})"
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(directory)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"cannot mount a tmpfs on {directory}: {done.stderr.strip()}"
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)
