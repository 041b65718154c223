"""X-Road identifiers as frozen value objects (pure).

Forms (X-Road PR-MESS section 1.3, PR-REST section 4.1):

    member           INSTANCE/CLASS/MEMBER
    subsystem        INSTANCE/CLASS/MEMBER/SUBSYSTEM
    service          INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE        (REST: no service version)
    security server  INSTANCE/CLASS/MEMBER/SERVERCODE
    global group     INSTANCE/GROUPCODE

Rules for every part, checked after percent-decoding exactly once:

1. not empty, at most :data:`MAX_PART_LENGTH` characters;
2. only the characters X-Road allows under ``strict-identifier-checks`` (its default since 7.3):
   ``A-Z a-z 0-9 ' ( ) + , - . = ?``. This excludes ``/ \\ ; : %``, spaces, control characters and
   anything outside ASCII;
3. not ``.`` or ``..``, which path-based tools would read as directory steps.

The string form joins parts with ``/``; since no valid part contains a character that needs
percent-encoding, the formatted form is also the encoded form and ``parse(str(x)) == x`` always holds.
``encoded_id()`` gives the ``:``-joined form used in admin API paths (``DEV:GOV:1001:ss1``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar
from urllib.parse import unquote_to_bytes

from gateway.errors import IdentifierError

MAX_PART_LENGTH = 255  # characters; X-Road stores each part in a VARCHAR(255)
MAX_IDENTIFIER_LENGTH = 1024  # characters of the whole encoded form; bounds work on hostile input
_PART_RE = re.compile(r"[A-Za-z0-9'()+,\-.=?]+")


def _describe(ch: str) -> str:
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        return f"control character U+{ord(ch):04X}"
    return f"character {ch!r}"


def check_part(value: str, *, what: str) -> str:
    """Validate one decoded identifier part and return it.

    Raises:
        IdentifierError: the part is empty, too long, ``.``/``..`` or has a forbidden character.
    """
    if value == "":
        raise IdentifierError(f"{what} is empty")
    if len(value) > MAX_PART_LENGTH:
        raise IdentifierError(f"{what} is {len(value)} characters long; at most {MAX_PART_LENGTH} are allowed")
    if value in (".", ".."):
        raise IdentifierError(f"{what} may not be {value!r}")
    if not _PART_RE.fullmatch(value):
        bad = next(ch for ch in value if not _PART_RE.fullmatch(ch))
        raise IdentifierError(
            f"{what} {value!r} contains a forbidden {_describe(bad)}",
            hint="allowed characters are A-Z a-z 0-9 ' ( ) + , - . = ?",
        )
    return value


def decode_part(raw: str | bytes, *, what: str) -> str:
    """Percent-decode one raw part exactly once (as UTF-8) and validate it.

    Raises:
        IdentifierError: the part is not valid UTF-8 after decoding, or fails :func:`check_part`.
    """
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogateescape")
    try:
        text = unquote_to_bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise IdentifierError(f"{what} is not valid UTF-8 after percent-decoding") from e
    return check_part(text, what=what)


def split_parts(text: str | bytes, *, kind: str, names: tuple[str, ...], encoded: bool) -> list[str]:
    """Split an identifier string into decoded, validated parts; the count must equal ``len(names)``.

    Raises:
        IdentifierError: wrong number of parts, or any part is invalid.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise IdentifierError(f"{kind} identifier is not valid UTF-8") from e
    if len(text) > MAX_IDENTIFIER_LENGTH:
        raise IdentifierError(f"{kind} identifier is longer than {MAX_IDENTIFIER_LENGTH} characters")
    raw_parts = text.split("/")
    if len(raw_parts) != len(names):
        raise IdentifierError(
            f"{kind} identifier {text[:80]!r} has {len(raw_parts)} parts; expected {len(names)} "
            f"({'/'.join(n.upper() for n in names)})"
        )
    # Without '%' and with ASCII only, percent-decoding changes nothing: check the parts as they are.
    decode = encoded and not (text.isascii() and "%" not in text)
    out = []
    for raw, name in zip(raw_parts, names, strict=True):
        what = f"{kind} identifier part {name}"
        out.append(decode_part(raw, what=what) if decode else check_part(raw, what=what))
    return out


_T = TypeVar("_T", bound="_Identifier")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Identifier:
    kind: ClassVar[str] = "identifier"
    object_type: ClassVar[str] = ""
    _names: ClassVar[tuple[str, ...]] = ()
    # Caches, not part of the value (no effect on equality, hashing or repr): the string form, made once,
    # and the identifier this one belongs to (a service's subsystem, a subsystem's or server's member).
    _text: str = field(default="", init=False, repr=False, compare=False)
    _parent: _Identifier | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in self._names:
            check_part(getattr(self, name), what=f"{self.kind} identifier part {name}")
        object.__setattr__(self, "_text", "/".join(getattr(self, n) for n in self._names))

    @classmethod
    def _from_checked(cls: type[_T], parts: Sequence[str]) -> _T:
        # Parts that already passed check_part (parsed, or taken from a valid identifier): the same value
        # as cls(**...) without checking each part a second time.
        obj = object.__new__(cls)
        for name, value in zip(cls._names, parts, strict=True):
            object.__setattr__(obj, name, value)
        object.__setattr__(obj, "_text", "/".join(parts))
        object.__setattr__(obj, "_parent", None)
        return obj

    @classmethod
    def parse(cls: type[_T], text: str | bytes, *, encoded: bool = True) -> _T:
        """Parse the ``/``-joined form; parts are percent-decoded once unless ``encoded=False``.

        Raises:
            IdentifierError: the text is not a valid identifier of this kind.
        """
        parts = split_parts(text, kind=cls.kind, names=cls._names, encoded=encoded)
        return cls._from_checked(parts)

    @classmethod
    def parse_encoded_id(cls: type[_T], text: str) -> _T:
        """Parse the ``:``-joined form used in admin API paths (``DEV:GOV:1001:ss1``).

        Raises:
            IdentifierError: the text is not a valid ``:``-joined identifier of this kind.
        """
        if "/" in text:
            raise IdentifierError(f"{cls.kind} identifier {text[:80]!r} must use ':' between parts")
        return cls.parse(text.replace(":", "/"), encoded=False)

    def parts(self) -> tuple[str, ...]:
        return tuple(getattr(self, n) for n in self._names)

    def __str__(self) -> str:
        return self._text

    def encoded_id(self) -> str:
        return ":".join(self.parts())

    def typed(self) -> str:
        """X-Road's ``TYPE:short/form`` rendering, e.g. ``SUBSYSTEM:DEV/GOV/1001/consumer``."""
        return f"{self.object_type}:{self}"


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberId(_Identifier):
    kind: ClassVar[str] = "member"
    object_type: ClassVar[str] = "MEMBER"
    _names: ClassVar[tuple[str, ...]] = ("instance", "member_class", "member_code")
    instance: str
    member_class: str
    member_code: str

    def subsystem(self, code: str) -> SubsystemId:
        return SubsystemId(
            instance=self.instance, member_class=self.member_class, member_code=self.member_code,
            subsystem_code=code,
        )

    def server(self, code: str) -> SecurityServerId:
        return SecurityServerId(
            instance=self.instance, member_class=self.member_class, member_code=self.member_code,
            server_code=code,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SubsystemId(_Identifier):
    kind: ClassVar[str] = "subsystem"
    object_type: ClassVar[str] = "SUBSYSTEM"
    _names: ClassVar[tuple[str, ...]] = ("instance", "member_class", "member_code", "subsystem_code")
    instance: str
    member_class: str
    member_code: str
    subsystem_code: str

    @property
    def member(self) -> MemberId:
        parent = self._parent
        if not isinstance(parent, MemberId):
            parent = MemberId._from_checked((self.instance, self.member_class, self.member_code))
            object.__setattr__(self, "_parent", parent)
        return parent

    def service(self, code: str) -> ServiceId:
        return ServiceId(
            instance=self.instance, member_class=self.member_class, member_code=self.member_code,
            subsystem_code=self.subsystem_code, service_code=code,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceId(_Identifier):
    kind: ClassVar[str] = "service"
    object_type: ClassVar[str] = "SERVICE"
    _names: ClassVar[tuple[str, ...]] = (
        "instance", "member_class", "member_code", "subsystem_code", "service_code",
    )
    instance: str
    member_class: str
    member_code: str
    subsystem_code: str
    service_code: str

    @property
    def subsystem(self) -> SubsystemId:
        parent = self._parent
        if not isinstance(parent, SubsystemId):
            parent = SubsystemId._from_checked(
                (self.instance, self.member_class, self.member_code, self.subsystem_code)
            )
            object.__setattr__(self, "_parent", parent)
        return parent

    @property
    def member(self) -> MemberId:
        return self.subsystem.member


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityServerId(_Identifier):
    kind: ClassVar[str] = "security server"
    object_type: ClassVar[str] = "SERVER"
    _names: ClassVar[tuple[str, ...]] = ("instance", "member_class", "member_code", "server_code")
    instance: str
    member_class: str
    member_code: str
    server_code: str

    @property
    def owner(self) -> MemberId:
        parent = self._parent
        if not isinstance(parent, MemberId):
            parent = MemberId._from_checked((self.instance, self.member_class, self.member_code))
            object.__setattr__(self, "_parent", parent)
        return parent


@dataclass(frozen=True, slots=True, kw_only=True)
class GlobalGroupId(_Identifier):
    kind: ClassVar[str] = "global group"
    object_type: ClassVar[str] = "GLOBALGROUP"
    _names: ClassVar[tuple[str, ...]] = ("instance", "group_code")
    instance: str
    group_code: str


ClientId = MemberId | SubsystemId


def parse_client(text: str | bytes, *, encoded: bool = True) -> ClientId:
    """Parse an ``X-Road-Client`` value: a member (3 parts) or a subsystem (4 parts).

    Raises:
        IdentifierError: neither form fits.
    """
    raw = text.decode("utf-8", "surrogateescape") if isinstance(text, bytes) else text
    if raw.count("/") == 2:
        return MemberId.parse(text, encoded=encoded)
    if raw.count("/") == 3:
        return SubsystemId.parse(text, encoded=encoded)
    raise IdentifierError(
        f"client identifier {raw[:80]!r} must be INSTANCE/CLASS/MEMBER or INSTANCE/CLASS/MEMBER/SUBSYSTEM"
    )


def member_of(client: ClientId) -> MemberId:
    """The member a client is or belongs to (whose signing key signs its messages)."""
    return client if isinstance(client, MemberId) else client.member
