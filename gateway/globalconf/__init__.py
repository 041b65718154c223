"""The global configuration client: model, signed envelope, anchor, trust rules, fetcher and updater.

Pure: :mod:`.model`, :mod:`.envelope`, :mod:`.anchor` (except ``Anchor.from_file``), :mod:`.trust`.
I/O: :mod:`.fetcher`, :mod:`.updater`. The wire format is docs/globalconf.md.
"""

from __future__ import annotations

from gateway.globalconf.anchor import Anchor, anchor_hash, build_anchor
from gateway.globalconf.envelope import parse_envelope, sign_envelope
from gateway.globalconf.model import (
    CertificateAuthority,
    GlobalConf,
    GlobalGroup,
    Member,
    Parameters,
    SecurityServer,
    SigningKey,
    Tsa,
)
from gateway.globalconf.trust import TrustedGlobalConf

__all__ = [
    "Anchor",
    "CertificateAuthority",
    "GlobalConf",
    "GlobalGroup",
    "Member",
    "Parameters",
    "SecurityServer",
    "SigningKey",
    "TrustedGlobalConf",
    "Tsa",
    "anchor_hash",
    "build_anchor",
    "parse_envelope",
    "sign_envelope",
]
