"""The citizen portal's sign-in by hand, for tests that drive it over plain HTTP (no browser): the OpenID
Connect code flow through the development identity provider's form, as a browser follows it."""

from __future__ import annotations

import re

import aiohttp


def jar() -> aiohttp.CookieJar:
    return aiohttp.CookieJar(unsafe=True)  # cookies of 127.0.0.1 (an IP address) are kept too


async def sign_in(http: aiohttp.ClientSession, portal: str, subject: str) -> aiohttp.ClientResponse:
    """The code flow by hand, as a browser does it: portal, provider's page and form, callback."""
    async with http.get(f"{portal}/signin", allow_redirects=False) as r:
        assert r.status == 303
        authorize = r.headers["Location"]
    async with http.get(authorize) as r:
        assert r.status == 200, await r.text()
        page = await r.text()
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    fields["subject_id"] = subject
    async with http.post(authorize.split("?")[0], data=fields, allow_redirects=False) as r:
        assert r.status == 303
        callback = r.headers["Location"]
    assert callback.startswith(f"{portal}/callback?")
    r = await http.get(callback, allow_redirects=False)
    await r.read()
    return r
