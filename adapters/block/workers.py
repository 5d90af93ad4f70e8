"""Serving one volume from several processes, so many connections use every core.

Sector crypto itself no longer needs this: it runs in C without the GIL (sector_crypto), and
one batch of 1 MiB or more is split across threads. What stays single-core per process is
everything else a request costs in Python (protocol, buffers, syscalls: ~60% of the server's
CPU for 256 KiB requests, most of it for 4 KiB ones), and that is what worker processes
spread. Measured with nbdcopy (4 connections), 1 GiB: reads ~0.75 GB/s from one process,
~1.2-1.7 GB/s from two; writes, bound by the whole machine's CPU with the client, alike. So
the default is one worker per core (at most 4); a single connection is served by one worker
either way, with its large batches' crypto split across threads.

The parent process accepts connections and hands each one's file descriptor (SCM_RIGHTS over
a socketpair) to the next worker, round-robin; every worker runs its own asyncio loop and its
own `NbdServer` over the same open image. The volume (and its sector cipher's keyed OpenSSL
contexts) is opened once, before the fork; each worker makes its own crypto helper threads.

Why multi-conn semantics still hold across processes: every worker reads and writes the one
image file with pread/pwrite, so they share the kernel's page cache (a write acknowledged by
one worker is visible to a read in any other), and `fdatasync` from any worker makes every
dirty page of that file durable, whoever wrote it. Partial-sector read-modify-writes take a
POSIX byte-range lock (Volume._locked), which does exclude other processes.

Workers die with the parent (PR_SET_PDEATHSIG): `kill -9` of the server leaves no orphan
still serving an image that the next server may open.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from adapters.block.nbd_server import NbdServer, listen, run, run_connections

log = logging.getLogger("ssegw.nbd")

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


async def _worker_loop(server: NbdServer, ctrl: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    incoming: asyncio.Queue[socket.socket | None] = asyncio.Queue()

    def on_ctrl() -> None:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctrl, 16, 1)
        except BlockingIOError:
            return
        except OSError:
            msg, fds = b"", []
        if not msg:  # the parent closed our channel: time to stop
            loop.remove_reader(ctrl.fileno())
            incoming.put_nowait(None)
            return
        for fd in fds:
            incoming.put_nowait(socket.socket(fileno=fd))

    ctrl.setblocking(False)
    loop.add_reader(ctrl.fileno(), on_ctrl)
    await run_connections(server, incoming.get, stop)


def _fork_worker(server: NbdServer, parent: int, listener: socket.socket,
                 channels: list[socket.socket],
                 after_fork: Callable[[], None] | None) -> tuple[int, socket.socket]:
    """(pid, the parent's end of its channel) of a new worker; never returns in the worker."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # the worker
        code = 0
        try:
            _die_with_parent(parent)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
            listener.close()
            mine.close()
            for c in channels:
                c.close()
            if after_fork is not None:
                after_fork()
            run(_worker_loop(server, theirs))
            server.export.flush()
        except BaseException:
            log.exception("worker failed")
            code = 1
        finally:
            os._exit(code)
    theirs.close()
    return pid, mine


async def _hand_out(listener: socket.socket, channels: list[socket.socket],
                    ready: Callable[[], None]) -> None:
    """Accepts connections and sends each to the next live worker until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    alive = list(channels)
    turn = 0
    ready()
    stopper = loop.create_task(stop.wait())
    while alive:
        acceptor = loop.create_task(loop.sock_accept(listener))
        done, _ = await asyncio.wait({acceptor, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if acceptor not in done:
            acceptor.cancel()
            break
        conn, _addr = acceptor.result()
        with conn:
            while alive:
                ch = alive[turn % len(alive)]
                turn += 1
                try:
                    socket.send_fds(ch, [b"c"], [conn.fileno()])
                    break
                except OSError:
                    log.error("a worker is gone; serving with %d", len(alive) - 1)
                    alive.remove(ch)
    stopper.cancel()


def serve_with_workers(
    server: NbdServer,
    workers: int,
    *,
    socket_path: Path | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    ready: Callable[[str], None] | None = None,
    after_fork: Callable[[], None] | None = None,
) -> None:
    """Blocks until SIGTERM or SIGINT; then stops the workers, which flush, and returns."""
    listener, uri = listen(socket_path, host, port)
    parent = os.getpid()
    channels: list[socket.socket] = []
    pids: list[int] = []
    for _ in range(workers):
        pid, channel = _fork_worker(server, parent, listener, channels, after_fork)
        channels.append(channel)
        pids.append(pid)
    try:
        run(_hand_out(listener, channels, lambda: ready(uri) if ready is not None else None))
    finally:
        listener.close()
        for ch in channels:
            ch.close()  # EOF on its channel tells a worker to finish and flush
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if socket_path is not None:
            socket_path.unlink(missing_ok=True)
