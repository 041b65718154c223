"""``gateway server backup`` / ``restore`` (gateway/server/backup.py) as real processes: the provider's server of a
demo federation (software token, admin user, services and access rights) is backed up with and without a
passphrase, stopped, and restored into a fresh directory and a fresh database (SQLite and PostgreSQL); the
restored server starts as ``gateway server serve`` on the registered port and answers the consumer again, with
an empty message log. A wrong passphrase, a damaged archive and a restore over an existing server are refused
with their own messages."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import struct
import zipfile
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
from process_kit import clean_env, exchange, logged, run_cli, serve_process, wait_until

from gateway.admin import models as admin_models
from gateway.dev.demo import start_federation, write_settings
from gateway.settings import load_settings
from gateway.storage.db import make_engine

pytestmark = pytest.mark.e2e

PASSPHRASE = "correct horse battery staple"
SS2 = "DEV/GOV/1002/ss2"


def _env(**extra: str) -> dict[str, str]:
    return clean_env(BACKUP_PW=PASSPHRASE, WRONG_PW="not the passphrase", **extra)


async def _cli(*args: str | Path) -> tuple[int, str, str]:
    return await run_cli(*map(str, args), env=_env())


def _flip(src: Path, dst: Path, at: float) -> Path:
    data = bytearray(src.read_bytes())
    data[int(len(data) * at)] ^= 0x20
    dst.write_bytes(bytes(data))
    return dst


def _flip_member(src: Path, dst: Path, name: str) -> Path:
    """A copy of the ZIP ``src`` with one bit changed in the middle of member ``name``'s stored bytes (a flip in
    a header field that nothing reads, such as a time stamp, would leave the content intact)."""
    data = bytearray(src.read_bytes())
    info = zipfile.ZipFile(src).getinfo(name)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0x20
    dst.write_bytes(bytes(data))
    return dst


async def test_backup_restore_round_trip_and_refusals(tmp_path: Path, database_url: str) -> None:
    fed = await start_federation(tmp_path / "demo", key_store="token")
    try:
        ss1, ss2 = fed.server("ss1"), fed.server("ss2")
        async with aiohttp.ClientSession() as http:
            before = await exchange(http, ss1.client_url)
            assert before is not None
        settings_file = tmp_path / "demo" / "ss2.toml"
        sealed, plain = tmp_path / "ss2.backup", tmp_path / "ss2-plain.zip"
        # (1) backups, encrypted and not, of the running server
        rc, out, err = await _cli("-c", settings_file, "server", "backup", "--out", sealed, "--passphrase-env",
                                  "BACKUP_PW")
        assert rc == 0, out + err
        assert out.startswith(f"backup of {SS2}: ") and "(encrypted)" in out
        rc, out, err = await _cli("-c", settings_file, "server", "backup", "--out", plain)
        assert rc == 0, out + err
        assert (sealed.stat().st_mode & 0o777, plain.stat().st_mode & 0o777) == (0o600, 0o600)
        names = zipfile.ZipFile(plain).namelist()
        assert {"manifest.json", "settings.toml", "database.json", "state/token/token.json"} <= set(names)
        assert not [n for n in names if n.endswith((".db", ".pin", ".lock")) or "globalconf" in n]
        assert b"sc_clients" in zipfile.ZipFile(plain).read("database.json")
        assert not sealed.read_bytes().startswith(b"PK")  # nothing of the ZIP in clear
        port = int(ss2.server_address.rsplit(":", 1)[1])
        await ss2.stop()

        # (2) the fresh machine: its own directory and database, the PIN handed over apart, the registered port
        new = tmp_path / "fresh"
        new.mkdir()
        old = load_settings(str(settings_file), {})
        pin = new / "token.pin"
        shutil.copy(old.server.token_pin_file, pin)
        server = dataclasses.replace(
            old.server, state_dir=str(new / "state"), token_dir=str(new / "state" / "token"),
            token_pin_file=str(pin), database_url=database_url, server_port=port, client_port=0,
            client_https_port=-1, admin_port=0,
        )
        globalconf = dataclasses.replace(old.globalconf, cache_dir=str(new / "globalconf"))
        new_settings = new / "ss2.toml"
        write_settings(new_settings, dataclasses.replace(old, server=server, globalconf=globalconf))

        # (3) refusals, each with its message, and nothing written
        cases = [
            ((sealed,), "the backup is encrypted: give its passphrase"),
            ((sealed, "--passphrase-env", "WRONG_PW"), "wrong passphrase for this backup"),
            ((_flip(sealed, tmp_path / "damaged.backup", 0.7), "--passphrase-env", "BACKUP_PW"),
             "the passphrase is right but the content fails its authentication tag"),
            ((_flip_member(plain, tmp_path / "damaged.zip", "database.json"),), "is damaged"),
            ((tmp_path / "demo" / "anchor.json",), "is not a gateway server backup"),
        ]
        if database_url.startswith("sqlite"):  # all refused before the database is opened: once is enough
            results = await asyncio.gather(*(_cli("-c", new_settings, "server", "restore", *a) for a, _ in cases))
            for (args, message), (rc, out, err) in zip(cases, results, strict=True):
                assert rc == 1 and message in err, (args, out, err)
                assert "Traceback" not in err
        assert not (new / "state").exists()

        # (4) the restore, then again without and with --force
        rc, out, err = await _cli("-c", new_settings, "server", "restore", sealed, "--passphrase-env", "BACKUP_PW",
                                  "--settings-out", new / "from-backup.toml")
        assert rc == 0, out + err
        assert out.startswith(f"restored {SS2}: ")
        assert (new / "from-backup.toml").read_bytes() == settings_file.read_bytes()
        assert (new / "state" / "token" / "token.json").stat().st_mode & 0o077 == 0
        rc, out, err = await _cli("-c", new_settings, "server", "restore", plain)
        assert rc == 1 and "the target holds a security server already: files such as " in err, err
        assert "configuration (" in err and "--force" in err
        rc, out, err = await _cli("-c", new_settings, "server", "restore", plain, "--force")
        assert rc == 0, out + err

        # (5) the restored server serves the consumer again; its message log starts empty
        async with serve_process(new_settings, tmp_path / "restored.log", env=_env()) as (_, line):
            assert line.startswith(f"security server {SS2}: ") and f"peers 127.0.0.1:{port}" in line
            async with aiohttp.ClientSession() as http:
                after: list[str] = []

                async def served() -> bool:
                    rid = await exchange(http, ss1.client_url)
                    after.extend([rid] if rid else [])
                    return rid is not None

                await wait_until(served, timeout=30, what="an exchange through the restored ss2")
            records = await logged(database_url, [SS2])
            assert set(records[SS2]) == set(after) and before not in records[SS2]
        engine = make_engine(database_url)
        try:
            async with engine.connect() as conn:
                users = (await conn.execute(sa.select(admin_models.users.c.username))).scalars().all()
        finally:
            await engine.dispose()
        assert users == ["admin"]
    finally:
        await fed.close()
