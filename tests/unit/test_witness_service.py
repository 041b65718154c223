"""The witness's decision (gateway.witness.service): every status of c2sp.org/tlog-witness@v1.0.0, the parsing
rules, and the reference vectors of the C2SP cosignature (docs/witness.md section 1).

Real certificates from a throw-away CA, real ECDSA checkpoints of the message-log format, a real global
configuration with a witness policy; no sockets.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from globalconf_sim import GlobalConfSimulator
from pkihelpers import ThrowawayPki, make_pki

from gateway.errors import PayloadTooLarge, PeerError, RequestError
from gateway.globalconf.model import GlobalConf, cert_to_pem
from gateway.identifiers import SecurityServerId
from gateway.messagelog import merkle
from gateway.messagelog.checkpoint import Checkpoint, checkpoint_origin, sign_checkpoint
from gateway.protocol.signatures import KeySigner
from gateway.trust.cosignature import WitnessKey, parse_line, verify
from gateway.witness.service import (
    MAX_PROOF_LINES,
    AddCheckpoint,
    Cosigned,
    KeyWitnessSigner,
    LogState,
    Refused,
    decide,
    encode_request,
    logging_server,
    parse_known_size,
    parse_request,
)

NOW = datetime.now(UTC).replace(microsecond=0)
SS1 = SecurityServerId.parse("DEV/GOV/1001/ss1")  # the logging server
SS2 = SecurityServerId.parse("DEV/GOV/1002/ss2")  # the witness's server
SS3 = SecurityServerId.parse("DEV/GOV/1002/ss3")
ORIGIN = checkpoint_origin(str(SS1))
NOTES: dict[tuple[str, bytes, int, int], bytes] = {}
WITNESS = KeyWitnessSigner(f"{SS2}/witness", ed25519.Ed25519PrivateKey.generate())


def leaves(n: int, tag: bytes = b"") -> list[bytes]:
    return [merkle.leaf_hash(tag + str(i).encode()) for i in range(n)]


@dataclass
class World:
    pki: ThrowawayPki
    conf: GlobalConf
    log_signer: KeySigner  # DEV/GOV/1001's signing certificate and key

    @property
    def cert_header(self) -> str:
        return base64.b64encode(self.log_signer.cert.public_bytes(serialization.Encoding.DER)).decode("ascii")

    def note(self, tree: Sequence[bytes], *, origin: str = ORIGIN, signer: KeySigner | None = None) -> bytes:
        """The signed checkpoint of ``tree`` (one per tree and key: ECDSA signatures are randomised)."""
        signer = signer or self.log_signer
        cp = Checkpoint(origin=origin, size=len(tree), root_hash=merkle.root(tree))
        key = (origin, cp.root_hash, cp.size, id(signer))
        if key not in NOTES:
            NOTES[key] = sign_checkpoint(cp, signer)
        return NOTES[key]

    def body(self, old: int, tree: Sequence[bytes], *, proof: Sequence[bytes] | None = None,
             origin: str = ORIGIN, signer: KeySigner | None = None, base: Sequence[bytes] | None = None) -> bytes:
        if proof is None:
            proof = merkle.consistency_proof(list(base if base is not None else tree), old, len(tree)) if old else []
        return encode_request(old, proof, self.note(tree, origin=origin, signer=signer))

    def decide(self, body: bytes, stored: LogState | None = None, *, peer: SecurityServerId = SS1,
               cert_header: str | None = "", conf: GlobalConf | None = None) -> Cosigned | Refused:
        header = self.cert_header if cert_header == "" else cert_header
        return decide(parse_request(body), peer=peer, cert_header=header, conf=conf or self.conf, signer=WITNESS,
                      stored=stored, now=NOW)

    def state(self, tree: Sequence[bytes]) -> LogState:
        return LogState(origin=ORIGIN, size=len(tree), root_hash=merkle.root(tree), note=self.note(tree),
                        updated_at=NOW - timedelta(minutes=1))


def conf_dict(pki: ThrowawayPki, witness: WitnessKey | None = WITNESS.key) -> dict[str, object]:
    sim = GlobalConfSimulator(now=NOW)
    d = copy.deepcopy(sim.signed)
    d["certificate_authorities"] = [{"name": "Test CA", "certificate": cert_to_pem(pki.ca_cert),
                                     "ocsp_urls": ["http://127.0.0.1:8888"]}]
    if witness is not None:
        d["witness_policies"] = [{"server": str(SS1), "quorum": 1, "witnesses": [
            {"vkey": witness.vkey, "url": "https://127.0.0.1:5502/witness", "server": str(SS2)}]}]
    return d


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    pki = make_pki(Path(tmp_path_factory.mktemp("pki")))
    issued = pki.issue_sign("DEV/GOV/1001")
    return World(pki=pki, conf=GlobalConf.from_dict(conf_dict(pki)),
                 log_signer=KeySigner(key=issued.key, cert=issued.cert))


def refused(decision: Cosigned | Refused, status: int, contains: str = "") -> Refused:
    assert isinstance(decision, Refused), decision
    assert decision.status == status, decision
    assert contains in decision.message, decision.message
    return decision


# ---- 200 -----------------------------------------------------------------------------------------------------


def test_first_checkpoint_is_cosigned_and_becomes_the_state(world: World) -> None:
    tree = leaves(5)
    decision = world.decide(world.body(0, tree))
    assert isinstance(decision, Cosigned)
    assert decision.state.size == 5 and decision.state.root_hash == merkle.root(tree)
    assert decision.state.note == world.note(tree) and decision.state.updated_at == NOW
    # The one line verifies with the witness's key over the checkpoint text, at now.
    line = decision.body()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    text = world.note(tree).split(b"\n\n")[0] + b"\n"
    assert verify(parse_line(line), text, WITNESS.key) == int(NOW.timestamp())


def test_a_consistent_larger_checkpoint_is_cosigned(world: World) -> None:
    tree = leaves(13)
    decision = world.decide(world.body(5, tree), world.state(tree[:5]))
    assert isinstance(decision, Cosigned) and decision.state.size == 13


def test_the_same_checkpoint_again_is_cosigned_again(world: World) -> None:
    tree = leaves(5)
    decision = world.decide(world.body(5, tree, proof=[]), world.state(tree))
    assert isinstance(decision, Cosigned) and decision.state.size == 5


# ---- 400, 403, 404, 409, 422 -----------------------------------------------------------------------------------


def test_old_size_beyond_the_checkpoint_is_400(world: World) -> None:
    refused(world.decide(world.body(9, leaves(5), proof=[])), 400, "old size 9 is larger than")


def test_unknown_origin_kinds_are_404(world: World) -> None:
    refused(world.decide(world.body(0, leaves(2), origin="example.com/log")), 404, "not a message log or audit")
    refused(world.decide(world.body(0, leaves(2), origin="DEV/GOV/1002/ss3/messagelog"), peer=SS3), 404,
            "no witness policy for DEV/GOV/1002/ss3")


def test_a_policy_naming_another_witness_is_404(world: World) -> None:
    other = WitnessKey.of_private_key(WITNESS.name, ed25519.Ed25519PrivateKey.generate())  # same name, other key
    conf = GlobalConf.from_dict(conf_dict(world.pki, other))
    refused(world.decide(world.body(0, leaves(2)), conf=conf), 404, "not witnessed by DEV/GOV/1002/ss2/witness")
    refused(world.decide(world.body(0, leaves(2)), conf=GlobalConf.from_dict(conf_dict(world.pki, None))), 404)


def test_another_servers_origin_is_403(world: World) -> None:
    refused(world.decide(world.body(0, leaves(2)), peer=SS3), 403, "is a log of DEV/GOV/1001/ss1, not of the calling")


@pytest.mark.parametrize(("header", "contains"), [
    (None, "needs the log's signing certificate in the X-Gateway-Log-Certificate header"),
    ("not base64!", "is not the base64 of a DER certificate"),
    (base64.b64encode(b"\x30\x03\x02\x01\x01").decode(), "is not the base64 of a DER certificate"),
    ("A" * 20_000, "is longer than"),
])
def test_missing_or_bad_certificate_header_is_403(world: World, header: str | None, contains: str) -> None:
    refused(world.decide(world.body(0, leaves(2)), cert_header=header), 403, contains)


def test_a_certificate_of_another_member_or_ca_or_kind_is_403(world: World, tmp_path: Path) -> None:
    other_member = world.pki.issue_sign("DEV/GOV/1002")
    body = world.body(0, leaves(2), signer=KeySigner(key=other_member.key, cert=other_member.cert))
    der = base64.b64encode(other_member.cert.public_bytes(serialization.Encoding.DER)).decode()
    refused(world.decide(body, cert_header=der), 403, "names DEV/GOV/1002, not DEV/GOV/1001")
    stranger = make_pki(tmp_path / "other", name="Other CA").issue_sign("DEV/GOV/1001")
    body = world.body(0, leaves(2), signer=KeySigner(key=stranger.key, cert=stranger.cert))
    der = base64.b64encode(stranger.cert.public_bytes(serialization.Encoding.DER)).decode()
    refused(world.decide(body, cert_header=der), 403, "not issued by a CA trusted")
    auth = world.pki.issue_auth(SS1)
    der = base64.b64encode(auth.cert.public_bytes(serialization.Encoding.DER)).decode()
    refused(world.decide(world.body(0, leaves(2)), cert_header=der), 403, "not a sign")


def test_a_note_not_signed_by_the_certified_key_is_403(world: World) -> None:
    other = world.pki.issue_sign("DEV/GOV/1001")  # a valid certificate of the member, but not the key that signed
    der = base64.b64encode(other.cert.public_bytes(serialization.Encoding.DER)).decode()
    refused(world.decide(world.body(0, leaves(2)), cert_header=der), 403, "no signature by the log key")
    # A signature line by the right key over other text: the signature fails.
    body = world.body(0, leaves(2))
    tampered = body.replace(base64.b64encode(merkle.root(leaves(2))), base64.b64encode(merkle.root(leaves(3))))
    refused(world.decide(tampered), 403, "does not verify")


def test_wrong_old_size_is_409_with_the_known_size(world: World) -> None:
    tree = leaves(8)
    r = refused(world.decide(world.body(3, tree), world.state(tree[:5])), 409, "old size 3 is not 5")
    assert r.known_size == 5 and r.body() == b"5\n" and r.content_type == "text/x.tlog.size"
    r = refused(world.decide(world.body(3, tree)), 409)  # never cosigned: we know 0
    assert r.body() == b"0\n"


def test_a_proof_with_old_zero_is_422(world: World) -> None:
    body = world.body(0, leaves(4), proof=[merkle.leaf_hash(b"x")])
    r = refused(world.decide(body), 422, "from old size 0 must be empty")
    assert r.evidence is None


def test_same_size_other_root_is_422_with_evidence(world: World) -> None:
    seen, forked = leaves(6), leaves(6, b"fork")
    r = refused(world.decide(world.body(6, forked, proof=[]), world.state(seen)), 422, "two histories")
    ev = r.evidence
    assert ev is not None and ev.reason == "fork" and ev.origin == ORIGIN and ev.peer == str(SS1)
    assert ev.note == world.note(forked) and ev.stored_note == world.note(seen) and ev.recorded_at == NOW


def test_an_inconsistent_history_is_422_with_evidence(world: World) -> None:
    seen = leaves(5)
    forked = leaves(5, b"fork") + leaves(4, b"more")
    body = world.body(5, forked, base=forked)  # a valid proof of the forked tree: it cannot reach our root
    r = refused(world.decide(body, world.state(seen)), 422, "5 -> 9")
    assert r.evidence is not None and r.evidence.reason == "inconsistent" and r.evidence.proof
    # a malformed proof (wrong length) is refused the same way
    r = refused(world.decide(world.body(5, leaves(9), proof=[merkle.leaf_hash(b"x")]), world.state(seen)), 422)
    assert r.evidence is not None


# ---- parsing -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "contains"), [
    (b"old 1\n", "no blank line"),
    (b"old 01\n\n", "must start with 'old <size>'"),
    (b"new 1\n\n", "must start with 'old <size>'"),
    (b"old 99999999999999999999\n\n", "must start with 'old <size>'"),
    (b"old 1\nnot a hash\n\n", "proof line 1 is not the standard base64"),
    (b"old 1\n\xff\n\n", "must be ASCII"),
    (b"old 0\n\nnot a note\n", "add-checkpoint checkpoint:"),
])
def test_malformed_bodies_are_400(body: bytes, contains: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body)
    assert info.value.status == 400 and contains in info.value.message


def test_too_many_proof_lines_and_too_large_bodies(world: World) -> None:
    line = base64.b64encode(hashlib.sha256(b"h").digest())
    body = b"old 1\n" + b"\n".join([line] * (MAX_PROOF_LINES + 1)) + b"\n\n" + world.note(leaves(2))
    with pytest.raises(RequestError, match="64 lines, more than 63"):
        parse_request(body)
    ok = b"old 1\n" + b"\n".join([line] * MAX_PROOF_LINES) + b"\n\n" + world.note(leaves(2))
    assert len(parse_request(ok).proof) == MAX_PROOF_LINES
    with pytest.raises(PayloadTooLarge) as info:
        parse_request(ok, max_bytes=100)
    assert info.value.status == 413


def test_parsed_request_keeps_the_bytes_received(world: World) -> None:
    req = parse_request(world.body(0, leaves(3)))
    assert isinstance(req, AddCheckpoint) and req.origin == ORIGIN and req.old_size == 0
    assert req.note == world.note(leaves(3)) and req.text == req.note.split(b"\n\n")[0] + b"\n"


def test_encode_request_round_trips_and_the_409_body_parses(world: World) -> None:
    proof = [hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()]
    body = encode_request(7, proof, world.note(leaves(9)))
    assert body.startswith(b"old 7\n") and parse_request(body).proof == tuple(proof)
    assert parse_known_size(b"1234\n") == 1234 and parse_known_size(b"0\n") == 0
    for bad in (b"12", b"012\n", b"-1\n", b"x\n", b"1\n2\n"):
        with pytest.raises(PeerError, match="not '<size>"):
            parse_known_size(bad)


@pytest.mark.parametrize(("origin", "server"), [
    ("DEV/GOV/1001/ss1/messagelog", "DEV/GOV/1001/ss1"),
    ("DEV/GOV/1001/ss1/node2/3/messagelog", "DEV/GOV/1001/ss1"),
    ("DEV/GOV/1001/ss1/audit", "DEV/GOV/1001/ss1"),
    ("DEV/GOV/1001/ss1/x/y/messagelog", None),
    ("DEV/GOV/ss1/audit", None),
    ("example.com/log", None),
])
def test_logging_server_of_an_origin(origin: str, server: str | None) -> None:
    found = logging_server(origin)
    assert (None if found is None else str(found)) == server


# ---- the C2SP reference vector (/work/shared/reference: deterministic demo seeds) ------------------------------


def test_the_demo_witness_key_cosigns_the_reference_checkpoint_to_the_reference_line() -> None:
    seed = hashlib.sha256(b"demo-witness-seed").digest()
    signer = KeyWitnessSigner("gw.example.gov/witness/EE/GOV/70000562/ss1",
                              ed25519.Ed25519PrivateKey.from_private_bytes(seed))
    assert signer.key.vkey == ("gw.example.gov/witness/EE/GOV/70000562/ss1+dc6d88df+"
                               "BPPFhuZgH8m3qD2/9QYelzYUB3ZkcAsSAPu9nEUqp1Fb")
    text = b"gw.example.gov/msglog/EE/GOV/70006317/ss1\n1234\n7veWVtg4hS5Tp+HPv3NUqIFGZGQdsMn7efLRhFf1GoU=\n"
    assert base64.b64decode(text.split(b"\n")[2]) == hashlib.sha256(b"demo-root").digest()
    line = signer.cosign(text, 1767225600).line()
    assert line == ("\u2014 gw.example.gov/witness/EE/GOV/70000562/ss1 3G2I3wAAAABpVbkAd1o7osxUZhoSpIraabafMtpYG3ado"
                    "UExVoyLkjVIKAnqS1jggXrzXODJI6at/jAaI/OfL7jPVhsP/ZsdDEx8Aw==\n").encode()
