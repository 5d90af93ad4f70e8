"""The native loop for aligned reads and writes up to 1 MiB (nbd_fastpath) against the
Python session: the same pipelined requests, byte for byte the same replies and the same volume
afterwards."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.block import nbd_protocol as p
from adapters.block.nbd_fastpath import FastPath, fast_path_for, native_library
from adapters.block.nbd_server import NbdServer
from adapters.block.nbd_transport import RECV_BUFFER
from adapters.block.volume import Volume, create_volume, open_volume
from kms_core.client.inprocess import InProcessKmsClient
from tests.adapters.block.helpers import MiB, RawClient, ServerThread

REGION = 2 * MiB  # where the mix reads and writes (plus requests past the end)


def _volume(tmp_path: Path, client: InProcessKmsClient, name: str, size: int) -> Volume:
    image = tmp_path / f"{name}.img"
    create_volume(image, size, client)
    return open_volume(image, client)


@pytest.fixture
def twins(tmp_path: Path, client: InProcessKmsClient) -> Iterator[tuple[Volume, Volume]]:
    """Two volumes (their own keys) holding the same plaintext: all of it, as never-written
    sectors would decrypt to different noise under the two keys."""
    a, b = (_volume(tmp_path, client, n, 4 * MiB) for n in ("native", "python"))
    seed = os.urandom(a.size)
    a.write(0, seed)
    b.write(0, seed)
    yield a, b
    a.close()
    b.close()


def _mix(rng: random.Random, size: int, count: int) -> list[tuple[int, int, int, int, bytes]]:
    """(flags, command, offset, length, payload): mostly what the loop serves, and between
    them what it must leave to Python (unaligned, too large, out of range, other commands,
    flags it must not accept)."""
    out: list[tuple[int, int, int, int, bytes]] = []
    for _ in range(count):
        kind = rng.random()
        length = rng.choice((512, 4096, 4096, 8192, 65536, 65536 + 512, 3, 1000))
        offset = rng.randrange(0, REGION - 70000)
        if rng.random() < 0.7:
            offset -= offset % 512
        if kind < 0.05:
            offset = size - 512 * rng.randrange(0, 3)  # at or across the end
        flags = 0
        if kind < 0.45:
            if rng.random() < 0.1:
                flags = int(rng.choice((p.CmdFlag.DF, p.CmdFlag.FUA)))
            if rng.random() < 0.15:  # large reads: up to 1 MiB in C, beyond it in Python
                length = rng.choice((256 << 10, MiB, MiB + 512))
            out.append((flags, p.Cmd.READ, offset, length, b""))
        elif kind < 0.9:
            if rng.random() < 0.1:
                flags = int(rng.choice((p.CmdFlag.FUA, p.CmdFlag.DF)))
            if rng.random() < 0.15:  # large writes: up to 1 MiB in C, beyond it in Python
                length = rng.choice((256 << 10, MiB, MiB + 512))
            out.append((flags, p.Cmd.WRITE, offset, length, rng.randbytes(length)))
        elif kind < 0.95:
            out.append((0, p.Cmd.FLUSH, 0, 0, b""))
        else:
            out.append((0, p.Cmd.WRITE_ZEROES, offset, 4096, b""))
    return out


def _run(sock: Path, structured: bool, mix: list[tuple[int, int, int, int, bytes]]) -> bytes:
    """Every request sent before any reply is read (so the server sees them batched); the
    raw reply stream, which must be identical for both servers."""
    c = RawClient(sock, structured=structured)
    try:
        wire = b"".join(p.encode_request(p.Request(flags, cmd, i + 1, offset, length)) + payload
                        for i, (flags, cmd, offset, length, payload) in enumerate(mix))
        # Sent from another thread: the replies must be read while the requests still go out.
        sender = threading.Thread(target=c.s.sendall, args=(wire,), daemon=True)
        sender.start()
        replies = []
        for i, (_flags, cmd, _offset, length, _payload) in enumerate(mix):
            head = c.recv(4)
            if struct.unpack(">I", head)[0] == p.SIMPLE_REPLY_MAGIC:
                rest = c.recv(12)
                err = struct.unpack_from(">I", rest)[0]
                body = c.recv(length) if cmd == p.Cmd.READ and err == 0 else b""
                replies.append(head + rest + body)
            else:
                rest = c.recv(16)
                replies.append(head + rest + c.recv(struct.unpack_from(">I", rest, 12)[0]))
            assert struct.unpack_from(">Q", replies[-1], 8)[0] == i + 1
        sender.join(20)
        return b"".join(replies)
    finally:
        c.close()


@pytest.mark.parametrize("structured", [False, True], ids=["simple", "structured"])
def test_native_loop_answers_as_the_python_session_does(
        twins: tuple[Volume, Volume], tmp_path: Path, structured: bool) -> None:
    native_vol, python_vol = twins
    mix = _mix(random.Random(20 + structured), native_vol.size, 400)
    native = ServerThread(NbdServer(native_vol), tmp_path / "n.sock")
    python = ServerThread(NbdServer(python_vol, native=False), tmp_path / "p.sock")
    try:
        assert _run(native.sock, structured, mix) == _run(python.sock, structured, mix)
        served = native.server.stats
        # The loop really served most of them, and the Python side none.
        assert served.native >= 100 and python.server.stats.native == 0
        assert served.requests == python.server.stats.requests == len(mix)
        assert served.errors == python.server.stats.errors and served.errors
    finally:
        native.close()
        python.close()
    assert native_vol.read(0, native_vol.size) == python_vol.read(0, python_vol.size)


def test_native_writes_are_the_volumes_sectors(volume: Volume, tmp_path: Path) -> None:
    """What the loop writes, the Python volume reads (same sectors, same tweaks), and what
    Python wrote, the loop reads; a read-only export leaves writes to Python's EPERM."""
    t = ServerThread(NbdServer(volume), tmp_path / "s.sock")
    try:
        c = RawClient(t.sock)
        data = os.urandom(16384)
        assert c.request(p.Cmd.WRITE, 8192, len(data), data) == (0, b"")
        assert bytes(volume.read(8192, len(data))) == data
        other = os.urandom(4096)
        volume.write(1 << 20, other)
        assert c.request(p.Cmd.READ, 1 << 20, 4096) == (0, other)
        assert t.server.stats.native == 2
        volume.read_only = True
        assert c.request(p.Cmd.WRITE, 0, 512, bytes(512))[0] == p.Err.EPERM
        assert t.server.stats.native == 2
        c.close()
    finally:
        volume.read_only = False
        t.close()


def test_reads_up_to_1_mib_are_the_loops_and_larger_ones_pythons(volume: Volume, tmp_path: Path) -> None:
    """nbdcopy reads 256 KiB at a time: the loop serves reads up to 1 MiB (decrypted in place in
    its reply buffer), and leaves larger ones to the Python session; both read the volume."""
    data = os.urandom(2 * MiB + 4096)
    volume.write(0, data)
    t = ServerThread(NbdServer(volume), tmp_path / "s.sock")
    try:
        c = RawClient(t.sock)
        for offset, length, native in ((0, 256 << 10, 1), (4096, MiB, 1), (512, MiB + 512, 0),
                                       (MiB, MiB + 4096, 0)):
            before = t.server.stats.native
            assert c.request(p.Cmd.READ, offset, length) == (0, data[offset:offset + length])
            assert t.server.stats.native - before == native, (offset, length)
        c.close()
    finally:
        t.close()


def test_writes_up_to_1_mib_are_the_loops_and_larger_ones_pythons(volume: Volume, tmp_path: Path) -> None:
    """nbdcopy writes 256 KiB at a time: the transport waits until such a payload is whole in
    its receive buffer and the loop serves it; larger ones are Python's. Sent in pieces, so the
    loop meets each payload before all of it has arrived."""
    t = ServerThread(NbdServer(volume), tmp_path / "s.sock")
    try:
        c = RawClient(t.sock)
        for offset, length, native in ((0, 256 << 10, 1), (4096, MiB, 1), (512, MiB + 512, 0),
                                       (3 * MiB, MiB, 1)):
            data = os.urandom(length)
            before = t.server.stats.native
            c.cookie += 1
            wire = p.encode_request(p.Request(0, p.Cmd.WRITE, c.cookie, offset, length)) + data
            for at in range(0, len(wire), 100_000):
                c.s.sendall(wire[at:at + 100_000])
                time.sleep(0.002)
            assert c.reply(c.cookie, p.Cmd.WRITE, length) == (0, b"")
            assert t.server.stats.native - before == native, (offset, length)
            assert bytes(volume.read(offset, length)) == data
        c.close()
    finally:
        t.close()


def test_the_loop_is_built_and_used_where_required(volume: Volume) -> None:
    if os.environ.get("SSEGW_NATIVE_XTS") != "required":
        pytest.skip("the native loops are only required with SSEGW_NATIVE_XTS=required "
                    "(make test); without it a missing build falls back by design")
    assert native_library() is not None
    fast = fast_path_for(volume, False, 8)
    assert fast is not None
    fast.close()


def test_replies_the_socket_cannot_take_yet_are_not_overwritten(volume: Volume, tmp_path: Path) -> None:
    """The loop hands its replies to the transport as views of its reply buffer. A client that
    sends many large reads before reading any reply backs the socket up, so the transport holds
    views of replies not yet sent while the loop serves more: each must arrive as it was made."""
    data = os.urandom(8 * MiB)
    volume.write(0, data)
    t = ServerThread(NbdServer(volume), tmp_path / "s.sock")
    try:
        c = RawClient(t.sock)
        rng = random.Random(5)
        reads = [(rng.randrange(0, 7 * MiB // 512) * 512, rng.choice((256 << 10, MiB, 4096)))
                 for _ in range(64)]
        before = t.server.stats.native
        for i, (offset, length) in enumerate(reads, start=1):
            c.s.sendall(p.encode_request(p.Request(0, p.Cmd.READ, i, offset, length)))
        for i, (offset, length) in enumerate(reads, start=1):
            assert c.reply(i, p.Cmd.READ, length) == (0, data[offset:offset + length]), i
        # Most go through the loop. Not all need to: while the transport has paused writing
        # (the socket backed up), the task serves the next request in Python and waits for
        # the drain, so how many it takes depends on how fast this client reads (CI: 3 of 64).
        native = t.server.stats.native - before
        assert len(reads) // 2 <= native <= len(reads)
        c.close()
    finally:
        t.close()


def _fast(volume: Volume) -> FastPath:
    fast = fast_path_for(volume, False, 8)
    if fast is None:
        pytest.skip("the native NBD loop is not built (`make deps`); make test requires it")
    return fast


def _write_request(cookie: int, offset: int, data: bytes) -> bytes:
    return p.encode_request(p.Request(0, p.Cmd.WRITE, cookie, offset, len(data))) + data


def test_a_large_write_first_takes_in_what_the_client_sent_since(volume: Volume) -> None:
    """Before it encrypts a large WRITE the loop receives (without waiting) what the client
    has sent meanwhile, so the client can go on sending while the write is served; the bytes
    land after the buffered ones and are reported, and a payload they complete is served in
    the same call. Small writes take nothing; neither does a loop given no socket."""
    fast = _fast(volume)
    a, b = socket.socketpair()
    buf = bytearray(RECV_BUFFER)
    at = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))

    def serve(offset: int, length: int, capacity: int, sock: int) -> tuple[int, int, bytes, int, bool]:
        got, consumed, replies, served, wrote = fast.serve(at + offset, length, capacity, sock, 8, False)
        return got, consumed, bytes(replies), served, wrote

    first, second = os.urandom(256 << 10), os.urandom(256 << 10)
    try:
        head = _write_request(1, 0, first)
        buf[:len(head)] = head
        nxt = _write_request(2, 256 << 10, second)
        b.sendall(nxt[:100_000])
        got, consumed, replies, served, wrote = serve(0, len(head), len(buf), a.fileno())
        assert (got, consumed, served, wrote) == (100_000, len(head), 1, True)
        assert replies == p.simple_reply(1)
        assert buf[len(head):len(head) + got] == nxt[:100_000]
        # The rest of the second arrives: taken in by the loop and served at once.
        b.sendall(nxt[100_000:])
        rest = len(nxt) - 100_000
        got, consumed, replies, served, _ = serve(len(head), 100_000, len(buf) - len(head), a.fileno())
        assert (got, consumed, replies, served) == (rest, len(nxt), p.simple_reply(2), 1)
        assert bytes(volume.read(0, 512 << 10)) == first + second
        # No more than the room given; nothing for a small write, or without a socket.
        b.sendall(b"x" * 64)
        buf[:len(head)] = head
        assert serve(0, len(head), len(head) + 10, a.fileno())[0] == 10
        small = _write_request(3, 0, bytes(4096))
        buf[:len(small)] = small
        assert serve(0, len(small), len(buf), a.fileno())[0] == 0
        buf[:len(head)] = head
        assert serve(0, len(head), len(buf), -1)[0] == 0
        # A client that has gone: nothing taken, the write still served.
        a.recv(1 << 20)
        b.close()
        got, _, _, served, _ = serve(0, len(head), len(buf), a.fileno())
        assert (got, served) == (0, 1)
    finally:
        a.close()
        b.close()
        fast.close()


def test_reads_past_an_image_truncated_under_the_server_are_eio_not_a_crash(
        volume: Volume, tmp_path: Path) -> None:
    """The loop decrypts READs from a mapping of the image. If the image file is truncated
    under it, touching the lost pages raises SIGBUS: the loop must catch it (this test
    process would die otherwise), leave the request to Python (whose pread answers EIO), and
    go on serving what is still there."""
    data = os.urandom(4 * MiB)
    volume.write(0, data)
    t = ServerThread(NbdServer(volume), tmp_path / "s.sock")
    try:
        c = RawClient(t.sock)
        assert c.request(p.Cmd.READ, 3 * MiB, 256 << 10) == (0, data[3 * MiB:3 * MiB + (256 << 10)])
        assert t.server.stats.native == 1
        io = volume.native_io()
        assert io is not None
        os.truncate(volume.image, io[1] + MiB)  # the payload now ends at 1 MiB
        assert c.request(p.Cmd.READ, 2 * MiB, 256 << 10)[0] == p.Err.EIO
        assert t.server.stats.native == 1  # left to Python, which said EIO
        before = t.server.stats.native
        assert c.request(p.Cmd.READ, 4096, 8192) == (0, data[4096:4096 + 8192])
        assert t.server.stats.native == before + 1  # the loop again (pread, the mapping dropped)
        c.close()
    finally:
        t.close()


def test_reads_through_the_mapping_stay_right_as_it_is_made_again(volume: Volume, tmp_path: Path) -> None:
    """Large READs decrypt from a mapping that is made again every 256 MiB read through it (its
    page tables are given back so); small ones pread. Reading the 64 MiB volume five times over
    in 1 MiB and 4 KiB requests crosses that point, and every byte must still be the volume's."""
    data = os.urandom(volume.size)
    volume.write(0, data)
    t = ServerThread(NbdServer(volume), tmp_path / "s.sock")
    try:
        c = RawClient(t.sock)
        for _ in range(5):
            for offset in range(0, volume.size, MiB):
                assert c.request(p.Cmd.READ, offset, MiB) == (0, data[offset:offset + MiB]), offset
            assert c.request(p.Cmd.READ, 12288, 4096) == (0, data[12288:16384])
        assert t.server.stats.native == 5 * (volume.size // MiB + 1)
        c.close()
    finally:
        t.close()


_SIGBUS_PROBE = """
import os, signal, sys, tempfile
from adapters.block.nbd_fastpath import native_library
seen = []
if sys.argv[1] == "python-handler":
    signal.signal(signal.SIGBUS, lambda sig, frame: seen.append(sig))
f = tempfile.TemporaryFile()
f.truncate(1 << 20)
lib = native_library()
assert lib is not None
handle = lib.new(f.fileno(), 0, 1 << 20, 0, 0, 0, 0)  # maps the file: installs the handler
assert handle
os.kill(os.getpid(), signal.SIGBUS)
print("handled" if seen else "survived")
"""


@pytest.mark.parametrize("before", ["python-handler", "default"])
def test_a_sigbus_not_from_a_mapped_read_goes_where_it_went_before(before: str) -> None:
    """The loop's SIGBUS handler only takes faults of its own guarded reads: any other SIGBUS
    reaches the handler that was there before it (here Python's), or, with none, ends the
    process as SIGBUS always did."""
    if native_library() is None:
        pytest.skip("the native NBD loop is not built (`make deps`); make test requires it")
    r = subprocess.run([sys.executable, "-c", _SIGBUS_PROBE, before], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PYTHONFAULTHANDLER": ""})
    if before == "python-handler":
        assert (r.returncode, r.stdout.strip()) == (0, "handled"), r.stderr
    else:
        assert r.returncode == -signal.SIGBUS, (r.returncode, r.stdout, r.stderr)
