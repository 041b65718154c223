"""gateway.cli.run.run: the event loop of the serving commands, and the GIL switch interval and garbage
collector thresholds it sets."""

from __future__ import annotations

import gc
import sys

import pytest

from gateway.cli.run import GC_THRESHOLDS, SWITCH_INTERVAL_SECONDS, run


def test_run_sets_the_switch_interval_while_it_runs_and_gives_the_callers_back() -> None:
    previous = sys.getswitchinterval()
    assert previous != SWITCH_INTERVAL_SECONDS  # CPython's default (5 ms) in the test process

    async def inside() -> float:
        return sys.getswitchinterval()

    assert run(inside()) == pytest.approx(SWITCH_INTERVAL_SECONDS)  # stored in microseconds
    assert sys.getswitchinterval() == previous


def test_the_callers_interval_comes_back_when_the_coroutine_fails() -> None:
    previous = sys.getswitchinterval()

    async def fails() -> None:
        raise LookupError("boom")

    try:
        run(fails())
    except LookupError:
        pass
    else:  # pragma: no cover - the assertion below names the failure
        raise AssertionError("run() swallowed the coroutine's exception")
    assert sys.getswitchinterval() == previous


@pytest.mark.parametrize("fail", [False, True])
def test_run_sets_the_gc_thresholds_while_it_runs_and_gives_the_callers_back(fail: bool) -> None:
    previous = gc.get_threshold()
    assert previous != GC_THRESHOLDS

    async def inside() -> tuple[int, ...]:
        if fail:
            raise LookupError("boom")
        return gc.get_threshold()

    if fail:
        with pytest.raises(LookupError):
            run(inside())
    else:
        assert run(inside()) == GC_THRESHOLDS
    assert gc.get_threshold() == previous
