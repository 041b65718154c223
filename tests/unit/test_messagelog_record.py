"""Message-log records (gateway.messagelog.record): encoding (version 2: blobs and the signature base template),
decoding, leaf hash, validation."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785

from gateway.errors import MessageLogError, TrustError
from gateway.identifiers import ServiceId, SubsystemId
from gateway.messagelog.record import BASE_SOURCES, LogRecord, base_template, blob_name, decode, leaf_hash, rebuild_base

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
        "signature_base": b'"@method": GET\n"x-road-id": DEV-7a1c\n"x-road-signing-cert": MIIBAGNlcnQ=\n'
                          b'"@signature-params": ("@method");created=1',
        "signature_input": 'sig1=("@method");created=1',
        "signature": "sig1=:AAAA:",
        "signing_cert": b"\x30\x82\x01\x00cert",
        "ocsp_response": b"\x30\x03ocsp",
        "body_digest": "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
        "body": b"",
    }
    fields.update(changes)
    return LogRecord(**fields)


# The encoding of make(), fixed: a change here is a format change and needs a new version number. The
# certificate and OCSP response are named by their SHA-256; in the signature base template, 3 stands for the
# message id, 7 for the certificate's base64 and 9 for the signature input after its "=".
CERT = "02fb1028542782da8088491ceb20031cc5d7df0f756f4d2de35c89572c08355c"  # SHA-256 of make()'s signing_cert
OCSP = "0f0ca05b83258f84c74a70282cae9ce7096de3c9c075e0b2ca88b6071c5ba0f1"
GOLDEN = (
    b'{"body":"","body_digest":"sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",'
    b'"client":"DEV/GOV/1001/consumer","created":"2026-01-02T03:04:05.000067Z","extensions":{},'
    b'"issue":null,"kind":"request","message_id":"DEV-7a1c","method":"GET",'
    b'"ocsp_response":"' + OCSP.encode() + b'","origin":"DEV/GOV/1001/ss1","path":"/pets/1?x=1",'
    b'"request_id":"5f0e8d52-5b34-4ad5-a0a5-0c0b0c4bd5a1","service":"DEV/GOV/1002/provider/pets",'
    b'"side":"client","signature":"sig1=:AAAA:",'
    b'"signature_base":["\\"@method\\": GET\\n\\"x-road-id\\": ",3,"\\n\\"x-road-signing-cert\\": ",7,'
    b'"\\n\\"@signature-params\\": ",9,""],'
    b'"signature_input":"sig1=(\\"@method\\");created=1","signing_cert":"' + CERT.encode() + b'","status":null,'
    b'"user_id":"EE12345678901","v":2}'
)
BLOBS = {CERT: b"\x30\x82\x01\x00cert", OCSP: b"\x30\x03ocsp"}


def test_golden_encoding_and_leaf_hash() -> None:
    encoded = make().encode()
    assert encoded == GOLDEN
    assert dict(make().blobs()) == BLOBS
    assert all(blob_name(data) == name for name, data in BLOBS.items())
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
    assert decode(encoded, dict(record.blobs())) == record
    assert decode(encoded, dict(record.blobs())).encode() == encoded


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
        (_mutate({"v": 1}), "format version 1 is not supported (expected 2; version 1 records are not read"),
        (_mutate({"v": 3}), "format version 3 is not supported"),
        (_mutate({"body": KeyError}), "missing ['body'], unexpected []"),
        (_mutate({"extra": 1}), "missing [], unexpected ['extra']"),
        (_mutate({"body": "AAA"}), "field body is not padded standard base64"),
        (_mutate({"signing_cert": "AA-_"}), "field signing_cert is not a blob name (64 lower-case hex digits)"),
        (_mutate({"ocsp_response": None}), "field ocsp_response is not a blob name"),
        (_mutate({"ocsp_response": OCSP.upper()}), "field ocsp_response is not a blob name"),
        (_mutate({"signing_cert": "0" * 64}), f"field signing_cert refers to blob {'0' * 64}, which is not stored"),
        (_mutate({"signature_base": "text"}), "field signature_base is not a template"),
        (_mutate({"signature_base": ["a", 3]}), "field signature_base is not a template"),
        (_mutate({"signature_base": [3, "a", 4]}), "signature_base: item 0 must be text"),
        (_mutate({"signature_base": ["a", "b", "c"]}), "signature_base: item 1 must be a source number 0 to 9"),
        (_mutate({"signature_base": ["a", 10, "c"]}), "signature_base: item 1 must be a source number 0 to 9"),
        (_mutate({"signature_base": ["a", True, "c"]}), "signature_base: item 1 must be a source number 0 to 9"),
        (_mutate({"signature_base": ["a", 6, ""]}), "item 1 refers to source 6 (issue), which the record does not"),
        (_mutate({"signature_base": ["\u00e9"]}), "stands for a base that is not ASCII"),
        # a template that stands for the right base, but is not the one the encoder makes of it
        (_mutate({"signature_base": ['"@method": GET\n"x-road-id": DEV-7a1c\n"x-road-signing-cert": ', 7,
                                     '\n"@signature-params": ', 9, ""]}), "does not re-encode to the same bytes"),
        (_mutate({"signature_base": ['"@method": GET\n"x-road-id": ', 4, '\n"x-road-signing-cert": ', 7,
                                     '\n"@signature-params": ', 9, ""], "request_id": "DEV-7a1c"}),
         "does not re-encode to the same bytes"),
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
        decode(data, BLOBS)
    assert message in info.value.message


def test_decode_refuses_an_altered_or_missing_blob() -> None:
    with pytest.raises(TrustError, match=f"blob {CERT} \\(the record's signing_cert\\) does not hash to its name"):
        decode(GOLDEN, {**BLOBS, CERT: b"\x30\x82\x01\x00cerT"})
    with pytest.raises(TrustError, match=f"field ocsp_response refers to blob {OCSP}, which is not stored"):
        decode(GOLDEN, {CERT: BLOBS[CERT]})


@pytest.mark.parametrize(("base", "template"), [
    ("", [""]),
    ("no line has a source", ["no line has a source"]),
    ('"x-road-id": DEV-7a1c', ['"x-road-id": ', 3, ""]),
    ('"x-road-id": DEV-7a1c\n"x-road-id": other', ['"x-road-id": ', 3, '\n"x-road-id": other']),
    ('"x-road-id":  DEV-7a1c', ['"x-road-id":  DEV-7a1c']),  # the rest of the line must be the value exactly
    ('"x-road-id": DEV-7a1c ', ['"x-road-id": DEV-7a1c ']),
    (' "x-road-id": DEV-7a1c', [' "x-road-id": DEV-7a1c']),  # the line must begin with the prefix
    ('"x-road-userid": EE12345678901\n"x-road-issue": ', ['"x-road-userid": ', 5, '\n"x-road-issue": ']),
    ('"@signature-params": ("@method");created=1', ['"@signature-params": ', 9, ""]),
    ('"content-digest": sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:\n\n"x-road-signing-ocsp": MANvY3Nw\n',
     ['"content-digest": ', 0, '\n\n"x-road-signing-ocsp": ', 8, "\n"]),
])
def test_base_template_replaces_exactly_the_lines_of_a_source(base: str, template: list[str | int]) -> None:
    record = make()
    sources = record.base_sources()
    assert len(sources) == len(BASE_SOURCES)
    assert base_template(base, sources) == template
    assert rebuild_base(template, sources) == base
    again = make(signature_base=base.encode())
    assert decode(again.encode(), BLOBS) == again


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"origin": "has space"}, "origin 'has space' must be printable ASCII without spaces"),
        ({"origin": ""}, "origin '' must be printable ASCII"),
        ({"origin": "x" * 256}, "origin is longer than 255 characters"),
        ({"kind": "reply"}, "kind 'reply' is not 'request', 'response' or 'usage'"),
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
        ({"message_id": b"DEV-7a1c"}, "message_id must be a string, not bytes"),
        ({"signature_base": "text"}, "signature_base must be bytes"),
        ({"signature_base": "\u00e9".encode()}, "signature_base must be ASCII"),
        ({"request_id": "\udc80"}, "request_id contains a lone surrogate"),
    ],
)
def test_invalid_record(changes: dict[str, Any], message: str) -> None:
    make()  # the origin is known valid now: every change below meets the fast path first (LogRecord._usual)
    with pytest.raises(MessageLogError) as info:
        make(**changes)
    assert info.value.message.startswith("log record: ")
    assert message in info.value.message


class _Text(str):
    pass


@pytest.mark.parametrize("changes", [
    {}, {"path": "/caf\u00e9"}, {"user_id": None}, {"issue": "x" * 8192}, {"message_id": "m" * 255},
    {"created": datetime(2026, 1, 1, tzinfo=timezone(timedelta(0), "Z"))}, {"kind": "response", "status": 599},
    {"method": _Text("GET")}, {"body": None}, {"origin": "DEV/GOV/1001/ss1-w2"},
])
def test_the_fast_path_accepts_only_what_the_checks_accept(changes: dict[str, Any]) -> None:
    make()
    record = make(**changes)
    record._check()  # what __post_init__ runs when LogRecord._usual does not vouch for the record
    assert record._usual() is (changes in ({}, {"user_id": None}, {"body": None}, {"issue": "x" * 8192},
                                           {"message_id": "m" * 255}, {"kind": "response", "status": 599},
                                           {"origin": "DEV/GOV/1001/ss1-w2"}))  # known valid once seen
    assert make(**changes) == record


def test_records_are_frozen_values() -> None:
    record = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.kind = "response"  # type: ignore[misc]
    assert record == make()
    assert record.loggable_size == 0
    assert make(body=None).loggable_size == 0
    assert make(body=b"abc").loggable_size == 3


# ---- a body stored apart: the encoding and leaf hash streamed (docs/messagelog.md section 2) --------------


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 6, 7, 1000, 65_537, 300_001])
@pytest.mark.parametrize("piece", [2, 7, 4096, 1 << 20])
def test_a_streamed_encoding_is_the_encoding_of_the_record_with_its_body(size: int, piece: int) -> None:
    from gateway.messagelog.record import StreamedEncoding, body_apart_parts

    body = (hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1))[:size]
    whole = make(body=body).encode()
    bare = make(body=None)
    head, tail = body_apart_parts(bare)
    streamed = StreamedEncoding(bare)
    pieces = [head] + [streamed.update(body[i:i + piece]) for i in range(0, size, piece)]
    last, leaf = streamed.finish()
    assert b"".join([*pieces, last]) == whole and head + base64.b64encode(body) + tail == whole
    assert leaf == leaf_hash(whole) and streamed.size == len(whole) and streamed.body_size == size
    assert b'{"body":null' + tail[1:] == bare.encode()  # the record's own encoding, as the store keeps it


def test_a_record_stored_apart_carries_no_body_itself() -> None:
    from gateway.messagelog.record import StreamedEncoding

    with pytest.raises(MessageLogError, match=r"stored apart must carry none itself \(body=None\)"):
        StreamedEncoding(make(body=b"x"))
