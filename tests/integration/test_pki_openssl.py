"""The development PKI's OCSP responder and TSA on loopback sockets, checked with the real openssl binary."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from pkihelpers import ThrowawayPki, make_cert, make_pki

from gateway.cli import main
from gateway.dev.pki.http import MAX_REQUEST_BYTES, PkiServers, start_pki_servers
from gateway.dev.pki.tsa import TSA_POLICY_OID
from gateway.errors import PeerError, TrustError
from gateway.trust import ocsp, timestamp
from gateway.trust.keys import generate_private_key
from gateway.trust.ocsp_fetch import fetch_ocsp, fetch_timestamp

pytestmark = pytest.mark.integration


async def run(*args: str | Path, cwd: Path | None = None) -> tuple[int, str]:
    """Run a command without blocking the loop; return its exit code and stdout+stderr."""
    proc = await asyncio.create_subprocess_exec(
        *map(str, args), cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


@pytest.fixture
def pki(tmp_path: Path) -> ThrowawayPki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
async def servers(pki: ThrowawayPki) -> AsyncIterator[PkiServers]:
    handle = await start_pki_servers(pki.ca, "127.0.0.1", 0, 0)
    yield handle
    await handle.close()


async def openssl_ocsp(pki: ThrowawayPki, cert_path: Path, url: str) -> tuple[int, str]:
    return await run(
        "openssl",
        "ocsp",
        "-issuer",
        pki.ca_cert_path,
        "-cert",
        cert_path,
        "-url",
        url,
        "-CAfile",
        pki.ca_cert_path,
        "-resp_text",
    )


async def test_openssl_ocsp_good_then_revoked(pki: ThrowawayPki, servers: PkiServers) -> None:
    issued = pki.issue_auth("DEV/GOV/1001/ss1")
    rc, out = await openssl_ocsp(pki, issued.cert_path, servers.ocsp_url)
    assert rc == 0, out
    assert "Response verify OK" in out
    assert f"{issued.cert_path}: good" in out
    assert "OCSP Nonce" in out and "WARNING: no nonce in response" not in out
    assert "Responder Id:" in out and "Test CA OCSP Responder" in out  # the delegated responder's certificate

    pki.revoke(issued, reason="keyCompromise")
    rc, out = await openssl_ocsp(pki, issued.cert_path, servers.ocsp_url)
    assert rc == 0, out
    assert "Response verify OK" in out
    assert f"{issued.cert_path}: revoked" in out
    assert "Reason: keyCompromise" in out and "Revocation Time:" in out


async def test_openssl_ocsp_unknown_serial_and_foreign_issuer(
    pki: ThrowawayPki, servers: PkiServers, tmp_path: Path
) -> None:
    # a certificate made with the CA's key that the CA never recorded: the serial is unknown
    key = generate_private_key()
    stray = make_cert(key, "stray", issuer=(pki.ca.ca_key, pki.ca_cert), serial=0x5EED)
    stray_path = tmp_path / "stray.pem"
    stray_path.write_bytes(stray.public_bytes(serialization.Encoding.PEM))
    rc, out = await openssl_ocsp(pki, stray_path, servers.ocsp_url)
    assert rc == 0, out
    assert "Response verify OK" in out and f"{stray_path}: unknown" in out

    # a certificate from another CA with the same issuer name: the responder is not authoritative
    other = make_pki(tmp_path / "other")
    foreign = other.issue_sign("DEV/GOV/1001")
    rc, out = await run(
        "openssl",
        "ocsp",
        "-issuer",
        other.ca_cert_path,
        "-cert",
        foreign.cert_path,
        "-url",
        servers.ocsp_url,
        "-CAfile",
        other.ca_cert_path,
        "-resp_text",
    )
    assert "Responder Error: unauthorized (6)" in out, out


async def test_ocsp_get_post_and_http_errors(pki: ThrowawayPki, servers: PkiServers) -> None:
    issued = pki.issue_sign("DEV/GOV/1001")
    request = ocsp.build_request(issued.cert, pki.ca_cert)
    async with aiohttp.ClientSession() as session:
        # RFC 6960 A.1 GET form: base64 of the DER, URL-encoded
        async with session.get(
            f"{servers.ocsp_url}/{quote(base64.b64encode(request).decode(), safe='')}"
        ) as r:
            assert r.status == 200 and r.content_type == "application/ocsp-response"
            got = await r.read()
        now = datetime.now(UTC)
        assert (
            ocsp.check_response(
                got, cert=issued.cert, issuer=pki.ca_cert, now=now, max_age_seconds=3600
            ).status
            == "good"
        )
        der = await fetch_ocsp(session, servers.ocsp_url, request)
        assert (
            ocsp.check_response(
                der, cert=issued.cert, issuer=pki.ca_cert, now=now, max_age_seconds=3600
            ).status
            == "good"
        )
        async with session.get(f"{servers.ocsp_url}/not-base64!") as r:
            assert r.status == 200
            assert (await r.read()) == b"0\x03\n\x01\x01"  # OCSPResponse with status malformedRequest

        big = b"\x00" * (MAX_REQUEST_BYTES + 1)
        cases = [
            (servers.ocsp_url, "application/ocsp-request", big, 413),
            (servers.ocsp_url, "application/octet-stream", request, 415),
            (servers.tsa_url, "application/timestamp-query", big, 413),
            (servers.tsa_url, "application/ocsp-request", b"x", 415),
        ]
        for url, ctype, body, status in cases:
            async with session.post(url, data=body, headers={"Content-Type": ctype}) as r:
                assert r.status == status, (url, ctype, status)


async def test_fetch_errors_are_peer_errors(pki: ThrowawayPki, servers: PkiServers) -> None:
    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_post("/", plain)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    plain_url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(
                PeerError, match=r"OCSP responder http://127\.0\.0\.1:\d+/x answered HTTP 405"
            ):
                await fetch_ocsp(session, servers.ocsp_url + "/x", b"x")
            with pytest.raises(PeerError, match=r"TSA http://127\.0\.0\.1:\d+ answered HTTP 415"):
                await fetch_timestamp(session, servers.ocsp_url, b"x")  # the OCSP port refuses the type
            with pytest.raises(
                PeerError, match="answered Content-Type text/plain, not application/timestamp-reply"
            ):
                await fetch_timestamp(session, plain_url, b"x")
    finally:
        await runner.cleanup()
    closed = await start_pki_servers(pki.ca, "127.0.0.1", 0, 0)
    url = closed.ocsp_url
    await closed.close()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(PeerError, match=f"OCSP responder {url} cannot be reached"):
            await fetch_ocsp(session, url, b"x", timeout_seconds=5)


async def test_openssl_timestamp_query_verify_and_tamper(
    pki: ThrowawayPki, servers: PkiServers, tmp_path: Path
) -> None:
    data = tmp_path / "data.txt"
    data.write_bytes(b"checkpoint 42\n")
    rc, out = await run(
        "openssl", "ts", "-query", "-data", data, "-sha256", "-cert", "-out", tmp_path / "q.tsq"
    )
    assert rc == 0, out
    async with aiohttp.ClientSession() as session:
        reply = await fetch_timestamp(session, servers.tsa_url, (tmp_path / "q.tsq").read_bytes())
    (tmp_path / "r.tsr").write_bytes(reply)

    rc, out = await run(
        "openssl",
        "ts",
        "-verify",
        "-data",
        data,
        "-in",
        tmp_path / "r.tsr",
        "-CAfile",
        pki.ca_cert_path,
        "-untrusted",
        pki.tsa_cert_path,
    )
    assert rc == 0, out
    assert "Verification: OK" in out

    rc, out = await run("openssl", "ts", "-reply", "-in", tmp_path / "r.tsr", "-text")
    assert rc == 0, out
    assert "Status: Granted." in out
    assert f"Policy OID: {TSA_POLICY_OID}" in out
    assert "Hash Algorithm: sha256" in out
    nonce_line = next(line for line in out.splitlines() if line.startswith("Nonce:"))
    rc, query = await run("openssl", "ts", "-query", "-in", tmp_path / "q.tsq", "-text")
    assert nonce_line in query  # the nonce is echoed

    # our own client check agrees, with the nonce openssl chose
    nonce = int(nonce_line.split("0x", 1)[1], 16)
    token = timestamp.check_response(
        reply, data_hash=hashlib.sha256(data.read_bytes()).digest(), tsa_cert=pki.tsa_cert, nonce=nonce
    )
    assert token.policy == TSA_POLICY_OID

    data.write_bytes(b"checkpoint 43\n")  # the data changed after stamping
    rc, out = await run(
        "openssl",
        "ts",
        "-verify",
        "-data",
        data,
        "-in",
        tmp_path / "r.tsr",
        "-CAfile",
        pki.ca_cert_path,
        "-untrusted",
        pki.tsa_cert_path,
    )
    assert rc != 0
    assert "Verification: FAILED" in out and "message imprint mismatch" in out


async def _line(stream: asyncio.StreamReader) -> str:
    return (await asyncio.wait_for(stream.readline(), timeout=30)).decode().strip()


async def test_cli_serve_sees_revocations_from_another_process_and_stops_on_sigterm(
    pki: ThrowawayPki, tmp_path: Path
) -> None:
    issued = pki.issue_auth("DEV/GOV/1001/ss1")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("GATEWAY_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        Path(sys.executable).with_name("gateway"),  # the console script
        "pki",
        "serve",
        "--dir",
        str(pki.directory),
        "--host",
        "127.0.0.1",
        "--ocsp-port",
        "0",
        "--tsa-port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ocsp_line = await _line(proc.stdout)
        tsa_line = await _line(proc.stdout)
        assert ocsp_line.startswith("OCSP responder: http://127.0.0.1:"), ocsp_line
        assert tsa_line.startswith("TSA: http://127.0.0.1:"), tsa_line
        url = ocsp_line.split(": ", 1)[1]
        rc, out = await openssl_ocsp(pki, issued.cert_path, url)
        assert rc == 0 and f"{issued.cert_path}: good" in out, out
        # the serving process holds its own copy of the CA; a revocation written to index.json reaches it
        assert (
            main(
                [
                    "pki",
                    "revoke",
                    "--dir",
                    str(pki.directory),
                    f"{issued.cert.serial_number:X}",
                    "--reason",
                    "keyCompromise",
                ]
            )
            == 0
        )
        _, out = await openssl_ocsp(pki, issued.cert_path, url)
        assert f"{issued.cert_path}: revoked" in out and "Response verify OK" in out, out
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    assert "stopped" in err.decode()


async def test_unreadable_index_is_answered_internal_error(pki: ThrowawayPki, servers: PkiServers) -> None:
    issued = pki.issue_sign("DEV/GOV/1001")
    (pki.directory / "index.json").write_text("{not json")
    async with aiohttp.ClientSession() as session:
        der = await fetch_ocsp(session, servers.ocsp_url, ocsp.build_request(issued.cert, pki.ca_cert))
    with pytest.raises(TrustError, match="OCSP response: responder answered internal_error"):
        ocsp.check_response(
            der, cert=issued.cert, issuer=pki.ca_cert, now=datetime.now(UTC), max_age_seconds=60
        )
