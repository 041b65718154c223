"""The SQL adapter over real SQLite and PostgreSQL, called over real HTTP on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urljoin

import pytest
import sqlalchemy as sa
from adapters_kit import AdapterClient, serve_adapters
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.dataset import ColumnSpec
from adapters.demo_data import generate
from adapters.server import start_adapters
from adapters.sql import SqlAdapter
from gateway.errors import ConfigError

pytestmark = pytest.mark.integration

N_PERSONS = 30

metadata = sa.MetaData()
persons_table = sa.Table(
    "persons",
    metadata,
    sa.Column("personal_code", sa.String(11), primary_key=True),
    sa.Column("first_name", sa.String(50), nullable=False),
    sa.Column("last_name", sa.String(50), nullable=False),
    sa.Column("sex", sa.String(1), nullable=False),
    sa.Column("date_of_birth", sa.Date, nullable=False),
    sa.Column("municipality", sa.String(50), nullable=False),
    sa.Column("children", sa.Integer, nullable=True),
)
items_table = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("label", sa.String(50), nullable=False),
)


Registry = AdapterClient  # the SQL adapters (persons, women, items) and a client


def _rows() -> list[dict[str, Any]]:
    rows = [dict(p) for p in generate(seed=7, persons=N_PERSONS, companies=0).persons]
    for i, r in enumerate(rows):
        r["children"] = i % 4 if i % 5 else None
    return rows


@pytest.fixture
async def registry(database_url: str) -> AsyncIterator[Registry]:
    rows = _rows()
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(persons_table.insert(), rows)
        await conn.execute(items_table.insert(), [{"id": i, "label": f"item {i}"} for i in (1, 2, 3, 70000)])
    await engine.dispose()
    adapters = {
        "persons": SqlAdapter(
            name="persons",
            title="Population register",
            url=database_url,
            table="persons",
            filters=["last_name", "sex", "date_of_birth", "municipality", "children"],
        ),
        "women": SqlAdapter(
            name="women",
            url=database_url,
            query="SELECT personal_code, last_name, children FROM persons WHERE sex = 'F'",
            key="personal_code",
            columns=[
                ColumnSpec(name="personal_code", type="string"),
                ColumnSpec(name="last_name"),
                ColumnSpec(name="children", type="integer"),
            ],
        ),
        "items": SqlAdapter(name="items", url=database_url, table="items"),
    }
    async with serve_adapters(adapters, persons=rows) as client:
        yield client


def _json_person(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in r.items()}


async def test_listing_defaults_and_item_shape(registry: Registry) -> None:
    status, body = await registry.get("/persons/")
    assert status == 200
    assert (body["limit"], body["offset"], body["total"], body["next"]) == (50, 0, N_PERSONS, None)
    expected = sorted(registry.persons, key=lambda r: r["personal_code"])
    assert body["items"] == [_json_person(r) for r in expected]
    status_no_slash, body_no_slash = await registry.get("/persons")
    assert (status_no_slash, body_no_slash) == (status, body)


async def test_offset_pagination_follows_next_links_until_exhausted(registry: Registry) -> None:
    url = registry.url("/persons/?limit=7")
    seen: list[str] = []
    pages = 0
    while url:
        async with registry.http.get(url) as resp:
            assert resp.status == 200
            body = await resp.json()
        pages += 1
        assert body["total"] == N_PERSONS
        assert body["offset"] == (pages - 1) * 7
        seen += [i["personal_code"] for i in body["items"]]
        url = urljoin(url, body["next"]) if body["next"] else ""
    assert pages == 5
    assert seen == sorted(r["personal_code"] for r in registry.persons)


async def test_cursor_pagination_keeps_filters(registry: Registry) -> None:
    women = sorted(r["personal_code"] for r in registry.persons if r["sex"] == "F")
    url = registry.url("/persons/?sex=F&limit=4&cursor=")
    seen: list[str] = []
    while url:
        async with registry.http.get(url) as resp:
            body = await resp.json()
        assert resp.status == 200, body
        assert body["offset"] is None and body["total"] == len(women)
        assert "cursor=" in (body["next"] or "cursor=") and "offset" not in (body["next"] or "")
        seen += [i["personal_code"] for i in body["items"]]
        url = urljoin(url, body["next"]) if body["next"] else ""
    assert seen == women


@pytest.mark.parametrize(
    ("query", "predicate"),
    [
        ("sex=M", lambda r: r["sex"] == "M"),
        ("children=2", lambda r: r["children"] == 2),
        (
            "municipality=Tallinn&municipality=Tartu%20linn",
            lambda r: r["municipality"] in ("Tallinn", "Tartu linn"),
        ),
        ("sex=F&children=0", lambda r: r["sex"] == "F" and r["children"] == 0),
    ],
)
async def test_filters_match_exactly(registry: Registry, query: str, predicate: Any) -> None:
    expected = sorted(r["personal_code"] for r in registry.persons if predicate(r))
    assert expected, "the fixture data should match this filter"
    status, body = await registry.get(f"/persons/?{query}&limit=1000")
    assert status == 200
    assert [i["personal_code"] for i in body["items"]] == expected
    assert body["total"] == len(expected)


async def test_filter_on_name_and_date(registry: Registry) -> None:
    someone = registry.persons[3]
    status, body = await registry.get(
        f"/persons/?last_name={quote(someone['last_name'])}&date_of_birth={someone['date_of_birth'].isoformat()}"
    )
    assert status == 200
    assert someone["personal_code"] in [i["personal_code"] for i in body["items"]]
    assert all(i["last_name"] == someone["last_name"] for i in body["items"])


async def test_lookup_by_key_and_404(registry: Registry) -> None:
    person = registry.persons[5]
    status, body = await registry.get(f"/persons/{person['personal_code']}")
    assert (status, body) == (200, _json_person(person))
    status, body = await registry.get("/persons/00000000000")
    assert status == 404
    assert body["type"] == "NotFound"
    assert "no item with personal_code '00000000000'" in body["message"]
    status, body = await registry.get("/items/70000")
    assert (status, body) == (200, {"id": 70000, "label": "item 70000"})


@pytest.mark.parametrize(
    "path",
    [
        "/persons/a/b",
        "/persons/00000000000/",
        "/nosuch/",
        "/items/abc",
        "/items/1.0",
        "/items/99999999999",  # outside PostgreSQL's integer range: no row, not an error
        "/items/-99999999999999999999",
    ],
)
async def test_paths_that_name_nothing_are_404(registry: Registry, path: str) -> None:
    status, body = await registry.get(path)
    assert status == 404
    assert body["type"] == "NotFound"
    assert set(body) == {"type", "message", "detail"}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_writes_are_405_with_allow(registry: Registry, method: str) -> None:
    async with registry.http.request(method, registry.url("/persons/"), data=b"{}") as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "GET, HEAD"
        assert "X-Road-Error" not in resp.headers
        body = await resp.json()
    assert body["type"] == "MethodNotAllowed"
    assert body["message"] == f"method {method} is not allowed; allowed: GET, HEAD"


async def test_head_has_headers_and_no_body(registry: Registry) -> None:
    async with registry.http.head(registry.url("/persons/?limit=2")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        assert await resp.read() == b""


# The full table of bad parameters runs against the file adapter (same code path, no database); these are
# the cases whose parsing depends on the reflected column types.
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=1001", "limit must be an integer from 1 to 1000, got '1001'"),
        ("offset=-1", "offset must be an integer from 0 to 2147483647, got '-1'"),
        (
            "first_name=Mari",
            "unknown filter 'first_name'; filterable columns: "
            "children, date_of_birth, last_name, municipality, sex",
        ),
        ("last_name%3D1%20OR%201=1", "unknown filter 'last_name=1 OR 1'"),
        (
            "date_of_birth=1980-13-01",
            "value for 'date_of_birth' must be a date (YYYY-MM-DD), got '1980-13-01'",
        ),
        ("children=1%20OR%201=1", "value for 'children' must be an integer, got '1 OR 1=1'"),
        ("last_name=a%00b", "value for 'last_name' contains a NUL character"),
    ],
)
async def test_bad_parameters_are_400_with_a_precise_message(
    registry: Registry, query: str, message: str
) -> None:
    status, body = await registry.get(f"/persons/?{query}")
    assert status == 400
    assert body["type"] == "BadRequest"
    assert message in body["message"]
    assert body["detail"]


@pytest.mark.parametrize(
    "value",
    [
        "' OR '1'='1",
        "x'; DROP TABLE persons; --",
        "Tamm' --",
        '" OR ""="',
        "%",
        "_",
        "\\",
        "1; SELECT pg_sleep(10)",
        "') UNION SELECT personal_code, first_name FROM persons --",
    ],
)
async def test_injection_in_filter_values_and_keys_finds_nothing(registry: Registry, value: str) -> None:
    status, body = await registry.get(f"/persons/?last_name={quote(value, safe='')}")
    assert (status, body["total"], body["items"]) == (200, 0, [])
    status, body = await registry.get(f"/persons/{quote(value, safe='')}")
    assert status == 404
    status, body = await registry.get(f"/women/?last_name={quote(value, safe='')}")
    assert (status, body["total"]) == (200, 0)
    # The table is intact.
    status, body = await registry.get("/persons/?limit=1")
    assert body["total"] == N_PERSONS


async def test_integer_filter_beyond_the_column_width_matches_nothing(registry: Registry) -> None:
    status, body = await registry.get("/persons/?children=99999999999")
    assert (status, body["total"]) == (200, 0)
    status, body = await registry.get("/persons/?children=99999999999&children=2")
    assert body["total"] == sum(1 for r in registry.persons if r["children"] == 2)


async def test_query_adapter_lists_declared_columns_only(registry: Registry) -> None:
    women = sorted((r for r in registry.persons if r["sex"] == "F"), key=lambda r: r["personal_code"])
    status, body = await registry.get("/women/?limit=1000")
    assert status == 200
    assert body["items"] == [
        {"personal_code": r["personal_code"], "last_name": r["last_name"], "children": r["children"]}
        for r in women
    ]
    man = next(r for r in registry.persons if r["sex"] == "M")
    status, _ = await registry.get(f"/women/{man['personal_code']}")
    assert status == 404


async def test_openapi_document_describes_columns_and_paths(registry: Registry) -> None:
    status, doc = await registry.get("/persons/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"] == "Population register"
    assert set(doc["paths"]) == {"/", "/{personal_code}"}
    listing = doc["paths"]["/"]["get"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert {"limit", "offset", "cursor", "last_name", "children"} <= set(params)
    assert "first_name" not in params  # not filterable
    assert params["limit"]["schema"]["maximum"] == 1000
    assert params["children"]["schema"] == {"type": "array", "items": {"type": "integer", "format": "int64"}}
    assert set(listing["responses"]) == {"200", "400"}
    lookup = doc["paths"]["/{personal_code}"]["get"]
    assert lookup["parameters"][0] == {
        "name": "personal_code",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    assert set(lookup["responses"]) == {"200", "404"}
    item = doc["components"]["schemas"]["Item"]
    assert item["properties"]["date_of_birth"] == {"type": "string", "format": "date"}
    assert item["properties"]["children"] == {"type": ["integer", "null"], "format": "int64"}
    assert item["properties"]["first_name"] == {"type": "string"}
    assert set(item["required"]) == {c.name for c in persons_table.columns}
    assert doc["components"]["schemas"]["Error"]["required"] == ["type", "message", "detail"]


async def test_healthz_lists_adapters(registry: Registry) -> None:
    assert await registry.get("/healthz") == (
        200,
        {"status": "ok", "adapters": ["items", "persons", "women"]},
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"table": "nosuch"}, "table 'nosuch' not found"),
        ({"table": "persons", "columns": [ColumnSpec(name="nosuch")]}, "column 'nosuch' not found"),
        ({"table": "persons", "filters": ["nosuch"]}, "filters name columns that are not exposed: nosuch"),
        ({"table": "persons", "key": "nosuch"}, "key column 'nosuch' must be one of the exposed columns"),
    ],
)
async def test_bad_sql_settings_refuse_to_start(
    database_url: str, kwargs: dict[str, Any], message: str
) -> None:
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await engine.dispose()
    adapter = SqlAdapter(name="bad", url=database_url, **kwargs)
    with pytest.raises(ConfigError, match="adapter 'bad'") as info:
        await start_adapters({"bad": adapter}, "127.0.0.1", 0)
    assert message in info.value.message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "sqlite+aiosqlite://", "table": "t", "query": "SELECT 1"}, "exactly one of table and query"),
        ({"url": "sqlite+aiosqlite://"}, "exactly one of table and query"),
        ({"table": "t"}, "exactly one of url and engine"),
        ({"url": "sqlite+aiosqlite://", "query": "SELECT 1 AS a"}, "a query needs declared columns"),
        (
            {"url": "sqlite+aiosqlite://", "query": "SELECT 1 AS a", "columns": [ColumnSpec(name="a")]},
            "a query needs declared columns",
        ),
    ],
)
def test_bad_sql_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SqlAdapter(name="bad", **kwargs)
    assert message in info.value.message


async def test_total_is_reused_per_filter_combination_for_total_cache_seconds(database_url: str) -> None:
    """A count is reused within its window (items stay fresh); 0 counts on every page; other filters count anew."""
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(items_table.insert(), [{"id": i, "label": f"item {i % 2}"} for i in range(1, 5)])
    adapters = {
        "kept": SqlAdapter(name="kept", url=database_url, table="items", total_cache_seconds=3600),
        "fresh": SqlAdapter(name="fresh", url=database_url, table="items", total_cache_seconds=0),
    }
    try:
        async with serve_adapters(adapters, persons=[]) as client:
            for name in adapters:
                status, body = await client.get(f"/{name}/")
                assert (status, body["total"], len(body["items"])) == (200, 4, 4)
            status, body = await client.get("/kept/?label=item%201")
            assert (status, body["total"]) == (200, 2)
            async with engine.begin() as conn:
                await conn.execute(items_table.insert(), [{"id": 9, "label": "item 1"}])
            _, kept = await client.get("/kept/")
            _, fresh = await client.get("/fresh/")
            assert (kept["total"], len(kept["items"])) == (4, 5)  # the count of an hour's window; rows read fresh
            assert (fresh["total"], len(fresh["items"])) == (5, 5)
            _, kept_filtered = await client.get("/kept/?label=item%201")
            assert kept_filtered["total"] == 2  # its own cached count
            _, kept_other = await client.get("/kept/?label=item%201&label=item%200")
            assert kept_other["total"] == 5  # a combination not counted before
    finally:
        await engine.dispose()
