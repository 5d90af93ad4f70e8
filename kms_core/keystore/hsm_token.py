"""The HSM token over PKCS#11 (python-pkcs11): sessions, object handles, AES-GCM inside the
token, and the HSM root sealer. SoftHSM2 is the embedded HSM. `kms_core.keystore.hsm` builds the
HSM key store on it.

AES_256 versions are secret-key objects generated inside the token, sensitive and not
extractable; encryption and decryption run inside the HSM (CKM_AES_GCM). Algorithms the token
cannot run (SoftHSM2 has no SM2/SM4) keep their material wrapped by the HSM root key, an AES key
that never leaves the token, and unwrap it only in memory for the operation.

PKCS#11 sessions must not be shared between threads, so each thread gets its own session; the
token login is per application, so only the first session presents the PIN.

Every node of a cluster uses the same HSM, and another process may create or destroy an object
at any time. An object is found by label on first use in a thread; one that is not found is
looked for once more after a moment (SoftHSM2 notices objects written by other processes when it
re-reads its token directory, which a half-written object can miss) before the key is reported
missing, and a miss is never remembered. The handle found is kept for the thread's next calls,
because a find costs SoftHSM2 ~100 times the AES-GCM call (it checks every object file of the
token), but the HSM checks it on every use: once another process destroyed the object, the call
fails with ObjectHandleInvalid (seen with SoftHSM2), and the key is then found again, or reported
missing, and the call tried once more. So a destroyed key is never used from a kept handle.

That check is SoftHSM2 re-reading the token's generation file and the key's object file on every
use of a token object (17 system calls per AES-GCM call, strace), a third of the call's time. So
an AES key is used through a copy of it made inside the token as a session object (C_CopyObject,
CKA_TOKEN false: still sensitive and not extractable, still only in the HSM), one per thread's
session, which SoftHSM2 uses without touching the files. The token object itself is used again,
and so checked, at least every `Hsm.recheck` seconds (1 s; the KMS's own caches of key records
are as old as 2 s); a destruction seen then, or made through this Hsm, destroys the copies, and
so does the KMS letting go of the key version (`HsmAesGcm.release`: its material went away or
the key changed, on this node or, told by the change feed, on another). A thread's session (and
with it its copies) is closed after the thread ends, by the next thread that opens a session or
uses a key's token object.
"""

from __future__ import annotations

import collections
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.mechanisms import GCMParams

from kms_core.errors import InvalidCiphertext, KeyUnavailable, KmsError
from kms_core.keystore.p11_native import NativeGcm, native_gcm
from kms_core.metrics import HSM_DECRYPT, HSM_ENCRYPT, HSM_ERRORS

NONCE_LEN = 12
# Stored references of HSM versions (kms_core.keystore.hsm, hsm_asym): the label of token
# objects (an AES key, an RSA key pair), or material sealed by the HSM root key.
OBJECT = b"\x01"
WRAPPED = b"\x02"


def key_label(version_id: str) -> str:
    return f"ssegw-key-{version_id}"

_T = TypeVar("_T")
# Held while a shared object (the HSM root key) is made, so that nodes starting at once do not
# each make one: a database-wide lock (kms_core.schema.cluster_lock) in practice.
CreationLock = Callable[[], AbstractContextManager[object]]
# A moment for another process's object to become visible before it is reported missing.
_REFIND_DELAY = 0.05
# The handle went stale between finding and using it (destroyed or re-created elsewhere).
_STALE_HANDLE: tuple[type[Exception], ...] = (p11e.ObjectHandleInvalid, p11e.KeyHandleInvalid)

# PKCS#11 return codes that mean "these bytes do not authenticate" on a decrypt; SoftHSM2
# reports a GCM tag mismatch as CKR_GENERAL_ERROR. Anything else is the HSM being unavailable.
_DECRYPT_FAILURES: tuple[type[Exception], ...] = (
    p11e.EncryptedDataInvalid,
    p11e.EncryptedDataLenRange,
    p11e.GeneralError,
    p11e.FunctionFailed,
    p11e.DataInvalid,
    p11e.DataLenRange,
)


@dataclass(frozen=True)
class HsmConfig:
    module: str
    token_label: str
    pin: str = field(repr=False)
    root_label: str = "ssegw-root"


# python-pkcs11 calls C_Initialize(NULL), which tells the module that the application will not
# call it from several threads at once, so SoftHSM2 then uses no locks at all; yet python-pkcs11
# releases the GIL inside each call. Concurrent calls corrupt SoftHSM2's heap (seen as
# segfaults and "double free" aborts with 4 threads), so every PKCS#11 call of this process is
# serialised here. Reentrant, and always taken before Hsm._login_lock, so it cannot deadlock.
_CALL_LOCK = threading.RLock()


@contextmanager
def _pkcs11_errors(decrypting: bool = False) -> Iterator[None]:
    """Map every PKCS#11 failure to a KMS error, in one place; one PKCS#11 call at a time."""
    with _CALL_LOCK:
        try:
            yield
        except KmsError:
            raise
        except Exception as exc:
            if decrypting and isinstance(exc, _DECRYPT_FAILURES):
                raise InvalidCiphertext() from exc
            if isinstance(exc, p11e.PKCS11Error | RuntimeError | OSError):
                HSM_ERRORS.labels(type(exc).__name__).inc()
                raise KeyUnavailable(f"HSM operation failed: {type(exc).__name__}") from exc
            raise


# SoftHSM2 keeps a token in files that every process using it shares; while another process
# rewrites them, a call can fail with CKR_GENERAL_ERROR ("Token integrity check failed",
# SoftHSMv2 issues 573 and 757) and succeed when made again. Seen with ten nodes starting at once.
_BUSY_TRIES = 3


def _again_if_busy(call: Callable[[], _T]) -> _T:
    """`call()`, made again (twice at most, after a short pause) while it fails with
    CKR_GENERAL_ERROR. Only for calls that change nothing when they fail: finding, opening,
    encrypting; never a decrypt, where SoftHSM2 reports a wrong tag with the same code."""
    for attempt in range(_BUSY_TRIES):
        try:
            return call()
        except p11e.GeneralError:
            if attempt == _BUSY_TRIES - 1:
                raise
            time.sleep(_REFIND_DELAY * (attempt + 1))
    raise AssertionError("unreachable")


# Libraries this process has opened a token through: re-initialising one would invalidate the
# sessions of every Hsm already using it.
_IN_USE: set[str] = set()
_TOKEN_LOOKS = 4


def _find_token(config: HsmConfig) -> Any:
    """The token labelled in `config`; caller holds _CALL_LOCK.

    SoftHSM2 lists the tokens it found when the library was initialised, and passes over one
    whose files another process holds locked at that moment, as happens when several nodes start
    together on one token. So a token not found by the first Hsm of a process is looked for again
    after re-initialising the library, a few times, before it is called missing.
    """
    lib = pkcs11.lib(config.module)
    for attempt in range(_TOKEN_LOOKS):
        try:
            # Listing the tokens reads their files: the busy error a neighbour's rewrite causes
            # (seen in CI as ten nodes started) is made again like any other lookup.
            token = _again_if_busy(lambda: lib.get_token(token_label=config.token_label))
        except p11e.NoSuchToken:
            if config.module in _IN_USE or attempt == _TOKEN_LOOKS - 1:
                raise KeyUnavailable(
                    f"the HSM has no token labelled {config.token_label!r} (PKCS#11 module {config.module})"
                ) from None
            time.sleep(0.05 * (attempt + 1))
            lib.reinitialize()
            continue
        _IN_USE.add(config.module)
        return token
    raise AssertionError("unreachable")


# How long a session copy of an AES key is used before the token object is used (and so checked)
# again; see the module docstring.
RECHECK_SECONDS = 1.0
# A copy's label: never the token object's, so that finding an object by label finds only that.
COPY_SUFFIX = "/session-copy"
# How long after a token refused to copy a key (CKA_COPYABLE false, or busy) it is asked again.
COPY_RETRY_SECONDS = 60.0


@dataclass
class _Copy:
    """A thread's session-object copy of a token AES key, and until when it may be used."""

    token: Any  # the token object's handle it was copied from
    copy: Any | None  # None: the token would not copy it, so the token object is used
    made: float  # when it was copied (or refused)
    until: float = 0.0


class _Seat:
    """One thread's session and what was found or copied in it. When the thread ends and this is
    collected, the session is closed (see _ENDED), which destroys its copies."""

    __slots__ = ("__weakref__", "copies", "handles", "session")

    def __init__(self, session: Any) -> None:
        self.session = session
        self.handles: dict[tuple[ObjectClass, str], Any] = {}
        self.copies: dict[str, _Copy] = {}


# Sessions of ended threads, waiting to be closed. The finalizer that finds them only queues
# them: it runs wherever the collector happens to run, perhaps in a thread holding a lock that
# the holder of _CALL_LOCK waits for, so it must not wait for _CALL_LOCK itself.
_ENDED: collections.deque[Any] = collections.deque()


def _session_ended(session: Any) -> None:
    _ENDED.append(session)


def _close_ended() -> None:
    """Closes the queued sessions of ended threads (and so their copies); caller holds
    _CALL_LOCK. Never the session that logged in (python-pkcs11 would log the whole token
    out): Hsm keeps that one."""
    while _ENDED:
        try:
            _ENDED.popleft().close()
        except IndexError:
            return  # another thread took the last one
        except p11e.PKCS11Error:
            pass  # already gone with the library; nothing left to free


class Hsm:
    """A logged-in token with per-thread sessions, per-thread use-checked object handles and
    per-thread session copies of AES keys."""

    def __init__(self, config: HsmConfig) -> None:
        self.config = config
        self.recheck = RECHECK_SECONDS
        self._local = threading.local()
        self._login_lock = threading.Lock()
        self._logged_in = False
        self._login_session: Any = None
        # Every live thread's seat, so that destroying a key reaches the copies of all threads.
        self._seats: weakref.WeakSet[_Seat] = weakref.WeakSet()
        with _pkcs11_errors():
            self._token = _find_token(config)
        # AES-GCM in one foreign call on python-pkcs11's own handles (p11_native), or None; a
        # required library that is unusable says so here, not as an HSM failure.
        self.native: NativeGcm | None = native_gcm(config.module)

    def _seat(self) -> _Seat:
        seat: _Seat | None = getattr(self._local, "seat", None)
        if seat is None:
            with _pkcs11_errors(), self._login_lock:
                _close_ended()
                session = _again_if_busy(self._open)
            seat = self._local.seat = _Seat(session)
            self._seats.add(seat)
            if session is not self._login_session:
                weakref.finalize(seat, _session_ended, session).atexit = False
        return seat

    def session(self) -> Any:
        return self._seat().session

    def _open(self) -> Any:
        if self._logged_in:
            return self._token.open(rw=True)
        try:
            s = self._token.open(rw=True, user_pin=self.config.pin)
            self._login_session = s
        except p11e.UserAlreadyLoggedIn:
            s = self._token.open(rw=True)
        self._logged_in = True
        return s

    def find_key(self, object_class: ObjectClass, label: str) -> Any:
        """The key object labelled `label`, looked for twice before it is called missing."""
        for attempt in range(2):
            with _pkcs11_errors():
                try:
                    return _again_if_busy(functools.partial(self.session().get_key, object_class=object_class,
                                                            label=label))
                except p11e.NoSuchKey:
                    pass
                except p11e.MultipleObjectsReturned:
                    raise KeyUnavailable(f"the HSM holds several objects labelled {label!r}") from None
            if attempt == 0:
                time.sleep(_REFIND_DELAY)
        raise KeyUnavailable(f"key object {label!r} is not in the HSM")

    def secret_key(self, label: str) -> Any:
        return self.key_handle(ObjectClass.SECRET_KEY, label)

    def key_handle(self, object_class: ObjectClass, label: str) -> Any:
        """This thread's handle of the object, found on first use (see the module docstring)."""
        handles = self._seat().handles
        key = handles.get((object_class, label))
        if key is None:
            key = handles[(object_class, label)] = self.find_key(object_class, label)
        return key

    def with_key(self, object_class: ObjectClass, label: str, use: Callable[[Any], _T]) -> _T:
        """Use the object; a handle gone stale (destroyed elsewhere) is found again, once."""
        key = self.key_handle(object_class, label)
        try:
            with _CALL_LOCK:
                return use(key)
        except _STALE_HANDLE:
            self.forget_handle(label)
            key = self.key_handle(object_class, label)
            with _CALL_LOCK:
                return use(key)

    def with_secret_key(self, label: str, use: Callable[[Any], _T]) -> _T:
        """`with_key` for an AES key, on this thread's session copy of it while the token object
        was used within `recheck` seconds (see the module docstring)."""
        seat = self._seat()
        held = seat.copies.get(label)
        if held is not None and held.copy is not None and time.monotonic() < held.until:
            with _CALL_LOCK:
                # Still this thread's copy under the lock: another thread's drop_copies pops
                # and destroys it under the same lock, so a destroyed handle is never used.
                if seat.copies.get(label) is held:
                    return use(held.copy)
        result = self.with_key(ObjectClass.SECRET_KEY, label, use)  # the token object: still there
        self._renew_copy(seat, label)
        return result

    def _renew_copy(self, seat: _Seat, label: str) -> None:
        token = seat.handles.get((ObjectClass.SECRET_KEY, label))
        if token is None:  # forgotten meanwhile (destroyed): no copy of it
            return
        now = time.monotonic()
        if _ENDED:  # at least once a second while a key is in use (see _ENDED)
            with _CALL_LOCK:
                _close_ended()
        held = seat.copies.get(label)
        if (held is None or held.token is not token
                or (held.copy is None and now - held.made > COPY_RETRY_SECONDS)):
            self._drop_copy(seat, label)
            try:
                with _CALL_LOCK:
                    copy = token.copy({Attribute.TOKEN: False, Attribute.LABEL: label + COPY_SUFFIX})
            except p11e.PKCS11Error:  # refused (CKA_COPYABLE false, or busy): the token object
                copy = None
            held = seat.copies[label] = _Copy(token, copy, now)
        held.until = now + self.recheck

    @staticmethod
    def _drop_copy(seat: _Seat, label: str) -> None:
        with _CALL_LOCK:
            held = seat.copies.pop(label, None)
            if held is not None and held.copy is not None:
                try:
                    held.copy.destroy()
                except p11e.PKCS11Error:
                    pass  # already destroyed (its session closed): nothing to free

    def forget_handle(self, label: str) -> None:
        seat = self._seat()
        for ck in [ck for ck in seat.handles if ck[1] == label]:
            seat.handles.pop(ck, None)
        self._drop_copy(seat, label)

    def generate_aes(self, label: str) -> None:
        with _pkcs11_errors():
            self.session().generate_key(
                KeyType.AES,
                256,
                label=label,
                store=True,
                template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.ENCRYPT: True,
                    Attribute.DECRYPT: True,
                    Attribute.WRAP: False,
                    Attribute.UNWRAP: False,
                },
            )

    def has_object(self, object_class: ObjectClass, label: str) -> bool:
        with _pkcs11_errors():
            session = self.session()
            return _again_if_busy(lambda: bool(list(session.get_objects(
                {Attribute.CLASS: object_class, Attribute.LABEL: label}))))

    def ensure_aes(self, label: str, lock: CreationLock | None = None) -> None:
        """Make the AES key `label` unless it exists; `lock` keeps other nodes from making a second."""
        if self.has_object(ObjectClass.SECRET_KEY, label):
            return
        with lock() if lock is not None else nullcontext():
            if not self.has_object(ObjectClass.SECRET_KEY, label):
                self.generate_aes(label)

    def drop_copies(self, label: str) -> None:
        """Destroys every thread's session copy of `label` (made again on its next use)."""
        for seat in list(self._seats):
            self._drop_copy(seat, label)

    def destroy(self, label: str) -> None:
        self.drop_copies(label)  # first: no copy outlives the key
        with _pkcs11_errors():
            # Every token object with the label: an AES key, or both halves of an RSA key pair.
            for obj in list(self.session().get_objects({Attribute.LABEL: label, Attribute.TOKEN: True})):
                obj.destroy()
        self.forget_handle(label)

    def run(self, fn: Callable[[], _T], decrypting: bool = False) -> _T:
        with _pkcs11_errors(decrypting):
            return fn()


class HsmAesGcm:
    """AES-256-GCM run inside the HSM with a key that never leaves it."""

    __slots__ = ("_hsm", "_label")

    def __init__(self, hsm: Hsm, label: str) -> None:
        self._hsm = hsm
        self._label = label

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes:
        HSM_ENCRYPT.inc()
        native = self._hsm.native
        use: Callable[[Any], bytes]
        if native is not None:
            def use(key: Any) -> bytes:
                try:
                    return native.encrypt(key.session.handle, key.handle, nonce, data, associated_data)
                except p11e.GeneralError:  # busy (see _again_if_busy): made again from here
                    return _again_if_busy(lambda: native.encrypt(key.session.handle, key.handle, nonce,
                                                                 data, associated_data))
        else:
            params = GCMParams(nonce, associated_data, 128)

            def use(key: Any) -> bytes:
                out: bytes = _again_if_busy(lambda: key.encrypt(data, mechanism=Mechanism.AES_GCM,
                                                                mechanism_param=params))
                return out
        try:
            return self._hsm.with_secret_key(self._label, use)
        except p11e.PKCS11Error as exc:
            HSM_ERRORS.labels(type(exc).__name__).inc()
            raise KeyUnavailable(f"HSM operation failed: {type(exc).__name__}") from exc

    def release(self) -> None:
        """The KMS no longer holds this key version's AEAD (its material went away, or the key
        changed): the copies of the key inside the HSM go too."""
        self._hsm.drop_copies(self._label)

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes:
        if len(data) < 16:
            raise InvalidCiphertext()
        HSM_DECRYPT.inc()
        native = self._hsm.native
        use: Callable[[Any], bytes]
        if native is not None:
            def use(key: Any) -> bytes:
                return native.decrypt(key.session.handle, key.handle, nonce, data, associated_data)
        else:
            params = GCMParams(nonce, associated_data, 128)

            def use(key: Any) -> bytes:
                out: bytes = key.decrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=params)
                return out
        try:
            return self._hsm.with_secret_key(self._label, use)
        except _DECRYPT_FAILURES as exc:
            raise InvalidCiphertext() from exc
        except p11e.PKCS11Error as exc:
            HSM_ERRORS.labels(type(exc).__name__).inc()
            raise KeyUnavailable(f"HSM operation failed: {type(exc).__name__}") from exc


class HsmRootSealer:
    """Seal material the HSM cannot use itself under the HSM root key (inside the HSM)."""

    def __init__(self, hsm: Hsm, lock: CreationLock | None = None) -> None:
        self._hsm = hsm
        hsm.ensure_aes(hsm.config.root_label, lock)
        self._aead = HsmAesGcm(hsm, hsm.config.root_label)

    def seal(self, data: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        return nonce + self._aead.encrypt(nonce, data, aad)

    def unseal(self, sealed: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(sealed[:NONCE_LEN], sealed[NONCE_LEN:], aad)
