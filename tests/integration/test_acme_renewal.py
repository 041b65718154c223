"""Certificate renewal over ACME on a running federation (real TLS, SQLite, the development CA's ACME endpoint).

- under continuous traffic, the signing and the authentication certificates of both servers renew themselves
  (the renewal's ``now`` is a parameter: the job is asked as of a time inside the renewal window, the CA issues
  as of real time); no exchange fails; the peer verifies with the new signing certificates at once; the new
  authentication certificate is registered through an automatically approved renewal request and used in TLS
  only once global configurations have listed it for ``acme_auth_switch_delay_seconds``;
- the background job renews by itself certificates that are due at start;
- a failing renewal is audited, counted, retried with back-off and shown as a readiness warning (and on the web
  dashboard), then succeeds;
- a signing key on a PKCS#11 device (SoftHSM2) is renewed with a new key generated on the device.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import re
import ssl
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import hsm_kit
import pytest
import pytest_asyncio
from exchange_kit import PROBE, Probe, call, probed_federation
from ops_kit import promtool_check, scrape
from waiting import wait_for_condition

from gateway.admin.schema import Page
from gateway.central import registration
from gateway.dev.demo import Federation
from gateway.errors import ConfigError
from gateway.server.renewal import ACTOR
from gateway.server.runtime import SecurityServer
from gateway.token.pkcs11 import Pkcs11Token
from gateway.trust import keys

FIRST_VALIDITY = timedelta(minutes=30)  # the servers' first certificates
ACME_VALIDITY = timedelta(hours=2)  # what the CA's ACME endpoint issues
RENEW_BEFORE_DAYS = 20 / 1440  # 20 minutes: the first certificates are not due at start


def federation(tmp_path: Path, *, renew_before_days: float = RENEW_BEFORE_DAYS, **server: Any) -> Any:
    return probed_federation(
        tmp_path / "fed", key_store="token", adapters_at_probe=True, cert_validity=FIRST_VALIDITY,
        acme_validity=ACME_VALIDITY, central_overrides={"auto_approve_auth_renewal": True},
        server_overrides={"acme_renew_before_days": renew_before_days, "acme_retry_seconds": 1.0,
                          "acme_retry_max_seconds": 4.0, **server},
    )


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Federation, Probe]]:
    async with federation(tmp_path) as (fed, probe):
        yield fed, probe


def sign_sha(server: SecurityServer) -> str:
    assert server.context is not None
    return keys.cert_sha256_hex(server.context.signer.cert)


def auth_sha(server: SecurityServer) -> str:
    assert server.context is not None
    return keys.cert_sha256_hex(server.context.auth_cert)


async def presented_auth_cert(client: SecurityServer, provider: SecurityServer) -> str:
    """The fingerprint of the certificate ``provider`` presents on a new mutual TLS connection from ``client``."""
    host, port = provider.server_address.rsplit(":", 1)
    ctx: ssl.SSLContext = client._peer_ssl[0]
    _reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return keys.cert_sha256_hex(keys.load_certificate(der))
    finally:
        writer.close()
        await writer.wait_closed()


async def dashboard(fed: Federation, server: SecurityServer) -> str:
    """The HTML of the server's web dashboard, as its demo admin user sees it."""
    assert fed.admin_credentials is not None
    creds = json.loads(fed.admin_credentials.read_text())["servers"][str(server.server_id)]
    async with aiohttp.ClientSession(server.admin_url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get("/ui/login") as resp:
            token = re.search(r'name="_csrf" value="([^"]+)"', await resp.text())
        assert token is not None
        async with http.post("/ui/login", data={"_csrf": token.group(1), "username": creds["username"],
                                                "password": creds["password"], "next": "/ui/dashboard"}) as resp:
            assert resp.status == 200
            return html.unescape(await resp.text())


async def audit_actions(server: SecurityServer) -> list[str]:
    entries, _total = await server.admin_store.list_audit(Page(limit=500), actor=ACTOR)
    return [e.action for e in entries]


async def test_sign_and_auth_certificates_renew_under_traffic(world: tuple[Federation, Probe]) -> None:
    fed, probe = world
    ss1, ss2 = fed.server("ss1"), fed.server("ss2")
    servers = (ss1, ss2)
    old_sign = {s.server_id: sign_sha(s) for s in servers}
    old_auth = {s.server_id: auth_sha(s) for s in servers}
    statuses: list[int] = []
    switched, flowing = asyncio.Event(), asyncio.Event()

    async def traffic(worker: int) -> None:
        after = 0
        for i in range(2000):  # bounded: until 20 exchanges after the last switch, at most 2000 each
            statuses.append((await call(ss1, f"{PROBE}/w{worker}/{i}")).status)
            if len(statuses) >= 20:
                flowing.set()
            if switched.is_set():
                after += 1
                if after >= 20:
                    return

    workers = [asyncio.create_task(traffic(w)) for w in range(4)]
    try:
        await flowing.wait()
        # (1) nothing is due now: the job leaves both certificates alone
        for s in servers:
            assert s.renewal is not None
            assert await s.renewal.run_once() == {"sign": "not-due", "auth": "not-due"}
        # (2) as of 15 minutes later (inside the 20-minute window) both renew, under traffic
        later = {s.server_id: s.clock() + timedelta(minutes=15) for s in servers}
        for s in servers:
            assert s.renewal is not None
            done = await s.renewal.run_once(later[s.server_id])
            assert done == {"sign": "renewed", "auth": "ordered"}, s.renewal.state
            # signing: the new certificate signs at once; the old one stays active until it expires
            assert sign_sha(s) == s.renewal.state["sign"].last_sha256 != old_sign[s.server_id]
            assert s.token is not None
            _key, old_entry = (await s.token.state()).cert(old_sign[s.server_id])
            assert old_entry.active
            # authentication: imported, registered through an approved renewal request, not used yet
            assert auth_sha(s) == old_auth[s.server_id]
        approved = await registration.list_requests(fed.central.engine, state="approved")
        renewals = {r.auth_cert_sha256 for r in approved if r.decided_by == registration.AUTO_RENEWAL_OFFICER}
        assert len(renewals) == 2 and not renewals & set(old_auth.values())
        assert await presented_auth_cert(ss1, ss2) == old_auth[ss2.server_id]
        # (3) the next global configuration lists them, but TLS switches only once they have been listed for
        # acme_auth_switch_delay_seconds (the peers must have the configuration too)
        await fed.publish_and_refresh()
        for s in servers:
            assert s.renewal is not None
            assert (await s.renewal.run_once(later[s.server_id]))["auth"] == "awaiting-peers"
            assert auth_sha(s) == old_auth[s.server_id]
        delay = timedelta(seconds=ss1.settings.server.acme_auth_switch_delay_seconds)
        for s in servers:
            assert s.renewal is not None
            assert (await s.renewal.run_once(later[s.server_id] + delay))["auth"] == "switched"
            new_auth = s.renewal.state["auth"].last_sha256
            assert auth_sha(s) == new_auth and new_auth in renewals
        assert ss2.renewal is not None
        assert await presented_auth_cert(ss1, ss2) == ss2.renewal.state["auth"].last_sha256
        await ss1.context.peers.close()  # type: ignore[union-attr]  # pooled connections end: new handshakes
        switched.set()
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
    assert statuses and set(statuses) == {200}, [x for x in statuses if x != 200]
    assert len(probe.seen) == len(statuses)
    # the provider verified the consumer's request with the consumer's new signing certificate
    assert ss2.context is not None
    tail = max(0, 2 * len(statuses) - 40)  # the provider logs a request and a response per exchange
    recs = [r.decode() for r in await ss2.messagelog.read(ss2.context.origin, start=tail, limit=1000)]
    assert recs
    last_req = next(r for r in reversed(recs) if r.kind == "request")
    last_resp = next(r for r in reversed(recs) if r.kind == "response")
    assert keys.cert_sha256_hex(keys.load_certificate(last_req.signing_cert)) == sign_sha(ss1)
    assert keys.cert_sha256_hex(keys.load_certificate(last_resp.signing_cert)) == sign_sha(ss2)
    # every step is in the audit log and in the metrics
    actions = await audit_actions(ss1)
    for action in ("acmeRenewalStarted", "acmeKeyGenerated", "acmeCertificateIssued", "acmeCertificateImported",
                   "acmeAuthCertRegistrationSubmitted", "acmeCertificateActivated"):
        assert action in actions, actions
    reg = ss1.metrics.registry
    for usage in ("sign", "auth"):
        labels = {"usage": usage, "outcome": "succeeded"}
        assert reg.get_sample_value("gateway_cert_renewals_total", labels) == 1
        assert reg.get_sample_value("gateway_cert_renewals_total", {**labels, "outcome": "failed"}) == 0
    text = await scrape(ss1.ops_url)  # served on the ops port, clean for promtool
    rc, out = await promtool_check(text)
    assert rc == 0, out
    assert "gateway_cert_renewal_next_timestamp_seconds{usage=\"sign\"}" in text
    assert ss1.health is not None
    check = next(c for c in await ss1.health.checks() if c.name == "cert_renewal")
    assert check.ok and not check.warning, check


async def test_the_job_renews_due_certificates_by_itself(tmp_path: Path) -> None:
    # renew 40 minutes before expiry: the first certificates (30 minutes) are due at start, the renewed (2 h) not
    async with federation(tmp_path, renew_before_days=40 / 1440, acme_auth_switch_delay_seconds=0.0) as (fed, _p):
        ss1 = fed.server("ss1")
        renewal = ss1.renewal
        assert renewal is not None
        # the loop renews the signing certificate at once, and orders the authentication one as soon as the
        # server is in the global configuration (its registration is then approved as a renewal)
        await wait_for_condition(lambda: renewal.state["sign"].last_renewed is not None
                                 and bool(renewal.state["auth"].submitted),
                                 timeout=30, what="the job renews the signing and orders the authentication cert")
        assert sign_sha(ss1) == renewal.state["sign"].last_sha256
        await fed.publish_and_refresh()  # the approved registration is published
        done = await renewal.run_once()
        assert done == {"sign": "not-due", "auth": "switched"}, done
        assert auth_sha(ss1) == renewal.state["auth"].last_sha256 in renewal.state["auth"].submitted
        # the renewed certificates are not due: the next pass does nothing
        assert await renewal.run_once() == {"sign": "not-due", "auth": "not-due"}
        await ss1.context.peers.close()  # type: ignore[union-attr]  # a new handshake, with the new certificate
        assert (await call(ss1, f"{PROBE}/after")).status == 200


async def test_a_failing_renewal_is_retried_with_back_off_and_shown(world: tuple[Federation, Probe]) -> None:
    fed, _probe = world
    ss1 = fed.server("ss1")
    renewal = ss1.renewal
    assert renewal is not None and fed.acme is not None and ss1.health is not None
    later = ss1.clock() + timedelta(minutes=15)
    # the CA forgets the EAB key: the order is refused
    saved = dict(fed.acme.eab)
    fed.acme.eab.clear()
    done = await renewal.run_once(later)
    assert done["sign"] == "failed"
    st = renewal.state["sign"]
    assert st.failures == 1 and "unauthorized" in st.last_error and st.next_attempt is not None
    assert st.next_attempt - later == timedelta(seconds=1)
    assert (await renewal.run_once(later))["sign"] == "retry-later"  # back-off: not before next_attempt
    check = next(c for c in await ss1.health.checks() if c.name == "cert_renewal")
    assert check.ok and check.warning and "renewal failing" in check.detail
    assert check.to_dict()["warning"] is True
    page = await dashboard(fed, ss1)  # the web interface's dashboard shows it
    assert re.search(r"<td>cert_renewal</td><td><strong class=\"bad\">passes, with a warning</strong></td>"
                     r"<td>sign: renewal failing \(1 attempts; acme-order: the ACME server refused: "
                     r"urn:ietf:params:acme:error:unauthorized", page), page
    done = await renewal.run_once(later + timedelta(seconds=1))
    assert done["sign"] == "failed" and st.failures == 2
    assert st.next_attempt == later + timedelta(seconds=1) + timedelta(seconds=2)  # doubled
    reg = ss1.metrics.registry
    assert reg.get_sample_value("gateway_cert_renewals_total", {"usage": "sign", "outcome": "failed"}) == 2
    assert reg.get_sample_value("gateway_cert_renewal_failures", {"usage": "sign"}) == 2
    assert "acmeRenewalFailed" in await audit_actions(ss1)
    # the CA takes the key again: the next try succeeds, the warning goes
    fed.acme.eab.update(saved)
    done = await renewal.run_once(later + timedelta(seconds=10))
    assert done["sign"] == "renewed" and st.failures == 0
    check = next(c for c in await ss1.health.checks() if c.name == "cert_renewal")
    assert check.ok and not check.warning
    assert (await call(ss1, f"{PROBE}/renewed")).status == 200


async def test_signing_key_on_a_pkcs11_device_is_renewed_on_the_device(tmp_path: Path) -> None:
    hsm = hsm_kit.setup(tmp_path / "softhsm")
    device = hsm_kit.new_device(hsm)
    async with federation(tmp_path) as (fed, _probe):
        ss1 = fed.server("ss1")
        # the signing key moves to the device (as an operator does), with a certificate of the first validity
        token = Pkcs11Token(device.library, device.label, sessions=1)
        await token.login(hsm_kit.USER_PIN)
        try:
            key = await token.generate_key("sign", now=ss1.clock())
            csr = await token.csr(key.id, server_id=ss1.server_id)
            cert = fed.ca.issue(csr, kind="sign", expected_identity=ss1.server_id.owner, now=ss1.clock(),
                                validity=FIRST_VALIDITY)
            conf = ss1.globalconf.current
            assert conf is not None
            first = await token.import_cert(keys.cert_pem(cert).encode(), server_id=ss1.server_id,
                                            ca_for=conf.ca_for, now=ss1.clock())
            await token.activate(first.sha256)
        finally:
            token.close()
        pin_file = tmp_path / "device.pin"
        pin_file.write_text(hsm_kit.USER_PIN + "\n")
        pin_file.chmod(0o600)
        await ss1.stop()
        settings = dataclasses.replace(ss1.settings, server=dataclasses.replace(
            ss1.settings.server, client_port=0, client_https_port=-1, server_port=0, admin_port=0, ops_port=0,
            pkcs11_library=device.library, pkcs11_token_label=device.label, pkcs11_pin_file=str(pin_file)))
        hsm_ss1 = SecurityServer(settings, clock=ss1.clock)
        await hsm_ss1.start()
        try:
            fed.acme_hosts[hsm_ss1.settings.server.acme_identifier] = hsm_ss1
            assert hsm_ss1.renewal is not None and hsm_ss1.device is not None
            assert sign_sha(hsm_ss1) == first.sha256
            done = await hsm_ss1.renewal.run_once(hsm_ss1.clock() + timedelta(minutes=15))
            assert done["sign"] == "renewed", hsm_ss1.renewal.state
            new = hsm_ss1.renewal.state["sign"].last_sha256
            assert sign_sha(hsm_ss1) == new != first.sha256
            # the new key and certificate are on the device, not in the software token
            state = await hsm_ss1.device.state()
            on_device = {c.sha256: k for k in state.keys for c in k.certs}
            assert new in on_device and on_device[new].label == "acme-renewal"
            assert hsm_ss1.token is not None
            assert new not in {c.sha256 for k in (await hsm_ss1.token.state()).keys for c in k.certs}
            answer = await call(hsm_ss1, f"{PROBE}/after-device-renewal")
            assert answer.status == 200, answer.body
        finally:
            await hsm_ss1.stop()


async def test_replaced_certificates_are_retired_once_expired(world: tuple[Federation, Probe]) -> None:
    fed, _probe = world
    ss1 = fed.server("ss1")
    assert ss1.token is not None and ss1.renewal is not None
    in_use = sign_sha(ss1)
    # an active signing certificate that expired (issued and imported as of 20 minutes ago, valid 10)
    past = ss1.clock() - timedelta(minutes=20)
    key = await ss1.token.generate_key("sign", now=past)
    csr = await ss1.token.csr(key.id, server_id=ss1.server_id)
    cert = fed.ca.issue(csr, kind="sign", expected_identity=ss1.server_id.owner, now=past,
                        validity=timedelta(minutes=10))
    conf = ss1.globalconf.current
    assert conf is not None
    old = await ss1.token.import_cert(keys.cert_pem(cert).encode(), server_id=ss1.server_id, ca_for=conf.ca_for,
                                      now=past)
    await ss1.token.activate(old.sha256)
    assert (await ss1.renewal.run_once())["sign"] == "not-due"
    _key, entry = (await ss1.token.state()).cert(old.sha256)
    assert not entry.active  # retired, and the certificate in use stays
    assert sign_sha(ss1) == in_use
    assert "acmeExpiredCertificateDeactivated" in await audit_actions(ss1)


async def test_a_refused_switch_is_rolled_back_and_retried_without_a_new_order(
    world: tuple[Federation, Probe], monkeypatch: pytest.MonkeyPatch,
) -> None:
    fed, _probe = world
    ss1 = fed.server("ss1")
    renewal = ss1.renewal
    assert renewal is not None and ss1.token is not None
    old = sign_sha(ss1)
    later = ss1.clock() + timedelta(minutes=15)

    async def refuse() -> bool:
        raise ConfigError("the new signing certificate is unknown according to OCSP; keeping the current one")

    monkeypatch.setattr(renewal, "host", dataclasses.replace(renewal.host, keys_changed=refuse))  # refused once
    assert (await renewal.run_once(later))["sign"] == "failed"
    st = renewal.state["sign"]
    assert st.last_error.startswith("activate: the new signing certificate is unknown according to OCSP")
    assert sign_sha(ss1) == old
    state = await ss1.token.state()
    ordered = [c for k in state.keys if k.usage == "sign" and k.label == "acme-renewal" for c in k.certs]
    assert len(ordered) == 1 and not ordered[0].active  # rolled back: not active while not in use
    monkeypatch.undo()
    assert (await renewal.run_once(later + timedelta(seconds=2)))["sign"] == "renewed"
    assert sign_sha(ss1) == ordered[0].sha256
    assert (await audit_actions(ss1)).count("acmeCertificateIssued") == 2  # sign once, auth once: no new order
    assert (await call(ss1, f"{PROBE}/after-retry")).status == 200
