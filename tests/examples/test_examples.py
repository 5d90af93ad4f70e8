"""Every example runs as a user would run it, so the examples stay true."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.examples.conftest import Gateway

ROOT = Path(__file__).parents[2]
SSEGW = [sys.executable, "-m", "gateway.cli"]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_envelope_encrypt_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    made = run([*SSEGW, "account", "create", "--name", "demo", "--data-dir", str(data_dir)], tmp_path)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["accessKeyId"]
    src = tmp_path / "secret.txt"
    src.write_bytes(os.urandom(100_000))
    script = str(ROOT / "examples" / "envelope_encrypt_file.py")
    common = [sys.executable, script, "--data-dir", str(data_dir), "--account", "demo"]
    enc = run([*common, "encrypt", str(src), str(tmp_path / "secret.enc")], tmp_path)
    assert enc.returncode == 0, enc.stderr
    assert src.read_bytes() not in (tmp_path / "secret.enc").read_bytes()
    dec = run([*common, "decrypt", str(tmp_path / "secret.enc"), str(tmp_path / "back.txt")], tmp_path)
    assert dec.returncode == 0, dec.stderr
    assert (tmp_path / "back.txt").read_bytes() == src.read_bytes()
    # Renamed ciphertext: the file name is the encryption context, so decryption refuses.
    (tmp_path / "secret.enc").rename(tmp_path / "other.enc")
    bad = run([*common, "decrypt", str(tmp_path / "other.enc"), str(tmp_path / "x")], tmp_path)
    assert bad.returncode != 0 and "InvalidCiphertext" in bad.stderr


def test_volume_recovery(tmp_path: Path) -> None:
    """A volume written through our NBD server, then decrypted by qemu-img alone."""
    base = ["--data-dir", str(tmp_path / "var")]
    made = run([*SSEGW, "account", "create", "--name", "demo", *base], tmp_path)
    assert made.returncode == 0, made.stderr
    image, sock, src = tmp_path / "vol.img", tmp_path / "s.sock", tmp_path / "data.bin"
    made = run([*SSEGW, "volume", "create", str(image), "--size", "4M", "--account", "demo", *base],
               tmp_path)
    assert made.returncode == 0, made.stderr
    src.write_bytes(os.urandom(4 << 20))
    server = subprocess.Popen([*SSEGW, "volume", "serve", str(image), "--socket", str(sock),
                               "--account", "demo", *base], cwd=tmp_path, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert server.stdout is not None and server.stdout.readline()
        copied = run(["nbdcopy", "--flush", str(src), f"nbd+unix:///?socket={sock}"], tmp_path)
        assert copied.returncode == 0, copied.stderr
    finally:
        server.terminate()
        server.wait(30)
    script = str(ROOT / "examples" / "volume_recovery.py")
    out = run([sys.executable, script, *base, "--account", "demo", str(image),
               str(tmp_path / "vol.raw")], tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "vol.raw").read_bytes() == src.read_bytes()


# ---------------------------------------------------- the guide's chapter 4, over HTTP


def example(gw: Gateway, name: str, *args: str, cwd: Path) -> dict[str, object]:
    """Run examples/NAME against the running gateway; its last stdout line is a JSON summary."""
    p = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=cwd, capture_output=True,
                       text=True, timeout=300, env=gw.env)
    assert p.returncode == 0, p.stdout + p.stderr
    out: dict[str, object] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def test_guide_4_1_online_encryption(gateway: Gateway, tmp_path: Path) -> None:
    cert = tmp_path / "server.pem"
    cert.write_bytes(b"-----BEGIN CERTIFICATE-----\n" + os.urandom(3000).hex().encode()[:5000]
                     + b"\n-----END CERTIFICATE-----\n")
    out = example(gateway, "guide_4_1_online_encryption.py", str(cert), cwd=tmp_path)
    sealed = Path(str(out["ciphertextFile"])).read_text()
    assert cert.read_bytes() not in base64.b64decode(sealed)


def test_guide_4_2_envelope_file(gateway: Gateway, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 * (1 << 20) + 12345))
    enc = example(gateway, "guide_4_2_envelope_file.py", "encrypt", str(src), str(tmp_path / "big.enc"),
                  cwd=tmp_path)
    assert enc["chunks"] == 4
    assert src.read_bytes()[:65536] not in (tmp_path / "big.enc").read_bytes()
    example(gateway, "guide_4_2_envelope_file.py", "decrypt", str(tmp_path / "big.enc"),
            str(tmp_path / "back.bin"), cwd=tmp_path)
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    # A truncated file (its final chunk dropped) is refused, never returned short.
    data = (tmp_path / "big.enc").read_bytes()
    (tmp_path / "cut.enc").write_bytes(data[: len(data) - (12345 + 16 + 16)])
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "guide_4_2_envelope_file.py"), "decrypt",
                        str(tmp_path / "cut.enc"), str(tmp_path / "cut.out")], capture_output=True,
                       text=True, timeout=120, env=gateway.env)
    assert p.returncode != 0


def test_guide_4_3_s3_bucket(gateway: Gateway, tmp_path: Path) -> None:
    out = example(gateway, "guide_4_3_s3_bucket.py", cwd=tmp_path)
    assert out["whileDisabled"] == "KMS.DisabledException"
    assert out["chosenKey"] != out["defaultKey"]


def test_guide_4_3_volume(gateway: Gateway, tmp_path: Path) -> None:
    out = example(gateway, "guide_4_3_volume.py", str(tmp_path / "vols"), cwd=tmp_path)
    assert out["chosenKey"] != out["defaultKey"]


def test_guide_4_3_file_share(gateway: Gateway, tmp_path: Path) -> None:
    out = example(gateway, "guide_4_3_file_share.py", str(tmp_path / "fs"), cwd=tmp_path)
    assert out["chosenKey"] != out["defaultKey"]


@pytest.mark.parametrize("spec", ["Ctyun_SM2", "RSA_2048"])
def test_guide_4_4_sign_verify(gateway: Gateway, tmp_path: Path, spec: str) -> None:
    (tmp_path / "release.json").write_bytes(os.urandom(3000))
    out = example(gateway, "guide_4_4_sign_verify.py", "--spec", spec, str(tmp_path / "release.json"),
                  cwd=tmp_path)
    assert out["openssl"] in ("Signature Verified Successfully", "Verified OK")
    assert out["kmsVerify"] is True and out["forgedVerify"] is False


def test_guide_4_5_rotation(gateway: Gateway, tmp_path: Path) -> None:
    out = example(gateway, "guide_4_5_rotation.py", cwd=tmp_path)
    assert out["oldVersion"] != out["newVersion"] and out["rotations"] == 1


def test_guide_byok_import(gateway: Gateway, tmp_path: Path) -> None:
    out = example(gateway, "guide_byok_import.py", str(tmp_path / "byok"), cwd=tmp_path)
    assert out["keyState"] == "Enabled"
    assert len((tmp_path / "byok" / "KeyMaterial.bin").read_bytes()) == 32


def test_every_example_is_tested() -> None:
    tested = Path(__file__).read_text()
    for example in (ROOT / "examples").glob("*.py"):
        assert example.name in tested, f"examples/{example.name} has no test"


def test_guide_rest_returns_the_result_and_exits_with_the_guides_error(gateway: Gateway, tmp_path: Path) -> None:
    """examples/guide_rest.py, the call every guide example makes: `returnObj.result` on 800,
    and on 900 an exit naming the error code and message."""
    code = ("import sys; from guide_rest import kms; url = sys.argv[1]; "
            "print(kms(url, 'createKey')['cmkUuid']); kms(url, 'describeKey', cmkUuid='no-such-key')")
    p = subprocess.run([sys.executable, "-c", code, gateway.kms_url], cwd=ROOT / "examples", capture_output=True,
                       text=True, timeout=120, env=gateway.env)
    assert p.returncode == 1 and len(p.stdout.strip()) == 36, p.stdout + p.stderr
    assert p.stderr.startswith("describeKey: NotFound: "), p.stderr
