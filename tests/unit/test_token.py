"""The software token: PIN and lockout, keys, CSRs, certificate import checks, activation and choice."""

from __future__ import annotations

import ssl
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pkihelpers import make_pki

from gateway.errors import (
    CertExpired,
    ConfigError,
    GatewayError,
    NoKeyForCert,
    PkiError,
    RequestError,
    TrustError,
    UntrustedSignerCert,
    WrongCertUsage,
    WrongIdentity,
)
from gateway.identifiers import MemberId, SecurityServerId
from gateway.token import model
from gateway.token.model import KdfParams, LockoutPolicy
from gateway.token.soft import SoftToken, read_pin
from gateway.trust import certprofile, keys

PIN = "correct horse battery"
SERVER = SecurityServerId.parse("DEV/GOV/1001/ss1")
FAST = KdfParams(salt=b"0123456789abcdef", time_cost=1, memory_kib=256, parallelism=1)  # tests only
NOW = datetime(2030, 1, 1, tzinfo=UTC)


async def new_token(tmp_path: Path) -> SoftToken:
    return await SoftToken.init(tmp_path / "token", PIN, kdf=FAST)


# ---- PIN and lockout ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("failures", "seconds"), [
    (1, 0), (2, 0), (3, 30), (4, 60), (5, 120), (9, 1920), (10, 3600), (50, 3600),
])
def test_lockout_backoff_table(failures: int, seconds: int) -> None:
    assert LockoutPolicy().delay(failures) == timedelta(seconds=seconds)


@pytest.mark.parametrize(("pin", "message"), [
    ("short", "at least 8 characters"),
    ("x" * 1025, "at most 1024 characters"),
    ("with\nnewline", "control character"),
])
async def test_bad_pin_format_is_refused(tmp_path: Path, pin: str, message: str) -> None:
    with pytest.raises(RequestError) as e:
        await SoftToken.init(tmp_path / "t", pin, kdf=FAST)
    assert e.value.xroad_type == "Signer.PinFormat" and message in e.value.message
    assert not (tmp_path / "t" / "token.json").exists()


async def test_init_twice_is_refused(tmp_path: Path) -> None:
    await new_token(tmp_path)
    with pytest.raises(ConfigError, match="holds a token already"):
        await SoftToken.init(tmp_path / "token", PIN, kdf=FAST)


async def test_wrong_pins_lock_with_backoff_and_persist(tmp_path: Path) -> None:
    token = SoftToken((await new_token(tmp_path)).dir)
    assert not token.logged_in
    for n, tail in ((1, "2 more wrong PINs lock the token"), (2, "1 more wrong PIN lock the token")):
        with pytest.raises(RequestError) as e:
            await token.login("wrong pin!", now=NOW)
        assert (e.value.status, e.value.xroad_type) == (401, "Signer.PinIncorrect")
        assert f"({n} in a row; {tail})" in e.value.message
    with pytest.raises(RequestError) as e:
        await token.login("wrong pin!", now=NOW)
    assert "locked until 2030-01-01T00:00:30Z" in e.value.message
    # a fresh object (a restart) sees the lock; even the right PIN is not tried while it lasts
    again = SoftToken(token.dir)
    with pytest.raises(RequestError) as e:
        await again.login(PIN, now=NOW + timedelta(seconds=29))
    assert (e.value.status, e.value.xroad_type) == (423, "Signer.TokenLocked")
    assert "locked after 3 wrong PINs; try again in 2 s" in e.value.message
    # after the lock, one more wrong PIN doubles it
    with pytest.raises(RequestError, match="locked until 2030-01-01T00:01:31Z"):
        await again.login("wrong pin!", now=NOW + timedelta(seconds=31))
    state = await again.state()
    assert state.lockout.failures == 4
    # the right PIN after the lock logs in and resets the count
    await again.login(PIN, now=NOW + timedelta(seconds=92))
    assert again.logged_in and (await again.state()).lockout == model.Lockout()


async def test_logout_and_operations_that_need_login(tmp_path: Path) -> None:
    token = await new_token(tmp_path)
    entry = await token.generate_key("sign", now=NOW)
    token.logout()
    for op in (token.generate_key("auth", now=NOW), token.private_key(entry.id),
               token.csr(entry.id, server_id=SERVER), token.signer(now=NOW)):
        with pytest.raises(RequestError) as e:
            await op
        assert e.value.xroad_type == "Signer.TokenNotActive" and "not logged in" in e.value.message


async def test_change_pin_reencrypts_keys(tmp_path: Path) -> None:
    token = await new_token(tmp_path)
    entry = await token.generate_key("sign", now=NOW)
    await token.change_pin(PIN, "another good pin", now=NOW)
    fresh = SoftToken(token.dir)
    with pytest.raises(RequestError, match="PIN is incorrect"):
        await fresh.login(PIN, now=NOW)
    await fresh.login("another good pin", now=NOW)
    assert model.spki_sha256(await fresh.private_key(entry.id)) == entry.id


@pytest.mark.parametrize(("mode", "env", "message"), [
    (0o644, {}, "is readable by others"),
    (None, {}, "which is not set"),
])
def test_read_pin_refuses_unsafe_sources(tmp_path: Path, mode: int | None, env: dict[str, str], message: str) -> None:
    if mode is not None:
        path = tmp_path / "pin"
        path.write_text(PIN + "\n")
        path.chmod(mode)
        kwargs = {"pin_file": str(path)}
    else:
        kwargs = {"pin_env": "GATEWAY_TEST_NO_SUCH_PIN"}
    with pytest.raises(ConfigError, match=message):
        read_pin(**kwargs, environ=env)


def test_read_pin_from_file_and_env(tmp_path: Path) -> None:
    path = tmp_path / "pin"
    path.write_text(PIN + "\n")
    path.chmod(0o600)
    assert read_pin(pin_file=str(path)) == PIN
    assert read_pin(pin_env="P", environ={"P": PIN}) == PIN
    with pytest.raises(ConfigError, match="needs a PIN"):
        read_pin()


# ---- keys and CSRs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
async def test_generated_keys_are_encrypted_pkcs8_that_openssl_reads(tmp_path: Path, key_type: keys.KeyType) -> None:
    token = await new_token(tmp_path)
    entry = await token.generate_key("auth", key_type=key_type, label="main", now=NOW)
    path = token.key_path(entry.id)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert token._passphrase is not None
    with pytest.raises(PkiError):
        keys.read_private_key(path)  # useless without the PIN-derived passphrase
    out = subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout", "-passin", "stdin"],
                         input=token._passphrase + b"\n", capture_output=True, check=True)
    assert out.stdout.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert entry.key_type == key_type and entry.label == "main"


@pytest.mark.parametrize(("usage", "member", "identity"), [
    ("auth", None, "DEV/GOV/1001/ss1"),
    ("sign", None, "DEV/GOV/1001"),
    ("sign", "DEV/COM/77", "DEV/COM/77"),
])
async def test_csr_identity_comes_from_the_server_id(tmp_path: Path, usage: str, member: str | None,
                                                     identity: str) -> None:
    token = await new_token(tmp_path)
    entry = await token.generate_key(usage, now=NOW)  # type: ignore[arg-type]
    csr = await token.csr(entry.id, server_id=SERVER, member=MemberId.parse(member) if member else None)
    assert csr.is_signature_valid
    kind, ident = certprofile.csr_identity(csr)
    assert (kind, str(ident)) == (usage, identity)


@pytest.mark.parametrize(("usage", "label", "cls", "message"), [
    ("both", "", RequestError, "key usage 'both' is not one of auth, sign"),
    ("sign", "x" * 256, RequestError, "at most 255 are allowed"),
    ("sign", "bad\x00label", RequestError, "control character"),
])
async def test_bad_key_requests(tmp_path: Path, usage: str, label: str, cls: type[GatewayError], message: str) -> None:
    token = await new_token(tmp_path)
    with pytest.raises(cls) as e:
        await token.generate_key(usage, label=label, now=NOW)  # type: ignore[arg-type]
    assert message in e.value.message


# ---- certificate import ------------------------------------------------------------------------------------


async def issued(token: SoftToken, pki: object, usage: str, identity: str | None = None, *,
                 kind: str | None = None, now: datetime | None = None, days: int = 730) -> bytes:
    """A certificate for a new token key, possibly asking the CA for another identity or kind."""
    entry = await token.generate_key(usage, now=NOW)  # type: ignore[arg-type]
    key = await token.private_key(entry.id)
    kind = kind or usage
    ident = (SecurityServerId.parse(identity) if kind == "auth" else MemberId.parse(identity)) if identity else (
        SERVER if kind == "auth" else SERVER.owner)
    csr = certprofile.build_csr(key, ident, kind=kind)  # type: ignore[arg-type]
    cert = pki.ca.issue(csr, kind=kind, expected_identity=ident, now=now or datetime.now(UTC),  # type: ignore[attr-defined]
                        validity_days=days)
    return keys.cert_pem(cert).encode()


async def test_import_activate_and_choose(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    token = await new_token(tmp_path)
    ca_for = model.ca_finder([pki.ca_cert])
    now = datetime.now(UTC)
    first = await token.import_cert(await issued(token, pki, "sign"), server_id=SERVER, ca_for=ca_for, now=now)
    assert first.state == "inactive" and first.identity == "DEV/GOV/1001"
    assert token.cert_path(first.sha256).read_text() == first.pem
    with pytest.raises(ConfigError, match="no active signing certificate"):
        await token.signer(now=now)
    await token.activate(first.sha256[:12])
    assert keys.cert_sha256_hex((await token.signer(now=now)).cert) == first.sha256
    # a newer active certificate takes over; deactivating it hands back
    second = await token.import_cert(await issued(token, pki, "sign", now=now + timedelta(seconds=5)),
                                     server_id=SERVER, ca_for=ca_for, now=now)
    await token.activate(second.sha256)
    later = now + timedelta(seconds=10)
    assert keys.cert_sha256_hex((await token.signer(now=later)).cert) == second.sha256
    await token.deactivate(second.sha256)
    assert keys.cert_sha256_hex((await token.signer(now=later)).cert) == first.sha256
    signer = await token.signer(now=later)
    keys.verify_bytes(signer.cert, "ecdsa-p256-sha256", b"data", keys.raw_to_der_ecdsa(signer.sign(b"data")))
    # deleting a key with an active certificate is refused
    state = await token.state()
    key_id = state.cert(first.sha256)[0].id
    with pytest.raises(RequestError, match="has an active certificate"):
        await token.delete_key(key_id)
    report = await token.report(now=later)
    assert [(r.sha256, r.in_use) for r in report if r.sha256] == [(first.sha256, True), (second.sha256, False)]
    assert model.expiring(report, within_days=800) == [r for r in report if r.sha256 == first.sha256]
    assert model.expiring(report, within_days=30) == []


async def test_tls_material_prefers_a_registered_certificate_and_loads_into_ssl(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    token = await new_token(tmp_path)
    ca_for = model.ca_finder([pki.ca_cert])
    now = datetime.now(UTC)
    old = await token.import_cert(await issued(token, pki, "auth"), server_id=SERVER, ca_for=ca_for, now=now)
    new = await token.import_cert(await issued(token, pki, "auth", now=now + timedelta(seconds=5)),
                                  server_id=SERVER, ca_for=ca_for, now=now)
    await token.activate(old.sha256)
    await token.activate(new.sha256)
    later = now + timedelta(seconds=10)
    assert (await token.tls_material(now=later)).sha256 == new.sha256  # newest
    assert (await token.tls_material(now=later, registered={old.sha256})).sha256 == old.sha256
    material = await token.tls_material(now=later, registered=set())  # none registered: newest
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(material.cert_path), str(material.key_path), password=material.password)
    with pytest.raises(ssl.SSLError):
        ctx.load_cert_chain(str(material.cert_path), str(material.key_path), password=b"wrong")


async def test_import_refusals(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    other_pki = make_pki(tmp_path / "other")
    token = await new_token(tmp_path)
    ca_for = model.ca_finder([pki.ca_cert])
    now = datetime.now(UTC)
    foreign = other_pki.issue_sign("DEV/GOV/1001")  # a key the token does not hold
    cases: list[tuple[bytes, type[GatewayError], str]] = [
        (b"not a certificate", TrustError, "not a valid X.509 certificate"),
        (keys.cert_pem(foreign.cert).encode(), NoKeyForCert, "does not match any key of the token"),
        (await issued(token, pki, "sign", "DEV/GOV/1001/ss1", kind="auth"), WrongCertUsage,
         "is an auth certificate, but key"),
        (await issued(token, pki, "auth", "DEV/GOV/1001/ss9"), WrongIdentity,
         "names SERVER:DEV/GOV/1001/ss9, not this server DEV/GOV/1001/ss1"),
        (await issued(token, pki, "sign", "DEV/GOV/1002"), WrongIdentity,
         "names MEMBER:DEV/GOV/1002; this server signs for DEV/GOV/1001"),
        (await issued(token, other_pki, "sign"), UntrustedSignerCert, "not issued by a CA trusted"),
        (await issued(token, pki, "sign", now=now - timedelta(days=3), days=1), CertExpired, "expired at"),
    ]
    for data, cls, message in cases:
        with pytest.raises(cls) as e:
            await token.import_cert(data, server_id=SERVER, ca_for=ca_for, now=now)
        assert type(e.value) is cls and message in e.value.message, (message, e.value.message)
    ok = await issued(token, pki, "sign")
    await token.import_cert(ok, server_id=SERVER, ca_for=ca_for, now=now)
    with pytest.raises(PkiError, match="in the token already") as dup:
        await token.import_cert(ok, server_id=SERVER, ca_for=ca_for, now=now)
    assert dup.value.status == 409
    # another member it signs for is accepted when named
    extra = await issued(token, pki, "sign", "DEV/GOV/1002")
    entry = await token.import_cert(extra, server_id=SERVER, ca_for=ca_for, now=now,
                                    members=[MemberId.parse("DEV/GOV/1002")])
    assert entry.identity == "DEV/GOV/1002"


@pytest.mark.parametrize(("ref", "status", "message"), [
    ("abc", 400, "give at least 8 hex digits"),
    ("ffffffffffff", 404, "no certificate"),
])
async def test_unknown_certificate_references(tmp_path: Path, ref: str, status: int, message: str) -> None:
    token = await new_token(tmp_path)
    with pytest.raises(RequestError) as e:
        await token.activate(ref)
    assert e.value.status == status and message in e.value.message
