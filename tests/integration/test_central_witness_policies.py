"""Witness policies in the central registry on SQLite and PostgreSQL: set, replace, list, remove; what removing
a server does to them; published in the signed global configuration and parsed by a security server's client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.central import migrate_central
from gateway.central import publisher as pub
from gateway.central import registry as reg
from gateway.central import signingkeys as sk
from gateway.central.registry import WitnessSpec
from gateway.errors import Conflict, NotFound
from gateway.globalconf.anchor import Anchor
from gateway.globalconf.model import WitnessPolicy
from gateway.globalconf.trust import TrustedGlobalConf
from gateway.identifiers import SecurityServerId
from gateway.settings import CentralSettings
from gateway.storage.db import make_engine
from gateway.trust.cosignature import WitnessKey

pytestmark = pytest.mark.integration

I = "DEV"  # noqa: E741
NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
SS1, SS2, SS3 = (SecurityServerId.parse(f"DEV/GOV/100{n}/ss{n}") for n in (1, 2, 3))


def witness_key(server: SecurityServerId) -> WitnessKey:
    return WitnessKey.of_private_key(f"{server}/witness", ed25519.Ed25519PrivateKey.generate())


def spec(key: WitnessKey, server: SecurityServerId, port: int) -> WitnessSpec:
    return WitnessSpec(vkey=key.vkey, url=f"https://127.0.0.1:{port}/witness", server=server)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> CentralSettings:
    return CentralSettings(instance=I, database_url=database_url, key_dir=str(tmp_path / "keys"),
                           public_url="https://central.example.org/", conf_validity_seconds=600)


@pytest.fixture
async def engine(settings: CentralSettings) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(settings.database_url)
    await migrate_central(eng)
    await sk.ensure_signing_key(eng, instance=I, key_dir=settings.key_dir, now=NOW)
    for n, server in enumerate((SS1, SS2, SS3), 1):
        await reg.add_member(eng, str(server.owner), name=f"Agency {n}", instance=I)
        await reg.add_server(eng, server, address=f"127.0.0.1:550{n}", instance=I)
    yield eng
    await eng.dispose()


async def test_set_replace_list_and_remove(engine: AsyncEngine) -> None:
    k2, k3 = witness_key(SS2), witness_key(SS3)
    # (1) set: the witnesses come back sorted by name, with the hosting servers
    set_ = await reg.set_witness_policy(engine, str(SS1), quorum=2,
                                        witnesses=[spec(k3, SS3, 5503), spec(k2, SS2, 5502)], instance=I)
    assert [w.key for w in set_.witnesses] == [k2, k3]
    got = await reg.get_witness_policy(engine, "DEV/GOV/1001/ss1", instance=I)
    assert got == set_ and (await reg.list_witness_policies(engine)) == (set_,)
    # (2) set again replaces the whole policy; a witness without a URL gets https://<its address>/witness
    replaced = await reg.set_witness_policy(engine, SS1, quorum=1, witnesses=[WitnessSpec(vkey=k3.vkey, url="",
                                                                                          server=str(SS3))],
                                            instance=I)
    assert [(w.url, w.server) for w in replaced.witnesses] == [("https://127.0.0.1:5503/witness", SS3)]
    await reg.set_witness_policy(engine, SS2, quorum=1, witnesses=[spec(k3, SS3, 5503)], instance=I)
    policies = await reg.list_witness_policies(engine)
    assert [(str(p.server), p.quorum, [w.name for w in p.witnesses]) for p in policies] == [
        (str(SS1), 1, [k3.name]), (str(SS2), 1, [k3.name])]
    # (3) remove one; a second removal, an unknown server or a missing policy is a 404 naming it
    await reg.remove_witness_policy(engine, SS1, instance=I)
    assert [p.server for p in await reg.list_witness_policies(engine)] == [SS2]
    with pytest.raises(NotFound, match="security server DEV/GOV/1001/ss1 has no witness policy"):
        await reg.remove_witness_policy(engine, SS1, instance=I)
    with pytest.raises(NotFound, match="security server DEV/GOV/1001/ss1 has no witness policy"):
        await reg.get_witness_policy(engine, SS1, instance=I)
    with pytest.raises(NotFound, match="security server DEV/GOV/1001/ss9 is not registered"):
        await reg.set_witness_policy(engine, "DEV/GOV/1001/ss9", quorum=1, witnesses=[spec(k3, SS3, 1)], instance=I)
    with pytest.raises(NotFound, match="witness DEV/GOV/1003/ss3/witness: security server DEV/GOV/1003/ss9 is not"):
        await reg.set_witness_policy(engine, SS1, quorum=1,
                                     witnesses=[spec(k3, SecurityServerId.parse("DEV/GOV/1003/ss9"), 1)], instance=I)
    assert [p.server for p in await reg.list_witness_policies(engine)] == [SS2]  # refusals changed nothing


async def test_removing_servers_and_members(engine: AsyncEngine) -> None:
    k2, k3 = witness_key(SS2), witness_key(SS3)
    await reg.set_witness_policy(engine, SS1, quorum=1, witnesses=[spec(k2, SS2, 5502), spec(k3, SS3, 5503)],
                                 instance=I)
    await reg.set_witness_policy(engine, SS3, quorum=1, witnesses=[spec(k2, SS2, 5502)], instance=I)
    # (1) a server that runs a witness a policy names is not removed, nor its member: the error names the policies
    with pytest.raises(Conflict) as e:
        await reg.remove_server(engine, SS2, instance=I)
    assert e.value.message == (
        "security server DEV/GOV/1002/ss2 cannot be removed: it runs a witness that a witness policy names: "
        "witness DEV/GOV/1002/ss2/witness (on DEV/GOV/1002/ss2) of the witness policy of DEV/GOV/1001/ss1; "
        "witness DEV/GOV/1002/ss2/witness (on DEV/GOV/1002/ss2) of the witness policy of DEV/GOV/1003/ss3")
    with pytest.raises(Conflict, match="member DEV/GOV/1002 cannot be removed: it runs a witness"):
        await reg.remove_member(engine, "DEV/GOV/1002", instance=I)
    assert {s.id for s in await reg.list_servers(engine)} == {SS1, SS2, SS3}
    # (2) removing a logging server removes its own policy; its member likewise
    await reg.remove_server(engine, SS1, instance=I)
    assert [p.server for p in await reg.list_witness_policies(engine)] == [SS3]
    # (3) ss3 ran a witness only for ss1's policy, gone now: it goes, with its own policy; then ss2's member
    await reg.remove_server(engine, SS3, instance=I)
    assert await reg.list_witness_policies(engine) == ()
    await reg.remove_member(engine, "DEV/GOV/1002", instance=I)
    assert {s.id for s in await reg.list_servers(engine)} == set()


async def test_published_and_parsed_by_a_security_server(engine: AsyncEngine, settings: CentralSettings) -> None:
    anchor = Anchor.from_bytes(await pub.current_anchor(engine, settings))
    # (1) without a policy the document has no witness_policies key at all
    first = await pub.publish(engine, settings, NOW)
    assert "witness_policies" not in json.loads(first.data)["signed"]
    # (2) a policy is content: publish_if_due publishes it, and a client's verified copy carries it
    k2, k3 = witness_key(SS2), witness_key(SS3)
    await reg.set_witness_policy(engine, SS1, quorum=2, witnesses=[spec(k3, SS3, 5503), spec(k2, SS2, 5502)],
                                 instance=I)
    second = await pub.publish_if_due(engine, settings, NOW + timedelta(seconds=1))
    assert second is not None and second.version == first.version + 1
    client = TrustedGlobalConf(anchor, now=NOW)
    conf = client.update(second.data, now=NOW + timedelta(seconds=1))
    policy = conf.witness_policy(SS1)
    assert policy is not None and policy.quorum == 2 and policy.keys() == {k2.name: k2, k3.name: k3}
    assert [(w.url, w.server) for w in policy.witnesses] == [("https://127.0.0.1:5502/witness", SS2),
                                                             ("https://127.0.0.1:5503/witness", SS3)]
    assert [p.server for p in conf.policies_witnessed_by(k3.name)] == [SS1]
    assert conf.witness_policy(SS2) is None
    signed = json.loads(second.data)["signed"]
    assert signed["witness_policies"] == [{"server": str(SS1), "quorum": 2, "witnesses": [
        {"vkey": k2.vkey, "url": "https://127.0.0.1:5502/witness", "server": str(SS2)},
        {"vkey": k3.vkey, "url": "https://127.0.0.1:5503/witness", "server": str(SS3)}]}]
    # (3) nothing changed: nothing due; removing it is content again
    assert await pub.publish_if_due(engine, settings, NOW + timedelta(seconds=2)) is None
    await reg.remove_witness_policy(engine, SS1, instance=I)
    third = await pub.publish_if_due(engine, settings, NOW + timedelta(seconds=3))
    assert third is not None
    assert client.update(third.data, now=NOW + timedelta(seconds=3)).witness_policies == ()


async def test_concurrent_sets_leave_one_whole_policy(engine: AsyncEngine) -> None:
    keys = [witness_key(SS2) for _ in range(4)]
    results = await asyncio.gather(
        *(reg.set_witness_policy(engine, SS1, quorum=1, witnesses=[spec(k, SS2, 5502)], instance=I) for k in keys),
        return_exceptions=True,
    )
    for r in results:  # each either set the policy or was told that another set it at the same time
        assert isinstance(r, WitnessPolicy) or (
            isinstance(r, Conflict) and r.message == f"the witness policy of {SS1} was set at the same time"), r
    [policy] = await reg.list_witness_policies(engine)
    assert len(policy.witnesses) == 1 and policy.witnesses[0].key in keys  # one whole policy, never a mixture
    assert any(isinstance(r, WitnessPolicy) and r == policy for r in results)


async def test_a_witness_is_the_same_in_every_policy(engine: AsyncEngine) -> None:
    k3 = witness_key(SS3)
    await reg.set_witness_policy(engine, SS1, quorum=1, witnesses=[spec(k3, SS3, 5503)], instance=I)
    # (1) the same witness in another policy (another URL is fine)
    await reg.set_witness_policy(engine, SS2, quorum=1, witnesses=[spec(k3, SS3, 6603)], instance=I)
    # (2) its key under another name, or on another server: refused, naming the policy
    renamed = WitnessKey(name="another-name", public_key=k3.public_key)
    for witnesses, message in (
        ([spec(renamed, SS3, 5503)], f"witness another-name: the witness policy of {SS1} names this key as "
                                     f"{k3.name!r}"),
        ([spec(k3, SS1, 5501)], f"witness {k3.name}: the witness policy of {SS1} says it runs on {SS3}, not {SS1}"),
    ):
        with pytest.raises(Conflict) as e:
            await reg.set_witness_policy(engine, SS2, quorum=1, witnesses=witnesses, instance=I)
        assert e.value.message == message
    # (3) a witness's rotated key (same name, new key) is taken one policy at a time
    rotated = witness_key(SS3)
    await reg.set_witness_policy(engine, SS1, quorum=1, witnesses=[spec(rotated, SS3, 5503)], instance=I)
    await reg.set_witness_policy(engine, SS2, quorum=1, witnesses=[spec(rotated, SS3, 6603)], instance=I)
    assert {p.witnesses[0].key for p in await reg.list_witness_policies(engine)} == {rotated}
