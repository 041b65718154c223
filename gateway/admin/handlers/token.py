"""Admin API handlers of the ``token`` tag: the software token's PIN, keys, CSRs and certificates
(``docs/tokens.md``) (I/O). Only a server with ``[server] token_dir`` has a token; on any other server these
routes answer 404 ``Client.NotFound``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin.context import AdminContext, Call
from gateway.admin.handlers.common import iso, send_management
from gateway.errors import (
    ConfigError,
    Conflict,
    ImportedCertInvalid,
    NotFound,
    PinIncorrect,
    PinRefused,
    RequestError,
    TrustError,
)
from gateway.identifiers import MemberId
from gateway.token.model import CertEntry, KeyEntry
from gateway.token.pkcs11 import Pkcs11Token
from gateway.token.soft import SoftToken


def _token(ctx: AdminContext) -> SoftToken:
    if ctx.token is None:
        raise NotFound("this security server keeps its keys in files, not in a software token",
                       hint="see [server] token_dir in docs/tokens.md")
    return ctx.token


def _pin_error(e: RequestError) -> RequestError:
    """A wrong PIN is the token's 401; on the admin API 401 means "log in again", so it is a 400 here."""
    return PinRefused(e.message) if isinstance(e, PinIncorrect) else e


def _cert_json(c: CertEntry) -> dict[str, Any]:
    return {"sha256": c.sha256, "kind": c.kind, "identity": c.identity, "not_before": iso(c.not_before),
            "not_after": iso(c.not_after), "state": c.state, "imported_at": iso(c.imported_at), "pem": c.pem}


def _key_json(k: KeyEntry) -> dict[str, Any]:
    return {"id": k.id, "usage": k.usage, "key_type": k.key_type, "label": k.label, "created_at": iso(k.created_at),
            "certs": [_cert_json(c) for c in k.certs]}


async def get_token(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    token = _token(ctx)
    state = await token.state()
    return {"logged_in": token.logged_in, "failed_pins": state.lockout.failures,
            "locked_until": iso(state.lockout.locked_until), "keys": [_key_json(k) for k in state.keys]}


async def list_tokens(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    """Every token with its state: the software token, PKCS#11 devices (docs/tokens.md, "PKCS#11 tokens")."""
    return {"tokens": ctx.tokens() if ctx.tokens is not None else []}


async def login_token(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    try:
        await _token(ctx).login(call.body["pin"], now=ctx.clock())
    except RequestError as e:
        raise _pin_error(e) from e


async def logout_token(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    _token(ctx).logout()


async def change_token_pin(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    try:
        await _token(ctx).change_pin(call.body["old_pin"], call.body["new_pin"], now=ctx.clock())
    except RequestError as e:
        raise _pin_error(e) from e


async def generate_key(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    """A key on the software token, or on the PKCS#11 device ``device`` names (404 for an unknown name; 500
    ``Server.TokenNotAvailable`` while that device is unavailable)."""
    b = call.body
    name = b.get("device")
    token: SoftToken | Pkcs11Token
    if name is None:
        token = _token(ctx)
    elif name in ctx.devices:
        token = ctx.devices[name]
        call.details["device"] = name
    else:
        raise NotFound(f"no PKCS#11 device named {name!r} (devices: {', '.join(ctx.devices) or 'none'})",
                       hint="GET /api/v1/tokens lists them")
    entry = await token.generate_key(b["usage"], key_type=b.get("key_type", "ec-p256"), label=b.get("label", ""),
                                     now=ctx.clock())
    call.details["key_id"] = entry.id
    return _key_json(entry)


async def register_server(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return await send_management(ctx, call, "auth_cert_reg", None)


async def delete_key(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    entry = await _token(ctx).delete_key(request.match_info["token_key_id"])
    call.details["key_id"] = entry.id


async def create_csr(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    member_text = call.body.get("member")
    member = None if member_text is None else MemberId.parse(member_text, encoded=False)
    csr = await _token(ctx).csr(request.match_info["token_key_id"], server_id=ctx.server_id, member=member,
                                name=call.body.get("name"))
    return {"csr": csr.public_bytes(Encoding.PEM).decode("ascii")}


async def import_certificate(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    token = _token(ctx)
    members = [MemberId.parse(m, encoded=False) for m in call.body.get("members", ())]
    conf = ctx.globalconf.current
    if conf is None:
        raise Conflict("no global configuration yet: the certificate's CA cannot be checked")
    try:
        entry = await token.import_cert(call.body["pem"].encode("utf-8"), server_id=ctx.server_id,
                                        ca_for=conf.ca_for, members=members, now=ctx.clock())
    except TrustError as e:  # a certificate that does not meet the rules is the caller's input: a 400
        if e.http_status == 400:
            raise
        raise ImportedCertInvalid(e.message) from e
    call.details["sha256"] = entry.sha256
    return _cert_json(entry)


async def _switch(call: Call, ctx: AdminContext, entry: CertEntry) -> dict[str, Any]:
    changed, error = False, None
    if ctx.reload_keys is not None:
        try:
            changed = await ctx.reload_keys()
        except (ConfigError, TrustError) as e:
            error = e.message
    call.details.update({"sha256": entry.sha256, "keys_changed": changed, "reload_error": error})
    return {"certificate": _cert_json(entry), "keys_changed": changed, "reload_error": error}


async def activate_certificate(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return await _switch(call, ctx, await _token(ctx).activate(request.match_info["sha256"]))


async def deactivate_certificate(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return await _switch(call, ctx, await _token(ctx).deactivate(request.match_info["sha256"]))


__all__ = [
    "activate_certificate",
    "change_token_pin",
    "create_csr",
    "deactivate_certificate",
    "delete_key",
    "generate_key",
    "get_token",
    "import_certificate",
    "login_token",
    "logout_token",
    "register_server",
]
