"""The development CA's ACME endpoint (RFC 8555) with the security server's ACME client (real HTTP on loopback).

- the whole flow with the ``acme`` library: EAB account, order, http-01 answered by the server's responder,
  finalize with a profile CSR, chain download; a second order reuses the account;
- refusals, each a precise problem document: no EAB, a wrong MAC, an unknown EAB kid, a CSR for another
  member, a challenge answered wrongly, a replayed nonce, a wrong url header.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from acme import jws as acme_jws
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from josepy.jwa import ES256, HS256
from josepy.jwk import JWKEC, JWKOct

from gateway.cli import main
from gateway.dev.pki.acme import AcmeServer, EabKey, new_eab_key
from gateway.dev.pki.ca import DevCA
from gateway.dev.pki.http import PkiServers, start_pki_servers
from gateway.errors import ConfigError, PeerError
from gateway.identifiers import MemberId, SecurityServerId
from gateway.server.acmeclient import AcmeAccount, Http01Responder, obtain_certificate, read_eab_key
from gateway.trust import certprofile, keys

MEMBER = MemberId.parse("DEV/GOV/1001")
SERVER = SecurityServerId.parse("DEV/GOV/1001/ss1")
OTHER = MemberId.parse("DEV/GOV/1002")


@dataclass
class World:
    ca: DevCA
    acme: AcmeServer
    eab: EabKey
    pki: PkiServers
    responder: Http01Responder
    targets: dict[str, tuple[str, int]]

    def account(self, key: keys.PrivateKey | None = None, *, eab: EabKey | None = None) -> AcmeAccount:
        e = eab or self.eab
        assert self.pki.acme_directory_url is not None
        return AcmeAccount(directory_url=self.pki.acme_directory_url, eab_kid=e.kid, eab_hmac_key=e.hmac_b64,
                           key=key or keys.generate_private_key())


@pytest_asyncio.fixture
async def world() -> AsyncIterator[World]:
    now = datetime.now(UTC)
    ca = DevCA.create(name="ACME Test CA", now=now)
    acme = AcmeServer(ca, validity=timedelta(minutes=30))
    eab = acme.add_eab(new_eab_key(MEMBER))
    responder = Http01Responder()
    await responder.start("127.0.0.1", 0)
    targets: dict[str, tuple[str, int]] = {"ss1.dev.test": ("127.0.0.1", responder.port)}

    def target(identifier: str) -> tuple[str, int]:
        return targets.get(identifier, ("127.0.0.1", 9))  # port 9 (discard): nobody answers

    pki = await start_pki_servers(ca, acme=acme, http01_target=target)
    try:
        yield World(ca=ca, acme=acme, eab=eab, pki=pki, responder=responder, targets=targets)
    finally:
        await pki.close()
        await responder.close()


def _csr(kind: certprofile.CertKind, identity: certprofile.Identity
         ) -> tuple[keys.PrivateKey, x509.CertificateSigningRequest]:
    key = keys.generate_private_key()
    return key, certprofile.build_csr(key, identity, kind=kind, name="Org")


async def test_sign_and_auth_certificates_through_acme(world: World) -> None:
    account_key = keys.generate_private_key()
    for kind, identity in (("sign", MEMBER), ("auth", SERVER)):
        key, csr = _csr(kind, identity)  # type: ignore[arg-type]
        cert = await obtain_certificate(world.account(account_key), identifier="ss1.dev.test", csr=csr,
                                        responder=world.responder)
        assert certprofile.identity_of(cert) == (kind, identity)
        assert keys.public_key_of(cert) == key.public_key()
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert timedelta(minutes=30) < life <= timedelta(minutes=36)  # 30 min, and notBefore backdated 5 min
        assert world.ca.status(cert.serial_number).kind == kind  # recorded: the OCSP responder knows it
    assert len(world.acme._accounts) == 1  # the second order found the account of the same key


class Raw:
    """A hand-made ACME client, to send what the library never would."""

    def __init__(self, session: aiohttp.ClientSession, acme: AcmeServer, key: keys.PrivateKey | None = None) -> None:
        self.session = session
        self.acme = acme
        self.jwk = JWKEC(key=key or keys.generate_private_key())
        self.kid: str | None = None

    async def nonce(self) -> str:
        async with self.session.head(self.acme.url("new-nonce")) as resp:
            assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
            return resp.headers["Replay-Nonce"]

    def eab(self, key: EabKey, *, mac_key: bytes | None = None, url: str | None = None) -> dict[str, object]:
        payload = json.dumps(self.jwk.public_key().to_partial_json()).encode()
        signed = acme_jws.JWS.sign(payload, JWKOct(key=mac_key or key.hmac_key), HS256, None,
                                   url or self.acme.url("new-account"), key.kid)
        return dict(signed.to_partial_json())

    async def post(
        self, path: str, payload: dict[str, object] | None, *, nonce: str | None = None, url: str | None = None,
        content_type: str = "application/jose+json", body: bytes | None = None, alg: object = ES256,
        key: object = None,
    ) -> tuple[int, dict[str, object], str]:
        if body is None:
            n = nonce or await self.nonce()
            data = b"" if payload is None else json.dumps(payload).encode()
            body = acme_jws.JWS.sign(data, key or self.jwk, alg, base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)),
                                     url or self.acme.url(path), self.kid).json_dumps().encode()
        async with self.session.post(self.acme.url(path), data=body, headers={"Content-Type": content_type}) as resp:
            assert "Replay-Nonce" in resp.headers  # RFC 8555 6.5: on every answer to a POST, errors too
            text = await resp.read()
            doc = json.loads(text) if resp.content_type.endswith("json") else {"pem": text.decode()}
            return resp.status, doc, resp.headers.get("Location", "")

    async def register(self, eab: EabKey) -> None:
        status, _doc, location = await self.post("new-account", {"termsOfServiceAgreed": True,
                                                                 "externalAccountBinding": self.eab(eab)})
        assert status == 201
        self.kid = location


def problem(doc: dict[str, object]) -> str:
    return str(doc["type"]).removeprefix("urn:ietf:params:acme:error:")


@pytest_asyncio.fixture
async def raw(world: World) -> AsyncIterator[Raw]:
    async with aiohttp.ClientSession() as session:
        yield Raw(session, world.acme)


@pytest.mark.parametrize(("case", "status", "type_", "detail"), [
    ("no-eab", 400, "externalAccountRequired", "needs an externalAccountBinding"),
    ("bad-mac", 403, "unauthorized", "MAC does not verify"),
    ("unknown-kid", 403, "unauthorized", "is not an EAB key of this CA"),
    ("eab-url", 403, "unauthorized", "url is not the newAccount URL"),
    ("other-key", 403, "unauthorized", "binds another key"),
])
async def test_account_needs_a_good_external_account_binding(
    world: World, raw: Raw, case: str, status: int, type_: str, detail: str,
) -> None:
    payload: dict[str, object] = {"termsOfServiceAgreed": True}
    if case == "bad-mac":
        payload["externalAccountBinding"] = raw.eab(world.eab, mac_key=b"\x00" * 32)
    elif case == "unknown-kid":
        payload["externalAccountBinding"] = raw.eab(EabKey(kid="eab-nope", member=MEMBER, hmac_key=b"k" * 32))
    elif case == "eab-url":
        payload["externalAccountBinding"] = raw.eab(world.eab, url=world.acme.url("new-order"))
    elif case == "other-key":
        payload["externalAccountBinding"] = Raw(raw.session, world.acme).eab(world.eab)
    got, doc, _ = await raw.post("new-account", payload)
    assert (got, problem(doc), doc["status"]) == (status, type_, status)
    assert detail in str(doc["detail"])
    assert not world.acme._accounts


@pytest.mark.parametrize(("case", "status", "type_", "detail"), [
    ("replayed-nonce", 400, "badNonce", "unknown, used already"),
    ("wrong-url", 403, "unauthorized", "is not the URL posted to"),
    ("content-type", 415, "malformed", "Content-Type must be application/jose+json"),
    ("not-json", 400, "malformed", "request body is not JSON"),
    ("general-jws", 400, "malformed", "flattened JWS"),
    ("mac-alg", 400, "badSignatureAlgorithm", "alg 'HS256' is not accepted"),
    ("bad-signature", 400, "malformed", "signature does not verify"),
    ("unknown-account", 400, "accountDoesNotExist", "no such account"),
    ("jwk-for-order", 400, "malformed", "must be signed with the account's kid"),
    ("revoke-cert", 405, "malformed", "revoke-cert is not offered by the development CA"),
])
async def test_requests_are_checked_as_rfc8555_section_6_asks(
    world: World, raw: Raw, case: str, status: int, type_: str, detail: str,
) -> None:
    await raw.register(world.eab)
    order = {"identifiers": [{"type": "dns", "value": "ss1.dev.test"}]}
    if case == "replayed-nonce":
        nonce = await raw.nonce()
        assert (await raw.post("new-order", order, nonce=nonce))[0] == 201
        got, doc, _ = await raw.post("new-order", order, nonce=nonce)
    elif case == "wrong-url":
        got, doc, _ = await raw.post("new-order", order, url=world.acme.url("new-account"))
    elif case == "content-type":
        got, doc, _ = await raw.post("new-order", order, content_type="application/json")
    elif case == "not-json":
        got, doc, _ = await raw.post("new-order", None, body=b"{nope")
    elif case == "general-jws":
        got, doc, _ = await raw.post("new-order", None, body=json.dumps({"payload": "", "signatures": []}).encode())
    elif case == "mac-alg":
        got, doc, _ = await raw.post("new-order", order, alg=HS256, key=JWKOct(key=b"k" * 32))
    elif case == "bad-signature":
        raw.jwk, real = JWKEC(key=keys.generate_private_key()), raw.jwk  # sign with another key, same kid
        got, doc, _ = await raw.post("new-order", order)
        raw.jwk = real
    elif case == "revoke-cert":
        got, doc, _ = await raw.post("revoke-cert", {"certificate": "AAAA"})
    elif case == "unknown-account":
        raw.kid = world.acme.url("acct/nobody")
        got, doc, _ = await raw.post("new-order", order)
    else:
        raw.kid = None
        got, doc, _ = await raw.post("new-order", order)
    assert (got, problem(doc)) == (status, type_), doc
    assert detail in str(doc["detail"])


@pytest.mark.parametrize(("identifiers", "type_", "detail"), [
    ([{"type": "ip", "value": "127.0.0.1"}], "unsupportedIdentifier", "only dns"),
    ([{"type": "dns", "value": "*.dev.test"}], "rejectedIdentifier", "is not a host name"),
    ([{"type": "dns", "value": "bad_host!"}], "rejectedIdentifier", "is not a host name"),
    ([], "malformed", "non-empty identifiers list"),
])
async def test_orders_name_host_names_only(world: World, raw: Raw, identifiers: list[object], type_: str,
                                           detail: str) -> None:
    await raw.register(world.eab)
    got, doc, _ = await raw.post("new-order", {"identifiers": identifiers})
    assert (got, problem(doc)) == (400, type_) and detail in str(doc["detail"])


async def test_finalize_before_validation_and_a_foreign_csr_are_refused(world: World, raw: Raw) -> None:
    await raw.register(world.eab)
    got, order, location = await raw.post("new-order", {"identifiers": [{"type": "dns", "value": "ss1.dev.test"}]})
    assert got == 201 and order["status"] == "pending"
    finalize = str(order["finalize"]).removeprefix(world.acme.url(""))
    _key, csr = _csr("sign", MEMBER)
    der = base64.urlsafe_b64encode(csr.public_bytes(serialization.Encoding.DER)).rstrip(b"=").decode()
    got, doc, _ = await raw.post(finalize, {"csr": der})
    assert (got, problem(doc)) == (403, "orderNotReady")
    # the challenge, answered through the responder: the order becomes ready
    authz_path = str(order["authorizations"][0]).removeprefix(world.acme.url(""))  # type: ignore[index]
    _, authz, _ = await raw.post(authz_path, None)
    chall = authz["challenges"][0]  # type: ignore[index]
    thumb = base64.urlsafe_b64encode(raw.jwk.thumbprint()).rstrip(b"=").decode()
    world.responder.put(chall["token"], f"{chall['token']}.{thumb}")
    got, doc, _ = await raw.post(str(chall["url"]).removeprefix(world.acme.url("")), {})
    assert got == 200 and doc["status"] == "valid"
    _, order, _ = await raw.post(location.removeprefix(world.acme.url("")), None)
    assert order["status"] == "ready"
    # a CSR for another member than the EAB key's, then a malformed one: refused, the order stays ready
    _key, foreign = _csr("sign", OTHER)
    der_foreign = base64.urlsafe_b64encode(foreign.public_bytes(serialization.Encoding.DER)).rstrip(b"=").decode()
    got, doc, _ = await raw.post(finalize, {"csr": der_foreign})
    assert (got, problem(doc)) == (403, "unauthorized") and "issued for member DEV/GOV/1001" in str(doc["detail"])
    got, doc, _ = await raw.post(finalize, {"csr": "AAAA"})
    assert (got, problem(doc)) == (400, "badCSR")
    # the right one: valid, with a certificate only this account may download
    got, doc, _ = await raw.post(finalize, {"csr": der})
    assert got == 200 and doc["status"] == "valid"
    cert_path = str(doc["certificate"]).removeprefix(world.acme.url(""))
    got, pem, _ = await raw.post(cert_path, None)
    assert got == 200 and str(pem["pem"]).count("BEGIN CERTIFICATE") == 2
    other = Raw(raw.session, world.acme)
    await other.register(world.acme.add_eab(new_eab_key(MEMBER)))
    got, doc, _ = await other.post(cert_path, None)
    assert (got, problem(doc)) == (404, "unauthorized")
    got, doc, _ = await other.post(location.removeprefix(world.acme.url("")), None)
    assert (got, problem(doc)) == (403, "unauthorized")


@pytest.mark.parametrize(("case", "expected"), [
    ("wrong-answer", "incorrectResponse :: .* did not answer the key authorization"),
    ("not-found", "incorrectResponse :: .* answered HTTP 404"),
    ("unreachable", "connection :: .* cannot be fetched"),
    ("other-member", "unauthorized: the CSR names member DEV/GOV/1002"),
])
async def test_client_reports_what_went_wrong(world: World, monkeypatch: pytest.MonkeyPatch, case: str,
                                              expected: str) -> None:
    identifier = "nowhere.dev.test" if case == "unreachable" else "ss1.dev.test"
    _key, csr = _csr("sign", OTHER if case == "other-member" else MEMBER)
    real_put = world.responder.put
    if case == "wrong-answer":
        monkeypatch.setattr(world.responder, "put", lambda token, answer: real_put(token, answer[::-1]))
    elif case == "not-found":
        monkeypatch.setattr(world.responder, "put", lambda token, answer: None)
    with pytest.raises(PeerError, match=expected):
        await obtain_certificate(world.account(), identifier=identifier, csr=csr, responder=world.responder)


async def test_cli_issues_eab_keys_and_serve_runs_the_acme_endpoint(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    ca_dir, key_file = tmp_path / "ca", tmp_path / "eab.key"
    assert main(["pki", "init", "--dir", str(ca_dir), "--name", "CLI CA"]) == 0
    assert main(["pki", "acme-eab", "--dir", str(ca_dir), "--member", str(MEMBER), "--key-out", str(key_file)]) == 0
    kid = next(line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines() if line.startswith("EAB key id"))
    assert (ca_dir / "acme-eab.json").stat().st_mode & 0o777 == 0o600
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert main(["pki", "acme-eab", "--dir", str(ca_dir), "--member", "DEV/GOV/bad/x/y", "--key-out",
                 str(tmp_path / "x")]) == 1  # not a member identifier: refused, nothing written
    assert "Client.InvalidClientIdentifier" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    responder = Http01Responder()
    await responder.start("127.0.0.1", 0)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GATEWAY_PKI__ACME_HTTP01_PORT": str(responder.port)}
    env.pop("GATEWAY_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        Path(sys.executable).with_name("gateway"), "pki", "serve", "--dir", str(ca_dir), "--host", "127.0.0.1",
        "--ocsp-port", "0", "--tsa-port", "0", "--acme-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip() for _ in range(3)]
        assert lines[2].startswith("ACME directory: http://127.0.0.1:"), lines
        account = AcmeAccount(directory_url=lines[2].split(": ", 1)[1], eab_kid=kid,
                              eab_hmac_key=read_eab_key(str(key_file)), key=keys.generate_private_key())
        _key, csr = _csr("sign", MEMBER)
        cert = await obtain_certificate(account, identifier="localhost", csr=csr, responder=responder)
        assert certprofile.identity_of(cert) == ("sign", MEMBER)
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert timedelta(days=90) < life <= timedelta(days=90, minutes=5)  # [pki] acme_validity_days
        assert DevCA.load(ca_dir).status(cert.serial_number).kind == "sign"  # in the index, for OCSP
    finally:
        proc.terminate()
        await proc.wait()
        await responder.close()


async def test_eab_key_file_must_be_private_and_well_formed(tmp_path: Path) -> None:
    path = tmp_path / "eab.key"
    for text, mode, message in (("c2VjcmV0c2VjcmV0c2VjcmV0\n", 0o644, "readable by others"),
                                ("\n", 0o600, "is empty"), ("not base64!\n", 0o600, "not a base64url HMAC key"),
                                ("c2hvcnQ\n", 0o600, "fewer than 16")):
        path.write_text(text)
        path.chmod(mode)
        with pytest.raises(ConfigError, match=message):
            read_eab_key(str(path))
    with pytest.raises(ConfigError, match="acme_eab_key_file"):
        read_eab_key(str(tmp_path / "missing"))


async def test_http01_responder_port_taken_is_a_config_error() -> None:
    first = Http01Responder()
    await first.start("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match=f"acme_http01_port: cannot listen on 127.0.0.1:{first.port}"):
            await Http01Responder().start("127.0.0.1", first.port)
    finally:
        await first.close()
