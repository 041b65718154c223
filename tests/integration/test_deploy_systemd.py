"""The systemd units of deploy/systemd/ pass ``systemd-analyze verify`` and score at most 2.0 in
``systemd-analyze security`` (lower is better; 10 is fully exposed).

How ``verify`` behaves here: this container runs no systemd as PID 1, yet ``verify`` works offline on unit
files. It checks, among the rest, that each ``ExecStart`` command exists and is executable; the units name
``/opt/gateway/venv/bin/gateway``, the deployment's path (deploy/README.md), which does not exist here. So the
test checks a copy whose ``ExecStart`` names the ``gateway`` console script of the environment running the test
(what ``pip install`` made, as in the deployment), and shows with the unchanged file that ``verify`` really does
look at the command. A template (``gateway-server@.service``) is verified as an instance, ``gateway-server@ss1``.
``security --offline=yes`` scores the unit files as written, without a running manager.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

UNITS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
UNITS = sorted(p.name for p in UNITS_DIR.glob("*.service"))
DEPLOYED_GATEWAY = "/opt/gateway/venv/bin/gateway"
MAX_EXPOSURE = 2.0
ANALYZE = shutil.which("systemd-analyze")  # installed by scripts/test


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None, "systemd-analyze is missing: scripts/test installs Debian's systemd package"
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


def _copy_for_verify(unit: str, directory: Path, gateway: str) -> Path:
    text = (UNITS_DIR / unit).read_text()
    assert DEPLOYED_GATEWAY in text
    name = unit.replace("@.", "@ss1.")
    out = directory / name
    out.write_text(text.replace(DEPLOYED_GATEWAY, gateway))
    return out


def test_units_are_found() -> None:
    assert UNITS == ["gateway-adapters.service", "gateway-central.service", "gateway-server@.service"]


@pytest.mark.parametrize("unit", UNITS)
def test_verify_is_clean(unit: str, tmp_path: Path) -> None:
    gateway = str(Path(sys.executable).parent / "gateway")
    copy = _copy_for_verify(unit, tmp_path, gateway)
    r = _analyze("verify", str(copy))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    # the unchanged file: verify names the missing command, so the check above is not vacuous
    (tmp_path / "as-shipped").mkdir()
    shipped = _copy_for_verify(unit, tmp_path / "as-shipped", DEPLOYED_GATEWAY)
    r = _analyze("verify", str(shipped))
    assert r.returncode != 0 and f"Command {DEPLOYED_GATEWAY} is not executable" in r.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure_is_at_most_two(unit: str) -> None:
    r = _analyze("security", "--offline=yes", "--no-pager", str(UNITS_DIR / unit))
    assert r.returncode == 0, r.stderr
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", r.stdout)
    assert m is not None, r.stdout[-2000:]
    assert float(m.group(1)) <= MAX_EXPOSURE, r.stdout


@pytest.mark.parametrize("unit", UNITS)
def test_units_set_umask_notify_and_limits(unit: str) -> None:
    lines = set((UNITS_DIR / unit).read_text().splitlines())
    for directive in ("UMask=0077", "Type=notify", "NotifyAccess=main", "LimitNOFILE=65536", "CapabilityBoundingSet=",
                      "PrivateDevices=true", "SystemCallFilter=@system-service"):
        assert directive in lines, directive
