"""One table of records, run through both record checkers of ``gateway log verify`` (step 3).

The general check (:meth:`gateway.messagelog.verify.records.RecordChecker.check`) decides every record: it
accepts it or names the problem. The lean check (:meth:`gateway.messagelog.verify.lean.LeanChecker.check_lean`)
accepts a record or defers it to the general one (in :func:`gateway.messagelog.verify.chunks.check_chunk`); here
it runs without that fallback, so that each row shows the lean check's own verdict. Each row says what the
general check decides and whether the lean check must accept the record (a valid record as the proxies log it);
for both checkers, whatever they accept must be accepted by the general check with the same result, so the lean
check never accepts what the general one refuses.

The rows: valid records of each kind, edits of the record's members (body, headers, signature, certificate,
OCSP response, signature base and input), raw edits of its bytes (JSON not in canonical form, not UTF-8...),
and signature bases of the wrong form signed again by their signer, so that only their form is wrong.
``tests/unit/test_archive_lean.py`` and ``tests/unit/test_verify_lean.py`` add random changes and the lean
check's shortcuts, each against the plain way it replaces.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from archive_kit import ORIGIN, LogWorld, base_text, exchange_records, make_world, set_base

from gateway.messagelog import verify
from gateway.messagelog.record import LogRecord, blob_name
from gateway.messagelog.verify import records

VALID = "valid"  # the general check's verdict for a record it accepts (else it names the problem)
DEFERS = "defers"  # the lean check's verdict for a record it does not accept


@dataclass
class Kit:
    world: LogWorld
    context: verify.CheckContext
    records: dict[str, bytes]  # the base records of the table, by name (Case.record)
    other: LogRecord  # the provider-signed response of another exchange


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    world = make_world(tmp_path_factory.mktemp("checkers"))
    context = verify.CheckContext(anchor=world.anchor.to_bytes(), envelopes=(world.envelope,), origin=ORIGIN,
                                  blobs=tuple(world.blobs.items()))
    created = world.now - timedelta(minutes=1)
    request, response = exchange_records(world, created=created, body=b'{"id":1,"name":"A \\"quoted\\" name"}')
    plain_request, plain_response = exchange_records(world, created=created)
    BLOBS.update(world.blobs)
    return Kit(world=world, context=context, other=plain_response, records={
        "request": request.encode(), "response": response.encode(),
        "plain request": plain_request.encode(), "plain response": plain_response.encode(),
    })


# ---- the two checkers --------------------------------------------------------------------------------------

Verdict = verify.Checked | str  # what step 3 establishes for an accepted record, else VALID's alternatives


def full_check(checker: verify.LeanChecker, line: bytes) -> Verdict:
    """The general check: the record accepted, or the problem it names."""
    try:
        return checker.check(line)
    except records._RecordProblem as e:
        return e.problem


def lean_check(checker: verify.LeanChecker, line: bytes) -> Verdict:
    """The lean check alone, without the fallback to the general check: the record accepted, or DEFERS."""
    checked = checker.check_lean(line)
    return DEFERS if checked is None else checked


CHECKERS: dict[str, Callable[[verify.LeanChecker, bytes], Verdict]] = {"full": full_check, "lean": lean_check}


@pytest.fixture(params=list(CHECKERS))
def checker_name(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs once per checker."""
    name: str = request.param
    return name


# ---- the table ---------------------------------------------------------------------------------------------

Make = Callable[[Kit, bytes], bytes]  # the base record -> the record to check


@dataclass(frozen=True)
class Case:
    name: str
    record: str  # the base record (Kit.records): "request"/"response" has a body with escapes, "plain ..." not
    make: Make
    expected: str | None  # the general check's verdict: VALID or its problem; None: it depends on random bytes
    lean: bool = False  # the lean check must accept the record (the general one accepts it)
    raw: bool = False  # an edit of the bytes (it must change them)

    @property
    def id(self) -> str:
        return f"{self.name} ({self.record})"

    def allowed(self, checker: str) -> set[str]:
        """The verdicts the checker may give (an accepted record's as VALID)."""
        if checker == "full":
            return {VALID} if self.expected == VALID else {VALID, *PROBLEMS} if self.expected is None else {
                self.expected}
        if self.expected == VALID:
            return {VALID} if self.lean else {VALID, DEFERS}
        return {DEFERS} if self.expected is not None else {VALID, DEFERS}


PROBLEMS = ("malformed", "origin", "signature", "certificate", "body", "blob")  # what the general check names


def canon(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def edited(edit: Callable[[dict[str, Any]], None]) -> Make:
    """An edit of the record's JSON object (which holds the other exchange's response as ``_other`` meanwhile)."""
    def make(kit: Kit, line: bytes) -> bytes:
        obj = json.loads(line)
        obj["_other"] = kit.other
        edit(obj)
        del obj["_other"]
        return canon(obj)
    return make


def keeping_base(edit: Callable[[dict[str, Any]], None]) -> Make:
    """An edit of the record's JSON object that keeps its signature base: the template made again, as the
    encoder would make it for the edited record."""
    def change(o: dict[str, Any]) -> None:
        base = base_text(o, BLOBS)
        edit(o)
        set_base(o, base, BLOBS)
    return edited(change)


def raw(edit: Callable[[bytes], bytes]) -> Make:
    return lambda kit, line: edit(line)


def resigned(fn: Callable[[str], str], record: Callable[[dict[str, Any]], None] | None = None) -> Make:
    """The record with its signature base edited (and the record, if ``record``) and signed again by its signer:
    only the base's form is wrong."""
    def make(kit: Kit, line: bytes) -> bytes:
        obj = json.loads(line)
        base = fn(base_text(obj, kit.world.blobs))
        if record is not None:
            record(obj)
        signer = kit.world.consumer_signer if obj["kind"] == "request" else kit.world.provider_signer
        set_base(obj, base, kit.world.blobs)
        obj["signature"] = f"xroad=:{b64(signer.sign(base.encode()))}:"
        return canon(obj)
    return make


BLOBS: dict[str, bytes] = {}  # the world's blobs, for the edits of the signature base (set by the kit fixture)


def edit_base(fn: Callable[[str], str]) -> Callable[[dict[str, Any]], None]:
    """An edit of the signature base's text, stored back as its template (not signed again)."""
    def edit(o: dict[str, Any]) -> None:
        set_base(o, fn(base_text(o, BLOBS)), BLOBS)
    return edit


def setter(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda o: o.update(values)


def literal_reference(o: dict[str, Any]) -> None:
    """The same base, with the message id written out in the template where the encoder writes source 3."""
    t = o["signature_base"]
    i = t.index(3)
    o["signature_base"] = [*t[:i - 1], t[i - 1] + o["message_id"] + t[i + 1], *t[i + 2:]]


def swap_stapled(o: dict[str, Any]) -> None:
    o["signing_cert"], o["ocsp_response"] = o["ocsp_response"], o["signing_cert"]


def stapled_line_changed(o: dict[str, Any]) -> None:
    base = base_text(o, BLOBS)
    i = base.index('"x-road-signing-cert": ') + len('"x-road-signing-cert": ') + 40
    set_base(o, base[:i] + ("A" if base[i] != "A" else "B") + base[i + 1:], BLOBS)


HASH_LINE = '"x-road-request-hash": sha-256=:AAAA:\n'
EXTRA = '\n"x-road-extra": 1'


def case(name: str, record: str, make: Make, expected: str | None, lean: bool = False) -> Case:
    return Case(name=name, record=record, make=make, expected=expected, lean=lean)


CASES: list[Case] = [
    # -- valid records, and edits of their members
    case("unchanged request", "request", edited(lambda o: None), VALID, lean=True),
    case("unchanged response", "response", edited(lambda o: None), VALID, lean=True),
    case("body not kept", "response", edited(setter(body=None)), VALID, lean=True),
    case("an extension (not signed)", "request",
         edited(setter(extensions={"purpose": "audit", "subjects": ["a", "b"]})), VALID, lean=True),
    case("version 3", "request", edited(setter(v=3)), "malformed"),
    case("version 1", "request", edited(setter(v=1)), "malformed"),
    case("version 2.0", "request", edited(setter(v=2.0)), "malformed"),
    case("another origin", "request", edited(setter(origin="DEV/GOV/1001/ss9")), "origin"),
    case("kind other", "request", edited(setter(kind="other")), "malformed"),
    case("request with a status", "request", edited(setter(status=200)), "malformed"),
    case("response status changed", "response", edited(setter(status=201)), "signature"),
    case("status out of range", "response", edited(setter(status=600)), "malformed"),
    case("status as text", "response", edited(setter(status="200")), "malformed"),
    case("side other", "request", edited(setter(side="middle")), "malformed"),
    case("created a second later", "request",
         edited(lambda o: o.update(created=o["created"].replace(".000000Z", ".000001Z"))), "signature"),
    case("created malformed", "request", edited(setter(created="yesterday")), "malformed"),
    case("message id changed", "request", edited(lambda o: o.update(message_id=o["message_id"] + "x")),
         "signature"),
    case("message id too long", "request", edited(setter(message_id="x" * 1000)), "malformed"),
    case("request id changed", "response", edited(lambda o: o.update(request_id=o["request_id"] + "x")),
         "signature"),
    case("client changed", "request", edited(setter(client="DEV/GOV/1001/other")), "signature"),
    case("service changed", "response", edited(setter(service="DEV/GOV/1002/registry/other")), "signature"),
    case("client malformed", "request", edited(setter(client="DEV/GOV")), "malformed"),
    case("user id changed", "request", edited(setter(user_id="EE0")), "signature"),
    case("user id removed", "request", edited(setter(user_id=None)), "signature"),
    case("issue added", "request", edited(setter(issue="TICKET-1")), "signature"),
    case("issue holding a member marker (not signed on a response)", "response",
         edited(setter(issue='a","kind":"x')), VALID, lean=True),
    case("user id holding a member marker", "request", edited(setter(user_id='a","v":1,"x":"')), "signature"),
    case("method changed", "request", edited(setter(method="POST")), "signature"),
    case("method padded", "request", edited(setter(method="GET ")), "signature"),
    case("path changed", "request", edited(setter(path="/persons/2?full=true")), "signature"),
    case("query removed", "request", edited(setter(path="/persons/1")), "signature"),
    case("body changed", "response", edited(lambda o: o.update(body=b64(b'{"id":2}'))), "body"),
    case("body digest changed", "response", edited(setter(body_digest="sha-256=:AAAA:")), "signature"),
    case("body not base64", "response", edited(setter(body="not base64!")), "malformed"),
    case("signature flipped", "request", edited(lambda o: o.update(signature=o["signature"][:8] + (
        "A" if o["signature"][8] != "A" else "B") + o["signature"][9:])), "signature"),
    case("signature of another label", "request",
         edited(lambda o: o.update(signature="other" + o["signature"][5:])), "signature"),
    case("signature input tag", "request", edited(lambda o: o.update(signature_input=o["signature_input"].replace(
        'tag="x-road-r1"', 'tag="x"'))), "signature"),
    case("signature input tag as token", "request", edited(lambda o: o.update(
        signature_input=o["signature_input"].replace('tag="x-road-r1"', "tag=x-road-r1"))), "signature"),
    case("signature input nonce", "request",
         edited(lambda o: o.update(signature_input=o["signature_input"] + ';nonce="n"')), "signature"),
    case("signature input expired", "request",
         edited(lambda o: o.update(signature_input=o["signature_input"] + ";expires=1")), "signature"),
    # valid, but not in the one form the proxies write: the lean check may defer it
    case("signature input second label", "request", keeping_base(lambda o: o.update(
        signature_input=o["signature_input"] + ', other=("@method");created=1')), VALID),
    case("signature input without the client", "request", edited(lambda o: o.update(
        signature_input=o["signature_input"].replace(' "x-road-client"', ""))), "signature"),
    case("signature base line changed", "request",
         edited(edit_base(lambda t: t.replace('"x-road-id": ', '"x-road-id": X'))), "signature"),
    case("signature base value padded", "request",
         edited(edit_base(lambda t: t.replace('"@method": GET', '"@method": GET '))), "signature"),
    case("signature base with CR", "request", edited(edit_base(lambda t: t.replace("\n", "\r\n", 1))), "signature"),
    case("signature base line added", "request", edited(edit_base(lambda t: t.replace(
        '"x-road-signing-cert"', '"x-road-extra": 1\n"x-road-signing-cert"'))), "signature"),
    case("signature base template with a value written out", "request", edited(literal_reference), "malformed"),
    case("signature base template not a list", "request", edited(setter(signature_base="text")), "malformed"),
    case("signature base template referring to a null issue", "request", edited(
        lambda o: o.update(signature_base=[*o["signature_base"][:-1], o["signature_base"][-1] + "\n", 6, ""])),
         "signature"),
    case("signature base template non-ASCII", "request", edited(
        lambda o: o.update(signature_base=["\u00e9", *o["signature_base"][1:]])), "signature"),
    case("bound request signature changed", "response", edited(edit_base(lambda t: t.replace(
        'key="xroad": :', 'key="xroad": :AAAA'))), "signature"),
    case("certificate of the provider on a request", "request", edited(lambda o: o.update(
        signing_cert=blob_name(o["_other"].signing_cert))), "signature"),
    # (the base names the record's OCSP response, so the certificate check, which comes first, refuses the pair)
    case("OCSP response of the provider", "request",
         edited(lambda o: o.update(ocsp_response=blob_name(o["_other"].ocsp_response))), "certificate"),
    case("certificate the archive does not hold", "request", edited(setter(signing_cert="0" * 64)), "blob"),
    case("OCSP response the archive does not hold", "response", edited(setter(ocsp_response="f" * 64)), "blob"),
    case("certificate name in upper case", "request",
         edited(lambda o: o.update(signing_cert=o["signing_cert"].upper())), "malformed"),
    # -- more edits of the members, on records whose body has no escapes
    case("request hash changed (signed, not logged)", "plain response", edited(edit_base(lambda t: t.replace(
        '"x-road-request-hash": sha-256=:AAAA:', '"x-road-request-hash": sha-256=:AAAB:'))), "signature"),
    case("request hash with a space after it", "plain response",
         edited(edit_base(lambda t: t.replace("sha-256=:AAAA:\n", "sha-256=:AAAA: \n"))), "signature"),
    case("request hash line removed", "plain response",
         edited(edit_base(lambda t: t.replace('"x-road-request-hash": sha-256=:AAAA:\n', ""))), "signature"),
    case("stapled certificate's line changed in the base", "plain request", edited(stapled_line_changed),
         "signature"),
    case("certificate and OCSP response swapped", "plain request", edited(swap_stapled), "signature"),
    case("template with a piece added", "plain request",
         edited(lambda o: o.update(signature_base=[*o["signature_base"], "x"])), "malformed"),
    case("template cut short by one piece", "plain request",
         edited(lambda o: o.update(signature_base=o["signature_base"][:-1])), "malformed"),
    case("template with a reference to another source", "plain request", edited(
        lambda o: o.update(signature_base=[4 if p == 3 else p for p in o["signature_base"]])), "signature"),
    case("template whose parameters are written out", "plain response", edited(
        lambda o: o.update(signature_base=[*o["signature_base"][:-2], o["signature_base"][-3][:0]
                                           + o["signature_base"].pop(-3) + o["signature_input"][6:]])), "malformed"),
    case("base with a line before the first", "plain request",
         edited(edit_base(lambda t: '"x-road-extra": 1\n' + t)), "signature"),
    case("base with the params line twice", "plain response",
         edited(edit_base(lambda t: t + "\n" + t.rsplit("\n", 1)[1])), "signature"),
    case("base with a tab after a value", "plain request",
         edited(edit_base(lambda t: t.replace("\n", "\t\n", 1))), "signature"),
    case("base with a space before a value", "plain request",
         edited(edit_base(lambda t: t.replace('"x-road-id": ', '"x-road-id":  '))), "signature"),
    case("bound signature not base64", "plain response",
         edited(edit_base(lambda t: t.replace('key="xroad": :', 'key="xroad": :!'))), "signature"),
    case("signature of the wrong length", "plain request",
         edited(lambda o: o.update(signature="xroad=:" + b64(b"x" * 63) + ":")), "signature"),
    case("signature with padding bits set", "plain request", edited(
        lambda o: o.update(signature=o["signature"][:-4] + chr(ord(o["signature"][-4]) + 1) + "==:")), None),
    case("path holding a line feed", "plain request", edited(setter(path="/persons/1\n?full=true")), "signature"),
    case("method holding a tab", "plain request", edited(setter(method="G\tET")), "signature"),
    case("user id with an escape (signed on a request)", "plain request", edited(setter(user_id="EE1\u00e9")),
         "signature"),
    case("user id with an escape (not signed on a response)", "plain response",
         edited(setter(user_id="EE1\u00e9\"x")), VALID, lean=True),
    case("issue with a line feed (not signed on a response)", "plain response", edited(setter(issue="a\nb")),
         VALID, lean=True),
    case("body with padding bits set", "plain response",
         edited(lambda o: o.update(body=o["body"][:-2] + "1=")), "malformed"),
    case("body of another record with its digest", "plain response",
         edited(lambda o: o.update(body=b64(b"{}"))), "body"),
    case("status out of range", "plain response", edited(setter(status=99)), "malformed"),
    case("extensions holding braces", "plain request", edited(setter(extensions={"note": "{x}"})), VALID),
    case("an origin with a quote", "plain request", edited(setter(origin='DEV/GOV/1001/"ss1')), "origin"),
    # -- signature bases of the wrong form, signed again: the signature verifies over each
    case("base unchanged, signed again", "plain request", resigned(lambda t: t), VALID, lean=True),
    case("base unchanged, signed again", "plain response", resigned(lambda t: t), VALID, lean=True),
    case("a space after the request hash", "plain response",
         resigned(lambda t: t.replace(":AAAA:\n", ":AAAA: \n")), "signature"),
    case("a space before the request hash", "plain response",
         resigned(lambda t: t.replace(": sha-256=:AAAA:", ":  sha-256=:AAAA:")), "signature"),
    case("a tab after the request hash", "plain response",
         resigned(lambda t: t.replace(":AAAA:\n", ":AAAA:\t\n")), "signature"),
    case("a CR in the request hash", "plain response", resigned(lambda t: t.replace(":AAAA:\n", ":AA\rAA:\n")),
         "signature"),
    case("a space after the bound signature", "plain response", resigned(
        lambda t: t.replace(':\n"@signature-params', ': \n"@signature-params')), "signature"),
    case("a line added", "plain response",
         resigned(lambda t: t.replace(HASH_LINE, HASH_LINE + '"x-road-extra": 1\n')), "signature"),
    case("a line added", "plain request", resigned(lambda t: '"x-road-extra": 1\n' + t), "signature"),
    case("a space before the message id", "plain request",
         resigned(lambda t: t.replace('"x-road-id": ', '"x-road-id":  ')), "signature"),
    case("the request hash empty", "plain response",
         resigned(lambda t: t.replace(HASH_LINE, '"x-road-request-hash": \n')), None),
    case("the bound signature not canonical", "plain response",
         resigned(lambda t: t.replace('key="xroad": :', 'key="xroad": : ')), "signature"),
    case("the bound signature between letters", "plain response", resigned(
        lambda t: t.replace('key="xroad": :', 'key="xroad": A').replace(':\n"@signature-params',
                                                                        'A\n"@signature-params')), "signature"),
    # -- a value holding a line feed, signed as such, makes a line of its own in the base
    case("message id holding a line", "plain response", resigned(
        lambda t: t.replace('"x-road-id": DEV-', '"x-road-id": ' + EXTRA[1:] + "\n" + '"x-road-id": DEV-'),
        lambda o: o.update(message_id=o["message_id"] + EXTRA)), "signature"),
    case("message id holding a line, at its end", "plain response", resigned(
        lambda t: t.replace('\n"x-road-request-id"', EXTRA + '\n"x-road-request-id"'),
        lambda o: o.update(message_id=o["message_id"] + EXTRA)), "signature"),
    case("path holding a line", "plain request", resigned(
        lambda t: t.replace('"@path": /persons/1', '"@path": /persons/1' + EXTRA),
        lambda o: o.update(path="/persons/1" + EXTRA + "?full=true")), "signature"),
]

# Raw edits of the bytes: the JSON is no longer in canonical form, or no longer JSON.
RAW: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("space after a colon", lambda b: b.replace(b'"kind":', b'"kind": ', 1)),
    ("members out of order", lambda b: b.replace(b'{"body":', b'{"zz":0,"body":', 1)),
    ("duplicate member", lambda b: b.replace(b',"v":2}', b',"v":2,"v":2}')),
    ("needless escape", lambda b: b.replace(b'"method":"GET"', b'"method":"\\u0047ET"')),
    ("escaped slash", lambda b: b.replace(b'"client":"DEV/', b'"client":"DEV\\/')),
    ("integer as 2.0", lambda b: b.replace(b',"v":2}', b',"v":2.0}')),
    ("template with a space", lambda b: b.replace(b'"signature_base":["', b'"signature_base":[ "', 1)),
    ("trailing newline", lambda b: b + b"\n"),
    ("not UTF-8", lambda b: b.replace(b'"kind"', b'"\xff"', 1)),
    ("raw control character", lambda b: b.replace(b'"method":"GET"', b'"method":"G\x01T"')),
    ("truncated", lambda b: b[:-10]),
]
CASES += [Case(name=name, record=record, make=raw(edit), expected="malformed", raw=True)
          for name, edit in RAW for record in ("request", "response")]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_checker_decides_each_record(kit: Kit, checker_name: str, case: Case) -> None:
    base = kit.records[case.record]
    line = case.make(kit, base)
    if case.raw:
        assert line != base
    decide = CHECKERS[checker_name]
    fresh = kit.context.checker()
    warm = kit.context.checker()  # its caches hold the unchanged records' certificates, inputs and bodies
    for unchanged in kit.records.values():
        assert warm.check_lean(unchanged) is not None
    for checker in (fresh, fresh, warm):  # the second time from the caches
        verdict = decide(checker, line)
        assert (VALID if isinstance(verdict, verify.Checked) else verdict) in case.allowed(checker_name), case.id
        if isinstance(verdict, verify.Checked):  # what either accepts, the general check accepts, with that result
            assert full_check(checker, line) == verdict
