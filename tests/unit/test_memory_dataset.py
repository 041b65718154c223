"""MemoryDataset's per-column indexes and cached matches give what a scan of every row under == gives."""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import pytest

from adapters.dataset import MemoryDataset
from gateway.adapterapi import Column

VALUES: list[Any] = [0, 1, 2, 1.0, 2.5, math.nan, True, False, None, "", "a", "b", "1"]


def _dataset(seed: int) -> tuple[MemoryDataset, list[dict[str, Any]]]:
    rng = random.Random(seed)
    rows = [{"id": i, "x": rng.choice(VALUES), "y": rng.choice(VALUES)} for i in rng.sample(range(1000), 200)]
    columns = [Column(name="id", type="integer"), Column(name="x"), Column(name="y")]
    return MemoryDataset(columns=columns, key="id", records=rows), sorted(rows, key=lambda r: r["id"])


def _scan(rows: list[dict[str, Any]], filters: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [r for r in rows if all(any(r[n] == v for v in values) for n, values in filters.items())]


@pytest.mark.parametrize("seed", range(5))
def test_filtered_pages_equal_a_scan_of_every_row(seed: int) -> None:
    dataset, rows = _dataset(seed)
    rng = random.Random(1000 + seed)
    for _ in range(200):
        filters: dict[str, tuple[Any, ...]] = {}
        for name in rng.sample(["x", "y"], rng.randint(1, 2)):
            filters[name] = tuple(rng.sample(VALUES, rng.randint(1, 3)))
        expected = _scan(rows, filters)
        limit, offset = rng.randint(1, 20), rng.randint(0, 30)
        for _repeat in range(2):  # the second time from the cached matches
            page = asyncio.run(dataset.list(filters=filters, limit=limit, offset=offset, after=None))
            assert list(page.items) == expected[offset:offset + limit]
            assert page.total == len(expected)
            assert page.more == (len(expected) > offset + limit)
        after = rng.choice(rows)["id"]
        page = asyncio.run(dataset.list(filters=filters, limit=limit, offset=0, after=after))
        assert list(page.items) == [r for r in expected if r["id"] > after][:limit]


def test_nan_matches_nothing_and_equal_numbers_meet() -> None:
    dataset, rows = _dataset(0)
    page = asyncio.run(dataset.list(filters={"x": (math.nan,)}, limit=1000, offset=0, after=None))
    assert (page.items, page.total) == ((), 0)
    ones = asyncio.run(dataset.list(filters={"x": (1,)}, limit=1000, offset=0, after=None))
    assert list(ones.items) == [r for r in rows if r["x"] == 1]  # 1, 1.0 and True, as == has it
    assert {repr(r["x"]) for r in ones.items} == {"1", "1.0", "True"}
