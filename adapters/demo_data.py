"""Deterministic sample registries for the demo federation: a population register and a business register.

Generated from a seeded RNG (same seed, same data, byte for byte in the CSV files), with nothing
downloaded. The records look like Estonian ones, since X-Road comes from there: 11-digit personal codes
with their check digit (``GYYMMDDSSSC``), 8-digit registry codes with theirs, Estonian names (UTF-8 on
purpose: ``Mägi``, ``Jõgi``) and municipalities. They are invented; any likeness to a real person or
company is chance.

:func:`generate` is pure; :func:`write_demo_data` does file I/O (SQLite through :mod:`sqlite3`, CSV,
and an adapters settings file that serves them); :func:`demo_adapters` builds the adapters for embedding.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.dataset import ColumnSpec
from adapters.files import FileAdapter
from adapters.soap import SoapPersonsAdapter
from adapters.sql import SqlAdapter
from gateway.adapterapi import ServiceAdapter
from gateway.errors import ConfigError

DEFAULT_SEED = 2024
DEFAULT_PERSONS = 200
DEFAULT_COMPANIES = 100

PERSON_COLUMNS = ("personal_code", "first_name", "last_name", "sex", "date_of_birth", "municipality")
COMPANY_COLUMNS = ("registry_code", "name", "legal_form", "founded", "status", "municipality")

_MALE = (
    "Andres",
    "Jaan",
    "Mart",
    "Toomas",
    "Rein",
    "Priit",
    "Kristjan",
    "Margus",
    "Tõnu",
    "Jüri",
    "Urmas",
    "Siim",
    "Rasmus",
    "Oliver",
    "Mihkel",
    "Henri",
    "Karl",
    "Martin",
    "Sander",
    "Peeter",
)
_FEMALE = (
    "Mari",
    "Kadri",
    "Liis",
    "Triin",
    "Kersti",
    "Tiina",
    "Anu",
    "Maarja",
    "Katrin",
    "Ülle",
    "Helen",
    "Eha",
    "Sofia",
    "Laura",
    "Mia",
    "Hanna",
    "Elisabeth",
    "Kätlin",
    "Piret",
    "Aino",
)
_LAST = (
    "Tamm",
    "Saar",
    "Sepp",
    "Mägi",
    "Kask",
    "Kukk",
    "Rebane",
    "Ilves",
    "Pärn",
    "Koppel",
    "Kuusk",
    "Karu",
    "Lepik",
    "Oja",
    "Jõgi",
    "Raudsepp",
    "Vaher",
    "Lill",
    "Kallas",
    "Põder",
    "Ots",
    "Kõiv",
    "Laur",
    "Luik",
    "Teder",
    "Mets",
    "Lõhmus",
    "Toom",
    "Org",
    "Kuusik",
)
_MUNICIPALITIES = (
    "Tallinn",
    "Tartu linn",
    "Narva linn",
    "Pärnu linn",
    "Kohtla-Järve linn",
    "Viljandi linn",
    "Rakvere linn",
    "Maardu linn",
    "Kuressaare",
    "Võru linn",
    "Valga vald",
    "Haapsalu linn",
    "Jõhvi vald",
    "Paide linn",
    "Keila linn",
    "Saue vald",
    "Harku vald",
    "Viimsi vald",
)
_BUSINESS_WORDS = (
    "Põhja",
    "Lõuna",
    "Balti",
    "Metsa",
    "Mere",
    "Kivi",
    "Puit",
    "Ehitus",
    "Andmed",
    "Tarkvara",
    "Transport",
    "Kala",
    "Piim",
    "Energia",
    "Disain",
    "Aed",
    "Tehnika",
    "Vara",
    "Kaubandus",
    "Logistika",
    "Konsult",
    "Teenused",
    "Arendus",
    "Valgus",
    "Lind",
)
# Legal forms of the Estonian business register, weighted roughly as they occur.
_LEGAL_FORMS = (("OÜ", 70), ("AS", 10), ("MTÜ", 12), ("SA", 4), ("TÜ", 4))
_STATUSES = (("registered", 85), ("in liquidation", 5), ("deleted", 10))


def check_digit(digits: str) -> int:
    """The Estonian check digit (personal and registry codes): weights 1..9,1, then 3..9,1,2,3, else 0."""
    for weights in ((1, 2, 3, 4, 5, 6, 7, 8, 9, 1), (3, 4, 5, 6, 7, 8, 9, 1, 2, 3)):
        rest = sum(int(d) * w for d, w in zip(digits, weights, strict=False)) % 11
        if rest != 10:
            return rest
    return 0


def _weighted(rng: random.Random, choices: Sequence[tuple[str, int]]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class Registries:
    """The generated records: persons and companies, each sorted by its code."""

    persons: tuple[dict[str, Any], ...]
    companies: tuple[dict[str, Any], ...]


def generate(
    *, seed: int = DEFAULT_SEED, persons: int = DEFAULT_PERSONS, companies: int = DEFAULT_COMPANIES
) -> Registries:
    """Generate the registries. Pure and deterministic in its arguments.

    Raises:
        ConfigError: a count below 0 or above 100 000.
    """
    for label, n in (("persons", persons), ("companies", companies)):
        if not 0 <= n <= 100_000:
            raise ConfigError(f"{label} must be from 0 to 100000, got {n}")
    rng = random.Random(seed)
    people: dict[str, dict[str, Any]] = {}
    first_day, last_day = dt.date(1930, 1, 1).toordinal(), dt.date(2020, 12, 31).toordinal()
    while len(people) < persons:
        born = dt.date.fromordinal(rng.randint(first_day, last_day))
        sex = rng.choice("MF")
        century = 3 if born.year < 2000 else 5
        head = f"{century + (sex == 'F')}{born:%y%m%d}{rng.randint(0, 999):03d}"
        code = head + str(check_digit(head))
        if code in people:
            continue
        people[code] = {
            "personal_code": code,
            "first_name": rng.choice(_MALE if sex == "M" else _FEMALE),
            "last_name": rng.choice(_LAST),
            "sex": sex,
            "date_of_birth": born,
            "municipality": rng.choice(_MUNICIPALITIES),
        }
    firms: dict[str, dict[str, Any]] = {}
    names: set[str] = set()
    first_day, last_day = dt.date(1991, 8, 20).toordinal(), dt.date(2024, 12, 31).toordinal()
    while len(firms) < companies:
        head = f"{rng.choice('189')}{rng.randint(0, 999_999):06d}"
        code = head + str(check_digit(head))
        form = _weighted(rng, _LEGAL_FORMS)
        name = f"{rng.choice(_BUSINESS_WORDS)} {rng.choice(_BUSINESS_WORDS)} {form}"
        if code in firms or name in names or name.split()[0] == name.split()[1]:
            continue
        names.add(name)
        firms[code] = {
            "registry_code": code,
            "name": name,
            "legal_form": form,
            "founded": dt.date.fromordinal(rng.randint(first_day, last_day)),
            "status": _weighted(rng, _STATUSES),
            "municipality": rng.choice(_MUNICIPALITIES),
        }
    return Registries(
        persons=tuple(people[k] for k in sorted(people)), companies=tuple(firms[k] for k in sorted(firms))
    )


def to_csv(records: Sequence[dict[str, Any]], columns: Sequence[str]) -> bytes:
    """CSV bytes (UTF-8, header row, ``\\n`` line ends, ISO dates). Pure."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for r in records:
        writer.writerow([r[c].isoformat() if isinstance(r[c], dt.date) else r[c] for c in columns])
    return out.getvalue().encode("utf-8")


_SCHEMA = """
CREATE TABLE persons (
    personal_code TEXT PRIMARY KEY NOT NULL,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    sex TEXT NOT NULL CHECK (sex IN ('M', 'F')),
    date_of_birth DATE NOT NULL,
    municipality TEXT NOT NULL
);
CREATE INDEX persons_last_name ON persons (last_name);
CREATE TABLE companies (
    registry_code TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    legal_form TEXT NOT NULL,
    founded DATE NOT NULL,
    status TEXT NOT NULL,
    municipality TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoData:
    """Where :func:`write_demo_data` put the registries."""

    database: Path  # SQLite, tables persons and companies
    persons_csv: Path
    companies_csv: Path
    config: Path  # adapters settings file serving the above

    @property
    def database_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.database}"


_CONFIG = """\
# Adapters serving the demo registries (written by `gateway adapter demo-data`).
# Serve them with: gateway adapter serve --config {config}
[server]
host = "127.0.0.1"
port = 8090

[adapters.persons]
kind = "sql"
title = "Population register"
description = "Demo persons: personal code, name, sex, date of birth, municipality."
url = "sqlite+aiosqlite:///registries.db"
table = "persons"
filters = ["first_name", "last_name", "sex", "date_of_birth", "municipality"]

[adapters.companies]
kind = "sql"
title = "Business register"
description = "Demo companies: registry code, name, legal form, founding date, status, municipality."
url = "sqlite+aiosqlite:///registries.db"
table = "companies"
filters = ["name", "legal_form", "founded", "status", "municipality"]

[adapters.persons-file]
kind = "file"
title = "Population register (CSV)"
path = "persons.csv"
key = "personal_code"
columns = ["personal_code", "first_name", "last_name", "sex",
           {{ name = "date_of_birth", type = "date" }}, "municipality"]

[adapters.persons-soap]
kind = "soap"
title = "Population register (SOAP)"
path = "persons.csv"
key = "personal_code"
"""


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_demo_data(
    out_dir: str | Path,
    *,
    seed: int = DEFAULT_SEED,
    persons: int = DEFAULT_PERSONS,
    companies: int = DEFAULT_COMPANIES,
) -> DemoData:
    """Write ``registries.db``, ``persons.csv``, ``companies.csv`` and ``adapters.toml`` into ``out_dir``.

    Existing files are replaced (each atomically), so running it twice gives the same result.

    Raises:
        ConfigError: bad counts, or the directory cannot be written.
    """
    data = generate(seed=seed, persons=persons, companies=companies)
    out = Path(out_dir)
    paths = DemoData(
        database=out / "registries.db",
        persons_csv=out / "persons.csv",
        companies_csv=out / "companies.csv",
        config=out / "adapters.toml",
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp_db = out / ".registries.db.tmp"
        tmp_db.unlink(missing_ok=True)
        with sqlite3.connect(tmp_db) as conn:
            conn.executescript(_SCHEMA)
            conn.executemany(
                "INSERT INTO persons VALUES (?, ?, ?, ?, ?, ?)",
                [tuple(_sql_value(p[c]) for c in PERSON_COLUMNS) for p in data.persons],
            )
            conn.executemany(
                "INSERT INTO companies VALUES (?, ?, ?, ?, ?, ?)",
                [tuple(_sql_value(c[k]) for k in COMPANY_COLUMNS) for c in data.companies],
            )
        conn.close()
        os.replace(tmp_db, paths.database)
        _write_atomic(paths.persons_csv, to_csv(data.persons, PERSON_COLUMNS))
        _write_atomic(paths.companies_csv, to_csv(data.companies, COMPANY_COLUMNS))
        _write_atomic(paths.config, _CONFIG.format(config=paths.config).encode("utf-8"))
    except (OSError, sqlite3.Error) as e:
        raise ConfigError(f"cannot write demo data to {out}: {e}") from e
    return paths


def _sql_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


def demo_adapters(data: DemoData) -> dict[str, ServiceAdapter]:
    """The demo's adapters over data written by :func:`write_demo_data`: ``persons`` and ``companies`` (SQL)
    and ``persons-file`` (the CSV through the file adapter). Not started yet."""
    adapters: list[ServiceAdapter] = [
        SqlAdapter(
            name="persons",
            title="Population register",
            url=data.database_url,
            table="persons",
            filters=["first_name", "last_name", "sex", "date_of_birth", "municipality"],
        ),
        SqlAdapter(
            name="companies",
            title="Business register",
            url=data.database_url,
            table="companies",
            filters=["name", "legal_form", "founded", "status", "municipality"],
        ),
        FileAdapter(
            name="persons-file",
            title="Population register (CSV)",
            path=data.persons_csv,
            key="personal_code",
            columns=[
                ColumnSpec(name=c, type="date" if c == "date_of_birth" else None) for c in PERSON_COLUMNS
            ],
        ),
        SoapPersonsAdapter(name="persons-soap", path=data.persons_csv, key="personal_code", columns=PERSON_COLUMNS),
    ]
    return {a.name: a for a in adapters}
