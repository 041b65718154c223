"""The start of the ``gateway`` command line: building the parser imports nothing heavy, every lazily named
handler exists, the parser's copies of choices match their sources, and output into a closed pipe ends
quietly. Each import check runs in a fresh interpreter (a subprocess), since this one has imported
everything already."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import EXIT_BROKEN_PIPE, build_parser
from gateway.cli import choices as cli_choices
from gateway.cli.common import LazyHandler

# What `gateway --help` used to load (about 1 s and 90 MB); none of it is needed to build the parser.
HEAVY = ("sqlalchemy", "alembic", "aiohttp", "cryptography", "structlog", "asyncpg", "aiosqlite")
TIMEOUT = 60  # seconds for one subprocess
CLI = ["-c", "import sys; from gateway.cli import main; sys.exit(main())"]  # as the console script

# In a fresh interpreter: `gateway ARGS --help` for every parser under the top-level command given in
# argv[1] ("" for the top level alone), then the heavy top-level packages that got imported, as JSON.
HELP_ALL = r"""
import argparse, contextlib, io, json, sys
import gateway.cli as cli

def paths(parser, prefix):
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from paths(sub, [*prefix, name])

top = sys.argv[1]
for path in paths(cli.build_parser(), []):
    if (path[:1] == [top]) if top else not path:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            cli.main([*path, "--help"])
heavy = set(sys.argv[2].split(","))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}


def _top_level_commands() -> list[str]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """(path, handler) of every parser that runs something."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, parser._defaults.get("handler"))]
    return [leaf for a in subs for name, p in a.choices.items() for leaf in _leaves(p, (*path, name))]


@pytest.mark.parametrize("top", ["", *_top_level_commands()])
def test_help_imports_no_database_http_crypto_or_logging_library(top: str) -> None:
    res = subprocess.run(
        [sys.executable, "-c", HELP_ALL, top, ",".join(HEAVY)], env=_env(), capture_output=True, text=True,
        timeout=TIMEOUT, check=False,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []


def test_building_the_parser_imports_no_heavy_module() -> None:
    code = (
        "import sys, gateway.cli; gateway.cli.build_parser(); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {set(HEAVY)!r}))"
    )
    res = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True,
                         timeout=TIMEOUT, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "[]\n"


def test_every_command_has_a_lazy_handler_that_resolves_to_a_function() -> None:
    leaves = _leaves(build_parser())
    assert len(leaves) > 90  # all of them, not an empty walk
    for path, handler in leaves:
        assert isinstance(handler, LazyHandler), path
        assert callable(handler.resolve()), path


@pytest.mark.parametrize(
    ("copy", "source", "name"),
    [
        ("KEY_TYPES", "gateway.trust.keys", "KEY_TYPES"),
        ("CERT_KINDS", "gateway.trust.certprofile", "CERT_KINDS"),
        ("REASONS", "gateway.dev.pki.ca", "REASONS"),
        ("CLIENT_STATUSES", "gateway.serverconf", "CLIENT_STATUSES"),
        ("IS_AUTH_MODES", "gateway.serverconf", "IS_AUTH_MODES"),
        ("DEMO_SEED", "adapters.demo_data", "DEFAULT_SEED"),
        ("DEMO_PERSONS", "adapters.demo_data", "DEFAULT_PERSONS"),
        ("DEMO_COMPANIES", "adapters.demo_data", "DEFAULT_COMPANIES"),
    ],
)
def test_the_parsers_copy_of_a_choice_list_equals_its_source(copy: str, source: str, name: str) -> None:
    assert getattr(cli_choices, copy) == getattr(importlib.import_module(source), name)


# ---- output into a closed pipe ------------------------------------------------------------------------------


def _central_database(tmp_path: Path) -> list[str]:
    """A settings file for an initialised central database with a few members; the CLI arguments naming it."""
    conf = tmp_path / "central.toml"
    conf.write_text(f'[central]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "central.db"}"\n'
                    f'key_dir = "{tmp_path / "keys"}"\n')
    for args in (["init"], *(["member", "add", f"DEV/GOV/{n}", "--name", f"Agency {n}"] for n in range(3))):
        res = subprocess.run([sys.executable, *CLI, "-c", str(conf), "central", *args], env=_env(),
                             capture_output=True, text=True, timeout=TIMEOUT, check=False)
        assert res.returncode == 0, res.stderr
    return ["-c", str(conf)]


def _pipe_env(*, unbuffered: bool) -> dict[str, str]:
    """The environment for a command whose standard output is a pipe: block-buffered as for a user, or with
    ``PYTHONUNBUFFERED`` (as in containers), where every write meets the closed pipe at once."""
    env = {k: v for k, v in _env().items() if k != "PYTHONUNBUFFERED"}
    return {**env, "PYTHONUNBUFFERED": "1"} if unbuffered else env


@pytest.mark.parametrize("unbuffered", [False, True])
@pytest.mark.parametrize(
    ("argv", "exit_code"),
    [
        # argparse prints, then SystemExit; unbuffered, argparse itself ignores the failed write
        (["--help"], {False: EXIT_BROKEN_PIPE, True: 0}),
        (["central", "registration", "--help"], {False: EXIT_BROKEN_PIPE, True: 0}),
        (["admin", "openapi"], {False: EXIT_BROKEN_PIPE, True: EXIT_BROKEN_PIPE}),  # a handler's print()
        # print(flush=True) inside asyncio.run, with a database open
        (["central", "member", "list"], {False: EXIT_BROKEN_PIPE, True: EXIT_BROKEN_PIPE}),
    ],
)
def test_output_into_a_closed_pipe_ends_quietly(
    argv: list[str], exit_code: dict[bool, int], unbuffered: bool, tmp_path: Path
) -> None:
    prefix = _central_database(tmp_path) if argv[0] == "central" and "--help" not in argv else []
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head -0` would: every write of the command meets a closed pipe
    try:
        proc = subprocess.Popen([sys.executable, *CLI, *prefix, *argv], stdout=write_end, stderr=subprocess.PIPE,
                                env=_pipe_env(unbuffered=unbuffered), text=True)
    finally:
        os.close(write_end)
    with proc:
        _, stderr = proc.communicate(timeout=TIMEOUT)
    assert "Traceback" not in stderr
    assert "BrokenPipe" not in stderr
    assert "Exception ignored" not in stderr
    assert proc.returncode == exit_code[unbuffered]


@pytest.mark.parametrize("unbuffered", [False, True])
def test_output_longer_than_the_pipe_ends_quietly_when_the_reader_stops_early(unbuffered: bool) -> None:
    # `gateway admin openapi | head -1`: the document (about 250 KB) is longer than a pipe holds.
    with subprocess.Popen([sys.executable, *CLI, "admin", "openapi"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=_pipe_env(unbuffered=unbuffered)) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        proc.wait(timeout=TIMEOUT)
    assert first == b"{\n"
    assert "Traceback" not in stderr
    assert "Exception ignored" not in stderr
    assert proc.returncode == EXIT_BROKEN_PIPE
