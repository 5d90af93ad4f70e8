"""Key stores against real material: the root key file and a real SoftHSM2 token."""

from __future__ import annotations

import gc
import os
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from pkcs11 import Attribute, ObjectClass

from kms_core.embedded import Kms
from kms_core.errors import AlreadyExists, InvalidCiphertext, KmsError
from kms_core.keystore.hsm import HsmConfig, HsmKeyStore
from kms_core.keystore.hsm_token import _CALL_LOCK, COPY_SUFFIX, HsmAesGcm
from kms_core.keystore.software import RootSealer, SoftwareKeyStore, load_or_create_root_key
from kms_core.specs import KeySpec, Protection
from kms_core.types import Caller


def test_root_key_file_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "d" / "root.key"
    key = load_or_create_root_key(path)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_root_key(path) == key
    path.chmod(0o644)
    with pytest.raises(KmsError):
        load_or_create_root_key(path)


def test_software_material_is_bound_to_its_version(tmp_path: Path) -> None:
    store = SoftwareKeyStore(RootSealer(os.urandom(32)))
    v1, v2 = str(uuid.uuid4()), str(uuid.uuid4())
    stored = store.generate_symmetric(KeySpec.AES_256, v1)
    aead = store.open_symmetric(KeySpec.AES_256, v1, stored)
    assert aead.decrypt(b"n" * 12, aead.encrypt(b"n" * 12, b"x", b""), b"") == b"x"
    with pytest.raises(InvalidCiphertext):
        store.open_symmetric(KeySpec.AES_256, v2, stored)
    with pytest.raises(InvalidCiphertext):
        SoftwareKeyStore(RootSealer(os.urandom(32))).open_symmetric(KeySpec.AES_256, v1, stored)


def _token_objects(cfg: HsmConfig, label: str) -> list[object]:
    token = pkcs11.lib(cfg.module).get_token(token_label=cfg.token_label)
    with token.open(rw=False) as s:  # the process is already logged in through the key store
        return list(s.get_objects({Attribute.LABEL: label}))


_COPY_ATTRIBUTES = (Attribute.TOKEN, Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.PRIVATE)


def _session_copies(cfg: HsmConfig, label: str) -> list[dict[Attribute, Any]]:
    """The session-object copies of `label` that any session of this process can see."""
    token = pkcs11.lib(cfg.module).get_token(token_label=cfg.token_label)
    with _CALL_LOCK, token.open(rw=False) as s:  # one PKCS#11 call at a time, as the Hsm does
        return [{a: o[a] for a in _COPY_ATTRIBUTES}
                for o in s.get_objects({Attribute.LABEL: label + COPY_SUFFIX})]


def test_hsm_aes_key_lives_in_the_token_and_is_not_extractable(hsm_config: HsmConfig) -> None:
    store = HsmKeyStore(hsm_config)
    vid = str(uuid.uuid4())
    stored = store.generate_symmetric(KeySpec.AES_256, vid)
    label = f"ssegw-key-{vid}"
    assert label.encode() in stored and len(stored) < 64  # a reference, not material
    key = store.hsm.secret_key(label)
    assert key[Attribute.EXTRACTABLE] is False and key[Attribute.SENSITIVE] is True
    assert key.object_class is ObjectClass.SECRET_KEY
    aead = store.open_symmetric(KeySpec.AES_256, vid, stored)
    ct = aead.encrypt(b"\x01" * 12, b"hsm data", b"aad")
    assert aead.decrypt(b"\x01" * 12, ct, b"aad") == b"hsm data"
    with pytest.raises(InvalidCiphertext):
        aead.decrypt(b"\x01" * 12, ct[:-1] + bytes([ct[-1] ^ 1]), b"aad")
    with pytest.raises(InvalidCiphertext):
        aead.decrypt(b"\x01" * 12, ct, b"other aad")
    store.destroy(KeySpec.AES_256, vid, stored)
    assert _token_objects(hsm_config, label) == []


def test_hsm_aes_keys_are_used_through_a_session_copy_per_thread(hsm_config: HsmConfig) -> None:
    store = HsmKeyStore(hsm_config)
    vid = str(uuid.uuid4())
    stored = store.generate_symmetric(KeySpec.AES_256, vid)
    label = f"ssegw-key-{vid}"
    aead = store.open_symmetric(KeySpec.AES_256, vid, stored)
    nonce = os.urandom(12)
    sealed = aead.encrypt(nonce, b"first", b"ad")  # on the token object, which is then copied
    assert aead.decrypt(nonce, sealed, b"ad") == b"first"  # on the copy
    (copy,) = _session_copies(hsm_config, label)
    # Still a key only the HSM holds: sensitive, not extractable, gone with the session.
    assert copy == {Attribute.TOKEN: False, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                    Attribute.PRIVATE: True}
    assert len(_token_objects(hsm_config, label)) == 1  # a find by label sees the token object only

    def in_a_thread(done: threading.Event, go_on: threading.Event) -> None:
        assert aead.decrypt(nonce, aead.encrypt(nonce, b"x", b"ad"), b"ad") == b"x"
        done.set()
        go_on.wait(10)

    done, go_on = threading.Event(), threading.Event()
    other = threading.Thread(target=in_a_thread, args=(done, go_on))
    other.start()
    assert done.wait(10)
    assert len(_session_copies(hsm_config, label)) == 2  # one per thread's session
    go_on.set()
    other.join()
    gc.collect()  # the ended thread's session is queued to be closed...
    opener = threading.Thread(target=store.hsm.session)  # ...by the next thread that opens one
    opener.start()
    opener.join()
    assert len(_session_copies(hsm_config, label)) == 1  # and its copy went with it

    done, go_on = threading.Event(), threading.Event()
    other = threading.Thread(target=in_a_thread, args=(done, go_on))
    other.start()
    assert done.wait(10)
    store.destroy(KeySpec.AES_256, vid, stored)  # every live thread's copy goes with the key
    assert _session_copies(hsm_config, label) == [] and _token_objects(hsm_config, label) == []
    go_on.set()
    other.join()
    with pytest.raises(KmsError, match="not in the HSM"):
        aead.decrypt(nonce, sealed, b"ad")


def test_hsm_sm4_material_is_wrapped_by_the_hsm_root(hsm_config: HsmConfig) -> None:
    store = HsmKeyStore(hsm_config)
    vid = str(uuid.uuid4())
    stored = store.generate_symmetric(KeySpec.SM4, vid)
    aead = store.open_symmetric(KeySpec.SM4, vid, stored)
    ct = aead.encrypt(b"\x02" * 12, b"sm4", b"")
    assert aead.decrypt(b"\x02" * 12, ct, b"") == b"sm4"
    # Another HSM root cannot unwrap it: the material is useless outside this HSM.
    other = HsmKeyStore(HsmConfig(hsm_config.module, hsm_config.token_label, hsm_config.pin,
                                  root_label=f"ssegw-root-{uuid.uuid4()}"))
    with pytest.raises(InvalidCiphertext):
        other.open_symmetric(KeySpec.SM4, vid, stored)


def test_failed_hsm_key_creation_leaves_no_token_object(kms: Kms, caller: Caller, hsm_config: HsmConfig) -> None:
    svc = kms.service
    svc.create_alias(caller, "taken", svc.create_key(caller).key_id)
    svc.keystore(Protection.HSM)  # opening the store creates this instance's HSM root key
    before = _count_keys(hsm_config)
    with pytest.raises(AlreadyExists):
        svc.create_key(caller, protection="HSM", alias="taken")
    assert _count_keys(hsm_config) == before


def _count_keys(cfg: HsmConfig) -> int:
    token = pkcs11.lib(cfg.module).get_token(token_label=cfg.token_label)
    with token.open(rw=False) as s:
        return len(list(s.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.TOKEN: True})))


_OTHER_PROCESS = """
import sys
from kms_core.keystore.hsm import Hsm, HsmConfig
hsm = Hsm(HsmConfig(sys.argv[1], sys.argv[2], sys.argv[3]))
if sys.argv[4] == "make":
    hsm.generate_aes(sys.argv[5])
else:
    hsm.destroy(sys.argv[5])
"""


def _other_process(hsm_config: HsmConfig, action: str, label: str) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    subprocess.run([sys.executable, "-c", _OTHER_PROCESS, hsm_config.module, hsm_config.token_label,
                    hsm_config.pin, action, label], check=True, cwd=root,
                   env={**os.environ, "PYTHONPATH": str(root)})


def test_hsm_objects_of_other_processes_are_found_and_their_destruction_seen(
        hsm_config: HsmConfig) -> None:
    store = HsmKeyStore(hsm_config)
    store.hsm.recheck = 0.5
    version = str(uuid.uuid4())
    label = f"ssegw-key-{version}"
    _other_process(hsm_config, "make", label)  # another node makes the key...
    aead = store.open_symmetric(KeySpec.AES_256, version, b"\x01" + label.encode())
    nonce = os.urandom(12)
    sealed = aead.encrypt(nonce, b"cross-process", b"ad")  # ...found on first use here
    assert aead.decrypt(nonce, sealed, b"ad") == b"cross-process"
    _other_process(hsm_config, "destroy", label)  # ...and destroyed by another node:
    # this thread's session copy answers until `recheck` has passed since the token object was
    # last used; then the token object is used, found gone, and the copy destroyed with it.
    time.sleep(0.6)
    with pytest.raises(KmsError, match="not in the HSM"):
        aead.decrypt(nonce, sealed, b"ad")
    with pytest.raises(KmsError, match="not in the HSM"):
        aead.encrypt(nonce, b"cross-process", b"ad")
    assert not _session_copies(hsm_config, label)


def test_a_key_the_token_will_not_copy_is_used_as_it_is(hsm_config: HsmConfig) -> None:
    """Copies are how the KMS saves SoftHSM2 its file checks, not a requirement: a key made
    with CKA_COPYABLE false (another tool's, or an HSM that refuses C_CopyObject) still works."""
    store = HsmKeyStore(hsm_config)
    label = f"ssegw-key-{uuid.uuid4()}"
    store.hsm.session().generate_key(pkcs11.KeyType.AES, 256, label=label, store=True, template={
        Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False, Attribute.COPYABLE: False})
    aead = HsmAesGcm(store.hsm, label)
    nonce = os.urandom(12)
    for _ in range(3):
        assert aead.decrypt(nonce, aead.encrypt(nonce, b"uncopied", b"ad"), b"ad") == b"uncopied"
    assert _session_copies(hsm_config, label) == []
    store.hsm.destroy(label)
