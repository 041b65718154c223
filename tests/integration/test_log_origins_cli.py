"""``gateway log origins``, ``export --all-origins`` and ``match`` of directories: what they list, and every bad
input refused with a precise error (in-process CLI on a SQLite message log holding several origins)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_messagelog_store import rec

from gateway.cli import main
from gateway.messagelog.store import SqlMessageLogStore, migrate_messagelog
from gateway.storage.db import make_engine

pytestmark = pytest.mark.integration

SERVER = "DEV/GOV/1002/ss2"
ORIGINS = [SERVER, f"{SERVER}/1", f"{SERVER}/node2", f"{SERVER}/node2/3"]


def settings(tmp: Path, **server: str) -> Path:
    path = tmp / "ss2.toml"
    lines = ["[server]", f'id = "{SERVER}"', f'database_url = "sqlite+aiosqlite:///{tmp / "ss2.db"}"']
    lines += [f'{k} = "{v}"' for k, v in server.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def fill(tmp: Path) -> None:
    """Records of the four origins of ss2, and of another server and of an origin outside the scheme."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp / 'ss2.db'}")
    await migrate_messagelog(engine)
    store = SqlMessageLogStore(engine)
    try:
        for i, origin in enumerate([*ORIGINS, "DEV/GOV/1003/ss3", f"{SERVER}/Node2"]):
            for j in range(i + 1):
                await store.append(rec(10 * i + j, origin=origin))
    finally:
        await store.close()
        await engine.dispose()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_origins_lists_every_origin_of_the_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(fill(tmp_path))
    rc, out, err = run(capsys, "-c", str(settings(tmp_path)), "log", "origins")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["server"] == SERVER
    assert [(o["origin"], o["node"], o["worker"], o["records"], o["checkpoint"]) for o in doc["origins"]] == [
        (SERVER, "", 0, 1, None), (f"{SERVER}/1", "", 1, 2, None), (f"{SERVER}/node2", "node2", 0, 3, None),
        (f"{SERVER}/node2/3", "node2", 3, 4, None)]


def test_default_origin_follows_the_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(fill(tmp_path))
    rc, out, err = run(capsys, "-c", str(settings(tmp_path, node="node2")), "log", "checkpoints")
    assert rc == 0, err
    assert json.loads(out)["origin"] == f"{SERVER}/node2" and json.loads(out)["records"] == 3


@pytest.mark.parametrize(("extra", "message"), [
    (["--origin", SERVER], "--origin and --all-origins exclude each other"),
    (["--start", "0"], "--start and --end are sequence numbers of one origin"),
    (["--end", "1"], "--start and --end are sequence numbers of one origin"),
])
def test_export_all_origins_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str,
) -> None:
    rc, _out, err = run(capsys, "-c", str(settings(tmp_path)), "log", "export", "--all-origins",
                        "--out", str(tmp_path / "out"), *extra)
    assert rc == 1 and message in err, err


def test_export_all_origins_out_must_be_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("x")
    rc, _out, err = run(capsys, "-c", str(settings(tmp_path)), "log", "export", "--all-origins",
                        "--out", str(tmp_path / "a-file"))
    assert rc == 1 and "with --all-origins it names a directory, and this is a file" in err, err


def test_export_all_origins_of_an_empty_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _out, err = run(capsys, "-c", str(settings(tmp_path)), "log", "export", "--all-origins",
                        "--out", str(tmp_path / "out"))
    assert rc == 1 and f"the message log holds no records of {SERVER}" in err, err


def test_export_all_origins_needs_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(fill(tmp_path))
    rc, _out, err = run(capsys, "-c", str(settings(tmp_path)), "log", "export", "--all-origins",
                        "--out", str(tmp_path / "out"))
    assert rc == 1 and f"records up to 0 of {SERVER} are not covered by a checkpoint yet" in err, err


def test_export_all_origins_time_range_without_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    asyncio.run(fill(tmp_path))
    since = datetime(2030, 1, 1, tzinfo=UTC).isoformat()
    rc, _out, err = run(capsys, "-c", str(settings(tmp_path)), "log", "export", "--all-origins",
                        "--out", str(tmp_path / "out"), "--from", since)
    assert rc == 1 and f"no log origin of {SERVER} has records created in the given time range" in err, err
    assert err.count("no archive for it") == len(ORIGINS)


def test_match_of_an_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    rc, _out, err = run(capsys, "log", "match", str(tmp_path / "empty"), str(tmp_path / "empty"))
    assert rc == 1 and "holds no archive (*.zip)" in err, err


def test_bad_node_name_is_a_configuration_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _out, err = run(capsys, "-c", str(settings(tmp_path, node="Node 2")), "log", "checkpoints")
    assert rc == 2 and "[server] node 'Node 2' is not a node name" in err, err
