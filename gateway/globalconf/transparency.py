"""The federation's transparency parameters in the global configuration (pure). docs/transparency.md section 1.

They travel in the configuration's ``parameters`` object under ``transparency``: ``{"purposes": {code: text},
"portal": "INSTANCE/CLASS/MEMBER/SUBSYSTEM" or null, "embargo_clients": [subsystem ids]}``; the central server
publishes them from its settings (:func:`check_conf`), a security server reads them with
:meth:`TransparencyConf.of`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gateway.errors import IdentifierError, RequestError
from gateway.globalconf.model import GlobalConf
from gateway.identifiers import ClientId, SubsystemId

MAX_TEXT = 500  # characters of a purpose text or legal basis
PURPOSE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TransparencyConf:
    """The federation's transparency parameters, as published (docs/globalconf.md)."""

    purposes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    portal: SubsystemId | None = None
    embargo_clients: frozenset[ClientId] = frozenset()

    @classmethod
    def of(cls, conf: GlobalConf) -> TransparencyConf:
        """The parameters of ``conf`` (empty ones when it publishes none or they do not parse: a configuration
        from an older central server, or one a newer one extended)."""
        return _conf_of(conf.parameters.values.get("transparency"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "purposes": dict(self.purposes),
            "portal": None if self.portal is None else str(self.portal),
            "embargo_clients": sorted(str(c) for c in self.embargo_clients),
        }


_EMPTY = TransparencyConf()
_CONF_CACHE: dict[int, tuple[object, TransparencyConf]] = {}


def _conf_of(raw: object) -> TransparencyConf:
    if not isinstance(raw, Mapping):
        return _EMPTY
    hit = _CONF_CACHE.get(id(raw))
    if hit is not None and hit[0] is raw:
        return hit[1]
    parsed = parse_conf(raw)
    if len(_CONF_CACHE) > 16:
        _CONF_CACHE.clear()
    _CONF_CACHE[id(raw)] = (raw, parsed)
    return parsed


def parse_conf(raw: Mapping[str, Any]) -> TransparencyConf:
    """The parameters from their published form; what does not parse is left out (and the central server's
    checks keep it from being published: :func:`check_conf`)."""
    purposes = raw.get("purposes")
    portal = raw.get("portal")
    clients = raw.get("embargo_clients")
    out_purposes = (
        {k: v for k, v in purposes.items() if isinstance(k, str) and PURPOSE_RE.fullmatch(k) and isinstance(v, str)}
        if isinstance(purposes, Mapping)
        else {}
    )
    portal_id: SubsystemId | None = None
    if isinstance(portal, str):
        try:
            portal_id = SubsystemId.parse(portal)
        except IdentifierError:
            portal_id = None
    entitled: set[ClientId] = set()
    if isinstance(clients, list):
        for c in clients:
            try:
                entitled.add(SubsystemId.parse(c))
            except (IdentifierError, TypeError, AttributeError):
                continue
    return TransparencyConf(
        purposes=MappingProxyType(out_purposes), portal=portal_id, embargo_clients=frozenset(entitled)
    )


def check_conf(purposes: Mapping[str, str], portal: str, embargo_clients: list[str]) -> dict[str, Any]:
    """The published form of the parameters, checked (the central server publishes only this).

    Raises:
        RequestError: a purpose code, the portal's or an entitled client's identifier is malformed.
    """
    for code, text in purposes.items():
        if not PURPOSE_RE.fullmatch(code):
            raise RequestError(f"purpose code {code[:80]!r} must match {PURPOSE_RE.pattern}")
        if len(text) > MAX_TEXT:
            raise RequestError(f"the text of purpose {code} is longer than {MAX_TEXT} characters")
    try:
        if portal:
            SubsystemId.parse(portal)
        for c in embargo_clients:
            SubsystemId.parse(c)
    except IdentifierError as e:
        raise RequestError(
            f"transparency parameters: {e.message} (a subsystem id INSTANCE/CLASS/MEMBER/SUBSYSTEM is expected)"
        ) from e
    return {
        "purposes": dict(sorted(purposes.items())),
        "portal": portal or None,
        "embargo_clients": sorted(set(embargo_clients)),
    }


__all__ = ["MAX_TEXT", "PURPOSE_RE", "TransparencyConf", "check_conf", "parse_conf"]
