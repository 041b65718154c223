"""Authentication of admin API callers: passwords, session tokens, API keys, lock-out (pure).

Nothing here touches a socket or a database; the store hands rows in, the app hands ``now`` in.

- **Passwords** are hashed with Argon2id (argon2-cffi's defaults, RFC 9106's second recommended profile).
  An unknown user name costs the same hash verification as a known one (a dummy hash), so response time
  does not tell which names exist.
- **Session tokens** are JWTs (RFC 7519) signed with ES256 (ECDSA P-256 + SHA-256, RFC 7518 section 3.4) under
  a key named by the ``kid`` header. Only ES256 is accepted: ``alg: none``, HMAC algorithms (the
  "HS256 signed with the public key" confusion) and any other algorithm are refused before any key is used.
  Audience, issuer, expiry, not-before, subject and token id are required. Rotation: a new key signs new
  tokens at once; a retired key still verifies the tokens it signed until they expire (one token lifetime),
  then it is dropped.
- **API keys** are ``gwk_<id>.<secret>``: a 64-bit public id for the lookup and a 256-bit random secret, of
  which only the SHA-256 is stored (a slow hash adds nothing to a secret with 256 bits of entropy). They are
  shown once, carry roles, and can be revoked.
- **Lock-out**: after ``max_failed_logins`` consecutive wrong passwords the account is locked, first for
  ``lockout_seconds``, doubling with every further failure up to ``max_lockout_seconds``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.admin.roles import ROLES, Role
from gateway.errors import AccountLocked, Forbidden, RequestError, Unauthorized

JWT_ALGORITHM = "ES256"  # the only algorithm issued and accepted
API_KEY_PREFIX = "gwk_"
MIN_PASSWORD_LENGTH = 12  # characters
MAX_PASSWORD_LENGTH = 1024  # characters; bounds hashing work on hostile input
MAX_TOKEN_LENGTH = 8192  # characters of a bearer token or API key; a real one is far shorter
_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_API_KEY_RE = re.compile(r"gwk_([0-9a-f]{16})\.([A-Za-z0-9_-]{43})")
_KID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

HASHER = PasswordHasher()


@functools.cache
def _dummy_hash(hasher: PasswordHasher) -> str:
    """Verified against when the user does not exist (made once per hasher, on first need)."""
    return hasher.hash(secrets.token_urlsafe(16))


AuthKind = Literal["jwt", "apikey", "password", "cli"]


def unauthorized(message: str, *, hint: str | None = None) -> RequestError:
    """HTTP 401: the caller is not (or no longer) authenticated."""
    return Unauthorized(message, hint=hint)


def forbidden(message: str) -> RequestError:
    """HTTP 403: authenticated, but none of the caller's roles may do this."""
    return Forbidden(message)


def locked(message: str) -> RequestError:
    """HTTP 429: the account is locked after too many wrong passwords."""
    return AccountLocked(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who is calling, as established by :func:`verify_token` or an API key lookup."""

    name: str  # user name, or "apikey:<id>"
    kind: AuthKind
    roles: frozenset[Role]
    token_id: str | None = None  # the JWT's jti (for logout)
    expires_at: datetime | None = None  # the JWT's exp


def check_roles(principal: Principal, allowed: frozenset[Role], *, operation: str) -> None:
    """Raises: RequestError: 403 if the principal holds none of ``allowed``."""
    if not principal.roles & allowed:
        have = ", ".join(r for r in ROLES if r in principal.roles)
        need = ", ".join(r for r in ROLES if r in allowed)
        raise forbidden(f"{principal.name} (roles: {have}) may not call {operation}; it needs one of: {need}")


# ------------------------------------------------------------------------------------------------ passwords


def check_username(name: str) -> str:
    """Raises: RequestError: the user name is not 1-64 of ``A-Z a-z 0-9 . _ @ -`` (starting alphanumeric)."""
    if not isinstance(name, str) or not _USERNAME_RE.fullmatch(name):
        raise RequestError(
            f"user name {str(name)[:80]!r} is not valid",
            hint="1-64 characters of A-Z a-z 0-9 . _ @ -, starting with a letter or digit",
        )
    return name


def check_password_policy(password: str) -> str:
    """Raises: RequestError: the password is shorter than 12 or longer than 1024 characters."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise RequestError(f"password is shorter than {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise RequestError(f"password is longer than {MAX_PASSWORD_LENGTH} characters")
    return password


def hash_password(password: str, hasher: PasswordHasher = HASHER) -> str:
    """Argon2id hash (PHC string) of a password that meets :func:`check_password_policy`.

    Raises:
        RequestError: the password breaks the policy.
    """
    return hasher.hash(check_password_policy(password))


def verify_password(stored_hash: str | None, password: str, hasher: PasswordHasher = HASHER) -> bool:
    """Whether ``password`` matches; with ``stored_hash=None`` (no such user) the same work is done and the
    answer is False. An over-long password is refused without hashing."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        hasher.verify(stored_hash or _dummy_hash(hasher), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return stored_hash is not None


def needs_rehash(stored_hash: str, hasher: PasswordHasher = HASHER) -> bool:
    """Whether a stored hash uses other parameters than the current ones (then it is replaced at login)."""
    return hasher.check_needs_rehash(stored_hash)


def lockout_until(
    failures: int, now: datetime, *, max_failures: int, base_seconds: int, max_seconds: int
) -> datetime | None:
    """When an account with ``failures`` consecutive wrong passwords is unlocked again (None: not locked).

    The first lock lasts ``base_seconds``; each further failure doubles it, up to ``max_seconds``.
    """
    if failures < max_failures:
        return None
    doublings = min(failures - max_failures, 30)
    return now + timedelta(seconds=min(base_seconds * 2**doublings, max_seconds))


# ------------------------------------------------------------------------------------------ session tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKey:
    """A session-token signing key as stored (``adm_jwt_keys``)."""

    kid: str
    private_pem: bytes
    created_at: datetime
    retired_at: datetime | None = None

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.private_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):  # pragma: no cover - we only store P-256 keys
            raise TypeError(f"session signing key {self.kid} is not an EC key")
        return key


def new_signing_key(now: datetime) -> SigningKey:
    """A fresh P-256 key with a random ``kid``."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SigningKey(kid=secrets.token_urlsafe(12), private_pem=pem, created_at=now)


def usable_keys(keys: Sequence[SigningKey], *, now: datetime, ttl_seconds: int) -> list[SigningKey]:
    """Keys that may still verify a token: active ones, and retired ones for one token lifetime after their
    retirement (a token they signed cannot be valid any longer than that)."""
    grace = timedelta(seconds=ttl_seconds)
    return [k for k in keys if k.retired_at is None or k.retired_at + grace > now]


def active_key(keys: Sequence[SigningKey]) -> SigningKey | None:
    """The newest key that is not retired: it signs new tokens."""
    active = [k for k in keys if k.retired_at is None]
    return max(active, key=lambda k: k.created_at) if active else None


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenPolicy:
    issuer: str  # this security server: "gateway:INSTANCE/CLASS/MEMBER/SERVERCODE"
    audience: str  # "gateway-admin" unless configured
    ttl_seconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenClaims:
    subject: str
    roles: frozenset[Role]
    token_id: str
    issued_at: datetime
    expires_at: datetime
    kid: str


def issue_token(
    key: SigningKey, *, username: str, roles: frozenset[Role], policy: TokenPolicy, now: datetime
) -> tuple[str, TokenClaims]:
    """Sign a session token for ``username``; returns the compact JWT and its claims."""
    issued = now.replace(microsecond=0)
    expires = issued + timedelta(seconds=policy.ttl_seconds)
    claims = TokenClaims(
        subject=username, roles=roles, token_id=secrets.token_urlsafe(16), issued_at=issued, expires_at=expires,
        kid=key.kid,
    )
    payload = {
        "iss": policy.issuer, "aud": policy.audience, "sub": username,
        "iat": int(issued.timestamp()), "nbf": int(issued.timestamp()), "exp": int(expires.timestamp()),
        "jti": claims.token_id, "roles": [r for r in ROLES if r in roles],
    }
    token = jwt.encode(payload, key.private_key(), algorithm=JWT_ALGORITHM, headers={"kid": key.kid})
    return token, claims


def verify_token(
    token: str, *, keys: Mapping[str, ec.EllipticCurvePublicKey], policy: TokenPolicy, now: datetime
) -> TokenClaims:
    """Check a session token and return its claims.

    Raises:
        RequestError: 401 (``Client.Unauthorized``) naming the first rule the token breaks.
    """
    # (1) size and shape, before any parsing work
    if len(token) > MAX_TOKEN_LENGTH:
        raise unauthorized(f"session token is longer than {MAX_TOKEN_LENGTH} characters")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise unauthorized(f"session token is malformed: {e}") from e
    # (2) the algorithm is fixed: refuse "none", HMAC (key confusion) and everything else outright
    alg = header.get("alg")
    if alg != JWT_ALGORITHM:
        raise unauthorized(f"session token algorithm {str(alg)[:20]!r} is not accepted; only {JWT_ALGORITHM} is")
    # (3) the key is named by kid and must be one of ours (active, or retired less than a token lifetime ago)
    kid = header.get("kid")
    if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
        raise unauthorized("session token has no valid 'kid' header")
    key = keys.get(kid)
    if key is None:
        raise unauthorized(f"session token is signed with unknown or retired key {kid!r}", hint="log in again")
    # (4) signature, audience and issuer; times are checked against our clock in (5), not pyjwt's
    try:
        payload: dict[str, Any] = jwt.decode(
            token, key, algorithms=[JWT_ALGORITHM], audience=policy.audience, issuer=policy.issuer,
            options={
                "require": ["iss", "aud", "sub", "exp", "nbf", "iat", "jti"],
                "verify_exp": False, "verify_nbf": False, "verify_iat": False,
            },
        )
    except jwt.InvalidSignatureError as e:
        raise unauthorized("session token signature is not valid") from e
    except jwt.InvalidAudienceError as e:
        raise unauthorized(f"session token is not for this audience (expected {policy.audience!r})") from e
    except jwt.InvalidIssuerError as e:
        raise unauthorized(f"session token was not issued by this server (expected {policy.issuer!r})") from e
    except jwt.MissingRequiredClaimError as e:
        raise unauthorized(f"session token lacks the {e.claim!r} claim") from e
    except jwt.PyJWTError as e:
        raise unauthorized(f"session token is not valid: {e}") from e
    # (5) validity period, against the caller's clock
    try:
        exp = int(payload["exp"])
        nbf = int(payload["nbf"])
        iat = int(payload["iat"])
    except (TypeError, ValueError) as e:
        raise unauthorized("session token times are not integers") from e
    stamp = now.timestamp()
    if stamp >= exp:
        raise unauthorized("session token has expired", hint="log in again")
    if stamp < nbf:
        raise unauthorized("session token is not valid yet")
    if exp - iat > policy.ttl_seconds:
        raise unauthorized("session token lifetime is longer than this server issues")
    # (6) subject and roles
    sub, jti, roles = payload["sub"], payload["jti"], payload.get("roles")
    if not isinstance(sub, str) or not isinstance(jti, str):
        raise unauthorized("session token subject or id is not a string")
    if not isinstance(roles, list) or not all(isinstance(r, str) and r in ROLES for r in roles):
        raise unauthorized("session token roles are malformed")
    issued = datetime.fromtimestamp(iat, tz=now.tzinfo)
    expires = datetime.fromtimestamp(exp, tz=now.tzinfo)
    return TokenClaims(
        subject=sub, roles=frozenset(roles), token_id=jti, issued_at=issued, expires_at=expires, kid=kid,
    )


# ---------------------------------------------------------------------------------------------------- API keys


def new_api_key() -> tuple[str, str, str]:
    """A fresh API key: ``(key_id, secret_digest, full_key)``; only the first two are stored."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return key_id, api_key_digest(secret), f"{API_KEY_PREFIX}{key_id}.{secret}"


def api_key_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def split_api_key(text: str) -> tuple[str, str]:
    """``(key_id, secret)`` of a presented API key.

    Raises:
        RequestError: 401 if it is not of the form ``gwk_<16 hex>.<43 base64url>``.
    """
    m = _API_KEY_RE.fullmatch(text.strip())
    if m is None:
        raise unauthorized("API key is malformed", hint="expected gwk_<id>.<secret> as shown at creation")
    return m.group(1), m.group(2)


def api_key_matches(secret: str, stored_digest: str) -> bool:
    return hmac.compare_digest(api_key_digest(secret), stored_digest)


def parse_authorization(header: str | None) -> tuple[Literal["bearer", "apikey"], str]:
    """Split an ``Authorization`` header: ``Bearer <jwt>`` or X-Road's ``X-Road-ApiKey token=<key>``.

    Raises:
        RequestError: 401 if the header is missing or uses another scheme.
    """
    if not header:
        raise unauthorized(
            "authentication required", hint="send 'Authorization: Bearer <token from /api/v1/login>' or "
            "'Authorization: X-Road-ApiKey token=<API key>'",
        )
    if len(header) > MAX_TOKEN_LENGTH:
        raise unauthorized(f"Authorization header is longer than {MAX_TOKEN_LENGTH} characters")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return "bearer", value
    if scheme.lower() == "x-road-apikey" and value.lower().startswith("token="):
        return "apikey", value[len("token="):].strip()
    raise unauthorized(
        f"Authorization scheme {scheme[:30]!r} is not supported", hint="use Bearer or X-Road-ApiKey token=",
    )
