"""The trusted global configuration: decides whether downloaded bytes may replace what we trust (pure).

Modelled on python-tuf's ``TrustedMetadataSet``: an object that holds the anchor and the currently trusted
configuration, takes bytes and ``now``, and either accepts them or raises. No file, socket or clock here;
:mod:`gateway.globalconf.updater` does the I/O around it.

The rules, in the order of docs/globalconf.md ("Client rules"):

1. the download is canonical JSON of the envelope shape;
2. at least one signature verifies with a key listed in the anchor;
3. ``format`` is known, ``instance`` equals the anchor's, and the document has the exact shape;
4. ``version`` is greater than the trusted one; equal and byte-identical is a no-op; equal with other
   content, or lower, is a rollback;
5. ``expires_at`` is not in the past. A cached copy loaded at start-up is checked by rules 1-3 only; its
   expiry is reported (:attr:`TrustedGlobalConf.cached_expired`, :meth:`require_valid`), not refused, so
   that a server restarted while the central server is down still knows its peers and says clearly why
   it will not exchange messages.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from gateway.errors import GlobalConfError, GlobalConfSignatureInvalid, MalformedGlobalConf, TrustError
from gateway.globalconf.anchor import Anchor
from gateway.globalconf.envelope import parse_envelope, verify_signature
from gateway.globalconf.model import FORMAT, GlobalConf, format_time


def _show(d: dict[str, Any], key: str) -> str:
    """A short JSON rendering of ``d[key]`` for an error message."""
    return "(missing)" if key not in d else json.dumps(d[key])[:40]


def _check_signed(anchor: Anchor, data: bytes) -> tuple[GlobalConf, bytes]:
    """Rules 1-3: return the configuration and the exact signed bytes.

    Raises:
        GlobalConfError: malformed envelope, no valid anchored signature, unknown format, other
            instance, or a configuration that does not have the documented shape.
    """
    # (1) Canonical JSON of the envelope shape; signed_bytes are the received bytes of "signed".
    signed, signed_bytes, signatures = parse_envelope(data)

    # (2) At least one signature by a key in the anchor verifies. Signatures by other keys (a newer key
    #     this anchor does not list yet) are skipped: one valid anchored signature is enough.
    anchored = [s for s in signatures if s.keyid in anchor.keys]
    if not anchored:
        raise GlobalConfSignatureInvalid(
            "global configuration is not signed by any key in the anchor (signed by "
            + ", ".join(s.keyid[:16] for s in signatures) + ")",
            hint="if the federation rolled its configuration-signing key, install the new anchor",
        )
    failures: list[str] = []
    for s in anchored:
        try:
            verify_signature(s, anchor.keys[s.keyid], signed_bytes)
        except TrustError as e:
            failures.append(e.message)
            continue
        break
    else:
        raise GlobalConfSignatureInvalid(
            f"global configuration signature is invalid: {'; '.join(failures)}")

    # (3) A format we know, our instance, then the full shape (paths in the error message).
    if signed.get("format") != FORMAT:
        raise MalformedGlobalConf(
            f"global configuration format {_show(signed, 'format')} is not known to this client "
            f"(it knows {FORMAT})", hint="upgrade this security server",
        )
    if signed.get("instance") != anchor.instance:
        raise MalformedGlobalConf(
            f"global configuration is for instance {_show(signed, 'instance')}, "
            f"but the anchor is for {json.dumps(anchor.instance)}")
    return GlobalConf.from_dict(signed), signed_bytes


class TrustedGlobalConf:
    """The anchor plus the one configuration we currently trust."""

    def __init__(self, anchor: Anchor, cached: bytes | None = None, *, now: datetime) -> None:
        """Start from ``anchor`` and, if given, the cached copy from disk.

        Raises:
            GlobalConfError: the cached copy fails rules 1-3 (it is not used; expiry is only reported).
        """
        self._anchor = anchor
        self._current: GlobalConf | None = None
        self._current_bytes: bytes | None = None
        self._signed_bytes: bytes | None = None
        self.cached_expired = False
        if cached is not None:
            conf, signed_bytes = _check_signed(anchor, cached)
            self._current, self._current_bytes, self._signed_bytes = conf, cached, signed_bytes
            self.cached_expired = conf.is_expired(now)

    @property
    def anchor(self) -> Anchor:
        return self._anchor

    @property
    def current(self) -> GlobalConf | None:
        return self._current

    @property
    def current_bytes(self) -> bytes | None:
        """The exact bytes of the trusted envelope (what the updater writes to its cache)."""
        return self._current_bytes

    def update(self, data: bytes, *, now: datetime) -> GlobalConf:
        """Verify a downloaded envelope and trust it if it passes every rule.

        Returns the trusted configuration: the new one, or the current one if ``data`` carries the same
        version and the same signed content (a no-op; ``current_bytes`` is left unchanged).

        Raises:
            GlobalConfError: any rule fails; what we trusted before stays trusted.
        """
        # (1)-(3) Envelope, anchored signature, format, instance and shape.
        conf, signed_bytes = _check_signed(self._anchor, data)

        # (4) Version: strictly newer, or the very same content again.
        current = self._current
        unchanged = False
        if current is not None:
            if conf.version < current.version:
                raise GlobalConfError(
                    f"global configuration version {conf.version} is older than the trusted version "
                    f"{current.version} (rollback refused)",
                )
            if conf.version == current.version:
                if signed_bytes != self._signed_bytes:
                    raise GlobalConfError(
                        f"global configuration version {conf.version} differs from the trusted copy of the "
                        "same version (rollback refused)",
                    )
                unchanged = True

        # (5) Not expired. Checked for the no-op case too, so that a central server that keeps serving
        #     an expired configuration is reported as such.
        if conf.is_expired(now):
            raise GlobalConfError(
                f"global configuration version {conf.version} expired at {format_time(conf.expires_at)} "
                f"(now {format_time(now)})",
                hint="the central server has not published a fresh configuration; check it and the clocks",
            )
        if unchanged:
            assert current is not None
            return current
        self._current, self._current_bytes, self._signed_bytes = conf, data, signed_bytes
        self.cached_expired = False
        return conf

    def is_expired(self, now: datetime) -> bool:
        """True when there is no configuration or the trusted one is past ``expires_at``."""
        return self._current is None or self._current.is_expired(now)

    def require_valid(self, now: datetime) -> GlobalConf:
        """The trusted configuration, if it may be used for message exchange now.

        Raises:
            GlobalConfError: (``OutdatedGlobalConf``) there is none, or it has expired.
        """
        conf = self._current
        if conf is None:
            raise GlobalConfError("no valid global configuration has been downloaded yet")
        if conf.is_expired(now):
            raise GlobalConfError(
                f"global configuration version {conf.version} expired at {format_time(conf.expires_at)}",
                hint="check that the central server is reachable and publishing",
            )
        return conf

    def replace_anchor(self, anchor: Anchor) -> None:
        """Install a new anchor (key rollover).

        The trusted configuration is checked again under the new anchor. If none of its signatures is by
        a key the new anchor lists, it is dropped together with its version, as the operator no longer
        trusts the key that vouched for it; the next download starts afresh.

        Raises:
            GlobalConfError: the new anchor is for another instance (nothing is changed).
        """
        if anchor.instance != self._anchor.instance:
            raise MalformedGlobalConf(
                f"new anchor is for instance {anchor.instance!r}, not {self._anchor.instance!r}")
        self._anchor = anchor
        if self._current_bytes is not None:
            try:
                _check_signed(anchor, self._current_bytes)
            except GlobalConfError:
                self._current = self._current_bytes = self._signed_bytes = None
                self.cached_expired = False
