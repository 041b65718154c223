"""A security server's readiness checks and the refresh of its time-derived gauges (I/O shell).

The facts come from the running parts (database, token, global configuration updater, OCSP cache,
checkpointer, message-log writer, origin claim); :mod:`gateway.ops.readiness` decides. Checks, in the order
``/readyz`` lists them (docs/operations.md section 8):

1. ``database``: on SQLite, the database's filesystem has ``readiness_disk_free_bytes`` free; a write that
   changes nothing commits within :data:`DB_TIMEOUT_SECONDS`;
2. ``token``: the software token is logged in (plain key files: always passes);
   ``pkcs11:NAME``, one per ``[[server.pkcs11]]`` device (docs/tokens.md): fails while a device that holds a
   key in use (the signing key, the witness key) is unavailable or logged out, naming it; an idle device that
   is unavailable passes with a **warning**;
3. ``globalconf``: a configuration is trusted and expires more than ``readiness_conf_margin_seconds`` from now;
4. ``ocsp_signing``, ``ocsp_auth``: our own signing and authentication certificates have a cached, good OCSP
   response that stays fresh for more than ``readiness_ocsp_margin_seconds``; on a server without active keys
   yet (started with an empty software token) one failing ``keys`` check instead, naming what is missing;
5. ``timestamping``: the oldest untimestamped record is more than ``readiness_grace_margin_seconds`` from the
   end of the grace period;
6. ``messagelog``: the writer takes records (its last commit did not fail, or check 1 passes: the database
   takes writes again) and this process holds its log origin (on PostgreSQL its lock's connection is pinged
   now, once check 1 passes);
7. ``witnessing`` (only while the global configuration has a witness policy for this server and the pusher
   runs): passes always, with a **warning** while a log's witnessing lag is over ``[witness]
   lag_warning_seconds`` (docs/witness.md section 4): exchanges do not depend on witnesses.
8. ``cert_renewal`` (with ACME on, docs/acme.md): passes with a warning while a renewal fails or waits; fails
   once a certificate in use has expired.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509

from gateway.errors import GatewayError
from gateway.globalconf.updater import GlobalConfUpdater
from gateway.messagelog.checkpointer import Checkpointer
from gateway.ops.metrics import ServerMetrics
from gateway.ops.readiness import Check, deadline_check
from gateway.proxy.context import ProxyContext
from gateway.server.lease import OriginLease
from gateway.server.renewal import CertRenewer
from gateway.serverconf.store import ServerConfStore
from gateway.settings import ServerSettings
from gateway.storage.db import sqlite_directory
from gateway.token.pkcs11 import Pkcs11Token
from gateway.token.soft import SoftToken
from gateway.trust.keys import cert_sha256_hex
from gateway.witness.pusher import Pusher

DB_TIMEOUT_SECONDS = 2.0  # seconds the database write of check 1 may take


@dataclass(slots=True, kw_only=True)
class ServerHealth:
    """The checks and gauges of one running security server process."""

    settings: ServerSettings
    clock: Callable[[], datetime]
    metrics: ServerMetrics
    store: ServerConfStore
    globalconf: GlobalConfUpdater
    checkpointer: Checkpointer
    context: ProxyContext
    token: SoftToken | None
    lease: OriginLease | None
    devices: Mapping[str, Pkcs11Token] = field(default_factory=dict)  # every PKCS#11 device, by name
    device_usage: Callable[[Pkcs11Token], str] = lambda _d: ""  # the keys in use on a device ("" when idle)
    pusher: Pusher | None = None  # pushes checkpoints to witnesses ([witness] push)
    lag_warning_seconds: float = 900.0  # [witness] lag_warning_seconds
    renewal: CertRenewer | None = None  # the ACME renewal job, when [server] acme_directory_url is set

    async def checks(self) -> list[Check]:
        now = self.clock()
        database = await self._database()
        checks = [database, self._token(), self._globalconf(now)]
        checks[2:2] = [self._device(d) for d in self.devices.values()]
        if self.context.not_configured is not None:  # no active keys yet: their OCSP checks have no subject
            checks.append(Check(name="keys", ok=False, detail=self.context.not_configured))
        else:
            checks += [self._ocsp("ocsp_signing", self.context.signer.cert, now),
                       self._ocsp("ocsp_auth", self.context.auth_cert, now)]
        checks += [self._timestamping(now), await self._messagelog(database)]
        if self.pusher is not None and self.pusher.policy() is not None:
            checks.append(self._witnessing(now))
        if self.renewal is not None:
            checks.append(self.renewal.check(now))
        self.export(checks)
        return checks

    def export(self, checks: Sequence[Check]) -> None:
        for c in checks:
            self.metrics.ready.labels(c.name).set(1 if c.ok else 0)

    # (1)
    async def _database(self) -> Check:
        directory = sqlite_directory(self.settings.database_url)
        limit = self.settings.readiness_disk_free_bytes
        if directory is not None and limit > 0:
            try:
                st = os.statvfs(directory)
            except OSError as e:
                return Check(name="database", ok=False, detail=f"{directory} cannot be examined: {e}")
            free = st.f_bavail * st.f_frsize
            if free < limit:
                return Check(name="database", ok=False, detail=f"{free} bytes free on the filesystem of {directory}, "
                                                               f"below readiness_disk_free_bytes ({limit})")
        try:
            async with asyncio.timeout(DB_TIMEOUT_SECONDS):
                await self.store.check_writable()
        except TimeoutError:
            return Check(name="database", ok=False, detail=f"a write did not commit within {DB_TIMEOUT_SECONDS:g} s")
        except GatewayError as e:
            return Check(name="database", ok=False, detail=e.message)
        return Check(name="database", ok=True, detail="writable")

    # (2)
    def _token(self) -> Check:
        if self.token is None:
            return Check(name="token", ok=True, detail="plain key files (no token)")
        if self.token.logged_in:
            return Check(name="token", ok=True, detail="logged in")
        return Check(name="token", ok=False, detail="the token is logged out: nothing can be signed")

    # (2a)
    def _device(self, device: Pkcs11Token) -> Check:
        status = device.status()
        usage = self.device_usage(device)
        name = f"pkcs11:{status.name}"
        what = f"PKCS#11 token {status.name!r} (label {status.token_label!r})"
        if status.state == "available":
            return Check(name=name, ok=True, detail=f"{what} available" + (f"; holds the {usage} key" if usage
                                                                          else "; no key of it in use"))
        why = status.error or "no session"
        if not usage:
            return Check(name=name, ok=True, warning=True,
                         detail=f"{what} is {status.state} ({why}); no key of it is in use")
        return Check(name=name, ok=False, detail=f"{what} is {status.state}: its {usage} key cannot be used "
                                                 f"({why})")

    # (3)
    def _globalconf(self, now: datetime) -> Check:
        conf = self.globalconf.current
        return deadline_check(
            "globalconf", deadline=None if conf is None else conf.expires_at, now=now,
            margin_seconds=self.settings.readiness_conf_margin_seconds,
            what="the global configuration expires" if conf is None or conf.expires_at > now
            else "the global configuration expired",
            missing="no global configuration has been downloaded")

    # (4)
    def _ocsp(self, name: str, cert: x509.Certificate, now: datetime) -> Check:
        conf = self.globalconf.current
        status = self.context.ocsp_cache.peek(cert)
        if status is None or conf is None:
            return Check(name=name, ok=False, detail=f"no OCSP response for certificate "
                                                     f"{cert_sha256_hex(cert)[:16]} fetched yet")
        if status.status != "good":
            return Check(name=name, ok=False, detail=f"certificate {cert_sha256_hex(cert)[:16]} is "
                                                     f"{status.status} according to OCSP")
        deadline = status.this_update + timedelta(seconds=conf.ocsp_freshness_seconds)
        if status.next_update is not None:
            deadline = min(deadline, status.next_update)
        fresh = deadline > now
        return deadline_check(name, deadline=deadline, now=now,
                              margin_seconds=self.settings.readiness_ocsp_margin_seconds,
                              what="the OCSP response stops being fresh" if fresh else "the OCSP response went stale",
                              missing="")

    # (5)
    def _timestamping(self, now: datetime) -> Check:
        since = self.checkpointer.unstamped_since
        if since is None:
            return Check(name="timestamping", ok=True, detail="every record is covered by a timestamp")
        end = since + self.checkpointer.grace
        return deadline_check("timestamping", deadline=end, now=now,
                              margin_seconds=self.settings.readiness_grace_margin_seconds,
                              what="the timestamping grace period ends" if end > now
                              else "the timestamping grace period ended", missing="")

    # (6)
    async def _messagelog(self, database: Check) -> Check:
        store = self.context.messagelog
        problem = store.writer_problem()
        recovered = ""
        if problem is not None and problem == store.last_error and database.ok and store.in_database:
            # Only the last commit failed, and the database it went to takes writes again (check 1 writes to
            # the same database_url): the next commit is expected to succeed. Nothing else would turn this
            # check green while no exchange arrives, and a balancer that follows /readyz sends none (the
            # database-unreachable drill, docs/operations.md section 8).
            recovered, problem = f" ({problem}; the database takes writes again)", None
        if problem is None and self.lease is not None:
            try:
                if database.ok:  # the lock's own connection may have broken unseen (PostgreSQL): look now
                    await self.lease.check_now()
                self.lease.check()
            except GatewayError as e:
                problem = e.message
        if problem is not None:
            return Check(name="messagelog", ok=False, detail=problem)
        return Check(name="messagelog", ok=True, detail=f"{store.queue_depth} records queued{recovered}")

    # (7)
    def _witnessing(self, now: datetime) -> Check:
        assert self.pusher is not None
        lags = self.pusher.lag_seconds(now)
        late = {o: lag for o, lag in lags.items() if lag > self.lag_warning_seconds}
        if late:
            worst = max(late, key=lambda o: late[o])
            return Check(name="witnessing", ok=True, warning=True,
                         detail=f"{len(late)} log(s) not cosigned by the witness quorum for longer than "
                                f"lag_warning_seconds ({self.lag_warning_seconds:g} s): {worst} for "
                                f"{late[worst]:.0f} s")
        worst_lag = max(lags.values(), default=0.0)
        return Check(name="witnessing", ok=True, detail=f"{len(lags)} log(s) witnessed; largest lag "
                                                        f"{worst_lag:.0f} s")

    # ---- gauges -------------------------------------------------------------------------------------------

    def refresh_gauges(self) -> None:
        """Set the gauges that are states or ages as of now (module docstring of :mod:`gateway.ops.metrics`)."""
        now = self.clock()
        m = self.metrics
        m.log_queue.set(self.context.messagelog.queue_depth)
        cp = self.checkpointer
        origin = cp.origin
        latest = 0 if cp.latest is None else cp.latest.size
        m.uncheckpointed.labels(origin).set(max(0, cp.tree.size - latest))
        m.untimestamped.labels(origin).set(max(0, cp.tree.size - cp.stamped_size))
        grace = cp.grace.total_seconds()
        since = cp.unstamped_since
        m.grace_left.labels(origin).set(grace if since is None else grace - (now - since).total_seconds())
        if self.pusher is not None:
            for log_origin, lag in self.pusher.lag_seconds(now).items():
                m.witness_lag.labels(log_origin).set(round(lag, 3))
        for cert, status in self.context.ocsp_cache.cached():
            m.ocsp_age.labels(cert_sha256_hex(cert), cert.subject.rfc4514_string()[:200]).set(
                round((now - status.this_update).total_seconds(), 3))
        conf = self.globalconf.current
        if conf is not None:
            m.conf_version.set(conf.version)
            m.conf_age.set(round((now - conf.issued_at).total_seconds(), 3))
            m.conf_expiry.set(round((conf.expires_at - now).total_seconds(), 3))


__all__ = ["DB_TIMEOUT_SECONDS", "ServerHealth"]
