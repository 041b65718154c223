"""``gateway central witness-policy ...`` in real subprocesses: set, list (table and JSON), refusals with exit 1,
remove; every change and refusal in the central audit log as ``cli:<OS user>``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.admin.schema import Page
from gateway.admin.store import AdminStore
from gateway.storage.db import make_engine
from gateway.trust.cosignature import WitnessKey

pytestmark = pytest.mark.e2e

CLI = ["-c", "import sys; from gateway.cli import main; sys.exit(main())"]
TIMEOUT = 60  # seconds for one CLI call; they take about two
K2 = WitnessKey.of_private_key("DEV/GOV/1002/ss2/witness", ed25519.Ed25519PrivateKey.generate())
K3 = WitnessKey.of_private_key("DEV/GOV/1003/ss3/witness", ed25519.Ed25519PrivateKey.generate())
W2 = f"{K2.vkey},https://127.0.0.1:5502/witness,DEV/GOV/1002/ss2"
W3 = f"{K3.vkey},DEV/GOV/1003/ss3"  # the default URL: https://<its registered address>/witness


def gateway(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run([sys.executable, *CLI, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)


def ok(*args: str, cwd: Path) -> str:
    res = gateway(*args, cwd=cwd)
    assert res.returncode == 0, f"gateway {' '.join(args)} exited {res.returncode}:\n{res.stderr}"
    return res.stdout


async def test_set_list_refuse_remove_audited(tmp_path: Path) -> None:
    db = tmp_path / "central.db"
    conf = tmp_path / "central.toml"
    conf.write_text(f'[central]\ndatabase_url = "sqlite+aiosqlite:///{db}"\nkey_dir = "{tmp_path / "keys"}"\n')
    c = ["-c", str(conf), "central"]
    ok(*c, "init", cwd=tmp_path)
    for n in (1, 2, 3):
        ok(*c, "member", "add", f"DEV/GOV/100{n}", "--name", f"Agency {n}", cwd=tmp_path)
        ok(*c, "server", "add", f"DEV/GOV/100{n}/ss{n}", "--address", f"127.0.0.1:550{n}", cwd=tmp_path)
    # (1) set: two witnesses, quorum 2
    out = ok(*c, "witness-policy", "set", "--server", "DEV/GOV/1001/ss1", "--quorum", "2", "--witness", W3,
             "--witness", W2, cwd=tmp_path)
    assert out == (f"witness policy of DEV/GOV/1001/ss1 set: quorum 2 of 2 ({K2.name}, {K3.name}); published from "
                   "the next publication on\n")
    # (2) list as a table and as JSON
    assert ok(*c, "witness-policy", "list", cwd=tmp_path).splitlines() == [
        "DEV/GOV/1001/ss1\tquorum 2 of 2",
        f"  witness {K2.name}\thttps://127.0.0.1:5502/witness\ton DEV/GOV/1002/ss2\t{K2.vkey}",
        f"  witness {K3.name}\thttps://127.0.0.1:5503/witness\ton DEV/GOV/1003/ss3\t{K3.vkey}"]
    listed = json.loads(ok(*c, "witness-policy", "list", "--json", cwd=tmp_path))
    assert listed == [{"server": "DEV/GOV/1001/ss1", "quorum": 2, "witnesses": [
        {"name": K2.name, "key_id": K2.key_id.hex(), "vkey": K2.vkey, "url": "https://127.0.0.1:5502/witness",
         "server": "DEV/GOV/1002/ss2"},
        {"name": K3.name, "key_id": K3.key_id.hex(), "vkey": K3.vkey, "url": "https://127.0.0.1:5503/witness",
         "server": "DEV/GOV/1003/ss3"}]}]
    # (3) refusals exit 1 with the precise message
    res = gateway(*c, "witness-policy", "set", "--server", "DEV/GOV/1001/ss1", "--quorum", "1", "--witness",
                  K2.vkey, cwd=tmp_path)
    assert res.returncode == 1 and f"--witness {K2.vkey!r} is not VKEY,URL,SERVER" in res.stderr
    res = gateway(*c, "witness-policy", "set", "--server", "DEV/GOV/1001/ss1", "--quorum", "3", "--witness", W2,
                  cwd=tmp_path)
    assert res.returncode == 1 and "the quorum 3 of the witness policy of DEV/GOV/1001/ss1 is more than the 1" in (
        res.stderr)
    res = gateway(*c, "server", "remove", "DEV/GOV/1002/ss2", cwd=tmp_path)
    assert res.returncode == 1 and "Client.Conflict: security server DEV/GOV/1002/ss2 cannot be removed" in res.stderr
    # (4) publish: the published configuration carries the policy
    ok(*c, "publish", cwd=tmp_path)
    shown = json.loads(ok(*c, "show", cwd=tmp_path))
    assert shown["witness_policies"][0]["server"] == "DEV/GOV/1001/ss1"
    assert [w["vkey"] for w in shown["witness_policies"][0]["witnesses"]] == [K2.vkey, K3.vkey]
    # (5) remove; a second removal is a 404
    assert ok(*c, "witness-policy", "remove", "--server", "DEV/GOV/1001/ss1", cwd=tmp_path) == (
        "witness policy of DEV/GOV/1001/ss1 removed; published from the next publication on\n")
    res = gateway(*c, "witness-policy", "remove", "--server", "DEV/GOV/1001/ss1", cwd=tmp_path)
    assert res.returncode == 1 and "Client.NotFound: security server DEV/GOV/1001/ss1 has no witness policy" in (
        res.stderr)
    assert ok(*c, "witness-policy", "list", cwd=tmp_path) == ""
    # (6) the audit log: each change and refusal, as cli:<OS user>, newest first; listings are not audited
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    try:
        entries, _ = await AdminStore(engine).list_audit(Page(limit=100))
    finally:
        await engine.dispose()
    mine = [(e.path, e.status, e.details["target"]) for e in entries if "witness-policy" in (e.path or "")]
    assert mine == [
        ("gateway central witness-policy remove", 404, "DEV/GOV/1001/ss1"),
        ("gateway central witness-policy remove", 200, "DEV/GOV/1001/ss1"),
        ("gateway central witness-policy set", 400, "DEV/GOV/1001/ss1"),
        ("gateway central witness-policy set", 400, "DEV/GOV/1001/ss1"),
        ("gateway central witness-policy set", 200, "DEV/GOV/1001/ss1")]
    assert all(e.actor.startswith("cli:") for e in entries if "witness-policy" in (e.path or ""))
