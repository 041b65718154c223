"""Keeps this server's global configuration current: download, verify, persist, notify (I/O).

The thin shell around :class:`~gateway.globalconf.trust.TrustedGlobalConf` (python-tuf's ``Updater``
to its ``TrustedMetadataSet``): it reads the anchor and the cached copy, downloads from the anchor's URLs
in order, hands the bytes to the trust object and, only when they are accepted as new, atomically replaces
``{cache_dir}/globalconf.json`` (temporary file, fsync, ``os.replace``, fsync of the directory) and calls
the ``on_update`` listeners. Any failure keeps the last good copy, in memory and on disk, and is recorded
for :meth:`GlobalConfUpdater.status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from gateway.errors import GlobalConfError, PeerError
from gateway.files import private_dir
from gateway.globalconf.anchor import Anchor
from gateway.globalconf.fetcher import DEFAULT_MAX_BYTES, AiohttpFetcher, Fetcher
from gateway.globalconf.model import GlobalConf, format_time
from gateway.globalconf.trust import TrustedGlobalConf
from gateway.settings import GlobalConfSettings

CACHE_FILE = "globalconf.json"
DEFAULT_POLL_SECONDS = 60.0  # seconds between downloads; X-Road's default

Listener = Callable[[GlobalConf], None]
Clock = Callable[[], datetime]
Waiter = Callable[[asyncio.Event, float], Awaitable[None]]

log = structlog.get_logger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Return after ``seconds`` or as soon as ``stop`` is set, whichever is first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshResult:
    """What one :meth:`GlobalConfUpdater.refresh` did."""

    accepted: bool  # some URL gave a configuration that passed every rule (new or unchanged)
    changed: bool  # and it was newer than what we had (cache replaced, listeners called)
    version: int | None  # the trusted version after the refresh
    url: str | None  # the URL the accepted configuration came from
    errors: tuple[str, ...]  # one line per URL that failed, in order


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdaterStatus:
    """For /readyz, metrics and the admin UI."""

    version: int | None
    issued_at: datetime | None
    expires_at: datetime | None
    expired: bool  # also True when there is no configuration at all
    last_error: str | None  # the error of the last failed refresh or cache load; None after a success
    last_error_at: datetime | None
    last_success_at: datetime | None
    last_attempt_at: datetime | None

    def to_dict(self) -> dict[str, object]:
        def t(v: datetime | None) -> str | None:
            return None if v is None else format_time(v)

        return {
            "version": self.version, "issued_at": t(self.issued_at), "expires_at": t(self.expires_at),
            "expired": self.expired, "last_error": self.last_error, "last_error_at": t(self.last_error_at),
            "last_success_at": t(self.last_success_at), "last_attempt_at": t(self.last_attempt_at),
        }


class GlobalConfUpdater:
    def __init__(
        self,
        anchor: Anchor | str | Path,
        cache_dir: str | Path,
        fetcher: Fetcher,
        *,
        clock: Clock = utc_now,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        wait: Waiter = wait_or_stop,
    ) -> None:
        """Set up the updater; nothing is read from the cache until :meth:`load_cached`.

        ``wait`` is the pause between polls in :meth:`run` (a seam for tests that must not sleep).

        Raises:
            ConfigError: ``anchor`` is a path whose file is missing or not a valid anchor.
        """
        self._anchor = anchor if isinstance(anchor, Anchor) else Anchor.from_file(anchor)
        self._cache_dir = Path(cache_dir)
        self._fetcher = fetcher
        self._own_fetcher = False
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._max_bytes = max_bytes
        self._wait = wait
        self._trusted = TrustedGlobalConf(self._anchor, None, now=clock())
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None
        self._last_success_at: datetime | None = None
        self._last_attempt_at: datetime | None = None

    @classmethod
    def from_settings(
        cls, settings: GlobalConfSettings, fetcher: Fetcher | None = None, *, clock: Clock = utc_now
    ) -> GlobalConfUpdater:
        """The updater as configured in ``[globalconf]`` (an :class:`AiohttpFetcher` unless one is given).

        Raises:
            ConfigError: the anchor file is missing or invalid.
        """
        updater = cls(
            settings.anchor, settings.cache_dir,
            fetcher or AiohttpFetcher(timeout_seconds=settings.timeout_seconds),
            clock=clock, poll_seconds=settings.poll_seconds, max_bytes=settings.max_bytes,
        )
        updater._own_fetcher = fetcher is None
        return updater

    async def close(self) -> None:
        """Close the fetcher if :meth:`from_settings` created it."""
        if self._own_fetcher:
            await self._fetcher.close()

    @property
    def cache_path(self) -> Path:
        return self._cache_dir / CACHE_FILE

    @property
    def anchor(self) -> Anchor:
        return self._trusted.anchor

    @property
    def current(self) -> GlobalConf | None:
        """The trusted configuration, expired or not (routing may still use it for diagnostics)."""
        return self._trusted.current

    def require_valid(self) -> GlobalConf:
        """The configuration for message exchange now.

        Raises:
            GlobalConfError: (``OutdatedGlobalConf``) none, or expired.
        """
        return self._trusted.require_valid(self._clock())

    def on_update(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(conf)`` whenever a new configuration is trusted; returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _record_error(self, message: str) -> None:
        self._last_error, self._last_error_at = message, self._clock()

    def _notify(self, conf: GlobalConf) -> None:
        for listener in list(self._listeners):
            try:
                listener(conf)
            except Exception:  # a listener bug must not stop the updater or the other listeners
                log.exception("globalconf listener failed", listener=repr(listener))

    def load_cached(self) -> GlobalConf | None:
        """Load ``{cache_dir}/globalconf.json`` through rules 1-3 (expiry is reported, not refused).

        A missing file is normal on first start. A file that fails verification is not used (and left
        in place for inspection until the next good download replaces it); the error is recorded.
        """
        now = self._clock()
        try:
            data = self.cache_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            self._record_error(f"cached configuration {self.cache_path} cannot be read: {e.strerror or e}")
            log.warning("globalconf cache unreadable", path=str(self.cache_path), error=self._last_error)
            return None
        try:
            trusted = TrustedGlobalConf(self._trusted.anchor, data, now=now)
        except GlobalConfError as e:
            self._record_error(f"cached configuration {self.cache_path} refused: {e.message}")
            log.warning("globalconf cache refused", path=str(self.cache_path), error=self._last_error)
            return None
        self._trusted = trusted
        conf = trusted.current
        assert conf is not None
        if trusted.cached_expired:
            self._record_error(
                f"cached configuration version {conf.version} expired at {format_time(conf.expires_at)}"
            )
        log.info("globalconf cache loaded", version=conf.version, expired=trusted.cached_expired)
        self._notify(conf)
        return conf

    async def refresh(self) -> RefreshResult:
        """Download from the anchor's URLs in order until one gives an acceptable configuration."""
        async with self._lock:
            self._last_attempt_at = self._clock()
            errors: list[str] = []
            for url in self._trusted.anchor.download_urls:
                try:
                    data = await self._fetcher.fetch(url, max_bytes=self._max_bytes)
                except PeerError as e:
                    errors.append(e.message)
                    continue
                before = self._trusted.current
                try:
                    conf = self._trusted.update(data, now=self._clock())
                except GlobalConfError as e:
                    errors.append(f"{url}: {e.message}")
                    continue
                changed = conf is not before
                if changed:
                    try:
                        await asyncio.to_thread(self._write_cache, data)
                    except OSError as e:
                        # Trusted in memory; the disk keeps the older good copy. Report, do not fail.
                        self._record_error(f"cannot write {self.cache_path}: {e.strerror or e}")
                        log.error("globalconf cache write failed", path=str(self.cache_path), error=str(e))
                    else:
                        self._last_error = self._last_error_at = None
                    log.info("globalconf updated", version=conf.version, url=url)
                    self._notify(conf)
                else:
                    self._last_error = self._last_error_at = None
                self._last_success_at = self._clock()
                return RefreshResult(accepted=True, changed=changed, version=conf.version, url=url,
                                     errors=tuple(errors))
            message = "; ".join(errors) or "the anchor lists no download URL"
            self._record_error(message)
            log.warning("globalconf refresh failed", error=message)
            current = self._trusted.current
            return RefreshResult(
                accepted=False, changed=False, version=None if current is None else current.version, url=None,
                errors=tuple(errors),
            )

    def _write_cache(self, data: bytes) -> None:
        """Replace the cache file atomically: a reader sees the old or the new file, never a mix."""
        private_dir(self._cache_dir)
        fd, tmp = tempfile.mkstemp(prefix=f".{CACHE_FILE}.", suffix=".tmp", dir=self._cache_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.cache_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self._cache_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh now and then every ``poll_seconds`` until ``stop`` is set."""
        while not stop.is_set():
            await self.refresh()
            if stop.is_set():
                break
            await self._wait(stop, self._poll_seconds)

    def replace_anchor(self, anchor: Anchor) -> None:
        """Install a new anchor (key rollover); see :meth:`TrustedGlobalConf.replace_anchor`.

        Raises:
            GlobalConfError: the anchor is for another instance.
        """
        self._trusted.replace_anchor(anchor)
        self._anchor = anchor

    def status(self) -> UpdaterStatus:
        conf = self._trusted.current
        return UpdaterStatus(
            version=None if conf is None else conf.version,
            issued_at=None if conf is None else conf.issued_at,
            expires_at=None if conf is None else conf.expires_at,
            expired=self._trusted.is_expired(self._clock()),
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            last_success_at=self._last_success_at,
            last_attempt_at=self._last_attempt_at,
        )
