"""Serverconf store and CLI on SQLite and PostgreSQL: CRUD, precise errors, snapshot, access checks."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from faultside import SERVER_PROXY, detected_at
from pkihelpers import make_cert

from gateway.cli import main
from gateway.errors import GatewayError, IdentifierError, RequestError
from gateway.identifiers import GlobalGroupId, MemberId, ServiceId, SubsystemId
from gateway.serverconf import ClientInfo, ServiceInfo
from gateway.serverconf.access import BASE_ENDPOINT, AccessRule, Endpoint, LocalGroupId
from gateway.serverconf.store import ServerConfStore
from gateway.storage.db import make_engine
from gateway.trust.keys import generate_private_key

pytestmark = pytest.mark.integration

PROVIDER = SubsystemId.parse("DEV/GOV/1001/provider")
CONSUMER = SubsystemId.parse("DEV/GOV/1002/consumer")
OUTSIDER = SubsystemId.parse("DEV/GOV/1003/outsider")
OWNER = MemberId.parse("DEV/GOV/1001")
PETS = ServiceId.parse("DEV/GOV/1001/provider/pets")
ORDERS = ServiceId.parse("DEV/GOV/1001/provider/orders")
NOPE = ServiceId.parse("DEV/GOV/1001/provider/nope")
FRIENDS = LocalGroupId(code="friends")
NO_GROUP = LocalGroupId(code="x")
PARTNERS = GlobalGroupId.parse("DEV/partners")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[ServerConfStore]:
    engine = make_engine(database_url)
    s = ServerConfStore(engine)
    await s.migrate()
    await s.migrate()  # idempotent
    yield s
    await engine.dispose()


async def populate(s: ServerConfStore) -> None:
    await s.add_client(PROVIDER, is_auth="https", body_logging=False)
    await s.add_client(CONSUMER)
    await s.add_service(
        PETS, url="http://127.0.0.1:9000/api", timeout_seconds=5,
        endpoints_=[Endpoint(method="GET", path="/pets/*"), Endpoint(method="POST", path="/pets")],
    )
    await s.add_service(ORDERS, url="https://orders.example/", openapi_url="https://orders.example/openapi.json")
    await s.add_group(FRIENDS, description="friendly consumers")
    await s.add_group_member(FRIENDS, OUTSIDER)
    await s.grant(AccessRule(subject=CONSUMER, service=PETS, endpoint=Endpoint(method="GET", path="/pets/*")))
    await s.grant(AccessRule(subject=FRIENDS, service=PETS, endpoint=Endpoint(method="*", path="/public/**")))
    await s.grant(AccessRule(subject=PARTNERS, service=ORDERS))


async def test_crud_and_snapshot(store: ServerConfStore) -> None:
    await populate(store)
    snap = await store.snapshot()
    # Clients and services as stored.
    assert snap.clients[PROVIDER] == ClientInfo(id=PROVIDER, is_auth="https", body_logging=False)
    assert snap.client(CONSUMER).is_auth == "https-cert"
    assert snap.service(PETS) == ServiceInfo(
        id=PETS, url="http://127.0.0.1:9000/api", timeout_seconds=5.0,
        endpoints=(Endpoint(method="GET", path="/pets/*"), Endpoint(method="POST", path="/pets")),
    )
    assert snap.service(ORDERS).openapi_url == "https://orders.example/openapi.json"
    assert [s.id for s in snap.services_of(PROVIDER)] == [ORDERS, PETS]
    assert snap.local_groups == {FRIENDS: frozenset({OUTSIDER})}
    # The access policy works on the snapshot alone.
    groups = snap.groups({PARTNERS: {CONSUMER}})
    snap.policy.check(CONSUMER, PETS, "GET", "/pets/1", groups=groups)
    snap.policy.check(OUTSIDER, PETS, "DELETE", "/public/a/b", groups=groups)
    snap.policy.check(CONSUMER, ORDERS, "PUT", "/anything", groups=groups)
    denied = ((CONSUMER, PETS, "/public/x"), (OUTSIDER, ORDERS, "/"), (OWNER, PETS, "/pets/1"))
    for client, service, path in denied:
        with pytest.raises(RequestError, match="is not allowed to call") as info, detected_at(SERVER_PROXY):
            snap.policy.check(client, service, "GET", path, groups=groups)
        assert info.value.xroad_type == "Server.ServerProxy.AccessDenied"
    assert snap.policy.allowed_endpoints(CONSUMER, ORDERS, groups=groups) == (BASE_ENDPOINT,)
    assert [str(r.subject) for r in await store.list_rules(service=PETS)] == [str(CONSUMER), "friends"]
    assert len(await store.list_rules()) == 3

    # Updates.
    await store.update_client(CONSUMER, status="disabled", is_auth="none")
    assert await store.get_client(CONSUMER) == ClientInfo(id=CONSUMER, status="disabled", is_auth="none")
    updated = await store.update_service(
        PETS, enabled=False, disabled_notice="maintenance", timeout_seconds=30
    )
    assert (updated.enabled, updated.disabled_notice, updated.timeout_seconds) == (False, "maintenance", 30.0)
    with pytest.raises(RequestError) as info, detected_at(SERVER_PROXY):
        (await store.snapshot()).service(PETS)
    assert info.value.xroad_type == "Server.ServerProxy.ServiceDisabled"
    assert info.value.message == f"service {PETS} is disabled: maintenance"
    assert (await store.update_service(ORDERS, openapi_url="")).openapi_url is None
    await store.add_endpoint(PETS, Endpoint(method="DELETE", path="/pets/*"))
    await store.remove_endpoint(PETS, Endpoint(method="POST", path="/pets"))
    assert [str(e) for e in (await store.get_service(PETS)).endpoints] == ["GET /pets/*", "DELETE /pets/*"]

    # Revocations and removals cascade.
    await store.revoke(AccessRule(subject=PARTNERS, service=ORDERS))
    await store.remove_group_member(FRIENDS, OUTSIDER)
    await store.remove_group(FRIENDS)  # also drops the right granted to the group
    assert [r.subject for r in await store.list_rules()] == [CONSUMER]
    await store.remove_service(ORDERS)
    await store.remove_client(PROVIDER)  # takes PETS, its endpoints and rights with it
    snap = await store.snapshot()
    assert list(snap.clients) == [CONSUMER]
    assert snap.services == {}
    assert snap.policy.rules == ()
    assert snap.local_groups == {}


async def test_is_certificates(store: ServerConfStore, tmp_path: Path) -> None:
    await store.add_client(CONSUMER)
    cert = make_cert(generate_private_key(), "is.example")
    der = cert.public_bytes(serialization.Encoding.DER)
    fp = await store.add_is_cert(CONSUMER, cert.public_bytes(serialization.Encoding.PEM))
    assert fp == hashlib.sha256(der).hexdigest()
    other = make_cert(generate_private_key(), "other")
    fp2 = await store.add_is_cert(CONSUMER, other.public_bytes(serialization.Encoding.DER))
    assert (await store.snapshot()).clients[CONSUMER].is_cert_fingerprints == {fp, fp2}
    with pytest.raises(RequestError) as info:
        await store.add_is_cert(CONSUMER, der)
    assert (info.value.status, info.value.message) == (409, f"certificate {fp} is already registered for "
                                                            f"{CONSUMER.typed()}")
    await store.remove_is_cert(CONSUMER, fp)
    assert (await store.get_client(CONSUMER)).is_cert_fingerprints == {fp2}
    with pytest.raises(RequestError, match="is not registered for") as info:
        await store.remove_is_cert(CONSUMER, fp)
    assert info.value.status == 404
    with pytest.raises(RequestError, match=r"is not a PEM or DER X\.509 certificate") as info:
        await store.add_is_cert(CONSUMER, b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    assert info.value.status == 400


Op = Callable[[ServerConfStore], Awaitable[Any]]

ERRORS: list[tuple[str, Op, int, str]] = [
    ("duplicate client", lambda s: s.add_client(CONSUMER), 409,
     "SUBSYSTEM:DEV/GOV/1002/consumer is already a client of this security server"),
    ("duplicate service", lambda s: s.add_service(PETS, url="http://x/"), 409,
     "service DEV/GOV/1001/provider/pets already exists"),
    ("duplicate endpoint", lambda s: s.add_endpoint(PETS, Endpoint(method="GET", path="/pets/*")), 409,
     "endpoint GET /pets/* of service DEV/GOV/1001/provider/pets already exists"),
    ("duplicate right", lambda s: s.grant(AccessRule(subject=CONSUMER, service=PETS,
                                                     endpoint=Endpoint(method="GET", path="/pets/*"))), 409,
     "SUBSYSTEM:DEV/GOV/1002/consumer already has access to GET /pets/* of service "
     "DEV/GOV/1001/provider/pets"),
    ("duplicate group", lambda s: s.add_group(FRIENDS), 409, "local group 'friends' already exists"),
    ("duplicate member", lambda s: s.add_group_member(FRIENDS, OUTSIDER), 409,
     "SUBSYSTEM:DEV/GOV/1003/outsider is already a member of local group 'friends'"),
    ("missing client", lambda s: s.remove_client(OUTSIDER), 404,
     "SUBSYSTEM:DEV/GOV/1003/outsider is not a client of this security server"),
    ("missing client get", lambda s: s.get_client(OWNER), 404,
     "MEMBER:DEV/GOV/1001 is not a client of this security server"),
    ("missing client update", lambda s: s.update_client(OWNER, status="disabled"), 404,
     "MEMBER:DEV/GOV/1001 is not a client of this security server"),
    ("service of unknown subsystem", lambda s: s.add_service(OUTSIDER.service("x"), url="http://x/"), 404,
     "SUBSYSTEM:DEV/GOV/1003/outsider is not a client of this security server; add it first"),
    ("missing service", lambda s: s.remove_service(NOPE), 404,
     "service DEV/GOV/1001/provider/nope does not exist on this security server"),
    ("missing service get", lambda s: s.get_service(NOPE), 404,
     "service DEV/GOV/1001/provider/nope does not exist on this security server"),
    ("grant on missing service", lambda s: s.grant(AccessRule(subject=CONSUMER, service=NOPE)), 404,
     "service DEV/GOV/1001/provider/nope does not exist on this security server"),
    ("grant to missing group", lambda s: s.grant(AccessRule(subject=NO_GROUP, service=PETS)), 404,
     "local group 'x' does not exist"),
    ("revoke missing right", lambda s: s.revoke(AccessRule(subject=OUTSIDER, service=PETS)), 404,
     "SUBSYSTEM:DEV/GOV/1003/outsider has no access right to * ** of service DEV/GOV/1001/provider/pets"),
    ("list rules of missing service", lambda s: s.list_rules(service=NOPE), 404,
     "service DEV/GOV/1001/provider/nope does not exist on this security server"),
    ("missing endpoint", lambda s: s.remove_endpoint(PETS, Endpoint(method="PUT", path="/x")), 404,
     "endpoint PUT /x of service DEV/GOV/1001/provider/pets does not exist"),
    ("missing group", lambda s: s.remove_group(NO_GROUP), 404, "local group 'x' does not exist"),
    ("member of missing group", lambda s: s.add_group_member(LocalGroupId(code="x"), CONSUMER), 404,
     "local group 'x' does not exist"),
    ("missing member", lambda s: s.remove_group_member(FRIENDS, CONSUMER), 404,
     "SUBSYSTEM:DEV/GOV/1002/consumer is not a member of local group 'friends'"),
]


@pytest.mark.parametrize(("op", "status", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
async def test_precise_errors(store: ServerConfStore, op: Op, status: int, message: str) -> None:
    await populate(store)
    before = await store.snapshot()
    with pytest.raises(RequestError) as info:
        await op(store)
    assert info.value.status == status
    assert info.value.message.startswith(message)
    expected_type = {409: "Client.AlreadyExists", 404: "Client.NotFound"}[status]
    assert info.value.xroad_type == expected_type
    after = await store.snapshot()  # a refused change changes nothing
    assert (after.clients, after.services, after.local_groups, after.policy.rules) == (
        before.clients, before.services, before.local_groups, before.policy.rules,
    )


# Refused before any database access, so one backend that is never even opened is enough.
INVALID: list[tuple[str, Op, str]] = [
    ("bad status", lambda s: s.add_client(OUTSIDER, status="gone"),  # type: ignore[arg-type]
     "client status 'gone' is not one of saved, registered, disabled"),
    ("bad auth", lambda s: s.update_client(CONSUMER, is_auth="tls"),  # type: ignore[arg-type]
     "IS authentication mode 'tls' is not one of none, https, https-cert"),
    ("url scheme", lambda s: s.add_service(PROVIDER.service("x"), url="ftp://x/"),
     "service URL 'ftp://x/' must start with http:// or https://"),
    ("url no host", lambda s: s.add_service(PROVIDER.service("x"), url="http:///x"),
     "service URL 'http:///x' has no host"),
    ("url credentials", lambda s: s.add_service(PROVIDER.service("x"), url="http://u:p@x/"),
     "service URL 'http://u:p@x/' may not carry credentials"),
    ("url fragment", lambda s: s.add_service(PROVIDER.service("x"), url="http://x/#a"),
     "service URL 'http://x/#a' may not have a fragment"),
    ("url space", lambda s: s.add_service(PROVIDER.service("x"), url="http://x/a b"),
     "service URL 'http://x/a b' contains a space or control character"),
    ("url port", lambda s: s.add_service(PROVIDER.service("x"), url="http://x:99999/"),
     "service URL 'http://x:99999/' is malformed"),
    ("openapi url", lambda s: s.add_service(PROVIDER.service("x"), url="http://x/", openapi_url="file:///etc"),
     "OpenAPI URL 'file:///etc' must start with http:// or https://"),
    ("timeout zero", lambda s: s.add_service(PROVIDER.service("x"), url="http://x/", timeout_seconds=0),
     "service timeout 0 s is not in (0, 3600] seconds"),
    ("timeout nan", lambda s: s.update_service(PETS, timeout_seconds=float("nan")),
     "service timeout nan is not a number of seconds"),
    ("timeout huge", lambda s: s.update_service(PETS, timeout_seconds=3601),
     "service timeout 3601 s is not in (0, 3600] seconds"),
    ("long description", lambda s: s.add_group(LocalGroupId(code="y"), description="d" * 1025),
     "group description is longer than 1024 characters"),
]


@pytest.mark.parametrize(("op", "message"), [e[1:] for e in INVALID], ids=[e[0] for e in INVALID])
async def test_invalid_values(tmp_path: Path, op: Op, message: str) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'never-opened.db'}")
    with pytest.raises(RequestError) as info:
        await op(ServerConfStore(engine))
    assert (info.value.status, info.value.xroad_type) == (400, "Client.BadRequest")
    assert info.value.message.startswith(message)
    assert not (tmp_path / "never-opened.db").exists()
    await engine.dispose()


async def test_database_failure_is_a_gateway_error(store: ServerConfStore, database_url: str) -> None:
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.exec_driver_sql("DROP TABLE sc_local_group_members")
    await engine.dispose()
    with pytest.raises(GatewayError) as info, detected_at(SERVER_PROXY):
        await store.snapshot()
    assert info.value.xroad_type == "Server.ServerProxy.DatabaseError"
    assert info.value.message.startswith("serverconf database error: ")
    assert "sc_local_group_members" in info.value.message


# ------------------------------------------------------------------------------------------------- CLI


def test_cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    monkeypatch.setenv("GATEWAY_SERVER__DATABASE_URL", database_url)
    pem = tmp_path / "is.pem"
    cert = make_cert(generate_private_key(), "is.example")
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fp = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def run(*argv: str) -> tuple[int, str, str]:
        rc = main(["serverconf", *argv])
        out = capsys.readouterr()
        return rc, out.out, out.err

    assert run("client", "add", str(PROVIDER), "--auth", "https", "--no-body-logging") == (
        0, f"added client {PROVIDER.typed()}\n", ""
    )
    assert run("client", "add", str(CONSUMER), "--is-cert", str(pem))[1] == (
        f"registered IS certificate {fp}\nadded client {CONSUMER.typed()}\n"
    )
    assert run("service", "add", str(PETS), "--url", "http://127.0.0.1:9000/", "--timeout", "5",
               "--endpoint", "GET /pets/*")[0] == 0
    assert run("group", "add", "friends", "--description", "f")[0] == 0
    assert run("group", "add-member", "friends", str(OUTSIDER))[0] == 0
    assert run("access", "grant", str(PETS), str(CONSUMER), "--method", "GET", "--path", "/pets/*")[1] == (
        f"granted {CONSUMER.typed()} GET /pets/* of {PETS}\n"
    )
    assert run("access", "grant", str(PETS), "LOCALGROUP:friends")[0] == 0
    assert run("access", "grant", str(PETS), "GLOBALGROUP:DEV/partners", "--path", "/p")[0] == 0
    assert run("access", "list", str(PETS))[1] == (
        f"{PETS}\tGET\t/pets/*\t{CONSUMER.typed()}\n"
        f"{PETS}\t*\t**\tLOCALGROUP:friends\n"
        f"{PETS}\t*\t/p\tGLOBALGROUP:DEV/partners\n"
    )
    assert run("access", "revoke", str(PETS), "LOCALGROUP:friends")[0] == 0
    assert run("client", "list")[1] == (
        f"{PROVIDER.typed()}\tstatus=registered\tauth=https\tbody_logging=False\tcerts=-\n"
        f"{CONSUMER.typed()}\tstatus=registered\tauth=https-cert\tbody_logging=True\tcerts={fp}\n"
    )
    assert run("service", "list")[1] == (
        f"{PETS}\thttp://127.0.0.1:9000/\ttimeout=5s\tenabled\tendpoints=GET /pets/*\n"
    )
    assert run("group", "list")[1] == f"friends\t{OUTSIDER}\n"

    # Errors: diagnostics on stderr, exit 1; a bad database URL is a settings error, exit 2.
    rc, out, err = run("client", "add", str(PROVIDER))
    assert (rc, out) == (1, "")
    assert err == (
        f"gateway: error: Client.AlreadyExists: {PROVIDER.typed()} is already a client of this security "
        "server (fault of the request)\n"
    )
    rc, _, err = run("access", "grant", str(PETS), "DEV/partners")
    assert rc == 1
    assert "client identifier 'DEV/partners' must be INSTANCE/CLASS/MEMBER" in err
    assert "hint: groups need a type prefix" in err
    rc, _, err = run("access", "grant", str(PETS), str(CONSUMER), "--path", "/a/**/b")
    assert (rc, "'**' may only be the last segment" in err) == (1, True)
    rc, _, err = run("client", "add", str(OUTSIDER), "--is-cert", str(tmp_path / "missing.pem"))
    assert rc == 1
    assert "missing.pem cannot be read: No such file or directory" in err
    rc, _, err = run("service", "add", str(ORDERS), "--url", "http://x/", "--endpoint", "GET")
    assert (rc, "endpoint 'GET' must be 'METHOD PATH'" in err) == (1, True)
    monkeypatch.setenv("GATEWAY_SERVER__DATABASE_URL", "mysql://nope/db")
    rc, _, err = run("client", "list")
    assert rc == 2
    assert "uses driver 'mysql'" in err


def test_cli_bad_identifier_exits_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    monkeypatch.setenv("GATEWAY_SERVER__DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    assert main(["serverconf", "client", "add", "DEV/GOV/10%01"]) == 1
    assert "forbidden character '%'" in capsys.readouterr().err
    with pytest.raises(IdentifierError):
        LocalGroupId(code="a b")
