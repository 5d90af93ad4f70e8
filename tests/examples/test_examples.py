"""Every example runs as a user would run it, so the examples stay true."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
SSEGW = [sys.executable, "-m", "gateway.cli"]


def run(args: list[str], cwd: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, **kw)  # type: ignore[call-overload]


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


def test_every_example_is_tested() -> None:
    tested = Path(__file__).read_text()
    for example in (ROOT / "examples").glob("*.py"):
        assert example.name in tested, f"examples/{example.name} has no test"
