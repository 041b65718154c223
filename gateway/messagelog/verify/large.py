"""Step 3 for a records member that holds one large record (a body the log stored apart), read piece by piece
(pure, but for the archive member it reads).

A record larger than :data:`LARGE_MEMBER_BYTES` is checked without holding it: its member is read in pieces of
:data:`READ_PIECE` bytes, which feed (3e) its leaf hash ``SHA-256(0x00 || record)``; the body's base64, the
first member of the record (``{"body":"<base64>",...``), is checked to be canonical padded standard base64 and
decoded as it passes, feeding the SHA-256 that (3d) the signed ``Content-Digest`` must equal; and what follows
it (small) makes, with ``"body":null``, the record as it would be without its body, which the usual checks (3a-3c)
take. Anything else in such a member (it does not begin with a body, holds more than one line, or what follows
the body is itself large) is left to the usual check of the whole member.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from dataclasses import dataclass

from gateway.errors import TrustError
from gateway.messagelog.archive import ChunkSpan
from gateway.messagelog.record import BODY_HEAD
from gateway.messagelog.verify.report import ChunkResult, RecordFinding
from gateway.messagelog.verify.tree import _subtree_roots
from gateway.protocol import signatures

LARGE_MEMBER_BYTES = 16 * 2**20  # bytes of a one-record member above which it is read piece by piece
READ_PIECE = 1 * 2**20  # bytes read at a time (a multiple of 4: base64 groups stay whole)
MAX_REST_BYTES = 1 * 2**20  # bytes after the body's base64 that are held (the rest of the record is small)
_NULL_BODY = b'{"body":null'


class _NotLarge(Exception):
    """The member is not one large record in the expected form: the usual check takes it whole."""


@dataclass(frozen=True, slots=True)
class LargeRecord:
    """What reading a large member piece by piece gave (see :func:`read_large_record`)."""

    leaf_hash: bytes  # (3e) of the record with its body
    body_sha256: bytes  # of the decoded body, for (3d)
    bare: bytes  # the record with "body":null, for the usual checks (3a-3c; 3d skips a null body)


def read_large_record(span: ChunkSpan) -> LargeRecord | None:
    """Read the one record of a large member piece by piece; None when the member is not in that form (see the
    module docstring), and the caller checks it whole.

    Raises:
        TrustError: the archive file cannot be read or ends early.
    """
    try:
        leaf, body_sha256, rest = _stream(span)
    except _NotLarge:
        return None
    return LargeRecord(leaf_hash=leaf, body_sha256=body_sha256, bare=_NULL_BODY + rest)


def complete(result: ChunkResult, record: LargeRecord) -> ChunkResult:
    """The usual checks' ``result`` for ``record.bare``, completed for the record with its body: (3e) its leaf
    hash (and subtree root), and (3d) its body against the signed ``Content-Digest``."""
    result = dataclasses.replace(result, leaves=record.leaf_hash,
                                 roots=_subtree_roots(result.first, record.leaf_hash))
    if result.findings:
        return result
    try:
        digest = json.loads(record.bare)["body_digest"]
        signatures.verify_content_digest(digest, record.body_sha256)
    except TrustError as e:
        return _body_problem(result, e.message)
    except (ValueError, KeyError, TypeError):
        return _body_problem(result, "body_digest cannot be read")
    return result


def _body_problem(result: ChunkResult, message: str) -> ChunkResult:
    return dataclasses.replace(result, valid=0, requests=(), responses=(),
                               findings=(RecordFinding(line=0, problem="body", message=message),))


def _stream(span: ChunkSpan) -> tuple[bytes, bytes, bytes]:
    """``(leaf hash, SHA-256 of the body, what follows the body's closing quote without the line feed)``."""
    leaf = hashlib.sha256(b"\x00")
    body = hashlib.sha256()
    carry = b""  # base64 not yet decoded (less than one group)
    rest = bytearray()  # after the closing quote
    in_body = True
    try:
        f = open(span.path, "rb")  # closed by the with below
    except OSError as e:
        raise TrustError(f"archive: member {span.name} cannot be read: {e.strerror or e}") from e
    with f:
        f.seek(span.offset)
        head = f.read(len(BODY_HEAD))
        if head != BODY_HEAD:
            raise _NotLarge
        leaf.update(head)
        left = span.size - len(head)
        while left > 0:
            piece = f.read(min(READ_PIECE, left))
            if not piece:
                raise TrustError(f"archive: member {span.name} is truncated")
            left -= len(piece)
            if left == 0:  # the member's last byte: the line feed after the record
                if not piece.endswith(b"\n"):
                    raise _NotLarge
                piece = piece[:-1]
            if b"\n" in piece:
                raise _NotLarge  # more than one line
            leaf.update(piece)
            if not in_body:
                rest += piece
                if len(rest) > MAX_REST_BYTES:
                    raise _NotLarge
                continue
            quote = piece.find(b'"')
            text = carry + (piece if quote < 0 else piece[:quote])
            cut = len(text) - len(text) % 4 if quote < 0 else len(text)
            _decode_into(body, text[:cut])
            carry = text[cut:]
            if quote >= 0:
                in_body = False
                rest += piece[quote:]
    if in_body:
        raise _NotLarge
    return leaf.digest(), body.digest(), bytes(rest[1:])


def _decode_into(body: hashlib._Hash, text: bytes) -> None:
    """Decode whole base64 groups into ``body``; what is not canonical padded standard base64 is not a record
    in the one encoding (the usual check would refuse it: so it does, on the whole member)."""
    if not text:
        return
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _NotLarge from e
    if base64.b64encode(data) != text:
        raise _NotLarge
    body.update(data)


__all__ = ["LARGE_MEMBER_BYTES", "LargeRecord", "complete", "read_large_record"]
