"""A new security server joins a running federation through registration requests, without any restart.

The new server (ss3 of a new member) keeps its keys in a software token, starts unregistered, submits its
authentication certificate and then a client subsystem with ``gateway.server.regclient`` (what ``gateway server
register`` does); the registration officer approves both; after the next global configuration it
exchanges messages with ss2.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from exchange_kit import Probe, call

from gateway.central import registration
from gateway.dev.demo import MemberSpec, default_layout, start_federation
from gateway.identifiers import MemberId, SecurityServerId, ServiceId, SubsystemId
from gateway.server import regclient
from gateway.server.runtime import SecurityServer
from gateway.serverconf.access import AccessRule
from gateway.settings import GlobalConfSettings, ServerSettings, Settings
from gateway.token.model import KdfParams, ca_finder
from gateway.token.soft import SoftToken
from gateway.trust import keys

PROBE = "DEV/GOV/1002/registry/probe"
NEWSUB = "DEV/GOV/1003/newsub"
PIN = "a long enough pin"
FAST = KdfParams(salt=b"0123456789abcdef", time_cost=1, memory_kib=256, parallelism=1)  # tests only


async def test_new_server_joins_without_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = await Probe().start()
    members, specs = default_layout()
    members.append(MemberSpec(id=MemberId.parse("DEV/GOV/1003"), name="Agency C", subsystems=()))
    fed = await start_federation(tmp_path / "fed", layout=(members, specs), with_adapters=False,
                                 adapter_urls={"persons": probe.url, "companies": probe.url})
    ss3: SecurityServer | None = None
    try:
        ss2 = fed.server("ss2")
        await ss2.store.add_service(ServiceId.parse(PROBE), url=probe.url)
        await ss2.store.grant(AccessRule(subject=SubsystemId.parse(NEWSUB), service=ServiceId.parse(PROBE)))
        await ss2.reload_serverconf()
        # (1) the operator of ss3: a token, keys, CSRs signed by the CA, certificates imported and activated
        d = tmp_path / "ss3"
        token = await SoftToken.init(d / "token", PIN, kdf=FAST)
        now = datetime.now(UTC)
        settings = Settings(
            server=ServerSettings(
                id="DEV/GOV/1003/ss3", database_url=f"sqlite+aiosqlite:///{d / 'ss3.db'}", state_dir=str(d),
                client_port=0, client_https_port=-1, server_port=0, ops_port=0, token_dir=str(d / "token"),
                token_pin_env="GATEWAY_TEST_SS3_PIN",
            ),
            globalconf=GlobalConfSettings(anchor=str(fed.anchor_path), cache_dir=str(d / "globalconf")),
        )
        server_id = SecurityServerId.parse(settings.server.id)
        for usage, identity in (("auth", server_id), ("sign", server_id.owner)):
            entry = await token.generate_key(usage, now=now)  # type: ignore[arg-type]
            cert = fed.ca.issue(await token.csr(entry.id, server_id=server_id), kind=usage,  # type: ignore[arg-type]
                                expected_identity=identity, now=now)
            imported = await token.import_cert(keys.cert_pem(cert).encode(), server_id=server_id,
                                               ca_for=ca_finder([fed.ca.ca_cert]), now=now)
            await token.activate(imported.sha256)
        monkeypatch.setenv("GATEWAY_TEST_SS3_PIN", PIN)  # the PIN comes from the environment, never a setting
        ss3 = SecurityServer(settings)
        await ss3.start()  # unregistered: it starts, but peers refuse it
        settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server,
                                                                            address=ss3.server_address))
        await ss3.store.add_client(SubsystemId.parse(NEWSUB), is_auth="none")
        await ss3.reload_serverconf()
        refused = await call(ss3, f"{PROBE}/before", client=NEWSUB)
        assert refused.status == 500 and "SslAuthenticationFailed" in refused.json["type"], refused.body
        # (2) ss3 asks for registration (the anchor tells where the central server is); the officer approves
        assert ss3.token is not None
        key, cert = await regclient.auth_key_and_cert(settings, token=ss3.token, newest=True, now=now)
        rec = await regclient.send(settings, "auth_cert_reg", key=key, cert=cert, now=datetime.now(UTC))
        assert rec["state"] == "submitted"
        await registration.approve(fed.central.engine, rec["id"], instance="DEV", officer="olga",
                                   now=datetime.now(UTC))
        # (3) then its client subsystem, signed with the now registered certificate
        rec = await regclient.send(settings, "client_reg", key=key, cert=cert, now=datetime.now(UTC),
                                   client=SubsystemId.parse(NEWSUB))
        await registration.approve(fed.central.engine, rec["id"], instance="DEV", officer="olga",
                                   now=datetime.now(UTC))
        # (4) the next global configuration: everyone downloads it, nobody restarts
        await fed.publish_and_refresh()
        await ss3.globalconf.refresh()
        answer = await call(ss3, f"{PROBE}/joined", client=NEWSUB)
        assert answer.status == 200, answer.body
        assert [s.path_qs for s in probe.seen] == ["/joined"]
    finally:
        if ss3 is not None:
            await ss3.stop()
        await fed.close()
        await probe.close()

