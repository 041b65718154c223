"""JSON Schema building blocks that state the rules the admin APIs enforce (pure).

Each builder returns a schema with a ``pattern`` (so that a schema-driven client generates and checks good
values) and, where a regular expression only approximates the rule or words the error poorly, a ``format``
registered with :func:`gateway.admin.schema.register_format` whose checker is the very parser the handlers
use. The security server's route table (:mod:`gateway.admin.routes`) and the central server's
(:mod:`gateway.admin.central.routes`) both build their schemas from here.

Identifier rules (:mod:`gateway.identifiers`): every part is 1-255 of ``A-Z a-z 0-9 ' ( ) + , - . = ?`` and
not ``.`` or ``..``; bodies and queries join parts with ``/``, paths with ``:``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from gateway.admin import auth
from gateway.admin.schema import FORMATS, JsonSchema, register_format
from gateway.errors import IdentifierError
from gateway.identifiers import (
    MAX_IDENTIFIER_LENGTH,
    MAX_PART_LENGTH,
    GlobalGroupId,
    MemberId,
    SecurityServerId,
    ServiceId,
    SubsystemId,
    check_part,
    parse_client,
)

PART_CHARS = r"A-Za-z0-9'()+,\-.=?"
_PART = f"[{PART_CHARS}]{{1,{MAX_PART_LENGTH}}}"
PART_RULE = f"1-{MAX_PART_LENGTH} of A-Z a-z 0-9 ' ( ) + , - . = ?, not '.' or '..'"
HEX64_PATTERN = "^[0-9a-fA-F]{64}$"
PREFIX_PATTERN = "^[0-9a-fA-F]{8,64}$"


def _joined(counts: tuple[int, ...], sep: str, first: str = _PART) -> str:
    forms = [sep.join([first] + [_PART] * (n - 1)) for n in counts]
    body = forms[0] if len(forms) == 1 else "(?:" + "|".join(forms) + ")"
    return f"^{body}$"


def _no_dot_parts(sep: str) -> JsonSchema:
    s = re.escape(sep)
    return {"pattern": f"(?:^|{s})\\.\\.?(?:{s}|$)"}


def _client_in_path(text: str) -> object:
    if text.count(":") == 2:
        return MemberId.parse_encoded_id(text)
    if text.count(":") == 3:
        return SubsystemId.parse_encoded_id(text)
    raise IdentifierError(
        f"client identifier {text[:80]!r} in the path must be INSTANCE:CLASS:MEMBER or "
        "INSTANCE:CLASS:MEMBER:SUBSYSTEM"
    )


# kind -> (part counts, form, parser of the '/'-joined form, parser of the ':'-joined form)
_KINDS: dict[str, tuple[tuple[int, ...], str, Callable[..., object], Callable[[str], object]]] = {
    "member": ((3,), "INSTANCE/CLASS/MEMBER", MemberId.parse, MemberId.parse_encoded_id),
    "subsystem": ((4,), "INSTANCE/CLASS/MEMBER/SUBSYSTEM", SubsystemId.parse, SubsystemId.parse_encoded_id),
    "client": ((3, 4), "INSTANCE/CLASS/MEMBER[/SUBSYSTEM]", parse_client, _client_in_path),
    "service": ((5,), "INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE", ServiceId.parse, ServiceId.parse_encoded_id),
    "server": ((4,), "INSTANCE/CLASS/MEMBER/SERVERCODE", SecurityServerId.parse, SecurityServerId.parse_encoded_id),
    "group": ((2,), "INSTANCE/GROUPCODE", GlobalGroupId.parse, GlobalGroupId.parse_encoded_id),
}

def _register(kind: str, body_parse: Callable[..., object], path_parse: Callable[[str], object]) -> None:
    register_format(f"xroad-{kind}", lambda v: body_parse(v, encoded=False))
    register_format(f"xroad-{kind}-path", path_parse)


for _kind, _spec in _KINDS.items():
    _register(_kind, _spec[2], _spec[3])
register_format("username", auth.check_username)


def _of_instance(check: Callable[[str], object], instance: str) -> Callable[[str], object]:
    def checked(value: str) -> object:
        ident = check(value)
        if getattr(ident, "instance", instance) != instance:
            raise IdentifierError(f"{getattr(ident, 'kind', 'identifier')} {ident} belongs to instance "
                                  f"{getattr(ident, 'instance', '?')!r}; this server serves instance {instance!r}")
        return ident

    return checked


def identifier(
    kind: str, description: str | None = None, *, in_path: bool = False, instance: str | None = None
) -> JsonSchema:
    """A ``kind`` identifier (member, subsystem, client, service, server, group), ``/``-joined or, in a path,
    ``:``-joined; with ``instance``, only identifiers of that instance (the central server's rule)."""
    counts, form, _, _ = _KINDS[kind]
    sep = ":" if in_path else "/"
    shown = form.replace("/", sep)
    pattern = _joined(counts, sep, _PART if instance is None else re.escape(instance))
    fmt = f"xroad-{kind}-path" if in_path else f"xroad-{kind}"
    if instance is not None:
        check_part(instance, what="instance code")
        fmt = register_format(f"{fmt}@{instance}", _of_instance(FORMATS[fmt], instance))
        shown = shown.replace("INSTANCE", instance)
    return {
        "type": "string", "maxLength": MAX_IDENTIFIER_LENGTH, "pattern": pattern, "not": _no_dot_parts(sep),
        "format": fmt, "description": description or f"{kind} identifier {shown}",
        "x-rule": f"{shown}, each part {PART_RULE}",
    }


def subject_pattern() -> str:
    """An access-right subject: ``SUBSYSTEM:``, ``MEMBER:``, ``GLOBALGROUP:`` or ``LOCALGROUP:`` and an
    identifier of that kind, or an untyped member or subsystem (:func:`gateway.serverconf.access.parse_subject`)."""
    typed = [f"SUBSYSTEM:{_joined((4,), '/')[1:-1]}", f"MEMBER:{_joined((3,), '/')[1:-1]}",
             f"GLOBALGROUP:{_joined((2,), '/')[1:-1]}", f"LOCALGROUP:{_PART}", _joined((3, 4), "/")[1:-1]]
    return "^(?:" + "|".join(typed) + ")$"


def code(what: str) -> JsonSchema:
    """One identifier part used alone (``what``: "local group code"), checked as :func:`check_part` does."""
    name = register_format(what.replace(" ", "-"), lambda v: check_part(v, what=what))
    return {"type": "string", "minLength": 1, "maxLength": MAX_PART_LENGTH, "pattern": f"^{_PART}$",
            "not": {"enum": [".", ".."]}, "format": name, "description": what, "x-rule": PART_RULE}


USERNAME: JsonSchema = {
    "type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$",
    "format": "username", "description": "user name: 1-64 of A-Z a-z 0-9 . _ @ -, starting with a letter or digit",
    "x-rule": "1-64 of A-Z a-z 0-9 . _ @ -, starting with a letter or digit",
}
NEW_PASSWORD: JsonSchema = {
    "type": "string", "minLength": auth.MIN_PASSWORD_LENGTH, "maxLength": auth.MAX_PASSWORD_LENGTH,
    "description": f"{auth.MIN_PASSWORD_LENGTH}-{auth.MAX_PASSWORD_LENGTH} characters",
}
HEX64: JsonSchema = {"type": "string", "pattern": HEX64_PATTERN, "description": "hex SHA-256 (64 digits)",
                     "x-rule": "64 hex digits"}
HEX_PREFIX: JsonSchema = {"type": "string", "pattern": PREFIX_PATTERN,
                          "description": "hex SHA-256, or a unique prefix of at least 8 digits",
                          "x-rule": "8-64 hex digits"}
NON_BLANK = r"\S"  # a pattern: at least one character that is not white space

__all__ = [
    "HEX64", "HEX_PREFIX", "NEW_PASSWORD", "NON_BLANK", "PART_RULE", "USERNAME", "code", "identifier",
    "subject_pattern",
]
