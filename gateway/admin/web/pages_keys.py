"""The keys-and-certificates page: the software token's log-in, keys, CSRs, certificate import and
activation (I/O). Each form runs the API's token operation; a CSR is answered as a PEM file download. Each
PKCS#11 device has a section of its own: its state and its keys with their certificates (read-only here; the
devices are managed with ``gateway token COMMAND --device NAME``, docs/tokens.md)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin.web.confirm import ask, confirmed
from gateway.admin.web.guard import Form, page
from gateway.admin.web.nav import nav_for
from gateway.admin.web.ops import FormError, User, authorize, context, note_error, run_op
from gateway.admin.web.pages_config import back
from gateway.admin.web.render import render
from gateway.errors import GatewayError, RequestError

PIN_FIELDS = {"pin": "PIN"}
CHANGE_PIN_FIELDS = {"old_pin": "Current PIN", "new_pin": "New PIN", "repeat_pin": "New PIN again"}
KEY_FIELDS = {"usage": "Usage", "key_type": "Key type", "label": "Label"}
CSR_FIELDS = {"member": "Member", "name": "Organisation name"}
IMPORT_FIELDS = {"pem": "Certificate (PEM)", "members": "Further members"}
KEYS = "/ui/keys"


async def _keys_page(request: web.Request, user: User, err: FormError | None = None,
                     status: int = 200) -> web.Response:
    ctx = context(request)
    token = await run_op(request, user, "getToken") if ctx.token is not None else None
    wanted = token is not None or bool(ctx.devices)
    reports = await ctx.certificates() if wanted and ctx.certificates is not None else []
    statuses = {str(t["name"]): t for t in (ctx.tokens() if ctx.tokens is not None else [])}
    devices: list[dict[str, Any]] = []
    for name, device in ctx.devices.items():
        section: dict[str, Any] = {"name": name, "status": statuses.get(name, device.status().to_dict()),
                                   "keys": [], "error": ""}
        try:
            section["keys"] = list((await device.state()).keys)
        except GatewayError as e:
            section["error"] = e.message
        devices.append(section)
    return render("keys.html", status=status, user=user, nav=nav_for(user, "keys"), title="Keys and certificates",
                  token=token, err=err, done=request.query.get("done"), server=str(ctx.server_id),
                  # one row per token: today the one software token (the page is laid out for several)
                  tokens=[] if token is None else [{"name": "software token", "state": token}],
                  all_tokens=list(statuses.values()), devices=devices,
                  in_use={r.sha256 for r in reports if r.in_use}, ocsp={r.sha256: r.ocsp for r in reports})


@page
async def keys(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    return await _keys_page(request, user)


async def _form_op(request: web.Request, user: User, form: Form, *, op: str, body: dict[str, Any] | None, name: str,
                   fields: dict[str, str], note: str, only: str | None = None) -> web.StreamResponse:
    try:
        await run_op(request, user, op, body)
    except GatewayError as e:
        note_error(request, e)
        return await _keys_page(request, user, FormError.of(name, e, form, fields, only=only), e.status)
    return back(request, note, path=KEYS)


@page
async def login_token(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    return await _form_op(request, user, form, op="loginToken", body={"pin": form.get("pin", "")}, name="pin",
                          fields=PIN_FIELDS, note="Token logged in.", only="pin")


@page
async def logout_token(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    return await _form_op(request, user, form, op="logoutToken", body=None, name="token", fields={},
                          note="Token logged out: the PIN is forgotten; signing with the keys in use goes on.")


@page
async def change_pin(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    """``changeTokenPin``; the new PIN typed twice, compared here before anything is sent."""
    body = {"old_pin": form.get("old_pin", ""), "new_pin": form.get("new_pin", "")}
    if form.get("repeat_pin", "") != body["new_pin"]:
        e = RequestError("body.repeat_pin is not the same as the new PIN")
        note_error(request, e)
        return await _keys_page(request, user, FormError.of("newpin", e, {}, CHANGE_PIN_FIELDS), e.status)
    return await _form_op(request, user, {}, op="changeTokenPin", body=body, name="newpin",
                          fields=CHANGE_PIN_FIELDS, only="old_pin",  # a refusal naming no field: the PIN
                          note="The token's PIN was changed: every key is encrypted under the new one.")


@page
async def delete_key(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    key_id = request.match_info["token_key_id"]
    authorize(request, user, "deleteKey")
    if not confirmed(form):
        return ask(request, user, question=f"Delete the key {key_id[:16]}…?",
                   consequence="Its certificates are deleted with it; a key with an active certificate is kept "
                               "(deactivate the certificate first).",
                   button="Delete key", cancel=KEYS, nav="keys")
    return await _form_op(request, user, form, op="deleteKey", body=None, name="activate", fields={},
                          note=f"Key {key_id[:16]}… deleted.")


@page
async def deactivate_certificate(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    try:
        result = await run_op(request, user, "deactivateCertificate")
    except GatewayError as e:
        note_error(request, e)
        return await _keys_page(request, user, FormError.of("activate", e, form, {}), e.status)
    note = "Certificate deactivated." + (" The server switched to another certificate." if result["keys_changed"]
                                         else "")
    if result["reload_error"]:
        note += f" The server keeps its current certificates: {result['reload_error']}"
    return back(request, note, path=KEYS)


@page
async def register_server(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    """``registerServer``: the newest authentication certificate, in a request to the central server."""
    try:
        sent = await run_op(request, user, "registerServer")
    except GatewayError as e:
        if e.status == 403:
            raise
        note_error(request, e)
        return await _keys_page(request, user, FormError.of("register", e, form, {}), e.status)
    return back(request, f"Registration request {sent['id']} sent: {sent['state']} at the central server, where a "
                "registration officer approves it.", path=KEYS)


@page
async def generate_key(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    body = {"usage": form.get("usage", ""), "key_type": form.get("key_type", "ec-p256"),
            "label": form.get("label", "").strip()}
    return await _form_op(request, user, form, op="generateKey", body=body, name="key", fields=KEY_FIELDS,
                          note=f"A new {body['usage']} key was generated.")


@page
async def create_csr(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    body = {k: form[k].strip() for k in ("member", "name") if form.get(k, "").strip()}
    try:
        result = await run_op(request, user, "createCsr", body)
    except GatewayError as e:
        note_error(request, e)
        return await _keys_page(request, user, FormError.of(f"csr-{request.match_info['token_key_id']}", e, form,
                                                            CSR_FIELDS, identifier="member"), e.status)
    name = f"csr-{request.match_info['token_key_id'][:16]}.pem"
    return web.Response(body=result["csr"].encode("ascii"), content_type="application/pkcs10",
                        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


@page
async def import_certificate(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    members = [m.strip() for m in form.get("members", "").replace(",", " ").split() if m.strip()]
    body: dict[str, Any] = {"pem": form.get("pem", "")}
    if members:
        body["members"] = members
    return await _form_op(request, user, form, op="importCertificate", body=body, name="import",
                          fields=IMPORT_FIELDS, note="Certificate imported.")


@page
async def activate_certificate(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    try:
        result = await run_op(request, user, "activateCertificate")
    except GatewayError as e:
        note_error(request, e)
        return await _keys_page(request, user, FormError.of("activate", e, form, {}), e.status)
    note = "Certificate activated." + (" The server now uses it." if result["keys_changed"] else "")
    if result["reload_error"]:
        note += f" The server keeps its current certificates: {result['reload_error']}"
    return back(request, note, path=KEYS)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/keys", keys)
    app.router.add_post("/keys", generate_key)
    app.router.add_post("/keys/token-login", login_token)
    app.router.add_post("/keys/token-logout", logout_token)
    app.router.add_post("/keys/token-pin", change_pin)
    app.router.add_post("/keys/register", register_server)
    app.router.add_post("/keys/{token_key_id}/delete", delete_key)
    app.router.add_post("/keys/certificates/{sha256}/deactivate", deactivate_certificate)
    app.router.add_post("/keys/{token_key_id}/csr", create_csr)
    app.router.add_post("/keys/certificates", import_certificate)
    app.router.add_post("/keys/certificates/{sha256}/activate", activate_certificate)


__all__ = ["add_routes"]
