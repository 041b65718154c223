"""The signed envelope of the global configuration: sign (central server) and parse (clients) (pure).

Wire form (docs/globalconf.md), the whole file RFC 8785 canonical JSON::

    {"signatures":[{"alg":"ecdsa-p256-sha256","keyid":"<hex>","sig":"<base64>"}],"signed":{...}}

Each signature covers the canonical bytes of ``signed``. Because the file is canonical and ``"signatures"``
sorts before ``"signed"``, those bytes are exactly the received bytes between ``"signed":`` and the final
``}``; :func:`parse_envelope` slices them out of the input rather than re-serialising.

Signature checking against the anchor is :mod:`gateway.globalconf.trust`'s job; this module only offers
:func:`verify_signature` for one signature and one certificate.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.errors import (
    ConfigError,
    GlobalConfError,
    InvalidSignatureValue,
    MalformedGlobalConf,
    PkiError,
    TrustError,
)
from gateway.globalconf.model import cert_fingerprint
from gateway.trust.canonical import canonical_bytes, loads_canonical
from gateway.trust.keys import SIGNATURE_ALGS, PrivateKey, SignatureAlg, sign_bytes, verify_bytes

Alg = SignatureAlg  # RFC 9421 algorithm registry names
ALGORITHMS: tuple[Alg, ...] = SIGNATURE_ALGS
MAX_SIGNATURES = 8  # per envelope; two during a key rollover, the rest is headroom against abuse

_HEX256_RE = re.compile(r"[0-9a-f]{64}")
_B64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Signature:
    alg: Alg
    keyid: str  # hex SHA-256 of the signing certificate (DER)
    sig: bytes

    def to_dict(self) -> dict[str, str]:
        return {"alg": self.alg, "keyid": self.keyid, "sig": base64.b64encode(self.sig).decode("ascii")}


def verify_signature(signature: Signature, cert: x509.Certificate, data: bytes) -> None:
    """Check one signature over ``data`` with the public key of ``cert``.

    Raises:
        TrustError: the key type does not fit ``alg``, or the signature does not verify.
    """
    try:
        verify_bytes(cert, signature.alg, data, signature.sig)
    except TrustError as e:
        raise InvalidSignatureValue(f"signature by key {signature.keyid[:16]}: {e.message}") from e


def _spki(public: Any) -> bytes:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return bytes(public.public_bytes(serialization.Encoding.DER, spki))


def sign_envelope(signed: Mapping[str, Any], keys: Sequence[tuple[PrivateKey, x509.Certificate]]) -> bytes:
    """Sign ``signed`` with every (private key, certificate) pair and return the canonical envelope bytes.

    The caller (the central server) is responsible for ``signed`` being a valid configuration; see
    :func:`gateway.globalconf.model.normalise` for the list ordering the clients require.

    Raises:
        ConfigError: no key, a duplicate key, a key type gateway.trust.keys does not allow, or a key that does
            not belong to its certificate.
        TrustError: ``signed`` cannot be serialised as canonical JSON.
    """
    if not keys:
        raise ConfigError("no configuration-signing key to sign the global configuration with")
    signed_bytes = canonical_bytes(signed)
    signatures: list[dict[str, str]] = []
    seen: set[str] = set()
    for key, cert in keys:
        keyid = cert_fingerprint(cert)
        if keyid in seen:
            raise ConfigError(f"configuration-signing key {keyid[:16]} is listed twice")
        seen.add(keyid)
        if _spki(key.public_key()) != _spki(cert.public_key()):
            raise ConfigError(f"the private key given for certificate {keyid[:16]} does not belong to it")
        try:
            alg, sig = sign_bytes(key, signed_bytes)
        except PkiError as e:
            raise ConfigError(f"configuration-signing key {keyid[:16]}: {e.message}") from e
        signatures.append(Signature(alg=alg, keyid=keyid, sig=sig).to_dict())
    return canonical_bytes({"signatures": signatures, "signed": signed})


def _malformed(message: str) -> GlobalConfError:
    return MalformedGlobalConf(f"global configuration envelope: {message}")


def _parse_signature(value: Any, i: int) -> Signature:
    where = f"signatures[{i}]"
    if not isinstance(value, dict) or set(value) != {"alg", "keyid", "sig"}:
        raise _malformed(f"{where} must be an object with exactly the keys alg, keyid, sig")
    alg, keyid, sig = value["alg"], value["keyid"], value["sig"]
    if alg not in ALGORITHMS:
        raise _malformed(f"{where}.alg {str(alg)[:40]!r} is not one of {', '.join(ALGORITHMS)}")
    if not isinstance(keyid, str) or not _HEX256_RE.fullmatch(keyid):
        raise _malformed(f"{where}.keyid must be 64 lower-case hex digits")
    if not isinstance(sig, str) or not _B64_RE.fullmatch(sig):
        raise _malformed(f"{where}.sig must be standard base64")
    try:
        raw = base64.b64decode(sig, validate=True)
    except binascii.Error as e:
        raise _malformed(f"{where}.sig must be standard base64: {e}") from e
    return Signature(alg=alg, keyid=keyid, sig=raw)


def parse_envelope(data: bytes) -> tuple[dict[str, Any], bytes, tuple[Signature, ...]]:
    """Check the envelope's form and return (``signed`` as a dict, its exact bytes, the signatures).

    Checks only form (rule 1 of docs/globalconf.md): canonical JSON, the two keys, well-formed signature
    entries. Nothing here says whether a signature is valid.

    Raises:
        GlobalConfError: not UTF-8 JSON, not canonical, or not of the envelope shape.
    """
    try:
        obj = loads_canonical(data, what="global configuration")
    except TrustError as e:
        raise MalformedGlobalConf(e.message) from e
    except RecursionError as e:  # deeply nested hostile input
        raise MalformedGlobalConf("global configuration is nested too deeply") from e
    if not isinstance(obj, dict) or set(obj) != {"signatures", "signed"}:
        raise _malformed("must be an object with exactly the keys signatures and signed")
    sigs, signed = obj["signatures"], obj["signed"]
    if not isinstance(sigs, list) or not sigs:
        raise _malformed("signatures must be a non-empty list")
    if len(sigs) > MAX_SIGNATURES:
        raise _malformed(f"has {len(sigs)} signatures; at most {MAX_SIGNATURES} are accepted")
    if not isinstance(signed, dict):
        raise _malformed("signed must be an object")
    signatures = tuple(_parse_signature(s, i) for i, s in enumerate(sigs))
    # The file is canonical, so it is exactly prefix + signed bytes + "}": hash what we received.
    prefix = b'{"signatures":' + canonical_bytes(sigs) + b',"signed":'
    if not (data.startswith(prefix) and data.endswith(b"}")):  # pragma: no cover - implied by canonical form
        raise _malformed("is not laid out as canonical JSON")
    return signed, data[len(prefix):-1], signatures
