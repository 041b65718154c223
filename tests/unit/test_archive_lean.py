"""The lean record check of ``gateway log verify`` against the general one (gateway.messagelog.verify).

``RecordChecker.check_lean`` decides most records without a general RFC 9421 re-parse; whatever it does not
accept goes to ``RecordChecker.check``, which decides and explains. The lean check must never accept a record
that the general check refuses: each tampered record below is given to both.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from archive_kit import ORIGIN, LogWorld, exchange_records, make_world

from gateway.messagelog import verify
from gateway.messagelog.record import LogRecord
from gateway.messagelog.verify import records


@dataclass
class Kit:
    world: LogWorld
    checker: verify.LeanChecker
    request: bytes
    response: bytes
    other: LogRecord  # the provider-signed response of another exchange


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    world = make_world(tmp_path_factory.mktemp("lean"))
    context = verify.CheckContext(anchor=world.anchor.to_bytes(), envelopes=(world.envelope,), origin=ORIGIN)
    created = world.now - timedelta(minutes=1)
    request, response = exchange_records(world, created=created, body=b'{"id":1,"name":"A \\"quoted\\" name"}')
    _, other = exchange_records(world, created=created)
    return Kit(world=world, checker=context.checker(), request=request.encode(), response=response.encode(),
               other=other)


def canon(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def edit_base(fn: Callable[[str], str]) -> Callable[[dict[str, Any]], None]:
    """An edit of the signature base's text, stored back as canonical base64."""
    def edit(o: dict[str, Any]) -> None:
        o["signature_base"] = b64(fn(base64.b64decode(o["signature_base"]).decode()).encode())
    return edit


def setter(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda o: o.update(values)


def odd_padding(o: dict[str, Any]) -> None:
    text = o["signature_base"]
    # the same bytes, spelled with non-zero padding bits where the encoding has padding
    if text.endswith("=="):
        o["signature_base"] = text[:-3] + chr(ord(text[-3]) + 1) + "=="
    elif text.endswith("="):
        o["signature_base"] = text[:-2] + chr(ord(text[-2]) + 1) + "="
    else:
        o["signature_base"] = text + "\n"


# (name, record kind, edit of the JSON object, whether the record stays valid)
EDITS: list[tuple[str, str, Callable[[dict[str, Any]], None], bool]] = [
    ("unchanged request", "request", lambda o: None, True),
    ("unchanged response", "response", lambda o: None, True),
    ("body not kept", "response", setter(body=None), True),
    ("an extension (not signed)", "request", setter(extensions={"purpose": "audit", "subjects": ["a", "b"]}), True),
    ("version 2", "request", setter(v=2), False),
    ("version 1.0", "request", setter(v=1.0), False),
    ("another origin", "request", setter(origin="DEV/GOV/1001/ss9"), False),
    ("kind other", "request", setter(kind="other"), False),
    ("request with a status", "request", setter(status=200), False),
    ("response status changed", "response", setter(status=201), False),
    ("status out of range", "response", setter(status=600), False),
    ("status as text", "response", setter(status="200"), False),
    ("side other", "request", setter(side="middle"), False),
    ("created a second later", "request", lambda o: o.update(created=o["created"].replace(".000000Z", ".000001Z")),
     False),
    ("created malformed", "request", setter(created="yesterday"), False),
    ("message id changed", "request", lambda o: o.update(message_id=o["message_id"] + "x"), False),
    ("message id too long", "request", setter(message_id="x" * 1000), False),
    ("request id changed", "response", lambda o: o.update(request_id=o["request_id"] + "x"), False),
    ("client changed", "request", setter(client="DEV/GOV/1001/other"), False),
    ("service changed", "response", setter(service="DEV/GOV/1002/registry/other"), False),
    ("client malformed", "request", setter(client="DEV/GOV"), False),
    ("user id changed", "request", setter(user_id="EE0"), False),
    ("user id removed", "request", setter(user_id=None), False),
    ("issue added", "request", setter(issue="TICKET-1"), False),
    ("issue holding a member marker (not signed on a response)", "response", setter(issue='a","kind":"x'), True),
    ("user id holding a member marker", "request", setter(user_id='a","v":1,"x":"'), False),
    ("method changed", "request", setter(method="POST"), False),
    ("method padded", "request", setter(method="GET "), False),
    ("path changed", "request", setter(path="/persons/2?full=true"), False),
    ("query removed", "request", setter(path="/persons/1"), False),
    ("body changed", "response", lambda o: o.update(body=b64(b'{"id":2}')), False),
    ("body digest changed", "response", setter(body_digest="sha-256=:AAAA:"), False),
    ("body not base64", "response", setter(body="not base64!"), False),
    ("signature flipped", "request", lambda o: o.update(signature=o["signature"][:8] + (
        "A" if o["signature"][8] != "A" else "B") + o["signature"][9:]), False),
    ("signature of another label", "request", lambda o: o.update(signature="other" + o["signature"][5:]), False),
    ("signature input tag", "request", lambda o: o.update(signature_input=o["signature_input"].replace(
        'tag="x-road-r1"', 'tag="x"')), False),
    ("signature input tag as token", "request", lambda o: o.update(signature_input=o["signature_input"].replace(
        'tag="x-road-r1"', "tag=x-road-r1")), False),
    ("signature input nonce", "request", lambda o: o.update(signature_input=o["signature_input"] + ';nonce="n"'),
     False),
    ("signature input expired", "request", lambda o: o.update(signature_input=o["signature_input"] + ";expires=1"),
     False),
    ("signature input second label", "request", lambda o: o.update(
        signature_input=o["signature_input"] + ', other=("@method");created=1'), True),
    ("signature input without the client", "request", lambda o: o.update(
        signature_input=o["signature_input"].replace(' "x-road-client"', "")), False),
    ("signature base line changed", "request", edit_base(lambda t: t.replace('"x-road-id": ', '"x-road-id": X')),
     False),
    ("signature base value padded", "request", edit_base(lambda t: t.replace('"@method": GET', '"@method": GET ')),
     False),
    ("signature base with CR", "request", edit_base(lambda t: t.replace("\n", "\r\n", 1)), False),
    ("signature base line added", "request", edit_base(lambda t: t.replace(
        '"x-road-signing-cert"', '"x-road-extra": 1\n"x-road-signing-cert"')), False),
    ("signature base non-canonical base64", "request", odd_padding, False),
    ("bound request signature changed", "response", edit_base(lambda t: t.replace(
        'key="xroad": :', 'key="xroad": :AAAA')), False),
    ("certificate of the provider on a request", "request", lambda o: o.update(
        signing_cert=b64(o["_other"].signing_cert)), False),
    ("OCSP response of the provider", "request", lambda o: o.update(ocsp_response=b64(o["_other"].ocsp_response)),
     False),
]


def _edited(kit: Kit, kind: str, edit: Callable[[dict[str, Any]], None]) -> bytes:
    obj = json.loads(kit.request if kind == "request" else kit.response)
    obj["_other"] = kit.other
    edit(obj)
    del obj["_other"]
    return canon(obj)


def _full(kit: Kit, line: bytes) -> verify.Checked | None:
    try:
        return kit.checker.check(line)
    except records._RecordProblem:
        return None


@pytest.mark.parametrize(("name", "kind", "edit", "valid"), EDITS, ids=[e[0] for e in EDITS])
def test_lean_check_agrees_with_the_general_check(
    kit: Kit, name: str, kind: str, edit: Callable[[dict[str, Any]], None], valid: bool,
) -> None:
    line = _edited(kit, kind, edit)
    lean, full = kit.checker.check_lean(line), _full(kit, line)
    assert (full is not None) == valid, name
    if valid and "label" not in name:
        assert lean is not None, "the lean check must decide records as the proxies log them"
    if lean is not None:
        assert lean == full


# Raw edits of the bytes: the JSON is no longer in canonical form, or no longer JSON.
RAW: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("space after a colon", lambda b: b.replace(b'"kind":', b'"kind": ', 1)),
    ("members out of order", lambda b: b.replace(b'{"body":', b'{"zz":0,"body":', 1)),
    ("duplicate member", lambda b: b.replace(b',"v":1}', b',"v":1,"v":1}')),
    ("needless escape", lambda b: b.replace(b'"method":"GET"', b'"method":"\\u0047ET"')),
    ("escaped slash", lambda b: b.replace(b'"client":"DEV/', b'"client":"DEV\\/')),
    ("integer as 1.0", lambda b: b.replace(b',"v":1}', b',"v":1.0}')),
    ("trailing newline", lambda b: b + b"\n"),
    ("not UTF-8", lambda b: b.replace(b'"kind"', b'"\xff"', 1)),
    ("raw control character", lambda b: b.replace(b'"method":"GET"', b'"method":"G\x01T"')),
    ("truncated", lambda b: b[:-10]),
]


@pytest.mark.parametrize(("name", "edit"), RAW, ids=[r[0] for r in RAW])
def test_lean_check_refuses_what_is_not_canonical(kit: Kit, name: str, edit: Callable[[bytes], bytes]) -> None:
    for line in (kit.request, kit.response):
        changed = edit(line)
        assert changed != line
        assert kit.checker.check_lean(changed) is None, name
        assert _full(kit, changed) is None, name


def test_random_byte_changes_are_never_accepted_by_the_lean_check_alone(kit: Kit) -> None:
    rng = random.Random(9421)
    for _ in range(1500):
        line = bytearray(rng.choice((kit.request, kit.response)))
        for _ in range(rng.randint(1, 3)):
            line[rng.randrange(len(line))] = rng.randrange(256)
        lean = kit.checker.check_lean(bytes(line))
        if lean is not None:  # a change that leaves a valid record (e.g. inside an unsigned field)
            assert _full(kit, bytes(line)) == lean


def test_split_record_finds_each_member(kit: Kit) -> None:
    parts = verify.split_record(kit.request.decode())
    assert parts is not None and len(parts) == len(verify.RECORD_FIELDS)
    obj = json.loads(kit.request)
    for name, text in zip(sorted(verify.RECORD_FIELDS), parts, strict=True):
        assert json.loads(text) == obj[name]

