"""Fetching OCSP responses and timestamp replies over HTTP (I/O shell, aiohttp client).

The fetched bytes are handed, unchanged, to the pure checks in :mod:`gateway.trust.ocsp` and
:mod:`gateway.trust.timestamp`. Network failures and non-200 answers become :class:`~gateway.errors.PeerError`.
"""

from __future__ import annotations

import aiohttp

from gateway.errors import PeerError

MAX_RESPONSE_BYTES = 1 * 2**20  # bytes; an OCSP response or timestamp reply is a few kilobytes
DEFAULT_TIMEOUT_SECONDS = 30.0  # seconds for one exchange; X-Road's OCSP read timeout is 30-60 s


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, *, content_type: str, accept: str, what: str,
    timeout_seconds: float,
) -> bytes:
    try:
        async with session.post(
            url, data=body, headers={"Content-Type": content_type, "Accept": accept},
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
        ) as resp:
            if resp.status != 200:
                raise PeerError(f"{what} {url} answered HTTP {resp.status}")
            if resp.content_type != accept:
                raise PeerError(f"{what} {url} answered Content-Type {resp.content_type}, not {accept}")
            data = await resp.content.read(MAX_RESPONSE_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as e:
        raise PeerError(f"{what} {url} cannot be reached: {e or type(e).__name__}") from e
    if len(data) > MAX_RESPONSE_BYTES:
        raise PeerError(f"{what} {url} answered more than {MAX_RESPONSE_BYTES} bytes")
    return data


async def fetch_ocsp(
    session: aiohttp.ClientSession, url: str, request: bytes, *,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> bytes:
    """POST a DER OCSP request (RFC 6960 Appendix A.1); return the DER response, unchecked.

    Raises:
        PeerError: the responder cannot be reached, or answers other than 200 ``application/ocsp-response``.
    """
    return await _post(session, url, request, content_type="application/ocsp-request",
                       accept="application/ocsp-response", what="OCSP responder",
                       timeout_seconds=timeout_seconds)


async def fetch_timestamp(
    session: aiohttp.ClientSession, url: str, request: bytes, *,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> bytes:
    """POST a DER TimeStampReq (RFC 3161 section 3.4); return the DER TimeStampResp, unchecked.

    Raises:
        PeerError: the TSA cannot be reached, or answers other than 200 ``application/timestamp-reply``.
    """
    return await _post(session, url, request, content_type="application/timestamp-query",
                       accept="application/timestamp-reply", what="TSA", timeout_seconds=timeout_seconds)
