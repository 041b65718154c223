"""The global configuration as frozen value objects, with strict parsing and hot-path lookups (pure).

:meth:`GlobalConf.from_dict` takes the ``signed`` member of the envelope (docs/globalconf.md) and either
returns a fully validated :class:`GlobalConf` or raises :class:`~gateway.errors.GlobalConfError` whose
message names the offending field by its path (``security_servers[1].address``). :meth:`GlobalConf.to_dict`
is the inverse: ``GlobalConf.from_dict(d).to_dict() == d`` for every accepted ``d``.

Strictness is deliberate: the document is signed, so anything unexpected in it is either a bug in the
central server or a sign that we are not reading what the signer meant. Unknown keys are refused except
inside ``parameters`` (federation-wide knobs that newer central servers may add). Lists that are sets are
sorted and free of duplicates, so the same content always serialises to the same bytes.

The lookups used on every request (``server``, ``servers_for_client``, ``is_auth_cert_of``,
``is_member_of_group``...) are dictionary look-ups built once when the object is created.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from gateway.errors import IdentifierError, MalformedGlobalConf, TrustError
from gateway.identifiers import (
    ClientId,
    GlobalGroupId,
    MemberId,
    SecurityServerId,
    SubsystemId,
    check_part,
    parse_client,
)
from gateway.trust.cosignature import WitnessKey, parse_vkey
from gateway.trust.keys import cert_pem, cert_sha256_hex

FORMAT = 1  # the only format of the ``signed`` document this client knows
MAX_TEXT_LENGTH = 1024  # characters; names, descriptions, URLs - bounds work on hostile input
MAX_WITNESSES = 16  # per policy; a verifier must accept at least 16 signatures (c2sp.org/signed-note)
DEFAULT_OCSP_FRESHNESS_SECONDS = 3600  # seconds; X-Road's ocspFreshnessSeconds default
DEFAULT_TIMESTAMP_GRACE_SECONDS = 14400  # seconds; X-Road's timestamp failure grace period default

_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_HEX256_RE = re.compile(r"[0-9a-f]{64}")
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------------------
# Small shared codecs (also used by gateway.globalconf.anchor)


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with ``Z`` and whole seconds, the only time form on the wire."""
    return value.astimezone(UTC).strftime(_TIME_FORMAT)


cert_fingerprint = cert_sha256_hex  # keyids and authentication-certificate fingerprints
cert_to_pem = cert_pem  # the standard PEM form (64-character lines, final newline) used on the wire


@dataclass(frozen=True, slots=True)
class DocReader:
    """Reads one JSON document field by field, failing with the document name and the field's path."""

    name: str  # "global configuration", "anchor"

    def fail(self, path: str, message: str) -> NoReturn:
        raise MalformedGlobalConf(f"{self.name} field {path}: {message}")

    def obj(
        self, value: Any, path: str, *, required: Iterable[str], optional: Iterable[str] = (),
        open_ended: bool = False,
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, f"expected an object, got {_json_type(value)}")
        req = tuple(required)
        missing = [k for k in req if k not in value]
        if missing:
            self.fail(path, f"missing key {missing[0]!r}")
        if not open_ended:
            known = set(req) | set(optional)
            unknown = sorted(k for k in value if k not in known)
            if unknown:
                self.fail(path, f"unknown key {unknown[0]!r}")
        return value

    def text(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            self.fail(path, f"expected a string, got {_json_type(value)}")
        if value == "":
            self.fail(path, "is empty")
        if len(value) > MAX_TEXT_LENGTH:
            self.fail(path, f"is longer than {MAX_TEXT_LENGTH} characters")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            self.fail(path, "contains a control character")
        return value

    def integer(self, value: Any, path: str, *, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"expected an integer, got {_json_type(value)}")
        if value < minimum:
            self.fail(path, f"must be at least {minimum}, got {value}")
        return value

    def time(self, value: Any, path: str) -> datetime:
        if not isinstance(value, str):
            self.fail(path, f"expected an RFC 3339 time string, got {_json_type(value)}")
        if not _TIME_RE.fullmatch(value):
            self.fail(path, f"{value[:40]!r} is not an RFC 3339 UTC time of the form YYYY-MM-DDTHH:MM:SSZ")
        try:
            return datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            self.fail(path, f"{value!r} is not a valid date and time")

    def array(self, value: Any, path: str, *, non_empty: bool = False) -> list[Any]:
        if not isinstance(value, list):
            self.fail(path, f"expected a list, got {_json_type(value)}")
        if non_empty and not value:
            self.fail(path, "must not be empty")
        return value

    def items(
        self, value: Any, path: str, parse: Callable[[Any, str], _T], *, non_empty: bool = False
    ) -> list[_T]:
        values = self.array(value, path, non_empty=non_empty)
        return [parse(v, f"{path}[{i}]") for i, v in enumerate(values)]

    def sorted_unique(self, keys: Sequence[str], path: str, *, what: str, order: bool = True) -> None:
        """Refuse duplicates, and (if ``order``) keys that are not in ascending order."""
        seen: set[str] = set()
        for i, key in enumerate(keys):
            if key in seen:
                self.fail(f"{path}[{i}]", f"duplicate {what} {key!r}")
            if order and i and key < keys[i - 1]:
                self.fail(f"{path}[{i}]", f"{what} {key!r} is out of order; the list must be sorted")
            seen.add(key)

    def identifier(self, value: Any, path: str, parse: Callable[[str], _T]) -> _T:
        if not isinstance(value, str):
            self.fail(path, f"expected an identifier string, got {_json_type(value)}")
        try:
            return parse(value)
        except IdentifierError as e:
            self.fail(path, e.message)

    def fingerprint(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not _HEX256_RE.fullmatch(value):
            self.fail(path, "expected 64 lower-case hex digits (a SHA-256 fingerprint)")
        return value

    def url(self, value: Any, path: str) -> str:
        text = self.text(value, path)
        try:
            parts = urlsplit(text)
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as e:
            self.fail(path, f"{text!r} is not a valid URL: {e}")
        if parts.scheme not in ("http", "https") or not host:
            self.fail(path, f"{text!r} is not an http(s) URL with a host")
        if parts.username is not None or parts.fragment or " " in text:
            self.fail(path, f"{text!r} may not carry user information, a fragment or spaces")
        return text

    def address(self, value: Any, path: str) -> str:
        text = self.text(value, path)
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not port.isascii() or not 0 < int(port) < 65536:
            self.fail(path, f"{text!r} is not host:port with a port between 1 and 65535")
        if host.startswith("[") and host.endswith("]"):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                self.fail(path, f"{text!r} has an invalid IPv6 address")
        elif not _HOST_RE.fullmatch(host):
            self.fail(path, f"{text!r} has an invalid host name")
        return text

    def certificate(self, value: Any, path: str) -> x509.Certificate:
        if not isinstance(value, str):
            self.fail(path, f"expected a PEM certificate string, got {_json_type(value)}")
        try:
            cert = x509.load_pem_x509_certificate(value.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as e:
            self.fail(path, f"is not a PEM certificate: {e}")
        if cert_to_pem(cert) != value:
            # One certificate, standard form: the same content must always give the same bytes.
            self.fail(path, "is not one certificate in standard PEM form (64-character lines, final newline)")
        return cert


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__  # pragma: no cover - not produced by json.loads


# --------------------------------------------------------------------------------------------------------
# The value objects


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    id: MemberId
    name: str
    subsystems: tuple[str, ...]  # subsystem codes, sorted


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityServer:
    id: SecurityServerId
    address: str  # host:port of the server-to-server (mTLS) port
    auth_certs: frozenset[str]  # hex SHA-256 fingerprints of registered authentication certificates
    clients: tuple[ClientId, ...]  # sorted by their string form

    @property
    def owner(self) -> MemberId:
        return self.id.owner


@dataclass(frozen=True, slots=True, kw_only=True)
class GlobalGroup:
    id: GlobalGroupId
    description: str
    members: tuple[ClientId, ...]  # sorted by their string form


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateAuthority:
    name: str
    certificate: x509.Certificate
    ocsp_urls: tuple[str, ...]  # in order of preference


@dataclass(frozen=True, slots=True, kw_only=True)
class Tsa:
    name: str
    url: str
    certificate: x509.Certificate


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKey:
    keyid: str  # hex SHA-256 of the certificate (DER)
    certificate: x509.Certificate


@dataclass(frozen=True, slots=True, kw_only=True)
class Witness:
    """A witness (c2sp.org/tlog-witness) that a logging server pushes its checkpoints to.

    It runs on the security server ``server``, whose registered authentication certificate its TLS endpoint
    at ``url`` (the witness prefix: ``<url>/add-checkpoint``) must present, and cosigns with ``key``.
    """

    key: WitnessKey
    url: str  # https://host:port/<prefix>, the prefix without a final slash
    server: SecurityServerId

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def vkey(self) -> str:
        return self.key.vkey


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessPolicy:
    """Which witnesses must cosign the checkpoints of every log of the security server ``server``.

    It applies to all of the server's log origins (each worker's and node's message log, and its audit log): a
    checkpoint is witnessed when at least ``quorum`` of ``witnesses`` have cosigned it.
    """

    server: SecurityServerId
    quorum: int
    witnesses: tuple[Witness, ...]  # sorted by name

    def keys(self) -> dict[str, WitnessKey]:
        return {w.name: w.key for w in self.witnesses}


@dataclass(frozen=True, slots=True, kw_only=True)
class Parameters:
    """Federation-wide parameters as published; accessors give defaults for absent ones.

    Keys this client does not know are kept (so that ``to_dict`` is an exact inverse) and ignored.
    """

    values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    _KNOWN = ("ocsp_freshness_seconds", "timestamp_grace_seconds")

    @property
    def ocsp_freshness_seconds(self) -> int:
        value: int = self.values.get("ocsp_freshness_seconds", DEFAULT_OCSP_FRESHNESS_SECONDS)
        return value

    @property
    def timestamp_grace_seconds(self) -> int:
        value: int = self.values.get("timestamp_grace_seconds", DEFAULT_TIMESTAMP_GRACE_SECONDS)
        return value

    @classmethod
    def from_dict(cls, d: Any, reader: DocReader, path: str = "parameters") -> Parameters:
        obj = reader.obj(d, path, required=(), open_ended=True)
        for k in cls._KNOWN:
            if k in obj:
                reader.integer(obj[k], f"{path}.{k}", minimum=1)
        return cls(values=MappingProxyType(dict(obj)))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.values)


@dataclass(frozen=True, slots=True, kw_only=True)
class GlobalConf:
    """One validated global configuration (the ``signed`` part of the envelope)."""

    instance: str
    version: int
    issued_at: datetime
    expires_at: datetime
    central_url: str
    members: tuple[Member, ...] = ()
    security_servers: tuple[SecurityServer, ...] = ()
    global_groups: tuple[GlobalGroup, ...] = ()
    certificate_authorities: tuple[CertificateAuthority, ...] = ()
    timestamping_authorities: tuple[Tsa, ...] = ()  # in order of preference
    signing_keys: tuple[SigningKey, ...] = ()
    parameters: Parameters = field(default_factory=Parameters)
    witness_policies: tuple[WitnessPolicy, ...] = ()  # sorted by server; absent from the document when empty

    # Indexes for the hot path, built once in __post_init__.
    _members: dict[MemberId, Member] = field(init=False, repr=False, compare=False)
    _servers: dict[SecurityServerId, SecurityServer] = field(init=False, repr=False, compare=False)
    _by_client: dict[ClientId, tuple[SecurityServer, ...]] = field(init=False, repr=False, compare=False)
    _by_auth_cert: dict[str, SecurityServer] = field(init=False, repr=False, compare=False)
    _groups: dict[GlobalGroupId, frozenset[ClientId]] = field(init=False, repr=False, compare=False)
    _cas_by_subject: dict[bytes, tuple[CertificateAuthority, ...]] = field(
        init=False, repr=False, compare=False
    )
    _witness_policies: dict[SecurityServerId, WitnessPolicy] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_client: dict[ClientId, list[SecurityServer]] = {}
        by_auth: dict[str, SecurityServer] = {}
        for server in self.security_servers:
            for client in server.clients:
                by_client.setdefault(client, []).append(server)
            for fp in server.auth_certs:
                by_auth.setdefault(fp, server)
        cas: dict[bytes, list[CertificateAuthority]] = {}
        for ca in self.certificate_authorities:
            cas.setdefault(ca.certificate.subject.public_bytes(), []).append(ca)
        object.__setattr__(self, "_members", {m.id: m for m in self.members})
        object.__setattr__(self, "_servers", {s.id: s for s in self.security_servers})
        object.__setattr__(self, "_by_client", {k: tuple(v) for k, v in by_client.items()})
        object.__setattr__(self, "_by_auth_cert", by_auth)
        object.__setattr__(self, "_groups", {g.id: frozenset(g.members) for g in self.global_groups})
        object.__setattr__(self, "_cas_by_subject", {k: tuple(v) for k, v in cas.items()})
        object.__setattr__(self, "_witness_policies", {p.server: p for p in self.witness_policies})

    # ---- look-ups (all O(1) except ca_for, which checks one signature per candidate issuer)

    def server(self, server_id: SecurityServerId) -> SecurityServer | None:
        return self._servers.get(server_id)

    def servers_for_client(self, client: ClientId) -> tuple[SecurityServer, ...]:
        """The security servers on which ``client`` (a member or subsystem) is registered, sorted by id."""
        return self._by_client.get(client, ())

    def is_auth_cert_of(self, server_id: SecurityServerId, fingerprint: str) -> bool:
        server = self._servers.get(server_id)
        return server is not None and fingerprint in server.auth_certs

    def server_by_auth_cert(self, fingerprint: str) -> SecurityServer | None:
        return self._by_auth_cert.get(fingerprint)

    def is_member_of_group(self, client: ClientId, group_id: GlobalGroupId) -> bool:
        """Exact membership: a group listing a member does not contain its subsystems (as X-Road)."""
        members = self._groups.get(group_id)
        return members is not None and client in members

    def member(self, member_id: MemberId) -> Member | None:
        return self._members.get(member_id)

    def member_exists(self, member_id: MemberId) -> bool:
        return member_id in self._members

    def subsystem_exists(self, subsystem_id: SubsystemId) -> bool:
        member = self._members.get(subsystem_id.member)
        return member is not None and subsystem_id.subsystem_code in member.subsystems

    def ca_for(self, cert: x509.Certificate) -> CertificateAuthority | None:
        """The trusted CA that directly issued ``cert``: issuer name matches and its signature verifies."""
        for ca in self._cas_by_subject.get(cert.issuer.public_bytes(), ()):
            try:
                cert.verify_directly_issued_by(ca.certificate)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return ca
        return None

    def witness_policy(self, server_id: SecurityServerId) -> WitnessPolicy | None:
        """The witness policy of the logs of ``server_id``, if the federation sets one."""
        return self._witness_policies.get(server_id)

    def policies_witnessed_by(self, witness_name: str) -> tuple[WitnessPolicy, ...]:
        """The policies that name the witness ``witness_name`` (the servers whose logs it witnesses)."""
        return tuple(p for p in self.witness_policies if any(w.name == witness_name for w in p.witnesses))

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    @property
    def ocsp_freshness_seconds(self) -> int:
        return self.parameters.ocsp_freshness_seconds

    @property
    def timestamp_grace_seconds(self) -> int:
        return self.parameters.timestamp_grace_seconds

    # ---- (de)serialisation

    @classmethod
    def from_dict(cls, d: Any) -> GlobalConf:
        """Validate the ``signed`` document and build the configuration.

        Raises:
            GlobalConfError: any field is missing, unknown, of the wrong type or value, out of order,
                duplicated or refers to something that is not in the document; the message names the path.
        """
        r = DocReader("global configuration")
        top = r.obj(
            d, "(top)",
            required=(
                "format", "instance", "version", "issued_at", "expires_at", "central", "members",
                "security_servers", "global_groups", "certificate_authorities", "timestamping_authorities",
                "signing_keys", "parameters",
            ),
            optional=("witness_policies",),
        )
        fmt = r.integer(top["format"], "format", minimum=0)
        if fmt != FORMAT:
            r.fail("format", f"format {fmt} is not known to this client (it knows {FORMAT})")
        instance = r.identifier(top["instance"], "instance", lambda s: check_part(s, what="instance code"))
        version = r.integer(top["version"], "version", minimum=1)
        issued_at = r.time(top["issued_at"], "issued_at")
        expires_at = r.time(top["expires_at"], "expires_at")
        if expires_at <= issued_at:
            r.fail("expires_at", "must be later than issued_at")
        central = r.obj(top["central"], "central", required=("url",))
        central_url = r.url(central["url"], "central.url")

        def same_instance(ident: Any, path: str) -> None:
            if ident.instance != instance:
                r.fail(path, f"{ident} is not in instance {instance!r}")

        def member(v: Any, p: str) -> Member:
            o = r.obj(v, p, required=("id", "name", "subsystems"))
            mid = r.identifier(o["id"], f"{p}.id", MemberId.parse)
            same_instance(mid, f"{p}.id")
            subs = r.items(
                o["subsystems"], f"{p}.subsystems",
                lambda s, sp: r.identifier(s, sp, lambda t: check_part(t, what="subsystem code")),
            )
            r.sorted_unique(subs, f"{p}.subsystems", what="subsystem code")
            return Member(id=mid, name=r.text(o["name"], f"{p}.name"), subsystems=tuple(subs))

        members = r.items(top["members"], "members", member)
        r.sorted_unique([str(m.id) for m in members], "members", what="id")
        member_index = {m.id: m for m in members}

        def registered_client(v: Any, p: str) -> ClientId:
            cid = r.identifier(v, p, parse_client)
            same_instance(cid, p)
            owner = cid.member if isinstance(cid, SubsystemId) else cid
            m = member_index.get(owner)
            if m is None:
                r.fail(p, f"member {owner} is not listed in members")
            if isinstance(cid, SubsystemId) and cid.subsystem_code not in m.subsystems:
                r.fail(p, f"subsystem {cid} is not listed in members")
            return cid

        auth_owner: dict[str, str] = {}

        def server(v: Any, p: str) -> SecurityServer:
            o = r.obj(v, p, required=("id", "address", "auth_certs", "clients"))
            sid = r.identifier(o["id"], f"{p}.id", SecurityServerId.parse)
            same_instance(sid, f"{p}.id")
            if sid.owner not in member_index:
                r.fail(f"{p}.id", f"owner {sid.owner} is not listed in members")
            address = r.address(o["address"], f"{p}.address")
            certs = r.items(o["auth_certs"], f"{p}.auth_certs", r.fingerprint)
            r.sorted_unique(certs, f"{p}.auth_certs", what="fingerprint")
            for i, fp in enumerate(certs):
                if fp in auth_owner:
                    r.fail(f"{p}.auth_certs[{i}]", f"fingerprint is already registered for {auth_owner[fp]}")
                auth_owner[fp] = str(sid)
            clients = r.items(o["clients"], f"{p}.clients", registered_client)
            r.sorted_unique([str(c) for c in clients], f"{p}.clients", what="client id")
            return SecurityServer(
                id=sid, address=address, auth_certs=frozenset(certs), clients=tuple(clients)
            )

        servers = r.items(top["security_servers"], "security_servers", server)
        r.sorted_unique([str(s.id) for s in servers], "security_servers", what="id")

        def group(v: Any, p: str) -> GlobalGroup:
            o = r.obj(v, p, required=("id", "description", "members"))
            gid = r.identifier(o["id"], f"{p}.id", GlobalGroupId.parse)
            same_instance(gid, f"{p}.id")
            gm = r.items(o["members"], f"{p}.members", registered_client)
            r.sorted_unique([str(c) for c in gm], f"{p}.members", what="member id")
            description = r.text(o["description"], f"{p}.description")
            return GlobalGroup(id=gid, description=description, members=tuple(gm))

        groups = r.items(top["global_groups"], "global_groups", group)
        r.sorted_unique([str(g.id) for g in groups], "global_groups", what="id")

        def ca(v: Any, p: str) -> CertificateAuthority:
            o = r.obj(v, p, required=("name", "certificate", "ocsp_urls"))
            urls = r.items(o["ocsp_urls"], f"{p}.ocsp_urls", r.url)
            r.sorted_unique(urls, f"{p}.ocsp_urls", what="URL", order=False)
            return CertificateAuthority(
                name=r.text(o["name"], f"{p}.name"),
                certificate=r.certificate(o["certificate"], f"{p}.certificate"),
                ocsp_urls=tuple(urls),
            )

        cas = r.items(top["certificate_authorities"], "certificate_authorities", ca)
        r.sorted_unique([c.name for c in cas], "certificate_authorities", what="name")

        def tsa(v: Any, p: str) -> Tsa:
            o = r.obj(v, p, required=("name", "url", "certificate"))
            return Tsa(
                name=r.text(o["name"], f"{p}.name"),
                url=r.url(o["url"], f"{p}.url"),
                certificate=r.certificate(o["certificate"], f"{p}.certificate"),
            )

        tsas = r.items(top["timestamping_authorities"], "timestamping_authorities", tsa)
        # Order of preference, so not sorted; names must still be unique.
        r.sorted_unique([t.name for t in tsas], "timestamping_authorities", what="name", order=False)

        def signing_key(v: Any, p: str) -> SigningKey:
            o = r.obj(v, p, required=("keyid", "certificate"))
            keyid = r.fingerprint(o["keyid"], f"{p}.keyid")
            cert = r.certificate(o["certificate"], f"{p}.certificate")
            if cert_fingerprint(cert) != keyid:
                r.fail(f"{p}.keyid", "is not the SHA-256 fingerprint of the certificate")
            return SigningKey(keyid=keyid, certificate=cert)

        keys = r.items(top["signing_keys"], "signing_keys", signing_key)
        r.sorted_unique([k.keyid for k in keys], "signing_keys", what="keyid")

        server_index = {s.id: s for s in servers}

        def listed_server(v: Any, p: str) -> SecurityServerId:
            sid = r.identifier(v, p, SecurityServerId.parse)
            if sid not in server_index:
                r.fail(p, f"security server {sid} is not listed in security_servers")
            return sid

        def witness(v: Any, p: str) -> Witness:
            o = r.obj(v, p, required=("vkey", "url", "server"))
            try:
                key = parse_vkey(r.text(o["vkey"], f"{p}.vkey"))
            except TrustError as e:
                r.fail(f"{p}.vkey", e.message)
            url = r.url(o["url"], f"{p}.url")
            if not url.startswith("https://") or url.endswith("/") or urlsplit(url).query:
                r.fail(f"{p}.url", f"{url!r} must be an https URL without a query or a final '/'")
            return Witness(key=key, url=url, server=listed_server(o["server"], f"{p}.server"))

        def witness_policy(v: Any, p: str) -> WitnessPolicy:
            o = r.obj(v, p, required=("server", "quorum", "witnesses"))
            sid = listed_server(o["server"], f"{p}.server")
            ws = r.items(o["witnesses"], f"{p}.witnesses", witness, non_empty=True)
            if len(ws) > MAX_WITNESSES:
                r.fail(f"{p}.witnesses", f"has more than {MAX_WITNESSES} witnesses")
            r.sorted_unique([w.name for w in ws], f"{p}.witnesses", what="witness name")
            for i, w in enumerate(ws):
                if w.server.owner == sid.owner:
                    r.fail(f"{p}.witnesses[{i}].server",
                           f"{w.server} belongs to {sid.owner}, the logging server's own member; a witness "
                           "must run in another member's organisation")
            quorum = r.integer(o["quorum"], f"{p}.quorum", minimum=1)
            if quorum > len(ws):
                r.fail(f"{p}.quorum", f"{quorum} is more than the {len(ws)} witnesses listed")
            return WitnessPolicy(server=sid, quorum=quorum, witnesses=tuple(ws))

        policies = r.items(top.get("witness_policies", []), "witness_policies", witness_policy)
        r.sorted_unique([str(p.server) for p in policies], "witness_policies", what="server")

        return cls(
            instance=instance, version=version, issued_at=issued_at, expires_at=expires_at,
            central_url=central_url, members=tuple(members), security_servers=tuple(servers),
            global_groups=tuple(groups), certificate_authorities=tuple(cas),
            timestamping_authorities=tuple(tsas), signing_keys=tuple(keys),
            parameters=Parameters.from_dict(top["parameters"], r), witness_policies=tuple(policies),
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``signed`` document, ready for :func:`gateway.trust.canonical.canonical_bytes`."""
        return {
            "format": FORMAT,
            "instance": self.instance,
            "version": self.version,
            "issued_at": format_time(self.issued_at),
            "expires_at": format_time(self.expires_at),
            "central": {"url": self.central_url},
            "members": [
                {"id": str(m.id), "name": m.name, "subsystems": list(m.subsystems)} for m in self.members
            ],
            "security_servers": [
                {
                    "id": str(s.id), "address": s.address, "auth_certs": sorted(s.auth_certs),
                    "clients": [str(c) for c in s.clients],
                }
                for s in self.security_servers
            ],
            "global_groups": [
                {"id": str(g.id), "description": g.description, "members": [str(c) for c in g.members]}
                for g in self.global_groups
            ],
            "certificate_authorities": [
                {"name": c.name, "certificate": cert_to_pem(c.certificate), "ocsp_urls": list(c.ocsp_urls)}
                for c in self.certificate_authorities
            ],
            "timestamping_authorities": [
                {"name": t.name, "url": t.url, "certificate": cert_to_pem(t.certificate)}
                for t in self.timestamping_authorities
            ],
            "signing_keys": [
                {"keyid": k.keyid, "certificate": cert_to_pem(k.certificate)} for k in self.signing_keys
            ],
            "parameters": self.parameters.to_dict(),
        } | ({"witness_policies": [
            {
                "server": str(p.server), "quorum": p.quorum,
                "witnesses": [{"vkey": w.vkey, "url": w.url, "server": str(w.server)} for w in p.witnesses],
            }
            for p in self.witness_policies
        ]} if self.witness_policies else {})


def normalise(signed: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a ``signed`` document with every set-like list sorted (for publishers).

    The central server may build its document in any order and pass it through this function before
    signing; it sorts exactly the lists that :meth:`GlobalConf.from_dict` requires sorted and leaves the
    ordered ones (OCSP URLs, TSAs) alone. It does not validate anything else.
    """
    d: dict[str, Any] = dict(signed)

    def by(key: str) -> Callable[[Mapping[str, Any]], str]:
        return lambda item: str(item.get(key, ""))

    if isinstance(d.get("members"), list):
        d["members"] = sorted(
            ({**m, "subsystems": sorted(m.get("subsystems", []))} for m in d["members"]), key=by("id")
        )
    if isinstance(d.get("security_servers"), list):
        d["security_servers"] = sorted(
            (
                {**s, "auth_certs": sorted(s.get("auth_certs", [])), "clients": sorted(s.get("clients", []))}
                for s in d["security_servers"]
            ),
            key=by("id"),
        )
    if isinstance(d.get("global_groups"), list):
        d["global_groups"] = sorted(
            ({**g, "members": sorted(g.get("members", []))} for g in d["global_groups"]), key=by("id")
        )
    if isinstance(d.get("certificate_authorities"), list):
        d["certificate_authorities"] = sorted(d["certificate_authorities"], key=by("name"))
    if isinstance(d.get("signing_keys"), list):
        d["signing_keys"] = sorted(d["signing_keys"], key=by("keyid"))
    if isinstance(d.get("witness_policies"), list):
        d["witness_policies"] = sorted(
            ({**p, "witnesses": sorted(p.get("witnesses", []), key=lambda w: str(w.get("vkey", "")).split("+")[0])}
             for p in d["witness_policies"]),
            key=by("server"),
        )
    return d
