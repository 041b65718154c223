"""Matching the consumer's and the provider's logs of the same exchanges (pure).

docs/messagelog.md: both security servers log every exchange: the consumer's server (``side="client"``)
and the provider's (``side="server"``) each a request and a response record. The records of one exchange
share ``request_id`` (the id the consumer's server generates and signs). Because both servers log the very
same signed messages, the request records must agree on the signature and everything it covers, and so must
the response records.

:func:`match_logs` pairs the consumer's client-side records with the provider's server-side records by
``request_id`` and sorts each exchange into one of three kinds (each side may be the logs of several origins of
one server, merged: one per worker and node; an exchange logged twice on one side, in one origin or in two, is a
``duplicate``):

- **paired**: both sides hold the request and the response record, and they agree;
- **failed** (a ``note``): the exchange did not complete, and the logs show it as the invariant of
  docs/messagelog.md section 11 says a failed exchange looks: the consumer holds no response record (no
  provider's answer reached its caller) and one side holds only the request. The provider unreachable or
  refusing before it logged (consumer: request; provider: nothing), the provider failing before it answered
  (both: request only), an answer lost on the way back or refused by the consumer (provider: both records;
  consumer: request only), a consumer that crashed while its request record was committing (consumer:
  nothing; provider: request only). Request records both sides hold must still agree;
- **problems** (``error``): records that are missing or differ, which no failure explains:

  1. exchanges one side logged completely and the other not at all (a note only, when the exchange lies
     outside the time span of the other log: archives of different ranges overlap only partly);
  2. a completed exchange (the consumer holds its response) that lacks a record on either side;
  3. exchanges logged differently: any of the compared fields differs (:data:`REQUEST_FIELDS`,
     :data:`RESPONSE_FIELDS`; bodies only when both sides kept them).

Only problems make :attr:`MatchReport.ok` false.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

REQUEST_FIELDS = (
    "message_id", "client", "service", "user_id", "issue", "created", "method", "path", "signature_input",
    "signature", "signature_base", "signing_cert", "body_digest",
)
RESPONSE_FIELDS = (
    "message_id", "client", "service", "created", "status", "signature_input", "signature", "signature_base",
    "signing_cert", "body_digest",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One record as the matcher sees it: its sequence number, its JSON fields, and the log origin it comes
    from (a side may be several origins: one per worker and node of the server, docs/messagelog.md section 5)."""

    seq: int
    fields: Mapping[str, Any]
    origin: str = ""

    @property
    def where(self) -> str:
        return f"seq {self.seq}" + (f" of {self.origin}" if self.origin else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Mismatch:
    request_id: str
    problem: str  # consumer-only, provider-only, differs, duplicate; failed (a note)
    message: str
    severity: Literal["error", "note"] = "error"

    def line(self) -> str:
        tag = "FAIL" if self.severity == "error" else "note"
        return f"{tag} exchange {self.request_id}: {self.problem}: {self.message}"


@dataclass(slots=True, kw_only=True)
class MatchReport:
    consumer_origin: str
    provider_origin: str
    paired: int = 0  # exchanges both sides logged identically
    failed: int = 0  # exchanges that did not complete, logged as a failed exchange is (module docstring)
    consumer_exchanges: int = 0
    provider_exchanges: int = 0
    ignored: int = 0  # records of the other side in each log (a server can be consumer and provider)
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(m.severity == "error" for m in self.mismatches)

    def summary(self) -> str:
        lines = [
            f"consumer log {self.consumer_origin}: {self.consumer_exchanges} exchanges (client side)",
            f"provider log {self.provider_origin}: {self.provider_exchanges} exchanges (server side)",
            f"paired and identical: {self.paired}",
            f"failed exchanges (no answer reached the consumer's caller): {self.failed}",
        ]
        if self.ignored:
            lines.append(f"records of the other side, not compared: {self.ignored}")
        lines += [m.line() for m in self.mismatches]
        n = sum(m.severity == "error" for m in self.mismatches)
        lines.append("RESULT: OK, both sides agree" if n == 0 else f"RESULT: FAILED, {n} problem(s)")
        return "\n".join(lines)


Exchange = dict[str, Entry]  # kind -> entry


def _index(entries: Iterable[Entry], side: str) -> tuple[dict[str, Exchange], int, list[Mismatch]]:
    out: dict[str, Exchange] = {}
    ignored = 0
    problems: list[Mismatch] = []
    for e in entries:
        if e.fields.get("side") != side:
            ignored += 1
            continue
        rid = str(e.fields.get("request_id"))
        kind = str(e.fields.get("kind"))
        ex = out.setdefault(rid, {})
        if kind in ex:
            problems.append(Mismatch(
                request_id=rid, problem="duplicate",
                message=f"the {side} side logged the {kind} twice ({_two(ex[kind], e)})",
            ))
            continue
        ex[kind] = e
    return out, ignored, problems


def _two(a: Entry, b: Entry) -> str:
    if a.origin == b.origin:
        return f"seq {a.seq} and {b.seq}" + (f" of {a.origin}" if a.origin else "")
    return f"{a.where} and {b.where}"


def _span(exchanges: Mapping[str, Exchange]) -> tuple[str, str] | None:
    times = [str(e.fields["created"]) for ex in exchanges.values() for e in ex.values()
             if isinstance(e.fields.get("created"), str)]
    return (min(times), max(times)) if times else None


def _seqs(ex: Exchange) -> str:
    return ", ".join(f"{k} {e.where}" for k, e in sorted(ex.items(), key=lambda kv: (kv[1].origin, kv[1].seq)))


def _created(ex: Exchange) -> str:
    return min(str(e.fields.get("created")) for e in ex.values())


def _failure(c: Exchange, p: Exchange) -> str:
    """Why the exchange counts as failed (module docstring), or "" if it does not."""
    if "response" in c or ("request" not in c and "request" not in p) or ("response" in p and "request" not in p):
        return ""
    if "request" not in c:  # the provider holds the request (and perhaps more): see below
        if "response" in p:
            return ""
        return (f"the provider logged the request ({_seqs(p)}) but not the response, and the consumer has no "
                "record: its request record was not durable when it stopped")
    if not p:
        return (f"the consumer logged the request ({_seqs(c)}) and no response; the provider has no record: "
                "the request did not reach it, or it refused it before logging")
    if "response" not in p:
        return (f"both logged the request (consumer {_seqs(c)}, provider {_seqs(p)}), neither a response: the "
                "provider failed before it answered")
    return (f"the provider answered ({_seqs(p)}) but the consumer logged only the request ({_seqs(c)}): the "
            "answer did not reach it, or it refused the answer")


def _missing(c: Exchange, p: Exchange) -> list[str]:
    """A completed exchange lacks a record on one side."""
    out = []
    for kind in ("request", "response"):
        for who, ex in (("consumer", c), ("provider", p)):
            if kind not in ex:
                out.append(f"the {who} has no {kind} record")
    return out


def _differences(c: Exchange, p: Exchange) -> list[str]:
    """Fields of the records both sides hold that differ."""
    out = []
    for kind, names in (("request", REQUEST_FIELDS), ("response", RESPONSE_FIELDS)):
        if kind not in c or kind not in p:
            continue
        a, b = c[kind].fields, p[kind].fields
        for name in names:
            if a.get(name) != b.get(name):
                out.append(f"{kind} {name} differs: consumer {str(a.get(name))[:60]!r}, "
                           f"provider {str(b.get(name))[:60]!r}")
        if a.get("body") is not None and b.get("body") is not None and a["body"] != b["body"]:
            out.append(f"{kind} body differs")
    return out


def match_logs(
    consumer: Iterable[Entry], provider: Iterable[Entry], *, consumer_origin: str, provider_origin: str,
) -> MatchReport:
    """Pair the two logs' records of the same exchanges (module docstring)."""
    report = MatchReport(consumer_origin=consumer_origin, provider_origin=provider_origin)
    cons, ignored_c, dup_c = _index(consumer, "client")
    prov, ignored_p, dup_p = _index(provider, "server")
    report.ignored = ignored_c + ignored_p
    report.consumer_exchanges, report.provider_exchanges = len(cons), len(prov)
    report.mismatches += dup_c + dup_p
    span_c, span_p = _span(cons), _span(prov)
    for rid in sorted(set(cons) | set(prov), key=lambda r: _created(cons.get(r) or prov[r])):
        c, p = cons.get(rid), prov.get(rid)
        # (1) logged completely by one side only (a side holding only the request is a failure: (2))
        if (c is None or p is None) and set(c or p or {}) != {"request"}:
            mine, other_span, who, other = (p, span_c, "provider", "consumer") if c is None else (
                c, span_p, "consumer", "provider")
            assert mine is not None
            when = _created(mine)
            outside = other_span is None or not other_span[0] <= when <= other_span[1]
            report.mismatches.append(Mismatch(
                request_id=rid, problem=f"{who}-only",
                message=f"logged by the {who} ({_seqs(mine)}, created {when}) but not by the {other}"
                        + (" (outside the time span of the other log)" if outside else ""),
                severity="note" if outside else "error",
            ))
            continue
        c, p = c or {}, p or {}
        # (2) an exchange that failed: no response on the consumer's side, only a request on one side
        failure = _failure(c, p)
        problems = [] if failure else _missing(c, p)
        # (3) the same signed messages, as far as both sides logged them
        problems += _differences(c, p)
        if problems:
            report.mismatches.append(Mismatch(
                request_id=rid, problem="differs",
                message=f"consumer {_seqs(c)}, provider {_seqs(p)}: " + "; ".join(problems),
            ))
        elif failure:
            report.failed += 1
            report.mismatches.append(Mismatch(request_id=rid, problem="failed", message=failure, severity="note"))
        else:
            report.paired += 1
    return report


__all__ = ["REQUEST_FIELDS", "RESPONSE_FIELDS", "Entry", "MatchReport", "Mismatch", "match_logs"]
