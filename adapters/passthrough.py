"""The pass-through adapter: forwards requests to an existing internal HTTP API (I/O).

``{mount}/{rest}?{query}`` goes to ``{base_url}/{rest}?{query}`` with the same method, the body streamed
through, and the end-to-end headers (the X-Road headers included); hop-by-hop headers (RFC 9110 section
7.6.1) are dropped both ways. The upstream answer comes back streamed, status and headers unchanged;
redirects are passed back, never followed, and compressed bodies stay compressed. One pooled
``ClientSession`` serves every request; it keeps no cookies, so nothing leaks from one caller to another.

If the upstream cannot be reached the adapter answers 502 (504 on a timeout) with the JSON error body; the
message does not reveal the internal address, which is logged with the error id instead.

An optional static OpenAPI document (a file path or a URL, read at start) is served at
``{mount}/openapi.json``; without one that path is forwarded like any other.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.adapterapi import AdapterRequest, BadGateway, GatewayTimeout, ServiceAdapter
from gateway.errors import ConfigError

log = structlog.get_logger(__name__)

# RFC 9110 section 7.6.1 and RFC 9112: meaningful for one connection only. Host and Content-Length are
# recomputed for the new connection (Content-Length is kept when the body is passed unchanged).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
CHUNK_BYTES = 64 * 1024  # bytes read from the upstream per write to the caller
DEFAULT_TIMEOUT_SECONDS = 60.0  # seconds without a byte from the upstream before giving up (504)
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0  # seconds to open a connection to the upstream (502 after)
MAX_OPENAPI_BYTES = 10 * 2**20  # bytes; a static OpenAPI document


def end_to_end(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """The headers to pass on: all but hop-by-hop ones and those the ``Connection`` header names."""
    named = {t.strip().lower() for v in headers.getall("Connection", []) for t in v.split(",")}
    return CIMultiDict(
        (k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP and k.lower() not in named
    )


class PassthroughAdapter(ServiceAdapter):
    """Forwards every method and path below its mount point to ``base_url``."""

    methods = None

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        openapi: str | None = None,
        title: str = "",
        description: str = "",
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        """``openapi`` is a file path or an http(s) URL of a static OpenAPI document.

        Raises:
            ConfigError: the base URL is not an absolute http(s) URL.
        """
        super().__init__(name=name, title=title, description=description)
        url = URL(base_url)
        if url.scheme not in ("http", "https") or not url.host or url.query_string or url.fragment:
            raise ConfigError(
                f"adapter {name!r}: base_url must be an http(s) URL without query, got {base_url!r}"
            )
        self.base_url = base_url.rstrip("/")
        self._openapi_source = openapi
        self.openapi_path = "/openapi.json" if openapi else None
        self._document: dict[str, Any] | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_seconds, sock_read=timeout_seconds
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the pooled session and read the OpenAPI document.

        Raises:
            ConfigError: the OpenAPI document cannot be read or is not a JSON object.
        """
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        if self._openapi_source:
            self._document = await self._load_openapi(self._openapi_source)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _load_openapi(self, source: str) -> dict[str, Any]:
        where = f"adapter {self.name!r}: OpenAPI document {source!r}"
        try:
            if source.startswith(("http://", "https://")):
                assert self._session is not None
                async with self._session.get(source) as resp:
                    if resp.status != 200:
                        raise ConfigError(f"{where}: HTTP {resp.status}")
                    data = await resp.content.read(MAX_OPENAPI_BYTES + 1)
            else:
                data = await asyncio.to_thread(Path(source).read_bytes)
            if len(data) > MAX_OPENAPI_BYTES:
                raise ConfigError(f"{where}: larger than {MAX_OPENAPI_BYTES} bytes")
            doc = json.loads(data)
        except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise ConfigError(f"{where}: cannot read: {e}") from e
        if not isinstance(doc, dict) or not str(doc.get("openapi", "")).startswith("3."):
            raise ConfigError(f"{where}: not an OpenAPI 3 document (JSON object with an 'openapi' field)")
        return doc

    def openapi(self) -> dict[str, Any]:
        if self._document is not None:
            return self._document
        # Without a configured document: an honest minimal one that describes no operation.
        return {"openapi": "3.1.0", "info": {"title": self.title, "version": "unknown"}, "paths": {}}

    async def serve(self, request: AdapterRequest) -> web.StreamResponse:
        """Forward the request and stream the answer back.

        Raises:
            PeerError: (502) the upstream is unreachable or broke the exchange; (504) it timed out.
        """
        if self._session is None:
            raise ConfigError(f"adapter {self.name!r}: used before start()")
        http = request.http
        # (1) Target: the base URL plus the still-encoded path and query, so nothing is decoded twice.
        raw_query = http.rel_url.raw_query_string
        target = URL(self.base_url + request.raw_path + (f"?{raw_query}" if raw_query else ""), encoded=True)
        # (2) End-to-end headers; the body is streamed when there is one.
        headers = end_to_end(http.headers)
        data = http.content if http.body_exists else None
        response: web.StreamResponse | None = None
        try:
            async with self._session.request(
                http.method,
                target,
                headers=headers,
                data=data,
                allow_redirects=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            ) as upstream:
                # (3) Status and end-to-end headers back unchanged (a redirect's Location included).
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for k, v in end_to_end(upstream.headers).items():
                    response.headers.add(k, v)
                await response.prepare(http)
                # (4) The body, chunk by chunk: memory stays bounded whatever its size.
                async for chunk in upstream.content.iter_chunked(CHUNK_BYTES):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except TimeoutError as e:
            if response is not None and response.prepared:
                raise
            log.warning("passthrough.timeout", adapter=self.name, upstream=str(target))
            raise GatewayTimeout(f"the upstream of service {self.name!r} did not answer in time") from e
        except aiohttp.ClientError as e:
            if response is not None and response.prepared:
                raise  # headers are sent: the only honest signal left is to break the connection
            log.warning("passthrough.unreachable", adapter=self.name, upstream=str(target), error=repr(e))
            raise BadGateway(f"the upstream of service {self.name!r} is unreachable") from e
