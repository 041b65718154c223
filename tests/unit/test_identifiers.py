"""Identifiers: round trips and hostile inputs, as tables."""

from __future__ import annotations

import pytest

from gateway.errors import IdentifierError
from gateway.identifiers import (
    MAX_PART_LENGTH,
    GlobalGroupId,
    MemberId,
    SecurityServerId,
    ServiceId,
    SubsystemId,
    parse_client,
)

VALID = [
    (MemberId, "DEV/GOV/1001"),
    (MemberId, "EE-test/BUSINESS/123456789"),
    (SubsystemId, "DEV/GOV/1001/consumer"),
    (SubsystemId, "INSTANCE/CLASS1/MEMBER1/SUBSYSTEM1"),
    (ServiceId, "DEV/GOV/1002/registry/persons"),
    (ServiceId, "INSTANCE/CLASS2/MEMBER2/SUBSYSTEM2/BARSERVICE"),
    (SecurityServerId, "DEV/GOV/1001/ss1"),
    (GlobalGroupId, "DEV/security-server-owners"),
    (SubsystemId, "A/B/C/it's(+,-.=?)"),
    (MemberId, "A/B/" + "x" * MAX_PART_LENGTH),
]


@pytest.mark.parametrize(("cls", "text"), VALID)
def test_round_trip(cls: type[MemberId], text: str) -> None:
    ident = cls.parse(text)
    assert str(ident) == text
    assert cls.parse(str(ident)) == ident
    assert cls.parse_encoded_id(ident.encoded_id()) == ident
    assert ident.typed().startswith(cls.object_type + ":")


def test_relations() -> None:
    svc = ServiceId.parse("DEV/GOV/1002/registry/persons")
    assert svc.subsystem == SubsystemId.parse("DEV/GOV/1002/registry")
    assert svc.member == MemberId.parse("DEV/GOV/1002")
    assert svc.subsystem.service("persons") == svc
    assert MemberId.parse("DEV/GOV/1001").server("ss1").owner == MemberId.parse("DEV/GOV/1001")
    assert hash(svc) == hash(ServiceId.parse(str(svc)))


def test_percent_decoding_happens_once() -> None:
    # An encoded allowed character decodes to itself; the result is the same identifier.
    assert SubsystemId.parse("DEV/GOV/1001/con%73umer") == SubsystemId.parse("DEV/GOV/1001/consumer")
    assert SubsystemId.parse("DEV/GOV/1001/consumer", encoded=False).subsystem_code == "consumer"


HOSTILE = [
    ("", "has 1 parts; expected 4"),
    ("DEV/GOV/1001", "has 3 parts; expected 4"),
    ("DEV/GOV/1001/a/b", "has 5 parts; expected 4"),
    ("DEV//1001/x", "part member_class is empty"),
    ("DEV/GOV/1001/", "part subsystem_code is empty"),
    ("DEV/GOV/1001/..", "may not be '..'"),
    ("DEV/GOV/1001/.", "may not be '.'"),
    ("DEV/GOV/1001/%2E%2E", "may not be '..'"),
    ("DEV/GOV/1001/a%2Fb", "forbidden character '/'"),
    ("DEV/GOV/1001/a%252Fb", "forbidden character '%'"),
    ("DEV/GOV/1001/a%5Cb", "forbidden character '\\\\'"),
    ("DEV/GOV/1001/a\\b", "forbidden character '\\\\'"),
    ("DEV/GOV/1001/a;b", "forbidden character ';'"),
    ("DEV/GOV/1001/a:b", "forbidden character ':'"),
    ("DEV/GOV/1001/a b", "forbidden character ' '"),
    ("DEV/GOV/1001/a\x00b", "control character U+0000"),
    ("DEV/GOV/1001/a%00b", "control character U+0000"),
    ("DEV/GOV/1001/a\nb", "control character U+000A"),
    ("DEV/GOV/1001/a%0D%0AX-Evil:1", "control character U+000D"),
    ("DEV/GOV/1001/a\x7fb", "control character U+007F"),
    ("DEV/GOV/1001/p\u00e4", "forbidden character"),
    ("DEV/GOV/1001/%C3%A4", "forbidden character"),
    ("DEV/GOV/1001/%FF", "not valid UTF-8"),
    ("DEV/GOV/1001/" + "x" * (MAX_PART_LENGTH + 1), "at most 255"),
    ("DEV/GOV/1001/" + "x" * 2000, "longer than 1024"),
]


@pytest.mark.parametrize(("text", "message"), HOSTILE)
def test_hostile_subsystem_ids(text: str, message: str) -> None:
    with pytest.raises(IdentifierError) as info:
        SubsystemId.parse(text)
    assert message in str(info.value)
    assert info.value.status == 400
    assert info.value.xroad_type == "Client.InvalidClientIdentifier"


def test_non_utf8_bytes() -> None:
    with pytest.raises(IdentifierError, match="not valid UTF-8"):
        SubsystemId.parse(b"DEV/GOV/1001/\xff\xfe")


def test_direct_construction_is_validated() -> None:
    with pytest.raises(IdentifierError, match="forbidden character '/'"):
        MemberId(instance="DEV", member_class="GOV", member_code="10/01")


def test_encoded_id_refuses_slashes() -> None:
    with pytest.raises(IdentifierError, match="must use ':'"):
        SubsystemId.parse_encoded_id("DEV/GOV/1001/x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DEV/GOV/1001", MemberId(instance="DEV", member_class="GOV", member_code="1001")),
        ("DEV/GOV/1001/consumer", SubsystemId.parse("DEV/GOV/1001/consumer")),
    ],
)
def test_parse_client(text: str, expected: object) -> None:
    assert parse_client(text) == expected


@pytest.mark.parametrize("text", ["DEV", "DEV/GOV", "DEV/GOV/1001/a/b", "", "/////"])
def test_parse_client_rejects_other_shapes(text: str) -> None:
    with pytest.raises(IdentifierError, match="must be INSTANCE/CLASS/MEMBER"):
        parse_client(text)
