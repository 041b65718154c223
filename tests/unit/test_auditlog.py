"""The audit log's entry encoding, leaf hash, origin and chain check (pure), as tables."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from gateway.admin.auditlog import (
    EntryFields,
    HeadRef,
    audit_origin,
    check_chain,
    encode_entry,
    entry_leaf,
    parse_audit_origin,
)
from gateway.admin.auditverify import parse_entry
from gateway.errors import TrustError
from gateway.identifiers import SecurityServerId
from gateway.messagelog.merkle import MerkleTree

AT = datetime(2026, 12, 3, 9, 0, 1, 123456, tzinfo=UTC)


def entry(seq: int, actor: str = "alice") -> EntryFields:
    return EntryFields(seq=seq, at=AT, actor=actor, auth="jwt", remote="127.0.0.1", action="addClient",
                       method="POST", path="/api/v1/clients", result="success", status=201,
                       details='{"id": "DEV/GOV/1001/x"}')


def test_encoding_version_1_is_fixed() -> None:
    # the leaves of existing logs depend on these bytes: a change here breaks every stored audit log
    assert encode_entry(entry(7)) == (
        b'{"action":"addClient","actor":"alice","at":"2026-12-03T09:00:01.123456Z","auth":"jwt",'
        b'"details":"{\\"id\\": \\"DEV/GOV/1001/x\\"}","method":"POST","path":"/api/v1/clients",'
        b'"remote":"127.0.0.1","result":"success","seq":7,"status":201,"v":1}'
    )
    assert entry_leaf(entry(7)) == hashlib.sha256(b"\x00" + encode_entry(entry(7))).digest()
    assert parse_entry(encode_entry(entry(7))) == entry(7)


@pytest.mark.parametrize(("line", "message"), [
    (b'{"v":1}', "exactly the keys"),
    (encode_entry(entry(1)).replace(b'"v":1', b'"v":2'), "version 2 is not 1"),
    (encode_entry(entry(1)).replace(b'"seq":1', b'"seq":"1"'), "must be integers"),
    (encode_entry(entry(1)).replace(b"2026-12-03T09:00:01.123456Z", b"yesterday"), "is not YYYY"),
    (b'{"v": 1}', "not in canonical JSON form"),
    (b"\xff", "not valid JSON"),
])
def test_bad_entry_lines_are_refused(line: bytes, message: str) -> None:
    with pytest.raises(TrustError, match=message):
        parse_entry(line)


def test_origin_round_trip_and_refusals() -> None:
    server = SecurityServerId.parse("DEV/GOV/1001/ss1")
    assert audit_origin(server) == "DEV/GOV/1001/ss1/audit"
    assert parse_audit_origin("DEV/GOV/1001/ss1/audit") == server
    with pytest.raises(TrustError, match="is not an audit log origin"):
        parse_audit_origin("DEV/GOV/1001/ss1/messagelog")
    with pytest.raises(TrustError, match="does not name a security server"):
        parse_audit_origin("DEV/GOV/audit")


def _log(n: int) -> tuple[list[tuple[int, bytes, bytes]], list[HeadRef]]:
    leaves = [entry_leaf(entry(i)) for i in range(n)]
    heads = []
    for size in (2, n):
        t = MerkleTree()
        t.extend(leaves[:size])
        heads.append(HeadRef(size=size, root_hash=t.root()))
    return [(i, leaf, leaf) for i, leaf in enumerate(leaves)], heads


def _altered(rows: list[tuple[int, bytes, bytes]]) -> list[tuple[int, bytes, bytes]]:
    rows[3] = (3, entry_leaf(entry(3, actor="mallory")), rows[3][2])
    return rows


def _rewritten(rows: list[tuple[int, bytes, bytes]]) -> list[tuple[int, bytes, bytes]]:
    forged = entry_leaf(entry(3, actor="mallory"))
    rows[3] = (3, forged, forged)
    return rows


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda rows: rows, []),
    (_altered, [("entry 3", "altered")]),
    (_rewritten, [("entries 2..5", "rewritten")]),
    (lambda rows: rows[:3] + rows[4:], [("entry 4", "gap"), ("checkpoint 6", "beyond")]),
    (lambda rows: [*rows[:4], rows[3], *rows[4:]], [("entry 3", "duplicate")]),
    (lambda rows: rows[:5], [("checkpoint 6", "beyond")]),
])
def test_chain_check_names_what_changed(edit: object, expected: list[tuple[str, str]]) -> None:
    rows, heads = _log(6)
    result = check_chain(edit(rows), heads)  # type: ignore[operator]
    assert [(p.where, p.problem) for p in result.problems] == expected
    assert (6 in result.reproduced) == (expected in ([], [("entry 3", "altered")], [("entry 3", "duplicate")]))
