"""The HSM's AES-GCM in one native call (p11_native, p11_gcm.c) against python-pkcs11 on a real
SoftHSM2 token: the same bytes both ways, the same failures, nothing left active after one."""

from __future__ import annotations

import os
import uuid

import pkcs11.exceptions as p11e
import pytest
from pkcs11 import Mechanism
from pkcs11.mechanisms import GCMParams

from kms_core.errors import InvalidCiphertext, KmsError
from kms_core.keystore import p11_native
from kms_core.keystore.hsm_token import _DECRYPT_FAILURES, _STALE_HANDLE, Hsm, HsmAesGcm, HsmConfig
from kms_core.keystore.p11_native import NativeGcm, error_for, native_gcm


@pytest.fixture
def hsm(hsm_config: HsmConfig) -> Hsm:
    return Hsm(hsm_config)


@pytest.fixture
def label(hsm: Hsm) -> str:
    name = f"ssegw-key-{uuid.uuid4()}"
    hsm.generate_aes(name)
    return name


def _native(hsm: Hsm) -> NativeGcm:
    assert hsm.native is not None, "make deps builds libssegw_p11.so; `make test` requires it"
    return hsm.native


@pytest.mark.parametrize("size", [1, 32, 4096, 6000])
def test_native_and_python_pkcs11_make_the_same_bytes(hsm: Hsm, label: str, size: int) -> None:
    native, key = _native(hsm), hsm.secret_key(label)
    nonce, aad, data = os.urandom(12), os.urandom(34), os.urandom(size)
    params = GCMParams(nonce, aad, 128)
    theirs = key.encrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=params)
    ours = native.encrypt(key.session.handle, key.handle, nonce, data, aad)
    assert ours == theirs and len(ours) == size + 16
    assert native.decrypt(key.session.handle, key.handle, nonce, theirs, aad) == data
    assert key.decrypt(ours, mechanism=Mechanism.AES_GCM, mechanism_param=params) == data


def test_a_tag_that_does_not_verify_fails_and_leaves_the_session_usable(hsm: Hsm, label: str) -> None:
    native, key = _native(hsm), hsm.secret_key(label)
    nonce, aad = os.urandom(12), b"aad"
    sealed = native.encrypt(key.session.handle, key.handle, nonce, b"data key", aad)
    for bad in (sealed[:-1] + bytes([sealed[-1] ^ 1]), bytes([sealed[0] ^ 1]) + sealed[1:]):
        with pytest.raises(_DECRYPT_FAILURES):
            native.decrypt(key.session.handle, key.handle, nonce, bad, aad)
    with pytest.raises(_DECRYPT_FAILURES):
        native.decrypt(key.session.handle, key.handle, nonce, sealed, b"other aad")
    # No operation was left active on the session: both directions work at once after it.
    assert native.decrypt(key.session.handle, key.handle, nonce, sealed, aad) == b"data key"
    assert key.encrypt(b"x", mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad, 128))


def test_decrypted_plaintext_does_not_stay_in_the_output_buffer(hsm: Hsm, label: str) -> None:
    native, key = _native(hsm), hsm.secret_key(label)
    nonce, secret = os.urandom(12), os.urandom(32)
    sealed = native.encrypt(key.session.handle, key.handle, nonce, secret, b"")
    assert native.decrypt(key.session.handle, key.handle, nonce, sealed, b"") == secret
    _, view, _ = native._buffers(len(sealed))
    assert bytes(view[:len(secret)]) == bytes(len(secret))


def test_a_destroyed_key_fails_as_a_stale_handle(hsm: Hsm, label: str) -> None:
    native, key = _native(hsm), hsm.secret_key(label)
    handle = key.handle
    hsm.destroy(label)
    with pytest.raises(_STALE_HANDLE):
        native.encrypt(key.session.handle, handle, os.urandom(12), b"data", b"")


@pytest.mark.parametrize("path", ["native", "python-pkcs11"])
def test_the_hsm_aead_answers_alike_on_both_paths(hsm: Hsm, label: str, path: str) -> None:
    if path == "python-pkcs11":
        hsm.native = None
    aead = HsmAesGcm(hsm, label)
    nonce = os.urandom(12)
    sealed = aead.encrypt(nonce, b"hsm data", b"aad")
    assert aead.decrypt(nonce, sealed, b"aad") == b"hsm data"
    with pytest.raises(InvalidCiphertext):
        aead.decrypt(nonce, sealed[:-1] + bytes([sealed[-1] ^ 1]), b"aad")
    with pytest.raises(InvalidCiphertext):
        aead.decrypt(nonce, sealed[:15], b"aad")
    hsm.destroy(label)  # the handle this thread kept is stale: found again, and missing
    with pytest.raises(KmsError, match="not in the HSM"):
        aead.encrypt(nonce, b"hsm data", b"aad")


def test_a_busy_token_is_asked_again(hsm: Hsm, label: str) -> None:
    native = _native(hsm)
    calls: list[int] = []

    class BusyOnce:
        def encrypt(self, *args: object) -> bytes:
            calls.append(1)
            if len(calls) == 1:
                raise p11e.GeneralError()  # what SoftHSM2 answers while a neighbour rewrites
            return native.encrypt(*args)  # type: ignore[arg-type]

        def decrypt(self, *args: object) -> bytes:
            return native.decrypt(*args)  # type: ignore[arg-type]

    hsm.native = BusyOnce()  # type: ignore[assignment]
    aead = HsmAesGcm(hsm, label)
    nonce = os.urandom(12)
    assert aead.decrypt(nonce, aead.encrypt(nonce, b"d", b""), b"") == b"d"
    assert len(calls) == 2


def test_return_codes_raise_python_pkcs11_exceptions() -> None:
    assert isinstance(error_for(0x82), p11e.ObjectHandleInvalid)
    assert isinstance(error_for(0x60), p11e.KeyHandleInvalid)
    assert isinstance(error_for(0x05), p11e.GeneralError)
    assert isinstance(error_for(0x40), p11e.EncryptedDataInvalid)
    unknown = error_for(0x1234)
    assert type(unknown) is p11e.PKCS11Error and "0x00001234" in str(unknown)


def test_only_a_loaded_pkcs11_module_is_used(hsm: Hsm, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = p11_native.native_library()
    assert lib is not None
    assert lib.functions(hsm.config.module.encode())  # loaded by python-pkcs11
    assert not lib.functions(b"/nonexistent/libpkcs11.so")  # never loaded
    assert not lib.functions(b"libc.so.6")  # loaded, but not a PKCS#11 module
    monkeypatch.delenv(p11_native.ENV, raising=False)
    assert native_gcm("/nonexistent/libpkcs11.so") is None
    monkeypatch.setenv(p11_native.ENV, "required")
    with pytest.raises(RuntimeError, match="no usable function list"):
        native_gcm("/nonexistent/libpkcs11.so")


def test_turned_off_the_hsm_uses_python_pkcs11(hsm_config: HsmConfig,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(p11_native.ENV, "off")
    p11_native.native_library.cache_clear()
    try:
        assert Hsm(hsm_config).native is None
    finally:
        monkeypatch.undo()
        p11_native.native_library.cache_clear()
    assert Hsm(hsm_config).native is not None
