"""Settings: defaults, TOML, environment, and precise errors that name the file and key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.toml"


def test_defaults_without_file() -> None:
    assert load_settings() == Settings()


def test_toml_then_environment(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[central]\nport = 4100\ninstance = "EE"\n')
    s = load_settings(f, {"GATEWAY_CENTRAL__PORT": "4200", "UNRELATED": "x"})
    assert s.central.port == 4200  # the environment wins over the file
    assert s.central.instance == "EE"


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ("[central]\nprot = 1\n", {}, "key 'prot' is not a known setting"),
        ("[centrall]\n", {}, "key 'centrall' is not a known setting"),
        ('[central]\nport = "x"\n', {}, "key 'port': expected an integer"),
        ("[central]\nport = true\n", {}, "key 'port': expected an integer"),
        ("central = 3\n", {}, "key 'central': expected a table"),
        ("[logging]\nformat = 'yaml'\n", {}, "'yaml' is not one of"),
        ("[central\n", {}, "is not valid TOML"),
        ("", {"GATEWAY_CENTRAL__PORT": "many"}, "environment (GATEWAY_SECTION__KEY) [central]: key 'port'"),
        ("", {"GATEWAY_NOPE__X": "1"}, "key 'nope' is not a known setting"),
    ],
)
def test_bad_settings_name_file_and_key(tmp_path: Path, content: str, env: dict[str, str], message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(f, env)
    assert message in str(info.value)
    if not env:
        assert str(f) in str(info.value)
    assert info.value.exit_code == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")


def test_example_file_documents_every_key() -> None:
    """config/example.toml loads, and names every section and key of the settings tree."""
    data = tomllib.loads(EXAMPLE.read_text())
    load_settings(EXAMPLE)
    for section in dataclasses.fields(Settings):
        assert section.name in data, f"[{section.name}] missing from {EXAMPLE}"
        sub = getattr(Settings(), section.name)
        for f in dataclasses.fields(sub):
            assert f.name in data[section.name], f"[{section.name}] {f.name} missing from {EXAMPLE}"
