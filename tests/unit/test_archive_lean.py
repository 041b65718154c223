"""The lean record check of ``gateway log verify`` against the general one (gateway.messagelog.verify.lean).

``LeanChecker.check_lean`` decides most records without a general RFC 9421 re-parse; whatever it does not
accept goes to ``RecordChecker.check``, which decides and explains. The lean check must never accept a record
that the general check refuses: records with random byte changes below are given to both (the table of
tampered records that both checkers decide is ``tests/unit/test_record_checkers.py``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import timedelta

import pytest
from archive_kit import ORIGIN, LogWorld, exchange_records, make_world

from gateway.messagelog import verify
from gateway.messagelog.verify import records


@dataclass
class Kit:
    world: LogWorld
    checker: verify.LeanChecker
    request: bytes
    response: bytes


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    world = make_world(tmp_path_factory.mktemp("lean"))
    context = verify.CheckContext(anchor=world.anchor.to_bytes(), envelopes=(world.envelope,), origin=ORIGIN,
                                  blobs=tuple(world.blobs.items()))
    created = world.now - timedelta(minutes=1)
    request, response = exchange_records(world, created=created, body=b'{"id":1,"name":"A \\"quoted\\" name"}')
    return Kit(world=world, checker=context.checker(), request=request.encode(), response=response.encode())


def _full(kit: Kit, line: bytes) -> verify.Checked | None:
    try:
        return kit.checker.check(line)
    except records._RecordProblem:
        return None


def test_random_byte_changes_are_never_accepted_by_the_lean_check_alone(kit: Kit) -> None:
    rng = random.Random(9421)
    for _ in range(1500):
        line = bytearray(rng.choice((kit.request, kit.response)))
        for _ in range(rng.randint(1, 3)):
            line[rng.randrange(len(line))] = rng.randrange(256)
        lean = kit.checker.check_lean(bytes(line))
        if lean is not None:  # a change that leaves a valid record (e.g. inside an unsigned field)
            assert _full(kit, bytes(line)) == lean


def test_split_record_finds_each_member(kit: Kit) -> None:
    parts = verify.split_record(kit.request.decode())
    assert parts is not None and len(parts) == len(verify.RECORD_FIELDS)
    obj = json.loads(kit.request)
    for name, text in zip(sorted(verify.RECORD_FIELDS), parts, strict=True):
        assert json.loads(text) == obj[name]

