"""Step 3 of the archive verification spread over worker processes (I/O: it starts processes, and they read the
archive file).

:class:`ProcessPoolRunner` is a :data:`~gateway.messagelog.verify.chunks.ChunkRunner`: it checks each records
member with :func:`~gateway.messagelog.verify.chunks.check_chunk` in one of ``workers`` processes and yields
the results in the members' order, so :func:`~gateway.messagelog.verify.verify_archive` builds the same report
from them, finding for finding, as with :func:`~gateway.messagelog.verify.chunks.serial_runner` in one process
(``tests/unit/test_verify_parallel.py`` compares the two on tampered archives). The parent keeps the
cross-record steps: the Merkle tree, the checkpoints, order and binding.

How the work is shared:

1. Each worker is started once with the :class:`~gateway.messagelog.verify.chunks.CheckContext` (anchor,
   global configurations, origin) and builds its own checker, whose caches (parsed ``Signature-Input``
   values, certificate verdicts, public keys) then serve every chunk it is given.
2. A task is a member's place in the archive file (:class:`~gateway.messagelog.archive.ChunkSpan`: name, path,
   offset, length): the worker reads those bytes itself, so the archive is read once in all and never
   pickled. A source that cannot say where its members lie (an in-memory archive) sends the bytes.
3. Each worker has a task queue of its own and is kept :data:`IN_FLIGHT_PER_WORKER` tasks ahead of its
   results: the worker that answers is given the next member, so a faster worker checks more of them. Workers
   share no lock, so one that is killed at any moment cannot hold up another.
4. Each worker answers on a pipe of its own: the chunk's
   :class:`~gateway.messagelog.verify.report.ChunkResult` (leaf hashes, subtree roots, findings and the few
   fields of the cross-record steps), or the exception its check raised, which the parent raises as the
   serial runner would have.
5. The parent waits on the pipes and on the workers' process sentinels together: a worker that ends before it
   is told to (killed, out of memory, crashed) stops the verification at once with a :class:`GatewayError`
   naming the process and its signal or exit status, and so does one whose exit status after the last result
   is not 0. A verification with a lost worker never reports a result.
6. Workers ignore SIGINT: Ctrl-C interrupts the parent, which then kills them.
"""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any

from gateway.errors import GatewayError
from gateway.messagelog.archive import Chunk
from gateway.messagelog.verify.chunks import (
    CheckContext,
    ChunkData,
    ChunkRunner,
    check_data,
    serial_runner,
)
from gateway.messagelog.verify.report import ChunkResult

IN_FLIGHT_PER_WORKER = 2  # tasks handed out per worker ahead of its results: one to check, one waiting
GC_YOUNG_THRESHOLD = 20_000  # allocations between collections of the youngest generation in a worker (700 by default)


def quiet_gc() -> None:
    """Make the cyclic garbage collector cheap for a process that checks records and then exits: what it holds
    now (imports, the checker and its caches) is moved out of the collector's way for good (``gc.freeze``), and
    the youngest generation is collected after 20 000 allocations instead of 700. A chunk's records allocate
    objects that all live until the chunk is done, so the default collections find nothing to free: they cost
    2-3 us per record (about 3 %), and these settings 0.4.
    """
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def usable_cpus() -> int:
    """The CPUs this process may run on: ``os.process_cpu_count()`` (Python 3.13), else its affinity mask (which a
    container or ``taskset`` may narrow), else every CPU of the machine."""
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        return int(count() or 1)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def runner_for(workers: int, chunks: int) -> ChunkRunner:
    """The runner for ``workers`` processes over an archive of ``chunks`` records members: never more processes
    than members, and none besides this one when that leaves one (:func:`serial_runner`).

    Raises:
        GatewayError: ``workers`` is less than 1.
    """
    if workers < 1:
        raise GatewayError(f"workers must be at least 1, not {workers}")
    n = min(workers, chunks)
    return ProcessPoolRunner(n) if n > 1 else serial_runner


def _context() -> ForkContext | ForkServerContext | SpawnContext:
    """``fork`` where this process runs one thread (a worker then starts with the verifier already imported),
    else the platform's safe default (forking a process with threads can copy a lock that another thread holds)."""
    methods = multiprocessing.get_all_start_methods()
    if threading.active_count() == 1 and "fork" in methods:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def _ended(process: BaseProcess) -> str:
    """How a worker process ended, in words: its signal (``killed by signal SIGKILL``) or exit status."""
    code = process.exitcode
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"killed by signal {name}"
    return f"exit status {code}"


def _failed(process: BaseProcess) -> GatewayError:
    return GatewayError(
        f"a worker process checking records (pid {process.pid}) ended abnormally: {_ended(process)}",
        hint="run again; with --workers 1 the records are checked in this process",
    )


def _worker(context: CheckContext, tasks: Any, results: multiprocessing.connection.Connection) -> None:
    """A worker process: check each task's chunk until the ``None`` task; answer each on ``results``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    checker = None
    while True:
        task = tasks.get()
        if task is None:
            break
        index, first, data = task
        try:
            if checker is None:
                checker = context.checker()
                quiet_gc()
            results.send((index, check_data(checker, first, data), None))
        except Exception as e:  # the parent raises it, as the serial runner would have let it through
            try:
                results.send((index, None, e))
            except Exception:  # not picklable: its text, with where it came from
                results.send((index, None, GatewayError(
                    f"worker process {os.getpid()} failed: {''.join(traceback.format_exception(e))}")))
    results.close()


@dataclass(slots=True)
class _Worker:
    """One worker process, its task queue and the pipe it answers on (module docstring, steps 1-4)."""

    process: BaseProcess
    tasks: Any  # multiprocessing.Queue: put() never blocks (a thread of this process feeds the pipe)
    results: multiprocessing.connection.Connection


class ProcessPoolRunner:
    """Check chunks in ``workers`` processes (default: one per usable CPU; module docstring)."""

    reads_files = True  # verify_archive sends ChunkSpans when the source can give them

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise GatewayError(f"workers must be at least 1, not {workers}")
        self.workers = workers or usable_cpus()

    def __call__(self, context: CheckContext, chunks: Iterable[tuple[Chunk, ChunkData]]) -> Iterator[ChunkResult]:
        ctx = _context()
        workers: list[_Worker] = []
        clean = False
        try:
            # (1) the workers, each with the context, a task queue and a pipe of its own
            for _ in range(self.workers):
                tasks = ctx.Queue()
                receiver, sender = ctx.Pipe(duplex=False)
                process: BaseProcess = ctx.Process(target=_worker, args=(context, tasks, sender), daemon=True,
                                                   name="gateway-log-verify")
                process.start()
                sender.close()  # the worker's end: EOF here once the worker has gone
                workers.append(_Worker(process=process, tasks=tasks, results=receiver))
            by_sentinel = {w.process.sentinel: w for w in workers}
            by_pipe = {w.results: w for w in workers}
            # (2, 3) each worker kept IN_FLIGHT_PER_WORKER tasks ahead of its results; results in the members' order
            todo = iter(chunks)
            submitted = 0

            def submit(worker: _Worker) -> bool:
                nonlocal submitted
                task = next(todo, None)
                if task is None:
                    return False
                chunk, data = task
                worker.tasks.put((submitted, chunk.first, data))
                submitted += 1
                return True

            more = True
            for _ in range(IN_FLIGHT_PER_WORKER):
                for worker in workers:
                    more = more and submit(worker)
            done: dict[int, ChunkResult] = {}
            yielded = 0
            while yielded < submitted:
                # (5) a worker's sentinel before its pipe: a lost worker fails the verification, whatever it sent
                ready = multiprocessing.connection.wait([*by_sentinel, *by_pipe])
                for sentinel in ready:
                    if isinstance(sentinel, int):
                        lost = by_sentinel[sentinel].process
                        lost.join()
                        raise _failed(lost)
                for conn in ready:
                    if not isinstance(conn, multiprocessing.connection.Connection):
                        continue
                    worker = by_pipe[conn]
                    try:
                        index, result, error = worker.results.recv()
                    except EOFError:  # the worker has gone: its sentinel follows
                        del by_pipe[worker.results]
                        continue
                    if error is not None:
                        raise error  # (4) as check_chunk raised it in the worker
                    done[index] = result
                    more = more and submit(worker)
                while yielded in done:
                    yield done.pop(yielded)
                    yielded += 1
            # (5) every result is in: each worker is told to stop, and must end as told
            for worker in workers:
                worker.tasks.put(None)
            while by_sentinel:
                for sentinel in multiprocessing.connection.wait(list(by_sentinel)):
                    assert isinstance(sentinel, int)
                    ended = by_sentinel.pop(sentinel).process
                    ended.join()
                    if ended.exitcode != 0:
                        raise _failed(ended)
            clean = True
        finally:
            for worker in workers:
                if not clean:  # (6) an error, a lost worker or Ctrl-C: the others are killed
                    if worker.process.is_alive():
                        worker.process.kill()
                    worker.process.join()
                    worker.tasks.cancel_join_thread()
                worker.tasks.close()
                worker.tasks.join_thread()
                worker.results.close()


__all__ = ["GC_YOUNG_THRESHOLD", "IN_FLIGHT_PER_WORKER", "ProcessPoolRunner", "quiet_gc", "runner_for", "usable_cpus"]
