"""A security server's transparency: recording usage records, and the ``findUsage``, ``usagePeriod`` and
``heartbeat`` metaservices (I/O). docs/transparency.md sections 3-4.

The metaservices are reserved service codes of every client subsystem the server hosts, called over the
exchange (signed and logged like any r1 call) and answered only to the portal's subsystem named in the global
configuration; any other client gets 403 ``Client.AccessDenied``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from gateway.errors import GatewayError, RequestError
from gateway.files import PRIVATE_FILE_MODE
from gateway.globalconf.model import GlobalConf
from gateway.globalconf.transparency import TransparencyConf
from gateway.identifiers import ClientId, ServiceId, SubsystemId
from gateway.messagelog.record import Side, blob_refs
from gateway.messagelog.store.base import IndexRows, MessageLogStore
from gateway.transparency import evidence, headers
from gateway.transparency.headers import NotEntitled, Transparency
from gateway.transparency.index import UsageIndex, index_rows
from gateway.transparency.records import UsageEntry, blind_index, usage_entry

log = structlog.get_logger("gateway.transparency")

USAGE_SERVICES = frozenset({"findUsage", "usagePeriod", "heartbeat"})
KEY_FILE = "transparency.key"
KEY_BYTES = 32
DEFAULT_MAX_PAGE = 100
MAX_FIND_BODY = 4096  # bytes of a findUsage request body


def load_key(state_dir: str | Path) -> bytes:
    """The server's transparency key (blind index, pseudonyms): ``<state_dir>/transparency.key``, 32 random
    bytes made on first use, mode 0600, like the server's other secrets.

    Raises:
        GatewayError: the file cannot be read or made, or it is not 32 bytes.
    """
    path = Path(state_dir) / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        pass
    except OSError as e:
        raise GatewayError(f"the transparency key {path} cannot be made: {e}") from e
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(KEY_BYTES))
    try:
        key = path.read_bytes()
    except OSError as e:
        raise GatewayError(f"the transparency key {path} cannot be read: {e}") from e
    if len(key) != KEY_BYTES:
        raise GatewayError(f"the transparency key {path} is not {KEY_BYTES} bytes")
    return key


@dataclass(slots=True, kw_only=True)
class TransparencyState:
    """What a server's proxies need for transparency (``ProxyContext.transparency``)."""

    key: bytes
    index: UsageIndex
    max_subjects: int = headers.DEFAULT_MAX_SUBJECTS
    max_page: int = DEFAULT_MAX_PAGE
    envelope_path: Path | None = None  # the cached signed global configuration (evidence)
    clock: Callable[[], datetime] | None = None  # findUsage's "now" for embargoes (tests); None: the server's
    _tconf: tuple[int, TransparencyConf] | None = field(default=None, repr=False)

    def tconf(self, conf: GlobalConf) -> TransparencyConf:
        return TransparencyConf.of(conf)

    def parse(
        self,
        fields: Mapping[str, str],
        *,
        client: ClientId,
        conf: GlobalConf,
        now: datetime,
    ) -> Transparency | None:
        """The request's transparency headers, checked (see :func:`headers.parse`)."""
        return headers.parse(
            fields, client=client, tconf=TransparencyConf.of(conf), now=now, max_subjects=self.max_subjects
        )

    def entry(
        self,
        *,
        origin: str,
        side: Side,
        message_id: str,
        request_id: str,
        client: ClientId,
        service: ServiceId,
        method: str,
        path: str,
        status: int,
        created: datetime,
        request_hash: str,
        t: Transparency,
        user_id: str | None,
        signing_cert: bytes,
        ocsp_response: bytes,
    ) -> UsageEntry:
        """The exchange's usage record and its subjects' salts: the proxy queues the record with the response's
        (one group commit, docs/transparency.md section 3), with its :meth:`index_rows`."""
        return usage_entry(
            origin=origin,
            side=side,
            message_id=message_id,
            request_id=request_id,
            client=client,
            service=service,
            method=method,
            path=path,
            status=status,
            created=created,
            request_hash=request_hash,
            t=t,
            user_id=user_id,
            key=self.key,
            signing_cert=signing_cert,
            ocsp_response=ocsp_response,
        )

    def index_rows(self, entry: UsageEntry) -> IndexRows | None:
        """What the proxy passes with the usage record (``messagelog.start(entry.record, index_rows=...)``): its
        blind-index rows, which the message log's writer inserts in the record's own transaction once it has
        its sequence number (docs/transparency.md section 3); None for a record without subjects."""
        if not entry.subjects:
            return None
        key = self.key
        return index_rows(lambda seq: entry.rows(key, seq))


def _parse_time(value: object, name: str) -> datetime:
    if not isinstance(value, str):
        raise RequestError(f"findUsage: {name} must be an RFC 3339 date-time string")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise RequestError(f"findUsage: {name} {value[:40]!r} is not an RFC 3339 date-time") from e
    if t.tzinfo is None:
        raise RequestError(f"findUsage: {name} needs a time zone (Z or an offset)")
    return t.astimezone(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class FindRequest:
    user_code: str
    start: datetime
    end: datetime
    offset: int
    limit: int


def parse_find(body: bytes, *, max_page: int) -> FindRequest:
    """A ``findUsage`` request body.

    Raises:
        RequestError: not the JSON object of docs/transparency.md section 4 (each field named).
    """
    if len(body) > MAX_FIND_BODY:
        raise RequestError(f"findUsage: the body is larger than {MAX_FIND_BODY} bytes")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"findUsage: the body is not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise RequestError("findUsage: the body must be a JSON object")
    unknown = sorted(set(obj) - {"userCode", "periodStart", "periodEnd", "offset", "limit"})
    if unknown:
        raise RequestError(f"findUsage: unknown fields {unknown}")
    code = obj.get("userCode")
    if not isinstance(code, str) or not headers.SUBJECT_RE.fullmatch(code):
        raise RequestError(
            "findUsage: userCode must be a subject identifier (country prefix and national "
            "identifier, e.g. EE38001085718)"
        )
    start = _parse_time(obj.get("periodStart", "1970-01-01T00:00:00Z"), "periodStart")
    end = _parse_time(obj.get("periodEnd", "9999-12-31T23:59:59Z"), "periodEnd")
    if end < start:
        raise RequestError("findUsage: periodEnd is before periodStart")
    offset, limit = obj.get("offset", 0), obj.get("limit", 50)
    for name, value in (("offset", offset), ("limit", limit)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RequestError(f"findUsage: {name} must be a non-negative integer")
    if not 1 <= limit <= max_page:
        raise RequestError(f"findUsage: limit must be 1 to {max_page}")
    return FindRequest(user_code=code, start=start, end=end, offset=offset, limit=limit)


Answer = tuple[int, str | None, list[tuple[str, str]], bytes]
_JSON = [("Content-Type", "application/json; charset=utf-8")]


def check_portal(conf: GlobalConf, client: ClientId, code: str) -> None:
    """Raises: NotEntitled: ``client`` is not the portal's subsystem of the global configuration."""
    portal = TransparencyConf.of(conf).portal
    if portal is None or client != portal:
        raise NotEntitled(
            f"{code} answers only the portal's subsystem named in the global configuration, not {client.typed()}"
        )


async def answer(
    state: TransparencyState,
    store: MessageLogStore,
    conf: GlobalConf,
    client: ClientId,
    subsystem: SubsystemId,
    code: str,
    method: str,
    body: bytes,
    now: datetime,
    own_ocsp: bytes,
) -> Answer:
    """The metaservice's answer as ``(status, reason, headers, body)``.

    Raises:
        RequestError: not the portal's subsystem (403), a wrong method, a malformed findUsage body.
    """
    check_portal(conf, client, code)
    if state.clock is not None:
        now = state.clock()
    if code == "heartbeat":
        if method != "GET":
            raise RequestError("heartbeat answers GET only")
        return 200, "OK", list(_JSON), json.dumps({"status": "ok", "time": evidence.rfc3339(now)}).encode()
    if code == "usagePeriod":
        if method != "GET":
            raise RequestError("usagePeriod answers GET only")
        first, last = await state.index.period(str(subsystem))
        doc = {
            "periodStart": None if first is None else evidence.rfc3339(first),
            "periodEnd": None if last is None else evidence.rfc3339(last),
        }
        return 200, "OK", list(_JSON), json.dumps(doc).encode()
    if method != "POST":
        raise RequestError("findUsage answers POST only")
    req = parse_find(body, max_page=state.max_page)
    page = await state.index.find(
        blind_index(state.key, req.user_code),
        subsystem=str(subsystem),
        start=req.start,
        end=req.end,
        now=now,
        offset=req.offset,
        limit=req.limit,
    )
    names = {str(m.id): m.name for m in conf.members}
    envelopes = []
    if state.envelope_path is not None:
        try:
            envelopes.append(state.envelope_path.read_bytes())
        except OSError as e:
            log.warning("the cached global configuration cannot be read for evidence", error=str(e))
    usages = []
    for row in page.rows:
        found = await store.read(row.origin, start=row.seq, limit=1)
        if not found or found[0].seq != row.seq:
            continue  # pruned
        stored = found[0]
        record = stored.decode()
        checkpoints = [c for c in await store.checkpoints(row.origin, min_size=row.seq + 1, limit=50) if c.stamped]
        proof = note = token = None
        blobs = dict(stored.blobs)
        names_needed = [n for n in blob_refs(stored.encoded) if n is not None]
        blobs = {n: blobs[n] for n in names_needed if n in blobs}
        if checkpoints:
            c = checkpoints[0]
            proof = await store.inclusion_proof(row.origin, row.seq, c.size)
            note, token = c.note, c.timestamp_token
            blobs[evidence.sha256_hex(c.signing_cert)] = c.signing_cert
            blobs[evidence.sha256_hex(own_ocsp)] = own_ocsp
        item = evidence.item_fields(record, names)
        item["evidence"] = evidence.build_evidence(
            origin=row.origin,
            seq=row.seq,
            encoded=stored.encoded,
            blobs=blobs,
            subject=req.user_code,
            salt=row.salt,
            proof=proof,
            note=note,
            timestamp=token,
            envelopes=envelopes,
        )
        usages.append(item)
    return 200, "OK", list(_JSON), json.dumps({"total": page.total, "usages": usages}).encode()


__all__ = ["USAGE_SERVICES", "TransparencyState", "answer", "check_portal", "load_key", "parse_find"]
