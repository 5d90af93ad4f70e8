"""`ssegw volume ...` as a user runs it: one process per command, a real server process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from adapters.block import nbd_protocol as p
from tests.adapters.block.helpers import Cli, MiB, RawClient, tool
from tests.serving import start, stop


def test_create_info_passphrase_rekey(cli: Cli, tmp_path: Path) -> None:
    image = tmp_path / "v.img"
    made = cli.json("volume", "create", str(image), "--size", "16M")
    assert made["size"] == 16 * MiB and made["format"] == "LUKS1" and made["keyBits"] == 512
    default_key = cli.json("kms", "describe-key", "alias_ecs")["cmkUuid"]
    assert made["cmkUuid"] == default_key
    assert cli.json("volume", "info", str(image)) == made
    pw = cli.run("volume", "passphrase", str(image)).stdout.strip()
    assert len(pw) == 64 and int(pw, 16) >= 0
    # The unseal went through the KMS decrypt, which the audit log records.
    events = cli.json("account", "audit", "ops", "--key", default_key)["events"]
    assert "decrypt" in [e["operation"] for e in events]
    tool("cryptsetup", "open", "--test-passphrase", "--key-file=-", str(image), input=pw.encode())

    key = cli.json("kms", "create-key", "--alias", "disks")["cmkUuid"]
    moved = cli.json("volume", "rekey", str(image), "--to-key", "disks")
    assert moved["cmkUuid"] == key and moved["sealGeneration"] == 2
    assert cli.run("volume", "passphrase", str(image)).stdout.strip() == pw
    sm4 = cli.json("volume", "create", str(tmp_path / "s.img"), "--size", "1M", "--key", "disks",
                   "--cipher", "sm4-xts-plain64")
    assert sm4["cipher"] == "sm4-xts-plain64" and sm4["cmkUuid"] == key


def test_disabled_key_refuses_to_open_with_a_clear_message(cli: Cli, tmp_path: Path) -> None:
    image = tmp_path / "v.img"
    cli.json("kms", "create-key", "--alias", "vk")
    cli.json("volume", "create", str(image), "--size", "4M", "--key", "vk")
    cli.json("kms", "disable-key", "vk")
    for args in (["serve", str(image), "--socket", str(tmp_path / "s.sock")],
                 ["passphrase", str(image)]):
        r = cli.run("volume", *args, ok=False)
        assert r.returncode == 1 and r.stdout == ""
        err = json.loads(r.stderr)
        assert err["errorCode"] == "Disabled"
        assert str(image) in err["message"] and "disabled" in err["message"]
    assert not (tmp_path / "s.sock").exists()
    bad = cli.run("volume", "create", str(tmp_path / "x.img"), "--size", "10", ok=False)
    assert json.loads(bad.stderr)["errorCode"] == "VolumeError"
    assert not (tmp_path / "x.img").exists()


def test_kill_9_during_writes_keeps_every_flushed_write(cli: Cli, tmp_path: Path) -> None:
    image, sock = tmp_path / "v.img", tmp_path / "s.sock"
    cli.json("volume", "create", str(image), "--size", "64M")
    server = cli.serve(image, sock)
    blocks = {i: os.urandom(64 << 10) for i in range(256)}  # 16 MiB in 64 KiB writes
    flushed: dict[int, bytes] = {}
    c = RawClient(sock)
    pending: dict[int, bytes] = {}
    for i in range(128):
        assert c.request(p.Cmd.WRITE, i * len(blocks[i]), len(blocks[i]), blocks[i])[0] == 0
        pending[i] = blocks[i]
        if i % 8 == 7:
            assert c.request(p.Cmd.FLUSH)[0] == 0
            flushed.update(pending)
            pending.clear()

    # Keep writing (never flushed) from another connection, and kill -9 mid-stream.
    started = threading.Event()

    def hammer() -> None:
        try:
            h = RawClient(sock)
            for i in range(128, 256):
                h.request(p.Cmd.WRITE, i * (64 << 10), 64 << 10, blocks[i])
                if i == 136:
                    started.set()
        except (ConnectionError, OSError):
            pass
        finally:
            started.set()

    t = threading.Thread(target=hammer)
    t.start()
    assert started.wait(30)
    os.kill(server.pid, signal.SIGKILL)
    server.wait(10)
    t.join(30)
    c.close()

    # The image opens afterwards, through us and through qemu-img, with every flushed write.
    server = cli.serve(image, sock)
    try:
        r = RawClient(sock)
        for i, data in flushed.items():
            assert r.request(p.Cmd.READ, i * len(data), len(data)) == (0, data), i
        r.close()
    finally:
        server.terminate()
        server.wait(10)
    pw = cli.run("volume", "passphrase", str(image)).stdout.strip()
    out = tmp_path / "out.raw"
    tool("qemu-img", "convert", "-O", "raw", "--object", f"secret,id=s0,data={pw}",
         "--image-opts", f"driver=luks,key-secret=s0,file.filename={image}", str(out))
    raw = out.read_bytes()
    for i, data in flushed.items():
        assert raw[i * len(data):(i + 1) * len(data)] == data


def test_serve_over_tcp_and_sigterm_stops_cleanly(cli: Cli, tmp_path: Path) -> None:
    image = tmp_path / "v.img"
    cli.json("volume", "create", str(image), "--size", "8M")
    proc = subprocess.Popen(cli.cmd("volume", "serve", str(image), "--port", "0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli.env)
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    assert ready["uri"].startswith("nbd://127.0.0.1:") and ready["size"] == 8 * MiB
    info = json.loads(tool("nbdinfo", "--json", ready["uri"]))
    assert info["exports"][0]["export-size"] == 8 * MiB
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_worker_processes_share_one_image(cli: Cli, tmp_path: Path) -> None:
    """Connections go round-robin to worker processes; multi-conn must hold across them."""
    image, sock = tmp_path / "v.img", tmp_path / "s.sock"
    cli.json("volume", "create", str(image), "--size", "8M")
    proc = subprocess.Popen(cli.cmd("volume", "serve", str(image), "--socket", str(sock),
                                    "--workers", "3"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli.env)
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline())["workers"] == 3
    try:
        conns = [RawClient(sock) for _ in range(3)]  # one per worker
        for i, c in enumerate(conns):
            assert c.request(p.Cmd.WRITE, i * 4096, 4096, bytes([65 + i]) * 4096)[0] == 0
        assert conns[1].request(p.Cmd.FLUSH)[0] == 0
        for c in conns:
            for i in range(3):
                assert c.request(p.Cmd.READ, i * 4096, 4096) == (0, bytes([65 + i]) * 4096)
        # Unaligned writes to one sector from two processes: read-modify-write under a lock.
        assert conns[0].request(p.Cmd.WRITE, 8192, 4096, bytes(4096))[0] == 0
        assert conns[0].request(p.Cmd.WRITE, 8192 + 10, 3, b"abc")[0] == 0
        assert conns[2].request(p.Cmd.WRITE, 8192 + 20, 3, b"xyz")[0] == 0
        want = bytearray(512)
        want[10:13], want[20:23] = b"abc", b"xyz"
        assert conns[1].request(p.Cmd.READ, 8192, 512) == (0, bytes(want))
        for c in conns:
            c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert not sock.exists()


def test_volume_commands_over_the_kms_http_api(tmp_path: Path) -> None:
    """With --kms-url the volume commands use the HTTP client: same calls, same errors."""
    served = start(tmp_path / "var")
    try:
        env = {**served.env, "SSEGW_ACCESS_KEY_ID": served.env["AWS_ACCESS_KEY_ID"],
               "SSEGW_SECRET_ACCESS_KEY": served.env["AWS_SECRET_ACCESS_KEY"]}
        elsewhere = tmp_path / "unused-data-dir"  # over HTTP no data dir is opened

        def ssegw(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
            r = subprocess.run([sys.executable, "-m", "gateway.cli", *args, "--kms-url",
                                served.url, "--data-dir", str(elsewhere)],
                               capture_output=True, text=True, env=env, timeout=120)
            assert (r.returncode == 0) == ok, r.stderr
            return r

        image = tmp_path / "v.img"
        key = json.loads(ssegw("kms", "create-key", "--alias", "remote-disk").stdout)["cmkUuid"]
        made = json.loads(ssegw("volume", "create", str(image), "--size", "4M",
                                "--key", "remote-disk").stdout)
        assert made["cmkUuid"] == key
        pw = ssegw("volume", "passphrase", str(image)).stdout.strip()
        tool("cryptsetup", "open", "--test-passphrase", "--key-file=-", str(image),
             input=pw.encode())
        ssegw("kms", "disable-key", "remote-disk")
        refused = ssegw("volume", "passphrase", str(image), ok=False)
        assert json.loads(refused.stderr)["errorCode"] == "Disabled"
        assert not elsewhere.exists()
    finally:
        stop(served)
