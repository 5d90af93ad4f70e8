"""What the block adapter's tests share (not a test module: conftest.py and the tests import
from here): our NBD server on a thread, a raw NBD client for the requests well-behaved tools
never send, `ssegw` as a user runs it, and the external tools."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.block import nbd_protocol as p
from adapters.block.nbd_server import NbdServer, new_event_loop, serve

ROOT = Path(__file__).parents[3]
MiB = 1 << 20


class ServerThread:
    """Our NBD server on a Unix socket, on its own event loop in a thread."""

    def __init__(self, server: NbdServer, sock: Path,
                 loop_factory: Callable[[], asyncio.AbstractEventLoop] = new_event_loop) -> None:
        self.server = server
        self.sock = sock
        self.uri = f"nbd+unix:///?socket={sock}"
        # By default the loop the server ships with: uvloop (SSEGW_NBD_LOOP=asyncio: stdlib).
        self.loop = self._loop = loop_factory()
        self._stop = asyncio.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "NBD server did not start"

    def _run(self) -> None:
        self._loop.run_until_complete(serve(self.server, socket_path=self.sock,
                                            ready=lambda _: self._ready.set(), stop=self._stop))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


class RawClient:
    """A bare-bones fixed-newstyle client that can also misbehave on purpose."""

    def __init__(self, sock: Path, *, go: bool = True, structured: bool = False) -> None:
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(20)
        self.s.connect(str(sock))
        self.cookie = 0
        magic, opt, hflags = struct.unpack(">QQH", self.recv(18))
        assert (magic, opt) == (p.NBDMAGIC, p.IHAVEOPT) and hflags & p.FLAG_FIXED_NEWSTYLE
        self.s.sendall(struct.pack(">I", p.FLAG_C_FIXED_NEWSTYLE | p.FLAG_C_NO_ZEROES))
        self.size = 0
        if structured:
            assert self.option(p.Opt.STRUCTURED_REPLY)[-1][0] == p.Rep.ACK
            self.structured = True
        else:
            self.structured = False
        if go:
            ask = struct.pack(">I", 0) + struct.pack(">HH", 1, p.Info.BLOCK_SIZE)
            replies = self.option(p.Opt.GO, ask)
            assert replies[-1][0] == p.Rep.ACK, replies
            for rep, data in replies:
                if rep == p.Rep.INFO and struct.unpack_from(">H", data)[0] == p.Info.EXPORT:
                    self.size = struct.unpack_from(">Q", data, 2)[0]

    def recv(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        return buf

    def option(self, opt: int, data: bytes = b"") -> list[tuple[int, bytes]]:
        self.s.sendall(struct.pack(">QII", p.IHAVEOPT, opt, len(data)) + data)
        replies = []
        while True:
            magic, ropt, rep, length = struct.unpack(">QIII", self.recv(20))
            assert magic == p.OPT_REPLY_MAGIC and ropt == opt
            replies.append((rep, self.recv(length)))
            if rep != p.Rep.INFO and rep != p.Rep.SERVER:
                return replies

    def request(self, cmd: int, offset: int = 0, length: int = 0, data: bytes = b"",
                flags: int = 0) -> tuple[int, bytes]:
        """(error, data) of one request."""
        self.cookie += 1
        req = p.Request(flags, cmd, self.cookie, offset, length)
        self.s.sendall(p.encode_request(req) + data)
        return self.reply(self.cookie, cmd, length)

    def reply(self, cookie: int, cmd: int, length: int) -> tuple[int, bytes]:
        magic = struct.unpack(">I", self.recv(4))[0]
        if magic == p.SIMPLE_REPLY_MAGIC:
            err, rcookie = struct.unpack(">IQ", self.recv(12))
            assert rcookie == cookie
            body = self.recv(length) if cmd == p.Cmd.READ and err == 0 else b""
            return err, body
        assert magic == p.STRUCTURED_REPLY_MAGIC
        flags, rtype, rcookie, plen = struct.unpack(">HHQI", self.recv(16))
        assert rcookie == cookie and flags & p.REPLY_FLAG_DONE
        payload = self.recv(plen)
        if rtype == p.ReplyType.OFFSET_DATA:
            return 0, payload[8:]
        assert rtype == p.ReplyType.ERROR
        return struct.unpack_from(">I", payload)[0], b""

    def close(self) -> None:
        self.s.close()


def wait_for(pred: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Cli:
    """`ssegw` in a new process per command, as a user runs it, on one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "gateway.cli", *args, "--data-dir", str(self.data_dir)]

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(self.cmd(*args), capture_output=True, text=True, env=self.env,
                           timeout=120)
        if ok:
            assert r.returncode == 0, r.stderr
        return r

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args).stdout)

    def serve(self, image: Path, sock: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(self.cmd("volume", "serve", str(image), "--socket", str(sock)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"server did not start: {proc.communicate(timeout=10)[1]}")
        assert json.loads(line)["uri"].endswith(str(sock))
        return proc


def tool(*args: str, input: bytes | None = None, timeout: float = 300) -> bytes:
    r = subprocess.run(list(args), capture_output=True, input=input, timeout=timeout)
    assert r.returncode == 0, f"{args[0]} failed: {r.stderr.decode(errors='replace')}"
    return r.stdout


def make_foreign_luks1(img: Path, passphrase: bytes) -> None:
    """A LUKS1 image made by cryptsetup, the reference implementation (forced iterations:
    qemu-img's PBKDF benchmark fails on a loaded machine)."""
    with open(img, "wb") as f:
        f.truncate(4 << 20)
    subprocess.run(["cryptsetup", "luksFormat", "--type", "luks1", "--batch-mode",
                    "--pbkdf-force-iterations", "1000", "--key-file=-", str(img)],
                   input=passphrase, check=True, capture_output=True)
