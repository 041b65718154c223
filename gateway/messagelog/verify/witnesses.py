"""Step 8 of the archive verification: the witnesses' cosignatures of the checkpoints (pure).

docs/witness.md section 5. The witness policy comes from the archive's global configurations, which the anchor
vouches for (step 1): for each verified checkpoint, the policy for the log's server
(:meth:`GlobalConf.witness_policy`) in the configuration in force at its timestamp (:meth:`TrustSet.at`). Then:

a. each line of the checkpoint's ``cosignatures`` member parses as a cosignature (c2sp.org/tlog-cosignature@v1.0.1);
   a line from a key the policy does not name is ignored (c2sp.org/signed-note), one from a key it names must
   verify over the note's text, else it is a finding (altered or forged);
b. the checkpoint is **witnessed** when at least ``quorum`` of the policy's witnesses have a verified
   cosignature of it; ``quorum`` is the policy's unless the auditor sets another (``--witness-quorum``), which
   the report says;
c. a checkpoint below the quorum is still **covered** when a larger checkpoint of the archive is witnessed and
   the archive's records reproduce both roots: the witnesses saw a tree that contains it, so no other tree of
   its size can ever be cosigned by them;
d. a checkpoint neither witnessed nor covered is a ``witness-quorum`` finding. With no policy in force, nothing
   is required (the summary says "policy none"), unless the auditor asks for a quorum, which then cannot be met.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from gateway.errors import TrustError
from gateway.globalconf.model import WitnessPolicy
from gateway.identifiers import SecurityServerId
from gateway.messagelog import checkpoint as cp
from gateway.messagelog.archive import CheckpointData
from gateway.messagelog.verify.checkpoints import VerifiedCheckpoint
from gateway.messagelog.verify.report import Finding, WitnessSummary
from gateway.messagelog.verify.trustset import TrustSet
from gateway.trust.cosignature import parse_line, verify


def _describe(policy: WitnessPolicy, version: int) -> str:
    names = ", ".join(w.name for w in policy.witnesses)
    return f"quorum {policy.quorum} of {len(policy.witnesses)} witnesses ({names}; configuration version {version})"


def check_witnesses(
    entries: Sequence[CheckpointData], verified: Sequence[VerifiedCheckpoint], trust: TrustSet,
    server: SecurityServerId, *, reproduced: Collection[int], quorum: int | None = None,
) -> tuple[WitnessSummary, list[Finding]]:
    """Step 8 (module docstring) over the verified checkpoints; ``reproduced`` are the sizes whose roots the
    archive's records reproduce (step 5); ``quorum`` the auditor's, if given."""
    findings: list[Finding] = []
    witnessed: dict[int, int] = {}  # checkpoint number -> verified witnesses
    required_of: dict[int, int] = {}
    described: str | None = None
    changes: set[tuple[int, int]] = set()
    for v in verified:
        where = f"checkpoint {v.number} (size {v.size})"
        _, conf = trust.at(v.gen_time)
        policy = conf.witness_policy(server)
        if policy is None:
            if quorum:
                findings.append(Finding(where=where, problem="witness-quorum",
                                        message=f"--witness-quorum {quorum} asks for cosignatures, but the global "
                                                f"configuration in force (version {conf.version}) has no witness "
                                                f"policy for {server}, so no witness key can be trusted"))
            continue
        described = described or _describe(policy, conf.version)
        required = policy.quorum if quorum is None else quorum
        if required != policy.quorum:
            changes.add((policy.quorum, required))
        required_of[v.number] = required
        # (8a) the cosignature lines, each by a key of the policy verified over the note's text
        entry = entries[v.number - 1]
        text = cp.parse_note(entry.note).text
        keys = policy.keys()
        good: set[str] = set()
        for n, line in enumerate((entry.cosignatures or b"").decode("utf-8", "replace").splitlines(), 1):
            if not line:
                continue
            try:
                c = parse_line(line)
            except TrustError as e:
                findings.append(Finding(where=where, problem="cosignature", message=f"line {n}: {e.message}"))
                continue
            key = keys.get(c.name)
            if key is None or key.key_id != c.key_id:
                continue  # not a witness of the policy (c2sp.org/signed-note: unknown keys are ignored)
            try:
                verify(c, text, key)
            except TrustError as e:
                findings.append(Finding(where=where, problem="cosignature",
                                        message=f"line {n}: {e.message} (altered or forged)"))
                continue
            good.add(c.name)
        witnessed[v.number] = len(good)
    # (8b) witnessed; (8c) covered by a larger witnessed checkpoint whose root the records reproduce too
    ok = [v for v in verified if v.number in witnessed and witnessed[v.number] >= required_of[v.number]]
    largest = max((v.size for v in ok if v.size in reproduced), default=-1)
    covered = 0
    for v in verified:
        if v.number not in witnessed or v in ok:
            continue
        if v.size in reproduced and v.size < largest:
            covered += 1
            continue
        # (8d) neither
        findings.append(Finding(
            where=f"checkpoint {v.number} (size {v.size})", problem="witness-quorum",
            message=f"cosigned by {witnessed[v.number]} witness(es) of the policy, below the quorum of "
                    f"{required_of[v.number]}, and no larger witnessed checkpoint of the archive contains it",
        ))
    for was, now in sorted(changes):
        findings.insert(0, Finding(where="archive", problem="witness-quorum", severity="note",
                                   message=f"quorum {'lowered' if now < was else 'raised'} from {was} to {now} "
                                           "by --witness-quorum"))
    applied = quorum if quorum is not None else (min(required_of.values()) if required_of else None)
    return WitnessSummary(policy=described or "none", required=applied, witnessed=len(ok), covered=covered,
                          checked=len(verified)), findings


__all__ = ["WitnessSummary", "check_witnesses"]
