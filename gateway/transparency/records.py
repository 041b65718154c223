"""Usage records: the access record (consumer's server) and the disclosure record (provider's server) (pure).

docs/transparency.md section 3. A usage record is a message-log record of kind ``usage``
(:class:`~gateway.messagelog.record.LogRecord`), logged in the same Merkle tree right after the exchange's
response record, with the exchange's message id and request id, the client, the service, the method and the
path without its query, and the answer's status. It carries no signature of its own (the tree and its signed,
timestamped checkpoints are its integrity) and no subject in clear; its extensions hold:

- ``usage.v``: ``"1"``;
- ``usage.subjects``: one salted commitment per subject, lower-case hex SHA-256 of
  ``"gateway-usage-subject\\n" || salt || subject`` (the salt: 16 random bytes, kept by the agency in the
  blind index, never in the log or its archives);
- ``usage.request-hash``: the exchange's request hash (PR-REST 4.3), which both sides' records share;
- ``usage.purpose``, ``usage.purpose-text``, ``usage.legal-basis``, ``usage.embargo-until`` when given;
- ``usage.flags``: what the provider's server noticed, e.g. ``subject-mismatch`` (a declared subject that is not
  among ``X-Road-Data-Subject``, on a service that flags rather than refuses);
- ``usage.user``: the requesting official (``X-Road-UserId``) pseudonymised, ``hmac-sha256:`` and the hex
  HMAC of it under the server's transparency key: the agency can find an official's records, nobody else can
  read them (a citizen is never shown it).

The record's ``user_id`` field is left empty. The blind index of a subject is the HMAC-SHA256 of the subject
under the same per-server key (:func:`blind_index`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.identifiers import ClientId, ServiceId
from gateway.messagelog.record import LogRecord, Side
from gateway.transparency.headers import Transparency

KIND = "usage"
SALT_BYTES = 16
COMMITMENT_PREFIX = b"gateway-usage-subject\n"
EXT_VERSION = "usage.v"
EXT_SUBJECTS = "usage.subjects"
EXT_REQUEST_HASH = "usage.request-hash"
EXT_PURPOSE = "usage.purpose"
EXT_PURPOSE_TEXT = "usage.purpose-text"
EXT_LEGAL_BASIS = "usage.legal-basis"
EXT_EMBARGO = "usage.embargo-until"
EXT_USER = "usage.user"
EXT_FLAGS = "usage.flags"


def commitment(salt: bytes, subject: str) -> str:
    """The salted commitment to ``subject`` (lower-case hex)."""
    return hashlib.sha256(COMMITMENT_PREFIX + salt + subject.encode("ascii")).hexdigest()


def blind_index(key: bytes, subject: str) -> bytes:
    """The keyed blind index of ``subject``: HMAC-SHA256 under the server's transparency key."""
    return hmac.new(key, b"subject\n" + subject.encode("ascii"), hashlib.sha256).digest()


def pseudonym(key: bytes, user_id: str) -> str:
    """``X-Road-UserId`` pseudonymised under the server's transparency key."""
    return "hmac-sha256:" + hmac.new(key, b"user\n" + user_id.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexRow:
    """One subject of one usage record, for the blind index (kept by the agency, never published)."""

    origin: str
    seq: int
    subject_index: bytes
    salt: bytes
    created: datetime
    side: Side
    client: str
    provider: str  # the service's subsystem
    embargo_until: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageEntry:
    """A usage record with the salts of its subjects (in the order of ``t.subjects``)."""

    record: LogRecord
    subjects: tuple[str, ...]  # in clear: for the blind index only, never stored
    salts: tuple[bytes, ...]

    def rows(self, key: bytes, seq: int) -> list[IndexRow]:
        r = self.record
        until = r.extensions.get(EXT_EMBARGO)
        when = None if not isinstance(until, str) else datetime.fromisoformat(until.replace("Z", "+00:00"))
        return [
            IndexRow(
                origin=r.origin,
                seq=seq,
                subject_index=blind_index(key, s),
                salt=salt,
                created=r.created,
                side=r.side,
                client=str(r.client),
                provider=str(r.service.subsystem),
                embargo_until=when,
            )
            for s, salt in zip(self.subjects, self.salts, strict=True)
        ]


def usage_entry(
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
    key: bytes,
    signing_cert: bytes,
    ocsp_response: bytes,
) -> UsageEntry:
    """The usage record of one exchange and the salts of its subjects (fresh random ones)."""
    salts = tuple(os.urandom(SALT_BYTES) for _ in t.subjects)
    ext: dict[str, str | tuple[str, ...]] = {
        EXT_VERSION: "1",
        EXT_SUBJECTS: tuple(commitment(salt, s) for salt, s in zip(salts, t.subjects, strict=True)),
        EXT_REQUEST_HASH: request_hash,
    }
    if t.purpose is not None:
        ext[EXT_PURPOSE] = t.purpose
    if t.purpose_text is not None:
        ext[EXT_PURPOSE_TEXT] = t.purpose_text
    if t.legal_basis is not None:
        ext[EXT_LEGAL_BASIS] = t.legal_basis
    if t.embargo_until is not None:
        ext[EXT_EMBARGO] = t.embargo_until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if user_id is not None:
        ext[EXT_USER] = pseudonym(key, user_id)
    if t.flags:
        ext[EXT_FLAGS] = t.flags
    record = LogRecord(
        origin=origin,
        kind="usage",
        side=side,
        message_id=message_id,
        request_id=request_id,
        client=client,
        service=service,
        user_id=None,
        issue=None,
        created=created.astimezone(UTC),
        method=method,
        path=path.partition("?")[0],
        status=status,
        signature_base=b"",
        signature_input="",
        signature="",
        signing_cert=signing_cert,
        ocsp_response=ocsp_response,
        body_digest="",
        body=None,
        extensions=ext,
    )
    return UsageEntry(record=record, subjects=t.subjects, salts=salts)


__all__ = ["IndexRow", "UsageEntry", "blind_index", "commitment", "pseudonym", "usage_entry"]
