"""Our NBD server against real clients (nbdinfo, nbdcopy, qemu-img, nbdkit, cryptsetup) and
against a raw client that sends what real clients never do."""

from __future__ import annotations

import json
import os
import socket
import struct
from pathlib import Path

import pytest

from adapters.block import nbd_protocol as p
from adapters.block.nbd_server import NbdServer, new_event_loop
from adapters.block.volume import Volume, unseal_passphrase
from kms_core.client.inprocess import InProcessKmsClient
from tests.adapters.block.helpers import MiB, RawClient, ServerThread, tool


def test_nbdinfo_shows_the_export(nbd: ServerThread, volume: Volume) -> None:
    info = json.loads(tool("nbdinfo", "--json", nbd.uri))
    export = info["exports"][0]
    assert export["export-size"] == volume.size == 64 * MiB
    assert export["can_multi_conn"] and export["can_flush"] and export["can_fua"]
    assert export["can_trim"] and export["can_zero"] and not export["is_read_only"]
    assert export["block_size_minimum"] == 512 and export["block_size_maximum"] == 32 * MiB
    assert export["description"] == "test volume"
    listed = tool("nbdinfo", "--list", "--json", nbd.uri)
    assert json.loads(listed)["exports"][0]["export-name"] == "vol"


def test_nbdcopy_round_trip_then_standard_tools_read_the_image(
        nbd: ServerThread, volume: Volume, client: InProcessKmsClient, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(64 * MiB))
    tool("nbdcopy", "--flush", str(src), nbd.uri)
    tool("nbdcopy", nbd.uri, str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()

    # Offline, without us: qemu-img with the passphrase that `volume passphrase` prints.
    pw = unseal_passphrase(volume.image, client).decode()
    out = tmp_path / "out.raw"
    tool("qemu-img", "convert", "-O", "raw", "--object", f"secret,id=s0,data={pw}",
         "--image-opts", f"driver=luks,key-secret=s0,file.filename={volume.image}", str(out))
    assert out.read_bytes() == src.read_bytes()
    # cryptsetup accepts the passphrase for keyslot 0 (no device-mapper needed for the test).
    tool("cryptsetup", "open", "--test-passphrase", "--key-file=-", str(volume.image),
         input=pw.encode())
    assert b"Payload offset:\t4096" in tool("cryptsetup", "luksDump", str(volume.image))

    # nbdkit's luks filter serves the same image and reads the same bytes.
    sock = tmp_path / "nbdkit.sock"
    pidfile = tmp_path / "nbdkit.pid"
    tool("nbdkit", "-U", str(sock), "-P", str(pidfile), "--filter=luks", "file",
         str(volume.image), f"passphrase={pw}", "--readonly")
    try:
        tool("nbdcopy", f"nbd+unix:///?socket={sock}", str(tmp_path / "via-nbdkit.bin"))
    finally:
        os.kill(int(pidfile.read_text()), 15)
    assert (tmp_path / "via-nbdkit.bin").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_serves_on_uvloop_and_on_the_stdlib_loop(
        loop: str, volume: Volume, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop ships; the stdlib loop is the fallback. Large writes (received straight into
    their own buffer) and small ones, over several connections, on each."""
    monkeypatch.setenv("SSEGW_NBD_LOOP", loop)
    t = ServerThread(NbdServer(volume), tmp_path / "nbd.sock", new_event_loop)
    try:
        assert (type(t.loop).__module__.split(".")[0] == "uvloop") == (loop == "uvloop")
        src = tmp_path / "src.bin"
        src.write_bytes(os.urandom(16 * MiB))
        tool("nbdcopy", "-C", "4", f"--request-size={MiB}", "--flush", str(src), t.uri,
             timeout=60)
        tool("nbdcopy", "-C", "2", t.uri, str(tmp_path / "back.bin"), timeout=60)
        assert (tmp_path / "back.bin").read_bytes()[:16 * MiB] == src.read_bytes()
        c = RawClient(t.sock)
        try:
            small = os.urandom(4096)
            assert c.request(p.Cmd.WRITE, 8192, 4096, small) == (0, b"")
            assert c.request(p.Cmd.READ, 8192, 4096) == (0, small)
            assert c.request(p.Cmd.READ, volume.size, 4096)[0] == p.Err.EINVAL
        finally:
            c.close()
    finally:
        t.close()


def test_multi_conn_writes_are_visible_and_flushed_everywhere(nbd: ServerThread) -> None:
    a, b = RawClient(nbd.sock), RawClient(nbd.sock, structured=True)
    block = os.urandom(8192)
    assert a.request(p.Cmd.WRITE, 4096, len(block), block) == (0, b"")
    assert b.request(p.Cmd.READ, 4096, len(block)) == (0, block)
    assert b.request(p.Cmd.FLUSH) == (0, b"")
    assert a.request(p.Cmd.WRITE, 0, 512, b"f" * 512, flags=p.CmdFlag.FUA)[0] == 0
    assert b.request(p.Cmd.READ, 0, 512) == (0, b"f" * 512)
    a.close()
    b.close()


def test_bad_requests_get_errors_and_the_server_lives_on(nbd: ServerThread) -> None:
    c = RawClient(nbd.sock)
    size = c.size
    assert c.request(p.Cmd.READ, size - 512, 1024)[0] == p.Err.EINVAL
    assert c.request(p.Cmd.READ, 1 << 62, 512)[0] == p.Err.EINVAL
    assert c.request(p.Cmd.WRITE, size, 512, b"x" * 512)[0] == p.Err.ENOSPC
    assert c.request(p.Cmd.WRITE_ZEROES, size - 512, 4096)[0] == p.Err.ENOSPC
    assert c.request(p.Cmd.TRIM, size, 512)[0] == p.Err.EINVAL
    assert c.request(p.Cmd.READ, 0, 0)[0] == p.Err.EINVAL
    assert c.request(p.Cmd.READ, 0, 64 * MiB)[0] == p.Err.EINVAL  # over the maximum
    assert c.request(p.Cmd.READ, 0, 512, flags=p.CmdFlag.DF)[0] == p.Err.EINVAL  # DF needs SR
    assert c.request(p.Cmd.WRITE_ZEROES, 0, 512, flags=p.CmdFlag.FAST_ZERO)[0] == p.Err.EINVAL
    assert c.request(p.Cmd.BLOCK_STATUS, 0, 512)[0] == p.Err.EINVAL
    assert c.request(p.Cmd.CACHE, 0, 512)[0] == p.Err.EINVAL
    assert c.request(77, 0, 512)[0] == p.Err.EINVAL
    # A write too large to accept: its payload is drained, so the stream stays in step.
    big = 33 * MiB
    assert c.request(p.Cmd.WRITE, 0, big, bytes(big))[0] == p.Err.EINVAL
    # Unaligned requests (we advertise 512 but still serve them correctly). Never-written
    # sectors of a LUKS volume read as noise, as in every LUKS reader, so zero them first.
    assert c.request(p.Cmd.WRITE_ZEROES, 0, 4096)[0] == 0
    assert c.request(p.Cmd.WRITE, 1000, 7, b"unalign")[0] == 0
    assert c.request(p.Cmd.READ, 998, 11) == (0, b"\0\0unalign\0\0")
    # Still a healthy connection after all of that.
    assert c.request(p.Cmd.WRITE, 0, 512, b"y" * 512)[0] == 0
    assert c.request(p.Cmd.READ, 0, 512) == (0, b"y" * 512)
    # A bad magic ends this connection only.
    c.s.sendall(b"\xde\xad\xbe\xef" + bytes(24))
    assert c.s.recv(100) == b""
    c.close()
    d = RawClient(nbd.sock)
    assert d.request(p.Cmd.READ, 0, 512) == (0, b"y" * 512)
    # DISC has no reply: the server flushes and hangs up.
    d.s.sendall(p.encode_request(p.Request(0, p.Cmd.DISC, 1, 0, 0)))
    assert d.s.recv(100) == b""
    d.close()
    assert nbd.server.stats.errors["EINVAL"] >= 10


@pytest.mark.parametrize("structured", [False, True])
def test_a_pipelined_burst_is_answered_in_order(nbd: ServerThread, structured: bool) -> None:
    # Real clients keep many requests in flight. Reads and small writes already buffered are
    # served straight from the protocol callback; anything else (a large write, FLUSH, TRIM
    # with FUA) goes back to the connection's task. One burst, sent at once, must still get
    # every reply, in order, each with its own data or error.
    c = RawClient(nbd.sock, structured=structured)
    big = os.urandom(256 * 1024)  # above DIRECT_PAYLOAD: received by the task
    burst: list[tuple[int, int, int, bytes, int, tuple[int, bytes]]] = [
        (p.Cmd.WRITE, 0, 4096, b"a" * 4096, 0, (0, b"")),
        (p.Cmd.READ, 0, 4096, b"", 0, (0, b"a" * 4096)),
        (p.Cmd.READ, c.size, 512, b"", 0, (p.Err.EINVAL, b"")),
        (p.Cmd.WRITE, 8192, len(big), big, p.CmdFlag.FUA, (0, b"")),
        (p.Cmd.FLUSH, 0, 0, b"", 0, (0, b"")),
        (p.Cmd.READ, 8192, len(big), b"", 0, (0, big)),
        (p.Cmd.WRITE, c.size, 512, b"x" * 512, 0, (p.Err.ENOSPC, b"")),
        (p.Cmd.WRITE, 512, 512, b"b" * 512, p.CmdFlag.FUA, (0, b"")),
        (p.Cmd.TRIM, 4096, 4096, b"", p.CmdFlag.FUA, (0, b"")),
        (p.Cmd.READ, 0, 1024, b"", 0, (0, b"a" * 512 + b"b" * 512)),
    ] * 3
    wire = b"".join(p.encode_request(p.Request(flags, cmd, n, off, length)) + data
                    for n, (cmd, off, length, data, flags, _) in enumerate(burst, 1))
    c.s.sendall(wire)
    for n, (cmd, _, length, _, _, want) in enumerate(burst, 1):
        assert c.reply(n, cmd, length) == want, (n, p.Cmd(cmd).name)
    assert c.request(p.Cmd.READ, 0, 512) == (0, b"a" * 512)  # and the connection goes on
    c.close()


def test_option_haggling(nbd: ServerThread) -> None:
    c = RawClient(nbd.sock, go=False)
    assert c.option(p.Opt.LIST)[0][0] == p.Rep.SERVER
    assert c.option(p.Opt.LIST, b"junk")[-1][0] == p.Rep.ERR_INVALID
    assert c.option(p.Opt.STARTTLS)[-1][0] == p.Rep.ERR_POLICY
    assert c.option(99)[-1][0] == p.Rep.ERR_UNSUP
    assert c.option(p.Opt.GO, b"\0\0")[-1][0] == p.Rep.ERR_INVALID
    unknown = struct.pack(">I", 4) + b"nope" + struct.pack(">H", 0)
    assert c.option(p.Opt.INFO, unknown)[-1][0] == p.Rep.ERR_UNKNOWN
    meta = struct.pack(">I", 0) + struct.pack(">I", 0)
    assert c.option(p.Opt.SET_META_CONTEXT, meta)[-1][0] == p.Rep.ERR_INVALID  # needs SR first
    assert c.option(p.Opt.STRUCTURED_REPLY)[-1][0] == p.Rep.ACK
    assert c.option(p.Opt.STRUCTURED_REPLY)[-1][0] == p.Rep.ERR_INVALID
    assert c.option(p.Opt.SET_META_CONTEXT, meta)[-1][0] == p.Rep.ACK
    # Oversized option data is drained and refused.
    assert c.option(p.Opt.INFO, bytes(100_000))[-1][0] == p.Rep.ERR_TOO_BIG
    info = c.option(p.Opt.INFO, struct.pack(">I", 3) + b"vol" + struct.pack(">HH", 1, p.Info.NAME))
    kinds = {struct.unpack_from(">H", d)[0] for r, d in info if r == p.Rep.INFO}
    assert kinds == {p.Info.EXPORT, p.Info.BLOCK_SIZE, p.Info.NAME}
    assert c.option(p.Opt.ABORT)[-1][0] == p.Rep.ACK
    c.close()
    # The old NBD_OPT_EXPORT_NAME path, with zeroes padding.
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(nbd.sock))
    s.recv(18)
    s.sendall(struct.pack(">I", p.FLAG_C_FIXED_NEWSTYLE))
    s.sendall(struct.pack(">QII", p.IHAVEOPT, p.Opt.EXPORT_NAME, 0))
    reply = b""
    while len(reply) < 134:
        reply += s.recv(134 - len(reply))
    assert struct.unpack(">QH", reply[:10])[0] == 64 * MiB
    s.close()
    # Bad client flags: the server hangs up.
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(nbd.sock))
    s.recv(18)
    s.sendall(struct.pack(">I", 0x80))
    assert s.recv(10) == b""
    s.close()


def test_disconnect_mid_request_loses_nothing_acknowledged(nbd: ServerThread) -> None:
    c = RawClient(nbd.sock)
    assert c.request(p.Cmd.WRITE, 0, 4096, b"A" * 4096)[0] == 0
    assert c.request(p.Cmd.FLUSH)[0] == 0
    # Half a write, then gone: the half must not land anywhere.
    c.s.sendall(p.encode_request(p.Request(0, p.Cmd.WRITE, 99, 0, 4096)) + b"B" * 2000)
    c.close()
    d = RawClient(nbd.sock)
    assert d.request(p.Cmd.READ, 0, 4096) == (0, b"A" * 4096)
    d.close()


def test_read_only_export(volume: Volume, tmp_path: Path) -> None:
    volume.read_only = True
    t = ServerThread(NbdServer(volume), tmp_path / "ro.sock")
    try:
        c = RawClient(t.sock)
        assert c.request(p.Cmd.WRITE, 0, 512, bytes(512))[0] == p.Err.EPERM
        assert c.request(p.Cmd.TRIM, 0, 512)[0] == p.Err.EPERM
        assert c.request(p.Cmd.READ, 0, 512)[0] == 0
        c.close()
        assert json.loads(tool("nbdinfo", "--json", t.uri))["exports"][0]["is_read_only"]
    finally:
        t.close()


def test_garbage_never_takes_the_server_down(nbd: ServerThread,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """Random bytes at every stage of the protocol; a good client is served afterwards, and
    nothing was an unexpected exception (those are logged as errors)."""
    import logging
    import random

    rng = random.Random(8)
    for i in range(60):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(str(nbd.sock))
        s.recv(18)
        junk = rng.randbytes(rng.randrange(1, 300))
        if i % 3 == 1:  # valid client flags, then a garbage option stream
            junk = struct.pack(">I", 3) + struct.pack(">QI", p.IHAVEOPT, rng.randrange(12)) + junk
        elif i % 3 == 2:  # a real session, then garbage requests (some with a valid magic)
            c = RawClient(nbd.sock)
            s.close()
            s = c.s
            junk = struct.pack(">IHH", p.REQUEST_MAGIC, rng.randrange(4), rng.randrange(10)) + junk
        try:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except OSError:
            pass
        s.close()
    c = RawClient(nbd.sock)
    assert c.request(p.Cmd.WRITE, 0, 512, b"z" * 512) == (0, b"")
    assert c.request(p.Cmd.READ, 0, 512) == (0, b"z" * 512)
    c.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
