"""Automatic renewal of the signing and authentication certificates over ACME (I/O; the rules are pure functions).

Rules (docs/acme.md):

- **When** (:func:`due`): the certificate in use for a usage (``select_cert``) is renewed once less than
  ``[server] acme_renew_before_days`` is left before its ``notAfter``. A failed attempt is retried after
  ``acme_retry_seconds``, doubled after each further failure up to ``acme_retry_max_seconds``
  (:meth:`RenewalPolicy.retry_delay`).
- **How** (:meth:`CertRenewer.renew`), numbered as in the code: (1) a new key generated on the token that holds
  that usage's key (the PKCS#11 device for signing when one is set, else the software token; a key left
  without certificate by a failed attempt is used again); (2) its CSR, naming the same identity; (3) the ACME
  order (:mod:`gateway.server.acmeclient`); (4) the import checks of the token (docs/tokens.md).
  Signing: (5) activated, the new certificate takes over at once (the latest ``notBefore`` wins), the old one
  stays active until it expires (then it is deactivated); if the server refuses the switch (no good OCSP
  response for it yet), the new certificate is deactivated again and the retry activates it, without a new
  order. Authentication: (6) imported inactive, and a registration request signed with the new key and
  co-signed with the registered one (a renewal, which the central server may approve by itself); (7) once a
  global configuration lists the new fingerprint, and has for ``acme_auth_switch_delay_seconds`` (so that
  peers, which poll on their own schedule, list it too), it is activated and TLS switches (new connections;
  those in flight keep the old certificate).
- An authentication certificate that waits for its registration is not renewed again; its registration request
  is sent again (with back-off) until the central server has it. While the global configuration does not list
  this server at all, its authentication certificate is not renewed (looked at again after ``acme_retry_seconds``).
- Every step is an audit entry (actor ``acme``) and the attempts are counted
  (``gateway_cert_renewals_total{usage,outcome}``, ``gateway_cert_renewal_next_timestamp_seconds``,
  ``gateway_cert_renewal_failures``). Readiness (``cert_renewal``) passes with a warning while renewal fails
  and fails only once a certificate in use has expired.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.admin.store import AuditEntry
from gateway.errors import ConfigError, Conflict, GatewayError
from gateway.globalconf.model import GlobalConf
from gateway.identifiers import MemberId, SecurityServerId
from gateway.ops.readiness import Check
from gateway.server import regclient
from gateway.server.acmeclient import AcmeAccount, Http01Responder, obtain_certificate
from gateway.settings import Settings
from gateway.token import model
from gateway.token.pkcs11 import Pkcs11Token
from gateway.token.soft import SoftToken
from gateway.trust import keys
from gateway.trust.certprofile import CertKind

log = structlog.get_logger("gateway.server.renewal")

ACTOR = "acme"  # the audit log's actor for every renewal step
KEY_LABEL = "acme-renewal"  # label of the keys renewal generates (a leftover one is used again)
USAGES: tuple[CertKind, ...] = ("sign", "auth")
# outcomes after which the loop looks again after acme_retry_seconds rather than acme_check_seconds
_SOON = frozenset({"not-registered", "ordered", "registration-sent", "awaiting-registration", "awaiting-peers"})


@dataclass(frozen=True, slots=True, kw_only=True)
class RenewalPolicy:
    renew_before: timedelta
    retry_first: timedelta
    retry_max: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> RenewalPolicy:
        """Raises: ConfigError: a value out of range (naming the key)."""
        s = settings.server
        for key in ("acme_renew_before_days", "acme_check_seconds", "acme_retry_seconds", "acme_retry_max_seconds"):
            if not getattr(s, key) > 0:
                raise ConfigError(f"[server] {key} = {getattr(s, key)} must be positive")
        if not s.acme_auth_switch_delay_seconds >= 0:
            raise ConfigError(f"[server] acme_auth_switch_delay_seconds = {s.acme_auth_switch_delay_seconds} must be "
                              "0 or more")
        if s.acme_retry_max_seconds < s.acme_retry_seconds:
            raise ConfigError(f"[server] acme_retry_max_seconds = {s.acme_retry_max_seconds} is below "
                              f"acme_retry_seconds = {s.acme_retry_seconds}")
        return cls(renew_before=timedelta(days=s.acme_renew_before_days),
                   retry_first=timedelta(seconds=s.acme_retry_seconds),
                   retry_max=timedelta(seconds=s.acme_retry_max_seconds))

    def retry_delay(self, failures: int) -> timedelta:
        """The wait after the ``failures``-th consecutive failure (1, 2, ...)."""
        exponent: int = min(max(failures - 1, 0), 30)
        delay: timedelta = self.retry_first * (2**exponent)
        return min(delay, self.retry_max)


def due(cert: model.CertEntry, policy: RenewalPolicy, now: datetime) -> bool:
    """Whether the certificate in use must be renewed now."""
    return cert.not_after - now <= policy.renew_before


def pending_cert(state: model.TokenState, usage: CertKind, in_use: model.CertEntry, now: datetime
                 ) -> model.CertEntry | None:
    """The certificate a renewal brought that is not in use yet: the newest *inactive*, valid one of ``usage`` on
    a renewal key (label :data:`KEY_LABEL`) that is newer than the one in use (an authentication certificate
    waiting for its registration, or one whose activation failed)."""
    found = [c for k in state.keys if k.usage == usage and k.label == KEY_LABEL for c in k.certs
             if not c.active and c.not_before <= now < c.not_after and c.not_before > in_use.not_before]
    return max(found, key=lambda c: (c.not_before, c.imported_at)) if found else None


@dataclass(slots=True, kw_only=True)
class UsageState:
    """What the job knows about one usage's renewal (in memory; after a restart it looks afresh)."""

    failures: int = 0
    next_attempt: datetime | None = None  # a retry is not tried before this
    last_error: str = ""
    last_renewed: datetime | None = None
    last_sha256: str = ""  # the certificate the last successful renewal brought
    submitted: set[str] = field(default_factory=set)  # auth: fingerprints whose registration was sent
    listed_since: dict[str, datetime] = field(default_factory=dict)  # auth: first seen in a global configuration
    waiting: str = ""  # auth: what the new certificate waits for ("" when none)
    expires: datetime | None = None  # notAfter of the certificate in use, as of the last check


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.renewals = Counter("gateway_cert_renewals", "Certificate renewals over ACME, by usage and outcome "
                                "(attempted, succeeded, failed)", ["usage", "outcome"], registry=registry)
        self.next = Gauge("gateway_cert_renewal_next_timestamp_seconds", "Unix time of the next renewal attempt of the "
                          "certificate in use, by usage", ["usage"], registry=registry)
        self.failures = Gauge("gateway_cert_renewal_failures", "Consecutive failed renewal attempts, by usage",
                              ["usage"], registry=registry)
        for usage in USAGES:
            for outcome in ("attempted", "succeeded", "failed"):
                self.renewals.labels(usage, outcome)
            self.failures.labels(usage).set(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class RenewalHost:
    """What the job needs of the running server (:class:`~gateway.server.runtime.SecurityServer`)."""

    settings: Settings
    server_id: SecurityServerId
    token: SoftToken | None
    device: Pkcs11Token | None
    conf: Callable[[], GlobalConf | None]
    registered: Callable[[], set[str] | None]
    audit: Callable[[AuditEntry], Awaitable[object]]
    keys_changed: Callable[[], Awaitable[bool]]  # counts the change for the other workers, then reloads here
    clock: Callable[[], datetime]
    registry: CollectorRegistry


class CertRenewer:
    """The renewal job of one security server (worker 0 only, as the admin API)."""

    def __init__(self, host: RenewalHost, *, account: AcmeAccount, responder: Http01Responder,
                 identifier: str) -> None:
        self.host = host
        self.account = account
        self.responder = responder
        self.identifier = identifier
        self.policy = RenewalPolicy.from_settings(host.settings)
        self.check_interval = host.settings.server.acme_check_seconds
        self.switch_delay = timedelta(seconds=host.settings.server.acme_auth_switch_delay_seconds)
        self.state: dict[CertKind, UsageState] = {u: UsageState() for u in USAGES}
        self._metrics = _Metrics(host.registry)
        self._lock = asyncio.Lock()
        self.wakeup = asyncio.Event()  # set to check now (tests, the admin API)

    @classmethod
    async def open(cls, host: RenewalHost) -> CertRenewer:
        """Read the ACME settings and start the http-01 responder.

        Raises:
            ConfigError: ACME without a software token, a missing EAB key id or key file, a bad value, or a
                responder port that cannot be bound.
        """
        s = host.settings.server
        if host.token is None:
            raise ConfigError("[server] acme_directory_url needs the keys in a token ([server] token_dir): "
                              "renewal generates its keys there")
        if not s.acme_eab_kid or not s.acme_eab_key_file:
            raise ConfigError("[server] acme_directory_url needs acme_eab_kid and acme_eab_key_file (the external "
                              "account binding the CA issued for this server's owner)")
        from gateway.server.acmeclient import account_key, read_eab_key

        account = AcmeAccount(directory_url=s.acme_directory_url, eab_kid=s.acme_eab_kid,
                              eab_hmac_key=read_eab_key(s.acme_eab_key_file), key=account_key(s.state_dir))
        identifier = s.acme_identifier or (s.address or s.server_host).rsplit(":", 1)[0].strip("[]")
        responder = Http01Responder()
        await responder.start(s.acme_http01_host, s.acme_http01_port)
        renewer = cls(host, account=account, responder=responder, identifier=identifier)
        return renewer

    async def close(self) -> None:
        await self.responder.close()

    # ---- the token of each usage ------------------------------------------------------------------------

    def _token(self, usage: CertKind) -> SoftToken | Pkcs11Token:
        if usage == "sign" and self.host.device is not None:
            return self.host.device
        assert self.host.token is not None
        return self.host.token

    async def _audit(self, action: str, usage: CertKind, *, ok: bool = True, **details: Any) -> None:
        entry = AuditEntry(at=self.host.clock(), actor=ACTOR, auth="none", remote="local", action=action, method="-",
                           path=f"acme:{usage}", result="success" if ok else "failed", status=200 if ok else 500,
                           details={"usage": usage, **details})
        try:
            await self.host.audit(entry)
        except GatewayError as e:  # the audit log failing does not stop a renewal that went through
            log.warning("audit entry not written", action=action, error=e.message)

    # ---- one pass ---------------------------------------------------------------------------------------

    async def run_once(self, now: datetime | None = None) -> dict[CertKind, str]:
        """Look at both usages as of ``now`` (default: the server's clock) and renew what is due.

        ``now`` decides what is due and when to retry; the steps themselves (key creation, import checks, the
        registration request's time, audit entries) use the server's clock. Returns what was done per usage:
        ``renewed``, ``not-due``, ``retry-later``, ``failed``, ``awaiting-registration``, ``registration-sent``,
        ``not-registered`` (authentication, while the global configuration does not list this server) or
        ``no-certificate``.
        """
        async with self._lock:
            out: dict[CertKind, str] = {}
            for usage in USAGES:
                out[usage] = await self._one(usage, now or self.host.clock())
            return out

    async def _one(self, usage: CertKind, now: datetime) -> str:
        st = self.state[usage]
        token = self._token(usage)
        state = await token.state()
        registered = self.host.registered() if usage == "auth" else None
        current = model.select_cert(state, usage, now=now, registered=registered) or _latest_expired(state, usage,
                                                                                                     now)
        if current is None:
            st.expires = None
            return "no-certificate"
        st.expires = current[1].not_after
        await self._retire_expired(token, state, usage, keep=current[1].sha256)
        if st.next_attempt is not None and now < st.next_attempt:
            self._export(usage)
            return "retry-later"
        if usage == "auth" and not registered:
            # not registered (yet): a renewal could not be co-signed by a registered certificate, and the server
            # would present the new certificate at once (select_cert prefers registered ones only when there are
            # some). The loop looks again after acme_retry_seconds; not counted as a failure.
            self._export(usage)
            return "not-registered"
        pending = pending_cert(state, usage, current[1], now)
        if pending is not None and usage == "auth" and registered is not None:
            return await self._advance_auth(pending, current, registered, now)
        if pending is not None and usage == "sign":  # ordered before, its activation failed: again, no new order
            try:
                await self._activate(token, usage, pending.sha256, current[1].sha256)
            except GatewayError as e:
                await self._failed(usage, "activate", e, now)
                return "failed"
            self._succeeded(usage, now, pending.sha256, renewed=True)
            return "renewed"
        if not due(current[1], self.policy, now):
            self._export(usage)
            return "not-due"
        try:
            await self.renew(usage, current, now)
        except GatewayError:  # recorded by renew(): audited, counted, retried with back-off
            return "failed"
        return "renewed" if usage == "sign" else "ordered"

    async def renew(self, usage: CertKind, current: tuple[model.KeyEntry, model.CertEntry], now: datetime) -> str:
        """Renew the certificate in use for ``usage``; returns the new fingerprint.

        Raises:
            GatewayError: the step that failed (recorded, retried later with back-off).
        """
        token = self._token(usage)
        server_id = self.host.server_id
        old = current[1]
        self._metrics.renewals.labels(usage, "attempted").inc()
        await self._audit("acmeRenewalStarted", usage, certificate=old.sha256,
                          not_after=old.not_after.isoformat(), identifier=self.identifier)
        step = "generate-key"
        try:
            # (1) a new key on the token (or the one a failed attempt left without certificate)
            state = await token.state()
            key = next((k for k in state.keys if k.usage == usage and k.label == KEY_LABEL and not k.certs), None)
            if key is None:
                key = await token.generate_key(usage, label=KEY_LABEL, now=self.host.clock())
                await self._audit("acmeKeyGenerated", usage, key_id=key.id, token=_token_name(token))
            # (2) its CSR, for the identity the current certificate names
            step = "csr"
            identity = old.identity
            member = server_id.owner if usage == "auth" else _member(identity)
            csr = await token.csr(key.id, server_id=server_id, member=member if usage == "sign" else None)
            # (3) the ACME order
            step = "acme-order"
            cert = await obtain_certificate(self.account, identifier=self.identifier, csr=csr,
                                            responder=self.responder)
            sha256 = keys.cert_sha256_hex(cert)
            await self._audit("acmeCertificateIssued", usage, certificate=sha256,
                              not_after=cert.not_valid_after_utc.isoformat(), serial=f"{cert.serial_number:X}")
            # (4) imported with the token's checks, (5) activated
            step = "import"
            conf = self.host.conf()
            if conf is None:
                raise ConfigError("no global configuration: the new certificate's CA cannot be checked")
            entry = await token.import_cert(keys.cert_pem(cert).encode("ascii"), server_id=server_id,
                                            ca_for=conf.ca_for, members=(member,), now=self.host.clock())
            await self._audit("acmeCertificateImported", usage, certificate=entry.sha256)
            if usage == "auth":
                # (6) registered centrally; activated (TLS switches) once global configurations list it
                step = "register"
                await self._register(entry, current)
            else:
                step = "activate"
                await self._activate(token, usage, entry.sha256, old.sha256)
        except GatewayError as e:
            await self._failed(usage, step, e, now)
            raise
        # signing: renewed now; authentication: the rest happens in the next passes (registration, activation)
        self._succeeded(usage, now, entry.sha256, renewed=usage == "sign")
        log.info("certificate renewed over ACME" if usage == "sign" else "certificate ordered over ACME",
                 usage=usage, sha256=entry.sha256, previous=old.sha256)
        return entry.sha256

    async def _activate(self, token: SoftToken | Pkcs11Token, usage: CertKind, sha256: str, previous: str) -> None:
        """Activate and switch; if the server refuses to switch (no good OCSP response for the new signing
        certificate yet, say), deactivate it again, so that the next attempt activates it once more.

        Raises:
            GatewayError: the token or the switch failed.
        """
        await token.activate(sha256)
        try:
            await self.host.keys_changed()  # counted for the other workers, switched here
        except GatewayError:
            await token.deactivate(sha256)
            raise
        await self._audit("acmeCertificateActivated", usage, certificate=sha256, previous=previous)

    async def _advance_auth(self, pending: model.CertEntry, current: tuple[model.KeyEntry, model.CertEntry],
                            registered: Collection[str], now: datetime) -> str:
        """The steps after the order for a new authentication certificate: registration, then activation once
        global configurations have listed it for ``acme_auth_switch_delay_seconds``."""
        st = self.state["auth"]
        st.waiting = f"certificate {pending.sha256[:16]} waits for its registration"
        if pending.sha256 not in registered:
            if pending.sha256 in st.submitted:
                self._export("auth")
                return "awaiting-registration"
            try:
                await self._register(pending, current)
            except GatewayError as e:
                await self._failed("auth", "register", e, now)
                return "failed"
            self._export("auth")
            return "registration-sent"
        # listed: wait until the peers have had time to download a configuration that lists it too
        since = st.listed_since.setdefault(pending.sha256, now)
        if now - since < self.switch_delay:
            st.waiting = (f"certificate {pending.sha256[:16]} is registered; used from "
                          f"{(since + self.switch_delay).isoformat()} on, once peers have the configuration")
            self._export("auth")
            return "awaiting-peers"
        token = self._token("auth")
        try:
            await self._activate(token, "auth", pending.sha256, current[1].sha256)
        except GatewayError as e:
            await self._failed("auth", "activate", e, now)
            return "failed"
        st.waiting = ""
        self._succeeded("auth", now, pending.sha256, renewed=True)
        return "switched"

    async def _retire_expired(self, token: SoftToken | Pkcs11Token, state: model.TokenState, usage: CertKind, *,
                              keep: str) -> None:
        """Deactivate the active certificates of ``usage`` that renewal replaced and that have now expired."""
        now = self.host.clock()
        for k in state.keys:
            for c in k.certs:
                if k.usage == usage and c.active and c.not_after <= now and c.sha256 != keep:
                    await token.deactivate(c.sha256)
                    await self._audit("acmeExpiredCertificateDeactivated", usage, certificate=c.sha256,
                                      not_after=c.not_after.isoformat())

    async def _register(self, new: model.CertEntry, current: tuple[model.KeyEntry, model.CertEntry]) -> None:
        """Submit the registration of ``new``, co-signed with the certificate in use (a renewal) while that one
        is still valid (an expired one cannot co-sign: an officer decides then)."""
        token = self.host.token
        assert token is not None
        new_key = await token.private_key(token_key_of(await token.state(), new.sha256))
        cosign = current[1].not_after > self.host.clock()
        old_key = await token.private_key(current[0].id) if cosign else None
        conf = self.host.conf()
        entry = None if conf is None else conf.server(self.host.server_id)
        try:  # the address stays the one registered now
            record = await regclient.send(self.host.settings, "auth_cert_reg", key=new_key, cert=new.certificate,
                                          now=self.host.clock(), renewal_key=old_key,
                                          renewal_cert=current[1].certificate if cosign else None,
                                          address=None if entry is None else entry.address)
        except Conflict as e:  # sent before (e.g. by this job before a restart): the central server has it
            record = {"state": "submitted", "detail": e.message}
        self.state["auth"].submitted.add(new.sha256)
        await self._audit("acmeAuthCertRegistrationSubmitted", "auth", certificate=new.sha256,
                          request_id=record.get("id"), state=record.get("state"), decided_by=record.get("decided_by"))

    async def _failed(self, usage: CertKind, step: str, e: GatewayError, now: datetime) -> None:
        st = self.state[usage]
        st.failures += 1
        st.last_error = f"{step}: {e.message}"
        st.next_attempt = now + self.policy.retry_delay(st.failures)
        self._metrics.renewals.labels(usage, "failed").inc()
        self._export(usage)
        log.warning("certificate renewal failed", usage=usage, step=step, error=e.message, failures=st.failures,
                    retry_at=st.next_attempt.isoformat())
        await self._audit("acmeRenewalFailed", usage, ok=False, step=step, error=e.message,
                          failures=st.failures, retry_at=st.next_attempt.isoformat())

    def _succeeded(self, usage: CertKind, now: datetime, sha256: str, *, renewed: bool) -> None:
        st = self.state[usage]
        st.failures, st.next_attempt, st.last_error = 0, None, ""
        if renewed:
            st.last_renewed, st.last_sha256 = now, sha256
            self._metrics.renewals.labels(usage, "succeeded").inc()
        self._export(usage)

    def _export(self, usage: CertKind) -> None:
        st = self.state[usage]
        self._metrics.failures.labels(usage).set(st.failures)
        when = st.next_attempt or (None if st.expires is None else st.expires - self.policy.renew_before)
        if when is not None:
            self._metrics.next.labels(usage).set(when.timestamp())

    # ---- readiness and the loop -------------------------------------------------------------------------

    def check(self, now: datetime) -> Check:
        """``cert_renewal``: a warning (still ready) while renewal fails or waits; failing once a certificate in
        use has expired."""
        parts, warning, ok = [], False, True
        for usage in USAGES:
            st = self.state[usage]
            if st.expires is not None and st.expires <= now:
                ok = False
                parts.append(f"{usage}: the certificate in use expired at {st.expires.isoformat()}")
            elif st.failures:
                warning = True
                retry = st.next_attempt.isoformat() if st.next_attempt else "soon"
                parts.append(f"{usage}: renewal failing ({st.failures} attempts; {st.last_error}); next try "
                             f"{retry}; the certificate expires {st.expires.isoformat() if st.expires else '?'}")
            elif st.waiting and st.expires is not None:
                warning = warning or st.expires - now <= self.policy.renew_before
                parts.append(f"{usage}: {st.waiting}; the certificate in use expires {st.expires.isoformat()}")
            elif st.expires is not None:
                parts.append(f"{usage}: renewal due {(st.expires - self.policy.renew_before).isoformat()}")
        return Check(name="cert_renewal", ok=ok, warning=warning and ok,
                     detail="; ".join(parts) or "not checked yet")

    async def run(self, stop: asyncio.Event) -> None:
        """Check every ``acme_check_seconds`` (sooner when a retry is due or :attr:`wakeup` is set)."""
        while not stop.is_set():
            outcome: dict[CertKind, str] = {}
            try:
                outcome = await self.run_once()
            except GatewayError as e:
                log.warning("certificate renewal check failed", error=e.message)
            except Exception:
                log.exception("certificate renewal check failed")
            now = self.host.clock()
            wait = self.check_interval
            if set(outcome.values()) & _SOON:  # a step of an authentication renewal is ahead: look again soon
                wait = min(wait, self.policy.retry_first.total_seconds())
            for st in self.state.values():
                if st.next_attempt is not None:
                    wait = min(wait, max((st.next_attempt - now).total_seconds(), 0.0))
            self.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                waiter = asyncio.ensure_future(self.wakeup.wait())
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({waiter, stopper}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    stopper.cancel()


def _latest_expired(state: model.TokenState, usage: CertKind, now: datetime
                    ) -> tuple[model.KeyEntry, model.CertEntry] | None:
    """The active certificate of ``usage`` that expired last, when none is valid now (renewed all the same)."""
    expired = [(k, c) for k in state.keys if k.usage == usage for c in k.certs if c.active and c.not_after <= now]
    return max(expired, key=lambda kc: kc[1].not_after) if expired else None


def token_key_of(state: model.TokenState, sha256: str) -> str:
    return state.cert(sha256)[0].id


def _member(identity: str) -> MemberId:
    return MemberId.parse(identity, encoded=False)


def _token_name(token: SoftToken | Pkcs11Token) -> str:
    return "pkcs11" if isinstance(token, Pkcs11Token) else "software"


__all__ = ["CertRenewer", "RenewalHost", "RenewalPolicy", "due", "pending_cert"]
