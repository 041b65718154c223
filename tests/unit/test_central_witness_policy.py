"""The central server's witness-policy rules (pure): each rule refuses precisely, a good policy comes out sorted."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.central.registry import WitnessSpec, check_witness_policy
from gateway.errors import IdentifierError, RequestError
from gateway.globalconf.model import MAX_WITNESSES
from gateway.identifiers import SecurityServerId
from gateway.trust.cosignature import WitnessKey

I = "DEV"  # noqa: E741
LOGGER = "DEV/GOV/1001/ss1"


def vkey(name: str, key: ed25519.Ed25519PrivateKey | None = None) -> str:
    return WitnessKey.of_private_key(name, key or ed25519.Ed25519PrivateKey.generate()).vkey


def spec(name: str, server: str = "DEV/GOV/1002/ss2", url: str = "https://ss2.example.org:5500/witness",
         key: ed25519.Ed25519PrivateKey | None = None) -> WitnessSpec:
    return WitnessSpec(vkey=vkey(name, key), url=url, server=server)


def test_a_good_policy_comes_out_sorted_by_witness_name() -> None:
    b, a = spec("DEV/GOV/1003/ss3/witness", "DEV/GOV/1003/ss3"), spec("DEV/GOV/1002/ss2/witness")
    policy = check_witness_policy(LOGGER, quorum=2, witnesses=[b, a], instance=I)
    assert policy.server == SecurityServerId.parse(LOGGER) and policy.quorum == 2
    assert [w.name for w in policy.witnesses] == ["DEV/GOV/1002/ss2/witness", "DEV/GOV/1003/ss3/witness"]
    assert [w.vkey for w in policy.witnesses] == [a.vkey, b.vkey]
    assert policy.witnesses[1].server == SecurityServerId.parse("DEV/GOV/1003/ss3")


SHARED = ed25519.Ed25519PrivateKey.generate()


@pytest.mark.parametrize(("witnesses", "quorum", "message"), [
    ([], 1, "the witness policy of DEV/GOV/1001/ss1 names no witness"),
    ([spec(f"w{i}", url=f"https://h{i}.example.org/witness") for i in range(MAX_WITNESSES + 1)], 1,
     f"names {MAX_WITNESSES + 1} witnesses; at most {MAX_WITNESSES} are allowed"),
    ([WitnessSpec(vkey="w+00000000+AAAA", url="https://h/witness", server="DEV/GOV/1002/ss2")], 1,
     "witness 1: cosignature: vkey signature type is 0x00"),
    ([WitnessSpec(vkey="no-plus-signs", url="https://h/witness", server="DEV/GOV/1002/ss2")], 1,
     "witness 1: cosignature: vkey 'no-plus-signs' is not <name>+<hex key ID>+<base64 key>"),
    ([WitnessSpec(vkey="x" * 600, url="https://h/witness", server="DEV/GOV/1002/ss2")], 1,
     "witness 1: vkey is longer than 512 characters"),
    ([spec("w", url="http://ss2.example.org/witness")], 1,
     "witness 1 (w): URL 'http://ss2.example.org/witness' must be an https:// URL without a query or a final '/'"),
    ([spec("w", url="https://ss2.example.org/witness/")], 1, "must be an https:// URL without a query or a final"),
    ([spec("w", url="https://ss2.example.org/witness?x=1")], 1, "without a query"),
    ([spec("w", url="ftp://ss2.example.org/w")], 1, "must be an http:// or https:// URL with a host"),
    ([spec("w", server="DEV/GOV/1001/other")], 1,
     "witness 1 (w) runs on DEV/GOV/1001/other, a server of DEV/GOV/1001, the logging server's own member"),
    ([spec("w"), spec("w", "DEV/GOV/1003/ss3")], 1, "witness 2 (w): the key name 'w' is listed twice"),
    ([spec("a", key=SHARED), spec("b", key=SHARED)], 1, "witness 2 (b): the same public key is listed as 'a'"),
    ([spec("w")], 0, "the quorum of the witness policy of DEV/GOV/1001/ss1 must be a whole number of at least 1"),
    ([spec("w")], True, "must be a whole number of at least 1, got True"),
    ([spec("w"), spec("v")], 3, "the quorum 3 of the witness policy of DEV/GOV/1001/ss1 is more than the 2"),
])
def test_each_rule_refuses_precisely(witnesses: list[WitnessSpec], quorum: int, message: str) -> None:
    with pytest.raises(RequestError) as e:
        check_witness_policy(LOGGER, quorum=quorum, witnesses=witnesses, instance=I)
    assert message in e.value.message
    assert e.value.status == 400


def test_identifiers_of_another_instance_are_refused() -> None:
    with pytest.raises(IdentifierError, match="belongs to instance 'XX'"):
        check_witness_policy("XX/GOV/1001/ss1", quorum=1, witnesses=[spec("w")], instance=I)
    with pytest.raises(IdentifierError, match="belongs to instance 'XX'"):
        check_witness_policy(LOGGER, quorum=1, witnesses=[spec("w", server="XX/GOV/1002/ss2")], instance=I)
    with pytest.raises(IdentifierError, match="has 3 parts"):
        check_witness_policy(LOGGER, quorum=1, witnesses=[spec("w", server="DEV/GOV/1002")], instance=I)
