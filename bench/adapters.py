"""Adapter benchmark: the SQL adapter (SQLite, PostgreSQL) and the file adapter beside the database driver alone.

    .venv/bin/python bench/adapters.py [--rows 100000] [--duration 5] [--connections 16] [--json FILE]
    .venv/bin/python bench/adapters.py --before REV      # this tree and REV, alternated (A B A B) in one run

What runs (all on 127.0.0.1):
- a table of ``--rows`` rows (integer key ``id``, names, sex, municipality, date of birth, children) in a new
  SQLite file and in a new PostgreSQL database on 127.0.0.1:5432 (user postgres; dropped afterwards), and the
  same rows in a CSV file;
- the adapters, in their own process exactly as ``gateway adapter serve --config FILE`` runs them (with
  ``--before REV``, a second such process runs the adapters of REV, exported into a temporary directory);
- a load generator in another process: ``--connections`` kept-alive HTTP/1.1 connections, closed loop for
  ``--duration`` seconds, each request chosen at random from a precomputed set (random keys, random filters).

Two requests per adapter: a lookup by key (``GET /{id}``, random id) and a listing with a filter and keyset
paging (``GET /?municipality=M&limit=10&cursor=C``, random municipality, cursor after a random key). Beside
each SQL figure, the driver alone (aiosqlite / asyncpg, same concurrency, in the load generator's process while
the adapters idle) runs the same row query: the gap between the two is what the adapter costs. The driver's
listing runs the page query only; the adapter also reports ``total`` (see docs/adapters.md for how it keeps that
cheap). It prints requests/s and latency percentiles, asserts nothing, and is never part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import json
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.adapterapi import encode_cursor  # noqa: E402
from gateway.cli.run import run  # noqa: E402

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
MUNICIPALITIES = [f"Town {i:02d}" for i in range(16)]  # 16 values: a filter keeps 1/16 of the rows
PAGE = 10  # items per listing page
TARGETS = 2000  # distinct precomputed requests per scenario: enough that caches do not flatter the figures
COLUMNS = ("id", "first_name", "last_name", "sex", "municipality", "date_of_birth", "children")
ROW_SQL = "SELECT id, first_name, last_name, sex, municipality, date_of_birth, children FROM people"

# Run the adapters of `tree`, not of the installed (editable) package: drop the editable finder, tree first.
PRELUDE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]
sys.path.insert(0, {tree!r})
from gateway.cli import main
sys.argv = ['gateway', 'adapter', 'serve', '--config', {config!r}, '--port', '0']
main()
"""


def make_rows(n: int) -> list[tuple[Any, ...]]:
    rnd = random.Random(10)
    born = dt.date(1940, 1, 1)
    return [
        (
            i,
            f"First{rnd.randrange(1000):03d}",
            f"Last{rnd.randrange(5000):04d}",
            rnd.choice("MF"),
            rnd.choice(MUNICIPALITIES),
            born + dt.timedelta(days=rnd.randrange(25000)),
            rnd.randrange(5) if rnd.random() < 0.8 else None,
        )
        for i in range(1, n + 1)
    ]


def build_sqlite(path: Path, rows: list[tuple[Any, ...]]) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TABLE people (id INTEGER PRIMARY KEY, first_name VARCHAR(50) NOT NULL, "
            "last_name VARCHAR(50) NOT NULL, sex VARCHAR(1) NOT NULL, municipality VARCHAR(50) NOT NULL, "
            "date_of_birth DATE NOT NULL, children INTEGER)"
        )
        # Dates as SQLAlchemy's SQLite dialect stores them (ISO text), so that the adapter reads them back.
        db.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(*r[:5], r[5].isoformat(), r[6]) for r in rows])
        db.commit()


async def build_postgres(name: str, rows: list[tuple[Any, ...]]) -> str:
    import asyncpg

    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}")
    try:
        await conn.execute(
            "CREATE TABLE people (id INTEGER PRIMARY KEY, first_name VARCHAR(50) NOT NULL, "
            "last_name VARCHAR(50) NOT NULL, sex VARCHAR(1) NOT NULL, municipality VARCHAR(50) NOT NULL, "
            "date_of_birth DATE NOT NULL, children INTEGER)"
        )
        await conn.copy_records_to_table("people", records=rows, columns=list(COLUMNS))
        await conn.execute("ANALYZE people")
    finally:
        await conn.close()
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def drop_postgres(name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def write_csv(path: Path, rows: list[tuple[Any, ...]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows([(*r[:5], r[5].isoformat(), "" if r[6] is None else r[6]) for r in rows])


def write_config(path: Path, *, sqlite_db: Path, pg_url: str | None, csv_path: Path) -> None:
    parts = [
        f'[adapters.sqlite]\nkind = "sql"\nurl = "sqlite+aiosqlite:///{sqlite_db}"\ntable = "people"\n',
        f'[adapters.file]\nkind = "file"\npath = "{csv_path}"\nkey = "id"\n'
        'columns = [{name = "id", type = "integer"}, "first_name", "last_name", "sex", "municipality",\n'
        '  {name = "date_of_birth", type = "date"}, {name = "children", type = "integer"}]\n',
    ]
    if pg_url is not None:
        parts.append(f'[adapters.pg]\nkind = "sql"\nurl = "{pg_url}"\ntable = "people"\n')
    path.write_text("\n".join(parts))


# ---- the adapters' process ---------------------------------------------------------------------------------


class Server:
    """``gateway adapter serve`` of one tree, in its own process."""

    def __init__(self, tree: Path, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PRELUDE.format(tree=str(tree), config=str(config))],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.proc.stdout is not None
        self.base = ""
        deadline = time.monotonic() + 120  # seconds: loading 100,000 CSV rows takes a few
        while not self.base:
            line = self.proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"adapters of {tree} did not start")
            if line.startswith("adapters listening on "):
                self.base = line.split()[-1]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- load generator (a child process: python bench/adapters.py --loadgen ...) -------------------------------


class Conn:
    """One kept-alive HTTP/1.1 connection: each request written in one piece, each answer read by length."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, request: bytes) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader = self.reader
        self.writer.write(request)
        status = int((await reader.readline()).split(b" ", 2)[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def http_targets(base: str, paths: list[str]) -> list[bytes]:
    hostport = base.split("://", 1)[1]
    return [f"GET {p} HTTP/1.1\r\nHost: {hostport}\r\n\r\n".encode() for p in paths]


def summarise(latencies: list[float], elapsed: float, errors: int) -> dict[str, float]:
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000 if lat else float("nan")

    return {"requests": len(lat), "errors": errors, "rps": len(lat) / elapsed if elapsed else 0.0,
            "p50_ms": pct(50), "p99_ms": pct(99), "mean_ms": statistics.fmean(lat) * 1000 if lat else 0.0}


async def closed_loop(make_worker: Callable[[], Callable[[], Awaitable[bool]]], n: int, duration: float,
                      ) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def loop(call: Callable[[], Awaitable[bool]]) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            if not await call():
                errors += 1
            latencies.append(time.perf_counter() - t0)

    t_start = time.perf_counter()
    await asyncio.gather(*(loop(make_worker()) for _ in range(n)))
    return summarise(latencies, time.perf_counter() - t_start, errors)


async def load_http(spec: dict[str, Any]) -> dict[str, float]:
    host, port = spec["base"].split("://", 1)[1].rsplit(":", 1)
    targets = http_targets(spec["base"], spec["paths"])
    conns: list[Conn] = []

    def make_worker() -> Callable[[], Awaitable[bool]]:
        conn = Conn(host, int(port))
        conns.append(conn)
        rnd = random.Random(len(conns))

        async def call() -> bool:
            return await conn.get(rnd.choice(targets)) == 200

        return call

    try:
        return await closed_loop(make_worker, spec["connections"], spec["duration"])
    finally:
        for c in conns:
            c.close()


async def load_driver(spec: dict[str, Any]) -> dict[str, float]:
    """The same row query through the driver alone: one connection per worker, the statement prepared once."""
    args_list: list[list[Any]] = spec["args"]
    n = spec["connections"]
    if spec["driver"] == "asyncpg":
        import asyncpg

        sql = spec["sql"].replace("?", "{}")
        sql = sql.format(*(f"${i + 1}" for i in range(sql.count("{}"))))
        pool = await asyncpg.create_pool(spec["dsn"], min_size=n, max_size=n)
        try:
            def make_pg() -> Callable[[], Awaitable[bool]]:
                rnd = random.Random(n)

                async def call() -> bool:
                    async with pool.acquire() as conn:
                        rows = await conn.fetch(sql, *rnd.choice(args_list))
                    return bool([dict(r) for r in rows]) or True

                return call

            return await closed_loop(make_pg, n, spec["duration"])
        finally:
            await pool.close()
    import aiosqlite

    dbs = [await aiosqlite.connect(spec["path"]) for _ in range(n)]
    try:
        it = iter(dbs)

        def make_sqlite() -> Callable[[], Awaitable[bool]]:
            db = next(it)
            rnd = random.Random(n)

            async def call() -> bool:
                async with db.execute(spec["sql"], rnd.choice(args_list)) as cur:
                    rows = await cur.fetchall()
                return bool([dict(zip(COLUMNS, r, strict=True)) for r in rows]) or True

            return call

        return await closed_loop(make_sqlite, n, spec["duration"])
    finally:
        for db in dbs:
            await db.close()


def loadgen_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    cpu0 = time.process_time()
    result = run(load_http(spec) if "base" in spec else load_driver(spec))
    result["loadgen_cpu_s"] = time.process_time() - cpu0
    print(json.dumps(result))


def run_loadgen(spec: dict[str, Any]) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--loadgen", json.dumps(spec)], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    return dict(json.loads(out.stdout))


# ---- the scenarios ------------------------------------------------------------------------------------------


def scenarios(rows: int, seed: int) -> Iterator[tuple[str, list[str], list[list[Any]], str]]:
    """(kind, adapter paths, driver arguments, driver SQL) for the lookup and the listing."""
    rnd = random.Random(seed)
    keys = [rnd.randrange(1, rows + 1) for _ in range(TARGETS)]
    yield "lookup", [f"/{k}" for k in keys], [[k] for k in keys], f"{ROW_SQL} WHERE id = ? LIMIT 2"
    lists = [(rnd.choice(MUNICIPALITIES), rnd.randrange(0, rows)) for _ in range(TARGETS)]
    paths = [f"/?municipality={m.replace(' ', '%20')}&limit={PAGE}&cursor={encode_cursor(str(k))}" for m, k in lists]
    yield ("list", paths, [[m, k] for m, k in lists],
           f"{ROW_SQL} WHERE municipality = ? AND id > ? ORDER BY id LIMIT {PAGE + 1}")


def show(label: str, r: dict[str, float]) -> None:
    print(f"  {label:<34} {r['rps']:>9.0f} req/s   p50 {r['p50_ms']:6.2f} ms   p99 {r['p99_ms']:6.2f} ms"
          f"   errors {int(r['errors'])}   loadgen cpu {r['loadgen_cpu_s']:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16, help="concurrent kept-alive connections")
    parser.add_argument("--rounds", type=int, default=1, help="alternated rounds (A B A B ...)")
    parser.add_argument("--before", help="a git revision whose adapters run beside this tree's, alternated")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--no-driver", action="store_true", help="skip the driver-alone figures")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        loadgen_main(args.loadgen)
        return

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-adapters-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        data = make_rows(args.rows)
        build_sqlite(tmp / "people.db", data)
        write_csv(tmp / "people.csv", data)
        pg_name = f"gw_bench_{uuid.uuid4().hex[:12]}"
        pg_url = None if args.no_postgres else asyncio.run(build_postgres(pg_name, data))
        write_config(tmp / "adapters.toml", sqlite_db=tmp / "people.db", pg_url=pg_url, csv_path=tmp / "people.csv")
        print(f"{args.rows} rows in SQLite, {'PostgreSQL, ' if pg_url else ''}CSV: "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        trees = [("this tree", ROOT)]
        before = tmp / "before"
        if args.before:
            # An exported copy of the revision (git archive): no worktree, nothing written to the repository.
            before.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "gateway", "adapters"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
            trees.insert(0, (f"before {args.before}", before))
        servers: dict[str, Server] = {}
        try:
            for label, tree in trees:
                servers[label] = Server(tree, tmp / "adapters.toml")
            adapters = ["sqlite", *(["pg"] if pg_url else []), "file"]
            for rnd_i in range(args.rounds):
                print(f"round {rnd_i + 1}: {args.connections} connections, {args.duration:g} s each", flush=True)
                for kind, paths, driver_args, sql in scenarios(args.rows, seed=rnd_i):
                    for name in adapters:
                        for label, server in servers.items():
                            spec = {"base": server.base, "paths": [f"/{name}{p}" for p in paths],
                                    "connections": args.connections, "duration": args.duration}
                            r = run_loadgen(spec)
                            show(f"{name} {kind} adapter ({label})", r)
                            results.append({"round": rnd_i + 1, "adapter": name, "request": kind, "via": label, **r})
                        if args.no_driver or name == "file":
                            continue
                        drv: dict[str, Any] = {"sql": sql, "args": driver_args, "connections": args.connections,
                                               "duration": args.duration}
                        if name == "pg":
                            assert pg_url is not None
                            drv |= {"driver": "asyncpg", "dsn": pg_url.replace("+asyncpg", "")}
                        else:
                            drv |= {"driver": "aiosqlite", "path": str(tmp / "people.db")}
                        r = run_loadgen(drv)
                        show(f"{name} {kind} driver alone ({drv['driver']})", r)
                        results.append({"round": rnd_i + 1, "adapter": name, "request": kind, "via": drv["driver"],
                                        **r})
        finally:
            for server in servers.values():
                server.close()
            if pg_url is not None:
                asyncio.run(drop_postgres(pg_name))
    if args.json:
        args.json.write_text(json.dumps({"rows": args.rows, "duration": args.duration,
                                         "connections": args.connections, "results": results}, indent=2))



if __name__ == "__main__":
    main()
