"""Registration requests on the central server: submit, list, approve, reject (I/O).

A security server submits a signed management request (:mod:`gateway.central.management`) with
``POST /registration``; it is checked and stored as ``submitted``. A registration officer lists the
requests and approves or rejects each (``gateway central registration ...``, later the admin API).
Approval applies the change to the registry in the same transaction, so the next publication of the global
configuration lists it: a new server and its authentication certificate, a new client (its subsystem is
registered too if it was not), or a removed certificate or client.

States: ``submitted`` -> ``approved`` | ``rejected`` (a decided request never changes again).

**Renewals** (``[central] auto_approve_auth_renewal``): an ``auth_cert_reg`` request co-signed by an
authentication certificate that is registered for the same server now (:mod:`gateway.central.management`) is
approved at submission, by ``auto:renewal``, in the same transaction; every other request waits for an officer.

Refused at submission (each names the reason): a body that does not verify (see
:func:`~gateway.central.management.verify_request`); an owner member that is not registered (404); an
authentication certificate registered already, or a pending request for the same change (409); for
requests other than ``auth_cert_reg``, a signer certificate that is not registered for the server (403).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

import sqlalchemy as sa
from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from gateway.central import management, registry
from gateway.central import models as m
from gateway.central.management import ManagementRequest, RequestType
from gateway.errors import Conflict, InvalidCertificate, NotFound, RequestError
from gateway.identifiers import ClientId, MemberId, SecurityServerId, SubsystemId, parse_client
from gateway.token.model import ca_finder
from gateway.trust import keys
from gateway.trust.keys import cert_pem, load_certificate

RequestState = Literal["submitted", "approved", "rejected"]
MAX_COMMENT_LENGTH = 4096  # characters; a rejection reason


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    """A stored registration request as the officer (and the CLI/admin API) sees it."""

    id: int
    type: RequestType
    state: str
    server: str
    address: str | None
    client: str | None
    auth_cert_sha256: str | None
    origin: str | None
    comment: str | None
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None

    def to_dict(self) -> dict[str, object]:
        def t(v: datetime | None) -> str | None:
            return None if v is None else v.isoformat().replace("+00:00", "Z")

        return {
            "id": self.id, "type": self.type, "state": self.state, "server": self.server, "address": self.address,
            "client": self.client, "auth_cert_sha256": self.auth_cert_sha256, "origin": self.origin,
            "comment": self.comment, "created_at": t(self.created_at), "decided_at": t(self.decided_at),
            "decided_by": self.decided_by,
        }


def _record(row: m.RegistrationRequest) -> RequestRecord:
    return RequestRecord(
        id=row.id, type=cast(RequestType, row.kind), state=row.state, server=row.server, address=row.address,
        client=row.client, auth_cert_sha256=row.auth_cert_sha256, origin=row.origin, comment=row.comment,
        created_at=row.created_at, decided_at=row.decided_at, decided_by=row.decided_by,
    )


async def _trusted_cas(engine: AsyncEngine) -> list[x509.Certificate]:
    return [load_certificate(ca.certificate_pem.encode("ascii")) for ca in await registry.list_cas(engine)]


async def _server_pk(s: AsyncSession, server: SecurityServerId) -> int | None:
    owner = await registry._member_row(s, server.owner)
    return await s.scalar(sa.select(m.SecurityServer.id).where(
        m.SecurityServer.owner_id == owner.id, m.SecurityServer.server_code == server.server_code))


async def _pending(s: AsyncSession, req: ManagementRequest) -> bool:
    q = sa.select(m.RegistrationRequest.id).where(
        m.RegistrationRequest.state == "submitted", m.RegistrationRequest.kind == req.type,
        m.RegistrationRequest.server == str(req.server),
    )
    if req.auth_cert_sha256 is not None:
        q = q.where(m.RegistrationRequest.auth_cert_sha256 == req.auth_cert_sha256)
    if req.client is not None:
        q = q.where(m.RegistrationRequest.client == str(req.client))
    return await registry._exists(s, q)


async def _check_against_registry(s: AsyncSession, req: ManagementRequest) -> None:
    # (a) the owner is a registered member (404 otherwise)
    server_pk = await _server_pk(s, req.server)
    if req.type == "auth_cert_reg":
        # (b) the certificate is not registered yet, for this or any server
        registered = await registry._exists(
            s, sa.select(m.AuthCert.id).where(m.AuthCert.sha256 == req.auth_cert_sha256))
        if registered:
            raise Conflict(f"authentication certificate {req.auth_cert_sha256} is already registered")
        return
    # (c) other requests come from a server that exists and sign with one of its registered certificates
    if server_pk is None:
        raise NotFound(f"security server {req.server} is not registered")
    signer_registered = await registry._exists(s, sa.select(m.AuthCert.id).where(
        m.AuthCert.server_id == server_pk, m.AuthCert.sha256 == req.signer_sha256))
    if not signer_registered:
        raise InvalidCertificate(
            f"management request: signer_cert {req.signer_sha256[:16]}... is not registered for {req.server}",
        )
    if req.type == "auth_cert_deletion":
        exists = await registry._exists(s, sa.select(m.AuthCert.id).where(
            m.AuthCert.server_id == server_pk, m.AuthCert.sha256 == req.auth_cert_sha256))
        if not exists:
            raise NotFound(f"authentication certificate {req.auth_cert_sha256} is not registered for {req.server}")
        return
    assert req.client is not None
    if req.type == "client_reg":
        # any registered member may be a client (as registry.add_server_client); the member must exist
        await registry._member_row(s, _member_of(req.client))
    is_client = await registry._exists(s, sa.select(m.ServerClient.id).where(
        m.ServerClient.server_id == server_pk, m.ServerClient.client == str(req.client)))
    if req.type == "client_reg" and is_client:
        raise Conflict(f"{req.client.kind} {req.client} is already a client of security server {req.server}")
    if req.type == "client_deletion" and not is_client:
        raise NotFound(f"{req.client.kind} {req.client} is not a client of security server {req.server}")


AUTO_RENEWAL_OFFICER = "auto:renewal"  # decided_by of a renewal approved by the policy


async def _renewal_of_registered(s: AsyncSession, req: ManagementRequest) -> str | None:
    """The fingerprint of the co-signing certificate if it is registered for the request's server now."""
    if req.type != "auth_cert_reg" or req.renewal_cert is None:
        return None
    server_pk = await _server_pk(s, req.server)
    if server_pk is None:
        return None
    sha256 = keys.cert_sha256_hex(req.renewal_cert)
    registered = await registry._exists(s, sa.select(m.AuthCert.id).where(
        m.AuthCert.server_id == server_pk, m.AuthCert.sha256 == sha256))
    return sha256 if registered else None


async def submit(
    engine: AsyncEngine, body: bytes, *, instance: str, now: datetime, origin: str | None = None,
    auto_approve_renewal: bool = False,
) -> RequestRecord:
    """Verify and store a management request as ``submitted``; with ``auto_approve_renewal``, a renewal
    co-signed by a registered certificate of the same server is approved at once (module docstring).

    Raises:
        IdentifierError: a malformed identifier in any field, or one of another instance.
        RequestError: as :func:`~gateway.central.management.verify_request`; a bad address (400); an
            unregistered owner, server, certificate or client (404); a signer certificate not registered for
            the server (403); a duplicate registration or pending request (409).
    """
    # (1) the request itself: format, identifiers, signer certificate from a trusted CA, signature
    req = management.verify_request(body, instance=instance, ca_for=ca_finder(await _trusted_cas(engine)),
                                    now=now)
    if req.address is not None:
        registry.check_address(req.address)
    duplicate = f"a {req.type} request for the same change is already pending"
    async with registry._tx(engine, duplicate=duplicate) as s:
        # (2) it makes sense against the registry
        await _check_against_registry(s, req)
        # (3) nothing identical is pending
        if await _pending(s, req):
            raise Conflict(duplicate)
        row = m.RegistrationRequest(
            kind=req.type, state="submitted", server=str(req.server),
            client=None if req.client is None else str(req.client), auth_cert_sha256=req.auth_cert_sha256,
            auth_cert_pem=None if req.auth_cert is None else cert_pem(req.auth_cert), address=req.address,
            origin=origin, comment=None, created_at=now,
        )
        s.add(row)
        await s.flush()
        # (4) a renewal by the server itself, if the policy lets it through without an officer
        if auto_approve_renewal:
            cosigner = await _renewal_of_registered(s, req)
            if cosigner is not None:
                await _apply(s, row, instance)
                row.state, row.decided_at, row.decided_by = "approved", now, AUTO_RENEWAL_OFFICER
                row.comment = f"renewal co-signed by registered certificate {cosigner}"
                await s.flush()
        return _record(row)


async def list_requests(engine: AsyncEngine, *, state: RequestState | None = None) -> list[RequestRecord]:
    """Registration requests, oldest first, optionally only those in ``state``."""
    q = sa.select(m.RegistrationRequest).order_by(m.RegistrationRequest.id)
    if state is not None:
        q = q.where(m.RegistrationRequest.state == state)
    async with registry._tx(engine) as s:
        return [_record(r) for r in await s.scalars(q)]


async def get_request(engine: AsyncEngine, request_id: int) -> RequestRecord:
    """Raises: RequestError: 404 if there is no such request."""
    async with registry._tx(engine) as s:
        row = await s.get(m.RegistrationRequest, request_id)
        if row is None:
            raise NotFound(f"registration request {request_id} does not exist")
        return _record(row)


async def _submitted(s: AsyncSession, request_id: int) -> m.RegistrationRequest:
    row = await s.get(m.RegistrationRequest, request_id, with_for_update=True)
    if row is None:
        raise NotFound(f"registration request {request_id} does not exist")
    if row.state != "submitted":
        raise Conflict(f"registration request {request_id} is {row.state} already")
    return row


async def _apply(s: AsyncSession, row: m.RegistrationRequest, instance: str) -> None:
    server = SecurityServerId.parse(row.server, encoded=False)
    if row.kind == "auth_cert_reg":
        assert row.address is not None and row.auth_cert_pem is not None and row.auth_cert_sha256 is not None
        owner = await registry._member_row(s, server.owner)
        srv = await s.scalar(sa.select(m.SecurityServer).where(
            m.SecurityServer.owner_id == owner.id, m.SecurityServer.server_code == server.server_code))
        if srv is None:
            srv = m.SecurityServer(owner_id=owner.id, server_code=server.server_code, address=row.address)
            s.add(srv)
            await s.flush()
        else:
            srv.address = row.address
        if await registry._exists(s, sa.select(m.AuthCert.id).where(m.AuthCert.sha256 == row.auth_cert_sha256)):
            raise Conflict(f"authentication certificate {row.auth_cert_sha256} is already registered")
        s.add(m.AuthCert(server_id=srv.id, sha256=row.auth_cert_sha256, certificate_pem=row.auth_cert_pem))
        return
    srv_row = await registry._server_row(s, server)
    if row.kind == "auth_cert_deletion":
        cert = await s.scalar(sa.select(m.AuthCert).where(
            m.AuthCert.server_id == srv_row.id, m.AuthCert.sha256 == row.auth_cert_sha256))
        if cert is None:
            raise NotFound(f"authentication certificate {row.auth_cert_sha256} is not registered for {server}")
        await s.delete(cert)
        return
    assert row.client is not None
    client = parse_client(row.client, encoded=False)
    entry = await s.scalar(sa.select(m.ServerClient).where(
        m.ServerClient.server_id == srv_row.id, m.ServerClient.client == row.client))
    if row.kind == "client_deletion":
        if entry is None:
            raise NotFound(f"{client.kind} {client} is not a client of security server {server}")
        await s.delete(entry)
        return
    if entry is not None:
        raise Conflict(f"{client.kind} {client} is already a client of security server {server}")
    member = await registry._member_row(s, _member_of(client))
    subsystem_pk: int | None = None
    if isinstance(client, SubsystemId):
        subsystem_pk = await s.scalar(sa.select(m.Subsystem.id).where(
            m.Subsystem.member_id == member.id, m.Subsystem.subsystem_code == client.subsystem_code))
        if subsystem_pk is None:  # a client registration registers a new subsystem, as X-Road does
            sub = m.Subsystem(member_id=member.id, subsystem_code=client.subsystem_code)
            s.add(sub)
            await s.flush()
            subsystem_pk = sub.id
    s.add(m.ServerClient(server_id=srv_row.id, member_id=member.id, subsystem_id=subsystem_pk, client=row.client))


def _member_of(client: ClientId) -> MemberId:
    return client.member if isinstance(client, SubsystemId) else client


def _check_officer(officer: str, comment: str | None) -> None:
    registry.check_text(officer, what="officer", max_length=255)
    if comment is not None and len(comment) > MAX_COMMENT_LENGTH:
        raise RequestError(f"comment is longer than {MAX_COMMENT_LENGTH} characters")


async def approve(
    engine: AsyncEngine, request_id: int, *, instance: str, officer: str, now: datetime,
    comment: str | None = None,
) -> RequestRecord:
    """Approve a submitted request and apply it to the registry, in one transaction.

    Raises:
        RequestError: 404 for an unknown request (or a registry entry that vanished since submission);
            409 if it was decided already or the change conflicts with the registry as it is now.
    """
    _check_officer(officer, comment)
    async with registry._tx(engine, duplicate=f"registration request {request_id} conflicts with the registry") as s:
        row = await _submitted(s, request_id)
        await _apply(s, row, instance)
        row.state, row.decided_at, row.decided_by, row.comment = "approved", now, officer, comment
        await s.flush()
        return _record(row)


async def reject(
    engine: AsyncEngine, request_id: int, *, officer: str, now: datetime, comment: str | None = None,
) -> RequestRecord:
    """Reject a submitted request (the registry is not changed).

    Raises:
        RequestError: 404 for an unknown request; 409 if it was decided already.
    """
    _check_officer(officer, comment)
    async with registry._tx(engine) as s:
        row = await _submitted(s, request_id)
        row.state, row.decided_at, row.decided_by, row.comment = "rejected", now, officer, comment
        await s.flush()
        return _record(row)
