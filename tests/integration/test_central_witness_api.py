"""Witness policies through the central admin API over real HTTP, on SQLite and PostgreSQL: set, read, replace
and remove by the roles that may, refused to the others; bad input refused precisely; every change and refusal
audited; the policy published in the signed global configuration."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from central_admin_kit import CentralAdmin, central_admin
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.central.publisher import latest_publication
from gateway.globalconf.model import GlobalConf
from gateway.identifiers import SecurityServerId
from gateway.trust.cosignature import WitnessKey

pytestmark = pytest.mark.integration

SS1, SS2, SS3 = (SecurityServerId.parse(f"DEV/GOV/100{n}/ss{n}") for n in (1, 2, 3))
K2 = WitnessKey.of_private_key(f"{SS2}/witness", ed25519.Ed25519PrivateKey.generate())
K3 = WitnessKey.of_private_key(f"{SS3}/witness", ed25519.Ed25519PrivateKey.generate())
W2 = {"vkey": K2.vkey, "url": "https://ss2.example.org:5500/witness", "server": str(SS2)}
W3 = {"vkey": K3.vkey, "url": "https://ss3.example.org:5500/witness", "server": str(SS3)}
SS1_PATH = {"server_id": SS1.encoded_id()}


@pytest_asyncio.fixture
async def c(database_url: str, tmp_path: Path) -> AsyncIterator[CentralAdmin]:
    async with central_admin(database_url, tmp_path) as harness:
        officer = await harness.api_key("registration-officer")
        for n, server in enumerate((SS1, SS2, SS3), 1):
            await harness.call("addMember", key=officer, json={"id": str(server.owner), "name": f"Agency {n}"})
            await harness.call("addServer", key=officer, json={"id": str(server), "address": f"ss{n}.example.org:5500"})
        yield harness


async def published(c: CentralAdmin) -> GlobalConf:
    pub = await latest_publication(c.central.engine)
    assert pub is not None
    return GlobalConf.from_dict(json.loads(pub.data)["signed"])


async def test_set_read_replace_remove_by_role_then_published(c: CentralAdmin) -> None:
    sysadmin, security = await c.api_key("system-administrator"), await c.api_key("security-officer")
    observer, auditor, officer = (await c.api_key("observer"), await c.api_key("auditor"),
                                  await c.api_key("registration-officer"))
    body: dict[str, Any] = {"quorum": 2, "witnesses": [W3, W2]}
    # (1) the registration officer and the observer may not set a policy
    for key in (officer, observer):
        status, answer = await c.call("setWitnessPolicy", params=SS1_PATH, key=key, json=body)
        assert status == 403 and "may not call setWitnessPolicy" in answer["message"]
    # (2) the system administrator sets it; witnesses come back sorted by name, with their key ids
    status, policy = await c.call("setWitnessPolicy", params=SS1_PATH, key=sysadmin, json=body)
    assert status == 200
    assert policy == {"id": str(SS1), "encoded_id": "DEV:GOV:1001:ss1", "quorum": 2, "witnesses": [
        {"name": K2.name, "key_id": K2.key_id.hex(), "vkey": K2.vkey, "url": W2["url"], "server": str(SS2)},
        {"name": K3.name, "key_id": K3.key_id.hex(), "vkey": K3.vkey, "url": W3["url"], "server": str(SS3)}]}
    # (3) every role reads it, the auditor too (auditors verify witnessed logs)
    for key in (observer, auditor, officer):
        assert await c.call("getWitnessPolicy", params=SS1_PATH, key=key) == (200, policy)
        status, listed = await c.call("listWitnessPolicies", key=key)
        assert status == 200 and listed["items"] == [policy] and listed["total"] == 1
    # (4) a security officer replaces it; it is published (the change triggers a publication) and parsed
    # (without a URL: the default, https://<the server's registered address>/witness)
    status, replaced = await c.call("setWitnessPolicy", params=SS1_PATH, key=security,
                                    json={"quorum": 1, "witnesses": [{"vkey": K3.vkey, "server": str(SS3)}]})
    assert status == 200 and [(w["name"], w["url"]) for w in replaced["witnesses"]] == [(K3.name, W3["url"])]
    await c.call("publishGlobalConf", key=sysadmin)
    conf_policy = (await published(c)).witness_policy(SS1)
    assert conf_policy is not None and conf_policy.quorum == 1 and conf_policy.keys() == {K3.name: K3}
    # (5) ss3 runs a witness ss1's policy names: removing ss3 is refused, naming the policy
    status, answer = await c.call("removeServer", params={"server_id": SS3.encoded_id()}, key=officer)
    assert status == 409 and "of the witness policy of DEV/GOV/1001/ss1" in answer["message"]
    # (6) remove it: gone from the API and from the next publication; ss3 can go now
    assert await c.call("removeWitnessPolicy", params=SS1_PATH, key=security) == (204, None)
    status, answer = await c.call("getWitnessPolicy", params=SS1_PATH, key=observer)
    assert status == 404 and answer["message"].startswith(f"security server {SS1} has no witness policy")
    await c.call("publishGlobalConf", key=sysadmin)
    assert (await published(c)).witness_policies == ()
    assert await c.call("removeServer", params={"server_id": SS3.encoded_id()}, key=officer) == (204, None)
    # (7) every change and refusal is in the audit log (newest first), with what was set
    entries = await c.audit(action="setWitnessPolicy")
    assert [(e.actor.startswith("apikey:"), e.result) for e in entries] == [
        (True, "success"), (True, "success"), (True, "refused"), (True, "refused")]
    assert entries[1].details["witness_policy"] == {"server": str(SS1), "quorum": 2,
                                                    "witnesses": [K2.name, K3.name]}
    assert [e.result for e in await c.audit(action="removeWitnessPolicy")] == ["success"]
    assert [e.status for e in await c.audit(action="removeServer")] == [204, 409]


BAD_KEY = W2 | {"vkey": K2.vkey[:-10] + "AAAAAAAAAA"}


@pytest.mark.parametrize(("params", "body", "status", "message"), [
    ({"server_id": "DEV:GOV:1001"}, {"quorum": 1, "witnesses": [W2]}, 400, "server identifier 'DEV/GOV/1001' has 3"),
    ({"server_id": "XX:GOV:1001:ss1"}, {"quorum": 1, "witnesses": [W2]}, 400, "belongs to instance 'XX'"),
    ({"server_id": "DEV:GOV:1001:ss9"}, {"quorum": 1, "witnesses": [W2]}, 404,
     "security server DEV/GOV/1001/ss9 is not registered"),
    (SS1_PATH, {"quorum": 1, "witnesses": [W2 | {"server": "DEV/GOV/1002/ss9"}]}, 404,
     f"witness {K2.name}: security server DEV/GOV/1002/ss9 is not registered"),
    (SS1_PATH, {"quorum": 3, "witnesses": [W2, W3]}, 400,
     "the quorum 3 of the witness policy of DEV/GOV/1001/ss1 is more than the 2 witnesses listed"),
    (SS1_PATH, {"quorum": 0, "witnesses": [W2]}, 400, "body.quorum 0 is less than 1"),
    (SS1_PATH, {"quorum": 1, "witnesses": []}, 400, "body.witnesses"),
    (SS1_PATH, {"quorum": 1, "witnesses": [W2, W2]}, 400, f"witness 2 ({K2.name}): the key name"),
    (SS1_PATH, {"quorum": 1, "witnesses": [BAD_KEY]}, 400, "witness 1: cosignature: vkey key ID"),
    (SS1_PATH, {"quorum": 1, "witnesses": [W2 | {"vkey": "w+1234+AAAA"}]}, 400, "body.witnesses[0].vkey"),
    (SS1_PATH, {"quorum": 1, "witnesses": [W2 | {"url": "http://ss2.example.org/witness"}]}, 400,
     "body.witnesses[0].url"),
    (SS1_PATH, {"quorum": 1, "witnesses": [W2 | {"url": "https://ss2.example.org/witness/"}]}, 400,
     "body.witnesses[0].url"),
    (SS1_PATH, {"quorum": 1, "witnesses": [W2 | {"server": "DEV/GOV/1001/ss1"}]}, 400,
     f"witness 1 ({K2.name}) runs on DEV/GOV/1001/ss1, a server of DEV/GOV/1001, the logging server's own member"),
    (SS1_PATH, {"quorum": 1}, 400, "body.witnesses is required"),
    (SS1_PATH, {"quorum": 1, "witnesses": [{"vkey": K2.vkey, "server": "DEV/GOV/1002/ss9"}]}, 404,
     "witness 1: security server DEV/GOV/1002/ss9 is not registered"),
])
async def test_bad_input_is_refused_precisely_and_audited(
    c: CentralAdmin, params: dict[str, str], body: object, status: int, message: str,
) -> None:
    key = await c.api_key("system-administrator")
    got, answer = await c.call("setWitnessPolicy", params=params, key=key, json=body)
    assert got == status and message in answer["message"], answer
    [entry] = [e for e in await c.audit(action="setWitnessPolicy") if e.details["correlation_id"] == answer["detail"]]
    assert (entry.status, entry.result) == (status, "refused")
    status, listed = await c.call("listWitnessPolicies", key=key)
    assert listed["total"] == 0  # nothing was set


async def test_removing_a_missing_policy_is_a_404(c: CentralAdmin) -> None:
    status, answer = await c.call("removeWitnessPolicy", params=SS1_PATH, key=await c.api_key("security-officer"))
    assert status == 404 and answer["message"].startswith("security server DEV/GOV/1001/ss1 has no witness policy")
