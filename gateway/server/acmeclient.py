"""A security server's ACME client (RFC 8555) and its http-01 responder (I/O).

The protocol is spoken by the maintained ``acme`` library (certbot's), whose client is synchronous
(``requests``): :func:`obtain_certificate` runs it in a worker thread, so the event loop keeps serving exchanges.
One call: register (or find) the account with external account binding, order a certificate for the server's
host name, answer the ``http-01`` challenge through :class:`Http01Responder`, finalize with the token's CSR,
download the chain. The account key is an ECDSA P-256 key in ``<state_dir>/acme-account.key`` (0600), made on
first use (:func:`account_key`). docs/acme.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from acme import challenges, client, errors, messages
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from gateway.errors import ConfigError, PeerError
from gateway.token.soft import read_pin
from gateway.trust import keys

log = structlog.get_logger("gateway.server.acme")

ORDER_TIMEOUT_SECONDS = 90.0  # seconds one order may take, from newOrder to the certificate
NETWORK_TIMEOUT_SECONDS = 30  # seconds for one request to the ACME server
CHALLENGE_PATH = "/.well-known/acme-challenge/"  # RFC 8555 8.3


@dataclass(frozen=True, slots=True, kw_only=True)
class AcmeAccount:
    """Where and as whom to order: the directory, the EAB key id and its HMAC key, the account key."""

    directory_url: str
    eab_kid: str
    eab_hmac_key: str  # base64url, as the CA hands it out
    key: keys.PrivateKey


def read_eab_key(path: str) -> str:
    """The EAB HMAC key (base64url) from the first line of ``path``, which only its owner may read.

    Raises:
        ConfigError: the file is missing, readable by others, empty, or not base64url.
    """
    text = read_pin(pin_file=path, setting="acme_eab_key").strip()
    if not text:
        raise ConfigError(f"[server] acme_eab_key_file {path} is empty")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise ConfigError(f"[server] acme_eab_key_file {path}: not a base64url HMAC key: {e}") from e
    if len(raw) < 16:
        raise ConfigError(f"[server] acme_eab_key_file {path}: the HMAC key has {len(raw)} bytes, fewer than 16")
    return text


def account_key(state_dir: str | Path) -> keys.PrivateKey:
    """The ACME account key in ``<state_dir>/acme-account.key``, generated (and written 0600) on first use."""
    path = Path(state_dir) / "acme-account.key"
    if path.exists():
        return keys.read_private_key(path)
    key = keys.generate_private_key("ec-p256")
    keys.write_private_key(path, key)
    return key


class Http01Responder:
    """Answers ``GET /.well-known/acme-challenge/{token}`` with the key authorizations of the orders under way.

    It listens on ``[server] acme_http01_host:acme_http01_port`` (port 80, as RFC 8555 8.3 has the CA fetch)
    for as long as the server runs with ACME on; it answers 404 to every other token.
    """

    def __init__(self) -> None:
        self._answers: dict[str, str] = {}
        self._lock = threading.Lock()  # set from the ACME thread, read on the loop
        self._runner: web.AppRunner | None = None
        self.port = 0

    def put(self, token: str, key_authorization: str) -> None:
        with self._lock:
            self._answers[token] = key_authorization

    def drop(self, token: str) -> None:
        with self._lock:
            self._answers.pop(token, None)

    async def _get(self, request: web.Request) -> web.Response:
        with self._lock:
            answer = self._answers.get(request.match_info["token"])
        if answer is None:
            raise web.HTTPNotFound(text="no such challenge\n")
        return web.Response(text=answer, content_type="application/octet-stream")

    async def start(self, host: str, port: int) -> None:
        """Raises: ConfigError: the port cannot be bound."""
        app = web.Application()
        app.router.add_get(CHALLENGE_PATH + "{token}", self._get)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as e:
            await runner.cleanup()
            raise ConfigError(f"[server] acme_http01_port: cannot listen on {host}:{port}: {e}") from e
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class _Client(client.ClientV2):
    def order_for(self, identifiers: list[str], csr_pem: bytes) -> messages.OrderResource:
        """newOrder for ``identifiers`` (dns): our CSRs name an X-Road identity URI, not the host name, so the
        library's ``new_order``, which takes the identifiers from the CSR's DNS names, would order nothing."""
        order = messages.NewOrder(identifiers=[messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=v)
                                               for v in identifiers])
        response = self._post(self.directory["newOrder"], order)
        body = messages.Order.from_json(response.json())
        authorizations = [self._authzr_from_response(self._post_as_get(url), uri=url)
                          for url in body.authorizations]
        return messages.OrderResource(body=body, uri=response.headers.get("Location"),
                                      authorizations=authorizations, csr_pem=csr_pem)


def _order(account: AcmeAccount, identifier: str, csr_pem: bytes, responder: Http01Responder,
           deadline: datetime) -> str:
    """The whole order, synchronously (in a worker thread): returns the PEM chain."""
    jwk = JWKEC(key=account.key)
    net = client.ClientNetwork(jwk, alg=ES256, user_agent="gateway-acme", timeout=NETWORK_TIMEOUT_SECONDS)
    directory = client.ClientV2.get_directory(account.directory_url, net)
    acme = _Client(directory, net)
    # (1) the account, bound to the member by the EAB key (a key known to the CA gets its account back)
    eab = messages.ExternalAccountBinding.from_data(account_public_key=jwk.public_key(), kid=account.eab_kid,
                                                    hmac_key=account.eab_hmac_key, directory=directory)
    registration = messages.NewRegistration.from_data(terms_of_service_agreed=True, external_account_binding=eab)
    try:
        acme.new_account(registration)
    except errors.ConflictError as e:
        net.account = messages.RegistrationResource(uri=e.location, body=messages.Registration())
    # (2) the order, (3) the http-01 answers, put up before the CA is told to look
    order = acme.order_for([identifier], csr_pem)
    tokens = []
    try:
        for authz in order.authorizations:
            challb = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
            if challb is None:
                raise PeerError(f"the ACME server offers no http-01 challenge for {identifier}")
            if authz.body.status == messages.STATUS_VALID:
                continue
            response, validation = challb.chall.response_and_validation(jwk)
            token = challb.chall.encode("token")
            responder.put(token, validation)
            tokens.append(token)
            acme.answer_challenge(challb, response)
        # (4) finalize with the CSR once every authorization is valid, (5) the chain
        done = acme.poll_and_finalize(order, deadline=deadline)
    finally:
        for token in tokens:
            responder.drop(token)
    if not done.fullchain_pem:
        raise PeerError("the ACME server finalized the order without a certificate")
    return str(done.fullchain_pem)


async def obtain_certificate(
    account: AcmeAccount, *, identifier: str, csr: x509.CertificateSigningRequest, responder: Http01Responder,
    timeout_seconds: float = ORDER_TIMEOUT_SECONDS,
) -> x509.Certificate:
    """Order and download a certificate for ``csr`` (its first certificate in the chain).

    Raises:
        PeerError: the ACME server cannot be reached, refused (its problem document's type and detail are
            kept in the message), or did not answer in time.
    """
    csr_pem = csr.public_bytes(serialization.Encoding.PEM)
    # the library compares the deadline with its own naive local clock (datetime.now())
    deadline = datetime.now() + timedelta(seconds=timeout_seconds)
    try:
        chain = await asyncio.to_thread(_order, account, identifier, csr_pem, responder, deadline)
    except messages.Error as e:
        raise PeerError(f"the ACME server refused: {e.typ}: {e.detail}") from e
    except errors.ValidationError as e:
        failed = "; ".join(f"{a.body.identifier.value}: {c.error}" for a in e.failed_authzrs
                           for c in a.body.challenges if c.error is not None)
        raise PeerError(f"ACME validation failed: {failed or 'no detail'}") from e
    except errors.TimeoutError as e:
        raise PeerError(f"the ACME order did not complete within {timeout_seconds:g} s") from e
    except (errors.Error, OSError, ValueError) as e:
        raise PeerError(f"ACME order at {account.directory_url} failed: {type(e).__name__}: {e}") from e
    try:
        return x509.load_pem_x509_certificates(chain.encode("ascii"))[0]
    except (ValueError, IndexError) as e:
        raise PeerError(f"the ACME server's certificate chain cannot be read: {e}") from e
