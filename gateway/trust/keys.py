"""Private keys, PEM files, fingerprints and raw signatures (pure, apart from the small file helpers).

Key types: ECDSA P-256 (the default: fast to sign and verify, docs/performance.md), RSA 2048 and 3072.
Private keys are stored as PKCS#8 PEM, optionally encrypted with a passphrase (the software token's PIN).
:func:`write_private_key` creates the file with mode 0600 from the start (never a moment with wider
permissions) and replaces the target atomically.

Signature algorithm names are those of the RFC 9421 HTTP signature algorithm registry, which the global
configuration (``docs/globalconf.md``) and message signatures use:

==================== ============================================================
``ecdsa-p256-sha256`` ECDSA over P-256 with SHA-256; the signature is DER-encoded
``rsa-v1_5-sha256``   RSASSA-PKCS1-v1_5 with SHA-256
==================== ============================================================

Note that RFC 9421 itself carries ``ecdsa-p256-sha256`` signatures as the raw ``r||s`` form; the DER form
here is what the global configuration uses. :func:`der_to_raw_ecdsa` and :func:`raw_to_der_ecdsa` convert.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from gateway.errors import PkiError, TrustError
from gateway.files import private_dir

KeyType = Literal["ec-p256", "rsa-2048", "rsa-3072"]
SignatureAlg = Literal["ecdsa-p256-sha256", "rsa-v1_5-sha256"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

KEY_TYPES: tuple[KeyType, ...] = ("ec-p256", "rsa-2048", "rsa-3072")
SIGNATURE_ALGS: tuple[SignatureAlg, ...] = ("ecdsa-p256-sha256", "rsa-v1_5-sha256")
MIN_RSA_BITS = 2048  # bits; below this RSA is not accepted anywhere (NIST SP 800-131A)

# Immutable parameter objects, made once rather than per signature (they sit on the exchange's hot path).
ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
_SHA256: Final = hashes.SHA256()
_PKCS1V15: Final = padding.PKCS1v15()


def generate_private_key(key_type: KeyType = "ec-p256") -> PrivateKey:
    """Generate a fresh private key of one of :data:`KEY_TYPES`.

    Raises:
        PkiError: an unknown key type.
    """
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise PkiError(f"unknown key type {key_type!r}; expected one of {', '.join(KEY_TYPES)}")


def key_type_of(key: PrivateKey | PublicKey) -> KeyType:
    """The :data:`KeyType` of a key (private or public).

    Raises:
        PkiError: the key is of a type or size this gateway does not use.
    """
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ec-p256"
        raise PkiError(f"EC key on curve {key.curve.name} is not allowed; only P-256 (secp256r1) is")
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size == 2048:
            return "rsa-2048"
        if key.key_size == 3072:
            return "rsa-3072"
        raise PkiError(f"RSA key of {key.key_size} bits is not allowed; only 2048 or 3072 bits are")
    raise PkiError(f"key type {type(key).__name__} is not allowed; use ECDSA P-256 or RSA 2048/3072")


def private_key_to_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM of a private key, encrypted with ``passphrase`` if one is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def load_private_key_pem(data: bytes, passphrase: bytes | None = None) -> PrivateKey:
    """Load a PEM private key (PKCS#8 or traditional), decrypting it with ``passphrase`` if needed.

    Raises:
        PkiError: not a PEM key, wrong or missing passphrase, or a key type that is not allowed.
    """
    try:
        key: PrivateKeyTypes = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as e:  # encrypted without passphrase, or passphrase given for a clear key
        raise PkiError(f"private key: {e}") from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise PkiError(f"private key cannot be loaded (bad PEM or wrong passphrase): {e}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"private key of type {type(key).__name__} is not allowed")
    key_type_of(key)
    return key


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a temporary file created with ``mode`` next to ``path``, then rename it."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_private_key(path: str | Path, key: PrivateKey, passphrase: bytes | None = None) -> None:
    """Write a private key as PKCS#8 PEM with mode 0600, atomically (temp file, then ``os.replace``).

    The temporary file is created by ``mkstemp`` (``O_CREAT | O_EXCL``, mode 0600), so the key is never
    readable by others, not even for a moment.

    Raises:
        OSError: the file cannot be written.
    """
    _write_atomic(Path(path), private_key_to_pem(key, passphrase), 0o600)


def write_public_file(path: str | Path, data: bytes) -> None:
    """Write a public file (certificate, CSR, index) with mode 0644, atomically.

    Raises:
        OSError: the file cannot be written.
    """
    _write_atomic(Path(path), data, 0o644)


def read_private_key(path: str | Path, passphrase: bytes | None = None) -> PrivateKey:
    """Read a private key PEM file.

    Raises:
        PkiError: the file is missing, unreadable, or not an allowed key.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise PkiError(f"private key file {path} cannot be read: {e.strerror or e}") from e
    return load_private_key_pem(data, passphrase)


def load_certificate(data: bytes) -> x509.Certificate:
    """Load a certificate from PEM or DER bytes.

    Raises:
        TrustError: the bytes are not a certificate.
    """
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as e:
        raise TrustError(f"not a valid X.509 certificate: {e}") from e


def read_certificate(path: str | Path) -> x509.Certificate:
    """Read a certificate file (PEM or DER).

    Raises:
        TrustError: the file is not a certificate.
        PkiError: the file cannot be read.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise PkiError(f"certificate file {path} cannot be read: {e.strerror or e}") from e
    return load_certificate(data)


def cert_pem(cert: x509.Certificate) -> str:
    """The PEM text of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def cert_sha256_hex(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-256 over the certificate's DER: the fingerprint the global configuration uses."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def public_key_of(cert_or_key: x509.Certificate | PublicKey) -> PublicKey:
    """The public key of a certificate (or the key itself).

    Raises:
        TrustError: the certificate's key is of a type this gateway does not use.
    """
    pub = cert_or_key.public_key() if isinstance(cert_or_key, x509.Certificate) else cert_or_key
    if not isinstance(pub, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TrustError(f"public key of type {type(pub).__name__} is not supported")
    return pub


def signature_alg_for(key: PrivateKey | PublicKey) -> SignatureAlg:
    """The signature algorithm name used with a key.

    Raises:
        PkiError: the key type is not allowed.
    """
    return "ecdsa-p256-sha256" if key_type_of(key) == "ec-p256" else "rsa-v1_5-sha256"


def sign_bytes(key: PrivateKey, data: bytes) -> tuple[SignatureAlg, bytes]:
    """Sign ``data``; returns the algorithm name and the signature (DER for ECDSA).

    Raises:
        PkiError: the key type is not allowed.
    """
    alg = signature_alg_for(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return alg, key.sign(data, ECDSA_SHA256)
    return alg, key.sign(data, _PKCS1V15, _SHA256)


def verify_bytes(cert_or_pubkey: x509.Certificate | PublicKey, alg: str, data: bytes, sig: bytes) -> None:
    """Verify a signature made by :func:`sign_bytes`.

    Raises:
        TrustError: unknown algorithm, algorithm not matching the key, or the signature does not verify.
    """
    pub = public_key_of(cert_or_pubkey)
    # (1) the algorithm is one we know, and matches the key: never let the signer pick a weaker pairing
    if alg not in SIGNATURE_ALGS:
        raise TrustError(f"unknown signature algorithm {alg!r}; expected one of {', '.join(SIGNATURE_ALGS)}")
    try:
        expected = signature_alg_for(pub)
    except PkiError as e:
        raise TrustError(e.message) from e
    if alg != expected:
        raise TrustError(f"signature algorithm {alg!r} does not match the key (expected {expected!r})")
    # (2) the signature verifies
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, data, ECDSA_SHA256)
        else:
            pub.verify(sig, data, _PKCS1V15, _SHA256)
    except (InvalidSignature, ValueError) as e:
        raise TrustError(f"{alg} signature does not verify") from e


def verify_x509_signature(
    public_key: object, signature: bytes, data: bytes, hash_algorithm: hashes.HashAlgorithm | None
) -> None:
    """Verify a signature inside an X.509 structure (certificate, OCSP response, CMS signer info).

    Supports ECDSA and RSA PKCS#1 v1.5 with the structure's hash algorithm.

    Raises:
        TrustError: an unsupported key or hash, or the signature does not verify.
    """
    if hash_algorithm is None:
        raise TrustError("signature has no hash algorithm (only ECDSA and RSA PKCS#1 v1.5 are supported)")
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
        else:
            raise TrustError(f"signatures by {type(public_key).__name__} keys are not supported")
    except (InvalidSignature, ValueError) as e:
        raise TrustError("signature does not verify") from e


def der_to_raw_ecdsa(sig: bytes, *, size: int = 32) -> bytes:
    """Convert a DER ECDSA signature to the fixed-size ``r||s`` form (RFC 9421, JWS).

    Raises:
        TrustError: not a DER ECDSA signature.
    """
    try:
        r, s = decode_dss_signature(sig)
    except ValueError as e:
        raise TrustError("malformed DER ECDSA signature") from e
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def raw_to_der_ecdsa(sig: bytes, *, size: int = 32) -> bytes:
    """Convert a fixed-size ``r||s`` ECDSA signature to DER.

    Raises:
        TrustError: the length is not ``2 * size``.
    """
    if len(sig) != 2 * size:
        raise TrustError(f"raw ECDSA signature has {len(sig)} bytes; expected {2 * size}")
    return encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
