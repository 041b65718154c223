"""The download seam for the global configuration (I/O).

:class:`Fetcher` is the seam, as python-tuf's ``FetcherInterface``: callers use :meth:`Fetcher.fetch`,
implementations write :meth:`Fetcher._fetch`, and the base turns any foreign exception into
:class:`~gateway.errors.PeerError` so that the updater handles exactly one error type. Transport security
is not relied on: the bytes are verified by :mod:`gateway.globalconf.trust`.
"""

from __future__ import annotations

import abc

import aiohttp

from gateway.errors import GatewayError, GlobalConfDownloadFailed, PeerError

DEFAULT_MAX_BYTES = 16 * 2**20  # bytes; far above any real configuration, bounds memory on a hostile server
DEFAULT_TIMEOUT_SECONDS = 10.0  # seconds for one whole download


class Fetcher(abc.ABC):
    """Downloads one URL's body."""

    async def fetch(self, url: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        """Download ``url`` and return its body (at most ``max_bytes``).

        Raises:
            PeerError: the download failed for any reason (``GlobalConfDownloadFailed``).
        """
        try:
            data = await self._fetch(url, max_bytes=max_bytes)
        except PeerError:
            raise
        except GatewayError as e:
            raise GlobalConfDownloadFailed(f"download of {url} failed: {e.message}") from e
        except Exception as e:
            raise GlobalConfDownloadFailed(
                f"download of {url} failed: {type(e).__name__}: {e}".rstrip(": ")) from e
        if len(data) > max_bytes:
            raise GlobalConfDownloadFailed(f"download of {url} is larger than {max_bytes} bytes")
        return data

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what the fetcher holds (connections)."""

    @abc.abstractmethod
    async def _fetch(self, url: str, *, max_bytes: int) -> bytes:
        """Return the body; may raise anything (:meth:`fetch` wraps it); stops reading past max_bytes."""


class AiohttpFetcher(Fetcher):
    """Plain HTTP(S) GET with a timeout and a size limit; only ``200`` is accepted, redirects are not."""

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    async def _fetch(self, url: str, *, max_bytes: int) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.get(url, timeout=self._timeout, allow_redirects=False) as response:
            if response.status != 200:
                raise GlobalConfDownloadFailed(
                    f"download of {url} failed: HTTP {response.status} {response.reason or ''}".rstrip())
            if response.content_length is not None and response.content_length > max_bytes:
                raise GlobalConfDownloadFailed(
                    f"download of {url} is {response.content_length} bytes; at most {max_bytes} are accepted")
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > max_bytes:
                    raise GlobalConfDownloadFailed(
                        f"download of {url} is larger than {max_bytes} bytes")
            return bytes(body)

    async def close(self) -> None:
        """Close the session if this fetcher created it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
