"""This process's static settings: a frozen dataclass tree, then a TOML file, then ``GATEWAY_*`` variables.

Pure apart from reading the one file it is given. Precedence, lowest first: the defaults below, the TOML
file, environment variables, CLI flags (applied by the caller with :func:`dataclasses.replace`).

Environment variables name a section and a key with a double underscore:
``GATEWAY_CENTRAL__PORT=4000`` sets ``[central] port = 4000``. A bad setting (unknown section or key, wrong
type, bad value) raises :class:`~gateway.errors.ConfigError` naming the file (or variable) and the key; the
CLI turns that into exit code 2 before any socket opens.

Every key is documented in ``config/example.toml``; a test checks that file against this module.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

from gateway.errors import ConfigError

ENV_PREFIX = "GATEWAY_"


@dataclass(frozen=True, slots=True, kw_only=True)
class PkiSettings:
    dir: str = "certs"  # where the development CA keeps its keys, certificates and index
    ca_name: str = "Gateway Development CA"
    host: str = "127.0.0.1"  # the OCSP responder and TSA listen here
    ocsp_port: int = 8888
    tsa_port: int = 8889
    cert_validity_days: int = 730  # days; issued authentication and signing certificates
    ocsp_validity_seconds: int = 3600  # seconds; nextUpdate of OCSP responses; X-Road's freshness default
    # the ACME endpoint (RFC 8555, docs/acme.md): -1 (the default) switches it off; 0 picks a free port
    acme_port: int = -1
    acme_validity_days: float = 90.0  # days; certificates issued over ACME (as Let's Encrypt's)
    acme_http01_port: int = 80  # the port of the security server's host name that http-01 validation fetches


@dataclass(frozen=True, slots=True, kw_only=True)
class CentralSettings:
    instance: str = "DEV"  # the X-Road instance code of this federation
    host: str = "127.0.0.1"
    port: int = 4100  # the admin API of a security server defaults to 4000 (X-Road)
    database_url: str = "sqlite+aiosqlite:///var/central.db"
    key_dir: str = "var/central"  # configuration-signing keys and the anchor are written here
    conf_validity_seconds: int = 600  # seconds a published configuration stays valid; X-Road's default
    public_url: str = ""  # URL security servers download from; default http://HOST:PORT
    publish_interval_seconds: int = 60  # seconds between publication checks; X-Road's generation rate
    ocsp_freshness_seconds: int = 3600  # seconds; published parameter: max OCSP response age (X-Road)
    timestamp_grace_seconds: int = 14400  # seconds; published parameter: exchange without a TSA (X-Road)
    # published parameters of docs/transparency.md: purposes "CODE=text", the portal's subsystem id, the client
    # subsystems entitled to embargo their usage records
    transparency_purposes: tuple[str, ...] = ()
    transparency_portal: str = ""
    transparency_embargo_clients: tuple[str, ...] = ()
    ops_host: str = "127.0.0.1"  # /metrics, /healthz, /readyz listen here (keep it on an internal network)
    ops_port: int = 4101  # next to the central port; 0 picks a free port; -1 switches the ops port off
    admin_host: str = "127.0.0.1"  # the central admin REST API listens here (keep it on an internal network)
    admin_port: int = -1  # the central admin API's port; -1 (the default) switches it off; 0 picks a free port
    # approve an authentication certificate registration without an officer when it is a renewal: co-signed by
    # an authentication certificate registered for the same server now (docs/registration.md)
    auto_approve_auth_renewal: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class GlobalConfSettings:
    anchor: str = "var/anchor.json"  # the anchor file handed out by the central server
    cache_dir: str = "var/globalconf"  # last good configuration, replaced atomically
    poll_seconds: int = 60  # seconds between downloads; X-Road's default
    timeout_seconds: float = 10.0  # seconds for one download
    max_bytes: int = 16 * 2**20  # bytes; a larger download is refused (bounds memory on a hostile server)



@dataclass(frozen=True, slots=True, kw_only=True)
class Pkcs11Device:
    """One ``[[server.pkcs11]]`` table: a PKCS#11 token the server opens at start (docs/tokens.md)."""

    name: str = ""  # how the API, the CLI (--device NAME), the web interface and readiness name it; unique
    library: str = ""  # path of the device's PKCS#11 library
    token_label: str = ""  # the label of the token on the device
    pin_file: str = ""  # file (mode 0600) holding the device's user PIN; never the PIN itself
    pin_env: str = ""  # or: the name of an environment variable holding it
    sessions: int = 2  # sessions and worker threads for the device (1-64)


LEGACY_DEVICE_NAME = "device"  # the name of the device of [server] pkcs11_library and its sibling keys

@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    id: str = "DEV/GOV/1001/ss1"  # this security server: INSTANCE/CLASS/MEMBER/SERVERCODE
    database_url: str = "sqlite+aiosqlite:///var/server.db"  # serverconf and message log
    # PostgreSQL only: seconds to open a connection, and seconds one statement may take, before it fails (an
    # exchange then fails closed with LoggingFailed instead of waiting on an unreachable database for ever)
    database_connect_timeout_seconds: float = 5.0
    database_statement_timeout_seconds: float = 30.0
    # this machine's name among the nodes of one server sharing database_url (PostgreSQL): "" on one machine,
    # else unique per node, e.g. "node2"; names its log origins (docs/messagelog.md section 5)
    node: str = ""
    workers: int = 1  # processes serving this node's ports (SO_REUSEPORT), each a log origin of its own
    max_loggable_body_bytes: int = 10 * 2**20  # bytes; X-Road's max-loggable-message-body-size default
    messagelog_batch_size: int = 256  # records per group commit; bounds one transaction's size
    # "sql" (durable, the default) or "memory": NOT durable, lost at exit, for benchmarks only (a warning at start)
    messagelog_backend: typing.Literal["sql", "memory"] = "sql"
    body_logging: bool = True  # false: only body digests are logged, for every client; true: per client (serverconf)
    checkpoint_interval_seconds: float = 60.0  # seconds between signed log checkpoints (if records came)
    checkpoint_max_records: int = 10000  # records after which a checkpoint is made before the interval ends
    timestamp_grace_seconds: int = 0  # seconds exchanges go on without a TSA; 0: the global conf's (4 h)
    timestamp_timeout_seconds: float = 10.0  # seconds for one TSA request before the next TSA is tried
    state_dir: str = "var/server"  # keys and certificates of this server (gateway server init writes them)
    client_host: str = "127.0.0.1"  # information systems call here (plain HTTP)
    client_port: int = 8080  # X-Road's default; 0 picks a free port
    client_https_port: int = 8443  # the same, over HTTPS; -1 switches it off
    server_host: str = "127.0.0.1"  # peer security servers call here (mutual TLS)
    server_port: int = 5500  # X-Road's default; 0 picks a free port
    address: str = ""  # host:port peers use, as registered centrally; default server_host:server_port
    max_body_bytes: int = 10 * 2**20  # bytes; larger requests get 413 (X-Road's loggable maximum)
    # bytes of bodies held in memory by all exchanges at once; beyond: Overloaded. A body over the spool's memory
    # threshold (1 MiB) counts with that threshold only: the rest of it is in spool_dir (docs/performance.md 9)
    max_inflight_body_bytes: int = 256 * 2**20
    spool_dir: str = ""  # where bodies over 1 MiB are held while they pass (0700, ours); "": <state_dir>/spool
    max_uri_bytes: int = 8192  # bytes of path and query
    # The data-path ports (client-facing and server-to-server), per worker process, against slow or idle
    # clients and too many of them (docs/protocol.md section 1.5 for the answers)
    header_timeout_seconds: float = 15.0  # seconds from a request's first byte to its header block's end (408)
    keepalive_timeout_seconds: float = 75.0  # seconds a kept-alive connection may stay idle between requests
    max_connections: int = 4096  # open connections per port; one more is answered 503 and closed
    max_header_bytes: int = 64 * 2**10  # bytes of one request's header names and values (431)
    max_client_exchanges: int = 512  # exchanges of one X-Road-Client in progress at once on the client ports (429)
    transparency: bool = True  # usage records for requests with transparency headers, findUsage (docs/transparency.md)
    transparency_max_subjects: int = 16  # subject ids in one X-Road-Data-Subject; more is answered 400
    transparency_max_page: int = 100  # the largest findUsage limit; a larger one is answered 400
    max_clock_skew_seconds: int = 60  # seconds a signature's created may differ from our clock
    replay_window_seconds: int = 300  # seconds a request id is remembered (at least twice the skew)
    ocsp_refresh_seconds: float = 300.0  # seconds before an OCSP response is fetched again (in the background)
    ocsp_timeout_seconds: float = 10.0  # seconds for one OCSP fetch; a failed one is retried with back-off
    connect_timeout_seconds: float = 10.0  # seconds to reach a peer security server
    allow_tls12: bool = False  # between servers: TLS 1.3 only unless set (then 1.2 with AEAD suites)
    serverconf_reload_seconds: float = 1.0  # seconds between checks for changed clients, services, rights, keys
    admin_host: str = "127.0.0.1"  # the admin REST API listens here (keep it on an internal network)
    admin_port: int = 4000  # X-Road's admin port; 0 picks a free port; -1 switches the admin API off
    token_dir: str = ""  # software token directory; empty: plain key files in state_dir (docs/tokens.md)
    token_pin_file: str = ""  # file (mode 0600) holding the token PIN; never the PIN itself
    token_pin_env: str = ""  # or: the name of an environment variable holding the PIN
    # a PKCS#11 device for the signing key (docs/tokens.md, "PKCS#11 tokens"); the authentication key stays in
    # the software token or the key files: Python's ssl module loads TLS keys only from files
    pkcs11_library: str = ""  # path of the device's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so; "": none
    pkcs11_token_label: str = ""  # the label of the token on the device
    pkcs11_pin_file: str = ""  # file (mode 0600) holding the device's user PIN; never the PIN itself
    pkcs11_pin_env: str = ""  # or: the name of an environment variable holding it
    pkcs11_sessions: int = 2  # sessions and worker threads for the device (1-64); calls are serialised per library
    # several devices: [[server.pkcs11]] tables (Pkcs11Device); the five keys above are one more, named "device"
    pkcs11: tuple[Pkcs11Device, ...] = ()
    cert_expiry_warning_days: int = 30  # days; certificates closer to expiry are reported (metric, CLI)
    # ACME renewal of the signing and authentication certificates (docs/acme.md); "" switches it off
    acme_directory_url: str = ""  # the CA's ACME directory, e.g. http://ca.example:8890/acme/directory
    acme_eab_kid: str = ""  # the external account binding key id the CA issued for this server's owner
    acme_eab_key_file: str = ""  # file (mode 0600) holding the EAB HMAC key (base64url); never the key itself
    acme_identifier: str = ""  # the host name the CA validates (http-01); "": the host of address/server_host
    acme_http01_host: str = "0.0.0.0"  # the http-01 responder listens here while ACME is on
    acme_http01_port: int = 80  # RFC 8555 8.3: the CA fetches from port 80; 0 picks a free port (tests)
    acme_renew_before_days: float = 30.0  # days; a certificate in use is renewed this long before it expires
    acme_check_seconds: float = 3600.0  # seconds between checks whether a certificate is due
    acme_retry_seconds: float = 60.0  # seconds; first wait after a failed renewal, doubled each time
    acme_retry_max_seconds: float = 3600.0  # seconds; the wait between retries never grows beyond this
    # seconds a renewed authentication certificate must have been listed in the global configuration before TLS
    # switches to it: peers must have downloaded a configuration that lists it too (3 x X-Road's 60 s polling)
    acme_auth_switch_delay_seconds: float = 180.0
    ops_host: str = "127.0.0.1"  # /metrics, /healthz, /readyz listen here (keep it on an internal network)
    ops_port: int = 5588  # X-Road's health-check port; 0 picks a free port; -1 switches the ops port off
    # /readyz turns 503 this long before exchanges would fail (docs/operations.md section 8):
    readiness_conf_margin_seconds: float = 120.0  # seconds before the global configuration expires
    readiness_grace_margin_seconds: float = 900.0  # seconds before the timestamping grace period ends
    readiness_ocsp_margin_seconds: float = 300.0  # seconds before our own OCSP responses pass their freshness
    # operational monitoring (docs/operations.md, "Operational monitoring"): one record per exchange and side,
    # never bodies
    opmon_records: bool = True  # false: no records are written (nor pruned: those kept stay readable)
    opmon_retention_days: int = 7  # days a record is kept; X-Road's op-monitor default (keep-records-for-days)
    opmon_queue_records: int = 10_000  # records waiting for the database; more are dropped and counted
    opmon_batch_records: int = 100  # records per batch insert at most (1-1000)
    opmon_batch_seconds: float = 0.05  # seconds a batch gathers records before its insert (0-1): fewer, larger batches
    exchange_log: bool = True  # one info-level log line per exchange; false saves its cost (docs/operations.md)
    # SQLite: bytes free on the database's filesystem below which /readyz is 503 (the disk filling up), before
    # the message log's commits fail with "No space left on device"; 0: not checked
    readiness_disk_free_bytes: int = 64 * 2**20


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminSettings:
    session_ttl_seconds: int = 900  # seconds a login's session token (JWT) is valid; short by design
    audience: str = "gateway-admin"  # the JWT audience this server issues and accepts
    max_failed_logins: int = 5  # consecutive wrong passwords before the account is locked
    lockout_seconds: int = 60  # seconds of the first lock; doubles with each further wrong password
    max_lockout_seconds: int = 3600  # seconds; the longest lock
    max_body_bytes: int = 50 * 2**10  # bytes of a request body; X-Road's management API limit (50 KB)
    secure_cookies: bool = False  # web interface: Secure cookies even over plain HTTP (behind a TLS proxy)


@dataclass(frozen=True, slots=True, kw_only=True)
class PortalSettings:
    """The citizen portal, ``gateway portal serve`` (docs/portal.md); it reads [globalconf] for the subsystems."""

    host: str = "127.0.0.1"
    port: int = 8090  # 0 picks a free port
    public_url: str = ""  # the portal's address as browsers see it (redirect URI base); default http://HOST:PORT
    security_server_url: str = "http://127.0.0.1:8080"  # client port of the security server hosting the portal
    client: str = ""  # the portal's subsystem (X-Road-Client); "" takes it from the global configuration
    issuer: str = "http://127.0.0.1:8091"  # the OpenID Connect provider; its discovery document is read from it
    client_id: str = "gateway-portal"  # the portal's client id at the provider (a public client with PKCE)
    id_token_leeway_seconds: int = 30  # seconds of clock skew allowed on the ID token's exp, iat and nbf
    session_ttl_seconds: int = 900  # seconds a sign-in lasts at most (the ID token's own expiry cuts it shorter)
    period_days: int = 365  # days back from now that findUsage is asked about
    page_limit: int = 50  # usages per findUsage call (offset/limit paging); at most [server] transparency_max_page
    max_usages_per_subsystem: int = 1000  # usages read from one subsystem at most; more are reported, not shown
    max_parallel: int = 8  # findUsage calls in flight at once
    timeout_seconds: float = 10.0  # seconds for one findUsage call or one call to the provider
    secure_cookies: bool = False  # Secure cookies even over plain HTTP (behind a TLS-terminating proxy)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingSettings:
    format: typing.Literal["auto", "json", "console"] = "auto"  # auto: console on a terminal, else JSON
    level: str = "info"


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessSettings:
    # serve POST /witness/add-checkpoint on the server port: cosign peers' checkpoints (docs/witness.md section 1);
    # the witness key is then made at start if the token (or state_dir) has none
    enabled: bool = False
    name: str = ""  # the witness key's name in cosignatures and vkeys; "": <[server] id>/witness
    max_request_bytes: int = 64 * 2**10  # bytes of one add-checkpoint body (413 past it); 63 proof lines fit easily
    # pushing this server's own checkpoints to the witnesses its policy names (docs/witness.md section 4)
    push: bool = True  # push when the global configuration has a witness policy for this server
    push_interval_seconds: float = 5.0  # seconds between push rounds
    push_timeout_seconds: float = 10.0  # seconds for one push to one witness (connect, send, answer)
    backoff_min_seconds: float = 5.0  # seconds before the next try after a witness's first failure; doubles
    backoff_max_seconds: float = 600.0  # seconds; the longest back-off
    lag_warning_seconds: float = 900.0  # seconds of witnessing lag after which /readyz warns (never 503)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    pki: PkiSettings = field(default_factory=PkiSettings)
    central: CentralSettings = field(default_factory=CentralSettings)
    globalconf: GlobalConfSettings = field(default_factory=GlobalConfSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    portal: PortalSettings = field(default_factory=PortalSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    witness: WitnessSettings = field(default_factory=WitnessSettings)


_S = TypeVar("_S", bound="DataclassInstance")


def _coerce(value: Any, tp: Any, *, where: str, from_env: bool) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (from_env and value == ""):
            return None
        return _coerce(value, args[0], where=where, from_env=from_env)
    if origin is list or origin is tuple:
        (item_tp, *_) = typing.get_args(tp)
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if dataclasses.is_dataclass(item_tp) and isinstance(item_tp, type):  # an array of tables
            if from_env:
                raise ConfigError(f"{where}: an array of tables cannot be set from the environment")
            if not all(isinstance(v, Mapping) for v in value):
                raise ConfigError(f"{where}: expected an array of tables [[...]]")
            return tuple(_apply(item_tp(), v, source=f"{where} [{n + 1}]", from_env=False)
                         for n, v in enumerate(value))
        items = [_coerce(v, item_tp, where=where, from_env=from_env) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if from_env and isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if from_env and isinstance(value, str):
            try:
                return int(value)
            except ValueError as e:
                raise ConfigError(f"{where}: expected an integer, got {value!r}") from e
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if from_env and isinstance(value, str):
            try:
                return float(value)
            except ValueError as e:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from e
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported setting type {tp!r}")  # pragma: no cover - a bug in this module


def pkcs11_devices(s: ServerSettings, *, require_pin: bool = True) -> tuple[Pkcs11Device, ...]:
    """Every PKCS#11 device of the settings: the one of ``[server] pkcs11_library`` (named
    :data:`LEGACY_DEVICE_NAME`) first, then the ``[[server.pkcs11]]`` tables in order.

    ``require_pin``: whether each device must name its PIN source (the server's start; the CLI may take the
    PIN from ``--pin-file``, ``--pin-env`` or a prompt instead).

    Raises:
        ConfigError: a device without name, library or token label; two devices of one name, or of the same
            library and token label; a device with neither a PIN file nor a PIN variable (with
            ``require_pin``), or a ``[[server.pkcs11]]`` table with both.
    """
    devices = list(s.pkcs11)
    legacy = bool(s.pkcs11_library or s.pkcs11_token_label)
    if legacy:
        devices.insert(0, Pkcs11Device(
            name=LEGACY_DEVICE_NAME, library=s.pkcs11_library, token_label=s.pkcs11_token_label,
            pin_file=s.pkcs11_pin_file, pin_env=s.pkcs11_pin_env, sessions=s.pkcs11_sessions,
        ))
    places: dict[tuple[str, str], str] = {}
    names: set[str] = set()
    for i, d in enumerate(devices):
        old = legacy and i == 0
        where = "[server] pkcs11_library" if old else f"[[server.pkcs11]] number {i + 1 - legacy}"
        keys = ("pkcs11_pin_file", "pkcs11_pin_env", "pkcs11_sessions") if old else ("pin_file", "pin_env", "sessions")
        if not d.name:
            raise ConfigError(f"{where}: name is empty; every device needs a name of its own")
        where = f"{where} (device {d.name!r})"
        if not d.library:
            raise ConfigError(f"{where}: the library path is empty")
        if not d.token_label:
            raise ConfigError(f"{where}: the token label is empty")
        if d.name in names:
            raise ConfigError(f"{where}: the device name {d.name!r} is used twice",
                              hint=f"the device of [server] pkcs11_library is named {LEGACY_DEVICE_NAME!r}")
        names.add(d.name)
        if not d.pin_file and not d.pin_env and require_pin:
            raise ConfigError(f"{where}: no PIN source; set {keys[0]} or {keys[1]}")
        if d.pin_file and d.pin_env and not old:  # (the single-device keys keep their old rule: the file wins)
            raise ConfigError(f"{where}: both {keys[0]} and {keys[1]} are set; set one")
        if not 1 <= d.sessions <= 64:
            raise ConfigError(f"{where}: {keys[2]} is {d.sessions}; it must be between 1 and 64")
        place = (d.library, d.token_label)
        if place in places:
            raise ConfigError(f"{where}: devices {places[place]!r} and {d.name!r} are the same token "
                              f"{d.token_label!r} of {d.library}")
        places[place] = d.name
    return tuple(devices)


def _apply(obj: _S, values: Mapping[str, Any], *, source: str, from_env: bool) -> _S:
    hints = typing.get_type_hints(type(obj))
    known = {f.name for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        where = f"{source}: key {key!r}"
        if key not in known:
            raise ConfigError(
                f"{where} is not a known setting", hint=f"known keys here: {', '.join(sorted(known))}"
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: expected a table [{key}]")
            changes[key] = _apply(getattr(obj, key), value, source=f"{source} [{key}]", from_env=from_env)
        else:
            changes[key] = _coerce(value, tp, where=where, from_env=from_env)
    return dataclasses.replace(obj, **changes)


def _env_tree(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load the settings tree: defaults, then the TOML file (if any), then ``GATEWAY_*`` variables.

    Raises:
        ConfigError: the file cannot be read or parsed, or a key or value is invalid.
    """
    settings = Settings()
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"settings file {p} does not exist") from e
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"settings file {p} cannot be read: {e}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"settings file {p} is not valid TOML: {e}") from e
        settings = _apply(settings, data, source=str(p), from_env=False)
    if env is not None:
        tree = _env_tree(env)
        if tree:
            settings = _apply(settings, tree, source="environment (GATEWAY_SECTION__KEY)", from_env=True)
    return settings
