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


def _devices_toml(tmp_path: Path, body: str) -> Path:
    f = tmp_path / "devices.toml"
    f.write_text(body)
    return f


def test_pkcs11_devices_tables_and_the_single_device_keys(tmp_path: Path) -> None:
    from gateway.settings import LEGACY_DEVICE_NAME, pkcs11_devices

    f = _devices_toml(tmp_path, (
        '[server]\npkcs11_library = "/lib/a.so"\npkcs11_token_label = "A"\npkcs11_pin_env = "PA"\n'
        '[[server.pkcs11]]\nname = "hsm2"\nlibrary = "/lib/a.so"\ntoken_label = "B"\npin_file = "/p"\nsessions = 3\n'
    ))
    devices = pkcs11_devices(load_settings(f).server)
    assert [(d.name, d.token_label, d.sessions) for d in devices] == [(LEGACY_DEVICE_NAME, "A", 2), ("hsm2", "B", 3)]
    assert pkcs11_devices(load_settings().server) == ()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[server.pkcs11]]\nname = "a"\nlibrary = "/l"\ntoken_label = "A"\npin_env = "P"\n'
         '[[server.pkcs11]]\nname = "a"\nlibrary = "/l"\ntoken_label = "B"\npin_env = "P"\n',
         "the device name 'a' is used twice"),
        ('[server]\npkcs11_library = "/l"\npkcs11_token_label = "A"\npkcs11_pin_env = "P"\n'
         '[[server.pkcs11]]\nname = "device"\nlibrary = "/l"\ntoken_label = "B"\npin_env = "P"\n',
         "the device name 'device' is used twice"),
        ('[[server.pkcs11]]\nname = "a"\nlibrary = "/l"\ntoken_label = "A"\n',
         "[[server.pkcs11]] number 1 (device 'a'): no PIN source; set pin_file or pin_env"),
        ('[server]\npkcs11_library = "/l"\npkcs11_token_label = "A"\n',
         "no PIN source; set pkcs11_pin_file or pkcs11_pin_env"),
        ('[[server.pkcs11]]\nname = "a"\nlibrary = "/l"\ntoken_label = "A"\npin_env = "P"\n'
         '[[server.pkcs11]]\nname = "b"\nlibrary = "/l"\ntoken_label = "A"\npin_env = "P"\n',
         "devices 'a' and 'b' are the same token 'A' of /l"),
        ('[[server.pkcs11]]\nlibrary = "/l"\ntoken_label = "A"\npin_env = "P"\n', "name is empty"),
        ('[[server.pkcs11]]\nname = "a"\ntoken_label = "A"\npin_env = "P"\n', "the library path is empty"),
        ('[[server.pkcs11]]\nname = "a"\nlibrary = "/l"\npin_env = "P"\n', "the token label is empty"),
        ('[[server.pkcs11]]\nname = "a"\nlibrary = "/l"\ntoken_label = "A"\npin_env = "P"\npin_file = "/p"\n',
         "both pin_file and pin_env are set"),
        ('[[server.pkcs11]]\nname = "a"\nlibrary = "/l"\ntoken_label = "A"\npin_env = "P"\nsessions = 0\n',
         "sessions is 0; it must be between 1 and 64"),
    ],
)
def test_pkcs11_devices_bad_settings(tmp_path: Path, body: str, message: str) -> None:
    from gateway.settings import pkcs11_devices

    with pytest.raises(ConfigError) as e:
        pkcs11_devices(load_settings(_devices_toml(tmp_path, body)).server)
    assert message in e.value.message, e.value.message


@pytest.mark.parametrize(
    ("body", "env", "message"),
    [
        ('[server]\npkcs11 = [1]\n', {}, "expected an array of tables"),
        ('[[server.pkcs11]]\nname = "a"\nlabel = "x"\n', {}, "key 'label' is not a known setting"),
        ("", {"GATEWAY_SERVER__PKCS11": "x"}, "an array of tables cannot be set from the environment"),
    ],
)
def test_pkcs11_tables_bad_shape(tmp_path: Path, body: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(_devices_toml(tmp_path, body), env)
    assert message in e.value.message, e.value.message
