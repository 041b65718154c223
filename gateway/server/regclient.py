"""A security server's side of registration: sign management requests and send them to the central server (I/O).

The request format is :mod:`gateway.central.management`; the flow is in docs/registration.md. The key that
signs is an authentication key: from the software token when ``[server] token_dir`` is set (the token must
be logged in), else the plain ``auth.key``/``auth.pem`` files of ``[server] state_dir``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509

from gateway import errors
from gateway.central.management import RequestType, build_request
from gateway.errors import ConfigError, PeerError, RelayedFault, RequestError
from gateway.globalconf.anchor import Anchor
from gateway.identifiers import ClientId, SecurityServerId
from gateway.server.keyfiles import KeyFiles
from gateway.settings import Settings
from gateway.token.soft import SoftToken
from gateway.trust import keys

TIMEOUT_SECONDS = 30.0  # seconds for one submission


def central_registration_url(settings: Settings, override: str | None = None) -> str:
    """``override``, else the first download URL of the anchor with ``/registration`` for its last segment.

    Raises:
        ConfigError: the anchor cannot be read.
    """
    if override:
        return override.rstrip("/") + ("" if override.rstrip("/").endswith("/registration") else "/registration")
    anchor = Anchor.from_file(settings.globalconf.anchor)
    base = anchor.download_urls[0].rsplit("/", 1)[0]
    return f"{base}/registration"


async def auth_key_and_cert(
    settings: Settings, *, token: SoftToken | None = None, cert_sha256: str | None = None,
    newest: bool = False, now: datetime,
) -> tuple[keys.PrivateKey, x509.Certificate]:
    """The authentication key and certificate to sign with.

    With a token: the certificate ``cert_sha256`` (a prefix is enough), else with ``newest`` the most
    recently imported authentication certificate (what ``register`` sends), else the one in use now.

    Raises:
        ConfigError: no such certificate, or no key files.
        RequestError: the token is not logged in.
    """
    if token is None:
        files = KeyFiles(dir=Path(settings.server.state_dir))
        return keys.read_private_key(files.auth_key), keys.read_certificate(files.auth_cert)
    state = await token.state()
    if cert_sha256:
        key_entry, cert_entry = state.cert(cert_sha256)
        if cert_entry.kind != "auth":
            raise ConfigError(f"certificate {cert_entry.sha256[:16]}... is not an authentication certificate")
    else:
        auths = [(k, c) for k in state.keys if k.usage == "auth" for c in k.certs]
        if not auths:
            raise ConfigError("the token holds no authentication certificate",
                              hint="generate a key, get its CSR signed and import the certificate")
        if newest:
            key_entry, cert_entry = max(auths, key=lambda kc: kc[1].imported_at)
        else:
            from gateway.token.model import select_cert

            chosen = select_cert(state, "auth", now=now)
            if chosen is None:
                raise ConfigError("the token has no active authentication certificate valid now")
            key_entry, cert_entry = chosen
    return await token.private_key(key_entry.id), cert_entry.certificate


def _refusal(message: str, remote_type: object, remote_status: int) -> RequestError:
    """The central server's refusal as the same fault class here (``Conflict`` for its 409 ``Client.Conflict``),
    or, for a type and status this version has no class for, as a :class:`CentralRefusal` carrying them."""
    xroad_type = remote_type if isinstance(remote_type, str) and remote_type else RequestError.type_name()
    cls = errors.fault_class(xroad_type, remote_status, RequestError)
    if cls is not None:
        return cls(message)
    return CentralRefusal(message, remote_type=xroad_type, remote_status=remote_status)


class CentralRefusal(RelayedFault, RequestError):
    """A refusal of the central server whose type and status no class here has, relayed unchanged."""


async def submit(url: str, body: bytes, *, session: aiohttp.ClientSession | None = None) -> dict[str, Any]:
    """POST a signed management request; returns the central server's record of it.

    Raises:
        RequestError: the central server refused it (its message and fault type are kept).
        PeerError: the central server cannot be reached or failed.
    """
    own = session is None
    s = session or aiohttp.ClientSession()
    try:
        async with s.post(url, data=body, headers={"Content-Type": "application/json"},
                          timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)) as resp:
            text = await resp.read()
            try:
                doc = json.loads(text)
            except ValueError:
                doc = {}
            if resp.status == 202 and isinstance(doc, dict):
                return doc
            message = doc.get("message") if isinstance(doc, dict) else None
            message = message or text[:200].decode("utf-8", "replace")
            if 400 <= resp.status < 500:
                raise _refusal(f"central server refused the request: {message}",
                               doc.get("type") if isinstance(doc, dict) else None, resp.status)
            raise PeerError(f"central server answered {resp.status}: {message}")
    except (aiohttp.ClientError, TimeoutError) as e:
        raise PeerError(f"central server at {url} cannot be reached: {e}") from e
    finally:
        if own:
            await s.close()


async def send(
    settings: Settings, type: RequestType, *, key: keys.PrivateKey, cert: x509.Certificate, now: datetime,
    url: str | None = None, client: ClientId | None = None, auth_cert_sha256: str | None = None,
    renewal_key: keys.PrivateKey | None = None, renewal_cert: x509.Certificate | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """Build, sign and submit one management request for this server (``[server] id``); with
    ``renewal_key``/``renewal_cert`` (an ``auth_cert_reg``) co-signed by the current authentication key, which
    makes it a renewal the central server may approve by itself (docs/registration.md). ``address``: the
    server-to-server address to register (default ``[server] address``, else ``server_host:server_port``).

    Raises:
        ConfigError: bad ``[server] id`` or anchor.
        RequestError, PeerError: as :func:`submit`.
    """
    try:
        server_id = SecurityServerId.parse(settings.server.id)
    except RequestError as e:
        raise ConfigError(f"[server] id: {e.message}") from e
    s = settings.server
    address = address or s.address or f"{s.server_host}:{s.server_port}"
    body = build_request(type, server=server_id, signer_key=key, signer_cert=cert, now=now, address=address,
                         client=client, auth_cert_sha256=auth_cert_sha256, renewal_key=renewal_key,
                         renewal_cert=renewal_cert)
    return await submit(central_registration_url(settings, url), body)
