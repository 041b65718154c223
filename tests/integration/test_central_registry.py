"""Central server registry on SQLite and PostgreSQL: operations, listings, cascades and refusals."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from pkihelpers import ThrowawayPki, make_pki
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.central import migrate_central
from gateway.central import registry as reg
from gateway.errors import Conflict, IdentifierError, NotFound, RequestError
from gateway.identifiers import GlobalGroupId, MemberId, SecurityServerId, SubsystemId, parse_client
from gateway.storage.db import make_engine
from gateway.trust.keys import cert_sha256_hex, load_certificate

pytestmark = pytest.mark.integration

I = "DEV"  # noqa: E741 - the instance of every test
PG_DSN = os.environ.get("GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")  # as conftest


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayPki:
    return make_pki(tmp_path_factory.mktemp("pki"), ocsp_url="http://127.0.0.1:8888")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(database_url)
    await migrate_central(eng)
    yield eng
    await eng.dispose()


async def _populate(engine: AsyncEngine, pki: ThrowawayPki, auth_pem: str) -> None:
    """A small registry: member 1001 (subsystem consumer, server ss1 with an auth cert and a client), member
    1002 (server ss2), group DEV/owners with 1001, CA "Test CA", TSA "Test TSA"."""
    await reg.add_member(engine, "DEV/GOV/1001", name="Agency A", instance=I)
    await reg.add_member(engine, "DEV/GOV/1002", name="Agency B", instance=I)
    await reg.add_subsystem(engine, "DEV/GOV/1001/consumer", instance=I)
    await reg.add_server(engine, "DEV/GOV/1001/ss1", address="127.0.0.1:5501", instance=I)
    await reg.add_server(engine, "DEV/GOV/1002/ss2", address="127.0.0.1:5502", instance=I)
    await reg.add_auth_cert(engine, "DEV/GOV/1001/ss1", auth_pem, instance=I)
    await reg.add_server_client(engine, "DEV/GOV/1001/ss1", "DEV/GOV/1001/consumer", instance=I)
    await reg.add_group(engine, "DEV/owners", description="Owners", instance=I)
    await reg.add_group_member(engine, "DEV/owners", "DEV/GOV/1001", instance=I)
    await reg.add_ca(engine, name="Test CA", certificate=pki.ca_cert_path.read_bytes(), ocsp_urls=["http://o/"])
    tsa = pki.tsa_cert_path.read_bytes()
    await reg.add_tsa(engine, name="Test TSA", url="http://127.0.0.1:8889", certificate=tsa)


@pytest.fixture
async def populated(engine: AsyncEngine, pki: ThrowawayPki) -> AsyncEngine:
    await _populate(engine, pki, pki.issue_auth("DEV/GOV/1001/ss1").cert_pem)
    return engine


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pki: ThrowawayPki
) -> Iterator[tuple[str, str]]:
    """One populated database per backend for the refusal table, which never changes it (each case checks
    that). Returns (URL, PEM of ss1's authentication certificate)."""
    auth_pem = pki.issue_auth("DEV/GOV/1001/ss1").cert_pem
    name = f"gw_test_{uuid.uuid4().hex[:16]}"
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('shared') / 'central.db'}"
    else:
        url = f"postgresql+asyncpg://{PG_DSN.split('://', 1)[1].rpartition('/')[0]}/{name}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def setup() -> None:
        if request.param == "postgresql":
            await admin(f'CREATE DATABASE "{name}"')
        eng = make_engine(url)
        try:
            await migrate_central(eng)
            await _populate(eng, pki, auth_pem)
        finally:
            await eng.dispose()

    asyncio.run(setup())
    yield url, auth_pem
    if request.param == "postgresql":
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def shared(shared_url: tuple[str, str]) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(shared_url[0])
    yield eng
    await eng.dispose()


async def test_registry_operations_and_listings(engine: AsyncEngine, pki: ThrowawayPki) -> None:
    auth = pki.issue_auth("DEV/GOV/1001/ss1")
    other_auth = pki.issue_auth("DEV/GOV/1001/ss1")
    added = await reg.add_member(engine, "DEV/GOV/1001", name="Agency A", instance=I)
    assert added == MemberId.parse("DEV/GOV/1001")
    await reg.add_member(engine, MemberId.parse("DEV/COM/2002"), name="Company B", instance=I)
    await reg.add_subsystem(engine, "DEV/GOV/1001/provider", instance=I)
    await reg.add_subsystem(engine, "DEV/GOV/1001/consumer", instance=I)
    await reg.add_server(engine, "DEV/GOV/1001/ss1", address="ss1.example.org:5500", instance=I)
    await reg.add_server(engine, "DEV/COM/2002/ssb", address="[::1]:5500", instance=I)
    fp = await reg.add_auth_cert(engine, "DEV/GOV/1001/ss1", auth.cert_pem, instance=I)
    der = other_auth.cert.public_bytes(serialization.Encoding.DER)  # DER is accepted too
    fp2 = await reg.add_auth_cert(engine, "DEV/GOV/1001/ss1", der, instance=I)
    assert fp == auth.sha256 and fp2 == other_auth.sha256
    await reg.add_server_client(engine, "DEV/GOV/1001/ss1", "DEV/GOV/1001/provider", instance=I)
    await reg.add_server_client(engine, "DEV/GOV/1001/ss1", "DEV/COM/2002", instance=I)
    await reg.add_group(engine, "DEV/owners", description="Owners of servers", instance=I)
    await reg.add_group_member(engine, "DEV/owners", "DEV/GOV/1001/consumer", instance=I)
    await reg.add_group_member(engine, "DEV/owners", "DEV/COM/2002", instance=I)
    ca = await reg.add_ca(
        engine, name="Test CA", certificate=pki.ca_cert_path.read_bytes(),
        ocsp_urls=["http://127.0.0.1:8888", "http://backup.example.org/ocsp"],
    )
    tsa = pki.tsa_cert_path.read_bytes()
    await reg.add_tsa(engine, name="Z TSA", url="http://127.0.0.1:8889", certificate=tsa)
    await reg.add_tsa(engine, name="A TSA", url="https://tsa.example.org/", certificate=tsa)
    await reg.set_member_name(engine, "DEV/COM/2002", name="Company B Ltd", instance=I)
    await reg.set_server_address(engine, "DEV/COM/2002/ssb", address="10.0.0.2:5500", instance=I)

    assert await reg.list_members(engine) == (
        reg.MemberRecord(id=MemberId.parse("DEV/COM/2002"), name="Company B Ltd", subsystems=()),
        reg.MemberRecord(
            id=MemberId.parse("DEV/GOV/1001"), name="Agency A", subsystems=("consumer", "provider")
        ),
    )
    assert await reg.list_servers(engine) == (
        reg.ServerRecord(
            id=SecurityServerId.parse("DEV/COM/2002/ssb"), address="10.0.0.2:5500", auth_certs=(), clients=()
        ),
        reg.ServerRecord(
            id=SecurityServerId.parse("DEV/GOV/1001/ss1"), address="ss1.example.org:5500",
            auth_certs=tuple(sorted([fp, fp2])),
            clients=(parse_client("DEV/COM/2002"), SubsystemId.parse("DEV/GOV/1001/provider")),
        ),
    )
    assert await reg.list_groups(engine) == (
        reg.GroupRecord(
            id=GlobalGroupId.parse("DEV/owners"), description="Owners of servers",
            members=(MemberId.parse("DEV/COM/2002"), SubsystemId.parse("DEV/GOV/1001/consumer")),
        ),
    )
    assert await reg.list_cas(engine) == (ca,)
    assert ca.ocsp_urls == ("http://127.0.0.1:8888", "http://backup.example.org/ocsp")
    assert ca.certificate_pem == pki.ca_cert_path.read_text()
    # TSAs keep the order of registration: it is the order of preference
    assert [t.name for t in await reg.list_tsas(engine)] == ["Z TSA", "A TSA"]
    snap = await reg.snapshot(engine)
    assert snap.members == await reg.list_members(engine)
    assert snap.servers == await reg.list_servers(engine)
    assert [t.name for t in snap.tsas] == ["Z TSA", "A TSA"]


async def test_removals_cascade(populated: AsyncEngine) -> None:
    engine = populated
    await reg.add_server_client(engine, "DEV/GOV/1001/ss1", "DEV/GOV/1002", instance=I)
    await reg.add_group_member(engine, "DEV/owners", "DEV/GOV/1002", instance=I)
    await reg.add_group_member(engine, "DEV/owners", "DEV/GOV/1001/consumer", instance=I)

    # removing a subsystem removes it from servers and groups
    await reg.remove_subsystem(engine, "DEV/GOV/1001/consumer", instance=I)
    server, _ = await reg.list_servers(engine)
    assert server.clients == (MemberId.parse("DEV/GOV/1002"),)
    (group,) = await reg.list_groups(engine)
    assert group.members == (MemberId.parse("DEV/GOV/1001"), MemberId.parse("DEV/GOV/1002"))

    # removing a member removes its servers (with their certificates) and every entry naming it
    await reg.remove_member(engine, "DEV/GOV/1001", instance=I)
    assert [s.id for s in await reg.list_servers(engine)] == [SecurityServerId.parse("DEV/GOV/1002/ss2")]
    (group,) = await reg.list_groups(engine)
    assert group.members == (MemberId.parse("DEV/GOV/1002"),)
    assert [r.id for r in await reg.list_members(engine)] == [MemberId.parse("DEV/GOV/1002")]

    await reg.remove_group_member(engine, "DEV/owners", "DEV/GOV/1002", instance=I)
    await reg.remove_group(engine, "DEV/owners", instance=I)
    await reg.remove_ca(engine, "Test CA")
    await reg.remove_tsa(engine, "Test TSA")
    snap = await reg.snapshot(engine)
    assert (snap.groups, snap.cas, snap.tsas) == ((), (), ())


async def test_removing_certificates_clients_and_servers(populated: AsyncEngine) -> None:
    engine = populated
    server, _ = await reg.list_servers(engine)
    (fp,) = server.auth_certs
    await reg.remove_auth_cert(engine, "DEV/GOV/1001/ss1", fp.upper(), instance=I)  # any case
    await reg.remove_server_client(engine, "DEV/GOV/1001/ss1", "DEV/GOV/1001/consumer", instance=I)
    server, _ = await reg.list_servers(engine)
    assert server.id == SecurityServerId.parse("DEV/GOV/1001/ss1")
    assert (server.auth_certs, server.clients) == ((), ())
    await reg.remove_server(engine, "DEV/GOV/1001/ss1", instance=I)
    await reg.remove_server(engine, SecurityServerId.parse("DEV/GOV/1002/ss2"), instance=I)
    assert await reg.list_servers(engine) == ()


async def test_concurrent_duplicates_give_one_conflict(engine: AsyncEngine) -> None:
    results = await asyncio.gather(
        *(reg.add_member(engine, "DEV/GOV/3003", name=f"Agency {i}", instance=I) for i in range(4)),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 3
    for e in errors:
        assert isinstance(e, RequestError) and e.status == 409
        assert e.message == "member DEV/GOV/3003 is already registered"
    assert len(await reg.list_members(engine)) == 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Ctx:
    e: AsyncEngine  # the shared, populated database
    p: ThrowawayPki
    ss1_pem: str  # the authentication certificate registered for DEV/GOV/1001/ss1

    def new_auth(self) -> str:
        return self.p.issue_auth("DEV/GOV/1001/ss1").cert_pem

    def ca(self) -> bytes:
        return self.p.ca_cert_path.read_bytes()

    def tsa(self) -> bytes:
        return self.p.tsa_cert_path.read_bytes()


Op = Callable[[Ctx], Awaitable[object]]
SS1, SS2, SS9 = "DEV/GOV/1001/ss1", "DEV/GOV/1002/ss2", "DEV/GOV/1001/ss9"

ERRORS: list[tuple[str, Op, type[RequestError], int, str]] = [
    # members and subsystems
    ("duplicate member", lambda c: reg.add_member(c.e, "DEV/GOV/1001", name="X", instance=I),
     Conflict, 409, "member DEV/GOV/1001 is already registered"),
    ("member of another instance", lambda c: reg.add_member(c.e, "EE/GOV/1001", name="X", instance=I),
     IdentifierError, 400,
     "member EE/GOV/1001 belongs to instance 'EE'; this central server serves instance 'DEV'"),
    ("member with two parts", lambda c: reg.add_member(c.e, "DEV/GOV", name="X", instance=I),
     IdentifierError, 400,
     "member identifier 'DEV/GOV' has 2 parts; expected 3 (INSTANCE/MEMBER_CLASS/MEMBER_CODE)"),
    ("member with a forbidden character",
     lambda c: reg.add_member(c.e, "DEV/GOV/10;01", name="X", instance=I),
     IdentifierError, 400, "member identifier part member_code '10;01' contains a forbidden character ';'"),
    ("subsystem id given as member", lambda c: reg.add_member(c.e, "DEV/GOV/1001/x", name="X", instance=I),
     IdentifierError, 400,
     "member identifier 'DEV/GOV/1001/x' has 4 parts; expected 3 (INSTANCE/MEMBER_CLASS/MEMBER_CODE)"),
    ("blank member name", lambda c: reg.add_member(c.e, "DEV/GOV/1003", name="  ", instance=I),
     RequestError, 400, "member name is empty"),
    ("member name with a control character",
     lambda c: reg.add_member(c.e, "DEV/GOV/1003", name="A\nB", instance=I),
     RequestError, 400, "member name 'A\\nB' contains control characters"),
    ("member name too long", lambda c: reg.add_member(c.e, "DEV/GOV/1003", name="x" * 1025, instance=I),
     RequestError, 400, "member name is 1025 characters long; at most 1024 are allowed"),
    ("rename unknown member", lambda c: reg.set_member_name(c.e, "DEV/GOV/9999", name="X", instance=I),
     NotFound, 404, "member DEV/GOV/9999 is not registered"),
    ("remove unknown member", lambda c: reg.remove_member(c.e, "DEV/GOV/9999", instance=I),
     NotFound, 404, "member DEV/GOV/9999 is not registered"),
    ("subsystem of unknown member", lambda c: reg.add_subsystem(c.e, "DEV/GOV/9999/x", instance=I),
     NotFound, 404, "member DEV/GOV/9999 is not registered"),
    ("duplicate subsystem", lambda c: reg.add_subsystem(c.e, "DEV/GOV/1001/consumer", instance=I),
     Conflict, 409, "subsystem DEV/GOV/1001/consumer is already registered"),
    ("remove unknown subsystem", lambda c: reg.remove_subsystem(c.e, "DEV/GOV/1001/nope", instance=I),
     NotFound, 404, "subsystem DEV/GOV/1001/nope is not registered"),
    # servers
    ("server of unknown owner", lambda c: reg.add_server(c.e, "DEV/GOV/9999/ss", address="h:1", instance=I),
     NotFound, 404, "member DEV/GOV/9999 is not registered"),
    ("duplicate server", lambda c: reg.add_server(c.e, SS1, address="h:1", instance=I),
     Conflict, 409, "security server DEV/GOV/1001/ss1 is already registered"),
    ("address without port", lambda c: reg.add_server(c.e, SS9, address="host", instance=I),
     RequestError, 400, "address 'host' must be HOST:PORT"),
    ("address with port 0", lambda c: reg.add_server(c.e, SS9, address="host:0", instance=I),
     RequestError, 400, "address 'host:0': port '0' is not a number from 1 to 65535"),
    ("address with port 70000", lambda c: reg.add_server(c.e, SS9, address="h:70000", instance=I),
     RequestError, 400, "address 'h:70000': port '70000' is not a number from 1 to 65535"),
    ("address with a space", lambda c: reg.add_server(c.e, SS9, address="a b:1", instance=I),
     RequestError, 400, "address 'a b:1': 'a b' is not a host name or IPv4 address"),
    ("bare IPv6 address", lambda c: reg.add_server(c.e, SS9, address="::1:5500", instance=I),
     RequestError, 400, "address '::1:5500': '::1' is not a host name or IPv4 address"),
    ("bad IPv6 address", lambda c: reg.add_server(c.e, SS9, address="[::g]:5500", instance=I),
     RequestError, 400, "address '[::g]:5500': [::g] is not an IPv6 address"),
    ("move unknown server", lambda c: reg.set_server_address(c.e, SS9, address="h:1", instance=I),
     NotFound, 404, "security server DEV/GOV/1001/ss9 is not registered"),
    ("remove unknown server", lambda c: reg.remove_server(c.e, "DEV/GOV/1002/ss1", instance=I),
     NotFound, 404, "security server DEV/GOV/1002/ss1 is not registered"),
    # authentication certificates
    ("certificate for unknown server", lambda c: reg.add_auth_cert(c.e, SS9, c.new_auth(), instance=I),
     NotFound, 404, "security server DEV/GOV/1001/ss9 is not registered"),
    ("same certificate again", lambda c: reg.add_auth_cert(c.e, SS1, c.ss1_pem, instance=I),
     Conflict, 409, "authentication certificate {ss1} is already registered"),
    ("same certificate for another server", lambda c: reg.add_auth_cert(c.e, SS2, c.ss1_pem, instance=I),
     Conflict, 409, "authentication certificate {ss1} is already registered"),
    ("garbage instead of a certificate", lambda c: reg.add_auth_cert(c.e, SS1, b"hello", instance=I),
     RequestError, 400, "authentication certificate: not a valid X.509 certificate: ..."),
    ("remove unknown certificate", lambda c: reg.remove_auth_cert(c.e, SS1, "ab" * 32, instance=I),
     NotFound, 404, f"authentication certificate {'ab' * 32} is not registered for DEV/GOV/1001/ss1"),
    # clients
    ("client: unknown subsystem", lambda c: reg.add_server_client(c.e, SS1, "DEV/GOV/1001/x", instance=I),
     NotFound, 404, "subsystem DEV/GOV/1001/x is not registered"),
    ("client: unknown member", lambda c: reg.add_server_client(c.e, SS1, "DEV/GOV/7", instance=I),
     NotFound, 404, "member DEV/GOV/7 is not registered"),
    ("client: unknown server",
     lambda c: reg.add_server_client(c.e, "DEV/GOV/1002/ss1", "DEV/GOV/1002", instance=I),
     NotFound, 404, "security server DEV/GOV/1002/ss1 is not registered"),
    ("duplicate client", lambda c: reg.add_server_client(c.e, SS1, "DEV/GOV/1001/consumer", instance=I),
     Conflict, 409,
     "subsystem DEV/GOV/1001/consumer is already a client of security server DEV/GOV/1001/ss1"),
    ("client of another instance", lambda c: reg.add_server_client(c.e, SS1, "EE/GOV/1", instance=I),
     IdentifierError, 400,
     "member EE/GOV/1 belongs to instance 'EE'; this central server serves instance 'DEV'"),
    ("client with five parts", lambda c: reg.add_server_client(c.e, SS1, "DEV/G/1/s/x", instance=I),
     IdentifierError, 400,
     "client identifier 'DEV/G/1/s/x' must be INSTANCE/CLASS/MEMBER or INSTANCE/CLASS/MEMBER/SUBSYSTEM"),
    ("remove a non-client", lambda c: reg.remove_server_client(c.e, SS1, "DEV/GOV/1002", instance=I),
     NotFound, 404, "member DEV/GOV/1002 is not a client of security server DEV/GOV/1001/ss1"),
    # global groups
    ("duplicate group", lambda c: reg.add_group(c.e, "DEV/owners", description="X", instance=I),
     Conflict, 409, "global group DEV/owners is already registered"),
    ("group of another instance", lambda c: reg.add_group(c.e, "EE/owners", description="X", instance=I),
     IdentifierError, 400,
     "global group EE/owners belongs to instance 'EE'; this central server serves instance 'DEV'"),
    ("blank group description", lambda c: reg.add_group(c.e, "DEV/g2", description="", instance=I),
     RequestError, 400, "group description is empty"),
    ("member of unknown group", lambda c: reg.add_group_member(c.e, "DEV/nope", "DEV/GOV/1001", instance=I),
     NotFound, 404, "global group DEV/nope is not registered"),
    ("unknown member into group",
     lambda c: reg.add_group_member(c.e, "DEV/owners", "DEV/GOV/7/s", instance=I),
     NotFound, 404, "member DEV/GOV/7 is not registered"),
    ("duplicate group member", lambda c: reg.add_group_member(c.e, "DEV/owners", "DEV/GOV/1001", instance=I),
     Conflict, 409, "member DEV/GOV/1001 is already a member of global group DEV/owners"),
    ("remove a non-member",
     lambda c: reg.remove_group_member(c.e, "DEV/owners", "DEV/GOV/1002", instance=I),
     NotFound, 404, "member DEV/GOV/1002 is not a member of global group DEV/owners"),
    ("remove unknown group", lambda c: reg.remove_group(c.e, "DEV/nope", instance=I),
     NotFound, 404, "global group DEV/nope is not registered"),
    # CAs and TSAs
    ("duplicate CA", lambda c: reg.add_ca(c.e, name="Test CA", certificate=c.ca()),
     Conflict, 409, "certification authority 'Test CA' is already registered"),
    ("CA certificate that is not a CA", lambda c: reg.add_ca(c.e, name="X", certificate=c.new_auth()),
     RequestError, 400, "certificate of CA 'X' is not a CA certificate (basicConstraints cA is not true)"),
    ("CA with an ftp OCSP URL", lambda c: reg.add_ca(c.e, name="X", certificate=c.ca(), ocsp_urls=["ftp://o/"]),
     RequestError, 400, "OCSP URL 'ftp://o/' must be an http:// or https:// URL with a host"),
    ("CA with an OCSP URL twice",
     lambda c: reg.add_ca(c.e, name="X", certificate=c.ca(), ocsp_urls=["http://o/", "http://o/"]),
     RequestError, 400, "CA 'X': an OCSP URL is listed twice"),
    ("CA with user info in the URL",
     lambda c: reg.add_ca(c.e, name="X", certificate=c.ca(), ocsp_urls=["http://u:pw@o/"]),
     RequestError, 400, "OCSP URL 'http://u:pw@o/' may not carry user information or a fragment"),
    ("CA with a garbage certificate",
     lambda c: reg.add_ca(c.e, name="X", certificate="-----BEGIN CERTIFICATE-----"),
     RequestError, 400, "certificate of CA 'X': not a valid X.509 certificate: ..."),
    ("remove unknown CA", lambda c: reg.remove_ca(c.e, "Nope"),
     NotFound, 404, "certification authority 'Nope' is not registered"),
    ("duplicate TSA", lambda c: reg.add_tsa(c.e, name="Test TSA", url="http://t/", certificate=c.tsa()),
     Conflict, 409, "timestamping authority 'Test TSA' is already registered"),
    ("TSA with a relative URL", lambda c: reg.add_tsa(c.e, name="T2", url="/tsa", certificate=c.tsa()),
     RequestError, 400, "TSA URL '/tsa' must be an http:// or https:// URL with a host"),
    ("TSA URL with a space", lambda c: reg.add_tsa(c.e, name="T2", url="http://t/a b", certificate=c.tsa()),
     RequestError, 400, "TSA URL 'http://t/a b' contains whitespace or control characters"),
    ("remove unknown TSA", lambda c: reg.remove_tsa(c.e, "Nope"),
     NotFound, 404, "timestamping authority 'Nope' is not registered"),
]


@pytest.mark.parametrize(
    ("op", "error", "status", "message"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
async def test_refusals(
    shared: AsyncEngine, shared_url: tuple[str, str], pki: ThrowawayPki, op: Op, error: type[RequestError],
    status: int, message: str,
) -> None:
    ctx = Ctx(e=shared, p=pki, ss1_pem=shared_url[1])
    ss1 = cert_sha256_hex(load_certificate(shared_url[1].encode()))
    before = await reg.snapshot(shared)
    with pytest.raises(error) as info:
        await op(ctx)
    assert type(info.value) is error
    assert info.value.status == status
    expected = message.format(ss1=ss1)
    if expected.endswith("..."):  # the rest comes from the X.509 parser
        assert info.value.message.startswith(expected[:-3])
    else:
        assert info.value.message == expected
    if status == 409:
        assert info.value.xroad_type == "Client.Conflict"
    if status == 404:
        assert info.value.xroad_type == "Client.NotFound"
    assert await reg.snapshot(shared) == before  # a refused operation changes nothing
