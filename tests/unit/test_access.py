"""Access rules (gateway.serverconf.access): default deny, endpoint patterns, groups, encoded traversal attempts."""

from __future__ import annotations

import pytest
from faultside import SERVER_PROXY, detected_at

from gateway.errors import IdentifierError, RequestError
from gateway.identifiers import ClientId, GlobalGroupId, MemberId, ServiceId, SubsystemId
from gateway.serverconf.access import (
    BASE_ENDPOINT,
    NO_GROUPS,
    AccessPolicy,
    AccessRule,
    Endpoint,
    GroupMembership,
    LocalGroupId,
    parse_subject,
    subject_text,
)

A = SubsystemId.parse("DEV/GOV/1001/consumer")
B = SubsystemId.parse("DEV/GOV/1002/other")
M = MemberId.parse("DEV/GOV/1001")
PETS = ServiceId.parse("DEV/GOV/1003/provider/pets")
OTHER = ServiceId.parse("DEV/GOV/1003/provider/other")
UNKNOWN = ServiceId.parse("DEV/GOV/1003/provider/unknown")
FRIENDS = GlobalGroupId.parse("DEV/friends")
LOCALS = LocalGroupId(code="locals")

POLICY = AccessPolicy([
    AccessRule(subject=A, service=PETS, endpoint=Endpoint(method="GET", path="/pets/*")),
    AccessRule(subject=A, service=PETS, endpoint=Endpoint(method="*", path="/allowed/**")),
    AccessRule(subject=A, service=PETS, endpoint=Endpoint(method="POST", path="/orders")),
    AccessRule(subject=A, service=PETS, endpoint=Endpoint(method="GET", path="/pets/*/photos")),
    AccessRule(subject=FRIENDS, service=PETS, endpoint=Endpoint(method="GET", path="/friends/**")),
    AccessRule(subject=LOCALS, service=PETS, endpoint=Endpoint(method="GET", path="/local")),
    AccessRule(subject=B, service=OTHER),
    AccessRule(subject=M, service=PETS, endpoint=Endpoint(method="GET", path="/member")),
])
GROUPS = GroupMembership(global_groups={FRIENDS: {B}}, local_groups={LOCALS: frozenset({B})})


@pytest.mark.parametrize(
    ("client", "service", "method", "path"),
    [
        (A, PETS, "GET", "/pets/1"),
        (A, PETS, "GET", "/pets/%31"),  # unreserved escape decoded before matching
        (A, PETS, "GET", "/pets/./1"),
        (A, PETS, "GET", "/pets/1/photos"),
        (A, PETS, "PUT", "/allowed/x/y"),
        (A, PETS, "GET", "/allowed/"),
        (A, PETS, "DELETE", "/allowed/x/../y"),  # stays inside /allowed/
        (A, PETS, "POST", "/orders"),
        (A, PETS, "POST", "//orders"),  # runs of '/' collapse
        (B, PETS, "GET", "/friends/a/b"),  # global group
        (B, PETS, "GET", "/local"),  # local group
        (B, OTHER, "DELETE", "/anything/at/all"),  # whole service
        (B, OTHER, "GET", ""),
        (M, PETS, "GET", "/member"),  # a member client
    ],
)
def test_allowed(client: ClientId, service: ServiceId, method: str, path: str) -> None:
    POLICY.check(client, service, method, path, groups=GROUPS)


@pytest.mark.parametrize(
    ("client", "service", "method", "path", "shown_path"),
    [
        (A, PETS, "GET", "/pets", "/pets"),  # '*' needs one segment
        (A, PETS, "GET", "/pets/", "/pets/"),  # ... a non-empty one
        (A, PETS, "GET", "/pets/1/toys", "/pets/1/toys"),
        (A, PETS, "GET", "/orders", "/orders"),  # method mismatch
        (A, PETS, "POST", "/orders/1", "/orders/1"),  # exact means exact
        (A, PETS, "POST", "/Orders", "/Orders"),  # case-sensitive
        (A, PETS, "GET", "/allowed", "/allowed"),  # '/allowed/**' is below /allowed/
        (A, PETS, "GET", "/allowed/%2E%2E/secret", "/secret"),  # encoded '..' resolved, then denied
        (A, PETS, "GET", "/allowed/%2e%2e/secret", "/secret"),
        (A, PETS, "GET", "/allowed/../secret", "/secret"),
        (A, PETS, "GET", "/allowed/x/../../secret", "/secret"),
        (A, PETS, "GET", "/allowed/.%2E/secret", "/secret"),
        (A, OTHER, "GET", "/", "/"),  # no rule for A on this service
        (A, UNKNOWN, "GET", "/", "/"),  # default deny for a service without rules
        (B, PETS, "GET", "/pets/1", "/pets/1"),
        (A, PETS, "GET", "/friends/x", "/friends/x"),  # A is in no global group
        (A, PETS, "GET", "/local", "/local"),  # ... and no local group
        (A, PETS, "GET", "/member", "/member"),  # a grant to member 1001 does not cover its subsystem
    ],
)
def test_denied(client: ClientId, service: ServiceId, method: str, path: str, shown_path: str) -> None:
    with pytest.raises(RequestError) as info, detected_at(SERVER_PROXY):
        POLICY.check(client, service, method, path, groups=GROUPS)
    err = info.value
    assert err.xroad_type == "Server.ServerProxy.AccessDenied"
    assert err.status == 500  # X-Road: every Server.* fault type is HTTP 500
    assert err.message == (
        f"client {client.typed()} is not allowed to call {method} {shown_path} of service {service}"
    )


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/allowed/..%2Fsecret", "forbidden encoded character %2F"),
        ("/allowed%2F..%2Fsecret", "forbidden encoded character %2F"),
        ("/allowed/%252E%252E/secret", "double-encoded"),
        ("/allowed/%252e%252e%252fsecret", "double-encoded"),
        ("/allowed\\..\\secret", "may not contain '\\'"),
        ("/allowed/%5C../secret", "forbidden encoded character %5C"),
        ("/allowed/%00", "forbidden encoded character %00"),
        ("/allowed/\x00/x", "control character"),
        ("/allowed/../../secret", "climbs above its root"),
        ("/allowed/..;/secret", "dot segment with parameters"),
        ("/allowed/%zz", "malformed percent-escape"),
        ("allowed/x", "must start with '/'"),
    ],
)
def test_malformed_path_is_bad_request(path: str, message: str) -> None:
    with pytest.raises(RequestError) as info:
        POLICY.check(A, PETS, "GET", path, groups=GROUPS)
    assert info.value.xroad_type == "Client.BadRequest"
    assert info.value.status == 400
    assert message in info.value.message


def test_no_groups_resolver_denies_group_rules() -> None:
    with pytest.raises(RequestError, match="not allowed"):
        POLICY.check(B, PETS, "GET", "/friends/a", groups=NO_GROUPS)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*", "/", True),
        ("*", "/a/b", True),
        ("**", "/a/b", True),
        ("/**", "/", True),
        ("/", "/", True),
        ("/", "/a", False),
        ("/a", "/a", True),
        ("/a", "/a/", False),
        ("/a/", "/a/", True),
        ("/a/*", "/a/b", True),
        ("/a/*", "/a/", False),
        ("/a/*/c", "/a/b/c", True),
        ("/a/*/c", "/a/b/d", False),
        ("/a/**", "/a/", True),
        ("/a/**", "/a/b/c/d", True),
        ("/a/**", "/a", False),
        ("/a/**", "/ab", False),
        ("/*/**", "/x/y", True),
        ("/*/**", "/x", False),
    ],
)
def test_path_patterns(pattern: str, path: str, expected: bool) -> None:
    assert Endpoint(path=pattern).matches("GET", path) is expected


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("get", "/a", "endpoint method 'get' is not '*' or one of"),
        ("CONNECT", "/a", "endpoint method 'CONNECT' is not '*' or one of"),
        ("GET", "a/b", "must be '*' or start with '/'"),
        ("GET", "", "must be '*' or start with '/'"),
        ("GET", "/a/**/b", "'**' may only be the last segment"),
        ("GET", "/a*", "'*' must be a whole segment"),
        ("GET", "/a/b*c", "'*' must be a whole segment"),
        ("GET", "/a/../b", "contains a dot segment"),
        ("GET", "/a/./b", "contains a dot segment"),
        ("GET", "/a b", "contains a space, control character"),
        ("GET", "/a\\b", "contains a space, control character"),
        ("GET", "/a?x=1", "contains a space, control character"),
        ("GET", "/a\x00", "contains a space, control character"),
        ("GET", "/" + "a" * 1024, "longer than 1024 characters"),
    ],
)
def test_bad_endpoint(method: str, path: str, message: str) -> None:
    with pytest.raises(RequestError) as info:
        Endpoint(method=method, path=path)
    assert info.value.xroad_type == "Client.BadRequest"
    assert message in info.value.message


def test_every_path_has_one_spelling() -> None:
    assert Endpoint(path="*") == Endpoint(path="/**") == Endpoint(path="**") == BASE_ENDPOINT
    assert Endpoint(path="*").path == "**"


def test_allowed_endpoints_for_metaservice() -> None:
    assert POLICY.allowed_endpoints(A, PETS, groups=GROUPS) == (
        Endpoint(method="GET", path="/pets/*"),
        Endpoint(method="*", path="/allowed/**"),
        Endpoint(method="POST", path="/orders"),
        Endpoint(method="GET", path="/pets/*/photos"),
    )
    assert POLICY.allowed_endpoints(B, PETS, groups=GROUPS) == (
        Endpoint(method="GET", path="/friends/**"),
        Endpoint(method="GET", path="/local"),
    )
    assert POLICY.allowed_endpoints(B, PETS, groups=NO_GROUPS) == ()
    assert POLICY.allowed_endpoints(B, OTHER, groups=GROUPS) == (BASE_ENDPOINT,)
    assert POLICY.allowed_services(A, groups=GROUPS) == (PETS,)
    assert POLICY.allowed_services(B, groups=GROUPS) == (PETS, OTHER)


def test_duplicate_rules_and_endpoints_collapse() -> None:
    rule = AccessRule(subject=A, service=PETS, endpoint=Endpoint(method="GET", path="/x"))
    via_group = AccessRule(subject=LOCALS, service=PETS, endpoint=Endpoint(method="GET", path="/x"))
    policy = AccessPolicy([rule, rule, via_group])
    assert policy.rules == (rule, via_group)
    groups = GroupMembership(local_groups={LOCALS: {A}})
    assert policy.allowed_endpoints(A, PETS, groups=groups) == (Endpoint(method="GET", path="/x"),)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DEV/GOV/1001/consumer", A),
        ("SUBSYSTEM:DEV/GOV/1001/consumer", A),
        ("DEV/GOV/1001", M),
        ("MEMBER:DEV/GOV/1001", M),
        ("GLOBALGROUP:DEV/friends", FRIENDS),
        ("LOCALGROUP:locals", LOCALS),
    ],
)
def test_parse_subject(text: str, expected: object) -> None:
    subject = parse_subject(text)
    assert subject == expected
    assert parse_subject(subject_text(subject)) == subject


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("DEV/friends", "client identifier 'DEV/friends' must be INSTANCE/CLASS/MEMBER or"),
        ("GROUP:DEV/x", "access-right subject type 'GROUP' is unknown"),
        ("GLOBALGROUP:DEV/a/b", "has 3 parts; expected 2"),
        ("LOCALGROUP:a/b", "local group code 'a/b' contains a forbidden character '/'"),
        ("LOCALGROUP:", "local group code is empty"),
        ("SUBSYSTEM:DEV/GOV/1001", "has 3 parts; expected 4"),
        ("DEV/GOV/10%01/x", "contains a forbidden character '%'"),
    ],
)
def test_parse_subject_errors(text: str, message: str) -> None:
    with pytest.raises(IdentifierError) as info:
        parse_subject(text)
    assert message in info.value.message
