"""Access rights of the services this security server provides (pure).

docs/architecture.md section 4; X-Road UG-SS sections 6.7-8 (``ServerConfImpl.checkAccessRights``). The rules:

1. **Default deny.** A client may call a service only if some rule grants it.
2. A rule grants a **subject** access to a **service** and, within it, to an **endpoint**: an HTTP method
   (``*`` or one verb) and a path pattern. A rule given without an endpoint grants the whole service; it is
   stored as X-Road's base endpoint ``*`` ``**``. ``docs/access-rights.md`` has the rules with examples.
3. Subjects are a client (a subsystem or a member, compared exactly: a grant to a member does not cover its
   subsystems, as in X-Road), a global group (membership from the global configuration) or a local group
   (defined on this server; membership from serverconf).
4. Path patterns, matched segment by segment against the **normalised** path:
   ``*``, ``**`` or ``/**`` match every path (stored as ``**``); otherwise the pattern starts with ``/``;
   a segment ``*`` matches exactly one non-empty segment; a final segment ``**`` matches everything below
   the prefix (``/pets/**`` matches ``/pets/`` and ``/pets/1/toys`` but not ``/pets``); any other segment
   matches itself exactly.
   ``*`` inside a segment (``/a*b``) and ``**`` before the end are refused, so matching is linear.
5. The request path is normalised by :func:`gateway.protocol.rest.normalise_path` before matching (unreserved escapes
   decoded, ``%2F``, control characters and backslashes refused, dot segments resolved), so that an encoded
   ``..`` can never escape a rule; a path it refuses is a bad request, not a denial.

A denial is ``Server.ServerProxy.AccessDenied`` with HTTP status **500**: that is what X-Road's provider
security server returns (its REST error handler gives 500 to every ``Server.*`` type), and a client
written for X-Road expects it, although the fault is the caller's.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from gateway.errors import AccessDenied, IdentifierError, RequestError
from gateway.identifiers import (
    ClientId,
    GlobalGroupId,
    MemberId,
    ServiceId,
    SubsystemId,
    check_part,
    parse_client,
)
from gateway.protocol.rest import normalise_path

HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"})
MAX_PATH_PATTERN_LENGTH = 1024  # characters; fits a unique index on PostgreSQL with the subject


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalGroupId:
    """A local group of this security server (X-Road ``LOCALGROUP:code``)."""

    kind: ClassVar[str] = "local group"
    object_type: ClassVar[str] = "LOCALGROUP"
    code: str

    def __post_init__(self) -> None:
        check_part(self.code, what="local group code")

    def __str__(self) -> str:
        return self.code

    def typed(self) -> str:
        return f"{self.object_type}:{self.code}"


Subject = MemberId | SubsystemId | GlobalGroupId | LocalGroupId

_SUBJECT_TYPES: dict[str, type[MemberId | SubsystemId | GlobalGroupId]] = {
    "MEMBER": MemberId,
    "SUBSYSTEM": SubsystemId,
    "GLOBALGROUP": GlobalGroupId,
}


def subject_type(subject: Subject) -> str:
    """The X-Road object type of a subject: ``MEMBER``, ``SUBSYSTEM``, ``GLOBALGROUP`` or ``LOCALGROUP``."""
    return subject.object_type


def parse_subject(text: str, *, type_: str | None = None) -> Subject:
    """Parse an access-right subject.

    Accepted forms: X-Road's typed form (``SUBSYSTEM:DEV/GOV/1001/sub``, ``MEMBER:DEV/GOV/1001``,
    ``GLOBALGROUP:DEV/security-server-owners``, ``LOCALGROUP:code``), or an untyped client
    (``DEV/GOV/1001`` or ``DEV/GOV/1001/sub``). ``type_`` gives the type separately (as stored in serverconf).

    Raises:
        IdentifierError: unknown type, or the identifier is malformed for its type.
    """
    if type_ is None and ":" in text:
        type_, _, text = text.partition(":")
    if type_ is None:
        try:
            return parse_client(text, encoded=False)
        except IdentifierError as e:
            e.hint = "groups need a type prefix: GLOBALGROUP:INSTANCE/CODE or LOCALGROUP:CODE"
            raise
    if type_ == "LOCALGROUP":
        return LocalGroupId(code=check_part(text, what="local group code"))
    cls = _SUBJECT_TYPES.get(type_)
    if cls is None:
        raise IdentifierError(
            f"access-right subject type {type_[:40]!r} is unknown",
            hint="use SUBSYSTEM, MEMBER, GLOBALGROUP or LOCALGROUP",
        )
    return cls.parse(text, encoded=False)


def subject_text(subject: Subject) -> str:
    """The typed string form of a subject, which :func:`parse_subject` reads back."""
    return subject.typed()


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """An HTTP method (``*`` or a verb) and a path pattern (module docstring, rule 4)."""

    method: str = "*"
    path: str = "**"
    _segments: tuple[str, ...] | None = field(init=False, repr=False, compare=False, hash=False, default=None)

    def __post_init__(self) -> None:
        if self.method != "*" and self.method not in HTTP_METHODS:
            raise RequestError(
                f"endpoint method {self.method[:20]!r} is not '*' or one of {', '.join(sorted(HTTP_METHODS))}"
            )
        segments = _compile(self.path)
        if segments is None:
            object.__setattr__(self, "path", "**")  # one spelling for "every path": no duplicate rules
        object.__setattr__(self, "_segments", segments)

    def matches(self, method: str, path: str) -> bool:
        """Whether this endpoint covers ``method`` on the already normalised ``path``."""
        if self.method != "*" and self.method != method:
            return False
        return _match(self._segments, path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _compile(pattern: str) -> tuple[str, ...] | None:
    """Split a path pattern into segments; ``None`` stands for "every path".

    Raises:
        RequestError: the pattern is malformed.
    """
    if pattern in ("*", "**"):
        return None
    if len(pattern) > MAX_PATH_PATTERN_LENGTH:
        raise RequestError(f"endpoint path pattern is longer than {MAX_PATH_PATTERN_LENGTH} characters")
    if not pattern.startswith("/"):
        raise RequestError(f"endpoint path pattern {pattern[:80]!r} must be '*' or start with '/'")
    if any(ord(c) < 0x21 or ord(c) == 0x7F or c in "\\?#" for c in pattern):
        raise RequestError(
            f"endpoint path pattern {pattern[:80]!r} contains a space, control character, '\\', '?' or '#'"
        )
    segments = tuple(pattern[1:].split("/"))
    for i, seg in enumerate(segments):
        if seg == "**":
            if i != len(segments) - 1:
                raise RequestError(
                    f"endpoint path pattern {pattern[:80]!r}: '**' may only be the last segment"
                )
        elif seg != "*" and "*" in seg:
            raise RequestError(f"endpoint path pattern {pattern[:80]!r}: '*' must be a whole segment")
        elif seg in (".", ".."):
            raise RequestError(f"endpoint path pattern {pattern[:80]!r} contains a dot segment")
    if pattern == "/**":
        return None
    return segments


def _match(segments: tuple[str, ...] | None, path: str) -> bool:
    if segments is None:
        return True
    if not path.startswith("/"):
        return False
    parts = path[1:].split("/")
    if segments[-1] == "**":
        prefix = segments[:-1]
        if len(parts) <= len(prefix):
            return False
    elif len(parts) != len(segments):
        return False
    else:
        prefix = segments
    for seg, part in zip(prefix, parts, strict=False):
        if seg == "*":
            if part == "":
                return False
        elif seg != part:
            return False
    return True


BASE_ENDPOINT = Endpoint(method="*", path="**")  # X-Road's service-level endpoint: the whole service


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessRule:
    """``subject`` may call ``endpoint`` of ``service``."""

    subject: Subject
    service: ServiceId
    endpoint: Endpoint = BASE_ENDPOINT


class GroupResolver(Protocol):
    """Answers group membership: global groups from the global configuration, local groups from serverconf."""

    def in_global_group(self, client: ClientId, group: GlobalGroupId) -> bool: ...

    def in_local_group(self, client: ClientId, group: LocalGroupId) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupMembership:
    """A :class:`GroupResolver` over two mappings from group to its members."""

    global_groups: Mapping[GlobalGroupId, Collection[ClientId]] = field(default_factory=dict)
    local_groups: Mapping[LocalGroupId, Collection[ClientId]] = field(default_factory=dict)

    def in_global_group(self, client: ClientId, group: GlobalGroupId) -> bool:
        return client in self.global_groups.get(group, ())

    def in_local_group(self, client: ClientId, group: LocalGroupId) -> bool:
        return client in self.local_groups.get(group, ())


NO_GROUPS = GroupMembership()


def _applies(subject: Subject, client: ClientId, groups: GroupResolver) -> bool:
    if isinstance(subject, GlobalGroupId):
        return groups.in_global_group(client, subject)
    if isinstance(subject, LocalGroupId):
        return groups.in_local_group(client, subject)
    return subject == client


class AccessPolicy:
    """The access rules of this server, indexed once by service and subject for dict lookups per request."""

    __slots__ = ("_index", "_rules")

    def __init__(self, rules: Iterable[AccessRule]) -> None:
        index: dict[ServiceId, dict[Subject, list[Endpoint]]] = {}
        kept: dict[AccessRule, None] = {}
        for rule in rules:
            if rule in kept:
                continue
            kept[rule] = None
            index.setdefault(rule.service, {}).setdefault(rule.subject, []).append(rule.endpoint)
        self._rules = tuple(kept)
        self._index: dict[ServiceId, tuple[tuple[Subject, tuple[Endpoint, ...]], ...]] = {
            service: tuple((subject, tuple(eps)) for subject, eps in by_subject.items())
            for service, by_subject in index.items()
        }

    @property
    def rules(self) -> tuple[AccessRule, ...]:
        return self._rules

    def _granted(
        self, client: ClientId, service: ServiceId, groups: GroupResolver
    ) -> Iterable[Endpoint]:
        for subject, endpoints in self._index.get(service, ()):
            if _applies(subject, client, groups):
                yield from endpoints

    def check(
        self, client: ClientId, service: ServiceId, method: str, raw_path: str, *, groups: GroupResolver
    ) -> None:
        """Allow the call or raise.

        ``raw_path`` is the service path as received (after ``/r1/.../SERVICE``, without the query).

        Raises:
            RequestError: the path is malformed (from :func:`gateway.protocol.rest.normalise_path`, HTTP 400), or
                access is denied (:class:`~gateway.errors.AccessDenied`, ``Server.ServerProxy.AccessDenied`` with HTTP
                500 as in X-Road once the server proxy answers).
        """
        # (1) Normalise the path first, so that every rule sees the same path the service will get.
        path = normalise_path(raw_path)
        # (2) Default deny: a service with no rules has no endpoint to match.
        # (3) Allow if an endpoint granted to the client, or to a group it belongs to, matches.
        for endpoint in self._granted(client, service, groups):
            if endpoint.matches(method, path):
                return
        # (4) Deny, naming what was refused but not which rules exist.
        raise AccessDenied(
            f"client {client.typed()} is not allowed to call {method[:20]} {path[:200]} of service {service}",
        )

    def allowed_endpoints(
        self, client: ClientId, service: ServiceId, *, groups: GroupResolver
    ) -> tuple[Endpoint, ...]:
        """The endpoints of ``service`` that ``client`` may call (the ``allowedMethods`` metaservice),
        without duplicates, in rule order."""
        return tuple(dict.fromkeys(self._granted(client, service, groups)))

    def allowed_services(self, client: ClientId, *, groups: GroupResolver) -> tuple[ServiceId, ...]:
        """The services of which ``client`` may call at least one endpoint."""
        return tuple(s for s in self._index if any(True for _ in self._granted(client, s, groups)))
