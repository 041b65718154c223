"""GlobalConfSimulator: a central server in memory, the test double of the global configuration (I/O only
when serving over HTTP).

Like python-tuf's ``RepositorySimulator``: it holds configuration-signing keys (ECDSA P-256 with
self-signed certificates, generated on the spot), builds configuration documents, signs and "publishes"
them from memory, and implements the :class:`~gateway.globalconf.fetcher.Fetcher` seam so that the updater
can be tested without sockets. :meth:`GlobalConfSimulator.http` serves the same bytes from a real aiohttp
server on 127.0.0.1 (port chosen by the kernel) for integration tests.

Typical use::

    sim = GlobalConfSimulator(now=NOW)
    trusted = TrustedGlobalConf(sim.anchor(), now=NOW)
    trusted.update(sim.published, now=NOW)
    sim.publish()                       # version 2
    sim.serve(tampered_bytes)           # what fetch() returns next
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import pkihelpers
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.errors import PeerError
from gateway.globalconf.anchor import Anchor, build_anchor
from gateway.globalconf.envelope import sign_envelope
from gateway.globalconf.fetcher import Fetcher
from gateway.globalconf.model import cert_fingerprint, cert_to_pem, format_time
from gateway.trust.keys import PrivateKey

SIM_URL = "http://central.sim/globalconf"
KeyPair = pkihelpers.KeyPair


def make_cert(
    key: PrivateKey,
    common_name: str,
    *,
    now: datetime,
    issuer: KeyPair | None = None,
    ca: bool = False,
) -> x509.Certificate:
    """A certificate for ``key``: self-signed, or issued by ``issuer``; valid from a day ago for ten years."""
    return pkihelpers.make_cert(
        key,
        common_name,
        issuer=issuer,
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=3650),
        extensions=[(x509.BasicConstraints(ca=ca, path_length=None), True)],
    )


def make_key_pair(
    common_name: str, *, now: datetime, issuer: KeyPair | None = None, ca: bool = False
) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, make_cert(key, common_name, now=now, issuer=issuer, ca=ca)


def fake_fingerprint(label: str) -> str:
    """A stable, well-formed authentication-certificate fingerprint for a label."""
    return hashlib.sha256(label.encode()).hexdigest()


class GlobalConfSimulator(Fetcher):
    """An in-memory central server: keys, documents, signed publications, and a Fetcher."""

    def __init__(
        self,
        instance: str = "DEV",
        *,
        now: datetime,
        validity: timedelta = timedelta(minutes=10),
        urls: Sequence[str] = (SIM_URL,),
    ) -> None:
        self.instance = instance
        self.now = now
        self.validity = validity
        self.urls = list(urls)
        self.keys: list[KeyPair] = [make_key_pair(f"{instance} configuration signing 1", now=now)]
        self.ca = make_key_pair(f"{instance} Test CA", now=now, ca=True)
        self.tsa = make_key_pair(f"{instance} Test TSA", now=now)
        self.version = 0
        self.content: dict[str, Any] = self.default_content()
        self.published: bytes = b""
        self.signed: dict[str, Any] = {}
        self.fetched: list[str] = []  # URLs fetched, in order
        self.fail_with: Exception | None = None  # raised by the next fetches while set
        self._served: bytes | None = None
        self.publish()

    # ---- content

    def default_content(self) -> dict[str, Any]:
        """Two agencies, three servers (the provider runs two), one group, one CA, one TSA."""
        i = self.instance
        return {
            "central": {"url": "http://127.0.0.1:4000"},
            "members": [
                {"id": f"{i}/GOV/1001", "name": "Agency A", "subsystems": ["consumer"]},
                {"id": f"{i}/GOV/1002", "name": "Agency B", "subsystems": ["provider", "registry"]},
            ],
            "security_servers": [
                {"id": f"{i}/GOV/1001/ss1", "address": "127.0.0.1:5501",
                 "auth_certs": [fake_fingerprint("ss1")],
                 "clients": [f"{i}/GOV/1001", f"{i}/GOV/1001/consumer"]},
                {"id": f"{i}/GOV/1002/ss2", "address": "127.0.0.1:5502",
                 "auth_certs": sorted([fake_fingerprint("ss2"), fake_fingerprint("ss2-new")]),
                 "clients": [f"{i}/GOV/1002/provider", f"{i}/GOV/1002/registry"]},
                {"id": f"{i}/GOV/1002/ss3", "address": "[::1]:5503",
                 "auth_certs": [fake_fingerprint("ss3")], "clients": [f"{i}/GOV/1002/provider"]},
            ],
            "global_groups": [
                {"id": f"{i}/security-server-owners", "description": "Owners of security servers",
                 "members": [f"{i}/GOV/1001", f"{i}/GOV/1002"]},
            ],
            "certificate_authorities": [
                {"name": f"{i} Test CA", "certificate": cert_to_pem(self.ca[1]),
                 "ocsp_urls": ["http://127.0.0.1:8888"]},
            ],
            "timestamping_authorities": [
                {"name": f"{i} Test TSA", "url": "http://127.0.0.1:8889",
                 "certificate": cert_to_pem(self.tsa[1])},
            ],
            "parameters": {"ocsp_freshness_seconds": 3600, "timestamp_grace_seconds": 14400},
        }

    def build_signed(
        self,
        *,
        version: int | None = None,
        issued_at: datetime | None = None,
        expires_at: datetime | None = None,
        keys: Sequence[KeyPair] | None = None,
    ) -> dict[str, Any]:
        """The ``signed`` document for the current content (does not change the simulator's state)."""
        issued = issued_at or self.now
        return {
            **copy.deepcopy(self.content),
            "format": 1,
            "instance": self.instance,
            "version": self.version + 1 if version is None else version,
            "issued_at": format_time(issued),
            "expires_at": format_time(expires_at or issued + self.validity),
            "signing_keys": sorted(
                ({"keyid": cert_fingerprint(c), "certificate": cert_to_pem(c)} for _, c in keys or self.keys),
                key=lambda k: k["keyid"],
            ),
        }

    # ---- publishing

    def sign(self, signed: dict[str, Any], keys: Sequence[KeyPair] | None = None) -> bytes:
        return sign_envelope(signed, list(keys or self.keys))

    def publish(
        self,
        *,
        version: int | None = None,
        issued_at: datetime | None = None,
        expires_at: datetime | None = None,
        keys: Sequence[KeyPair] | None = None,
    ) -> bytes:
        """Sign the current content as the next version (or ``version``) and serve it from now on."""
        signed = self.build_signed(version=version, issued_at=issued_at, expires_at=expires_at, keys=keys)
        self.version = signed["version"]
        self.signed = signed
        self.published = self.sign(signed, keys)
        self._served = None
        return self.published

    def publish_expired(self) -> bytes:
        """The next version, issued and expired in the past relative to ``now``."""
        return self.publish(issued_at=self.now - 2 * self.validity, expires_at=self.now - self.validity)

    def serve(self, data: bytes | None) -> None:
        """Serve exactly ``data`` (tampered, truncated...) instead of the publication; None resets."""
        self._served = data

    @property
    def served(self) -> bytes:
        return self.published if self._served is None else self._served

    # ---- keys and anchor

    def add_key(self) -> KeyPair:
        """Start a rollover: a new configuration-signing key that signs from the next publication on."""
        pair = make_key_pair(f"{self.instance} configuration signing {len(self.keys) + 1}", now=self.now)
        self.keys.append(pair)
        return pair

    def retire_key(self, keyid: str) -> None:
        """End a rollover: stop signing with ``keyid``."""
        self.keys = [(k, c) for k, c in self.keys if cert_fingerprint(c) != keyid]

    def anchor_bytes(self, keys: Sequence[KeyPair] | None = None, urls: Sequence[str] | None = None) -> bytes:
        return build_anchor(
            self.instance, list(urls or self.urls), [c for _, c in keys or self.keys], self.now
        )

    def anchor(self, keys: Sequence[KeyPair] | None = None, urls: Sequence[str] | None = None) -> Anchor:
        return Anchor.from_bytes(self.anchor_bytes(keys, urls))

    def issue_cert(self, common_name: str) -> KeyPair:
        """A leaf certificate issued by the simulator's trusted CA."""
        return make_key_pair(common_name, now=self.now, issuer=self.ca)

    # ---- the Fetcher seam

    async def _fetch(self, url: str, *, max_bytes: int) -> bytes:
        self.fetched.append(url)
        if self.fail_with is not None:
            raise self.fail_with
        if url not in self.urls:
            raise PeerError(f"download of {url} failed: HTTP 404 Not Found")
        return self.served

    # ---- over real HTTP

    @contextlib.asynccontextmanager
    async def http(self) -> AsyncIterator[str]:
        """Serve ``/globalconf`` and ``/anchor`` on 127.0.0.1 (kernel-chosen port); yields the base URL."""

        async def globalconf(request: web.Request) -> web.Response:
            return web.Response(body=self.served, content_type="application/json")

        async def anchor(request: web.Request) -> web.Response:
            return web.Response(body=self.anchor_bytes(), content_type="application/json")

        app = web.Application()
        app.router.add_get("/globalconf", globalconf)
        app.router.add_get("/anchor", anchor)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()
