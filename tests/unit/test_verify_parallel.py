"""Records checked in worker processes (gateway.messagelog.verify.parallel): the same report as in one process,
finding for finding, whatever the number of workers; a lost worker fails the verification, never passes it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from archive_kit import lines_edit, make_log, make_world, rewrite, write_archive

from gateway.errors import GatewayError, TrustError
from gateway.globalconf.anchor import Anchor
from gateway.messagelog import archive as archive_mod
from gateway.messagelog import verify
from gateway.messagelog.archive import LogArchive
from gateway.messagelog.verify.parallel import _context, runner_for

EXCHANGES = 40  # 80 records
CHUNK = 8  # records per member: 10 members, so that work is shared out and tampering lands in several
SIZES = (24, 80)


@dataclass
class Archives:
    anchor: Anchor
    good: Path
    tampered: Path
    context: verify.CheckContext


def _edit(n: int, fn: Callable[[list[bytes]], list[bytes]]) -> dict[str, Callable[[bytes], bytes | None]]:
    return {archive_mod.chunk_name(n): lines_edit(fn)}


def _flip_path(line: bytes) -> bytes:
    i = line.index(b'"path":"/persons/1') + len(b'"path":"/persons/')
    return line[:i] + b"0" + line[i + 1:]


def _signature_of(line: bytes) -> bytes:
    i = line.index(b'"signature":"') + len(b'"signature":"')
    return line[i:line.index(b'"', i)]


def _with_signature(line: bytes, signature: bytes) -> bytes:
    return line.replace(_signature_of(line), signature)


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Archives:
    d = tmp_path_factory.mktemp("parallel")
    world = make_world(d)
    records = make_log(world, EXCHANGES)
    foreign = make_log(world, 1, origin="DEV/GOV/1001/ss9")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(archive_mod, "CHUNK_RECORDS", CHUNK)
        good = write_archive(world, d / "good.zip", records, checkpoint_sizes=SIZES)
    # one kind of damage per member, so that every worker has findings to send and the parent to place
    edits = {
        **_edit(0, lambda ls: [*ls[:6], _flip_path(ls[6]), *ls[7:]]),  # record 6: altered, signature
        **_edit(8, lambda ls: ls[:4] + ls[5:]),  # record 12: missing
        **_edit(16, lambda ls: [*ls[:2], _with_signature(ls[2], _signature_of(ls[0])), *ls[3:]]),  # 18: signature
        **_edit(24, lambda ls: [*ls[:2], ls[3], ls[2], *ls[4:]]),  # records 26 and 27: out of order
        **_edit(32, lambda ls: [*ls[:4], ls[1], *ls[4:]]),  # record 33 repeated
        **_edit(40, lambda ls: [ls[0], foreign[1], *ls[2:]]),  # record 41: of another origin
        **_edit(56, lambda ls: [*ls[:4], b"not a record", *ls[5:]]),  # record 60: malformed
        **_edit(72, lambda ls: ls[:6]),  # records 78 and 79: missing at the end
    }
    tampered = rewrite(good, d / "tampered.zip", edits)
    with LogArchive(good) as a:  # the context verify_archive gives the workers: the blobs by the hex of their names
        m = a.manifest
        blobs = tuple((name.split("/", 1)[1][:-4], data) for name, data in zip(
            (*m.certificates, *m.ocsp_responses), (*a.certificates, *a.ocsp_responses), strict=True))
        context = verify.CheckContext(anchor=world.anchor.to_bytes(), envelopes=tuple(a.globalconfs),
                                      origin=m.origin, blobs=blobs)
    return Archives(anchor=world.anchor, good=good, tampered=tampered, context=context)


@pytest.fixture(params=["fork", "forkserver"])
def start_method(request: pytest.FixtureRequest) -> Iterator[str]:
    """The workers started by forking this process (it runs one thread), or by the fork server (another thread
    runs here meanwhile, so that forking would copy its state)."""
    stop = threading.Event()
    other = threading.Thread(target=stop.wait) if request.param == "forkserver" else None
    if other is not None:
        other.start()
    try:
        assert _context().get_start_method() == request.param
        yield request.param
    finally:
        stop.set()
        if other is not None:
            other.join()


def run(path: Path, anchor: Anchor, runner: verify.ChunkRunner, **kw: object) -> verify.VerifyReport:
    with LogArchive(path) as a:
        return verify.verify_archive(a, anchor, runner=runner, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [2, 3], ids=["2 workers", "3 workers"])
def test_the_same_report_whatever_the_workers(archives: Archives, workers: int, start_method: str) -> None:
    for path in (archives.good, archives.tampered):
        serial = run(path, archives.anchor, verify.serial_runner)
        parallel = run(path, archives.anchor, verify.ProcessPoolRunner(workers))
        assert parallel == serial  # every count, every finding, in the same order
        assert parallel.summary() == serial.summary()
    # the tampered archive has a finding of every kind, named where it is
    problems = {(f.seq, f.problem) for f in serial.errors}
    assert {(6, "altered"), (6, "signature"), (12, "missing"), (18, "signature"), (27, "out-of-order"),
            (33, "duplicate"), (41, "origin"), (60, "malformed"), (78, "missing"), (79, "missing")} <= problems, (
        serial.summary())
    assert any(f.problem == "tree" for f in serial.errors)
    assert run(archives.good, archives.anchor, verify.serial_runner).ok


def test_a_killed_worker_fails_the_verification(archives: Archives, start_method: str) -> None:
    killed: list[int] = []

    def kill_one(done: int, total: int) -> None:  # after the first result, while the others are being checked
        if not killed:
            worker = next(p for p in multiprocessing.active_children() if p.name == "gateway-log-verify")
            assert worker.pid is not None
            os.kill(worker.pid, signal.SIGKILL)
            killed.append(worker.pid)

    with pytest.raises(GatewayError) as caught:
        run(archives.good, archives.anchor, verify.ProcessPoolRunner(2), progress=kill_one)
    assert caught.value.message == (
        f"a worker process checking records (pid {killed[0]}) ended abnormally: killed by signal SIGKILL")
    assert not [p for p in multiprocessing.active_children() if p.name == "gateway-log-verify"]  # none left over


def test_an_error_in_a_worker_is_raised_as_in_one_process(
    archives: Archives, tmp_path: Path, start_method: str,
) -> None:
    # a context whose anchor vouches for none of the configurations: each worker's checker cannot be built
    stranger = make_world(tmp_path)
    bad = verify.CheckContext(anchor=stranger.anchor.to_bytes(), envelopes=archives.context.envelopes,
                              origin=archives.context.origin)
    with LogArchive(archives.good) as a:
        chunks = [(c, a.chunk_span(c)) for c in a.manifest.chunks]
    outcomes = []
    for runner in (verify.serial_runner, verify.ProcessPoolRunner(2)):
        with pytest.raises(TrustError) as caught:
            list(runner(bad, chunks))
        outcomes.append((type(caught.value), caught.value.message))
    assert outcomes[0] == outcomes[1] == (TrustError, "no global configuration verifies against the anchor")


def test_chunks_given_as_bytes(archives: Archives) -> None:
    # a source that cannot say where its members lie in a file: the bytes go to the workers
    with LogArchive(archives.tampered) as a:
        chunks = [(c, a.read_chunk(c)) for c in a.manifest.chunks]
    serial = list(verify.serial_runner(archives.context, chunks))
    assert list(verify.ProcessPoolRunner(2)(archives.context, chunks)) == serial
    assert sum(r.lines for r in serial) == 78  # 80, one deleted, one repeated, two cut
    assert sum(r.valid for r in serial) == 74  # all but records 6 and 18 (signature), 41 (origin), 60 (malformed)


@pytest.mark.parametrize(("workers", "chunks", "expected"), [
    (1, 10, None), (2, 1, None), (2, 10, 2), (8, 3, 3), (3, 10, 3),
], ids=["one worker", "one member", "two workers", "no more workers than members", "three workers"])
def test_runner_for(workers: int, chunks: int, expected: int | None) -> None:
    runner = runner_for(workers, chunks)
    if expected is None:
        assert runner is verify.serial_runner
    else:
        assert isinstance(runner, verify.ProcessPoolRunner) and runner.workers == expected


@pytest.mark.parametrize("workers", [0, -1])
def test_workers_below_one_are_refused(workers: int) -> None:
    with pytest.raises(GatewayError, match=f"workers must be at least 1, not {workers}"):
        runner_for(workers, 10)
    with pytest.raises(GatewayError, match=f"workers must be at least 1, not {workers}"):
        verify.ProcessPoolRunner(workers)


def test_default_is_one_worker_per_usable_cpu() -> None:
    assert verify.ProcessPoolRunner().workers == verify.usable_cpus() == len(os.sched_getaffinity(0))
