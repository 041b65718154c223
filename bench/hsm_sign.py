"""Signing cost: a key on a PKCS#11 device (SoftHSM2) against the software token's key, in one process.

    .venv/bin/python bench/hsm_sign.py [--duration 3] [--concurrency 1,16] [--sessions 2] [--json FILE]

What runs: a fresh SoftHSM2 token in a temporary directory (``softhsm2-util``, Debian's softhsm2), a P-256
and an RSA 2048 signing key generated on it, and the same key types in memory as the software token hands them
to the server (:class:`gateway.protocol.signatures.KeySigner`). For each key and concurrency level, that many
tasks sign 200-byte signature bases in a closed loop for ``--duration`` seconds through
:func:`gateway.protocol.signatures.sign_value`, as the proxies do: the device in its worker threads (calls
serialised per library, docs/tokens.md "Signing cost"), the software key at once on the event loop. A ticker
task counts how often the loop turned meanwhile (a loop held by signing turns rarely). Prints signatures/s,
latency percentiles and loop turns; asserts nothing; never part of the test run. Short runs: the machine is
shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import hsm_kit
from pkihelpers import make_pki

from gateway.identifiers import SecurityServerId
from gateway.protocol import signatures
from gateway.protocol.signatures import KeySigner, Signer
from gateway.token import model
from gateway.token.pkcs11 import Pkcs11Token
from gateway.trust import certprofile, keys

SERVER = SecurityServerId.parse("DEV/GOV/1001/ss1")


async def run(signer: Signer, concurrency: int, duration: float) -> dict[str, Any]:
    data = os.urandom(200)
    latencies: list[float] = []
    turns = 0
    stop = time.perf_counter() + duration

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async def worker() -> None:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            await signatures.sign_value(signer, data)
            latencies.append(time.perf_counter() - t)

    tick = asyncio.create_task(ticker())
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    tick.cancel()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
    return {
        "signatures_per_s": round(len(latencies) / duration),
        "p50_ms": round(q[49] * 1e3, 3),
        "p99_ms": round(q[98] * 1e3, 3),
        "loop_turns_per_s": round(turns / duration),
    }


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    ap.add_argument("--concurrency", default="1,16", help="comma-separated numbers of signing tasks")
    ap.add_argument("--sessions", type=int, default=2, help="[server] pkcs11_sessions for the device")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        hsm = hsm_kit.setup(Path(tmp) / "softhsm")
        device = hsm_kit.new_device(hsm)
        pki = make_pki(Path(tmp) / "pki")
        token = Pkcs11Token(device.library, device.label, sessions=args.sessions)
        await token.login(hsm_kit.USER_PIN)
        now = datetime.now(UTC)
        results: list[dict[str, Any]] = []
        try:
            for key_type in ("ec-p256", "rsa-2048"):
                key = await token.generate_key("sign", key_type=key_type, now=now)  # type: ignore[arg-type]
                cert = pki.ca.issue(
                    await token.csr(key.id, server_id=SERVER), kind="sign", expected_identity=SERVER.owner, now=now
                )
                entry = await token.import_cert(
                    keys.cert_pem(cert).encode(), server_id=SERVER, ca_for=model.ca_finder([pki.ca_cert]), now=now
                )
                for other in (await token.state()).keys:
                    for c in other.certs:
                        if c.active:
                            await token.deactivate(c.sha256)
                await token.activate(entry.sha256)
                device_signer = await token.signer(now=now)
                soft_key = keys.generate_private_key(key_type)  # type: ignore[arg-type]
                soft_cert = pki.ca.issue(
                    certprofile.build_csr(soft_key, SERVER.owner, kind="sign"),
                    kind="sign",
                    expected_identity=SERVER.owner,
                    now=now,
                )
                soft_signer = KeySigner(key=soft_key, cert=soft_cert)
                for name, signer in (("softhsm2", device_signer), ("software", soft_signer)):
                    for c in levels:
                        r = {"token": name, "key": key_type, "concurrency": c, **await run(signer, c, args.duration)}
                        results.append(r)
                        print(json.dumps(r), flush=True)
        finally:
            token.close()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    if subprocess.run(["which", "softhsm2-util"], capture_output=True).returncode != 0:
        sys.exit("softhsm2-util is missing: apt-get install softhsm2")
    sys.exit(asyncio.run(main()))
