"""A PKCS#11 token: keys generated and used on a device (an HSM, a smart card, SoftHSM2) (I/O).

The device holds everything of the token (docs/tokens.md, "PKCS#11 tokens"):

- each key pair, generated on the device (P-256, RSA 2048/3072) with ``CKA_ID`` = the SHA-256 of its public
  key (the key id the software token uses too); the private key is ``CKA_SENSITIVE`` and not
  ``CKA_EXTRACTABLE``, so it never leaves the device;
- each imported certificate as a ``CKO_CERTIFICATE`` object with the key's ``CKA_ID``;
- what the device has no attribute for (a key's usage and label, a certificate's state and import time) as
  private ``CKO_DATA`` objects of application ``gateway`` (``key:<id>``, ``cert:<sha256>``), JSON; a
  change replaces the object (their ``CKA_VALUE`` is read-only once created).

:meth:`Pkcs11Token.state` assembles these into the same :class:`~gateway.token.model.TokenState` that the
software token keeps in ``token.json``, so the import checks, the certificate choice and the reports are the
rules of :mod:`gateway.token.model`, unchanged. Without KDF or PIN verifier of ours: the device checks the
PIN and counts wrong ones itself (``CKR_PIN_INCORRECT``, ``CKR_PIN_LOCKED``).

Every device call runs in one of the token's ``sessions`` worker threads, on a session of its pool
(python-pkcs11 releases the GIL while the device works), so a slow device delays only the exchanges that
wait for a signature from it, never the event loop and the rest of the exchange's work. Calls into one
library are serialised, though: python-pkcs11 initialises it with ``C_Initialize(NULL)``, which by PKCS#11
promises single-threaded use (SoftHSM2 then runs without mutexes and crashed under concurrent signing), so
in one process signatures on a device follow one another; ``[server] workers`` processes each initialise
the library themselves and sign in parallel (docs/tokens.md, "Signing cost"). Any PKCS#11 error (library
failure, token removed, session or object handle gone) closes the sessions and marks the token
unavailable: every signature then fails at once with :class:`~gateway.errors.TokenUnavailable` (fail
closed) until :meth:`Pkcs11Token.probe`, or the next signature after ``retry_seconds``, finds the device
again (re-initialising the library, which a removed SoftHSM2 token needs) and logs in again with the PIN
it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Literal, TypeVar

import pkcs11
from asn1crypto import csr as asn1_csr
from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from gateway.errors import (
    ConfigError,
    KeyInUse,
    PinIncorrect,
    RequestError,
    TokenLocked,
    TokenNotActive,
    TokenUnavailable,
)
from gateway.identifiers import MemberId, SecurityServerId
from gateway.protocol.signatures import ALG_ECDSA_P256, ALG_RSA_V1_5
from gateway.token import model
from gateway.token.model import CertEntry, KdfParams, KeyEntry, TokenState
from gateway.trust import certprofile, keys
from gateway.trust.certprofile import CertKind

APPLICATION = "gateway"  # CKA_APPLICATION of our metadata objects
DEFAULT_SESSIONS = 2  # sessions (and worker threads) per device; calls are serialised (module text)
DEFAULT_RETRY_SECONDS = 1.0  # seconds between attempts to reach an unavailable device from the signing path
_RSA_BITS: dict[str, int] = {"rsa-2048": 2048, "rsa-3072": 3072}
# A device token has no KDF or verifier of ours (the device checks the PIN): the state carries these blanks.
_NO_KDF = KdfParams(salt=b"", time_cost=0, memory_kib=0, parallelism=0)

DeviceState = Literal["available", "unavailable", "logged-out"]
_T = TypeVar("_T")

_libraries: dict[str, Any] = {}  # path -> pkcs11.lib
_libraries_lock = threading.Lock()
# python-pkcs11 calls C_Initialize(NULL): by PKCS#11 (section 5.4) the application then promises not to call
# the library from several threads at once, and SoftHSM2 runs without its mutexes (concurrent signing crashed
# it here). So every call into one library holds that library's lock; see the module text.
_call_locks: dict[str, threading.RLock] = {}
# (library, token label) -> the PIN this process logged in with: a second handle on a token the process is
# logged in to (CKR_USER_ALREADY_LOGGED_IN) must bring the same PIN
_logged_in_pins: dict[tuple[str, str], str] = {}
# library path -> how often it was re-initialised (C_Finalize/C_Initialize): that closes the sessions of every
# token of the library, so a pool opened under an older count is opened again before its next call
_initialisations: dict[str, int] = {}


def library_generation(path: str) -> int:
    """How often the library at ``path`` was re-initialised in this process."""
    with _libraries_lock:
        return _initialisations.get(path, 0)


def library_lock(path: str) -> threading.RLock:
    """The lock every call into the PKCS#11 library at ``path`` holds."""
    with _libraries_lock:
        return _call_locks.setdefault(path, threading.RLock())


def _library(path: str, *, reinitialize: bool = False) -> Any:
    """The loaded PKCS#11 library at ``path`` (one per process and path; C_Initialize once).

    Raises:
        TokenUnavailable: the library cannot be loaded or initialised.
    """
    with library_lock(path), _libraries_lock:
        lib = _libraries.get(path)
        try:
            if lib is None:
                lib = pkcs11.lib(path)
                _libraries[path] = lib
            elif reinitialize:
                with contextlib.suppress(pkcs11.PKCS11Error):
                    lib.finalize()
                lib.initialize()
                _initialisations[path] = _initialisations.get(path, 0) + 1
        except pkcs11.PKCS11Error as e:
            raise TokenUnavailable(f"PKCS#11 library {path}: {_describe(e)}") from e
        return lib


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _public_key(pub: Any, key_type: keys.KeyType) -> keys.PublicKey:
    """The ``cryptography`` public key of a device public-key object."""
    if key_type == "ec-p256":
        point = bytes(pub[Attribute.EC_POINT])
        # EC_POINT is a DER OCTET STRING around the uncompressed point (PKCS#11 2.40 section 2.3.3)
        if len(point) == 67 and point[:2] == b"\x04\x41":
            point = point[2:]
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    n = int.from_bytes(pub[Attribute.MODULUS], "big")
    e = int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


ED25519_OID = "1.3.101.112"  # id-Ed25519 (RFC 8410): CKA_EC_PARAMS of a CKK_EC_EDWARDS key


def _ed25519_point(pub: Any) -> bytes:
    """The raw 32-byte public key of a device Ed25519 key (CKA_EC_POINT, a DER OCTET STRING around it)."""
    point = bytes(pub[Attribute.EC_POINT])
    if len(point) == 34 and point[:2] == b"\x04\x20":
        point = point[2:]
    if len(point) != 32:
        raise TokenUnavailable(f"the device's Ed25519 public key has {len(point)} bytes, not 32")
    return point


def _sign_with(priv: Any, key_type: keys.KeyType, data: bytes) -> bytes:
    """RFC 9421 signature bytes: ECDSA P-256 as r || s (what CKM_ECDSA returns), RSA PKCS#1 v1.5 SHA-256."""
    if key_type == "ec-p256":
        return bytes(priv.sign(hashlib.sha256(data).digest(), mechanism=Mechanism.ECDSA))
    return bytes(priv.sign(data, mechanism=Mechanism.SHA256_RSA_PKCS))


class _Pool:
    """``size`` logged-in sessions of one token, each used by one thread at a time (see the module text)."""

    def __init__(self, token: Pkcs11Token, size: int) -> None:
        self._token = token
        self.size = size
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._generation = 0
        self._keys: dict[tuple[int, int, bytes], Any] = {}  # (generation, session id, CKA_ID) -> key object
        self.slot: Any = None  # the token's slot, known once open: its presence is asked of it alone
        self.library_generation = -1  # library_generation() when the sessions were opened

    def open(self, pin: str) -> None:
        """Open ``size`` sessions; the first logs in (login is per application, the rest share it).

        Raises:
            PKCS11Error: as the device answers.
        """
        with self._lock:
            self._close_locked()
            generation = library_generation(self._token.library)
            token = self._token.find_token()
            known = (self._token.library, self._token.token_label)
            try:
                first = token.open(rw=True, user_pin=pin)
            except pkcs11.exceptions.UserAlreadyLoggedIn:
                # login is per application: another handle of this process is logged in (with its PIN)
                if not hmac.compare_digest(_logged_in_pins.get(known, "").encode(), pin.encode()):
                    raise pkcs11.exceptions.PinIncorrect() from None
                first = token.open(rw=True)
            _logged_in_pins[known] = pin
            sessions = [first] + [token.open(rw=True) for _ in range(self.size - 1)]
            self._generation += 1
            self._all = sessions
            self.slot = token.slot
            self.library_generation = generation
            for s in sessions:
                self._free.put(s)

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        # Sessions of an earlier initialisation of the library are gone already, and their handle numbers may
        # now be another token's new sessions: they are forgotten, never closed.
        if self.library_generation == library_generation(self._token.library):
            for s in self._all:
                with contextlib.suppress(Exception):
                    s.close()
        self._all = []
        self._keys = {}
        while not self._free.empty():
            self._free.get_nowait()

    @contextlib.contextmanager
    def session(self) -> Iterator[tuple[int, Any]]:
        """A session for one operation (blocks while all are busy); yields (generation, session)."""
        generation = self._generation
        s = self._free.get()
        try:
            yield generation, s
        finally:
            if generation == self._generation:  # sessions of a closed generation are not handed out again
                self._free.put(s)

    def private_key(self, generation: int, s: Any, key_id: bytes) -> Any:
        ident = (generation, id(s), key_id)
        key = self._keys.get(ident)
        if key is None:
            key = s.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
            self._keys[ident] = key
        return key


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DeviceStatus:
    """What the API, the CLI, the web interface and readiness show of a device."""

    name: str
    library: str
    token_label: str
    state: DeviceState
    error: str  # the last failure while unavailable, else ""
    sessions: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "pkcs11",
            "library": self.library,
            "token_label": self.token_label,
            "state": self.state,
            "error": self.error,
            "sessions": self.sessions,
        }


class Pkcs11Token:
    """The token labelled ``token_label`` in the PKCS#11 library ``library``. Log in before anything else.

    Raises (every device operation): TokenUnavailable when the library or the token fails.
    """

    def __init__(
        self,
        library: str,
        token_label: str,
        *,
        sessions: int = DEFAULT_SESSIONS,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        name: str = "",
    ) -> None:
        if not library:
            raise ConfigError("a PKCS#11 token needs the path of its library ([server] pkcs11_library)")
        if not token_label:
            raise ConfigError("a PKCS#11 token needs its token label ([server] pkcs11_token_label)")
        if not 1 <= sessions <= 64:
            raise ConfigError(f"[server] pkcs11_sessions is {sessions}; it must be between 1 and 64")
        self.library = library
        self.token_label = token_label
        self.name = name or f"pkcs11:{token_label}"  # [[server.pkcs11]] name; shown in the API and readiness
        self.retry_seconds = retry_seconds
        self._pool = _Pool(self, sessions)
        self._executor = ThreadPoolExecutor(max_workers=sessions, thread_name_prefix=f"pkcs11-{token_label}")
        self._pin: str | None = None
        self._error = ""
        self._available = False
        self._next_try = 0.0  # time.monotonic() before which a broken device is not tried again
        self._reconnect_lock = threading.Lock()

    # ---- the device -------------------------------------------------------------------------------------

    def find_token(self) -> Any:
        """The token object (raises PKCS11Error / TokenUnavailable as the library answers): asked of its own
        slot when that is known (a removed SoftHSM2 token fails every other token's C_GetSlotList), else found
        in the slot list."""
        lib = _library(self.library)
        slot = self._pool.slot
        if slot is not None:
            with contextlib.suppress(pkcs11.PKCS11Error):
                token = slot.get_token()
                if token.label == self.token_label:
                    return token
        try:
            return lib.get_token(token_label=self.token_label)
        except pkcs11.exceptions.NoSuchToken as e:
            raise TokenUnavailable(f"no token labelled {self.token_label!r} in {self.library}") from e

    @property
    def logged_in(self) -> bool:
        return self._pin is not None

    @property
    def available(self) -> bool:
        return self._pin is not None and self._available

    def status(self) -> DeviceStatus:
        state: DeviceState = "logged-out" if self._pin is None else ("available" if self._available else "unavailable")
        return DeviceStatus(
            name=self.name,
            library=self.library,
            token_label=self.token_label,
            state=state,
            error="" if self._available else self._error,
            sessions=self._pool.size,
        )

    def _broken(self, e: BaseException) -> TokenUnavailable:
        """Record a device failure: close the sessions, fail closed until the device answers again."""
        if isinstance(e, TokenUnavailable):
            message = e.message
        else:
            message = f"PKCS#11 token {self.token_label!r}: {_describe(e)}"
        self._available = False
        self._error = message
        self._next_try = time.monotonic() + self.retry_seconds
        self._pool.close()
        return e if isinstance(e, TokenUnavailable) else TokenUnavailable(message)

    def _connect(self, *, reinitialize: bool) -> None:
        """(Re)open the session pool with the PIN; raises PKCS11Error / TokenUnavailable."""
        assert self._pin is not None
        if reinitialize:
            _library(self.library, reinitialize=True)
        self._pool.open(self._pin)
        self._available = True
        self._error = ""

    def _ensure(self) -> None:
        """Connected, or reconnect when due (in a worker thread).

        Raises:
            RequestError: not logged in.
            TokenUnavailable: the device is unavailable (and could not be reached again now).
        """
        if self._pin is None:
            raise TokenNotActive(f"PKCS#11 token {self.token_label!r} is not logged in; log in with its PIN first")
        if self._available and self._pool.library_generation == library_generation(self.library):
            return
        if self._available:
            # another token of the same library re-initialised it (it came back from a failure): this token's
            # sessions are closed, but the token is there; open them again without re-initialising
            try:
                self._connect(reinitialize=False)
            except (pkcs11.PKCS11Error, TokenUnavailable) as e:
                raise self._broken(e) from e
            return
        with self._reconnect_lock:
            if self._available:
                return
            if time.monotonic() < self._next_try:
                raise TokenUnavailable(self._error or f"PKCS#11 token {self.token_label!r} is unavailable")
            try:
                # a removed token that came back is seen only after C_Finalize/C_Initialize (SoftHSM2 rescans then)
                self._connect(reinitialize=True)
            except (pkcs11.PKCS11Error, TokenUnavailable) as e:
                raise self._broken(e) from e

    def _run(self, fn: Callable[[int, Any], _T]) -> _T:
        """Run ``fn(generation, session)`` on a pooled session (worker thread); a device error breaks the pool."""
        with library_lock(self.library):
            try:
                self._ensure()
                with self._pool.session() as (generation, s):
                    return fn(generation, s)
            except pkcs11.exceptions.NoSuchKey as e:
                raise TokenUnavailable(
                    f"PKCS#11 token {self.token_label!r}: the key is no longer on the device (removed?)"
                ) from e
            except pkcs11.PKCS11Error as e:
                raise self._broken(e) from e

    async def _call(self, fn: Callable[[int, Any], _T]) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, fn)

    async def probe(self) -> DeviceStatus:
        """Ask the device whether it is still there, or try an unavailable one again now (the key watch
        does, every ``serverconf_reload_seconds``, so readiness follows the device without traffic)."""
        if self._pin is not None:
            self._next_try = 0.0
            with contextlib.suppress(TokenUnavailable):
                await self._call(lambda _g, s: self._check_present(s))
        return self.status()

    def _check_present(self, s: Any) -> None:
        """A round trip that fails when the token is gone: its own slot's token information (C_GetTokenInfo; a
        removed SoftHSM2 token answers CKR_GENERAL_ERROR there) and one of our objects' values. Not the slot
        list: a removed SoftHSM2 token fails the whole library's C_GetSlotList, which would mark every other
        token of the library gone too."""
        slot = self._pool.slot
        if slot is None:
            self.find_token()
        elif slot.get_token().label != self.token_label:
            raise TokenUnavailable(f"PKCS#11 token {self.token_label!r} is no longer in its slot")
        # (the search is read to its end: an unfinished one is finalised later, maybe on a closed session)
        found = list(s.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.APPLICATION: APPLICATION}))
        if found:
            found[0][Attribute.VALUE]

    async def login(self, pin: str, *, now: datetime | None = None) -> None:
        """Log in with the user PIN (kept in memory: the pool logs in again after the device comes back).

        Raises:
            RequestError: 401 ``Signer.PinIncorrect``; 423 ``Signer.TokenLocked`` when the device locked the PIN.
            TokenUnavailable: the library or the token cannot be reached.
        """
        if not pin:
            raise PinIncorrect(f"the PIN of PKCS#11 token {self.token_label!r} is empty")

        def attempt() -> None:
            self._pin = pin
            try:
                with library_lock(self.library):
                    self._connect(reinitialize=False)
            except pkcs11.exceptions.PinIncorrect as e:
                self._pin = None
                raise PinIncorrect(f"the PIN of PKCS#11 token {self.token_label!r} is incorrect") from e
            except pkcs11.exceptions.PinLocked as e:
                self._pin = None
                raise TokenLocked(f"PKCS#11 token {self.token_label!r} has locked its user PIN") from e
            except (pkcs11.PKCS11Error, TokenUnavailable) as e:
                self._pin = None
                raise self._broken(e) from e

        await asyncio.get_running_loop().run_in_executor(self._executor, attempt)

    def logout(self) -> None:
        """Close the sessions and forget the PIN (a signer handed out fails closed from now on)."""
        with library_lock(self.library):
            self._pin = None
            self._available = False
            self._pool.close()

    def close(self) -> None:
        self.logout()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- state ------------------------------------------------------------------------------------------

    def _metadata(self, s: Any) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for obj in list(s.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.APPLICATION: APPLICATION})):
            out[str(obj[Attribute.LABEL])] = json.loads(bytes(obj[Attribute.VALUE]))
        return out

    def _put_metadata(self, s: Any, label: str, value: dict[str, Any]) -> None:
        query = {Attribute.CLASS: ObjectClass.DATA, Attribute.APPLICATION: APPLICATION, Attribute.LABEL: label}
        for obj in list(s.get_objects(query)):
            obj.destroy()
        s.create_object(
            {
                Attribute.CLASS: ObjectClass.DATA,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.APPLICATION: APPLICATION,
                Attribute.LABEL: label,
                Attribute.VALUE: json.dumps(value, sort_keys=True).encode("utf-8"),
            }
        )

    def _state(self, s: Any) -> TokenState:
        meta = self._metadata(s)
        entries = []
        for label, value in sorted(meta.items()):
            if not label.startswith("key:"):
                continue
            key = KeyEntry.from_dict({**value, "certs": []})
            certs = [
                CertEntry.from_dict(v)
                for lab, v in meta.items()
                if lab.startswith("cert:") and v.get("key_id") == key.id
            ]
            certs.sort(key=lambda c: c.imported_at)
            entries.append(dataclasses.replace(key, certs=tuple(certs)))
        return TokenState(kdf=_NO_KDF, verifier="", keys=tuple(entries))

    async def state(self) -> TokenState:
        """The keys and certificates on the device, as :class:`~gateway.token.model.TokenState`."""
        return await self._call(lambda _g, s: self._state(s))

    # ---- keys -------------------------------------------------------------------------------------------

    async def generate_key(
        self,
        usage: CertKind,
        *,
        key_type: keys.KeyType = "ec-p256",
        label: str = "",
        now: datetime,
    ) -> KeyEntry:
        """Generate a key pair on the device (the private key sensitive and not extractable).

        Raises:
            RequestError: not logged in, an unknown usage or key type, or a bad label.
            TokenUnavailable: the device failed.
        """
        if usage not in certprofile.CERT_KINDS:
            raise RequestError(f"key usage {usage!r} is not one of {', '.join(certprofile.CERT_KINDS)}")
        if key_type not in keys.KEY_TYPES:
            raise RequestError(f"key type {key_type!r} is not one of {', '.join(keys.KEY_TYPES)}")
        model.check_label(label)

        def gen(_g: int, s: Any) -> KeyEntry:
            temp_id = b"gateway-new-" + hashlib.sha256(str(time.time_ns()).encode()).digest()[:8]
            private = {
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.SIGN: True,
                Attribute.PRIVATE: True,
                Attribute.TOKEN: True,
            }
            public = {Attribute.VERIFY: True, Attribute.TOKEN: True, Attribute.PRIVATE: False}
            if key_type == "ec-p256":
                params = s.create_domain_parameters(
                    KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
                )
                pub, priv = params.generate_keypair(
                    store=True, id=temp_id, label=label or usage, public_template=public, private_template=private
                )
            else:
                pub, priv = s.generate_keypair(
                    KeyType.RSA,
                    _RSA_BITS[key_type],
                    store=True,
                    id=temp_id,
                    label=label or usage,
                    public_template=public,
                    private_template=private,
                )
            key_id = model.spki_sha256(_public_key(pub, key_type))
            pub[Attribute.ID] = bytes.fromhex(key_id)
            priv[Attribute.ID] = bytes.fromhex(key_id)
            entry = KeyEntry(id=key_id, usage=usage, key_type=key_type, label=label, created_at=now)
            self._put_metadata(s, f"key:{key_id}", {k: v for k, v in entry.to_dict().items() if k != "certs"})
            return entry

        return await self._call(gen)

    async def generate_witness_key(self, *, label: str = "", now: datetime) -> KeyEntry:
        """Generate the witness's Ed25519 key pair on the device (usage ``witness``, CKM_EDDSA; the private
        key sensitive and not extractable; docs/witness.md section 2). One per token.

        Raises:
            RequestError: not logged in, a bad label, or a witness key exists already (409).
            TokenUnavailable: the device failed (or has no Ed25519).
        """
        model.check_label(label)
        existing = next((k for k in (await self.state()).keys if k.usage == "witness"), None)
        if existing is not None:
            raise KeyInUse(f"the token has a witness key already ({existing.id[:16]}...); delete it first")

        def gen(_g: int, s: Any) -> KeyEntry:
            temp_id = b"gateway-new-" + hashlib.sha256(str(time.time_ns()).encode()).digest()[:8]
            pub, priv = s.generate_keypair(
                KeyType.EC_EDWARDS, store=True, id=temp_id, label=label or "witness",
                public_template={Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID),
                                 Attribute.VERIFY: True, Attribute.TOKEN: True, Attribute.PRIVATE: False},
                private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True,
                                  Attribute.PRIVATE: True, Attribute.TOKEN: True},
            )
            key_id = model.spki_sha256(ed25519.Ed25519PublicKey.from_public_bytes(_ed25519_point(pub)))
            pub[Attribute.ID] = bytes.fromhex(key_id)
            priv[Attribute.ID] = bytes.fromhex(key_id)
            entry = KeyEntry(id=key_id, usage="witness", key_type="ed25519", label=label, created_at=now)
            self._put_metadata(s, f"key:{key_id}", {k: v for k, v in entry.to_dict().items() if k != "certs"})
            return entry

        return await self._call(gen)

    async def witness_public_key(self) -> tuple[str, bytes] | None:
        """The witness key's id and raw Ed25519 public key (32 bytes), or None when the device has none."""
        entry = next((k for k in (await self.state()).keys if k.usage == "witness"), None)
        if entry is None:
            return None

        def read(_g: int, s: Any) -> bytes:
            return _ed25519_point(s.get_key(object_class=ObjectClass.PUBLIC_KEY, id=bytes.fromhex(entry.id)))

        return entry.id, await self._call(read)

    def sign_eddsa_blocking(self, key_id: str, data: bytes) -> bytes:
        """An Ed25519 signature (CKM_EDDSA) by the key ``key_id``, on a pooled session in the calling thread."""
        ident = bytes.fromhex(key_id)
        return self._run(lambda g, s: bytes(self._pool.private_key(g, s, ident).sign(data, mechanism=Mechanism.EDDSA)))

    async def public_key(self, key_id: str) -> keys.PublicKey:
        """The public key of a key of the token (read from the device)."""
        state = await self.state()
        entry = state.key(key_id)

        def read(_g: int, s: Any) -> keys.PublicKey:
            pub = s.get_key(object_class=ObjectClass.PUBLIC_KEY, id=bytes.fromhex(entry.id))
            return _public_key(pub, model.certified_key_type(entry))

        return await self._call(read)

    async def private_key_attributes(self, key_id: str) -> dict[str, Any]:
        """``CKA_SENSITIVE``, ``CKA_EXTRACTABLE``, ``CKA_NEVER_EXTRACTABLE`` of a private key (for the API, tests)."""

        def read(_g: int, s: Any) -> dict[str, Any]:
            priv = s.get_key(object_class=ObjectClass.PRIVATE_KEY, id=bytes.fromhex(key_id))
            return {
                "sensitive": bool(priv[Attribute.SENSITIVE]),
                "extractable": bool(priv[Attribute.EXTRACTABLE]),
                "never_extractable": bool(priv[Attribute.NEVER_EXTRACTABLE]),
            }

        return await self._call(read)

    async def delete_key(self, key_id: str) -> KeyEntry:
        """Delete a key pair with its certificates (refused while one of its certificates is active).

        Raises:
            RequestError: 404 for an unknown key; 409 while a certificate of it is active.
        """
        state = await self.state()
        entry = state.key(key_id)
        if any(c.active for c in entry.certs):
            raise KeyInUse(f"key {entry.id[:16]}... has an active certificate; deactivate it first")

        def delete(_g: int, s: Any) -> KeyEntry:
            ident = bytes.fromhex(entry.id)
            for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY, ObjectClass.CERTIFICATE):
                for obj in list(s.get_objects({Attribute.CLASS: cls, Attribute.ID: ident})):
                    obj.destroy()
            for label in (f"key:{entry.id}", *(f"cert:{c.sha256}" for c in entry.certs)):
                query = {Attribute.CLASS: ObjectClass.DATA, Attribute.APPLICATION: APPLICATION, Attribute.LABEL: label}
                for obj in list(s.get_objects(query)):
                    obj.destroy()
            return entry

        return await self._call(delete)

    async def csr(
        self,
        key_id: str,
        *,
        server_id: SecurityServerId,
        member: MemberId | None = None,
        name: str | None = None,
    ) -> x509.CertificateSigningRequest:
        """A CSR for a key of the device, signed on the device (identity as :meth:`SoftToken.csr`).

        The request is the profile's (:func:`gateway.trust.certprofile.build_csr`: subject and
        subjectAltName), built with a throw-away key of the same type, then given the device key's
        SubjectPublicKeyInfo and signed again by the device; its signature is checked before it is returned.

        Raises:
            RequestError: not logged in; 404 for an unknown key.
            PkiError: a bad organisation name.
            TokenUnavailable: the device failed.
        """
        state = await self.state()
        entry = state.key(key_id)
        identity: certprofile.Identity = server_id if entry.usage == "auth" else (member or server_id.owner)
        pub = await self.public_key(entry.id)
        template_key = keys.generate_private_key("ec-p256" if entry.key_type == "ec-p256" else "rsa-2048")
        template = certprofile.build_csr(template_key, identity, kind=model.cert_kind(entry), name=name)
        request = asn1_csr.CertificationRequest.load(template.public_bytes(serialization.Encoding.DER))
        info = request["certification_request_info"]
        spki = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        info["subject_pk_info"] = asn1_keys.PublicKeyInfo.load(spki)
        tbs = info.dump(force=True)

        def sign(generation: int, s: Any) -> bytes:
            return _sign_with(self._pool.private_key(generation, s, bytes.fromhex(entry.id)),
                              model.certified_key_type(entry), tbs)

        raw = await self._call(sign)
        request["signature"] = keys.raw_to_der_ecdsa(raw) if entry.key_type == "ec-p256" else raw
        out = x509.load_der_x509_csr(request.dump(force=True))
        if not out.is_signature_valid:  # the device signed something else, or with another key
            raise TokenUnavailable(f"PKCS#11 token {self.token_label!r} produced a CSR signature that does not verify")
        return out

    # ---- certificates -----------------------------------------------------------------------------------

    async def import_cert(
        self,
        data: bytes,
        *,
        server_id: SecurityServerId,
        ca_for: Callable[[x509.Certificate], object | None],
        members: Collection[MemberId] = (),
        now: datetime,
    ) -> CertEntry:
        """Import a certificate onto the device (``CKO_CERTIFICATE`` next to its key); it starts inactive.

        Raises:
            TrustError, PkiError: as :meth:`gateway.token.soft.SoftToken.import_cert`.
            TokenUnavailable: the device failed.
        """
        cert = keys.load_certificate(data)
        state = await self.state()
        key, entry = model.check_import(
            state, cert, server_id=server_id, members={server_id.owner, *members}, ca_for=ca_for, now=now
        )

        def store(_g: int, s: Any) -> CertEntry:
            s.create_object(
                {
                    Attribute.CLASS: ObjectClass.CERTIFICATE,
                    Attribute.CERTIFICATE_TYPE: pkcs11.CertificateType.X_509,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: False,
                    Attribute.ID: bytes.fromhex(key.id),
                    Attribute.LABEL: entry.sha256,
                    Attribute.SUBJECT: cert.subject.public_bytes(),
                    Attribute.ISSUER: cert.issuer.public_bytes(),
                    Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
                }
            )
            self._put_metadata(s, f"cert:{entry.sha256}", {**entry.to_dict(), "key_id": key.id})
            return entry

        return await self._call(store)

    async def _set_state(self, sha256: str, new: model.CertState) -> CertEntry:
        state = await self.state()
        key, cert = state.cert(sha256)
        updated = dataclasses.replace(cert, state=new)

        def put(_g: int, s: Any) -> CertEntry:
            self._put_metadata(s, f"cert:{updated.sha256}", {**updated.to_dict(), "key_id": key.id})
            return updated

        return await self._call(put)

    async def activate(self, sha256: str) -> CertEntry:
        """Mark a certificate active. Raises: RequestError: 404 for an unknown certificate."""
        return await self._set_state(sha256, "active")

    async def deactivate(self, sha256: str) -> CertEntry:
        """Mark a certificate inactive. Raises: RequestError: 404 for an unknown certificate."""
        return await self._set_state(sha256, "inactive")

    # ---- what the security server uses ------------------------------------------------------------------

    async def signer(self, *, now: datetime) -> DeviceSigner:
        """A :class:`~gateway.protocol.signatures.Signer` whose key stays on the device.

        Raises:
            RequestError: not logged in.
            ConfigError: no active, valid signing certificate on the device.
            TokenUnavailable: the device failed.
        """
        state = await self.state()
        chosen = model.select_cert(state, "sign", now=now)
        if chosen is None:
            raise ConfigError(
                f"PKCS#11 token {self.token_label!r} has no active signing certificate valid now",
                hint="import one and `gateway token activate --device` it",
            )
        key_entry, cert_entry = chosen
        return DeviceSigner(self, key_id=key_entry.id, key_type=model.certified_key_type(key_entry),
                            cert=cert_entry.certificate)

    async def tls_material(self, *, now: datetime, registered: Collection[str] | None = None) -> None:
        """Never: Python's ``ssl`` module loads a TLS key only from a file (docs/tokens.md, "TLS").

        Raises:
            ConfigError: always.
        """
        raise ConfigError(
            "the TLS authentication key cannot live on a PKCS#11 token here: Python's ssl module "
            "loads keys only from files; keep it in the software token ([server] token_dir)"
        )

    def sign_blocking(self, key_id: str, key_type: keys.KeyType, data: bytes) -> bytes:
        """Sign on a pooled session in the calling thread (see :class:`DeviceSigner`)."""
        ident = bytes.fromhex(key_id)
        return self._run(lambda g, s: _sign_with(self._pool.private_key(g, s, ident), key_type, data))

    async def sign(self, key_id: str, key_type: keys.KeyType, data: bytes) -> bytes:
        """Sign on a pooled session in a worker thread of this device."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.sign_blocking, key_id, key_type, data)

    async def report(
        self,
        *,
        now: datetime,
        ocsp: dict[str, model.OcspState] | None = None,
        registered: Collection[str] | None = None,
    ) -> list[model.CertReport]:
        return model.report(await self.state(), now=now, ocsp=ocsp, registered=registered)


class DeviceSigner:
    """A :class:`~gateway.protocol.signatures.Signer` over a key on a PKCS#11 device.

    :meth:`sign` blocks its caller for the device's time (the message-log checkpointer signs once a minute);
    :meth:`sign_async` is what the proxies await, in one of the device's worker threads, so a slow device
    never holds the event loop. Both raise :class:`~gateway.errors.TokenUnavailable` when the device fails.
    """

    __slots__ = ("_key_id", "_key_type", "_token", "alg", "cert")

    def __init__(self, token: Pkcs11Token, *, key_id: str, key_type: keys.KeyType, cert: x509.Certificate) -> None:
        if model.spki_sha256(cert) != key_id:
            raise ConfigError("the signing certificate does not belong to the signing key")
        self._token = token
        self._key_id = key_id
        self._key_type = key_type
        self.alg: str = ALG_ECDSA_P256 if key_type == "ec-p256" else ALG_RSA_V1_5
        self.cert = cert

    @property
    def token(self) -> Pkcs11Token:
        return self._token

    def sign(self, data: bytes) -> bytes:
        return self._token.sign_blocking(self._key_id, self._key_type, data)

    async def sign_async(self, data: bytes) -> bytes:
        return await self._token.sign(self._key_id, self._key_type, data)
