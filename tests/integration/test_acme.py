"""The development CA's ACME endpoint (RFC 8555) with the security server's ACME client (real HTTP on loopback).

- the whole flow with the ``acme`` library: EAB account, order, http-01 answered by the server's responder,
  finalize with a profile CSR, chain download; a second order reuses the account;
- refusals, each a precise problem document: no EAB, a wrong MAC, an unknown EAB kid, a CSR for another
  member, a challenge answered wrongly, a replayed nonce, a wrong url header.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
import pytest_asyncio
from cryptography import x509
from acme import jws as acme_jws
from josepy.jwa import ES256, HS256
from josepy.jwk import JWKEC, JWKOct

from gateway.dev.pki.acme import AcmeServer, EabKey, new_eab_key
from gateway.dev.pki.ca import DevCA
from gateway.dev.pki.http import PkiServers, start_pki_servers
from gateway.errors import PeerError
from gateway.identifiers import MemberId, SecurityServerId
from gateway.server.acmeclient import AcmeAccount, Http01Responder, obtain_certificate
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
                                        responder=world.responder, now=datetime.now(UTC))
        assert certprofile.identity_of(cert) == (kind, identity)
        assert keys.public_key_of(cert) == key.public_key()
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert timedelta(minutes=30) < life <= timedelta(minutes=36)  # 30 min, and notBefore backdated 5 min
        assert world.ca.status(cert.serial_number).kind == kind  # recorded: the OCSP responder knows it
    assert len(world.acme._accounts) == 1  # the second order found the account of the same key
