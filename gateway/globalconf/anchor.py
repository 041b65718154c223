"""The configuration anchor: the out-of-band root of trust for the global configuration.

Pure, except :meth:`Anchor.from_file`, which reads one file. The anchor names the instance, where to
download the configuration and the configuration-signing certificates that clients accept
(docs/globalconf.md, "Anchor"). It is canonical JSON, so its SHA-256 (:func:`anchor_hash`) identifies it
and operators can compare that value with the one their federation authority announces.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography import x509

from gateway.errors import ConfigError, GlobalConfError, MalformedGlobalConf, PkiError, TrustError
from gateway.globalconf.model import (
    DocReader,
    cert_fingerprint,
    cert_to_pem,
    format_time,
)
from gateway.identifiers import check_part
from gateway.trust.canonical import canonical_bytes, loads_canonical
from gateway.trust.keys import key_type_of, public_key_of

ANCHOR_FORMAT = 1
MAX_ANCHOR_BYTES = 1 * 2**20  # bytes; an anchor holds a few certificates, anything larger is not one


@dataclass(frozen=True, slots=True, kw_only=True)
class Anchor:
    instance: str
    generated_at: datetime
    download_urls: tuple[str, ...]  # tried in order
    keys: Mapping[str, x509.Certificate]  # keyid (hex SHA-256 of the DER certificate) -> certificate

    @classmethod
    def from_bytes(cls, data: bytes) -> Anchor:
        """Parse and validate an anchor.

        Raises:
            GlobalConfError: not canonical JSON, or not of the anchor shape (the message names the field).
        """
        try:
            obj = loads_canonical(data, what="anchor")
        except TrustError as e:
            raise MalformedGlobalConf(e.message) from e
        except RecursionError as e:
            raise MalformedGlobalConf("anchor is nested too deeply") from e
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, d: Any) -> Anchor:
        """Validate the parsed anchor document.

        Raises:
            GlobalConfError: a field is missing, unknown or invalid; the message names the field.
        """
        r = DocReader("anchor")
        top = r.obj(d, "(top)", required=("format", "instance", "generated_at", "download_urls", "keys"))
        fmt = r.integer(top["format"], "format", minimum=0)
        if fmt != ANCHOR_FORMAT:
            r.fail("format", f"format {fmt} is not known to this client (it knows {ANCHOR_FORMAT})")
        instance = r.identifier(top["instance"], "instance", lambda s: check_part(s, what="instance code"))
        generated_at = r.time(top["generated_at"], "generated_at")
        urls = r.items(top["download_urls"], "download_urls", r.url, non_empty=True)
        r.sorted_unique(urls, "download_urls", what="URL", order=False)

        def key(v: Any, p: str) -> tuple[str, x509.Certificate]:
            o = r.obj(v, p, required=("keyid", "certificate"))
            keyid = r.fingerprint(o["keyid"], f"{p}.keyid")
            cert = r.certificate(o["certificate"], f"{p}.certificate")
            if cert_fingerprint(cert) != keyid:
                r.fail(f"{p}.keyid", "is not the SHA-256 fingerprint of the certificate")
            try:
                key_type_of(public_key_of(cert))
            except (PkiError, TrustError) as e:
                r.fail(f"{p}.certificate", e.message)
            return keyid, cert

        keys = r.items(top["keys"], "keys", key, non_empty=True)
        r.sorted_unique([k for k, _ in keys], "keys", what="keyid")
        return cls(
            instance=instance, generated_at=generated_at, download_urls=tuple(urls),
            keys=MappingProxyType(dict(keys)),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> Anchor:
        """Read and validate the anchor file installed by the operator (I/O).

        Raises:
            ConfigError: the file cannot be read or is not a valid anchor (the process must not start).
        """
        p = Path(path)
        try:
            with p.open("rb") as f:
                data = f.read(MAX_ANCHOR_BYTES + 1)
        except OSError as e:
            raise ConfigError(
                f"anchor file {p} cannot be read: {e.strerror or e}",
                hint="install the anchor published by the central server (GET {central}/anchor)",
            ) from e
        if len(data) > MAX_ANCHOR_BYTES:
            raise ConfigError(f"anchor file {p} is larger than {MAX_ANCHOR_BYTES} bytes")
        try:
            return cls.from_bytes(data)
        except GlobalConfError as e:
            raise ConfigError(f"anchor file {p} is not a valid anchor: {e.message}") from e

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ANCHOR_FORMAT,
            "instance": self.instance,
            "generated_at": format_time(self.generated_at),
            "download_urls": list(self.download_urls),
            "keys": [
                {"keyid": keyid, "certificate": cert_to_pem(cert)}
                for keyid, cert in sorted(self.keys.items())
            ],
        }

    def to_bytes(self) -> bytes:
        return canonical_bytes(self.to_dict())


def build_anchor(
    instance: str, download_urls: Sequence[str], certs: Iterable[x509.Certificate], now: datetime
) -> bytes:
    """Build the canonical anchor bytes that the central server publishes (``GET {central}/anchor``).

    Raises:
        ConfigError: the instance code, a URL or a certificate is not acceptable in an anchor.
    """
    doc = {
        "format": ANCHOR_FORMAT,
        "instance": instance,
        "generated_at": format_time(now),
        "download_urls": list(download_urls),
        "keys": sorted(
            ({"keyid": cert_fingerprint(c), "certificate": cert_to_pem(c)} for c in certs),
            key=lambda k: k["keyid"],
        ),
    }
    try:
        return Anchor.from_dict(doc).to_bytes()
    except GlobalConfError as e:
        raise ConfigError(f"cannot build the anchor: {e.message}") from e


def anchor_hash(data: bytes) -> str:
    """Hex SHA-256 of the anchor bytes, for comparing an anchor out of band."""
    return hashlib.sha256(data).hexdigest()
