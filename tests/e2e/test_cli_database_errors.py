"""A database that a command cannot use is a configuration error: one line naming the setting, exit code 2.

Every command that opens ``[server] database_url`` or ``[central] database_url`` checks it with one connection
first (:func:`gateway.storage.db.open_database`), so an unreachable server or a malformed URL reads as the
operator's setting, never as a traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CLI = ["-c", "import sys; from gateway.cli import main; sys.exit(main())"]
TIMEOUT = 60  # seconds for one CLI call

COMMANDS = [
    ("server", ["serverconf", "client", "list"]),
    ("server", ["admin", "user", "list"]),
    ("server", ["log", "checkpoints"]),
    ("central", ["central", "member", "list"]),
]


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it) but not listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def gateway(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, *CLI, *args], cwd=cwd, env={**base, **env}, capture_output=True, text=True,
        timeout=TIMEOUT, check=False,
    )


@pytest.mark.parametrize(("section", "command"), COMMANDS, ids=[" ".join(c) for _, c in COMMANDS])
def test_unreachable_database_is_a_configuration_error(
    section: str, command: list[str], refusing_port: int, tmp_path: Path,
) -> None:
    variable = f"GATEWAY_{section.upper()}__DATABASE_URL"
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{refusing_port}/nothing"
    res = gateway(*command, env={variable: url}, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stdout == ""
    assert res.stderr.startswith(
        f"gateway: error: configuration error: environment variable {variable}: [{section}] key 'database_url': "
        f"cannot open database {url}: "
    ), res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(("section", "command"), COMMANDS, ids=[" ".join(c) for _, c in COMMANDS])
def test_malformed_database_url_is_a_configuration_error(section: str, command: list[str], tmp_path: Path) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[{section}]\ndatabase_url = "not a url"\n')
    res = gateway("-c", str(settings), *command, env={}, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(
        f"gateway: error: configuration error: settings file {settings}: [{section}] key 'database_url': "
        "database URL 'not a url' is malformed: "
    ), res.stderr
    assert "Traceback" not in res.stderr
