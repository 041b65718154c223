"""The central server's registry: members, subsystems, security servers, groups, CAs and TSAs (I/O).

Async functions over an :class:`~sqlalchemy.ext.asyncio.AsyncEngine`; each call is one transaction. They
are what the CLI, the demo and (later) the admin API and the registration-request flow call.

Rules:

- Identifiers are :mod:`gateway.identifiers` value objects (a ``/``-joined string is parsed) and must belong
  to this central server's ``instance``.
- A duplicate raises :class:`~gateway.errors.RequestError` with status 409 (``Client.Conflict``); a missing
  reference (unknown member, server, group...) raises it with status 404 (``Client.NotFound``). The database
  unique constraints back the checks, so a concurrent duplicate is also a 409, never a 500.
- Certificates are given as PEM (or DER) bytes; an authentication certificate is stored with its SHA-256
  fingerprint (hex, over the DER), which is what the global configuration publishes.
- Removing a member removes its subsystems, its servers and every client or group entry that names it
  (foreign keys ``ON DELETE CASCADE``).
- Witness policies (docs/witness.md section 3): a server's own policy goes with the server (and so with its
  member); a server that runs a witness named by another server's policy cannot be removed (409 naming the
  policies) until those policies are changed or removed, so that removing a server never silently weakens
  what another server's logs must show.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import sqlalchemy as sa
from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from gateway.central import models as m
from gateway.errors import Conflict, IdentifierError, NotFound, RequestError, TrustError
from gateway.globalconf.model import MAX_WITNESSES, Witness, WitnessPolicy
from gateway.globalconf.transparency import check_conf
from gateway.identifiers import (
    ClientId,
    GlobalGroupId,
    MemberId,
    SecurityServerId,
    SubsystemId,
    parse_client,
)
from gateway.storage.transaction import begin_session, transaction
from gateway.trust.cosignature import parse_vkey
from gateway.trust.keys import cert_pem, cert_sha256_hex, load_certificate

MAX_NAME_LENGTH = 1024  # characters; member names and group descriptions (column width)
MAX_AUTHORITY_NAME_LENGTH = 255  # characters; CA and TSA names (column width)
MAX_URL_LENGTH = 2048  # characters; OCSP and TSA URLs
MAX_CERT_BYTES = 64 * 1024  # bytes; far above any real certificate, bounds work on hostile input

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")  # RFC 1123 names; IPv4 fits


# ---------------------------------------------------------------------------------------------------------
# Records handed out by the list functions (and used by the publisher)


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberRecord:
    id: MemberId
    name: str
    subsystems: tuple[str, ...]  # subsystem codes, sorted


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerRecord:
    id: SecurityServerId
    address: str
    auth_certs: tuple[str, ...]  # hex SHA-256 fingerprints, sorted
    clients: tuple[ClientId, ...]  # sorted by string form


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupRecord:
    id: GlobalGroupId
    description: str
    members: tuple[ClientId, ...]  # sorted by string form


@dataclass(frozen=True, slots=True, kw_only=True)
class CaRecord:
    name: str
    certificate_pem: str
    ocsp_urls: tuple[str, ...]  # in order of preference


@dataclass(frozen=True, slots=True, kw_only=True)
class TsaRecord:
    name: str
    url: str
    certificate_pem: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrySnapshot:
    """Everything the global configuration publishes from the registry, read in one transaction."""

    members: tuple[MemberRecord, ...]
    servers: tuple[ServerRecord, ...]
    groups: tuple[GroupRecord, ...]
    cas: tuple[CaRecord, ...]
    tsas: tuple[TsaRecord, ...]
    transparency: dict[str, Any] | None = None  # published parameters.transparency, once set in the registry
    witness_policies: tuple[WitnessPolicy, ...] = ()  # sorted by server


# ---------------------------------------------------------------------------------------------------------
# Pure checks



_I = TypeVar("_I", MemberId, SubsystemId, SecurityServerId, GlobalGroupId)


def _ident(cls: type[_I], value: _I | str, instance: str) -> _I:
    ident = cls.parse(value, encoded=False) if isinstance(value, str) else value
    if not isinstance(ident, cls):
        raise IdentifierError(f"expected a {cls.kind} identifier, got {ident.kind} {ident}")
    _check_instance(ident, instance)
    return ident


def _client(value: ClientId | str, instance: str) -> ClientId:
    ident = parse_client(value, encoded=False) if isinstance(value, str) else value
    _check_instance(ident, instance)
    return ident


def _check_instance(
    ident: MemberId | SubsystemId | SecurityServerId | GlobalGroupId, instance: str
) -> None:
    if ident.instance != instance:
        raise IdentifierError(
            f"{ident.kind} {ident} belongs to instance {ident.instance!r}; "
            f"this central server serves instance {instance!r}"
        )


def check_address(address: str) -> str:
    """Validate a ``HOST:PORT`` server address (IPv6 hosts in brackets) and return it.

    Raises:
        RequestError: not ``HOST:PORT``, a bad host name or a port outside 1-65535.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise RequestError(f"address {address!r} must be HOST:PORT")
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise RequestError(f"address {address!r}: port {port!r} is not a number from 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError as e:
            raise RequestError(f"address {address!r}: {host} is not an IPv6 address") from e
    elif not _HOSTNAME_RE.fullmatch(host):
        raise RequestError(
            f"address {address!r}: {host!r} is not a host name or IPv4 address",
            hint="write IPv6 addresses in brackets: [::1]:5500",
        )
    return address


def check_url(url: str, *, what: str) -> str:
    """Validate an ``http``/``https`` URL with a host and return it.

    Raises:
        RequestError: another scheme, no host, whitespace, or too long.
    """
    if len(url) > MAX_URL_LENGTH:
        raise RequestError(f"{what} is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise RequestError(f"{what} {url!r} contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise RequestError(f"{what} {url!r} is not a valid URL: {e}") from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RequestError(f"{what} {url!r} must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.fragment:
        raise RequestError(f"{what} {url!r} may not carry user information or a fragment")
    return url


def check_text(value: str, *, what: str, max_length: int) -> str:
    """Validate a free-text field (name, description): not blank, bounded, no control characters.

    Raises:
        RequestError: blank, too long or with control characters.
    """
    if not value.strip():
        raise RequestError(f"{what} is empty")
    if len(value) > max_length:
        raise RequestError(f"{what} is {len(value)} characters long; at most {max_length} are allowed")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise RequestError(f"{what} {value!r} contains control characters")
    return value


def parse_certificate(data: bytes | str, *, what: str) -> x509.Certificate:
    """Parse a PEM or DER certificate given by an operator.

    Raises:
        RequestError: too large or not a certificate.
    """
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    if len(raw) > MAX_CERT_BYTES:
        raise RequestError(f"{what} is {len(raw)} bytes; at most {MAX_CERT_BYTES} are allowed")
    try:
        return load_certificate(raw)
    except TrustError as e:
        raise RequestError(f"{what}: {e.message}") from e


def _check_ca_certificate(cert: x509.Certificate, *, what: str) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise RequestError(f"{what} is not a CA certificate (basicConstraints cA is not true)")


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessSpec:
    """A witness as an operator names it: its C2SP vkey, the URL of its prefix, the server that runs it.

    An empty ``url`` means the default, ``https://<the server's registered address>/witness``: the witness
    endpoint on the server-to-server port (filled in by :func:`set_witness_policy`).
    """

    vkey: str
    url: str
    server: SecurityServerId | str


WITNESS_PREFIX = "/witness"  # the witness endpoint's path prefix on a security server's server-to-server port


MAX_VKEY_LENGTH = 512  # characters; a 255-character name, 8 hex digits and 44 base64 characters fit


def check_witness_url(url: str, *, what: str) -> str:
    """Validate a witness URL: ``https://host[:port]/prefix``, no query, fragment or final ``/``.

    Raises:
        RequestError: another scheme, a query, a fragment, a final '/', or as :func:`check_url`.
    """
    check_url(url, what=what)
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.query or url.endswith("/") or "?" in url:
        raise RequestError(f"{what} {url!r} must be an https:// URL without a query or a final '/'",
                           hint="the witness prefix, e.g. https://ss2.example.org:5500/witness")
    return url


def check_witness_policy(
    server: SecurityServerId | str, *, quorum: int, witnesses: Sequence[WitnessSpec], instance: str,
) -> WitnessPolicy:
    """The witness policy of ``server`` (pure): every rule the global configuration's parser applies
    (docs/globalconf.md) except that the servers are registered, which :func:`set_witness_policy` checks.

    Rules: (1) 1 to :data:`MAX_WITNESSES` witnesses; (2) each vkey is a C2SP vkey of an Ed25519 cosignature key
    (type 0x04) and each URL an https witness prefix; (3) each witness runs on a server of another member than
    ``server``'s owner; (4) no witness twice (the same key name or the same public key); (5) ``1 <= quorum <=``
    the number of witnesses.

    Raises:
        IdentifierError: a malformed server identifier, or one of another instance.
        RequestError: 400 for any rule broken, naming the witness (by position and, once known, name).
    """
    ident = _ident(SecurityServerId, server, instance)
    # (1) how many
    if not witnesses:
        raise RequestError(f"the witness policy of {ident} names no witness", hint="name at least one")
    if len(witnesses) > MAX_WITNESSES:
        raise RequestError(f"the witness policy of {ident} names {len(witnesses)} witnesses; at most "
                           f"{MAX_WITNESSES} are allowed")
    out: list[Witness] = []
    for i, spec in enumerate(witnesses, 1):
        # (2) the key and the URL
        where = f"witness {i}"
        if len(spec.vkey) > MAX_VKEY_LENGTH:
            raise RequestError(f"{where}: vkey is longer than {MAX_VKEY_LENGTH} characters")
        try:
            key = parse_vkey(spec.vkey.strip())
        except TrustError as e:
            raise RequestError(f"{where}: {e.message}",
                               hint="the witness's server prints its vkey: `gateway token witness-key`") from e
        where = f"witness {i} ({key.name})"
        url = check_witness_url(spec.url, what=f"{where}: URL")
        host = _ident(SecurityServerId, spec.server, instance)
        # (3) in another member's organisation
        if host.owner == ident.owner:
            raise RequestError(f"{where} runs on {host}, a server of {ident.owner}, the logging server's own "
                               "member; a witness must run in another member's organisation")
        # (4) not twice
        for other in out:
            if other.name == key.name:
                raise RequestError(f"{where}: the key name {key.name!r} is listed twice")
            if other.key.public_key == key.public_key:
                raise RequestError(f"{where}: the same public key is listed as {other.name!r} already")
        out.append(Witness(key=key, url=url, server=host))
    # (5) the quorum
    if isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 1:
        raise RequestError(f"the quorum of the witness policy of {ident} must be a whole number of at least 1, "
                           f"got {quorum!r}")
    if quorum > len(out):
        raise RequestError(f"the quorum {quorum} of the witness policy of {ident} is more than the {len(out)} "
                           "witnesses listed")
    return WitnessPolicy(server=ident, quorum=quorum, witnesses=tuple(sorted(out, key=lambda w: w.name)))


# ---------------------------------------------------------------------------------------------------------
# Session plumbing


def _tx(engine: AsyncEngine, *, duplicate: str | None = None) -> AbstractAsyncContextManager[AsyncSession]:
    """One transaction; a unique-constraint violation becomes a 409 with ``duplicate`` as the message."""
    if duplicate is None:
        return transaction(begin_session(engine))
    message = duplicate
    return transaction(begin_session(engine), conflict=lambda _e: Conflict(message))


async def _member_row(session: AsyncSession, member: MemberId) -> m.Member:
    row = await session.scalar(
        sa.select(m.Member).where(
            m.Member.instance == member.instance,
            m.Member.member_class == member.member_class,
            m.Member.member_code == member.member_code,
        )
    )
    if row is None:
        raise NotFound(f"member {member} is not registered", hint="add it with `gateway central member add`")
    return row


async def _subsystem_row(session: AsyncSession, subsystem: SubsystemId) -> tuple[m.Member, m.Subsystem]:
    member = await _member_row(session, subsystem.member)
    row = await session.scalar(
        sa.select(m.Subsystem).where(
            m.Subsystem.member_id == member.id, m.Subsystem.subsystem_code == subsystem.subsystem_code
        )
    )
    if row is None:
        raise NotFound(f"subsystem {subsystem} is not registered")
    return member, row


async def _client_rows(session: AsyncSession, client: ClientId) -> tuple[int, int | None]:
    if isinstance(client, SubsystemId):
        member, sub = await _subsystem_row(session, client)
        return member.id, sub.id
    return (await _member_row(session, client)).id, None


async def _server_row(session: AsyncSession, server: SecurityServerId) -> m.SecurityServer:
    owner = await _member_row(session, server.owner)
    row = await session.scalar(
        sa.select(m.SecurityServer).where(
            m.SecurityServer.owner_id == owner.id, m.SecurityServer.server_code == server.server_code
        )
    )
    if row is None:
        raise NotFound(f"security server {server} is not registered")
    return row


async def _group_row(session: AsyncSession, group: GlobalGroupId) -> m.GlobalGroup:
    row = await session.scalar(
        sa.select(m.GlobalGroup).where(
            m.GlobalGroup.instance == group.instance, m.GlobalGroup.group_code == group.group_code
        )
    )
    if row is None:
        raise NotFound(f"global group {group} is not registered")
    return row


async def _exists(session: AsyncSession, stmt: sa.Select[Any]) -> bool:
    return (await session.scalar(sa.select(stmt.exists()))) is True


# ---------------------------------------------------------------------------------------------------------
# Members and subsystems


async def add_member(engine: AsyncEngine, member: MemberId | str, *, name: str, instance: str) -> MemberId:
    """Register a member.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: a bad name; 409 if the member is already registered.
    """
    ident = _ident(MemberId, member, instance)
    check_text(name, what="member name", max_length=MAX_NAME_LENGTH)
    message = f"member {ident} is already registered"
    async with _tx(engine, duplicate=message) as s:
        exists = await _exists(
            s,
            sa.select(m.Member.id).where(
                m.Member.instance == ident.instance,
                m.Member.member_class == ident.member_class,
                m.Member.member_code == ident.member_code,
            ),
        )
        if exists:
            raise Conflict(message)
        s.add(m.Member(
            instance=ident.instance, member_class=ident.member_class, member_code=ident.member_code, name=name
        ))
    return ident


async def set_member_name(engine: AsyncEngine, member: MemberId | str, *, name: str, instance: str) -> None:
    """Change a member's name.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: a bad name; 404 if the member is not registered.
    """
    ident = _ident(MemberId, member, instance)
    check_text(name, what="member name", max_length=MAX_NAME_LENGTH)
    async with _tx(engine) as s:
        (await _member_row(s, ident)).name = name


async def remove_member(engine: AsyncEngine, member: MemberId | str, *, instance: str) -> None:
    """Remove a member with its subsystems, servers (and their witness policies) and every client and group
    entry naming it.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: 404 if the member is not registered; 409 if one of its servers runs a witness that
            another server's witness policy names.
    """
    ident = _ident(MemberId, member, instance)
    async with _tx(engine, duplicate=f"a server of member {ident} was named by a witness policy while it was "
                                     "being removed; try again") as s:
        row = await _member_row(s, ident)
        servers = await s.scalars(sa.select(m.SecurityServer.id).where(m.SecurityServer.owner_id == row.id))
        await _refuse_hosted_witnesses(s, list(servers), f"member {ident}")
        await s.delete(row)


async def add_subsystem(engine: AsyncEngine, subsystem: SubsystemId | str, *, instance: str) -> SubsystemId:
    """Register a subsystem of a registered member.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: 404 if the member is not registered; 409 if the subsystem is.
    """
    ident = _ident(SubsystemId, subsystem, instance)
    message = f"subsystem {ident} is already registered"
    async with _tx(engine, duplicate=message) as s:
        owner = await _member_row(s, ident.member)
        exists = await _exists(
            s,
            sa.select(m.Subsystem.id).where(
                m.Subsystem.member_id == owner.id, m.Subsystem.subsystem_code == ident.subsystem_code
            ),
        )
        if exists:
            raise Conflict(message)
        s.add(m.Subsystem(member_id=owner.id, subsystem_code=ident.subsystem_code))
    return ident


async def remove_subsystem(engine: AsyncEngine, subsystem: SubsystemId | str, *, instance: str) -> None:
    """Remove a subsystem and every client and group entry naming it.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: 404 if the subsystem is not registered.
    """
    ident = _ident(SubsystemId, subsystem, instance)
    async with _tx(engine) as s:
        _, row = await _subsystem_row(s, ident)
        await s.delete(row)


async def _list_members(s: AsyncSession) -> tuple[MemberRecord, ...]:
    subs: dict[int, list[str]] = {}
    rows = await s.execute(sa.select(m.Subsystem.member_id, m.Subsystem.subsystem_code))
    for member_id, code in rows.all():
        subs.setdefault(member_id, []).append(code)
    records = [
        MemberRecord(
            id=MemberId(instance=row.instance, member_class=row.member_class, member_code=row.member_code),
            name=row.name,
            subsystems=tuple(sorted(subs.get(row.id, []))),
        )
        for row in await s.scalars(sa.select(m.Member))
    ]
    return tuple(sorted(records, key=lambda r: str(r.id)))


async def list_members(engine: AsyncEngine) -> tuple[MemberRecord, ...]:
    """All members with their subsystem codes, sorted by identifier."""
    async with _tx(engine) as s:
        return await _list_members(s)


# ---------------------------------------------------------------------------------------------------------
# Security servers, authentication certificates and clients


async def add_server(
    engine: AsyncEngine, server: SecurityServerId | str, *, address: str, instance: str
) -> SecurityServerId:
    """Register a security server of a registered member, with its server-to-server address.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: a bad address; 404 if the owner is not registered; 409 if the server is.
    """
    ident = _ident(SecurityServerId, server, instance)
    check_address(address)
    message = f"security server {ident} is already registered"
    async with _tx(engine, duplicate=message) as s:
        owner = await _member_row(s, ident.owner)
        exists = await _exists(
            s,
            sa.select(m.SecurityServer.id).where(
                m.SecurityServer.owner_id == owner.id, m.SecurityServer.server_code == ident.server_code
            ),
        )
        if exists:
            raise Conflict(message)
        s.add(m.SecurityServer(owner_id=owner.id, server_code=ident.server_code, address=address))
    return ident


async def set_server_address(
    engine: AsyncEngine, server: SecurityServerId | str, *, address: str, instance: str
) -> None:
    """Change a security server's address.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: a bad address; 404 if the server is not registered.
    """
    ident = _ident(SecurityServerId, server, instance)
    check_address(address)
    async with _tx(engine) as s:
        (await _server_row(s, ident)).address = address


async def remove_server(engine: AsyncEngine, server: SecurityServerId | str, *, instance: str) -> None:
    """Remove a security server with its authentication certificates, clients and witness policy.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: 404 if the server is not registered; 409 if it runs a witness that another server's
            witness policy names.
    """
    ident = _ident(SecurityServerId, server, instance)
    async with _tx(engine, duplicate=f"security server {ident} was named by a witness policy while it was being "
                                     "removed; try again") as s:
        row = await _server_row(s, ident)
        await _refuse_hosted_witnesses(s, [row.id], f"security server {ident}")
        await s.delete(row)


async def add_auth_cert(
    engine: AsyncEngine, server: SecurityServerId | str, certificate: bytes | str, *, instance: str
) -> str:
    """Register an authentication certificate (PEM or DER) for a server; returns its SHA-256 fingerprint.

    Registration is what binds a certificate to a server (docs/architecture.md section 3): a fingerprint belongs to
    at most one server.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: not a certificate; 404 if the server is not registered; 409 if the fingerprint is
            registered already (for this or another server).
    """
    ident = _ident(SecurityServerId, server, instance)
    cert = parse_certificate(certificate, what="authentication certificate")
    fingerprint = cert_sha256_hex(cert)
    message = f"authentication certificate {fingerprint} is already registered"
    async with _tx(engine, duplicate=message) as s:
        row = await _server_row(s, ident)
        exists = await _exists(s, sa.select(m.AuthCert.id).where(m.AuthCert.sha256 == fingerprint))
        if exists:
            raise Conflict(message)
        s.add(m.AuthCert(server_id=row.id, sha256=fingerprint, certificate_pem=cert_pem(cert)))
    return fingerprint


async def remove_auth_cert(
    engine: AsyncEngine, server: SecurityServerId | str, fingerprint: str, *, instance: str
) -> None:
    """Remove an authentication certificate (by hex SHA-256 fingerprint) from a server.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: 404 if the server or the certificate is not registered.
    """
    ident = _ident(SecurityServerId, server, instance)
    fingerprint = fingerprint.lower()
    async with _tx(engine) as s:
        row = await _server_row(s, ident)
        cert = await s.scalar(
            sa.select(m.AuthCert).where(m.AuthCert.server_id == row.id, m.AuthCert.sha256 == fingerprint)
        )
        if cert is None:
            raise NotFound(f"authentication certificate {fingerprint} is not registered for {ident}")
        await s.delete(cert)


async def add_server_client(
    engine: AsyncEngine, server: SecurityServerId | str, client: ClientId | str, *, instance: str
) -> ClientId:
    """Register a member or subsystem as a client of a security server (any registered member may be).

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: 404 if the server or the client is not registered; 409 if it is a client already.
    """
    server_id = _ident(SecurityServerId, server, instance)
    client_id = _client(client, instance)
    message = f"{client_id.kind} {client_id} is already a client of security server {server_id}"
    async with _tx(engine, duplicate=message) as s:
        row = await _server_row(s, server_id)
        member_pk, subsystem_pk = await _client_rows(s, client_id)
        exists = await _exists(
            s,
            sa.select(m.ServerClient.id).where(
                m.ServerClient.server_id == row.id, m.ServerClient.client == str(client_id)
            ),
        )
        if exists:
            raise Conflict(message)
        s.add(m.ServerClient(
            server_id=row.id, member_id=member_pk, subsystem_id=subsystem_pk, client=str(client_id)
        ))
    return client_id


async def remove_server_client(
    engine: AsyncEngine, server: SecurityServerId | str, client: ClientId | str, *, instance: str
) -> None:
    """Remove a client from a security server.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: 404 if the server is not registered or the client is not one of its clients.
    """
    server_id = _ident(SecurityServerId, server, instance)
    client_id = _client(client, instance)
    async with _tx(engine) as s:
        row = await _server_row(s, server_id)
        entry = await s.scalar(
            sa.select(m.ServerClient).where(
                m.ServerClient.server_id == row.id, m.ServerClient.client == str(client_id)
            )
        )
        if entry is None:
            raise NotFound(f"{client_id.kind} {client_id} is not a client of security server {server_id}")
        await s.delete(entry)


async def _list_servers(s: AsyncSession) -> tuple[ServerRecord, ...]:
    certs: dict[int, list[str]] = {}
    for server_pk, sha in (await s.execute(sa.select(m.AuthCert.server_id, m.AuthCert.sha256))).all():
        certs.setdefault(server_pk, []).append(sha)
    clients: dict[int, list[ClientId]] = {}
    client_rows = await s.execute(sa.select(m.ServerClient.server_id, m.ServerClient.client))
    for server_pk, text in client_rows.all():
        clients.setdefault(server_pk, []).append(parse_client(text, encoded=False))
    rows = await s.execute(
        sa.select(m.SecurityServer, m.Member).join(m.Member, m.Member.id == m.SecurityServer.owner_id)
    )
    records = [
        ServerRecord(
            id=SecurityServerId(
                instance=owner.instance, member_class=owner.member_class, member_code=owner.member_code,
                server_code=server.server_code,
            ),
            address=server.address,
            auth_certs=tuple(sorted(certs.get(server.id, []))),
            clients=tuple(sorted(clients.get(server.id, []), key=str)),
        )
        for server, owner in rows.all()
    ]
    return tuple(sorted(records, key=lambda r: str(r.id)))


async def list_servers(engine: AsyncEngine) -> tuple[ServerRecord, ...]:
    """All security servers with their certificate fingerprints and clients, sorted by identifier."""
    async with _tx(engine) as s:
        return await _list_servers(s)


# ---------------------------------------------------------------------------------------------------------
# Global groups


async def add_group(
    engine: AsyncEngine, group: GlobalGroupId | str, *, description: str, instance: str
) -> GlobalGroupId:
    """Register a global group.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: a bad description; 409 if the group is already registered.
    """
    ident = _ident(GlobalGroupId, group, instance)
    check_text(description, what="group description", max_length=MAX_NAME_LENGTH)
    message = f"global group {ident} is already registered"
    async with _tx(engine, duplicate=message) as s:
        exists = await _exists(
            s,
            sa.select(m.GlobalGroup.id).where(
                m.GlobalGroup.instance == ident.instance, m.GlobalGroup.group_code == ident.group_code
            ),
        )
        if exists:
            raise Conflict(message)
        s.add(m.GlobalGroup(instance=ident.instance, group_code=ident.group_code, description=description))
    return ident


async def remove_group(engine: AsyncEngine, group: GlobalGroupId | str, *, instance: str) -> None:
    """Remove a global group and its membership list.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: 404 if the group is not registered.
    """
    ident = _ident(GlobalGroupId, group, instance)
    async with _tx(engine) as s:
        await s.delete(await _group_row(s, ident))


async def add_group_member(
    engine: AsyncEngine, group: GlobalGroupId | str, client: ClientId | str, *, instance: str
) -> ClientId:
    """Add a registered member or subsystem to a global group.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: 404 if the group or the client is not registered; 409 if it is a member already.
    """
    group_id = _ident(GlobalGroupId, group, instance)
    client_id = _client(client, instance)
    message = f"{client_id.kind} {client_id} is already a member of global group {group_id}"
    async with _tx(engine, duplicate=message) as s:
        row = await _group_row(s, group_id)
        member_pk, subsystem_pk = await _client_rows(s, client_id)
        exists = await _exists(
            s,
            sa.select(m.GlobalGroupMember.id).where(
                m.GlobalGroupMember.group_id == row.id, m.GlobalGroupMember.client == str(client_id)
            ),
        )
        if exists:
            raise Conflict(message)
        s.add(m.GlobalGroupMember(
            group_id=row.id, member_id=member_pk, subsystem_id=subsystem_pk, client=str(client_id)
        ))
    return client_id


async def remove_group_member(
    engine: AsyncEngine, group: GlobalGroupId | str, client: ClientId | str, *, instance: str
) -> None:
    """Remove a member or subsystem from a global group.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: 404 if the group is not registered or the client is not in it.
    """
    group_id = _ident(GlobalGroupId, group, instance)
    client_id = _client(client, instance)
    async with _tx(engine) as s:
        row = await _group_row(s, group_id)
        entry = await s.scalar(
            sa.select(m.GlobalGroupMember).where(
                m.GlobalGroupMember.group_id == row.id, m.GlobalGroupMember.client == str(client_id)
            )
        )
        if entry is None:
            raise NotFound(f"{client_id.kind} {client_id} is not a member of global group {group_id}")
        await s.delete(entry)


async def _list_groups(s: AsyncSession) -> tuple[GroupRecord, ...]:
    members: dict[int, list[ClientId]] = {}
    rows = await s.execute(sa.select(m.GlobalGroupMember.group_id, m.GlobalGroupMember.client))
    for group_pk, text in rows.all():
        members.setdefault(group_pk, []).append(parse_client(text, encoded=False))
    records = [
        GroupRecord(
            id=GlobalGroupId(instance=row.instance, group_code=row.group_code),
            description=row.description,
            members=tuple(sorted(members.get(row.id, []), key=str)),
        )
        for row in await s.scalars(sa.select(m.GlobalGroup))
    ]
    return tuple(sorted(records, key=lambda r: str(r.id)))


async def list_groups(engine: AsyncEngine) -> tuple[GroupRecord, ...]:
    """All global groups with their members, sorted by identifier."""
    async with _tx(engine) as s:
        return await _list_groups(s)


# ---------------------------------------------------------------------------------------------------------
# Trusted certification authorities and timestamping authorities


async def add_ca(
    engine: AsyncEngine, *, name: str, certificate: bytes | str, ocsp_urls: Sequence[str] = ()
) -> CaRecord:
    """Trust a certification authority (its CA certificate) with its OCSP responder URLs.

    Raises:
        RequestError: a bad name, URL or certificate (not a CA certificate); 409 if the name is taken.
    """
    check_text(name, what="CA name", max_length=MAX_AUTHORITY_NAME_LENGTH)
    cert = parse_certificate(certificate, what=f"certificate of CA {name!r}")
    _check_ca_certificate(cert, what=f"certificate of CA {name!r}")
    urls = tuple(check_url(u, what="OCSP URL") for u in ocsp_urls)
    if len(set(urls)) != len(urls):
        raise RequestError(f"CA {name!r}: an OCSP URL is listed twice")
    record = CaRecord(name=name, certificate_pem=cert_pem(cert), ocsp_urls=urls)
    message = f"certification authority {name!r} is already registered"
    async with _tx(engine, duplicate=message) as s:
        if await _exists(s, sa.select(m.TrustedCa.id).where(m.TrustedCa.name == name)):
            raise Conflict(message)
        s.add(m.TrustedCa(name=name, certificate_pem=record.certificate_pem, ocsp_urls=list(urls)))
    return record


async def remove_ca(engine: AsyncEngine, name: str) -> None:
    """Stop trusting a certification authority.

    Raises:
        RequestError: 404 if no CA has this name.
    """
    async with _tx(engine) as s:
        row = await s.scalar(sa.select(m.TrustedCa).where(m.TrustedCa.name == name))
        if row is None:
            raise NotFound(f"certification authority {name!r} is not registered")
        await s.delete(row)


async def _list_cas(s: AsyncSession) -> tuple[CaRecord, ...]:
    # sorted here, not by the database: collations differ between backends, the bytes must not
    rows = await s.scalars(sa.select(m.TrustedCa))
    return tuple(sorted(
        (
            CaRecord(name=r.name, certificate_pem=r.certificate_pem, ocsp_urls=tuple(r.ocsp_urls))
            for r in rows
        ),
        key=lambda r: r.name,
    ))


async def list_cas(engine: AsyncEngine) -> tuple[CaRecord, ...]:
    """All trusted CAs, sorted by name."""
    async with _tx(engine) as s:
        return await _list_cas(s)


async def add_tsa(engine: AsyncEngine, *, name: str, url: str, certificate: bytes | str) -> TsaRecord:
    """Trust an RFC 3161 timestamping authority.

    Raises:
        RequestError: a bad name, URL or certificate; 409 if the name is taken.
    """
    check_text(name, what="TSA name", max_length=MAX_AUTHORITY_NAME_LENGTH)
    check_url(url, what="TSA URL")
    cert = parse_certificate(certificate, what=f"certificate of TSA {name!r}")
    record = TsaRecord(name=name, url=url, certificate_pem=cert_pem(cert))
    message = f"timestamping authority {name!r} is already registered"
    async with _tx(engine, duplicate=message) as s:
        if await _exists(s, sa.select(m.Tsa.id).where(m.Tsa.name == name)):
            raise Conflict(message)
        s.add(m.Tsa(name=name, url=url, certificate_pem=record.certificate_pem))
    return record


async def remove_tsa(engine: AsyncEngine, name: str) -> None:
    """Stop trusting a timestamping authority.

    Raises:
        RequestError: 404 if no TSA has this name.
    """
    async with _tx(engine) as s:
        row = await s.scalar(sa.select(m.Tsa).where(m.Tsa.name == name))
        if row is None:
            raise NotFound(f"timestamping authority {name!r} is not registered")
        await s.delete(row)


async def _list_tsas(s: AsyncSession) -> tuple[TsaRecord, ...]:
    # The order of preference is the order of registration (docs/globalconf.md: TSAs are not sorted).
    rows = await s.scalars(sa.select(m.Tsa).order_by(m.Tsa.id))
    return tuple(TsaRecord(name=r.name, url=r.url, certificate_pem=r.certificate_pem) for r in rows)


async def list_tsas(engine: AsyncEngine) -> tuple[TsaRecord, ...]:
    """All trusted TSAs in order of preference (the order in which they were registered)."""
    async with _tx(engine) as s:
        return await _list_tsas(s)


# ---------------------------------------------------------------------------------------------------------
# Witness policies (docs/witness.md section 3)


def _server_id(owner: m.Member, server: m.SecurityServer) -> SecurityServerId:
    return SecurityServerId(instance=owner.instance, member_class=owner.member_class,
                            member_code=owner.member_code, server_code=server.server_code)


async def _server_ids(s: AsyncSession) -> dict[int, SecurityServerId]:
    rows = await s.execute(
        sa.select(m.SecurityServer, m.Member).join(m.Member, m.Member.id == m.SecurityServer.owner_id)
    )
    return {server.id: _server_id(owner, server) for server, owner in rows.all()}


async def _refuse_hosted_witnesses(s: AsyncSession, server_pks: Sequence[int], what: str) -> None:
    """Refuse to remove servers that run a witness another server's policy names (409 naming them)."""
    if not server_pks:
        return
    rows = (await s.execute(
        sa.select(m.PolicyWitness.name, m.PolicyWitness.server_id, m.WitnessPolicy.server_id)
        .join(m.WitnessPolicy, m.WitnessPolicy.id == m.PolicyWitness.policy_id)
        .where(m.PolicyWitness.server_id.in_(list(server_pks)))
    )).all()
    if not rows:
        return
    ids = await _server_ids(s)
    named = sorted({f"witness {name} (on {ids[host]}) of the witness policy of {ids[logger]}"
                    for name, host, logger in rows})
    raise Conflict(f"{what} cannot be removed: it runs a witness that a witness policy names: {'; '.join(named)}",
                   hint="change or remove those policies first (`gateway central witness-policy`)")


async def _list_witness_policies(s: AsyncSession) -> tuple[WitnessPolicy, ...]:
    ids = await _server_ids(s)
    witnesses: dict[int, list[Witness]] = {}
    for w in await s.scalars(sa.select(m.PolicyWitness)):
        witnesses.setdefault(w.policy_id, []).append(
            Witness(key=parse_vkey(w.vkey), url=w.url, server=ids[w.server_id]))
    policies = [
        WitnessPolicy(server=ids[p.server_id], quorum=p.quorum,
                      witnesses=tuple(sorted(witnesses.get(p.id, []), key=lambda w: w.name)))
        for p in await s.scalars(sa.select(m.WitnessPolicy))
    ]
    return tuple(sorted(policies, key=lambda p: str(p.server)))


async def list_witness_policies(engine: AsyncEngine) -> tuple[WitnessPolicy, ...]:
    """All witness policies, sorted by logging server, each with its witnesses sorted by name."""
    async with _tx(engine) as s:
        return await _list_witness_policies(s)


async def get_witness_policy(engine: AsyncEngine, server: SecurityServerId | str, *, instance: str) -> WitnessPolicy:
    """The witness policy of ``server``.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: 404 if the server is not registered or has no witness policy.
    """
    ident = _ident(SecurityServerId, server, instance)
    async with _tx(engine) as s:
        await _server_row(s, ident)
        for policy in await _list_witness_policies(s):
            if policy.server == ident:
                return policy
    raise NotFound(f"security server {ident} has no witness policy",
                   hint="set one with `gateway central witness-policy set`")


async def _check_same_witnesses(s: AsyncSession, policy: WitnessPolicy, logger_pk: int) -> None:
    """Refuse (409) a witness that other policies know differently: across all policies one key has one name
    and runs on one server. (A name may stand for another key in another policy: a witness whose key was
    rotated is updated one policy at a time.)"""
    ids = await _server_ids(s)
    rows = (await s.execute(
        sa.select(m.PolicyWitness.name, m.PolicyWitness.vkey, m.PolicyWitness.server_id, m.WitnessPolicy.server_id)
        .join(m.WitnessPolicy, m.WitnessPolicy.id == m.PolicyWitness.policy_id)
        .where(m.WitnessPolicy.server_id != logger_pk)
    )).all()
    for w in policy.witnesses:
        for name, vkey, host_pk, other_pk in rows:
            other = f"the witness policy of {ids[other_pk]}"
            if name != w.name and parse_vkey(vkey).public_key == w.key.public_key:
                raise Conflict(f"witness {w.name}: {other} names this key as {name!r}")
            if vkey == w.vkey and ids[host_pk] != w.server:
                raise Conflict(f"witness {w.name}: {other} says it runs on {ids[host_pk]}, not {w.server}")


async def _default_urls(engine: AsyncEngine, witnesses: Sequence[WitnessSpec], instance: str) -> list[WitnessSpec]:
    """``witnesses`` with each empty URL replaced by ``https://<the hosting server's address>/witness``."""
    out: list[WitnessSpec] = []
    async with _tx(engine) as s:
        for i, w in enumerate(witnesses, 1):
            if w.url:
                out.append(w)
                continue
            host = _ident(SecurityServerId, w.server, instance)
            try:
                address = (await _server_row(s, host)).address
            except NotFound as e:
                raise NotFound(f"witness {i}: {e.message}") from e
            out.append(WitnessSpec(vkey=w.vkey, url=f"https://{address}{WITNESS_PREFIX}", server=host))
    return out


async def set_witness_policy(
    engine: AsyncEngine, server: SecurityServerId | str, *, quorum: int, witnesses: Sequence[WitnessSpec],
    instance: str,
) -> WitnessPolicy:
    """Set (create or replace) the witness policy of ``server``: published from the next publication on. A
    witness without a URL gets the default, ``https://<its server's registered address>/witness``.

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: 400 as :func:`check_witness_policy`; 404 if ``server`` or a witness's server is not
            registered; 409 if another server's policy knows one of the witnesses' keys differently (under
            another name, or on another server).
    """
    if any(not w.url for w in witnesses):
        witnesses = await _default_urls(engine, witnesses, instance)
    policy = check_witness_policy(server, quorum=quorum, witnesses=witnesses, instance=instance)
    async with _tx(engine, duplicate=f"the witness policy of {policy.server} was set at the same time") as s:
        logger = await _server_row(s, policy.server)
        hosts: dict[SecurityServerId, int] = {}
        for w in policy.witnesses:
            if w.server not in hosts:
                try:
                    hosts[w.server] = (await _server_row(s, w.server)).id
                except NotFound as e:
                    raise NotFound(f"witness {w.name}: {e.message}") from e
        await _check_same_witnesses(s, policy, logger.id)
        await s.execute(sa.delete(m.WitnessPolicy).where(m.WitnessPolicy.server_id == logger.id))
        row = m.WitnessPolicy(server_id=logger.id, quorum=policy.quorum)
        s.add(row)
        await s.flush()
        for w in policy.witnesses:
            s.add(m.PolicyWitness(policy_id=row.id, name=w.name, vkey=w.vkey, url=w.url, server_id=hosts[w.server]))
    return policy


async def remove_witness_policy(engine: AsyncEngine, server: SecurityServerId | str, *, instance: str) -> None:
    """Remove the witness policy of ``server`` (its logs are no longer witnessed from the next publication on).

    Raises:
        IdentifierError: a malformed identifier or one of another instance.
        RequestError: 404 if the server is not registered or has no witness policy.
    """
    ident = _ident(SecurityServerId, server, instance)
    async with _tx(engine) as s:
        row = await _server_row(s, ident)
        policy = await s.scalar(sa.select(m.WitnessPolicy).where(m.WitnessPolicy.server_id == row.id))
        if policy is None:
            raise NotFound(f"security server {ident} has no witness policy")
        await s.delete(policy)


async def snapshot(engine: AsyncEngine) -> RegistrySnapshot:
    """Read the whole registry in one transaction (a consistent view for one publication)."""
    async with _tx(engine) as s:
        if (await s.connection()).dialect.name == "postgresql":
            await s.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        return RegistrySnapshot(
            members=await _list_members(s),
            servers=await _list_servers(s),
            groups=await _list_groups(s),
            cas=await _list_cas(s),
            tsas=await _list_tsas(s),
            transparency=await _transparency(s),
            witness_policies=await _list_witness_policies(s),
        )


async def _transparency(s: AsyncSession) -> dict[str, Any] | None:
    row = await s.get(m.TransparencyParams, 1)
    if row is None:
        return None
    return {"purposes": dict(row.purposes), "portal": row.portal, "embargo_clients": list(row.embargo_clients)}


async def get_transparency(engine: AsyncEngine) -> dict[str, Any] | None:
    """The transparency parameters set in the registry (None: the settings' are published)."""
    async with _tx(engine) as s:
        return await _transparency(s)


async def set_transparency(
    engine: AsyncEngine, *, purposes: dict[str, str], portal: str, embargo_clients: list[str], instance: str,
) -> dict[str, Any]:
    """Set the published transparency parameters (docs/transparency.md section 1); published from the next
    publication on.

    Raises:
        RequestError: a malformed purpose code or subsystem id, or one of another instance.
    """
    doc = check_conf(purposes, portal, embargo_clients)
    for text in [*([doc["portal"]] if doc["portal"] else []), *doc["embargo_clients"]]:
        _ident(SubsystemId, text, instance)
    async with _tx(engine) as s:
        row = await s.get(m.TransparencyParams, 1)
        if row is None:
            s.add(m.TransparencyParams(id=1, purposes=doc["purposes"], portal=doc["portal"],
                                       embargo_clients=doc["embargo_clients"]))
        else:
            row.purposes, row.portal, row.embargo_clients = doc["purposes"], doc["portal"], doc["embargo_clients"]
    return doc
