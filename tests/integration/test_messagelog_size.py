"""Compact records on a real exchange (docs/messagelog.md sections 1-4): two security servers on loopback with
the development PKI's certificates and OCSP responses, their logs in SQLite and in PostgreSQL.

Each record without its body is at most 2 KiB: the stapled certificate and OCSP response are blobs, stored once
per log and named by their SHA-256, and the signature base is stored as a template that refers to the record's
own values. Sizes are bytes, not time: asserting them is deterministic.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import sqlalchemy as sa
from exchange_kit import call, database_urls, probed_federation

from gateway.dev.demo import Federation
from gateway.messagelog.record import blob_name
from gateway.messagelog.store import SqlMessageLogStore

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

MAX_RECORD_BYTES = 2048  # without body (issue 10: at most 2 KB; 6-8 KB with the stapled data in every record)
EXCHANGES = 5


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def fed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Federation]:
    """A federation whose servers log no bodies, on SQLite and then on PostgreSQL, after a few exchanges with the
    demo's persons registry (a real SQL adapter behind ss2)."""
    tmp = tmp_path_factory.mktemp("size")
    async with (
        database_urls(request.param, tmp, ("central", "ss1", "ss2")) as dbs,
        probed_federation(tmp / "fed", database_urls=dbs, server_overrides={"body_logging": False}) as (fed, _),
    ):
        ss1 = fed.server("ss1")
        for i in range(EXCHANGES):
            answer = await call(ss1, f"DEV/GOV/1002/registry/persons/?limit={i + 1}",
                                headers={"X-Road-UserId": "EE12345678901", "X-Road-Id": f"DEV-size-{i}"})
            assert answer.status == 200, answer.body
        yield fed


async def _rows(store: SqlMessageLogStore, table: str, origin: str) -> list[dict[str, object]]:
    query = sa.text(f"SELECT * FROM {table} WHERE origin = :origin")  # noqa: S608 - table is one of ours
    async with store.engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query, {"origin": origin})]


@pytest.mark.parametrize("server", ["ss1", "ss2"])
async def test_records_without_body_are_at_most_2_kib(fed: Federation, server: str) -> None:
    ss = fed.server(server)
    assert ss.context is not None and isinstance(ss.messagelog, SqlMessageLogStore)
    origin = ss.context.origin
    stored = await ss.messagelog.read(origin, limit=1000)
    assert len(stored) == 2 * EXCHANGES
    sizes = {(r.decode().kind, len(r.encoded)) for r in stored}
    assert {kind for kind, _ in sizes} == {"request", "response"}
    for kind, size in sizes:
        assert size <= MAX_RECORD_BYTES, f"a {kind} record of {size} bytes"
    # the stapled certificate and OCSP response are not in the records; each is one blob row of this log
    for r in stored:
        record = r.decode()
        assert record.body is None and record.signing_cert not in r.encoded and record.ocsp_response not in r.encoded
        assert json.loads(r.encoded)["signing_cert"] == blob_name(record.signing_cert)
    named = {n for r in stored for n in (json.loads(r.encoded)["signing_cert"], json.loads(r.encoded)["ocsp_response"])}
    rows = await _rows(ss.messagelog, "messagelog_blobs", origin)
    assert sorted(str(row["sha256"]) for row in rows) == sorted(named)  # once each, nothing else
    assert len(named) == 4  # both members' certificates and OCSP responses
