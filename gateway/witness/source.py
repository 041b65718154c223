"""What a pusher needs from a log whose checkpoints it pushes to witnesses (a seam; docs/witness.md).

Two logs implement it: each message-log origin (:mod:`gateway.messagelog`) and the admin audit log
(:mod:`gateway.admin`). Checkpoint origins (the first line of a checkpoint note) are
``<log origin>/messagelog`` for a message log and ``<server id>/audit`` for the audit log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.trust.cosignature import Cosignature

AUDIT_SUFFIX = "/audit"  # checkpoint origin of a server's audit log = its server id + this


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedCheckpoint:
    """A signed checkpoint of a log, as a witness gets it."""

    size: int
    note: bytes = field(repr=False)  # the signed note as signed by the log (no cosignatures)
    signing_cert: bytes = field(repr=False)  # DER of the certificate whose key signed the note


class CheckpointSource(Protocol):
    """One log whose checkpoints are pushed (module docstring)."""

    @property
    def origin(self) -> str:
        """The checkpoint origin line."""
        ...

    async def latest(self) -> SignedCheckpoint | None:
        """The newest signed checkpoint, or None while there is none."""
        ...

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """The RFC 6962 consistency proof between two sizes of the log (empty when ``old_size`` is 0)."""
        ...

    async def add_cosignatures(self, size: int, cosignatures: Sequence[Cosignature]) -> None:
        """Keep verified cosignatures of the checkpoint at ``size`` (durably; duplicates are ignored)."""
        ...


__all__ = ["AUDIT_SUFFIX", "CheckpointSource", "SignedCheckpoint"]
