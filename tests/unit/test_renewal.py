"""The renewal rules (pure): when a certificate is due, the back-off table, which authentication certificate
waits for its registration, and the settings that are refused."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.server.renewal import CertRenewer, RenewalHost, RenewalPolicy, due, pending_cert
from gateway.settings import ServerSettings, Settings
from gateway.token.model import CertEntry, KdfParams, KeyEntry, TokenState

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def policy(**server: object) -> RenewalPolicy:
    return RenewalPolicy.from_settings(Settings(server=ServerSettings(**server)))  # type: ignore[arg-type]


def cert(sha: str, *, not_before: datetime, days: float, state: str = "active") -> CertEntry:
    return CertEntry(sha256=sha, pem="", kind="auth", identity="DEV/GOV/1001/ss1", not_before=not_before,
                     not_after=not_before + timedelta(days=days), state=state, imported_at=not_before)  # type: ignore[arg-type]


@pytest.mark.parametrize(("days_left", "expected"), [(31, False), (30.001, False), (30, True), (1, True), (-1, True)])
def test_a_certificate_is_due_within_renew_before_days(days_left: float, expected: bool) -> None:
    entry = cert("a", not_before=NOW - timedelta(days=100), days=100 + days_left)
    assert due(entry, policy(), NOW) is expected


@pytest.mark.parametrize(("failures", "seconds"), [(1, 60), (2, 120), (3, 240), (6, 1920), (7, 3600), (50, 3600)])
def test_retry_back_off_doubles_up_to_the_maximum(failures: int, seconds: int) -> None:
    assert policy().retry_delay(failures) == timedelta(seconds=seconds)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("acme_renew_before_days", 0.0, "acme_renew_before_days = 0.0 must be positive"),
    ("acme_check_seconds", -1.0, "acme_check_seconds = -1.0 must be positive"),
    ("acme_retry_seconds", 0.0, "acme_retry_seconds = 0.0 must be positive"),
    ("acme_retry_max_seconds", 10.0, "acme_retry_max_seconds = 10.0 is below acme_retry_seconds = 60.0"),
    ("acme_auth_switch_delay_seconds", -1.0, "acme_auth_switch_delay_seconds = -1.0 must be 0 or more"),
])
def test_bad_renewal_settings_are_refused(key: str, value: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policy(**{key: value})


def test_the_pending_auth_certificate_is_the_newest_inactive_one_a_renewal_brought() -> None:
    old = cert("old", not_before=NOW - timedelta(days=10), days=20)
    new = cert("new", not_before=NOW - timedelta(hours=1), days=90, state="inactive")
    newer = cert("newer", not_before=NOW - timedelta(minutes=5), days=90, state="inactive")
    future = cert("future", not_before=NOW + timedelta(hours=1), days=90, state="inactive")
    renewal_key = KeyEntry(id="k", usage="auth", key_type="ec-p256", label="acme-renewal", created_at=NOW,
                           certs=(new, newer, future))
    by_hand = KeyEntry(id="h", usage="auth", key_type="ec-p256", label="", created_at=NOW,
                       certs=(cert("manual", not_before=NOW, days=90, state="inactive"),))
    current = KeyEntry(id="c", usage="auth", key_type="ec-p256", label="", created_at=NOW, certs=(old,))
    state = TokenState(kdf=KdfParams(salt=b"0" * 16), verifier="", keys=(current, renewal_key, by_hand))
    assert pending_cert(state, "auth", old, NOW) == newer  # not the one made by hand, not one valid only later
    assert pending_cert(state, "auth", newer, NOW) is None  # nothing newer than the one in use
    active = dataclasses.replace(renewal_key, certs=(dataclasses.replace(new, state="active"),))
    assert pending_cert(dataclasses.replace(state, keys=(current, active)), "auth", old, NOW) is None
    assert pending_cert(state, "sign", old, NOW) is None  # of the usage asked for only


async def _host(settings: Settings, token: object) -> RenewalHost:
    from prometheus_client import CollectorRegistry

    async def nothing(*_a: object) -> bool:
        return False

    return RenewalHost(settings=settings, server_id=None, token=token, device=None,  # type: ignore[arg-type]
                       conf=lambda: None, registered=lambda: None, audit=nothing, keys_changed=nothing,
                       clock=lambda: NOW, registry=CollectorRegistry())


@pytest.mark.parametrize(("server", "with_token", "message"), [
    ({}, False, "needs the keys in a token"),
    ({"acme_eab_kid": "eab-1"}, True, "needs acme_eab_kid and acme_eab_key_file"),
    ({"acme_eab_key_file": "/nonexistent"}, True, "needs acme_eab_kid and acme_eab_key_file"),
    ({"acme_eab_kid": "eab-1", "acme_eab_key_file": "/nonexistent/eab.key"}, True, "acme_eab_key_file"),
])
async def test_acme_settings_that_cannot_work_stop_the_server(tmp_path: Path, server: dict[str, object],
                                                              with_token: bool, message: str) -> None:
    settings = Settings(server=ServerSettings(acme_directory_url="http://ca.invalid/acme/directory",
                                              state_dir=str(tmp_path), **server))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        await CertRenewer.open(await _host(settings, object() if with_token else None))


def _renewer() -> CertRenewer:
    from prometheus_client import CollectorRegistry

    from gateway.server.acmeclient import AcmeAccount, Http01Responder
    from gateway.trust.keys import generate_private_key

    async def nothing(*_a: object) -> bool:
        return False

    host = RenewalHost(settings=Settings(), server_id=None, token=object(), device=None,  # type: ignore[arg-type]
                       conf=lambda: None, registered=lambda: None, audit=nothing, keys_changed=nothing,
                       clock=lambda: NOW, registry=CollectorRegistry())
    account = AcmeAccount(directory_url="http://ca.invalid/acme/directory", eab_kid="k", eab_hmac_key="x",
                          key=generate_private_key())
    return CertRenewer(host, account=account, responder=Http01Responder(), identifier="ss1.dev.test")


@pytest.mark.parametrize(("failures", "expires", "ok", "warning", "detail"), [
    (0, NOW + timedelta(days=60), True, False, "sign: renewal due 2030-01-31"),
    (2, NOW + timedelta(days=10), True, True, "sign: renewal failing (2 attempts; acme-order: refused)"),
    (3, NOW - timedelta(seconds=1), False, False, "sign: the certificate in use expired at 2029-12-31T23:59:59"),
])
def test_readiness_warns_while_renewal_fails_and_fails_once_expired(
    failures: int, expires: datetime, ok: bool, warning: bool, detail: str,
) -> None:
    renewer = _renewer()
    st = renewer.state["sign"]
    st.failures, st.expires, st.last_error = failures, expires, "acme-order: refused" if failures else ""
    st.next_attempt = NOW + timedelta(minutes=5) if failures else None
    check = renewer.check(NOW)
    assert (check.name, check.ok, check.warning) == ("cert_renewal", ok, warning)
    assert detail in check.detail, check.detail
    assert check.to_dict().get("warning", False) is warning
