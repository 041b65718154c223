"""The file adapter (CSV and JSON) over real HTTP on 127.0.0.1; the dataset rules it shares with SQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import pytest
from adapters_kit import AdapterClient, serve_adapters

from adapters.dataset import ColumnSpec
from adapters.demo_data import PERSON_COLUMNS, generate, to_csv
from adapters.files import FileAdapter, parse_records
from adapters.server import start_adapters
from gateway.errors import ConfigError

pytestmark = pytest.mark.integration

N = 25
PRODUCTS: list[dict[str, Any]] = [
    {"sku": 30, "name": "Rukkileib", "price": 2.49, "in_stock": True, "weight_g": 500, "note": None},
    {"sku": 10, "name": "Kama", "price": 3, "in_stock": False, "weight_g": 400, "note": "jahu"},
    {"sku": 20, "name": "Kohuke", "price": 0.89, "in_stock": True, "weight_g": None, "note": "Ülle's pick"},
]


Files = AdapterClient  # the file adapters (persons.csv, products.json) and a client


@pytest.fixture
async def files(tmp_path: Path) -> AsyncIterator[Files]:
    persons = [dict(p) for p in generate(seed=11, persons=N, companies=0).persons]
    # Reverse the file order: the adapter must order by key itself.
    (tmp_path / "persons.csv").write_bytes(to_csv(list(reversed(persons)), PERSON_COLUMNS))
    (tmp_path / "products.json").write_text(json.dumps(PRODUCTS), encoding="utf-8")
    adapters = {
        "persons": FileAdapter(
            name="persons",
            title="Persons (CSV)",
            path=tmp_path / "persons.csv",
            key="personal_code",
            columns=[
                ColumnSpec(name=c, type="date" if c == "date_of_birth" else None) for c in PERSON_COLUMNS
            ],
            filters=["last_name", "sex", "date_of_birth", "municipality"],
        ),
        "products": FileAdapter(name="products", path=tmp_path / "products.json"),
    }
    async with serve_adapters(adapters, persons=persons) as client:
        yield client


def _csv_person(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k].isoformat() if k == "date_of_birth" else r[k] for k in PERSON_COLUMNS}


async def test_csv_listing_pagination_and_lookup(files: Files) -> None:
    expected = [_csv_person(r) for r in sorted(files.persons, key=lambda r: r["personal_code"])]
    url, items = files.url("/persons/?limit=10"), []
    offsets = []
    while url:
        async with files.http.get(url) as resp:
            body = await resp.json()
        assert resp.status == 200 and body["total"] == N
        offsets.append(body["offset"])
        items += body["items"]
        url = urljoin(url, body["next"]) if body["next"] else ""
    assert offsets == [0, 10, 20]
    assert items == expected
    assert await files.get(f"/persons/{expected[3]['personal_code']}") == (200, expected[3])
    status, body = await files.get("/persons/12345")
    assert status == 404 and body["message"] == "no item with personal_code '12345' in service 'persons'"


async def test_csv_filters(files: Files) -> None:
    someone = files.persons[7]
    dob = someone["date_of_birth"].isoformat()
    status, body = await files.get(f"/persons/?date_of_birth={dob}&last_name={quote(someone['last_name'])}")
    assert status == 200
    assert _csv_person(someone) in body["items"]
    assert all(i["date_of_birth"] == dob for i in body["items"])
    status, body = await files.get("/persons/?sex=F&sex=M&limit=1000")
    assert body["total"] == N
    status, body = await files.get("/persons/?sex=X")
    assert (status, body["total"], body["next"]) == (200, 0, None)


async def test_json_types_filters_lookup_and_openapi(files: Files) -> None:
    status, body = await files.get("/products/")
    assert status == 200
    assert body["items"] == sorted(PRODUCTS, key=lambda p: p["sku"])
    assert (await files.get("/products/?in_stock=true"))[1]["total"] == 2
    assert (await files.get("/products/?price=3"))[1]["items"][0]["name"] == "Kama"
    assert (await files.get("/products/?weight_g=500&weight_g=400"))[1]["total"] == 2
    assert await files.get("/products/20") == (200, PRODUCTS[2])
    assert (await files.get("/products/21"))[0] == 404
    status, doc = await files.get("/products/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {"/", "/{sku}"}
    props = doc["components"]["schemas"]["Item"]["properties"]
    assert props == {
        "sku": {"type": ["integer", "null"], "format": "int64"},
        "name": {"type": ["string", "null"]},
        "price": {"type": ["number", "null"]},
        "in_stock": {"type": ["boolean", "null"]},
        "weight_g": {"type": ["integer", "null"], "format": "int64"},
        "note": {"type": ["string", "null"]},
    }
    assert doc["paths"]["/{sku}"]["get"]["parameters"][0]["schema"] == {"type": "integer", "format": "int64"}


async def test_csv_openapi_uses_declared_types(files: Files) -> None:
    status, doc = await files.get("/persons/openapi.json")
    assert status == 200
    props = doc["components"]["schemas"]["Item"]["properties"]
    assert props["date_of_birth"] == {"type": ["string", "null"], "format": "date"}
    assert props["first_name"] == {"type": ["string", "null"]}
    names = [p["name"] for p in doc["paths"]["/"]["get"]["parameters"]]
    assert names == ["limit", "offset", "cursor", "last_name", "sex", "date_of_birth", "municipality"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "limit must be an integer from 1 to 1000, got '0'"),
        ("limit=1001", "limit must be an integer from 1 to 1000, got '1001'"),
        ("limit=abc", "limit must be an integer from 1 to 1000, got 'abc'"),
        ("limit=1_0", "limit must be an integer from 1 to 1000, got '1_0'"),
        ("limit=%205", "limit must be an integer from 1 to 1000, got ' 5'"),
        ("limit=", "limit must be an integer from 1 to 1000, got ''"),
        ("limit=-1", "limit must be an integer from 1 to 1000, got '-1'"),
        ("limit=%D9%A1", "limit must be an integer from 1 to 1000, got '\u0661'"),  # Arabic-Indic digit one
        ("offset=-1", "offset must be an integer from 0 to 2147483647, got '-1'"),
        ("offset=x", "offset must be an integer from 0 to 2147483647, got 'x'"),
        ("offset=1e3", "offset must be an integer from 0 to 2147483647, got '1e3'"),
        ("offset=99999999999", "offset must be an integer from 0 to 2147483647, got '99999999999'"),
        ("limit=5&limit=6", "query parameter 'limit' given more than once"),
        ("offset=1&offset=2", "query parameter 'offset' given more than once"),
        ("offset=1&cursor=", "give either offset or cursor, not both"),
        ("cursor=bm9wZQ", "cursor is not one this service issued"),
        ("cursor=%%%", "cursor is not one this service issued"),
        ("cursor=" + "A" * 2001, "cursor is not one this service issued"),
        (
            "first_name=Mari",
            "unknown filter 'first_name'; filterable columns: date_of_birth, last_name, municipality, sex",
        ),
        ("nosuch=1", "unknown filter 'nosuch'"),
        ("Sex=M", "unknown filter 'Sex'"),
        (
            "date_of_birth=1980-13-01",
            "value for 'date_of_birth' must be a date (YYYY-MM-DD), got '1980-13-01'",
        ),
        ("date_of_birth=1980-1-1", "value for 'date_of_birth' must be a date (YYYY-MM-DD), got '1980-1-1'"),
        ("last_name=a%00b", "value for 'last_name' contains a NUL character"),
        ("last_name=" + "x" * 1001, "value for 'last_name' is longer than 1000 characters"),
    ],
)
async def test_bad_parameters_are_400_with_a_precise_message(files: Files, query: str, message: str) -> None:
    status, body = await files.get(f"/persons/?{query}")
    assert status == 400, body
    assert body["type"] == "BadRequest"
    assert message in body["message"]
    assert set(body) == {"type", "message", "detail"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sku=1.5", "value for 'sku' must be an integer, got '1.5'"),
        ("sku=99999999999999999999", "value for 'sku' must be an integer, got '99999999999999999999'"),
        ("price=NaN", "value for 'price' must be a finite number, got 'NaN'"),
        ("price=1e999", "value for 'price' must be a finite number, got '1e999'"),
        ("in_stock=yes", "value for 'in_stock' must be true or false, got 'yes'"),
    ],
)
async def test_bad_typed_values_are_400(files: Files, query: str, message: str) -> None:
    status, body = await files.get(f"/products/?{query}")
    assert status == 400
    assert body["message"] == message


async def test_forged_cursor_for_a_bad_key_is_400(files: Files) -> None:
    import base64

    cursor = base64.urlsafe_b64encode(b"k1:not-a-number").rstrip(b"=").decode()
    status, body = await files.get(f"/products/?cursor={cursor}")
    assert status == 400 and body["message"] == "value for 'sku' must be an integer, got 'not-a-number'"


async def test_cursor_pagination_on_json(files: Files) -> None:
    status, body = await files.get("/products/?limit=2&cursor=")
    assert status == 200
    assert [i["sku"] for i in body["items"]] == [10, 20] and body["offset"] is None
    status, body = await files.get(f"/products/{body['next']}")
    assert status == 200
    assert [i["sku"] for i in body["items"]] == [30] and body["next"] is None


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_file_adapter_is_read_only(files: Files, method: str) -> None:
    async with files.http.request(method, files.url("/products/10")) as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    ("data", "fmt", "kwargs", "message"),
    [
        (b"a,b\n1,2\n1,3\n", "csv", {}, "key '1' appears more than once in column 'a'"),
        (b"a,b\n1,2\n3\n", "csv", {}, "row 3 does not have 2 fields"),
        (b"a,b\n1,2,3\n", "csv", {}, "row 2 does not have 2 fields"),
        (b"a,b\n,2\n", "csv", {}, "record 1 has no value for key column 'a'"),
        (
            b"a,b\n1,x\n",
            "csv",
            {"columns": [ColumnSpec(name="a"), ColumnSpec(name="b", type="date")]},
            "record 1, column 'b': value for 'b' must be a date (YYYY-MM-DD), got 'x'",
        ),
        (b"a,b\n1,2\n", "csv", {"columns": [ColumnSpec(name="c")]}, "column 'c' not found; available: a, b"),
        (b"a,b\n1,2\n", "csv", {"key": "z"}, "key column 'z' is not among the columns a, b"),
        (b"a,b\n1,2\n", "csv", {"filters": ["z"]}, "filters name columns that are not exposed: z"),
        (b"\xff\xfe", "csv", {}, "not UTF-8"),
        (b"", "csv", {}, "no columns"),
        (b"{}", "json", {}, "the JSON document must be an array of objects"),
        (b"[1, 2]", "json", {}, "the JSON document must be an array of objects"),
        (b"[{", "json", {}, "malformed JSON"),
        (b'[{"a": 1, "b": {"c": 2}}]', "json", {}, "record 1, column 'b': nested objects and arrays"),
        (b'[{"a": 1}, {"a": 1.0}]', "json", {}, "key 1 appears more than once in column 'a'"),
        (
            b'[{"a": 1, "b": true}]',
            "json",
            {"columns": [ColumnSpec(name="a"), ColumnSpec(name="b", type="date")]},
            "record 1, column 'b': True is not a date",
        ),
    ],
)
def test_bad_files_are_refused(data: bytes, fmt: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_records(data, format=fmt, source="f", **kwargs)
    assert message in info.value.message
    assert info.value.message.startswith("f")


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("missing.csv", {}, "cannot read"),
        ("big.csv", {"max_bytes": 4}, "is more than max_bytes = 4"),
        ("data.txt", {}, "cannot tell the format"),
    ],
)
async def test_file_problems_refuse_to_start(
    tmp_path: Path, name: str, kwargs: dict[str, Any], message: str
) -> None:
    (tmp_path / "big.csv").write_bytes(b"a,b\n1,2\n")
    (tmp_path / "data.txt").write_bytes(b"a,b\n1,2\n")
    with pytest.raises(ConfigError) as info:
        adapter = FileAdapter(name="f", path=tmp_path / name, **kwargs)
        await start_adapters({"f": adapter}, "127.0.0.1", 0)
    assert message in info.value.message
