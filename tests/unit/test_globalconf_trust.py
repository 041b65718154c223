"""TrustedGlobalConf: the client rules of docs/globalconf.md, one by one, and key rollover."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from faultside import CLIENT_PROXY, detected_at
from globalconf_sim import GlobalConfSimulator, make_key_pair

from gateway.errors import GlobalConfError, GlobalConfSignatureInvalid, MalformedGlobalConf
from gateway.globalconf.envelope import parse_envelope
from gateway.globalconf.model import cert_fingerprint
from gateway.globalconf.trust import TrustedGlobalConf
from gateway.trust.canonical import canonical_bytes

BAD_SIGNATURE = GlobalConfSignatureInvalid.type_name()
MALFORMED = MalformedGlobalConf.type_name()
OUTDATED = GlobalConfError.type_name()


NOW = datetime(2026, 11, 27, 13, 0, 0, tzinfo=UTC)


@pytest.fixture
def sim() -> GlobalConfSimulator:
    return GlobalConfSimulator(now=NOW)


@pytest.fixture
def trusted(sim: GlobalConfSimulator) -> TrustedGlobalConf:
    """A client that trusts version 1; the simulator then publishes version 2."""
    t = TrustedGlobalConf(sim.anchor(), now=NOW)
    t.update(sim.published, now=NOW)
    sim.publish()
    return t


def _refused(t: TrustedGlobalConf, data: bytes, *, code: str, expected: str) -> None:
    """``data`` is refused with ``code`` and a message containing ``expected``; nothing changes."""
    before, before_bytes = t.current, t.current_bytes
    with pytest.raises(GlobalConfError) as info:
        t.update(data, now=NOW)
    assert expected in info.value.message
    assert info.value.xroad_type == code
    assert t.current is before
    assert t.current_bytes == before_bytes


def test_first_download_accepted(sim: GlobalConfSimulator) -> None:
    t = TrustedGlobalConf(sim.anchor(), now=NOW)
    assert t.current is None and t.current_bytes is None
    assert t.is_expired(NOW)
    conf = t.update(sim.published, now=NOW)
    assert conf.version == 1
    assert t.current is conf
    assert t.current_bytes == sim.published
    assert t.require_valid(NOW) is conf
    assert not t.is_expired(NOW)


def test_newer_version_accepted(sim: GlobalConfSimulator, trusted: TrustedGlobalConf) -> None:
    conf = trusted.update(sim.published, now=NOW)
    assert conf.version == 2
    assert trusted.current_bytes == sim.published


# ---- rule 1: form


def _pretty(sim: GlobalConfSimulator) -> bytes:
    return json.dumps(json.loads(sim.published), indent=2).encode()


FORM: list[tuple[str, Callable[[GlobalConfSimulator], bytes], str]] = [
    ("truncated download", lambda s: s.published[: len(s.published) // 2], "is not valid JSON"),
    ("truncated by one byte", lambda s: s.published[:-1], "is not valid JSON"),
    ("non-JSON", lambda s: b"<html><body>503 Service Unavailable</body></html>", "is not valid JSON"),
    ("empty", lambda s: b"", "is not valid JSON"),
    ("non-canonical JSON", _pretty, "is not in canonical JSON form"),
    ("signed member only", lambda s: canonical_bytes(s.signed), "exactly the keys signatures and signed"),
]


@pytest.mark.parametrize(("make", "expected"), [f[1:] for f in FORM], ids=[f[0] for f in FORM])
def test_rule1_malformed(
    sim: GlobalConfSimulator, trusted: TrustedGlobalConf, make: Callable[[GlobalConfSimulator], bytes],
    expected: str,
) -> None:
    _refused(trusted, make(sim), code=MALFORMED, expected=expected)


# ---- rule 2: signature


def _tamper(data: bytes, pos: int) -> bytes:
    """Change the byte at ``pos`` to another of the same class, so the JSON stays well-formed."""
    c = data[pos]
    if 0x30 <= c <= 0x39:
        new = 0x30 + (c - 0x30 + 1) % 10
    elif 0x61 <= c <= 0x66:  # a-f: stays hex (keyids, fingerprints)
        new = 0x61 + (c - 0x61 + 1) % 6
    elif 0x41 <= c <= 0x5A or 0x67 <= c <= 0x7A:
        new = c + 1 if c not in (0x5A, 0x7A) else c - 1
    else:
        new = c ^ 0x01
    return data[:pos] + bytes([new]) + data[pos + 1:]


POSITIONS = [0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.97, 1.0]
TAMPER_OUTCOMES = (
    "is not valid JSON",
    "is not in canonical JSON form",
    "must be standard base64",
    "must be an object with exactly the keys",
    "signatures[0]",
    "is not signed by any key in the anchor",
    "signature is invalid",
)


@pytest.mark.parametrize("where", POSITIONS)
def test_rule2_one_byte_changed_anywhere(
    sim: GlobalConfSimulator, trusted: TrustedGlobalConf, where: float
) -> None:
    data = sim.published
    pos = min(int(where * len(data)), len(data) - 1)
    before = trusted.current
    with pytest.raises(GlobalConfError) as info:
        trusted.update(_tamper(data, pos), now=NOW)
    assert any(o in info.value.message for o in TAMPER_OUTCOMES), info.value.message
    assert trusted.current is before


def test_rule2_tampered_content_fails_signature(sim: GlobalConfSimulator, trusted: TrustedGlobalConf) -> None:
    for old, new in [(b'"Agency A"', b'"Agency X"'), (b'"127.0.0.1:5502"', b'"127.0.0.1:5509"'),
                     (b'"version":2', b'"version":9')]:
        assert old in sim.published
        _refused(trusted, sim.published.replace(old, new), code=BAD_SIGNATURE, expected="does not verify")


def test_rule2_signed_by_key_not_in_anchor(sim: GlobalConfSimulator, trusted: TrustedGlobalConf) -> None:
    foreign = make_key_pair("attacker", now=NOW)
    data = sim.sign(sim.build_signed(version=5), [foreign])
    _refused(trusted, data, code=BAD_SIGNATURE, expected="is not signed by any key in the anchor")


def test_rule2_foreign_signature_under_anchored_keyid(
    sim: GlobalConfSimulator, trusted: TrustedGlobalConf
) -> None:
    foreign = make_key_pair("attacker", now=NOW)
    env = json.loads(sim.sign(sim.build_signed(version=5), [foreign]))
    env["signatures"][0]["keyid"] = cert_fingerprint(sim.keys[0][1])
    _refused(trusted, canonical_bytes(env), code=BAD_SIGNATURE, expected="signature is invalid")


def test_rule2_one_valid_anchored_signature_is_enough(
    sim: GlobalConfSimulator, trusted: TrustedGlobalConf
) -> None:
    # An extra signature by an unknown key, and a broken one first, do not spoil a valid anchored one.
    foreign = make_key_pair("someone else", now=NOW)
    env = json.loads(sim.sign(sim.signed, [foreign, sim.keys[0]]))
    assert trusted.update(canonical_bytes(env), now=NOW).version == 2


# ---- rule 3: format, instance, shape


def _resign(sim: GlobalConfSimulator, change: Callable[[dict[str, Any]], None]) -> bytes:
    signed = sim.build_signed(version=sim.version)
    change(signed)
    return sim.sign(signed)


SHAPE: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("unknown format", lambda d: d.update(format=2), "global configuration format 2 is not known"),
    ("format missing", lambda d: d.pop("format"), "global configuration format (missing) is not known"),
    ("wrong instance", lambda d: d.update(instance="EE"),
     "is for instance \"EE\", but the anchor is for \"DEV\""),
    ("wrong shape: address", lambda d: d["security_servers"][1].update(address="nowhere"),
     "global configuration field security_servers[1].address: 'nowhere' is not host:port"),
    ("wrong shape: member id", lambda d: d["members"][0].update(id=7),
     "global configuration field members[0].id: expected an identifier string, got a number"),
    ("wrong shape: unknown key", lambda d: d.update(routes=[]),
     "global configuration field (top): unknown key 'routes'"),
]


@pytest.mark.parametrize(("change", "expected"), [s[1:] for s in SHAPE], ids=[s[0] for s in SHAPE])
def test_rule3_format_instance_shape(
    sim: GlobalConfSimulator, trusted: TrustedGlobalConf, change: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    _refused(trusted, _resign(sim, change), code=MALFORMED, expected=expected)


# ---- rule 4: version


def test_rule4_replayed_older_version(sim: GlobalConfSimulator, trusted: TrustedGlobalConf) -> None:
    v1 = trusted.current_bytes
    assert v1 is not None
    trusted.update(sim.published, now=NOW)  # version 2
    _refused(trusted, v1, code=OUTDATED, expected="version 1 is older than the trusted version 2")


def test_rule4_equal_version_different_content(sim: GlobalConfSimulator, trusted: TrustedGlobalConf) -> None:
    sim.content["members"][0]["name"] = "Agency A (renamed)"
    data = sim.sign(sim.build_signed(version=1))
    expected = "version 1 differs from the trusted copy of the same version"
    _refused(trusted, data, code=OUTDATED, expected=expected)


def test_rule4_equal_version_identical_content_is_a_no_op(
    sim: GlobalConfSimulator, trusted: TrustedGlobalConf
) -> None:
    current, current_bytes = trusted.current, trusted.current_bytes
    assert current_bytes is not None
    signed, _, _ = parse_envelope(current_bytes)
    again = sim.sign(signed)  # same content, fresh (different) ECDSA signature
    assert again != current_bytes
    assert trusted.update(again, now=NOW) is current
    assert trusted.update(current_bytes, now=NOW) is current
    assert trusted.current_bytes == current_bytes


# ---- rule 5: expiry


def test_rule5_expired_download_refused(sim: GlobalConfSimulator, trusted: TrustedGlobalConf) -> None:
    data = sim.publish_expired()
    _refused(trusted, data, code=OUTDATED, expected="version 3 expired at 2026-11-27T12:50:00Z")


def test_rule5_expiry_boundary(sim: GlobalConfSimulator, trusted: TrustedGlobalConf) -> None:
    expires = NOW + timedelta(minutes=10)
    with pytest.raises(GlobalConfError, match="expired at"):
        trusted.update(sim.published, now=expires)
    assert trusted.update(sim.published, now=expires - timedelta(seconds=1)).version == 2


def test_rule5_no_op_of_an_expired_configuration_is_reported(trusted: TrustedGlobalConf) -> None:
    data = trusted.current_bytes
    assert data is not None
    with pytest.raises(GlobalConfError, match="version 1 expired at"):
        trusted.update(data, now=NOW + timedelta(hours=1))


def test_require_valid(sim: GlobalConfSimulator) -> None:
    t = TrustedGlobalConf(sim.anchor(), now=NOW)
    with (
        pytest.raises(GlobalConfError, match="no valid global configuration has been downloaded") as info,
        detected_at(CLIENT_PROXY),
    ):
        t.require_valid(NOW)
    assert info.value.xroad_type == "Server.ClientProxy.OutdatedGlobalConf"
    t.update(sim.published, now=NOW)
    later = NOW + timedelta(minutes=11)
    with (
        pytest.raises(GlobalConfError, match="version 1 expired at 2026-11-27T13:10:00Z") as info,
        detected_at(CLIENT_PROXY),
    ):
        t.require_valid(later)
    assert info.value.xroad_type == "Server.ClientProxy.OutdatedGlobalConf"
    assert t.is_expired(later)


# ---- the cached copy at start-up


def test_cached_copy_expired_is_loaded_and_reported(sim: GlobalConfSimulator) -> None:
    later = NOW + timedelta(hours=2)
    t = TrustedGlobalConf(sim.anchor(), sim.published, now=later)
    assert t.current is not None and t.current.version == 1
    assert t.cached_expired
    assert t.is_expired(later)
    with pytest.raises(GlobalConfError, match="expired"):
        t.require_valid(later)
    # A newer download clears the report.
    sim.now = later
    t.update(sim.publish(), now=later)
    assert not t.cached_expired


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda s: s.published.replace(b'"Agency A"', b'"Agency Z"'), "signature is invalid"),
        (lambda s: s.published[:-3], "is not valid JSON"),
        (lambda s: s.sign(s.build_signed(), [make_key_pair("other", now=NOW)]), "not signed by any key"),
    ],
    ids=["tampered", "truncated", "foreign key"],
)
def test_cached_copy_is_verified(
    sim: GlobalConfSimulator, make: Callable[[GlobalConfSimulator], bytes], expected: str
) -> None:
    with pytest.raises(GlobalConfError) as info:
        TrustedGlobalConf(sim.anchor(), make(sim), now=NOW)
    assert expected in info.value.message


# ---- key rollover and anchor replacement


def test_key_rollover(sim: GlobalConfSimulator) -> None:
    old_anchor = sim.anchor()
    old_client = TrustedGlobalConf(old_anchor, now=NOW)
    old_client.update(sim.published, now=NOW)
    old_key = cert_fingerprint(sim.keys[0][1])

    # (1) A second key: publications carry two signatures, the new anchor lists both keys.
    sim.add_key()
    v2 = sim.publish()
    assert len(json.loads(v2)["signatures"]) == 2
    new_anchor = sim.anchor()
    assert len(new_anchor.keys) == 2
    assert old_client.update(v2, now=NOW).version == 2
    new_client = TrustedGlobalConf(new_anchor, now=NOW)
    assert new_client.update(v2, now=NOW).version == 2

    # (3) The old key is retired: only clients whose anchor lists the new key keep working.
    sim.retire_key(old_key)
    v3 = sim.publish()
    assert len(json.loads(v3)["signatures"]) == 1
    _refused(old_client, v3, code=BAD_SIGNATURE, expected="is not signed by any key in the anchor")
    assert new_client.update(v3, now=NOW).version == 3
    only_new = TrustedGlobalConf(sim.anchor(), now=NOW)
    assert list(only_new.anchor.keys) == [cert_fingerprint(sim.keys[0][1])]
    assert only_new.update(v3, now=NOW).version == 3

    # (2, late) The old client installs the new anchor and catches up; its version 2 stays trusted.
    old_client.replace_anchor(new_anchor)
    assert old_client.current is not None and old_client.current.version == 2
    assert old_client.update(v3, now=NOW).version == 3


def test_replace_anchor_drops_configuration_vouched_for_by_removed_key(sim: GlobalConfSimulator) -> None:
    t = TrustedGlobalConf(sim.anchor(), now=NOW)
    t.update(sim.publish(version=1000), now=NOW)  # say, published with a key later found compromised
    sim.keys = [make_key_pair("replacement", now=NOW)]
    t.replace_anchor(sim.anchor())
    assert t.current is None and t.current_bytes is None
    assert t.update(sim.publish(version=2), now=NOW).version == 2


def test_replace_anchor_other_instance_refused(sim: GlobalConfSimulator, trusted: TrustedGlobalConf) -> None:
    other = GlobalConfSimulator("EE", now=NOW)
    before = trusted.anchor
    with pytest.raises(GlobalConfError, match="new anchor is for instance 'EE', not 'DEV'"):
        trusted.replace_anchor(other.anchor())
    assert trusted.anchor is before
