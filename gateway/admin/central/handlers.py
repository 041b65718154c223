"""The central server's admin API handlers (I/O): thin calls of :mod:`gateway.central.registry`,
:mod:`~gateway.central.registration`, :mod:`~gateway.central.signingkeys` and :mod:`~gateway.central.publisher`,
the same functions the ``gateway central`` CLI calls, so the rules live there once.

Each handler gets the call so far (the validated body, the caller), the request (path and query parameters) and
the :class:`~gateway.admin.central.context.CentralAdminContext`. A handler that changes the registry asks for a
publication check at once (:meth:`CentralAdminContext.changed`), so the change is published without waiting for
the next interval.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web

from gateway.admin.central.context import CentralAdminContext, CentralImpl
from gateway.admin.context import Call
from gateway.admin.handlers.common import iso, page
from gateway.admin.routes import MAX_LOG_INDEX
from gateway.admin.schema import page_body, parse_page
from gateway.central import publisher, registration, registry, signingkeys
from gateway.errors import NotFound, RequestError
from gateway.globalconf.model import WitnessPolicy
from gateway.identifiers import GlobalGroupId, MemberId, SecurityServerId, SubsystemId, parse_client
from gateway.trust.keys import cert_sha256_hex, load_certificate


def changes_registry(impl: CentralImpl) -> CentralImpl:
    """``impl``, then a publication check (nothing when ``impl`` raises)."""

    @functools.wraps(impl)
    async def changed(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
        result = await impl(call, request, ctx)
        ctx.changed()
        return result

    return changed


def _member_in_path(request: web.Request) -> MemberId:
    return MemberId.parse_encoded_id(request.match_info["member_id"])


def _server_in_path(request: web.Request) -> SecurityServerId:
    return SecurityServerId.parse_encoded_id(request.match_info["server_id"])


def _group_in_path(request: web.Request) -> GlobalGroupId:
    return GlobalGroupId.parse_encoded_id(request.match_info["group_id"])


def _client_in_path(request: web.Request) -> str:
    return str(parse_client(request.match_info["client_id"].replace(":", "/"), encoded=False))


# ------------------------------------------------------------------------------------------ members


def _member_json(rec: registry.MemberRecord) -> dict[str, Any]:
    return {"id": str(rec.id), "encoded_id": rec.id.encoded_id(), "name": rec.name, "subsystems": list(rec.subsystems)}


async def _member(ctx: CentralAdminContext, member: MemberId) -> dict[str, Any]:
    for rec in await registry.list_members(ctx.engine):
        if rec.id == member:
            return _member_json(rec)
    raise NotFound(f"member {member} is not registered")


async def list_members(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    return page(request, [_member_json(r) for r in await registry.list_members(ctx.engine)])


@changes_registry
async def add_member(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    member = await registry.add_member(ctx.engine, call.body["id"], name=call.body["name"], instance=ctx.instance)
    return await _member(ctx, member)


async def get_member(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    return await _member(ctx, _member_in_path(request))


@changes_registry
async def rename_member(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    member = _member_in_path(request)
    await registry.set_member_name(ctx.engine, member, name=call.body["name"], instance=ctx.instance)
    return await _member(ctx, member)


@changes_registry
async def remove_member(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    await registry.remove_member(ctx.engine, _member_in_path(request), instance=ctx.instance)


@changes_registry
async def add_subsystem(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    member = _member_in_path(request)
    sub = SubsystemId(instance=member.instance, member_class=member.member_class, member_code=member.member_code,
                      subsystem_code=call.body["code"])
    await registry.add_subsystem(ctx.engine, sub, instance=ctx.instance)
    return await _member(ctx, member)


@changes_registry
async def remove_subsystem(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    member = _member_in_path(request)
    sub = SubsystemId(instance=member.instance, member_class=member.member_class, member_code=member.member_code,
                      subsystem_code=request.match_info["subsystem_code"])
    await registry.remove_subsystem(ctx.engine, sub, instance=ctx.instance)


# ------------------------------------------------------------------------------------------ servers


def _server_json(rec: registry.ServerRecord) -> dict[str, Any]:
    return {"id": str(rec.id), "encoded_id": rec.id.encoded_id(), "address": rec.address,
            "auth_certs": list(rec.auth_certs), "clients": [str(c) for c in rec.clients]}


async def _server(ctx: CentralAdminContext, server: SecurityServerId) -> dict[str, Any]:
    for rec in await registry.list_servers(ctx.engine):
        if rec.id == server:
            return _server_json(rec)
    raise NotFound(f"security server {server} is not registered")


async def list_servers(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    return page(request, [_server_json(r) for r in await registry.list_servers(ctx.engine)])


@changes_registry
async def add_server(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    server = await registry.add_server(ctx.engine, call.body["id"], address=call.body["address"],
                                       instance=ctx.instance)
    return await _server(ctx, server)


async def get_server(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    return await _server(ctx, _server_in_path(request))


@changes_registry
async def set_server_address(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    server = _server_in_path(request)
    await registry.set_server_address(ctx.engine, server, address=call.body["address"], instance=ctx.instance)
    return await _server(ctx, server)


@changes_registry
async def remove_server(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    await registry.remove_server(ctx.engine, _server_in_path(request), instance=ctx.instance)


@changes_registry
async def add_auth_cert(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    fingerprint = await registry.add_auth_cert(ctx.engine, _server_in_path(request), call.body["pem"],
                                               instance=ctx.instance)
    call.details["fingerprint"] = fingerprint
    return {"fingerprint": fingerprint}


@changes_registry
async def remove_auth_cert(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    await registry.remove_auth_cert(ctx.engine, _server_in_path(request), request.match_info["fingerprint"],
                                    instance=ctx.instance)


@changes_registry
async def add_server_client(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    server = _server_in_path(request)
    await registry.add_server_client(ctx.engine, server, call.body["client"], instance=ctx.instance)
    return await _server(ctx, server)


@changes_registry
async def remove_server_client(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    await registry.remove_server_client(ctx.engine, _server_in_path(request), _client_in_path(request),
                                        instance=ctx.instance)


# ------------------------------------------------------------------------------------------ global groups


def _group_json(rec: registry.GroupRecord) -> dict[str, Any]:
    return {"id": str(rec.id), "encoded_id": rec.id.encoded_id(), "description": rec.description,
            "members": [str(c) for c in rec.members]}


async def _group(ctx: CentralAdminContext, group: GlobalGroupId) -> dict[str, Any]:
    for rec in await registry.list_groups(ctx.engine):
        if rec.id == group:
            return _group_json(rec)
    raise NotFound(f"global group {group} is not registered")


async def list_global_groups(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    return page(request, [_group_json(r) for r in await registry.list_groups(ctx.engine)])


@changes_registry
async def add_global_group(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    group = await registry.add_group(ctx.engine, call.body["id"], description=call.body["description"],
                                     instance=ctx.instance)
    return await _group(ctx, group)


@changes_registry
async def remove_global_group(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    await registry.remove_group(ctx.engine, _group_in_path(request), instance=ctx.instance)


@changes_registry
async def add_global_group_member(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    group = _group_in_path(request)
    await registry.add_group_member(ctx.engine, group, call.body["client"], instance=ctx.instance)
    return await _group(ctx, group)


@changes_registry
async def remove_global_group_member(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    await registry.remove_group_member(ctx.engine, _group_in_path(request), _client_in_path(request),
                                       instance=ctx.instance)


# ------------------------------------------------------------------------------------------ trust services


def _ca_json(rec: registry.CaRecord) -> dict[str, Any]:
    cert = load_certificate(rec.certificate_pem.encode("ascii"))
    return {"name": rec.name, "certificate_pem": rec.certificate_pem, "ocsp_urls": list(rec.ocsp_urls),
            "sha256": cert_sha256_hex(cert), "subject": cert.subject.rfc4514_string(),
            "not_after": iso(cert.not_valid_after_utc)}


def _tsa_json(rec: registry.TsaRecord) -> dict[str, Any]:
    cert = load_certificate(rec.certificate_pem.encode("ascii"))
    return {"name": rec.name, "url": rec.url, "certificate_pem": rec.certificate_pem,
            "sha256": cert_sha256_hex(cert)}


async def list_cas(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    return page(request, [_ca_json(r) for r in await registry.list_cas(ctx.engine)])


@changes_registry
async def add_ca(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    b = call.body
    return _ca_json(await registry.add_ca(ctx.engine, name=b["name"], certificate=b["pem"],
                                          ocsp_urls=b.get("ocsp_urls", ())))


@changes_registry
async def remove_ca(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    await registry.remove_ca(ctx.engine, request.match_info["name"])


async def list_tsas(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    return page(request, [_tsa_json(r) for r in await registry.list_tsas(ctx.engine)])


@changes_registry
async def add_tsa(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    b = call.body
    return _tsa_json(await registry.add_tsa(ctx.engine, name=b["name"], url=b["url"], certificate=b["pem"]))


@changes_registry
async def remove_tsa(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    await registry.remove_tsa(ctx.engine, request.match_info["name"])


async def get_transparency(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    return await registry.get_transparency(ctx.engine)


@changes_registry
async def set_transparency(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    b = call.body
    return await registry.set_transparency(ctx.engine, purposes=b["purposes"], portal=b["portal"] or "",
                                           embargo_clients=b["embargo_clients"], instance=ctx.instance)


# ------------------------------------------------------------------------------------------ witness policies


def _policy_json(policy: WitnessPolicy) -> dict[str, Any]:
    return {"id": str(policy.server), "encoded_id": policy.server.encoded_id(), "quorum": policy.quorum,
            "witnesses": [{"name": w.name, "key_id": w.key.key_id.hex(), "vkey": w.vkey, "url": w.url,
                           "server": str(w.server)} for w in policy.witnesses]}


async def list_witness_policies(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    return page(request, [_policy_json(p) for p in await registry.list_witness_policies(ctx.engine)])


async def get_witness_policy(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    return _policy_json(await registry.get_witness_policy(ctx.engine, _server_in_path(request), instance=ctx.instance))


@changes_registry
async def set_witness_policy(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    b = call.body
    specs = [registry.WitnessSpec(vkey=w["vkey"], url=w.get("url", ""), server=w["server"]) for w in b["witnesses"]]
    policy = await registry.set_witness_policy(ctx.engine, _server_in_path(request), quorum=b["quorum"],
                                               witnesses=specs, instance=ctx.instance)
    call.details["witness_policy"] = {"server": str(policy.server), "quorum": policy.quorum,
                                      "witnesses": [w.name for w in policy.witnesses]}
    return _policy_json(policy)


@changes_registry
async def remove_witness_policy(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    await registry.remove_witness_policy(ctx.engine, _server_in_path(request), instance=ctx.instance)


# ------------------------------------------------------------------------------------------ signing keys


def _key_json(info: signingkeys.SigningKeyInfo) -> dict[str, Any]:
    return {"keyid": info.keyid, "number": info.number, "state": info.state, "created_at": iso(info.created_at),
            "retired_at": iso(info.retired_at), "certificate_pem": info.certificate_pem}


async def list_signing_keys(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    return page(request, [_key_json(k) for k in await signingkeys.list_signing_keys(ctx.engine)])


@changes_registry
async def create_signing_key(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    info = await signingkeys.create_signing_key(ctx.engine, instance=ctx.instance, key_dir=ctx.central.key_dir,
                                                now=ctx.clock(), active=False)
    call.details["keyid"] = info.keyid
    return _key_json(info)


@changes_registry
async def activate_signing_key(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    info = await signingkeys.activate_signing_key(ctx.engine, request.match_info["keyid"])
    call.details["keyid"] = info.keyid
    return _key_json(info)


@changes_registry
async def retire_signing_key(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    info = await signingkeys.retire_signing_key(ctx.engine, request.match_info["keyid"], now=ctx.clock())
    call.details["keyid"] = info.keyid
    return _key_json(info)


async def get_anchor(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    return json.loads(await publisher.current_anchor(ctx.engine, ctx.central))


# ------------------------------------------------------------------------------------------ registration


def _request_id(request: web.Request) -> int:
    text = request.match_info["request_id"]
    if not text.isascii() or not text.isdigit() or len(text) > 18 or not 1 <= int(text) <= MAX_LOG_INDEX:
        raise RequestError(f"path parameter request_id {text[:20]!r} is not a positive integer")
    return int(text)


def _request_json(rec: registration.RequestRecord) -> dict[str, Any]:
    # Only a verified request is ever stored (registration.submit checks it first), so the signature shown
    # is verified by construction; the signer of an auth_cert_reg is the certificate it registers.
    signer = ("the authentication certificate it registers (proof of possession of its key)"
              if rec.type == "auth_cert_reg" else f"an authentication certificate registered for {rec.server}")
    return {
        **rec.to_dict(),
        "signature": {"verified": True, "verified_at": iso(rec.created_at), "signer": signer,
                      "signer_cert_sha256": rec.auth_cert_sha256 if rec.type == "auth_cert_reg" else None},
    }


async def list_registration_requests(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    state = request.query.get("state")
    records = await registration.list_requests(
        ctx.engine, state=state if state in ("submitted", "approved", "rejected") else None  # type: ignore[arg-type]
    )
    return page(request, [_request_json(r) for r in records])


async def get_registration_request(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    return _request_json(await registration.get_request(ctx.engine, _request_id(request)))


@changes_registry
async def approve_registration_request(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    rec = await registration.approve(ctx.engine, _request_id(request), instance=ctx.instance, officer=call.actor,
                                     now=ctx.clock(), comment=call.body.get("comment"))
    call.details["registration_request"] = {"id": rec.id, "type": rec.type, "server": rec.server}
    return _request_json(rec)


async def reject_registration_request(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    rec = await registration.reject(ctx.engine, _request_id(request), officer=call.actor, now=ctx.clock(),
                                    comment=call.body.get("comment"))
    call.details["registration_request"] = {"id": rec.id, "type": rec.type, "server": rec.server}
    return _request_json(rec)


# ------------------------------------------------------------------------------------------ publications


def _version_json(pub: publisher.Publication) -> dict[str, Any]:
    return {"version": pub.version, "issued_at": iso(pub.issued_at), "expires_at": iso(pub.expires_at),
            "sha256": pub.sha256, "content_sha256": pub.content_sha256}


async def list_global_conf_versions(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    p = parse_page(request.query)
    pubs, total = await publisher.list_publications(ctx.engine, limit=p.limit, offset=p.offset)
    return page_body([_version_json(x) for x in pubs], total=total, page=p)


async def publish_global_conf(call: Call, request: web.Request, ctx: CentralAdminContext) -> Any:
    pub = await ctx.publish_now()
    call.details["version"] = pub.version
    return _version_json(pub)


__all__ = ["changes_registry"]
