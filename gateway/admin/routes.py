"""The admin API's route table (pure): every route's method, path, roles and schemas, in one place.

The aiohttp application (:mod:`gateway.admin.app`) registers exactly these routes, each wrapped so that
authentication, the role check, request validation and the audit entry happen before and after the handler;
the OpenAPI 3.1 document (:mod:`gateway.admin.openapi`) is generated from this table. A route with
``public=True`` needs no authentication; every other route names the roles that may call it, and a caller
needs at least one of them.

Identifiers in paths use X-Road's ``:``-joined form (``DEV:GOV:1001:consumer``); identifiers in JSON bodies
and query parameters use the ``/``-joined form (``DEV/GOV/1001/consumer``), as the CLI does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.admin.formats import (
    HEX_PREFIX,
    NEW_PASSWORD,
    NON_BLANK,
    USERNAME,
    code,
    identifier,
    subject_pattern,
)
from gateway.admin.roles import READERS, ROLE_DESCRIPTIONS, ROLES, Role
from gateway.admin.schema import JsonSchema, page_schema, register_format
from gateway.identifiers import MAX_IDENTIFIER_LENGTH
from gateway.serverconf import CLIENT_STATUSES, IS_AUTH_MODES, MAX_SERVICE_TIMEOUT
from gateway.serverconf.access import HTTP_METHODS, MAX_PATH_PATTERN_LENGTH, Endpoint, parse_subject

API = "/api/v1"
MAX_LOG_INDEX = 10**18 - 1  # the largest sequence number or tree size a query or path may name (18 digits)
OPENAPI_PATH = "/api/openapi.json"
ALL_ROLES: frozenset[Role] = frozenset(ROLES)

SYSADMIN: frozenset[Role] = frozenset({"system-administrator"})
SECURITY: frozenset[Role] = frozenset({"security-officer"})
REGISTRATION: frozenset[Role] = frozenset({"registration-officer"})
SERVICES: frozenset[Role] = frozenset({"service-administrator"})
AUDITOR: frozenset[Role] = frozenset({"auditor"})
# operational monitoring: ids, times, sizes and outcomes of exchanges, never bodies or user ids
OPMON_READERS: frozenset[Role] = frozenset({"system-administrator", "observer"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    name: str
    where: str  # "path" or "query"
    description: str
    schema: JsonSchema = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    operation_id: str
    method: str
    path: str
    summary: str
    tag: str
    roles: frozenset[Role] = frozenset()
    public: bool = False
    request: JsonSchema | None = None
    response: JsonSchema | None = None
    status: int = 200  # the success status; 204 has no body
    paginated: bool = False
    query: tuple[Param, ...] = ()
    audit_reads: bool = False  # also audit successful reads (message log: personal data)
    secret_fields: frozenset[str] = frozenset()  # body fields never written to the audit log
    errors: tuple[int, ...] = (400,)  # documented error statuses besides 401/403 (added when not public)
    media_type: str = "application/json"  # of the success response (an archive download is application/zip)

    def __post_init__(self) -> None:
        if self.public == bool(self.roles):
            raise ValueError(f"route {self.operation_id}: either public or at least one role, not both")

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", self.path))


# ----------------------------------------------------------------------------------------------- schemas

def obj(props: dict[str, JsonSchema], required: tuple[str, ...] = (), *, closed: bool = True) -> JsonSchema:
    schema: JsonSchema = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def string(description: str, *, max_length: int = 1024, min_length: int = 0) -> JsonSchema:
    s: JsonSchema = {"type": "string", "description": description, "maxLength": max_length}
    if min_length:
        s["minLength"] = min_length
    return s


ID = string("identifier in '/'-joined form, e.g. DEV/GOV/1001/consumer", max_length=MAX_IDENTIFIER_LENGTH)
CLIENT_ID = identifier("client", "member or subsystem, e.g. DEV/GOV/1001/consumer")
MEMBER_ID = identifier("member", "member, e.g. DEV/GOV/1001")
SERVICE_ID = identifier("service", "REST service, e.g. DEV/GOV/1002/registry/persons")
register_format("access-subject", parse_subject)
register_format("endpoint-path", lambda v: Endpoint(path=v))
METHOD: JsonSchema = {"type": "string", "enum": ["*", *sorted(HTTP_METHODS)], "description": "HTTP method or '*'"}
PATH_PATTERN: JsonSchema = {
    "type": "string", "minLength": 1, "maxLength": MAX_PATH_PATTERN_LENGTH, "pattern": "^(?:\\*\\*?|/[!-~]*)$",
    "not": {"pattern": "[\\\\?#]"}, "format": "endpoint-path",
    "description": "'*' or '**' (every path), or a pattern starting with '/': '/pets/*', '/pets/**'; '*' a whole "
                   "segment, '**' only last, no dot segments, no space, control character, '\\', '?' or '#'",
    "x-rule": "'*', '**' or a path pattern starting with '/' (no space, control character, '\\', '?' or '#')",
}
_PORT = "(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
HTTP_URL: JsonSchema = {
    "type": "string", "maxLength": 2048,
    "pattern": f"^https?://[A-Za-z0-9._~-]+(?::{_PORT})?(?:[/?][!-\"$-~]*)?$",
    "description": "absolute http:// or https:// URL with a host; no credentials, no fragment, no white space",
    "x-rule": "an http:// or https:// URL with a host, without credentials, fragment or white space",
}
TIMEOUT: JsonSchema = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SERVICE_TIMEOUT,
                       "description": "seconds, more than 0 and at most 3600"}
TIME = {"type": "string", "format": "date-time", "description": "UTC, RFC 3339"}
OPT_TIME = {"type": ["string", "null"], "format": "date-time", "description": "UTC, RFC 3339"}
ROLE_LIST: JsonSchema = {
    "type": "array", "minItems": 1, "maxItems": len(ROLES),
    "items": {"type": "string", "enum": list(ROLES)},
    "description": "; ".join(f"{r}: {d}" for r, d in ROLE_DESCRIPTIONS.items()),
}
ENDPOINT = obj({"method": METHOD, "path": PATH_PATTERN}, ("method", "path"))

ERROR: JsonSchema = obj({
    "type": {"type": "string", "description": "X-Road-style error type, e.g. Client.Forbidden"},
    "message": {"type": "string", "description": "what went wrong"},
    "detail": {"type": "string", "description": "correlation id, also in the audit log and the server log"},
}, ("type", "message", "detail"), closed=False)

TOKEN = obj({
    "token": string("the session token (JWT, ES256); send as 'Authorization: Bearer <token>'", max_length=8192),
    "token_type": {"type": "string", "enum": ["Bearer"]},
    "expires_at": TIME,
    "roles": ROLE_LIST,
}, ("token", "token_type", "expires_at", "roles"))
ME = obj({
    "name": string("user name, or apikey:<id>"),
    "kind": {"type": "string", "enum": ["jwt", "apikey"]},
    "roles": ROLE_LIST,
    "expires_at": OPT_TIME,
}, ("name", "kind", "roles", "expires_at"))
USER = obj({
    "username": string("user name", max_length=64),
    "roles": ROLE_LIST,
    "created_at": TIME,
    "failed_logins": {"type": "integer", "minimum": 0},
    "locked_until": OPT_TIME,
}, ("username", "roles", "created_at", "failed_logins", "locked_until"))
API_KEY = obj({
    "id": string("public id of the key", max_length=16),
    "name": string("what the key is for", max_length=128),
    "roles": ROLE_LIST,
    "created_by": string("who created it"),
    "created_at": TIME,
    "revoked_at": OPT_TIME,
}, ("id", "name", "roles", "created_by", "created_at", "revoked_at"))
NEW_API_KEY = obj({
    **API_KEY["properties"],
    "key": string("the key itself, shown only now: send as 'Authorization: X-Road-ApiKey token=<key>'"),
}, ("id", "name", "roles", "created_by", "created_at", "revoked_at", "key"))
SESSION_KEY = obj({
    "kid": string("key id (JWT 'kid' header)", max_length=64),
    "created_at": TIME,
    "retired_at": OPT_TIME,
    "active": {"type": "boolean", "description": "signs new session tokens"},
}, ("kid", "created_at", "retired_at", "active"))
AUDIT_ENTRY = obj({
    "id": {"type": "integer"},
    "seq": {"type": "integer", "minimum": 0,
            "description": "the entry's place in the audit log's Merkle tree (docs/auditing.md section 7)"},
    "at": TIME,
    "actor": string("user name, apikey:<id>, cli:<os user>, or '-' when unknown"),
    "auth": string("how the actor was authenticated: jwt, apikey, password, cli or none"),
    "remote": string("the peer address of the connection, or cli@<host name> for a CLI command"),
    "action": string("operation id, e.g. addClient"),
    "method": string("HTTP method"),
    "path": string("request path", max_length=2048),
    "result": {"type": "string", "enum": ["success", "refused", "failed"]},
    "status": {"type": "integer"},
    "details": {"type": "object", "description": "request fields (secrets left out), error message, ids"},
}, ("id", "seq", "at", "actor", "auth", "remote", "action", "method", "path", "result", "status", "details"))
CLIENT = obj({
    "id": ID,
    "encoded_id": string("':'-joined form, as in paths"),
    "type": {"type": "string", "enum": ["MEMBER", "SUBSYSTEM"]},
    "status": {"type": "string", "enum": list(CLIENT_STATUSES)},
    "is_auth": {"type": "string", "enum": list(IS_AUTH_MODES)},
    "body_logging": {"type": "boolean"},
    "is_cert_fingerprints": {"type": "array", "items": string("SHA-256 of the DER, hex", max_length=64)},
}, ("id", "encoded_id", "type", "status", "is_auth", "body_logging", "is_cert_fingerprints"))
SERVICE = obj({
    "id": ID,
    "encoded_id": string("':'-joined form, as in paths"),
    "url": string("base URL of the service", max_length=2048),
    "timeout_seconds": {"type": "number"},
    "openapi_url": {"type": ["string", "null"], "maxLength": 2048, "description": "URL of its OpenAPI document"},
    "enabled": {"type": "boolean"},
    "disabled_notice": string("shown to clients while disabled"),
    "endpoints": {"type": "array", "items": ENDPOINT},
    "data_subject": {"type": ["string", "null"], "maxLength": 255,
                     "description": "where requests carry their data subject: path:N, query:NAME or json:POINTER "
                                    "(docs/transparency.md)"},
    "subject_mismatch": {"type": "string", "enum": ["refuse", "flag"]},
    "purpose_required": {"type": "boolean"},
}, ("id", "encoded_id", "url", "timeout_seconds", "openapi_url", "enabled", "disabled_notice", "endpoints"))
_TRANSPARENCY_FIELDS: dict[str, Any] = {
    "data_subject": {"type": "string", "maxLength": 255,
                     "pattern": "^(path:([1-9]|[1-5][0-9]|6[0-4])|query:[A-Za-z0-9._~-]{1,64}"
                                "|json:(/([^/~]|~[01])*)+)?$",
                     "description": "path:N, query:NAME or json:POINTER; \"\" removes it (docs/transparency.md)"},
    "subject_mismatch": {"type": "string", "enum": ["refuse", "flag"]},
    "purpose_required": {"type": "boolean"},
}
ACCESS_RIGHT = obj({
    "service": ID,
    "subject": string("SUBSYSTEM:..., MEMBER:..., GLOBALGROUP:INSTANCE/CODE or LOCALGROUP:CODE"),
    "method": string("HTTP method or '*'", max_length=16),
    "path": string("path pattern", max_length=1024),
}, ("service", "subject", "method", "path"))
GROUP = obj({
    "code": string("local group code", max_length=255),
    "members": {"type": "array", "items": ID},
}, ("code", "members"))
GLOBALCONF_STATUS = obj({
    "version": {"type": ["integer", "null"]},
    "issued_at": OPT_TIME,
    "expires_at": OPT_TIME,
    "expired": {"type": "boolean"},
    "last_error": {"type": ["string", "null"]},
    "last_error_at": OPT_TIME,
    "last_success_at": OPT_TIME,
    "last_attempt_at": OPT_TIME,
}, ("version", "issued_at", "expires_at", "expired", "last_error", "last_error_at", "last_success_at",
    "last_attempt_at"))
REFRESH_RESULT = obj({
    "accepted": {"type": "boolean"},
    "changed": {"type": "boolean"},
    "version": {"type": ["integer", "null"]},
    "url": {"type": ["string", "null"]},
    "errors": {"type": "array", "items": {"type": "string"}},
}, ("accepted", "changed", "version", "url", "errors"))
LOG_RECORD = obj({
    "origin": string("log origin (this security server, or one writer of it)", max_length=255),
    "seq": {"type": "integer", "minimum": 0, "description": "index in the origin's Merkle tree"},
    "leaf_hash": string("RFC 9162 leaf hash, hex", max_length=64),
    "record": {"type": "object", "description": "the record (docs/messagelog.md), as stored"},
}, ("origin", "seq", "leaf_hash", "record"))
# Written with plain dicts (no schema helpers), so that it does not depend on their names.
_OPT_INT: JsonSchema = {"type": ["integer", "null"], "minimum": 0}
_OPT_STR: JsonSchema = {"type": ["string", "null"], "maxLength": 1024}
_OPMON_FIELDS: dict[str, JsonSchema] = {
    "side": {"type": "string", "enum": ["client", "server"]},
    "origin": {"type": "string", "maxLength": 255, "description": "log origin (process) that answered the exchange"},
    "message_id": {**_OPT_STR, "description": "X-Road-Id, once parsed (client side) or verified (server side)"},
    "request_id": {**_OPT_STR, "description": "X-Road-Request-Id, once assigned or verified"},
    "client": {**_OPT_STR, "description": "the client, once parsed"},
    "service": {**_OPT_STR, "description": "the service, once parsed"},
    "method": {"type": "string", "maxLength": 16, "description": "HTTP method"},
    "request_in": {"type": "string", "format": "date-time", "description": "the request arrived (UTC, RFC 3339)"},
    "request_out": {"type": ["string", "null"], "format": "date-time",
                    "description": "sent on to the provider's server or the service; null: never"},
    "response_in": {"type": ["string", "null"], "format": "date-time",
                    "description": "the whole response came back from there; null: none"},
    "response_out": {"type": "string", "format": "date-time", "description": "the answer was handed on"},
    "request_bytes": {**_OPT_INT, "description": "request body as declared; null: chunked"},
    "response_bytes": {**_OPT_INT, "description": "the answer's body; null: streamed, its length not known ahead"},
    "status": {"type": "integer", "description": "the answer's HTTP status"},
    "fault": {"type": ["string", "null"], "maxLength": 255, "description": "X-Road fault type; null: none"},
    "outcome": {"type": "string", "enum": ["ok", "failed"]},
    "peer_server": {**_OPT_STR, "description": "the other side's security server, once known"},
}
OPMON_RECORD: JsonSchema = {"type": "object", "properties": _OPMON_FIELDS, "required": list(_OPMON_FIELDS),
                            "additionalProperties": False}
B64 = "standard base64 with padding"
CHECKPOINT = obj({
    "size": {"type": "integer", "minimum": 0, "description": "records the checkpoint covers (tree size)"},
    "root_hash": string(f"RFC 9162 root hash of the first size records, {B64}", max_length=64),
    "created": TIME,
    "timestamped": {"type": "boolean", "description": "whether an RFC 3161 timestamp token is attached"},
    "timestamp_time": OPT_TIME,
    "tsa": {"type": ["string", "null"], "maxLength": 1024, "description": "name of the TSA that stamped it"},
}, ("size", "root_hash", "created", "timestamped", "timestamp_time", "tsa"))
TRANSPARENCY_COUNTS = obj({
    "enabled": {"type": "boolean"},
    "clients": {"type": "array", "items": obj({
        "client": string("client subsystem"), "records": {"type": "integer"}, "embargoed": {"type": "integer"},
    }, ("client", "records", "embargoed"))},
    "index_failures": {"type": "integer",
                       "description": "always 0: index rows commit in their usage record's transaction"},
}, ("enabled", "clients", "index_failures"))
CHECKPOINT_LIST = obj({
    "origin": string("log origin", max_length=255),
    "records": {"type": "integer", "minimum": 0, "description": "records in the log (next sequence number)"},
    "pruned_before": {"type": "integer", "minimum": 0, "description": "records below this were pruned online"},
    "checkpoints": {"type": "array", "items": CHECKPOINT, "description": "smallest first"},
    "next_min_size": {"type": ["integer", "null"], "description": "min_size of the next page; null at the end"},
}, ("origin", "records", "pruned_before", "checkpoints", "next_min_size"))
CHECKPOINT_FULL = obj({
    **CHECKPOINT["properties"],
    "origin": string("log origin", max_length=255),
    "note": string("the signed note (C2SP checkpoint), exactly as signed and timestamped", max_length=65536),
    "timestamp_token": {"type": ["string", "null"], "maxLength": 65536,
                        "description": f"RFC 3161 TimeStampToken over SHA-256 of the note (DER, {B64})"},
    "tsa_certificate": {"type": ["string", "null"], "maxLength": 65536, "description": f"the TSA's certificate "
                        f"(DER, {B64}); trust it only if the global configuration names it"},
    "signing_certificate": string(f"the certificate of the key that signed the note (DER, {B64})", max_length=65536),
}, ("origin", "size", "root_hash", "created", "timestamped", "timestamp_time", "tsa", "note", "timestamp_token",
    "tsa_certificate", "signing_certificate"))
HASHES = {"type": "array", "items": string(f"SHA-256 hash, {B64}", max_length=64), "maxItems": 128}
INCLUSION_PROOF = obj({
    "origin": string("log origin", max_length=255),
    "seq": {"type": "integer", "minimum": 0},
    "leaf_hash": string(f"the record's leaf hash, {B64}", max_length=64),
    "size": {"type": "integer", "minimum": 1, "description": "size of the checkpoint the proof is for"},
    "root_hash": string(f"that checkpoint's root hash, {B64}", max_length=64),
    "proof": {**HASHES, "description": "RFC 9162 section 2.1.3 inclusion proof"},
    "checkpoint": string("the checkpoint's signed note", max_length=65536),
    "timestamp_token": {"type": ["string", "null"], "maxLength": 65536, "description": f"its token (DER, {B64})"},
}, ("origin", "seq", "leaf_hash", "size", "root_hash", "proof", "checkpoint", "timestamp_token"))
CONSISTENCY_PROOF = obj({
    "origin": string("log origin", max_length=255),
    "old_size": {"type": "integer", "minimum": 0},
    "old_root_hash": string(f"root hash of the older checkpoint, {B64}", max_length=64),
    "new_size": {"type": "integer", "minimum": 0},
    "new_root_hash": string(f"root hash of the newer checkpoint, {B64}", max_length=64),
    "proof": {**HASHES, "description": "RFC 9162 section 2.1.4 consistency proof"},
    "old_checkpoint": string("the older checkpoint's signed note", max_length=65536),
    "new_checkpoint": string("the newer checkpoint's signed note", max_length=65536),
}, ("origin", "old_size", "old_root_hash", "new_size", "new_root_hash", "proof", "old_checkpoint",
    "new_checkpoint"))
ARCHIVE: JsonSchema = {"type": "string", "format": "binary",
                       "description": "a message-log archive (ZIP; format in docs/auditing.md)"}
TOKEN_CERT = obj({
    "sha256": string("hex SHA-256 of the DER certificate", max_length=64),
    "kind": {"type": "string", "enum": ["auth", "sign"]},
    "identity": string("the server (auth) or member (sign) it names"),
    "not_before": TIME, "not_after": TIME,
    "state": string("active or inactive", max_length=16),
    "imported_at": TIME,
    "pem": string("the certificate", max_length=16384),
}, ("sha256", "kind", "identity", "not_before", "not_after", "state", "imported_at", "pem"))
TOKEN_KEY = obj({
    "id": string("hex SHA-256 of the public key", max_length=64),
    "usage": {"type": "string", "enum": ["auth", "sign", "witness"],
              "description": "witness: the witness's Ed25519 key, which has no certificates (docs/witness.md)"},
    "key_type": string("ec-p256, rsa-2048, rsa-3072 or ed25519 (the witness key)", max_length=16),
    "label": string("operator's label", max_length=255),
    "created_at": TIME,
    "certs": {"type": "array", "items": TOKEN_CERT},
}, ("id", "usage", "key_type", "label", "created_at", "certs"))
WITNESS_LOG = obj({
    "origin": string("checkpoint origin (the note's first line)", max_length=512),
    "size": {"type": "integer", "minimum": 0, "description": "size of the largest consistent checkpoint cosigned"},
    "root_hash": string(f"its root hash, {B64}", max_length=64),
    "updated_at": {**TIME, "description": "when it was last cosigned (UTC, RFC 3339)"},
}, ("origin", "size", "root_hash", "updated_at"))
WITNESS_STATE = obj({
    "enabled": {"type": "boolean", "description": "[witness] enabled: POST /witness/add-checkpoint is served"},
    "name": string("the witness key's name", max_length=255),
    "vkey": {"type": ["string", "null"], "maxLength": 1024,
             "description": "the witness's C2SP verification key (null while the witness is off)"},
    "logs": {"type": "array", "items": WITNESS_LOG, "description": "every log cosigned, by origin"},
}, ("enabled", "name", "vkey", "logs"))
WITNESS_EVIDENCE = obj({
    "id": {"type": "integer", "minimum": 1},
    "origin": string("checkpoint origin", max_length=512),
    "recorded_at": TIME,
    "reason": {"type": "string", "enum": ["fork", "inconsistent"],
               "description": "fork: same size, another root; inconsistent: the consistency proof failed"},
    "message": string("why it was refused", max_length=2048),
    "peer": string("the security server that sent it"),
    "old_size": {"type": "integer", "minimum": 0},
    "note": string("the submitted checkpoint, signed by the log", max_length=65536),
    "proof": {**HASHES, "description": "the submitted consistency proof"},
    "stored_note": string("the checkpoint the witness had cosigned, signed by the log", max_length=65536),
}, ("id", "origin", "recorded_at", "reason", "message", "peer", "old_size", "note", "proof", "stored_note"))
TOKEN_STATE = obj({
    "logged_in": {"type": "boolean", "description": "whether this process holds the PIN-derived key"},
    "failed_pins": {"type": "integer", "minimum": 0},
    "locked_until": OPT_TIME,
    "keys": {"type": "array", "items": TOKEN_KEY},
}, ("logged_in", "failed_pins", "locked_until", "keys"))
TOKEN_LIST = obj({"tokens": {"type": "array", "maxItems": 64, "items": obj({
    "name": string("software, or the device's name ([[server.pkcs11]] name; \"device\" for [server] "
                   "pkcs11_library)", max_length=64),
    "kind": {"type": "string", "enum": ["software", "pkcs11"]},
    "usage": string("the keys in use from it (auth, sign, witness, comma-separated; empty: idle)", max_length=32),
    "state": {"type": "string", "enum": ["available", "unavailable", "logged-out"]},
    "error": string("why a device is unavailable; empty otherwise", max_length=4096),
    "library": string("the PKCS#11 library", max_length=4096),
    "token_label": string("the device's token label", max_length=64),
    "sessions": {"type": "integer", "minimum": 1, "maximum": 64},
}, ("name", "kind", "usage", "state", "error"))}}, ("tokens",))
CERT_SWITCH = obj({
    "certificate": TOKEN_CERT,
    "keys_changed": {"type": "boolean", "description": "the server switched its signing or TLS certificate"},
    "reload_error": {"type": ["string", "null"], "description": "why the server keeps its current certificates"},
}, ("certificate", "keys_changed", "reload_error"))
PIN = string("token PIN", max_length=1024)
SUBJECT: JsonSchema = {
    "type": "string", "maxLength": MAX_IDENTIFIER_LENGTH + 16, "format": "access-subject",
    "pattern": subject_pattern(),
    "description": "SUBSYSTEM:INSTANCE/CLASS/MEMBER/SUBSYSTEM, MEMBER:INSTANCE/CLASS/MEMBER, "
                   "GLOBALGROUP:INSTANCE/CODE, LOCALGROUP:CODE, or an untyped member or subsystem",
    "x-rule": "TYPE:identifier with TYPE one of SUBSYSTEM, MEMBER, GLOBALGROUP, LOCALGROUP, or a client identifier",
}
MANAGEMENT_RESULT = obj({
    "id": {"type": ["string", "integer"], "description": "the request's id at the central server"},
    "state": string("its state there, e.g. submitted (a registration officer approves it)", max_length=64),
}, ("id", "state"))
FINGERPRINT = obj({"fingerprint": string("SHA-256 of the DER certificate, hex", max_length=64)}, ("fingerprint",))
OPENAPI_DOC: JsonSchema = {"type": "object", "description": "this document"}

PATH_PARAMS: dict[str, tuple[str, JsonSchema]] = {
    "client_id": ("member or subsystem in ':'-joined form, e.g. DEV:GOV:1001:consumer",
                  identifier("client", in_path=True)),
    "service_id": ("service in ':'-joined form, e.g. DEV:GOV:1002:registry:persons",
                   identifier("service", in_path=True)),
    "username": ("user name", {"type": "string", "minLength": 1, "maxLength": 64}),
    "key_id": ("public id of an API key", {"type": "string", "minLength": 1, "maxLength": 64}),
    "code": ("local group code", code("local group code")),
    "fingerprint": ("SHA-256 of the DER certificate, hex", {"type": "string", "minLength": 1, "maxLength": 64}),
    "seq": ("sequence number of the record in its origin's log", {"type": "integer", "minimum": 0,
                                                                   "maximum": MAX_LOG_INDEX}),
    "size": ("size of a checkpoint: the number of records it covers", {"type": "integer", "minimum": 0,
                                                                       "maximum": MAX_LOG_INDEX}),
    "token_key_id": ("id of a key in the token (hex SHA-256 of its public key, or 8+ leading digits)",
                     HEX_PREFIX),
    "sha256": ("fingerprint of a certificate in the token (hex SHA-256 of the DER, or 8+ leading digits)",
               HEX_PREFIX),
}
ORIGIN: JsonSchema = {"type": "string", "pattern": "^[!-~]{1,255}$", "description": "1-255 printable ASCII characters",
                      "x-rule": "1-255 printable ASCII characters"}
ORIGIN_QUERY = Param(name="origin", where="query", description="log origin (default: this server)", schema=ORIGIN)
_INT = {"type": "integer", "minimum": 0, "maximum": MAX_LOG_INDEX}
_TIME_QUERY = {"type": "string", "format": "date-time"}
ENDPOINT_QUERY = (
    Param(name="method", where="query", description="HTTP method or '*' (default '*')", schema=METHOD),
    Param(name="path", where="query", description="path pattern (default '**', every path)", schema=PATH_PATTERN),
)

# ------------------------------------------------------------------------------------------------- routes

def role_list(descriptions: Mapping[Role, str]) -> JsonSchema:
    """A request's list of roles: at least one, each a key of ``descriptions``."""
    return {
        "type": "array", "minItems": 1, "maxItems": len(descriptions),
        "items": {"type": "string", "enum": list(descriptions)},
        "description": "; ".join(f"{r}: {d}" for r, d in descriptions.items()),
    }


def account_routes(
    descriptions: Mapping[Role, str], *, openapi_summary: str, audit_readers: frozenset[Role] = SYSADMIN
) -> tuple[Route, ...]:
    """The routes both admin APIs share: the document, the session, users, API keys, session keys and the
    audit log (handlers in :mod:`gateway.admin.handlers`), for a server whose roles are ``descriptions``'s."""
    everyone: frozenset[Role] = frozenset(descriptions)
    role_list_ = role_list(descriptions)
    return (
        # --- session
        Route(operation_id="getOpenApi", method="GET", path=OPENAPI_PATH, public=True, tag="meta",
              summary=openapi_summary, response=OPENAPI_DOC, errors=()),
        Route(operation_id="login", method="POST", path=f"{API}/login", public=True, tag="session",
              summary="Log in with a user name and password; returns a short-lived session token",
              request=obj({"username": string("user name", max_length=64),
                            "password": string("password", max_length=1024)}, ("username", "password")),
              response=TOKEN, secret_fields=frozenset({"password"}), errors=(400, 401, 429)),
        Route(operation_id="logout", method="POST", path=f"{API}/logout", roles=everyone, tag="session",
              summary="Revoke the session token used for this call", status=204),
        Route(operation_id="getMe", method="GET", path=f"{API}/me", roles=everyone, tag="session",
              summary="Who the caller is and which roles it holds", response=ME, errors=()),
        Route(operation_id="changeOwnPassword", method="PUT", path=f"{API}/me/password", roles=everyone,
              tag="session", summary="Change one's own password (session tokens only); ends every other session",
              request=obj({"current_password": string("current password"), "new_password": NEW_PASSWORD},
                           ("current_password", "new_password")),
              status=204, secret_fields=frozenset({"current_password", "new_password"})),
        # --- users
        Route(operation_id="listUsers", method="GET", path=f"{API}/users", roles=SYSADMIN, tag="users",
              summary="Local users", response=page_schema(USER), paginated=True),
        Route(operation_id="addUser", method="POST", path=f"{API}/users", roles=SYSADMIN, tag="users",
              summary="Add a local user",
              request=obj({"username": USERNAME, "password": NEW_PASSWORD, "roles": role_list_},
                           ("username", "password", "roles")),
              response=USER, status=201, secret_fields=frozenset({"password"}), errors=(400, 409)),
        Route(operation_id="getUser", method="GET", path=f"{API}/users/{{username}}", roles=SYSADMIN, tag="users",
              summary="One local user", response=USER, errors=(404,)),
        Route(operation_id="setUserPassword", method="PUT", path=f"{API}/users/{{username}}/password",
              roles=SYSADMIN, tag="users", summary="Set a user's password; ends the user's sessions",
              request=obj({"password": NEW_PASSWORD}, ("password",)), status=204,
              secret_fields=frozenset({"password"}), errors=(400, 404)),
        Route(operation_id="setUserRoles", method="PUT", path=f"{API}/users/{{username}}/roles", roles=SYSADMIN,
              tag="users", summary="Replace a user's roles (effective at the user's next call)",
              request=obj({"roles": role_list_}, ("roles",)), response=USER, errors=(400, 404)),
        Route(operation_id="unlockUser", method="POST", path=f"{API}/users/{{username}}/unlock", roles=SYSADMIN,
              tag="users", summary="Clear a lock-out after wrong passwords", status=204, errors=(404,)),
        Route(operation_id="removeUser", method="DELETE", path=f"{API}/users/{{username}}", roles=SYSADMIN,
              tag="users", summary="Remove a user; its sessions end at once", status=204, errors=(404,)),
        # --- API keys
        Route(operation_id="listApiKeys", method="GET", path=f"{API}/api-keys", roles=SYSADMIN, tag="api-keys",
              summary="API keys (never the keys themselves)", response=page_schema(API_KEY), paginated=True),
        Route(operation_id="createApiKey", method="POST", path=f"{API}/api-keys", roles=SYSADMIN, tag="api-keys",
              summary="Create an API key with roles; the key is shown once, in this response",
              request=obj({"name": {**string("what the key is for", max_length=128, min_length=1), "pattern": NON_BLANK,
                                     "x-rule": "1-128 characters, not only white space"}, "roles": role_list_},
                           ("name", "roles")),
              response=NEW_API_KEY, status=201),
        Route(operation_id="revokeApiKey", method="DELETE", path=f"{API}/api-keys/{{key_id}}", roles=SYSADMIN,
              tag="api-keys", summary="Revoke an API key at once", status=204, errors=(404, 409)),
        # --- session signing keys
        Route(operation_id="listSessionKeys", method="GET", path=f"{API}/session-keys", roles=SYSADMIN,
              tag="session-keys", summary="Keys that sign session tokens (public part only: kid and dates)",
              response=page_schema(SESSION_KEY), paginated=True),
        Route(operation_id="rotateSessionKey", method="POST", path=f"{API}/session-keys/rotate", roles=SYSADMIN,
              tag="session-keys", summary="Sign new session tokens with a new key; the old key verifies the "
              "tokens it signed until they expire", response=SESSION_KEY, status=201, errors=()),
        # --- audit log
        Route(operation_id="listAuditLog", method="GET", path=f"{API}/audit-log", roles=audit_readers, tag="audit-log",
              summary="Audit log, newest first", response=page_schema(AUDIT_ENTRY), paginated=True,
              query=(Param(name="actor", where="query", description="only this actor",
                           schema={"type": "string", "maxLength": 255}),
                     Param(name="action", where="query", description="only this operation id",
                           schema={"type": "string", "maxLength": 64}),
                     Param(name="result", where="query", description="success, refused or failed",
                           schema={"type": "string", "enum": ["success", "refused", "failed"]}))),
    )


# X-Road-Id is at most 255 characters (rest.MAX_MESSAGE_ID_LENGTH)
_OPMON_ID: JsonSchema = {"type": "string", "minLength": 1, "maxLength": 255}

ROUTES: tuple[Route, ...] = (
    *account_routes(ROLE_DESCRIPTIONS, openapi_summary="This OpenAPI 3.1 document, generated from the route table"),
    # --- clients
    Route(operation_id="listClients", method="GET", path=f"{API}/clients", roles=READERS, tag="clients",
          summary="Members and subsystems hosted on this server", response=page_schema(CLIENT), paginated=True),
    Route(operation_id="addClient", method="POST", path=f"{API}/clients", roles=REGISTRATION, tag="clients",
          summary="Host a member or subsystem",
          request=obj({"id": CLIENT_ID, "status": {"type": "string", "enum": list(CLIENT_STATUSES)},
                        "is_auth": {"type": "string", "enum": list(IS_AUTH_MODES)},
                        "body_logging": {"type": "boolean"}}, ("id",)),
          response=CLIENT, status=201, errors=(400, 409)),
    Route(operation_id="getClient", method="GET", path=f"{API}/clients/{{client_id}}", roles=READERS,
          tag="clients", summary="One hosted client", response=CLIENT, errors=(400, 404)),
    Route(operation_id="updateClient", method="PATCH", path=f"{API}/clients/{{client_id}}", roles=SERVICES,
          tag="clients", summary="Change how the client's information systems connect, and body logging",
          request=obj({"is_auth": {"type": "string", "enum": list(IS_AUTH_MODES)},
                        "body_logging": {"type": "boolean"}}),
          response=CLIENT, errors=(400, 404)),
    Route(operation_id="setClientStatus", method="PUT", path=f"{API}/clients/{{client_id}}/status",
          roles=REGISTRATION, tag="clients", summary="Mark a client saved, registered or disabled",
          request=obj({"status": {"type": "string", "enum": list(CLIENT_STATUSES)}}, ("status",)),
          response=CLIENT, errors=(400, 404)),
    Route(operation_id="removeClient", method="DELETE", path=f"{API}/clients/{{client_id}}", roles=REGISTRATION,
          tag="clients", summary="Remove a client with its services and their access rights", status=204,
          errors=(400, 404)),
    Route(operation_id="registerClient", method="POST", path=f"{API}/clients/{{client_id}}/register",
          roles=REGISTRATION, tag="clients",
          summary="Send the central server a client registration request for a hosted client, signed with this "
                  "server's authentication key (a registration officer there approves it)",
          response=MANAGEMENT_RESULT, errors=(400, 404, 409, 500)),
    Route(operation_id="addIsCert", method="POST", path=f"{API}/clients/{{client_id}}/is-certs", roles=SERVICES,
          tag="clients", summary="Register an information system's TLS certificate (PEM)",
          request=obj({"pem": string("PEM certificate", max_length=16384, min_length=1)}, ("pem",)),
          response=FINGERPRINT, status=201, errors=(400, 404, 409)),
    Route(operation_id="removeIsCert", method="DELETE",
          path=f"{API}/clients/{{client_id}}/is-certs/{{fingerprint}}", roles=SERVICES, tag="clients",
          summary="Remove an information system's TLS certificate", status=204, errors=(400, 404)),
    # --- services and endpoints
    Route(operation_id="listServices", method="GET", path=f"{API}/services", roles=READERS, tag="services",
          summary="REST services of hosted subsystems", response=page_schema(SERVICE), paginated=True,
          query=(Param(name="provider", where="query", description="only this subsystem ('/'-joined)",
                       schema=identifier("subsystem")),)),
    Route(operation_id="addService", method="POST", path=f"{API}/services", roles=SERVICES, tag="services",
          summary="Add a REST service of a hosted subsystem",
          request=obj({"id": SERVICE_ID, "url": HTTP_URL, "timeout_seconds": TIMEOUT,
                        "openapi_url": {"anyOf": [HTTP_URL, {"type": "null"}]},
                        "enabled": {"type": "boolean"}, "disabled_notice": string("notice"),
                        "endpoints": {"type": "array", "items": ENDPOINT, "maxItems": 1000},
                        **_TRANSPARENCY_FIELDS}, ("id", "url")),
          response=SERVICE, status=201, errors=(400, 404, 409)),
    Route(operation_id="getService", method="GET", path=f"{API}/services/{{service_id}}", roles=READERS,
          tag="services", summary="One service", response=SERVICE, errors=(400, 404)),
    Route(operation_id="updateService", method="PATCH", path=f"{API}/services/{{service_id}}", roles=SERVICES,
          tag="services", summary="Change a service; openapi_url \"\" removes it",
          request=obj({"url": HTTP_URL, "timeout_seconds": TIMEOUT,
                        "openapi_url": {"anyOf": [HTTP_URL, {"const": ""}], "description": "OpenAPI URL, or \"\" "
                                        "to remove it"},
                        "enabled": {"type": "boolean"}, "disabled_notice": string("notice"),
                        **_TRANSPARENCY_FIELDS}),
          response=SERVICE, errors=(400, 404)),
    Route(operation_id="removeService", method="DELETE", path=f"{API}/services/{{service_id}}", roles=SERVICES,
          tag="services", summary="Remove a service with its endpoints and access rights", status=204,
          errors=(400, 404)),
    Route(operation_id="addEndpoint", method="POST", path=f"{API}/services/{{service_id}}/endpoints",
          roles=SERVICES, tag="services", summary="Add an endpoint (method and path) to a service",
          request=ENDPOINT, response=ENDPOINT, status=201, errors=(400, 404, 409)),
    Route(operation_id="removeEndpoint", method="DELETE", path=f"{API}/services/{{service_id}}/endpoints",
          roles=SERVICES, tag="services", summary="Remove an endpoint of a service", status=204,
          query=ENDPOINT_QUERY, errors=(400, 404)),
    # --- access rights
    Route(operation_id="listAccessRights", method="GET", path=f"{API}/services/{{service_id}}/access-rights",
          roles=READERS, tag="access-rights", summary="Who may call a service", response=page_schema(ACCESS_RIGHT),
          paginated=True, errors=(400, 404)),
    Route(operation_id="grantAccess", method="POST", path=f"{API}/services/{{service_id}}/access-rights",
          roles=SERVICES, tag="access-rights", summary="Grant a subject access to a service or one endpoint",
          request=obj({"subject": SUBJECT, "method": METHOD, "path": PATH_PATTERN}, ("subject",)),
          response=ACCESS_RIGHT, status=201, errors=(400, 404, 409)),
    Route(operation_id="revokeAccess", method="DELETE", path=f"{API}/services/{{service_id}}/access-rights",
          roles=SERVICES, tag="access-rights", summary="Revoke an access right", status=204,
          query=(Param(name="subject", where="query", required=True, description="as granted", schema=SUBJECT),
                 *ENDPOINT_QUERY),
          errors=(400, 404)),
    # --- local groups
    Route(operation_id="listLocalGroups", method="GET", path=f"{API}/local-groups", roles=READERS,
          tag="local-groups", summary="Local groups and their members", response=page_schema(GROUP),
          paginated=True),
    Route(operation_id="addLocalGroup", method="POST", path=f"{API}/local-groups", roles=SERVICES,
          tag="local-groups", summary="Add a local group",
          request=obj({"code": code("local group code"), "description": string("description")},
                       ("code",)),
          response=GROUP, status=201, errors=(400, 409)),
    Route(operation_id="removeLocalGroup", method="DELETE", path=f"{API}/local-groups/{{code}}", roles=SERVICES,
          tag="local-groups", summary="Remove a local group, its members and the rights granted to it",
          status=204, errors=(400, 404)),
    Route(operation_id="addLocalGroupMember", method="POST", path=f"{API}/local-groups/{{code}}/members",
          roles=SERVICES, tag="local-groups", summary="Add a client to a local group",
          request=obj({"client": CLIENT_ID}, ("client",)), response=GROUP, status=201, errors=(400, 404, 409)),
    Route(operation_id="removeLocalGroupMember", method="DELETE",
          path=f"{API}/local-groups/{{code}}/members/{{client_id}}", roles=SERVICES, tag="local-groups",
          summary="Remove a client from a local group", status=204, errors=(400, 404)),
    # --- software token: keys, certificates, CSRs (docs/tokens.md)
    Route(operation_id="getToken", method="GET", path=f"{API}/token", roles=READERS, tag="token",
          summary="The software token: login state, PIN lock-out, keys and their certificates",
          response=TOKEN_STATE, errors=(404,)),
    Route(operation_id="listTokens", method="GET", path=f"{API}/tokens", roles=READERS, tag="token",
          summary="Every token of the server (software, PKCS#11 devices) with its state", response=TOKEN_LIST,
          errors=()),
    Route(operation_id="loginToken", method="PUT", path=f"{API}/token/login", roles=SECURITY, tag="token",
          summary="Enter the token PIN (key generation and CSRs need it)", request=obj({"pin": PIN}, ("pin",)),
          status=204, secret_fields=frozenset({"pin"}), errors=(400, 404, 423)),
    Route(operation_id="logoutToken", method="PUT", path=f"{API}/token/logout", roles=SECURITY, tag="token",
          summary="Forget the PIN (running signing keeps working)", status=204, errors=(404,)),
    Route(operation_id="changeTokenPin", method="PUT", path=f"{API}/token/pin", roles=SECURITY, tag="token",
          summary="Re-encrypt every key under a new PIN", request=obj({"old_pin": PIN, "new_pin": PIN},
                                                                       ("old_pin", "new_pin")),
          status=204, secret_fields=frozenset({"old_pin", "new_pin"}), errors=(400, 404, 423)),
    Route(operation_id="generateKey", method="POST", path=f"{API}/token/keys", roles=SECURITY, tag="token",
          summary="Generate a key for authentication or signing certificates (on a PKCS#11 device with device)",
          request=obj({"usage": {"type": "string", "enum": ["auth", "sign"]},
                        "key_type": {"type": "string", "enum": ["ec-p256", "rsa-2048", "rsa-3072"]},
                        "label": string("label", max_length=255),
                        "device": string("the PKCS#11 device's name (GET /tokens); default: the software token",
                                         max_length=64)}, ("usage",)),
          response=TOKEN_KEY, status=201, errors=(400, 404, 409, 500)),
    Route(operation_id="deleteKey", method="DELETE", path=f"{API}/token/keys/{{token_key_id}}", roles=SECURITY,
          tag="token", summary="Delete a key with its certificates (refused while one is active)", status=204,
          errors=(400, 404, 409)),
    Route(operation_id="createCsr", method="POST", path=f"{API}/token/keys/{{token_key_id}}/csr", roles=SECURITY,
          tag="token", summary="A certificate signing request for a key (identity from this server's settings)",
          request=obj({"member": MEMBER_ID, "name": string("organisation name for the subject", max_length=255)}),
          response=obj({"csr": string("PEM certificate request", max_length=16384)}, ("csr",)),
          errors=(400, 404, 409)),
    Route(operation_id="importCertificate", method="POST", path=f"{API}/token/certificates", roles=SECURITY,
          tag="token", summary="Import a certificate issued for a key of the token (it starts inactive)",
          request=obj({"pem": string("PEM certificate", max_length=16384),
                        "members": {"type": "array", "maxItems": 1000, "items": MEMBER_ID,
                                    "description": "members besides the owner this server signs for"}},
                       ("pem",)),
          response=TOKEN_CERT, status=201, errors=(400, 404, 409)),
    Route(operation_id="activateCertificate", method="PUT",
          path=f"{API}/token/certificates/{{sha256}}/activate", roles=SECURITY, tag="token",
          summary="Activate a certificate; the running server switches to it when it is the one to use",
          response=CERT_SWITCH, errors=(400, 404)),
    Route(operation_id="deactivateCertificate", method="PUT",
          path=f"{API}/token/certificates/{{sha256}}/deactivate", roles=SECURITY, tag="token",
          summary="Deactivate a certificate (no longer used for signing or TLS)",
          response=CERT_SWITCH, errors=(400, 404)),
    # --- global configuration
    Route(operation_id="registerServer", method="POST", path=f"{API}/token/register", roles=SECURITY, tag="token",
          summary="Send the central server a registration request for this server's newest authentication "
                  "certificate, signed with its key (a registration officer there approves it)",
          response=MANAGEMENT_RESULT, errors=(400, 409, 500)),
    Route(operation_id="getGlobalConfStatus", method="GET", path=f"{API}/globalconf/status", roles=READERS,
          tag="globalconf", summary="Version, expiry and last download of the global configuration",
          response=GLOBALCONF_STATUS, errors=()),
    Route(operation_id="refreshGlobalConf", method="POST", path=f"{API}/globalconf/refresh", roles=SYSADMIN,
          tag="globalconf", summary="Download the global configuration now", response=REFRESH_RESULT, errors=()),
    # --- message log (auditor)
    Route(operation_id="listMessageLogRecords", method="GET", path=f"{API}/messagelog/records", roles=AUDITOR,
          tag="messagelog", summary="Message-log records of one origin, in log order",
          response=page_schema(LOG_RECORD), paginated=True, audit_reads=True,
          query=(ORIGIN_QUERY,)),
    Route(operation_id="exportMessageLogRecord", method="GET", path=f"{API}/messagelog/records/{{seq}}",
          roles=AUDITOR, tag="messagelog", audit_reads=True,
          summary="One record's stored bytes, exactly as hashed into the log (canonical JSON)",
          response={"type": "object", "description": "the canonical record bytes (docs/messagelog.md)"},
          query=(ORIGIN_QUERY,),
          errors=(400, 404)),
    Route(operation_id="listMessageLogCheckpoints", method="GET", path=f"{API}/messagelog/checkpoints",
          roles=AUDITOR, tag="messagelog", audit_reads=True,
          summary="Signed checkpoints of the log, smallest first, with their timestamps (pages by min_size)",
          response=CHECKPOINT_LIST,
          query=(ORIGIN_QUERY,
                 Param(name="min_size", where="query", schema=_INT, description="only checkpoints of this size "
                       "or larger (default 0); next_min_size of a response gives the next page"),
                 Param(name="limit", where="query", schema={"type": "integer", "minimum": 1, "maximum": 1000},
                       description="checkpoints per page (default 100)"))),
    Route(operation_id="getMessageLogCheckpoint", method="GET", path=f"{API}/messagelog/checkpoints/{{size}}",
          roles=AUDITOR, tag="messagelog", audit_reads=True,
          summary="One checkpoint: its signed note, RFC 3161 token and the certificates to check them",
          response=CHECKPOINT_FULL, query=(ORIGIN_QUERY,), errors=(400, 404)),
    Route(operation_id="getTransparencyCounts", method="GET", path=f"{API}/messagelog/transparency",
          roles=AUDITOR, tag="messagelog", audit_reads=True,
          summary="Usage records per client, and how many are embargoed now (docs/transparency.md)",
          response=TRANSPARENCY_COUNTS, errors=()),
    Route(operation_id="proveMessageLogInclusion", method="GET", path=f"{API}/messagelog/proofs/inclusion",
          roles=AUDITOR, tag="messagelog", audit_reads=True,
          summary="Inclusion proof of a record in a checkpoint (default: the newest)", response=INCLUSION_PROOF,
          query=(ORIGIN_QUERY,
                 Param(name="seq", where="query", schema=_INT, required=True, description="the record"),
                 Param(name="size", where="query", schema=_INT, description="checkpoint size (default: newest)")),
          errors=(400, 404)),
    Route(operation_id="proveMessageLogConsistency", method="GET", path=f"{API}/messagelog/proofs/consistency",
          roles=AUDITOR, tag="messagelog", audit_reads=True,
          summary="Consistency proof between two checkpoints (new default: the newest)",
          response=CONSISTENCY_PROOF,
          query=(ORIGIN_QUERY,
                 Param(name="old", where="query", schema=_INT, required=True, description="older checkpoint size"),
                 Param(name="new", where="query", schema=_INT, description="newer checkpoint size (default: "
                       "newest)")),
          errors=(400, 404)),
    Route(operation_id="exportMessageLogArchive", method="GET", path=f"{API}/messagelog/archive",
          roles=AUDITOR, tag="messagelog", audit_reads=True, media_type="application/zip", response=ARCHIVE,
          summary="Download an archive of a range of the log, to verify offline with 'gateway log verify' "
                  "(default: every record covered by a checkpoint; the end moves up to the next checkpoint)",
          query=(ORIGIN_QUERY,
                 Param(name="start", where="query", schema=_INT, description="first sequence number"),
                 Param(name="end", where="query", schema=_INT, description="one past the last sequence number"),
                 Param(name="from", where="query", schema=_TIME_QUERY,
                       description="records created at or after this time (RFC 3339, UTC)"),
                 Param(name="to", where="query", schema=_TIME_QUERY,
                       description="records created before this time (RFC 3339, UTC)"),
                 Param(name="include_uncovered", where="query", schema={"type": "boolean"},
                       description="also records after the latest checkpoint (reported as unproven)")),
          errors=(400, 404, 409)),
    # --- witness (docs/witness.md)
    Route(operation_id="getWitness", method="GET", path=f"{API}/witness", roles=READERS, tag="witness",
          summary="The witness: on or off, its vkey, and the logs it has cosigned", response=WITNESS_STATE,
          errors=()),
    Route(operation_id="listWitnessEvidence", method="GET", path=f"{API}/witness/evidence", roles=READERS,
          tag="witness", summary="Checkpoints the witness refused as a fork or an inconsistent history, newest "
                                 "first, with both signed notes", response=page_schema(WITNESS_EVIDENCE),
          paginated=True, query=(Param(name="origin", where="query", description="only this checkpoint origin",
                                       schema={"type": "string", "minLength": 1, "maxLength": 512}),)),
    # --- operational monitoring
    Route(operation_id="listOpMonRecords", method="GET", path=f"{API}/opmon/records", roles=OPMON_READERS,
          tag="opmon", summary="Operational-monitoring records, one per exchange and side, newest first",
          response=page_schema(OPMON_RECORD), paginated=True,
          query=(Param(name="from", where="query", schema=_TIME_QUERY,
                       description="requests that arrived at or after this time (RFC 3339)"),
                 Param(name="to", where="query", schema=_TIME_QUERY,
                       description="requests that arrived before this time (RFC 3339; at or before `from`: "
                                   "an empty range)"),
                 Param(name="client", where="query", schema=CLIENT_ID, description="only this client ('/'-joined)"),
                 Param(name="service", where="query", schema=SERVICE_ID, description="only this service ('/'-joined)"),
                 Param(name="outcome", where="query", schema={"type": "string", "enum": ["ok", "failed"]},
                       description="ok: went through (whatever the service answered); failed: an X-Road fault"),
                 Param(name="side", where="query", schema={"type": "string", "enum": ["client", "server"]},
                       description="client: this server's client side; server: its server side"),
                 Param(name="request_id", where="query", schema=_OPMON_ID, description="only this X-Road-Request-Id"),
                 Param(name="message_id", where="query", schema=_OPMON_ID, description="only this X-Road-Id"))),
)

ROUTES_BY_ID: dict[str, Route] = {r.operation_id: r for r in ROUTES}

PathParams = Mapping[str, tuple[str, JsonSchema]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiSpec:
    """One admin API: its route table and the schemas of its path parameters, from which both the OpenAPI
    document (:func:`gateway.admin.openapi.build_document`) and the checks of each call are made."""

    title: str
    description: str
    routes: tuple[Route, ...]
    path_params: PathParams
    login_path: str = f"{API}/login"
    api_keys_path: str = f"{API}/api-keys"


SECURITY_SERVER_API = ApiSpec(
    title="Gateway security server admin API",
    description="Clients, services, access rights, local groups, global configuration status, message log "
    "(auditors), users, API keys and the audit log of one security server. See docs/admin-api.md.",
    routes=ROUTES, path_params=PATH_PARAMS,
)


def route_summary() -> list[dict[str, Any]]:
    """``[{operation_id, method, path, roles}]``: the role matrix (docs, tests)."""
    return [
        {"operation_id": r.operation_id, "method": r.method, "path": r.path,
         "roles": "public" if r.public else [x for x in ROLES if x in r.roles]}
        for r in ROUTES
    ]
