"""The portal's side of OpenID Connect (pure): the provider's discovery document, the authorization request
with PKCE, state and nonce, and the verification of the ID token.

The portal is an ordinary relying party of an ordinary provider (OpenID Connect Core 1.0, the authorization
code flow; RFC 7636 PKCE with ``S256``). JOSE is joserfc's (the engine authlib builds on); the claim rules are
authlib's ``CodeIDToken``. Nothing here does I/O: the shell fetches the documents and passes their bytes in.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gateway.errors import TrustError, Unauthorized

ALGORITHMS = ("ES256", "RS256")  # the ID token signatures the portal accepts (never "none", never HMAC)
SUBJECT = re.compile(r"[A-Z]{2}[0-9A-Za-z-]{1,40}")  # a subject id with its country prefix: EE38001085718
MAX_TOKEN_BYTES = 16 * 2**10  # bytes; an ID token longer than this is refused before it is parsed


@dataclass(frozen=True, slots=True, kw_only=True)
class Provider:
    """What the portal uses of the provider's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SignIn:
    """One sign-in under way: what the portal sent and must find again in the answer."""

    state: str
    nonce: str
    code_verifier: str

    @classmethod
    def new(cls) -> SignIn:
        return cls(
            state=secrets.token_urlsafe(24), nonce=secrets.token_urlsafe(24), code_verifier=secrets.token_urlsafe(48)
        )

    def to_json(self) -> str:
        return json.dumps({"state": self.state, "nonce": self.nonce, "code_verifier": self.code_verifier})

    @classmethod
    def from_json(cls, text: str) -> SignIn:
        """Raises: Unauthorized: not a sign-in this portal started."""
        try:
            d = json.loads(text)
            return cls(state=str(d["state"]), nonce=str(d["nonce"]), code_verifier=str(d["code_verifier"]))
        except (ValueError, KeyError, TypeError) as e:
            raise Unauthorized(
                "the sign-in was refused: its state cookie is malformed", hint="start the sign-in again"
            ) from e


@dataclass(frozen=True, slots=True, kw_only=True)
class Citizen:
    """A verified ID token's subject: the only source of whose data the portal shows."""

    subject: str
    name: str
    expires_at: datetime


def parse_discovery(data: bytes, *, issuer: str) -> Provider:
    """The provider from its ``/.well-known/openid-configuration`` document.

    Raises:
        TrustError: not JSON, a missing endpoint, an ``issuer`` other than the configured one (OpenID Connect
            Discovery 1.0 section 4.3), no ``S256`` PKCE or no signature algorithm the portal accepts.
    """
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise TrustError(f"the provider's discovery document is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise TrustError("the provider's discovery document is not a JSON object")
    if doc.get("issuer") != issuer:
        raise TrustError(
            f"the provider's discovery document names issuer {str(doc.get('issuer'))[:200]!r}, not {issuer!r}",
            hint="[portal] issuer must be the provider's exact issuer URL",
        )
    fields = {}
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        value = doc.get(key)
        if not isinstance(value, str) or not value.startswith(("https://", "http://")):
            raise TrustError(f"the provider's discovery document has no {key}")
        fields[key] = value
    if "S256" not in (doc.get("code_challenge_methods_supported") or []):
        raise TrustError("the provider does not offer PKCE with S256 (code_challenge_methods_supported)")
    if not set(doc.get("id_token_signing_alg_values_supported") or []) & set(ALGORITHMS):
        raise TrustError(f"the provider signs ID tokens with none of {', '.join(ALGORITHMS)}")
    return Provider(issuer=issuer, **fields)


def parse_jwks(data: bytes) -> KeySet:
    """The provider's signing keys from its JWKS document.

    Raises:
        TrustError: not a JWK set.
    """
    try:
        return KeySet.import_key_set(json.loads(data))
    except (ValueError, TypeError, KeyError, JoseError) as e:
        raise TrustError(f"the provider's JWKS document is not a valid key set: {e}") from e


def authorization_url(provider: Provider, *, client_id: str, redirect_uri: str, sign_in: SignIn) -> str:
    """The authorization request (OpenID Connect Core 1.0 section 3.1.2.1) with PKCE (RFC 7636 section 4.3)."""
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid",
            "state": sign_in.state,
            "nonce": sign_in.nonce,
            "code_challenge": create_s256_code_challenge(sign_in.code_verifier),
            "code_challenge_method": "S256",
        }
    )
    sep = "&" if "?" in provider.authorization_endpoint else "?"
    return f"{provider.authorization_endpoint}{sep}{query}"


def verify_id_token(
    token: str,
    keys: KeySet,
    *,
    issuer: str,
    client_id: str,
    nonce: str | None,
    now: datetime,
    leeway: int,
) -> Citizen:
    """The citizen an ID token names, if the token is genuine, for this portal, and current.

    ``nonce`` is the sign-in's nonce on the callback, None when a session's token is checked again (its nonce
    was checked when it was first received).

    Raises:
        Unauthorized: (1) too long or not a JWS, (2) a signature that no provider key verifies or an algorithm
            other than ES256/RS256, (3) the wrong issuer or audience, expired or not yet valid, a nonce other
            than the sign-in's, (4) a subject that is not a subject id with a country prefix.
    """
    # (1) size and form
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized(f"the ID token is longer than {MAX_TOKEN_BYTES} bytes")
    # (2) the signature, by a key of the provider's JWKS, with an accepted algorithm
    try:
        decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
    except (JoseError, ValueError, TypeError) as e:
        raise Unauthorized(
            f"the ID token's signature does not verify: {e}", hint="sign in again through the identity provider"
        ) from e
    # (3) issuer, audience, expiry, nonce (OpenID Connect Core 1.0 section 3.1.3.7)
    options: dict[str, Any] = {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": client_id},
        "sub": {"essential": True},
        "exp": {"essential": True},
    }
    if nonce is not None:
        options["nonce"] = {"essential": True, "value": nonce}
    claims = CodeIDToken(decoded.claims, decoded.header, options, {"nonce": nonce} if nonce else {})
    try:
        claims.validate(now=int(now.timestamp()), leeway=leeway)
    except JoseError as e:
        raise Unauthorized(f"the ID token was refused: {e}", hint="sign in again") from e
    # (4) the subject
    subject = claims["sub"]
    if not isinstance(subject, str) or not SUBJECT.fullmatch(subject):
        raise Unauthorized(
            f"the ID token's subject {str(subject)[:60]!r} is not a subject id with a country "
            "prefix (e.g. EE38001085718)"
        )
    name = claims.get("name")
    return Citizen(
        subject=subject,
        name=name if isinstance(name, str) else subject,
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
    )


__all__ = [
    "ALGORITHMS",
    "SUBJECT",
    "Citizen",
    "Provider",
    "SignIn",
    "authorization_url",
    "parse_discovery",
    "parse_jwks",
    "verify_id_token",
]
