"""Message-log records (gateway.messagelog.record): encoding, decoding, leaf hash, validation."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785

from gateway.errors import MessageLogError, TrustError
from gateway.identifiers import ServiceId, SubsystemId
from gateway.messagelog.record import LogRecord, decode, leaf_hash

CREATED = datetime(2026, 1, 2, 3, 4, 5, 67, tzinfo=UTC)


def make(**changes: Any) -> LogRecord:
    fields: dict[str, Any] = {
        "origin": "DEV/GOV/1001/ss1",
        "kind": "request",
        "side": "client",
        "message_id": "DEV-7a1c",
        "request_id": "5f0e8d52-5b34-4ad5-a0a5-0c0b0c4bd5a1",
        "client": SubsystemId.parse("DEV/GOV/1001/consumer"),
        "service": ServiceId.parse("DEV/GOV/1002/provider/pets"),
        "user_id": "EE12345678901",
        "issue": None,
        "created": CREATED,
        "method": "GET",
        "path": "/pets/1?x=1",
        "signature_base": b'"@method": GET\n"@signature-params": ();created=1',
        "signature_input": 'sig1=("@method");created=1',
        "signature": "sig1=:AAAA:",
        "signing_cert": b"\x30\x82\x01\x00cert",
        "ocsp_response": b"\x30\x03ocsp",
        "body_digest": "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
        "body": b"",
    }
    fields.update(changes)
    return LogRecord(**fields)


# The encoding of make(), fixed: a change here is a format change and needs a new version number.
GOLDEN = (
    b'{"body":"","body_digest":"sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",'
    b'"client":"DEV/GOV/1001/consumer","created":"2026-01-02T03:04:05.000067Z","extensions":{},'
    b'"issue":null,"kind":"request","message_id":"DEV-7a1c","method":"GET",'
    b'"ocsp_response":"MANvY3Nw","origin":"DEV/GOV/1001/ss1","path":"/pets/1?x=1",'
    b'"request_id":"5f0e8d52-5b34-4ad5-a0a5-0c0b0c4bd5a1","service":"DEV/GOV/1002/provider/pets",'
    b'"side":"client","signature":"sig1=:AAAA:",'
    b'"signature_base":"IkBtZXRob2QiOiBHRVQKIkBzaWduYXR1cmUtcGFyYW1zIjogKCk7Y3JlYXRlZD0x",'
    b'"signature_input":"sig1=(\\"@method\\");created=1","signing_cert":"MIIBAGNlcnQ=","status":null,'
    b'"user_id":"EE12345678901","v":1}'
)


def test_golden_encoding_and_leaf_hash() -> None:
    encoded = make().encode()
    assert encoded == GOLDEN
    assert leaf_hash(encoded) == hashlib.sha256(b"\x00" + GOLDEN).digest()
    assert leaf_hash(encoded).hex() == hashlib.sha256(b"\x00" + encoded).hexdigest()
    assert len(leaf_hash(encoded)) == 32


@pytest.mark.parametrize(
    "record",
    [
        make(),
        make(kind="response", side="server", status=200, body=None, user_id=None),
        make(body=bytes(range(256)) * 4, issue="ticket #1"),
        make(user_id="Jüri \u2028 \U0001f600", issue='quote " backslash \\ tab \t nul \x00 del \x7f'),
        make(extensions={"data-subject": ("EE1", "EE2"), "purpose": "audit"}),
        make(created=datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(0)))),
    ],
)
def test_round_trip_and_rfc8785(record: LogRecord) -> None:
    encoded = record.encode()
    # The fast serialiser gives exactly RFC 8785's bytes for every value type a record holds.
    assert encoded == rfc8785.dumps(record.to_json())
    assert decode(encoded) == record
    assert decode(encoded).encode() == encoded


def test_extensions_are_frozen_and_lists_become_tuples() -> None:
    record = make(extensions={"data-subject": ["EE1"]})
    assert record.extensions["data-subject"] == ("EE1",)
    with pytest.raises(TypeError):
        record.extensions["x"] = "y"  # type: ignore[index]


def _mutate(change: dict[str, Any]) -> bytes:
    obj = json.loads(GOLDEN)
    for key, value in change.items():
        if value is KeyError:
            del obj[key]
        else:
            obj[key] = value
    return rfc8785.dumps(obj)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (GOLDEN.replace(b'{"body"', b'{ "body"'), "not in canonical JSON form"),
        (GOLDEN[:-1], "not valid JSON"),
        (b"[1]", "is not a JSON object"),
        (_mutate({"v": 2}), "format version 2 is not supported"),
        (_mutate({"body": KeyError}), "missing ['body'], unexpected []"),
        (_mutate({"extra": 1}), "missing [], unexpected ['extra']"),
        (_mutate({"body": "AAA"}), "field body is not padded standard base64"),
        (_mutate({"signing_cert": "AA-_"}), "field signing_cert is not padded standard base64"),
        (_mutate({"ocsp_response": None}), "field ocsp_response is not padded standard base64"),
        (_mutate({"created": "2026-01-02T03:04:05Z"}), "is not YYYY-MM-DDTHH:MM:SS.ffffffZ"),
        (_mutate({"created": "2026-13-02T03:04:05.000000Z"}), "log record is malformed"),
        (_mutate({"client": "DEV/GOV"}), "log record is malformed: client identifier 'DEV/GOV'"),
        (_mutate({"service": "DEV/GOV/1/x"}), "log record is malformed: service identifier"),
        (_mutate({"kind": "reply"}), "log record is malformed: log record: kind 'reply'"),
        (_mutate({"status": 200}), "status is required on a response record and absent on a request record"),
        (_mutate({"message_id": 5}), "field message_id must be a string"),
        (_mutate({"extensions": []}), "field extensions must be an object"),
        (_mutate({"extensions": {"A": "x"}}), "extension key 'A' must match"),
    ],
)
def test_decode_refuses(data: bytes, message: str) -> None:
    with pytest.raises(TrustError) as info:
        decode(data)
    assert message in info.value.message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"origin": "has space"}, "origin 'has space' must be printable ASCII without spaces"),
        ({"origin": ""}, "origin '' must be printable ASCII"),
        ({"origin": "x" * 256}, "origin is longer than 255 characters"),
        ({"kind": "reply"}, "kind 'reply' is not 'request' or 'response'"),
        ({"side": "both"}, "side 'both' is not 'client' or 'server'"),
        ({"message_id": "x" * 256}, "message_id is longer than 255 characters"),
        ({"path": "/" * 8193}, "path is longer than 8192 characters"),
        ({"user_id": 5}, "user_id must be a string, not int"),
        ({"issue": "\ud800"}, "issue contains a lone surrogate"),
        ({"created": datetime(2026, 1, 1)}, "created must be an aware UTC datetime"),
        ({"created": datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))}, "must be an aware UTC"),
        ({"kind": "response", "status": 99}, "status 99 is not an HTTP status code"),
        ({"kind": "response", "status": True}, "status True is not an HTTP status code"),
        ({"kind": "response"}, "status is required on a response record"),
        ({"status": 200}, "status is required on a response record and absent on a request record"),
        ({"signing_cert": "MIIB"}, "signing_cert must be bytes"),
        ({"body": "text"}, "body must be bytes or None"),
        ({"extensions": {"Purpose": "x"}}, "extension key 'Purpose' must match"),
        ({"extensions": {"purpose": 1}}, "extension purpose must be a string or a tuple of strings"),
        ({"extensions": {"s": ("a", 1)}}, "extension s item must be a string, not int"),
        ({"extensions": {f"k{i}": "v" for i in range(65)}}, "more than 64 extensions"),
    ],
)
def test_invalid_record(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(MessageLogError) as info:
        make(**changes)
    assert info.value.message.startswith("log record: ")
    assert message in info.value.message


def test_records_are_frozen_values() -> None:
    record = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.kind = "response"  # type: ignore[misc]
    assert record == make()
    assert record.loggable_size == 0
    assert make(body=None).loggable_size == 0
    assert make(body=b"abc").loggable_size == 3
