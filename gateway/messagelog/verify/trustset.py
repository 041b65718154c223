"""Step 1 of the archive verification: the global configurations that the anchor vouches for (pure).

Every envelope in the archive must verify against the anchor (signature by an anchored key, known format, the
anchor's instance; expiry is not checked, these are historical documents). They name the trusted CAs (with
their OCSP policy) and TSAs; :meth:`TrustSet.at` gives the one in force at a moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.errors import GatewayError
from gateway.globalconf.anchor import Anchor
from gateway.globalconf.model import GlobalConf
from gateway.globalconf.trust import TrustedGlobalConf
from gateway.messagelog.verify.report import Finding

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TrustSet:
    """The global configurations that verify against the anchor, oldest version first."""

    confs: tuple[GlobalConf, ...]

    def at(self, t: datetime) -> tuple[int, GlobalConf]:
        """The index and configuration in force at ``t``, or the newest one."""
        best = len(self.confs) - 1
        for i in range(len(self.confs) - 1, -1, -1):
            c = self.confs[i]
            if c.issued_at <= t < c.expires_at:
                return i, c
        return best, self.confs[best]


def load_trust(anchor: Anchor, envelopes: Sequence[bytes], names: Sequence[str] | None = None,
               ) -> tuple[TrustSet | None, list[Finding]]:
    """Step 1: the configurations of the archive that verify against ``anchor``; findings for the others."""
    findings: list[Finding] = []
    confs: dict[int, GlobalConf] = {}
    for i, data in enumerate(envelopes):
        where = f"global configuration {names[i] if names else i + 1}"
        try:
            # rules 1-3 only; `now` merely sets cached_expired, which a historical document may well be
            trusted = TrustedGlobalConf(anchor, data, now=_EPOCH)
        except GatewayError as e:
            findings.append(Finding(where=where, problem="configuration", message=e.message))
            continue
        conf = trusted.current
        assert conf is not None
        confs[conf.version] = conf
    if not confs:
        findings.append(Finding(
            where="archive", problem="configuration",
            message="no global configuration in the archive verifies against the anchor, so no CA or TSA "
                    "can be trusted",
        ))
        return None, findings
    return TrustSet(tuple(confs[v] for v in sorted(confs))), findings


__all__ = ["TrustSet", "load_trust"]
