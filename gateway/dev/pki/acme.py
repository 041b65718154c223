"""The development CA's ACME server (RFC 8555): accounts with external account binding, orders, http-01 (pure).

No sockets and no clock: :class:`AcmeServer` takes the request's path, content type, body and ``now`` and
returns an :class:`AcmeAnswer` (status, headers, JSON or PEM body); :mod:`gateway.dev.pki.http` is the shell.
The one step that needs I/O, fetching an http-01 key authorization, is handed out as an
:class:`Http01Check` that the shell performs and reports back (:meth:`AcmeServer.complete_challenge`).

Profile (docs/pki.md, "ACME"):

- **Requests** are flattened JWS (RFC 7515 7.2.2) with ``Content-Type: application/jose+json``; the protected
  header holds ``alg`` (ES256, ES384 or RS256; never a MAC or ``none``), ``nonce``, ``url`` (exactly the URL
  posted to) and either ``jwk`` (only ``newAccount``) or ``kid`` (the account URL); nothing unprotected.
- **Nonces** (RFC 8555 6.5): random, each accepted once, at most :data:`MAX_NONCES` outstanding (the oldest
  is dropped); every answer to a POST carries a fresh ``Replay-Nonce``, a refused nonce is ``badNonce``.
- **Accounts** need external account binding (RFC 8555 7.3.4, ``meta.externalAccountRequired``): an inner JWS
  with ``alg`` HS256, ``kid`` an EAB key id the CA issued for one **member**, ``url`` the newAccount URL and
  the account's own JWK as payload, MACed with that key id's HMAC key. The account acts for that member only.
  A known key posting newAccount again gets its account back (200).
- **Orders** name ``dns`` identifiers (the security server's host name); each gets one authorization with
  one ``http-01`` challenge (RFC 8555 8.3): the CA fetches
  ``http://HOST[:PORT]/.well-known/acme-challenge/TOKEN`` (where HOST:PORT is the shell's choice for the
  identifier) and compares the body with ``TOKEN.base64url(JWK thumbprint)``.
- **Finalize** takes a CSR of the certificate profile (docs/pki.md): its identity must be the account's member
  (signing) or a security server of that member (authentication); the CA issues it through
  :meth:`~gateway.dev.pki.ca.DevCA.issue` with the server's validity, so the CA's own checks apply. The CSR
  names an X-Road identity (a URI), not the order's host name: the host only proves that the requester runs the
  server that asked, the EAB key says for which member.
- **Certificate** download (POST-as-GET): ``application/pem-certificate-chain``, the certificate then the CA.

Order states (RFC 8555 7.1.6), as a table of what moves an order on:

=============  ===========================  =============
from           event                        to
=============  ===========================  =============
pending        every authorization valid    ready
pending        an authorization invalid     invalid
ready          finalize with a good CSR     valid
ready          finalize with a bad CSR      ready (badCSR)
=============  ===========================  =============

(Issuance is synchronous here, so ``processing`` is never observed.)
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import re
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from josepy.errors import DeserializationError
from josepy.jwa import JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from gateway.dev.pki.ca import DevCA
from gateway.errors import GatewayError, PkiError
from gateway.files import write_private_text
from gateway.identifiers import MemberId, SecurityServerId
from gateway.trust import certprofile, keys

JOSE_TYPE = "application/jose+json"
PROBLEM_TYPE = "application/problem+json"
PEM_CHAIN_TYPE = "application/pem-certificate-chain"
MAX_NONCES = 10_000  # outstanding nonces; a client that waits longer than that many requests gets badNonce
MAX_BODY_BYTES = 64 * 1024  # bytes; a CSR is the largest thing posted (a few hundred bytes)
ORDER_LIFETIME = timedelta(hours=1)  # an order and its authorization expire this long after creation
MAX_IDENTIFIERS = 10  # identifiers per order
SIGNATURE_ALGS = ("ES256", "ES384", "RS256")  # RFC 8555 6.2: MUST support ES256, SHOULD EdDSA; no MACs
_DNS = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

ProblemType = Literal[
    "malformed", "badNonce", "unauthorized", "accountDoesNotExist", "externalAccountRequired",
    "badSignatureAlgorithm", "orderNotReady", "badCSR", "rejectedIdentifier", "unsupportedIdentifier",
    "incorrectResponse", "connection", "serverInternal",
]
_STATUS: Mapping[ProblemType, int] = {
    "malformed": 400, "badNonce": 400, "unauthorized": 403, "accountDoesNotExist": 400,
    "externalAccountRequired": 400, "badSignatureAlgorithm": 400, "orderNotReady": 403, "badCSR": 400,
    "rejectedIdentifier": 400, "unsupportedIdentifier": 400, "incorrectResponse": 403, "connection": 400,
    "serverInternal": 500,
}


class AcmeProblem(Exception):
    """An RFC 8555 section 6.7 problem: ``urn:ietf:params:acme:error:<type>`` with a detail."""

    def __init__(self, type_: ProblemType, detail: str, *, status: int | None = None) -> None:
        super().__init__(f"{type_}: {detail}")
        self.type = type_
        self.detail = detail
        self.status = status or _STATUS[type_]

    def document(self) -> dict[str, Any]:
        return {"type": f"urn:ietf:params:acme:error:{self.type}", "detail": self.detail, "status": self.status}


@dataclass(frozen=True, slots=True, kw_only=True)
class AcmeAnswer:
    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Http01Check:
    """What the shell must fetch to validate a challenge: ``http://{identifier}/.well-known/acme-challenge/
    {token}`` (at the address the shell resolves the identifier to) should answer ``key_authorization``."""

    challenge_id: str
    identifier: str
    token: str
    key_authorization: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EabKey:
    """An external account binding key the CA issued for a member (``gateway pki acme-eab``)."""

    kid: str
    member: MemberId
    hmac_key: bytes

    @property
    def hmac_b64(self) -> str:
        return _b64(self.hmac_key)


def new_eab_key(member: MemberId) -> EabKey:
    """A fresh EAB key id and 256-bit HMAC key for ``member``."""
    return EabKey(kid=f"eab-{secrets.token_hex(8)}", member=member, hmac_key=secrets.token_bytes(32))


EAB_FILE = "acme-eab.json"  # in the CA directory, mode 0600: {kid: {"member": ..., "hmac_key": base64url}}


def load_eab(directory: Path) -> dict[str, EabKey]:
    """The EAB keys kept in ``directory`` (none if the file does not exist).

    Raises:
        PkiError: the file is unreadable or malformed.
    """
    path = directory / EAB_FILE
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_bytes())
        return {kid: EabKey(kid=kid, member=MemberId.parse(v["member"], encoded=False),
                            hmac_key=_unb64(v["hmac_key"], "hmac_key"))
                for kid, v in doc["keys"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, GatewayError, AcmeProblem) as e:
        raise PkiError(f"{path} cannot be loaded: {e}") from e


def issue_eab(directory: Path, member: MemberId) -> EabKey:
    """A new EAB key for ``member``, added to ``directory``'s key file (written 0600, atomically).

    Raises:
        PkiError: the existing file is malformed.
        OSError: it cannot be written.
    """
    keys_ = load_eab(directory)
    key = new_eab_key(member)
    keys_[key.kid] = key
    doc = {"keys": {k.kid: {"member": str(k.member), "hmac_key": k.hmac_b64} for k in keys_.values()}}
    tmp = directory / f".{EAB_FILE}.tmp"
    write_private_text(tmp, json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, directory / EAB_FILE)
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise AcmeProblem("malformed", f"{what} is not base64url without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise AcmeProblem("malformed", f"{what} is not base64url: {e}") from e


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise AcmeProblem("malformed", f"{what} is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise AcmeProblem("malformed", f"{what} is not a JSON object")
    return doc


@dataclass(frozen=True, slots=True, kw_only=True)
class _Jws:
    protected: dict[str, Any]
    payload: bytes  # b"" for POST-as-GET
    signing_input: bytes
    signature: bytes


def _parse_jws(body: bytes) -> _Jws:
    doc = _json_object(body, "request body")
    if "signatures" in doc or "header" in doc:
        raise AcmeProblem("malformed", "the request must be a flattened JWS with no unprotected header "
                                       "(RFC 8555 6.2)")
    if set(doc) != {"protected", "payload", "signature"}:
        raise AcmeProblem("malformed", "a flattened JWS has exactly protected, payload and signature")
    protected_b64, payload_b64, sig_b64 = doc["protected"], doc["payload"], doc["signature"]
    protected = _json_object(_unb64(protected_b64, "protected"), "protected header")
    return _Jws(
        protected=protected, payload=_unb64(payload_b64, "payload"),
        signing_input=f"{protected_b64}.{payload_b64}".encode("ascii"), signature=_unb64(sig_b64, "signature"),
    )


def _jwk(value: object) -> JWK:
    if not isinstance(value, dict):
        raise AcmeProblem("malformed", "jwk is not a JSON object")
    try:
        jwk = cast(JWK, JWK.from_json(value))
    except (DeserializationError, ValueError, TypeError, KeyError) as e:
        raise AcmeProblem("malformed", f"jwk is not a usable public key: {e}") from e
    if not isinstance(jwk, JWKEC | JWKRSA) or jwk.public_key() != jwk:  # a public key, not a private one
        raise AcmeProblem("malformed", "jwk must be an EC or RSA public key")
    return jwk


def _verify(jws: _Jws, jwk: JWK, alg: str) -> None:
    try:
        ok = JWASignature.from_json(alg).verify(jwk.key, jws.signing_input, jws.signature)
    except (ValueError, TypeError, AttributeError) as e:
        raise AcmeProblem("malformed", f"the JWS signature cannot be checked with {alg}: {e}") from e
    if not ok:
        raise AcmeProblem("malformed", "the JWS signature does not verify")


def _thumbprint(jwk: JWK) -> str:
    return _b64(jwk.thumbprint())  # RFC 7638, SHA-256


@dataclass(slots=True, kw_only=True)
class _Account:
    id: str
    jwk: JWK
    thumbprint: str
    member: MemberId
    eab_kid: str
    created_at: datetime


@dataclass(slots=True, kw_only=True)
class _Challenge:
    id: str
    authz_id: str
    token: str
    status: str = "pending"  # pending -> processing -> valid | invalid
    validated: datetime | None = None
    error: dict[str, Any] | None = None


@dataclass(slots=True, kw_only=True)
class _Authz:
    id: str
    account_id: str
    order_id: str
    identifier: str
    expires: datetime
    challenge: _Challenge
    status: str = "pending"  # pending -> valid | invalid


@dataclass(slots=True, kw_only=True)
class _Order:
    id: str
    account_id: str
    identifiers: tuple[str, ...]
    authz_ids: tuple[str, ...]
    expires: datetime
    status: str = "pending"
    cert_id: str | None = None
    error: dict[str, Any] | None = None


class AcmeServer:
    """The ACME state (accounts, orders, nonces) of one running CA, in memory.

    ``base_url`` is where the shell serves it (``http://host:port/acme``); it can be set after the port is
    bound, before the first request. ``validity`` is the lifetime of issued certificates (short in tests).
    Accounts live as long as the process: after a restart a client posts newAccount again (with its EAB key).
    """

    def __init__(self, ca: DevCA, *, eab: Mapping[str, EabKey] | None = None, validity: timedelta,
                 base_url: str = "", eab_dir: Path | None = None) -> None:
        if validity <= timedelta(0):
            raise PkiError(f"ACME certificate validity {validity} is not positive")
        self.ca = ca
        self.validity = validity
        self.base_url = base_url.rstrip("/")
        self.eab: dict[str, EabKey] = dict(eab or {})
        self.eab_dir = eab_dir  # keys issued there by `gateway pki acme-eab` are read at each newAccount
        self._nonces: OrderedDict[str, None] = OrderedDict()
        self._accounts: dict[str, _Account] = {}
        self._by_thumbprint: dict[str, str] = {}
        self._orders: dict[str, _Order] = {}
        self._authz: dict[str, _Authz] = {}
        self._challenges: dict[str, _Challenge] = {}
        self._certs: dict[str, tuple[str, str]] = {}  # cert id -> (account id, PEM chain)

    def add_eab(self, key: EabKey) -> EabKey:
        self.eab[key.kid] = key
        return key

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    # ---- nonces ---------------------------------------------------------------------------------------

    def new_nonce(self) -> str:
        nonce = _b64(secrets.token_bytes(16))
        self._nonces[nonce] = None
        while len(self._nonces) > MAX_NONCES:
            self._nonces.popitem(last=False)
        return nonce

    def _use_nonce(self, nonce: object) -> None:
        if not isinstance(nonce, str) or nonce not in self._nonces:
            raise AcmeProblem("badNonce", "the nonce is unknown, used already or expired; take the fresh one "
                                          "in this answer's Replay-Nonce")
        del self._nonces[nonce]

    # ---- answers --------------------------------------------------------------------------------------

    def _json(self, status: int, doc: Mapping[str, Any], location: str | None = None,
              links: tuple[str, ...] = ()) -> AcmeAnswer:
        headers = {"Replay-Nonce": self.new_nonce(), "Cache-Control": "no-store"}
        if location:
            headers["Location"] = location
        if links:
            headers["Link"] = ", ".join(links)
        return AcmeAnswer(status=status, body=json.dumps(doc).encode(), content_type="application/json",
                          headers=headers)

    def problem(self, problem: AcmeProblem) -> AcmeAnswer:
        return AcmeAnswer(status=problem.status, body=json.dumps(problem.document()).encode(),
                          content_type=PROBLEM_TYPE,
                          headers={"Replay-Nonce": self.new_nonce(), "Cache-Control": "no-store"})

    def directory(self) -> AcmeAnswer:
        doc = {
            "newNonce": self.url("new-nonce"), "newAccount": self.url("new-account"),
            "newOrder": self.url("new-order"), "revokeCert": self.url("revoke-cert"),
            "keyChange": self.url("key-change"),
            "meta": {"externalAccountRequired": True, "website": "docs/pki.md"},
        }
        return AcmeAnswer(status=200, body=json.dumps(doc).encode(), content_type="application/json")

    # ---- POST -----------------------------------------------------------------------------------------

    def post(self, path: str, content_type: str, body: bytes, *, now: datetime) -> AcmeAnswer | Http01Check:
        """Answer a POST to ``{base_url}/{path}``; a challenge response returns the :class:`Http01Check` the
        shell must run (then :meth:`complete_challenge`). Every refusal is a problem document."""
        try:
            return self._post(path, content_type, body, now=now)
        except AcmeProblem as p:
            return self.problem(p)

    def _post(self, path: str, content_type: str, body: bytes, *, now: datetime) -> AcmeAnswer | Http01Check:
        # (1) the media type and size (RFC 8555 6.2)
        if content_type != JOSE_TYPE:
            raise AcmeProblem("malformed", f"Content-Type must be {JOSE_TYPE}", status=415)
        if len(body) > MAX_BODY_BYTES:
            raise AcmeProblem("malformed", f"the request is larger than {MAX_BODY_BYTES} bytes", status=413)
        # (2) a flattened JWS whose protected header names an allowed algorithm
        jws = _parse_jws(body)
        header = jws.protected
        alg = header.get("alg")
        if alg not in SIGNATURE_ALGS:
            raise AcmeProblem("badSignatureAlgorithm", f"alg {alg!r} is not accepted; use one of "
                                                       f"{', '.join(SIGNATURE_ALGS)}")
        # (3) the nonce, once (before anything else can leak whether the rest is right)
        self._use_nonce(header.get("nonce"))
        # (4) the url header is the URL posted to (RFC 8555 6.4)
        if header.get("url") != self.url(path):
            raise AcmeProblem("unauthorized", f"the JWS url {str(header.get('url'))[:200]!r} is not the URL "
                                              f"posted to ({self.url(path)})")
        if path in ("revoke-cert", "key-change"):
            raise AcmeProblem("malformed", f"{path} is not offered by the development CA (revoke with `gateway pki "
                                           "revoke`; a new account key means a new account)", status=405)
        # (5) the key: jwk for newAccount only, kid (an account URL) otherwise; the signature
        has_jwk, has_kid = "jwk" in header, "kid" in header
        if has_jwk == has_kid:
            raise AcmeProblem("malformed", "the protected header must hold exactly one of jwk and kid")
        if path == "new-account":
            if not has_jwk:
                raise AcmeProblem("malformed", "newAccount is signed with the account key's jwk, not a kid")
            jwk = _jwk(header["jwk"])
            _verify(jws, jwk, alg)
            return self._new_account(jwk, jws.payload, now=now)
        if has_jwk:
            raise AcmeProblem("malformed", f"{path} must be signed with the account's kid, not a jwk")
        account = self._account_of(header["kid"])
        _verify(jws, account.jwk, alg)
        # (6) the resource
        kind, _, rid = path.partition("/")
        if path == "new-order":
            return self._new_order(account, jws.payload, now=now)
        if kind == "acct" and rid == account.id:
            return self._json(200, self._account_doc(account), location=self.url(path))
        if kind == "authz":
            return self._json(200, self._authz_doc(self._owned(self._authz, rid, account, "authorization"), now))
        if kind == "chall":
            return self._challenge(self._owned(self._challenges, rid, account, "challenge"), jws.payload,
                                   account)
        if kind == "order":
            order = self._owned(self._orders, rid, account, "order")
            return self._json(200, self._order_doc(order, now), location=self.url(path))
        if kind == "finalize":
            return self._finalize(self._owned(self._orders, rid, account, "order"), jws.payload, now=now)
        if kind == "cert":
            owner, chain = self._certs.get(rid, ("", ""))
            if owner != account.id:
                raise AcmeProblem("unauthorized", f"certificate {rid[:40]!r} is not this account's", status=404)
            return AcmeAnswer(status=200, body=chain.encode("ascii"), content_type=PEM_CHAIN_TYPE,
                              headers={"Replay-Nonce": self.new_nonce()})
        raise AcmeProblem("malformed", f"no ACME resource {path[:100]!r}", status=404)

    def _account_of(self, kid: object) -> _Account:
        prefix = self.url("acct/")
        if not isinstance(kid, str) or not kid.startswith(prefix):
            raise AcmeProblem("accountDoesNotExist", f"kid {str(kid)[:200]!r} is not an account URL of this "
                                                     "server")
        account = self._accounts.get(kid[len(prefix):])
        if account is None:
            raise AcmeProblem("accountDoesNotExist", "no such account (the CA may have restarted); post "
                                                     "newAccount again")
        return account

    def _owned(self, table: Mapping[str, Any], rid: str, account: _Account, what: str) -> Any:
        item = table.get(rid)
        if item is None:
            raise AcmeProblem("malformed", f"no {what} {rid[:40]!r}", status=404)
        owner = item.account_id if hasattr(item, "account_id") else self._authz[item.authz_id].account_id
        if owner != account.id:
            raise AcmeProblem("unauthorized", f"{what} {rid[:40]!r} belongs to another account")
        return item

    # ---- accounts (RFC 8555 7.3) ------------------------------------------------------------------

    def _account_doc(self, account: _Account) -> dict[str, Any]:
        return {"status": "valid", "orders": self.url(f"acct/{account.id}/orders"),
                "externalAccountBinding": {"kid": account.eab_kid}, "member": str(account.member)}

    def _new_account(self, jwk: JWK, payload: bytes, *, now: datetime) -> AcmeAnswer:
        request = _json_object(payload, "newAccount payload")
        thumbprint = _thumbprint(jwk)
        # (a) a key that has an account already gets it back (7.3.1)
        existing = self._by_thumbprint.get(thumbprint)
        if existing is not None:
            account = self._accounts[existing]
            return self._json(200, self._account_doc(account), location=self.url(f"acct/{account.id}"))
        if request.get("onlyReturnExisting") is True:
            raise AcmeProblem("accountDoesNotExist", "no account has this key")
        if request.get("termsOfServiceAgreed") not in (None, True):
            raise AcmeProblem("malformed", "termsOfServiceAgreed must be true if given")
        # (b) external account binding (7.3.4)
        binding = request.get("externalAccountBinding")
        if binding is None:
            raise AcmeProblem("externalAccountRequired", "this CA needs an externalAccountBinding made with an "
                                                         "EAB key it issued for a member (gateway pki acme-eab)")
        if not isinstance(binding, dict):
            raise AcmeProblem("malformed", "externalAccountBinding is not a JSON object")
        inner = _parse_jws(json.dumps(binding).encode())
        ih = inner.protected
        if ih.get("alg") != "HS256":
            raise AcmeProblem("badSignatureAlgorithm", f"externalAccountBinding alg {ih.get('alg')!r}: HS256 "
                                                       "is required")
        if "nonce" in ih:
            raise AcmeProblem("malformed", "externalAccountBinding must not carry a nonce (RFC 8555 7.3.4)")
        if ih.get("url") != self.url("new-account"):
            raise AcmeProblem("unauthorized", "externalAccountBinding url is not the newAccount URL")
        eab_kid = ih.get("kid")
        if self.eab_dir is not None and isinstance(eab_kid, str) and eab_kid not in self.eab:
            try:
                self.eab.update(load_eab(self.eab_dir))
            except PkiError as e:
                raise AcmeProblem("serverInternal", f"the CA's EAB keys cannot be read: {e.message}") from e
        key = self.eab.get(eab_kid) if isinstance(eab_kid, str) else None
        if key is None:
            raise AcmeProblem("unauthorized", f"externalAccountBinding kid {str(ih.get('kid'))[:80]!r} is not an "
                                              "EAB key of this CA")
        expected = hmac.new(key.hmac_key, inner.signing_input, "sha256").digest()
        if not hmac.compare_digest(expected, inner.signature):
            raise AcmeProblem("unauthorized", "externalAccountBinding MAC does not verify with the EAB key")
        try:
            bound = cast(JWK, JWK.from_json(_json_object(inner.payload, "externalAccountBinding payload")))
        except (DeserializationError, ValueError, TypeError, KeyError) as e:
            raise AcmeProblem("malformed", f"externalAccountBinding payload is not a JWK: {e}") from e
        if _thumbprint(bound) != thumbprint:
            raise AcmeProblem("unauthorized", "externalAccountBinding binds another key than the one that "
                                              "signed the request")
        # (c) the account, acting for the EAB key's member
        account = _Account(id=secrets.token_urlsafe(12), jwk=jwk, thumbprint=thumbprint, member=key.member,
                           eab_kid=key.kid, created_at=now)
        self._accounts[account.id] = account
        self._by_thumbprint[thumbprint] = account.id
        return self._json(201, self._account_doc(account), location=self.url(f"acct/{account.id}"))

    # ---- orders, authorizations, challenges (7.4, 7.5, 8.3) ----------------------------------------

    def _new_order(self, account: _Account, payload: bytes, *, now: datetime) -> AcmeAnswer:
        request = _json_object(payload, "newOrder payload")
        identifiers = request.get("identifiers")
        if not isinstance(identifiers, list) or not identifiers:
            raise AcmeProblem("malformed", "newOrder needs a non-empty identifiers list")
        if len(identifiers) > MAX_IDENTIFIERS:
            raise AcmeProblem("rejectedIdentifier", f"at most {MAX_IDENTIFIERS} identifiers per order")
        if "notBefore" in request or "notAfter" in request:
            raise AcmeProblem("malformed", "this CA sets the validity itself; leave out notBefore/notAfter")
        names: list[str] = []
        for ident in identifiers:
            if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
                raise AcmeProblem("malformed", "an identifier is an object with type and value")
            if ident.get("type") != "dns":
                raise AcmeProblem("unsupportedIdentifier", f"identifier type {str(ident.get('type'))[:40]!r}: "
                                                           "only dns (the security server's host name)")
            value = ident["value"].lower()
            if value.startswith("*.") or not _DNS.fullmatch(value):
                raise AcmeProblem("rejectedIdentifier", f"{ident['value'][:100]!r} is not a host name")
            names.append(value)
        order = _Order(id=secrets.token_urlsafe(12), account_id=account.id, identifiers=tuple(dict.fromkeys(names)),
                       authz_ids=(), expires=now + ORDER_LIFETIME)
        authz_ids = []
        for name in order.identifiers:
            authz_id = secrets.token_urlsafe(12)
            chall = _Challenge(id=secrets.token_urlsafe(12), authz_id=authz_id, token=_b64(secrets.token_bytes(32)))
            self._authz[authz_id] = _Authz(id=authz_id, account_id=account.id, order_id=order.id, identifier=name,
                                           expires=order.expires, challenge=chall)
            self._challenges[chall.id] = chall
            authz_ids.append(authz_id)
        order.authz_ids = tuple(authz_ids)
        self._orders[order.id] = order
        return self._json(201, self._order_doc(order, now), location=self.url(f"order/{order.id}"))

    def _expire(self, order: _Order, now: datetime) -> None:
        if order.status in ("pending", "ready") and now >= order.expires:
            order.status = "invalid"
            order.error = AcmeProblem("malformed", "the order expired").document()

    def _order_doc(self, order: _Order, now: datetime) -> dict[str, Any]:
        self._expire(order, now)
        doc: dict[str, Any] = {
            "status": order.status, "expires": _time(order.expires),
            "identifiers": [{"type": "dns", "value": v} for v in order.identifiers],
            "authorizations": [self.url(f"authz/{a}") for a in order.authz_ids],
            "finalize": self.url(f"finalize/{order.id}"),
        }
        if order.cert_id is not None:
            doc["certificate"] = self.url(f"cert/{order.cert_id}")
        if order.error is not None:
            doc["error"] = order.error
        return doc

    def _authz_doc(self, authz: _Authz, now: datetime) -> dict[str, Any]:
        if authz.status == "pending" and now >= authz.expires:
            authz.status = "expired"
        c = authz.challenge
        chall: dict[str, Any] = {"type": "http-01", "url": self.url(f"chall/{c.id}"), "status": c.status,
                                 "token": c.token}
        if c.validated is not None:
            chall["validated"] = _time(c.validated)
        if c.error is not None:
            chall["error"] = c.error
        return {"status": authz.status, "expires": _time(authz.expires),
                "identifier": {"type": "dns", "value": authz.identifier}, "challenges": [chall]}

    def _challenge(self, chall: _Challenge, payload: bytes, account: _Account) -> AcmeAnswer | Http01Check:
        if payload != b"" and _json_object(payload, "challenge response") != {}:
            raise AcmeProblem("malformed", "an http-01 challenge response is the empty object {}")
        authz = self._authz[chall.authz_id]
        if payload == b"" or chall.status != "pending":  # POST-as-GET, or asked again: its state
            return self._json(200, self._challenge_doc(chall), links=(f'<{self.url(f"authz/{authz.id}")}>;rel="up"',))
        chall.status = "processing"
        return Http01Check(challenge_id=chall.id, identifier=authz.identifier, token=chall.token,
                           key_authorization=f"{chall.token}.{account.thumbprint}")

    def _challenge_doc(self, chall: _Challenge) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": "http-01", "url": self.url(f"chall/{chall.id}"), "status": chall.status,
                               "token": chall.token}
        if chall.error is not None:
            doc["error"] = chall.error
        return doc

    def complete_challenge(self, check: Http01Check, *, ok: bool, detail: str, now: datetime,
                           problem: ProblemType = "incorrectResponse") -> AcmeAnswer:
        """Record the shell's http-01 fetch: the challenge, its authorization and the order move on."""
        chall = self._challenges[check.challenge_id]
        authz = self._authz[chall.authz_id]
        order = self._orders[authz.order_id]
        if ok:
            chall.status, chall.validated = "valid", now
            authz.status = "valid"
            if order.status == "pending" and all(self._authz[a].status == "valid" for a in order.authz_ids):
                order.status = "ready"
        else:
            chall.status = "invalid"
            chall.error = AcmeProblem(problem, detail).document()
            authz.status = "invalid"
            if order.status == "pending":
                order.status = "invalid"
                order.error = chall.error
        return self._json(200, self._challenge_doc(chall), links=(f'<{self.url(f"authz/{authz.id}")}>;rel="up"',))

    # ---- finalize (7.4) -------------------------------------------------------------------------------

    def _finalize(self, order: _Order, payload: bytes, *, now: datetime) -> AcmeAnswer:
        self._expire(order, now)
        if order.status != "ready":
            raise AcmeProblem("orderNotReady", f"the order is {order.status}, not ready (every authorization must "
                                               "be valid first)")
        request = _json_object(payload, "finalize payload")
        der = _unb64(request.get("csr"), "csr")
        try:
            csr = x509.load_der_x509_csr(der)
        except ValueError as e:
            raise AcmeProblem("badCSR", f"csr is not a DER certificate signing request: {e}") from e
        account = self._accounts[order.account_id]
        # the identity the CSR asks for, and whether this account's member may have it
        try:
            kind, identity = certprofile.csr_identity(csr)
        except GatewayError as e:
            raise AcmeProblem("badCSR", f"the CSR does not follow the certificate profile: {e.message}") from e
        owner = identity if isinstance(identity, MemberId) else identity.owner
        if owner != account.member:
            what = "member" if isinstance(identity, MemberId) else "security server"
            raise AcmeProblem("unauthorized", f"the CSR names {what} {identity}, but this account's EAB key was "
                                              f"issued for member {account.member}")
        assert isinstance(identity, MemberId | SecurityServerId)
        try:
            cert = self.ca.issue(csr, kind=kind, expected_identity=identity, now=now, validity=self.validity)
        except PkiError as e:
            raise AcmeProblem("badCSR", e.message) from e
        chain = keys.cert_pem(cert) + self.ca.ca_cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        cert_id = secrets.token_urlsafe(12)
        self._certs[cert_id] = (account.id, chain)
        order.status, order.cert_id = "valid", cert_id
        return self._json(200, self._order_doc(order, now), location=self.url(f"order/{order.id}"))


def _time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
