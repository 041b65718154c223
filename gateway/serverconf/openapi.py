"""A service's endpoints from its OpenAPI 3 description: fetched from its URL (I/O), then read (pure).

:func:`endpoints_of` reads a document (JSON or YAML) and returns one :class:`~gateway.serverconf.access.Endpoint`
per operation, in the document's order: every HTTP method of every path, each templated segment
(``{petId}``, ``{name}.json``) as ``*`` (one segment), so ``/pets/{petId}`` becomes ``GET /pets/*``.
:func:`fetch_description` downloads a description: ``http`` or ``https`` only, no redirect followed, at most
:data:`MAX_DESCRIPTION_BYTES`, within :data:`FETCH_TIMEOUT_SECONDS`, answer 200 only.

Every refusal names ``body.openapi_url`` (or ``body.url``), so the web page shows it beside that field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import yaml  # type: ignore[import-untyped]  # pyyaml ships no type hints (its stubs are not a dependency)
from yarl import URL

from gateway.errors import RequestError
from gateway.serverconf.access import HTTP_METHODS, Endpoint

MAX_DESCRIPTION_BYTES = 4 * 2**20  # as the getOpenAPI metaservice's bound (docs/metaservices)
FETCH_TIMEOUT_SECONDS = 10.0
MAX_ENDPOINTS = 1000  # addService takes at most this many endpoints


def _segment(segment: str) -> str:
    return "*" if "{" in segment or "}" in segment else segment


def endpoints_of(document: bytes) -> tuple[dict[str, Any], tuple[Endpoint, ...]]:
    """The document as read, and its operations as endpoints.

    Raises:
        RequestError: not JSON or YAML; not OpenAPI 3 (Swagger 2.0 is said so); no ``paths``; a path that is no
            path pattern; no operation at all; more than :data:`MAX_ENDPOINTS`.
    """
    try:
        text = document.decode("utf-8")
        doc = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        raise RequestError(f"body.openapi_url: the description is neither JSON nor YAML ({str(e)[:120]})") from e
    if not isinstance(doc, Mapping):
        raise RequestError("body.openapi_url: the description is not an OpenAPI document (not an object)")
    version = doc.get("openapi")
    if not isinstance(version, str) or not version.startswith("3."):
        if "swagger" in doc:
            raise RequestError(
                f"body.openapi_url: the description is Swagger {str(doc['swagger'])[:10]}; only "
                "OpenAPI 3 descriptions are read"
            )
        raise RequestError("body.openapi_url: the description has no 'openapi: 3.x' field: not OpenAPI 3")
    paths = doc.get("paths")
    if not isinstance(paths, Mapping) or not paths:
        raise RequestError("body.openapi_url: the description has no paths")
    found: dict[tuple[str, str], Endpoint] = {}
    for path, item in paths.items():
        if not isinstance(path, str) or not path.startswith("/"):
            raise RequestError(f"body.openapi_url: path {str(path)[:80]!r} of the description does not start with /")
        if not isinstance(item, Mapping):
            continue
        pattern = "/".join(_segment(s) for s in path.split("/"))
        for method in item:
            if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
                continue  # parameters, summary, servers, $ref ...
            try:
                endpoint = Endpoint(method=method.upper(), path=pattern)
            except RequestError as e:
                raise RequestError(f"body.openapi_url: path {path[:80]!r} of the description: {e.message}") from e
            found.setdefault((endpoint.method, endpoint.path), endpoint)
            if len(found) > MAX_ENDPOINTS:
                raise RequestError(f"body.openapi_url: the description has more than {MAX_ENDPOINTS} operations")
    if not found:
        raise RequestError("body.openapi_url: the description declares no operation (no HTTP method under paths)")
    return dict(doc), tuple(found.values())


def server_url(doc: Mapping[str, Any]) -> str | None:
    """The first absolute ``http(s)`` URL of the document's ``servers``, if any (the service's URL)."""
    servers = doc.get("servers")
    if isinstance(servers, list):
        for s in servers:
            url = s.get("url") if isinstance(s, Mapping) else None
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                return url.rstrip("/") or url
    return None


async def fetch_description(url: str) -> bytes:
    """The description at ``url``.

    Raises:
        RequestError: not an http(s) URL; unreachable, redirected, not 200, larger than the bound, too slow.
    """
    try:
        target = URL(url)
    except ValueError as e:
        raise RequestError(f"body.openapi_url {url[:80]!r} is not a URL") from e
    if target.scheme not in ("http", "https") or not target.host:
        raise RequestError(f"body.openapi_url {url[:80]!r} is not an http or https URL")
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(target, allow_redirects=False) as resp:
            if resp.status != 200:
                where = f" (to {resp.headers.get('Location', '?')[:80]})" if 300 <= resp.status < 400 else ""
                raise RequestError(
                    f"body.openapi_url: the server answered HTTP {resp.status}{where}, not the description"
                )
            body = await resp.content.read(MAX_DESCRIPTION_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as e:
        raise RequestError(
            f"body.openapi_url: the description cannot be fetched: {str(e)[:160] or type(e).__name__}"
        ) from e
    if len(body) > MAX_DESCRIPTION_BYTES:
        raise RequestError(f"body.openapi_url: the description is larger than {MAX_DESCRIPTION_BYTES} bytes")
    return body


__all__ = [
    "FETCH_TIMEOUT_SECONDS",
    "MAX_DESCRIPTION_BYTES",
    "MAX_ENDPOINTS",
    "endpoints_of",
    "fetch_description",
    "server_url",
]
