"""The spool (gateway.proxy.spool): digests as the body comes, memory then a private file, read back as often as
needed, and nothing left on disk or open once closed, also after a cancellation or an error."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from pathlib import Path

import pytest
from bodies_kit import body_of
from waiting import wait_for_condition

from gateway.errors import ConfigError, Overloaded, PayloadTooLarge
from gateway.proxy.common import BodyBudget
from gateway.proxy.spool import FLUSH_BYTES, Spool, content_digest, spool_directory


def open_spool_files(directory: Path) -> list[str]:
    """What this process's open descriptors name inside ``directory`` (an unlinked file reads "... (deleted)")."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the descriptor listdir itself used, gone already
        if target.startswith(str(directory) + "/"):
            found.append(target)
    return found


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return spool_directory(tmp_path / "spool")


async def fill(spool: Spool, body: bytes, piece: int) -> None:
    for i in range(0, len(body), piece):
        await spool.write(body[i:i + piece])
    await spool.finish()


@pytest.mark.parametrize(("size", "piece", "spilled"), [
    (0, 1, False),
    (5, 5, False),
    (100_000, 4096, False),  # over the inline hash size: the tail is hashed in the worker thread
    (1 << 20, 1 << 20, False),  # exactly the memory limit
    ((1 << 20) + 1, 65536, True),
    (3 * (1 << 20) + 17, 100_003, True),
    (5 << 20, 5 << 20, True),  # one chunk larger than the memory limit
])
async def test_digests_size_and_body_read_back_twice(spool_dir: Path, size: int, piece: int, spilled: bool) -> None:
    body = body_of(size)
    async with Spool(directory=spool_dir, sha512=True) as spool:
        await fill(spool, body, piece)
        assert spool.size == size and spool.spilled is spilled
        assert spool.sha256 == hashlib.sha256(body).digest()
        assert spool.sha512 == hashlib.sha512(body).digest()
        assert spool.content_digest == content_digest(hashlib.sha256(body).digest())
        first = [c async for c in spool.chunks(chunk_size=70_000)]
        assert all(len(c) <= 70_000 for c in first) and b"".join(first) == body
        assert await spool.read_all() == body
        assert os.listdir(spool_dir) == []  # the file, if any, was never left under a name


async def test_sha512_only_when_asked(spool_dir: Path) -> None:
    async with Spool(directory=spool_dir) as spool:
        await fill(spool, b"abc", 3)
        assert spool.sha512 is None and spool.sha256 == hashlib.sha256(b"abc").digest()


async def test_concurrent_reads_of_a_spilled_body(spool_dir: Path) -> None:
    body = body_of(3 << 20)
    async with Spool(directory=spool_dir, memory_limit=4096) as spool:
        await fill(spool, body, 1 << 16)
        reads = await asyncio.gather(*(spool.read_all() for _ in range(4)))
        assert all(r == body for r in reads)


async def test_the_file_is_0600_unlinked_and_closed_with_the_spool(spool_dir: Path) -> None:
    spool = Spool(directory=spool_dir, memory_limit=10)
    await fill(spool, body_of(FLUSH_BYTES * 3), 1000)
    assert spool.spilled
    held = open_spool_files(spool_dir)
    assert len(held) == 1 and held[0].endswith(" (deleted)")
    assert spool._fd is not None and stat.S_IMODE(os.fstat(spool._fd).st_mode) == 0o600
    spool.close()
    spool.close()  # idempotent
    assert open_spool_files(spool_dir) == [] and os.listdir(spool_dir) == []
    with pytest.raises(RuntimeError, match="closed"):
        await spool.read_all()


async def test_a_cancelled_writer_leaves_nothing_open(spool_dir: Path) -> None:
    spool = Spool(directory=spool_dir, memory_limit=1000)
    started = asyncio.Event()

    async def producer() -> None:
        piece = body_of(FLUSH_BYTES)
        while True:
            await spool.write(piece)
            started.set()

    task = asyncio.create_task(producer())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    spool.close()  # as the cancelled task's finally would; a job still in the thread closes the file when it ends
    await wait_for_condition(lambda: not open_spool_files(spool_dir), timeout=10, what="the spool file closed")
    assert os.listdir(spool_dir) == []


async def test_closed_during_a_read(spool_dir: Path) -> None:
    spool = Spool(directory=spool_dir, memory_limit=10)
    await fill(spool, body_of(1 << 20), 1 << 16)
    reader = spool.chunks(chunk_size=4096)
    assert len(await anext(reader)) == 4096
    spool.close()
    with pytest.raises(RuntimeError, match="closed during the read"):
        await anext(reader)
    await wait_for_condition(lambda: not open_spool_files(spool_dir), timeout=10, what="the spool file closed")


async def test_over_max_bytes_is_413_and_keeps_nothing_past_it(spool_dir: Path) -> None:
    async with Spool(directory=spool_dir, max_bytes=100, what="request body") as spool:
        await spool.write(b"x" * 100)
        with pytest.raises(PayloadTooLarge, match="request body is larger than the maximum of 100 bytes") as e:
            await spool.write(b"y")
        assert e.value.http_status == 413 and spool.size == 100


async def test_without_a_directory_the_memory_limit_is_the_limit() -> None:
    async with Spool(memory_limit=10, max_bytes=1000) as spool:
        with pytest.raises(PayloadTooLarge, match="maximum of 10 bytes"):
            await spool.write(b"x" * 11)


async def test_misuse_is_refused(spool_dir: Path) -> None:
    spool = Spool(directory=spool_dir, memory_limit=10)
    with pytest.raises(RuntimeError, match="not finished"):
        _ = spool.sha256
    with pytest.raises(RuntimeError, match="not finished"):
        await anext(spool.chunks())
    first = asyncio.create_task(spool.write(body_of(FLUSH_BYTES)))  # spills: waits on the worker thread
    await asyncio.sleep(0)  # let it start
    with pytest.raises(RuntimeError, match="another write"):
        await spool.write(b"x")
    await first
    await spool.finish()
    with pytest.raises(RuntimeError, match="finished spool"):
        await spool.write(b"x")
    with pytest.raises(ValueError, match="chunk_size"):
        await anext(spool.chunks(chunk_size=0))
    spool.close()
    with pytest.raises(RuntimeError, match="closed spool"):
        await spool.write(b"x")
    with pytest.raises(ValueError, match="must not be negative"):
        Spool(memory_limit=-1)


def test_spool_directory_is_made_0700_and_others_are_refused(tmp_path: Path) -> None:
    made = spool_directory(tmp_path / "a" / "b")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert spool_directory(made) == made  # an existing private one is fine
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o755)
    with pytest.raises(ConfigError, match=r"mode 0755 lets others in; it must be 0700"):
        spool_directory(open_dir)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError, match="is not a directory"):
        spool_directory(tmp_path / "file")
    with pytest.raises(ConfigError, match="cannot be created"):
        spool_directory(tmp_path / "file" / "sub")


async def test_what_is_held_in_memory_is_taken_from_the_body_budget(spool_dir: Path) -> None:
    budget = BodyBudget(3000)
    with budget.account() as account:
        async with Spool(directory=spool_dir, memory_limit=1000, hold=account) as spool:
            await spool.write(b"x" * 600)
            assert account.held == 600
            await spool.write(b"x" * 600)  # past the memory limit: to the file, only the limit is held
            await spool.write(b"x" * 5000)
            await spool.finish()
            assert spool.spilled and account.held == 1000 and spool.size == 6200
        with pytest.raises(Overloaded, match="request body cannot be held now"):
            async with Spool(directory=spool_dir, memory_limit=10_000, hold=account, what="request body") as other:
                await other.write(b"y" * 2001)
    assert budget.used == 0
