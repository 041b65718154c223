"""GlobalConf: strict parsing with precise paths, exact round trips, and the hot-path look-ups."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from globalconf_sim import GlobalConfSimulator, fake_fingerprint, make_key_pair

from gateway.errors import GlobalConfError, MalformedGlobalConf
from gateway.globalconf.model import GlobalConf, normalise
from gateway.identifiers import GlobalGroupId, MemberId, SecurityServerId, SubsystemId

MALFORMED = MalformedGlobalConf.type_name()

NOW = datetime(2026, 11, 27, 13, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sim() -> GlobalConfSimulator:
    return GlobalConfSimulator(now=NOW)


@pytest.fixture(scope="module")
def conf(sim: GlobalConfSimulator) -> GlobalConf:
    return GlobalConf.from_dict(sim.signed)


def test_round_trip_is_exact(sim: GlobalConfSimulator, conf: GlobalConf) -> None:
    assert conf.to_dict() == sim.signed
    assert GlobalConf.from_dict(conf.to_dict()) == conf


def test_fields(conf: GlobalConf) -> None:
    assert conf.instance == "DEV"
    assert conf.version == 1
    assert conf.issued_at == NOW
    assert conf.expires_at == datetime(2026, 11, 27, 13, 10, 0, tzinfo=UTC)
    assert conf.central_url == "http://127.0.0.1:4000"
    assert [str(m.id) for m in conf.members] == ["DEV/GOV/1001", "DEV/GOV/1002"]
    assert conf.members[1].subsystems == ("provider", "registry")
    assert conf.security_servers[2].address == "[::1]:5503"
    assert conf.certificate_authorities[0].ocsp_urls == ("http://127.0.0.1:8888",)
    assert conf.timestamping_authorities[0].url == "http://127.0.0.1:8889"
    assert len(conf.signing_keys) == 1
    assert conf.ocsp_freshness_seconds == 3600
    assert conf.timestamp_grace_seconds == 14400


SS1 = SecurityServerId.parse("DEV/GOV/1001/ss1")
SS2 = SecurityServerId.parse("DEV/GOV/1002/ss2")
SS3 = SecurityServerId.parse("DEV/GOV/1002/ss3")


def test_server_lookups(conf: GlobalConf) -> None:
    server = conf.server(SS2)
    assert server is not None and server.owner == MemberId.parse("DEV/GOV/1002")
    assert conf.server(SecurityServerId.parse("DEV/GOV/1002/nope")) is None
    provider = SubsystemId.parse("DEV/GOV/1002/provider")
    assert [s.id for s in conf.servers_for_client(provider)] == [SS2, SS3]
    assert [s.id for s in conf.servers_for_client(SubsystemId.parse("DEV/GOV/1001/consumer"))] == [SS1]
    assert [s.id for s in conf.servers_for_client(MemberId.parse("DEV/GOV/1001"))] == [SS1]
    assert conf.servers_for_client(SubsystemId.parse("DEV/GOV/1001/other")) == ()


def test_auth_cert_lookups(conf: GlobalConf) -> None:
    assert conf.is_auth_cert_of(SS2, fake_fingerprint("ss2-new"))
    assert conf.is_auth_cert_of(SS2, fake_fingerprint("ss2"))
    assert not conf.is_auth_cert_of(SS2, fake_fingerprint("ss1"))
    assert not conf.is_auth_cert_of(SecurityServerId.parse("DEV/GOV/1002/nope"), fake_fingerprint("ss2"))
    found = conf.server_by_auth_cert(fake_fingerprint("ss3"))
    assert found is not None and found.id == SS3
    assert conf.server_by_auth_cert(fake_fingerprint("unknown")) is None


def test_member_and_group_lookups(conf: GlobalConf) -> None:
    owners = GlobalGroupId.parse("DEV/security-server-owners")
    assert conf.is_member_of_group(MemberId.parse("DEV/GOV/1001"), owners)
    # exact membership: the member's subsystem is not in the group
    assert not conf.is_member_of_group(SubsystemId.parse("DEV/GOV/1001/consumer"), owners)
    assert not conf.is_member_of_group(MemberId.parse("DEV/GOV/1001"), GlobalGroupId.parse("DEV/other"))
    assert conf.member_exists(MemberId.parse("DEV/GOV/1002"))
    assert not conf.member_exists(MemberId.parse("DEV/GOV/1003"))
    assert conf.subsystem_exists(SubsystemId.parse("DEV/GOV/1002/registry"))
    assert not conf.subsystem_exists(SubsystemId.parse("DEV/GOV/1002/consumer"))
    assert not conf.subsystem_exists(SubsystemId.parse("DEV/GOV/1003/registry"))


def test_ca_for(sim: GlobalConfSimulator, conf: GlobalConf) -> None:
    _, leaf = sim.issue_cert("DEV/GOV/1001 signing")
    ca = conf.ca_for(leaf)
    assert ca is not None and ca.name == "DEV Test CA"
    # Same issuer name, different key: the name matches but the signature does not.
    impostor = make_key_pair("DEV Test CA", now=NOW, ca=True)
    _, forged = make_key_pair("DEV/GOV/1001 signing", now=NOW, issuer=impostor)
    assert conf.ca_for(forged) is None
    _, unrelated = make_key_pair("someone", now=NOW)
    assert conf.ca_for(unrelated) is None


def test_parameters_defaults_and_unknown_keys_kept(sim: GlobalConfSimulator) -> None:
    d = copy.deepcopy(sim.signed)
    d["parameters"] = {}
    conf = GlobalConf.from_dict(d)
    assert (conf.ocsp_freshness_seconds, conf.timestamp_grace_seconds) == (3600, 14400)
    assert conf.to_dict() == d
    d["parameters"] = {"ocsp_freshness_seconds": 600, "future_knob": {"a": [1]}}
    conf = GlobalConf.from_dict(d)
    assert conf.ocsp_freshness_seconds == 600
    assert conf.to_dict() == d


def test_expiry_boundary(conf: GlobalConf) -> None:
    assert not conf.is_expired(datetime(2026, 11, 27, 13, 9, 59, tzinfo=UTC))
    assert conf.is_expired(datetime(2026, 11, 27, 13, 10, 0, tzinfo=UTC))


def test_normalise_sorts_set_like_lists(sim: GlobalConfSimulator) -> None:
    d = copy.deepcopy(sim.signed)
    d["members"].reverse()
    d["members"][0]["subsystems"].reverse()
    d["security_servers"].reverse()
    d["security_servers"][1]["auth_certs"].reverse()
    d["security_servers"][2]["clients"].reverse()
    d["global_groups"][0]["members"].reverse()
    with pytest.raises(GlobalConfError, match="out of order"):
        GlobalConf.from_dict(d)
    assert normalise(d) == sim.signed


Mutation = Callable[[dict[str, Any]], Any]


def _set(path: str, value: Any) -> Mutation:
    """A mutation that sets (or, for value _DEL, deletes) one dotted/indexed path."""

    def mutate(d: dict[str, Any]) -> None:
        node: Any = d
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last = parts[-1]
        key: Any = int(last) if last.isdigit() else last
        if value is _DEL:
            del node[key]
        else:
            node[key] = value

    return mutate


_DEL = object()
OTHER_FP = fake_fingerprint("other")


def _swap_members(d: dict[str, Any]) -> None:
    d["members"].reverse()


def _dup_auth_cert(d: dict[str, Any]) -> None:
    d["security_servers"][2]["auth_certs"] = [fake_fingerprint("ss1")]


def _unknown_owner(d: dict[str, Any]) -> None:
    d["security_servers"].append(
        {"id": "DEV/GOV/9999/ss9", "address": "127.0.0.1:1", "auth_certs": [], "clients": []}
    )


def _pem_without_newline(d: dict[str, Any]) -> None:
    ca = d["certificate_authorities"][0]
    ca["certificate"] = ca["certificate"].rstrip("\n")


def _dup_member(d: dict[str, Any]) -> None:
    d["members"][1] = copy.deepcopy(d["members"][0])


BAD: list[tuple[str, Mutation, str]] = [
    ("top not an object", lambda d: [], "field (top): expected an object, got a list"),
    ("missing members", _set("members", _DEL), "field (top): missing key 'members'"),
    ("unknown top key", _set("extra", 1), "field (top): unknown key 'extra'"),
    ("format 2", _set("format", 2), "field format: format 2 is not known to this client"),
    ("version string", _set("version", "12"), "field version: expected an integer, got a string"),
    ("version bool", _set("version", True), "field version: expected an integer, got a boolean"),
    ("version zero", _set("version", 0), "field version: must be at least 1, got 0"),
    ("instance bad", _set("instance", "D/V"), "field instance: instance code 'D/V' contains a forbidden"),
    ("time offset", _set("issued_at", "2026-11-27T13:00:00+00:00"),
     "field issued_at: '2026-11-27T13:00:00+00:00' is not an RFC 3339 UTC time"),
    ("time fraction", _set("issued_at", "2026-11-27T13:00:00.5Z"),
     "field issued_at: '2026-11-27T13:00:00.5Z' is not an RFC 3339"),
    ("time impossible", _set("expires_at", "2026-13-27T13:00:00Z"),
     "field expires_at: '2026-13-27T13:00:00Z' is not a valid date"),
    ("expires before issue", _set("expires_at", "2026-11-27T13:00:00Z"),
     "field expires_at: must be later than issued_at"),
    ("central url scheme", _set("central.url", "ftp://x"),
     "field central.url: 'ftp://x' is not an http(s) URL"),
    ("central url missing", _set("central.url", _DEL), "field central: missing key 'url'"),
    ("central url userinfo", _set("central.url", "http://u@h/"),
     "field central.url: 'http://u@h/' may not carry user"),
    ("member id short", _set("members.0.id", "DEV/GOV"),
     "field members[0].id: member identifier 'DEV/GOV' has 2 parts"),
    ("member other instance", _set("members.1.id", "EE/GOV/1002"),
     "field members[1].id: EE/GOV/1002 is not in instance 'DEV'"),
    ("members out of order", _swap_members, "field members[1]: id 'DEV/GOV/1001' is out of order"),
    ("member duplicate", _dup_member, "field members[1]: duplicate id 'DEV/GOV/1001'"),
    ("member name empty", _set("members.0.name", ""), "field members[0].name: is empty"),
    ("member name control", _set("members.0.name", "A\nB"),
     "field members[0].name: contains a control character"),
    ("subsystems order", _set("members.1.subsystems", ["registry", "provider"]),
     "field members[1].subsystems[1]: subsystem code 'provider' is out of order"),
    ("subsystems not list", _set("members.1.subsystems", "provider"),
     "field members[1].subsystems: expected a list, got a string"),
    ("address no port", _set("security_servers.1.address", "127.0.0.1"),
     "field security_servers[1].address: '127.0.0.1' is not host:port"),
    ("address port range", _set("security_servers.1.address", "h:70000"),
     "field security_servers[1].address: 'h:70000' is not host:port"),
    ("address bad ipv6", _set("security_servers.1.address", "[::zz]:1"),
     "field security_servers[1].address: '[::zz]:1' has an invalid IPv6"),
    ("address bad host", _set("security_servers.1.address", "bad host:80"),
     "field security_servers[1].address: 'bad host:80' has an invalid host name"),
    ("address number", _set("security_servers.1.address", 5502),
     "field security_servers[1].address: expected a string, got a number"),
    ("auth cert upper", _set("security_servers.0.auth_certs", ["AB" * 32]),
     "field security_servers[0].auth_certs[0]: expected 64 lower-case hex"),
    ("auth cert twice", _dup_auth_cert,
     "field security_servers[2].auth_certs[0]: fingerprint is already registered for DEV/GOV/1001/ss1"),
    ("client unknown subsystem", _set("security_servers.0.clients", ["DEV/GOV/1001/ghost"]),
     "field security_servers[0].clients[0]: subsystem DEV/GOV/1001/ghost is not listed"),
    ("client unknown member", _set("security_servers.0.clients", ["DEV/GOV/9999"]),
     "field security_servers[0].clients[0]: member DEV/GOV/9999 is not listed"),
    ("client bad form", _set("security_servers.0.clients", ["DEV/GOV"]),
     "field security_servers[0].clients[0]: client identifier 'DEV/GOV' must be"),
    ("server owner unknown", _unknown_owner,
     "field security_servers[3].id: owner DEV/GOV/9999 is not listed in members"),
    ("server unknown key", _set("security_servers.0.port", 1),
     "field security_servers[0]: unknown key 'port'"),
    ("group id form", _set("global_groups.0.id", "DEV/GOV/x"),
     "field global_groups[0].id: global group identifier 'DEV/GOV/x' has 3 parts"),
    ("group member unknown", _set("global_groups.0.members", ["DEV/GOV/1003"]),
     "field global_groups[0].members[0]: member DEV/GOV/1003 is not listed"),
    ("ca cert not pem", _set("certificate_authorities.0.certificate", "hello"),
     "field certificate_authorities[0].certificate: is not a PEM certificate"),
    ("ca cert non-standard", _pem_without_newline,
     "field certificate_authorities[0].certificate: is not one certificate in standard PEM form"),
    ("ocsp url duplicate", _set("certificate_authorities.0.ocsp_urls", ["http://a", "http://a"]),
     "field certificate_authorities[0].ocsp_urls[1]: duplicate URL 'http://a'"),
    ("tsa url number", _set("timestamping_authorities.0.url", 5),
     "field timestamping_authorities[0].url: expected a string, got a number"),
    ("signing keyid mismatch", _set("signing_keys.0.keyid", OTHER_FP),
     "field signing_keys[0].keyid: is not the SHA-256 fingerprint"),
    ("parameter zero", _set("parameters.ocsp_freshness_seconds", 0),
     "field parameters.ocsp_freshness_seconds: must be at least 1"),
    ("parameters not object", _set("parameters", "x"), "field parameters: expected an object, got a string"),
    ("members not list", _set("members", {"a": 1}), "field members: expected a list, got an object"),
    ("member null", _set("members.0", None), "field members[0]: expected an object, got null"),
]


@pytest.mark.parametrize(("mutate", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_documents_name_the_path(sim: GlobalConfSimulator, mutate: Mutation, expected: str) -> None:
    d = copy.deepcopy(sim.signed)
    result = mutate(d)
    doc = d if result is None else result
    with pytest.raises(GlobalConfError) as info:
        GlobalConf.from_dict(doc)
    assert info.value.message.startswith("global configuration ")
    assert expected in info.value.message
    assert info.value.xroad_type == MALFORMED


# ---- witness policies (docs/globalconf.md "Witness policies")

def _witness_vkey(name: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from gateway.trust.cosignature import WitnessKey
    return WitnessKey.of_private_key(name, ed25519.Ed25519PrivateKey.generate()).vkey


def _with_policy(sim: GlobalConfSimulator, **changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(sim.signed)
    i = d["instance"]
    policy: dict[str, Any] = {
        "server": f"{i}/GOV/1001/ss1", "quorum": 1,
        "witnesses": [{"vkey": _witness_vkey(f"{i}/GOV/1002/ss2/witness"), "url": "https://127.0.0.1:5502/witness",
                       "server": f"{i}/GOV/1002/ss2"}],
    }
    policy.update(changes)
    d["witness_policies"] = [policy]
    return d


def test_witness_policy_round_trip_and_lookups(sim: GlobalConfSimulator) -> None:
    d = _with_policy(sim)
    conf = GlobalConf.from_dict(d)
    assert conf.to_dict() == d
    ss1 = SecurityServerId.parse(d["witness_policies"][0]["server"])
    policy = conf.witness_policy(ss1)
    assert policy is not None and policy.quorum == 1
    (w,) = policy.witnesses
    assert w.vkey == d["witness_policies"][0]["witnesses"][0]["vkey"]
    assert conf.policies_witnessed_by(w.name) == (policy,)
    assert conf.witness_policy(SecurityServerId.parse(f"{d['instance']}/GOV/1002/ss2")) is None
    # No policies: the key is absent, so documents from before witnesses keep their bytes.
    assert "witness_policies" not in GlobalConf.from_dict(sim.signed).to_dict()


@pytest.mark.parametrize(("changes", "expected"), [
    ({"quorum": 2}, "witness_policies[0].quorum: 2 is more than the 1 witnesses listed"),
    ({"quorum": 0}, "witness_policies[0].quorum: must be at least 1"),
    ({"witnesses": []}, "witness_policies[0].witnesses: must not be empty"),
    ({"server": "DEV/GOV/1001/ss9"}, "witness_policies[0].server: security server DEV/GOV/1001/ss9 is not listed"),
])
def test_bad_witness_policies_name_the_path(sim: GlobalConfSimulator, changes: dict[str, Any], expected: str) -> None:
    d = _with_policy(sim, **changes)
    with pytest.raises(GlobalConfError) as info:
        GlobalConf.from_dict(d)
    assert expected in info.value.message


def test_bad_witnesses_name_the_path(sim: GlobalConfSimulator) -> None:
    i = sim.signed["instance"]
    own = _with_policy(sim)
    own["witness_policies"][0]["witnesses"][0]["server"] = f"{i}/GOV/1001/ss1"
    plain = _with_policy(sim)
    plain["witness_policies"][0]["witnesses"][0]["url"] = "http://127.0.0.1:5502/witness"
    wrong_type = _with_policy(sim)
    wrong_type["witness_policies"][0]["witnesses"][0]["vkey"] = (
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
    for doc, expected in [
        (own, "witnesses[0].server: DEV/GOV/1001/ss1 belongs to DEV/GOV/1001, the logging server's own member"),
        (plain, "witnesses[0].url: 'http://127.0.0.1:5502/witness' must be an https URL"),
        (wrong_type, "witnesses[0].vkey: cosignature: vkey signature type is 0x01"),
    ]:
        with pytest.raises(GlobalConfError) as info:
            GlobalConf.from_dict(doc)
        assert expected in info.value.message


def test_normalise_sorts_witnesses_and_policies(sim: GlobalConfSimulator) -> None:
    i = sim.signed["instance"]
    d = _with_policy(sim)
    second = {"vkey": _witness_vkey(f"{i}/GOV/1002/a-witness-on-ss3"), "url": "https://[::1]:5503/witness",
              "server": f"{i}/GOV/1002/ss3"}
    d["witness_policies"][0]["witnesses"].append(second)
    with pytest.raises(GlobalConfError, match="out of order"):
        GlobalConf.from_dict(d)
    conf = GlobalConf.from_dict(normalise(d))
    assert [w.server for w in conf.witness_policies[0].witnesses] == [
        SecurityServerId.parse(f"{i}/GOV/1002/ss3"), SecurityServerId.parse(f"{i}/GOV/1002/ss2")]
