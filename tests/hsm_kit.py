"""SoftHSM2 tokens for tests: one SoftHSM2 configuration per test process, a fresh token per test.

SoftHSM2 reads ``SOFTHSM2_CONF`` when its library is first initialised in a process, so :func:`softhsm_conf`
points it at a temporary token directory once (session fixture); :func:`new_device` then initialises a token
with a label of its own there (``softhsm2-util --init-token``) and re-initialises the library so that it is
seen. :func:`remove` and :func:`restore` move a token's files away and back: to SoftHSM2 that is a device
that vanished and returned (its sessions and object handles fail, the slot list answers CKR_GENERAL_ERROR).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LIBRARY_CANDIDATES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
USER_PIN = "device-user-pin-1"
SO_PIN = "device-so-pin-12"


def library() -> str | None:
    return next((p for p in LIBRARY_CANDIDATES if os.path.exists(p)), None)


@dataclass(frozen=True)
class SoftHsm:
    conf: Path
    tokens: Path
    library: str


@dataclass(frozen=True)
class Device:
    label: str
    library: str
    hsm: SoftHsm


def setup(base: Path) -> SoftHsm:
    """Write a SoftHSM2 configuration under ``base`` and point this process (and its children) at it."""
    lib = library()
    if lib is None or shutil.which("softhsm2-util") is None:
        raise RuntimeError("SoftHSM2 is not installed (scripts/test installs Debian's softhsm2)")
    tokens = base / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    return SoftHsm(conf=conf, tokens=tokens, library=lib)


def new_device(hsm: SoftHsm, label: str | None = None) -> Device:
    """Initialise a fresh token (user PIN :data:`USER_PIN`) and make the loaded library see it."""
    from gateway.token.pkcs11 import _library

    label = label or f"t-{secrets.token_hex(4)}"
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", USER_PIN, "--so-pin", SO_PIN],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(hsm.conf)},
    )
    _library(hsm.library, reinitialize=True)
    return Device(label=label, library=hsm.library, hsm=hsm)


def _token_dir(device: Device) -> Path:
    for d in device.hsm.tokens.iterdir():
        conf = d / "token.object"
        if d.is_dir() and conf.exists() and device.label.encode() in conf.read_bytes():
            return d
    raise LookupError(device.label)


def remove(device: Device) -> Path:
    """Take the token away: its directory moved out of SoftHSM2's token directory, and a plain file in its
    place (SoftHSM2 would otherwise write a token it still holds in memory back there); returns where it went."""
    src = _token_dir(device)
    dst = device.hsm.tokens.parent / f"removed-{src.name}"
    src.rename(dst)
    src.write_bytes(b"")
    return dst


def restore(device: Device, moved: Path) -> None:
    place = device.hsm.tokens / moved.name.removeprefix("removed-")
    place.unlink()
    moved.rename(place)
