"""Demo registries (deterministic), the adapters settings file, and the `gateway adapter` CLI as a process."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.config import load_config, parse_config
from adapters.demo_data import check_digit, demo_adapters, generate, write_demo_data
from adapters.files import FileAdapter
from adapters.passthrough import PassthroughAdapter
from adapters.server import start_adapters
from adapters.soap import SoapPersonsAdapter
from adapters.sql import SqlAdapter
from gateway.errors import ConfigError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GATEWAY = Path(sys.executable).parent / "gateway"


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b, c = generate(seed=5), generate(seed=5), generate(seed=6)
    assert a == b
    assert a.persons != c.persons and a.companies != c.companies
    assert (len(a.persons), len(a.companies)) == (200, 100)


def test_records_look_real() -> None:
    data = generate()
    codes = [p["personal_code"] for p in data.persons]
    assert len(set(codes)) == len(codes) == 200
    for p in data.persons:
        code, born = p["personal_code"], p["date_of_birth"]
        assert len(code) == 11 and code.isdigit()
        assert int(code[10]) == check_digit(code[:10])
        assert code[1:7] == born.strftime("%y%m%d")
        assert (
            code[0]
            == {(False, "M"): "3", (False, "F"): "4", (True, "M"): "5", (True, "F"): "6"}[
                (born.year >= 2000, p["sex"])
            ]
        )
        assert dt.date(1930, 1, 1) <= born <= dt.date(2020, 12, 31)
    for c in data.companies:
        code = c["registry_code"]
        assert len(code) == 8 and int(code[7]) == check_digit(code[:7])
        assert c["name"].endswith(" " + c["legal_form"])
        assert c["status"] in ("registered", "in liquidation", "deleted")
    assert len({c["name"] for c in data.companies}) == 100
    assert any(not p["last_name"].isascii() for p in data.persons)  # UTF-8 exercised


@pytest.mark.parametrize(
    ("value", "digit"),
    # Published examples 37605030299 and 49403136515; 3800101001 needs the second weights (sums 32, 60).
    [("3760503029", 9), ("4940313651", 5), ("3800101001", 5), ("0000000000", 0)],
)
def test_check_digit(value: str, digit: int) -> None:
    assert check_digit(value) == digit


def test_written_files_are_identical_for_the_same_seed(tmp_path: Path) -> None:
    one = write_demo_data(tmp_path / "one", seed=3, persons=40, companies=20)
    two = write_demo_data(tmp_path / "two", seed=3, persons=40, companies=20)
    again = write_demo_data(tmp_path / "one", seed=3, persons=40, companies=20)  # overwrites cleanly
    for attr in ("persons_csv", "companies_csv"):
        assert (
            getattr(one, attr).read_bytes()
            == getattr(two, attr).read_bytes()
            == getattr(again, attr).read_bytes()
        )

    def dump(db: Path) -> list[Any]:
        with sqlite3.connect(db) as conn:
            rows = [
                conn.execute("SELECT * FROM persons ORDER BY 1").fetchall(),
                conn.execute("SELECT * FROM companies ORDER BY 1").fetchall(),
            ]
        conn.close()
        return rows

    assert dump(one.database) == dump(two.database)
    persons, companies = dump(one.database)
    assert (len(persons), len(companies)) == (40, 20)
    assert one.persons_csv.read_text(encoding="utf-8").splitlines()[0] == (
        "personal_code,first_name,last_name,sex,date_of_birth,municipality"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"persons": -1}, "persons must be from 0 to 100000, got -1"),
        ({"companies": 100_001}, "companies must be from 0 to 100000"),
    ],
)
def test_bad_counts(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        generate(**kwargs)
    assert message in info.value.message


async def test_demo_adapters_serve_the_same_person_from_sql_and_csv(tmp_path: Path) -> None:
    data = write_demo_data(tmp_path, persons=50, companies=10)
    running = await start_adapters(demo_adapters(data))
    person = generate(persons=50, companies=10).persons[17]
    try:
        async with aiohttp.ClientSession() as http:
            bodies = []
            for name in ("persons", "persons-file"):
                async with http.get(f"{running.urls[name]}/{person['personal_code']}") as resp:
                    assert resp.status == 200
                    bodies.append(await resp.json())
            async with http.get(f"{running.urls['companies']}/?status=deleted&limit=1000") as resp:
                companies = await resp.json()
    finally:
        await running.close()
    assert bodies[0] == bodies[1]
    assert bodies[0]["date_of_birth"] == person["date_of_birth"].isoformat()
    assert companies["total"] == sum(
        1 for c in generate(persons=50, companies=10).companies if c["status"] == "deleted"
    )


def test_example_settings_file_parses() -> None:
    config = load_config(REPO / "config" / "adapters.example.toml", {})
    assert (config.host, config.port) == ("127.0.0.1", 8090)
    assert isinstance(config.adapters["persons"], SqlAdapter)
    assert isinstance(config.adapters["companies-file"], FileAdapter)
    legacy = config.adapters["legacy"]
    assert isinstance(legacy, PassthroughAdapter) and legacy.base_url == "http://127.0.0.1:9000/api/v1"
    soap = config.adapters["persons-soap"]
    assert isinstance(soap, SoapPersonsAdapter) and (soap.key, soap.columns) == (
        "personal_code", ("personal_code", "first_name", "last_name"))


def _sql(**extra: Any) -> dict[str, Any]:
    return {"kind": "sql", "url": "sqlite+aiosqlite:///x.db", "table": "t", **extra}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "f.toml: no adapters; add an [adapters.NAME] table"),
        ({"adapters": {"a": _sql()}, "extra": {}}, "f.toml: unknown section [extra]"),
        (
            {"server": {"port": "80"}, "adapters": {"a": _sql()}},
            "f.toml: server.port: must be an integer >= 0",
        ),
        ({"server": {"port": 70000}, "adapters": {"a": _sql()}}, "server.port: must be at most 65535"),
        ({"server": {"hots": "x"}, "adapters": {"a": _sql()}}, "server.hots: unknown key; known: host, port"),
        ({"adapters": {"a/b": _sql()}}, "f.toml: adapters.a/b: the name must match"),
        (
            {"adapters": {"a": {"kind": "ftp"}}},
            "adapters.a.kind: must be one of sql, file, passthrough, soap, got 'ftp'",
        ),
        ({"adapters": {"a": _sql(tabel="t")}}, "adapters.a.tabel: unknown key for a sql adapter"),
        ({"adapters": {"a": {"kind": "soap"}}}, "adapters.a.path: is required"),
        ({"adapters": {"a": {"kind": "soap", "path": "p.csv", "url": "x"}}}, "adapters.a.url: unknown key for a soap"),
        (
            {"adapters": {"a": {"kind": "sql", "table": "t"}}},
            "adapters.a.url: give exactly one of url and url_env",
        ),
        (
            {"adapters": {"a": _sql(url_env="NOPE_URL")}},
            "adapters.a.url: give exactly one of url and url_env",
        ),
        (
            {"adapters": {"a": {"kind": "sql", "url_env": "NOPE_URL", "table": "t"}}},
            "adapters.a.url_env: environment variable NOPE_URL is not set",
        ),
        ({"adapters": {"a": _sql(url="nonsense")}}, "adapters.a.url: not a database URL"),
        ({"adapters": {"a": _sql(max_limit=0)}}, "adapters.a.max_limit: must be an integer >= 1, got 0"),
        (
            {"adapters": {"a": _sql(max_limit=True)}},
            "adapters.a.max_limit: must be an integer >= 1, got True",
        ),
        (
            {"adapters": {"a": _sql(total_cache_seconds=-1)}},
            "adapters.a.total_cache_seconds: must be a number >= 0, got -1",
        ),
        (
            {"adapters": {"a": _sql(total_cache_seconds="1s")}},
            "adapters.a.total_cache_seconds: must be a number >= 0, got '1s'",
        ),
        ({"adapters": {"a": _sql(columns="x")}}, "adapters.a.columns: must be a list of names or"),
        (
            {"adapters": {"a": _sql(columns=[{"name": "x", "type": "blob"}])}},
            "adapters.a.columns[0].type: must be one of string, integer, number, boolean, date, datetime, "
            "got 'blob'",
        ),
        (
            {"adapters": {"a": _sql(columns=[{"name": "x", "size": 1}])}},
            "adapters.a.columns[0]: unknown keys size",
        ),
        (
            {"adapters": {"a": _sql(columns=[3])}},
            "adapters.a.columns[0]: must be a name or a table with a name",
        ),
        ({"adapters": {"a": _sql(filters=[1])}}, "adapters.a.filters: must be a list of column names"),
        ({"adapters": {"a": _sql(query="SELECT 1")}}, "adapter 'a': give exactly one of table and query"),
        ({"adapters": {"a": {"kind": "file"}}}, "adapters.a.path: is required"),
        (
            {"adapters": {"a": {"kind": "file", "path": "x", "format": "xml"}}},
            "adapters.a.format: must be csv or json",
        ),
        (
            {"adapters": {"a": {"kind": "file", "path": "x.csv", "delimiter": ";;"}}},
            "adapters.a.delimiter: must be one character",
        ),
        ({"adapters": {"a": {"kind": "passthrough"}}}, "adapters.a.base_url: is required"),
        (
            {"adapters": {"a": {"kind": "passthrough", "base_url": "http://x", "timeout_seconds": 0}}},
            "adapters.a.timeout_seconds: must be a number >= 0.001, got 0",
        ),
    ],
)
def test_bad_settings_name_file_and_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="f.toml", base_dir=Path("/srv"), environ={})
    assert message in info.value.message
    assert info.value.exit_code == 2


def test_settings_resolve_relative_paths_and_read_url_from_environment(tmp_path: Path) -> None:
    data = {
        "adapters": {
            "s": {"kind": "sql", "url_env": "DB_URL", "table": "t"},
            "f": {"kind": "file", "path": "d/x.csv"},
            "p": {"kind": "passthrough", "base_url": "http://x", "openapi": "doc.json"},
        }
    }
    config = parse_config(
        data, source="f.toml", base_dir=tmp_path, environ={"DB_URL": "sqlite+aiosqlite:///r.db"}
    )
    assert config.adapters["s"].dataset._url == f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"  # type: ignore[attr-defined]
    assert config.adapters["f"].dataset.path == tmp_path / "d" / "x.csv"  # type: ignore[attr-defined]
    assert config.adapters["p"]._openapi_source == str(tmp_path / "doc.json")  # type: ignore[attr-defined]


def test_unreadable_settings_file(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml", {})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", {})


async def test_cli_demo_data_then_serve_until_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = await asyncio.create_subprocess_exec(
        str(GATEWAY),
        "adapter",
        "demo-data",
        "--out",
        str(out),
        "--persons",
        "30",
        "--companies",
        "5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    assert f"adapters: {out / 'adapters.toml'}" in stdout.decode()

    proc = await asyncio.create_subprocess_exec(
        str(GATEWAY),
        "adapter",
        "serve",
        "--config",
        str(out / "adapters.toml"),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        base = ""
        while not base:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, (await proc.stderr.read()).decode() if proc.stderr else "no output"
            if line.startswith("adapters listening on "):
                base = line.split()[-1]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as resp:
                assert await resp.json() == {
                    "status": "ok",
                    "adapters": ["companies", "persons", "persons-file", "persons-soap"],
                }
            async with http.get(f"{base}/persons/?limit=1") as resp:
                assert (await resp.json())["total"] == 30
            async with http.get(f"{base}/persons-soap?wsdl") as resp:  # kind = "soap" from the settings file
                assert resp.status == 200 and b"<wsdl:definitions" in await resp.read()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_serve_with_bad_settings_exits_2(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('[adapters.x]\nkind = "file"\npath = "missing.csv"\n')
    proc = await asyncio.create_subprocess_exec(
        str(GATEWAY),
        "adapter",
        "serve",
        "--config",
        str(tmp_path / "a.toml"),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert "missing.csv: cannot read" in stderr.decode()
