"""`ssegw serve`: the KMS HTTP API and the S3 proxy on loopback ports.

On first start the data directory gets its root key, its SoftHSM2 token and a `demo` account;
every start prints the endpoints and the demo credentials, so `make run` is all a new user needs.
Without `--backend-url` the objects go to an embedded SeaweedFS (gateway/seaweed.py): a child
process on loopback ports keeping its data under `<data-dir>/s3`, so they outlive restarts.
`--backend moto-memory` uses an in-process moto server instead (objects in memory: a demo).

With `--kms-workers N`, N processes serve the same ports (SO_REUSEPORT); the first one sets up,
starts the embedded backend if any, and supervises the others.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from gateway.console_products import ProxyProductEncryption
from gateway.http_protocol import protocol_class
from gateway.ops import OpsMiddleware, kms_operation, ready_checks, s3_operation
from gateway.s3.app import create_app as create_s3_app
from gateway.s3.auth import Authenticated
from gateway.s3.backend import Backend, BackendConfig
from gateway.s3.proxy import S3Proxy
from gateway.seaweed import EmbeddedSeaweed, SeaweedError, launch_embedded
from kms_core.client import KmsClient
from kms_core.client.http import HttpKmsClient
from kms_core.client.inprocess import InProcessKmsClient
from kms_core.console.app import create_console
from kms_core.embedded import DEFAULT_REGION, Kms, KmsConfig, default_data_dir, open_kms
from kms_core.errors import AccessDenied, AlreadyExists, KeyUnavailable, NotFound
from kms_core.http.app import create_app as create_kms_app
from kms_core.node_options import OptionError, add_node_options, hsm_from_args
from kms_core.regions import is_pool
from kms_core.rootkey import RootKeyError
from kms_core.scheduler import Scheduler, start_scheduler
from kms_core.sigv4 import UnknownAccessKey
from kms_core.specs import Protection

DEMO_ACCOUNT = "demo"
MOTO_KEY = ("ssegw-backend", "ssegw-backend-secret")


@dataclass(frozen=True)
class DemoCredentials:
    account_id: str
    access_key_id: str
    secret_access_key: str = field(repr=False)


def ensure_demo_account(kms: Kms) -> DemoCredentials:
    try:
        info = kms.accounts.by_name(DEMO_ACCOUNT)
    except NotFound:
        try:
            info, creds = kms.accounts.create_account(DEMO_ACCOUNT)
            return DemoCredentials(info.account_id, creds.access_key_id, creds.secret_access_key)
        except AlreadyExists:
            # Another node made it at the same moment (with its access key, atomically).
            info = kms.accounts.by_name(DEMO_ACCOUNT)
    key_id = kms.accounts.access_keys(info.account_id)[0]
    creds = kms.accounts.credentials(key_id)
    return DemoCredentials(info.account_id, key_id, creds.secret_access_key)


def prepare_node(config: KmsConfig) -> tuple[Kms, DemoCredentials]:
    """Everything a node sets up before serving; safe with any number of nodes starting at once.

    The schema is migrated under a database lock, the root key file is linked into place whole,
    the embedded token is made under a file lock, and the demo account with its access key is
    one transaction (a node that loses the race reads the winner's).
    """
    kms = open_kms(config)
    try:
        kms.service.keystore(Protection.HSM)  # open the HSM now, not on first use
        return kms, ensure_demo_account(kms)
    except BaseException:
        kms.close()
        raise


def served_regions(given: list[str] | None) -> tuple[str, ...]:
    """The pools `--region` names (in order, without repeats), or the one default pool."""
    chosen = given or [os.environ.get("SSEGW_REGION", DEFAULT_REGION)]
    return tuple(dict.fromkeys(chosen))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    p.add_argument("--db-url", default=os.environ.get("SSEGW_DB_URL"))
    p.add_argument("--region", action="append", default=None, metavar="POOL",
                   help="a resource pool this deployment serves (repeatable; ids from the guide's "
                        f"list, e.g. cn-xian-5; default $SSEGW_REGION or {DEFAULT_REGION}); "
                        "requests signed for any other pool are refused")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--kms-port", type=int, default=9100)
    p.add_argument("--s3-port", type=int, default=9000)
    p.add_argument("--backend-url", help="S3 backend (default: an embedded SeaweedFS, see --backend)")
    p.add_argument("--backend", choices=("seaweedfs", "moto-memory"), default="seaweedfs",
                   help="without --backend-url: SeaweedFS as a child process keeping objects under "
                        "<data-dir>/s3 (default), or moto in memory (a demo: objects die with the process)")
    p.add_argument("--seaweed-port", type=int, default=None,
                   help="S3 port of the embedded SeaweedFS on 127.0.0.1 (default: the last one, else a free one)")
    p.add_argument("--backend-access-key", default=os.environ.get("SSEGW_BACKEND_ACCESS_KEY"))
    p.add_argument("--backend-secret-key", default=os.environ.get("SSEGW_BACKEND_SECRET_KEY"))
    p.add_argument("--backend-region", default="us-east-1")
    p.add_argument("--backend-ca", help="CA bundle to verify an HTTPS backend")
    p.add_argument("--s3-domain", action="append", default=None,
                   help="domain for virtual-host-style addressing (<bucket>.<domain>); repeatable; "
                        "default localhost")
    p.add_argument("--kms-url", help="use a remote KMS for the S3 proxy's key calls (signed with the "
                                     "caller's own credentials) instead of the in-process one")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", help="private key of --tls-cert (PEM)")
    p.add_argument("--console-idle-minutes", type=float, default=30.0,
                   help="web console sessions end after this long without a request (default 30)")
    p.add_argument("--serve-plaintext-objects", action="store_true",
                   help="serve objects that carry no encryption envelope (put into the backend without the "
                        "gateway) as they are; off by default, since nothing vouches for their bytes: only "
                        "while migrating a bucket of plaintext objects (copy each onto itself to encrypt it)")
    p.add_argument("--allow-sse-c-over-http", action="store_true",
                   help="accept SSE-C (customer-provided keys) on plain HTTP too; AWS refuses it, and so "
                        "do we by default: only for test rigs on loopback")
    p.add_argument("--scheduler-interval", type=float, default=60.0,
                   help="seconds between runs of due rotations, deletions and expiries")
    p.add_argument("--kms-workers", type=int, default=1,
                   help="processes serving the ports (SO_REUSEPORT); use the core count under load")
    p.add_argument("--worker-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--access-log", action="store_true",
                   default=os.environ.get("SSEGW_ACCESS_LOG", "") not in ("", "0"),
                   help="one JSON line per request on stderr, with its request id")
    p.add_argument("--drain-delay", type=float, default=0.0,
                   help="on SIGTERM, seconds to keep serving with /readyz at 503 before closing "
                        "the ports (in-flight requests are always let finish)")
    add_node_options(p)


def _listen(host: str, port: int) -> socket.socket:
    # Every worker process binds the same port; the kernel spreads connections between them.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    # uvloop when installed (uvicorn[standard]): with the stdlib loop and pre-bound sockets,
    # replies stall on Nagle/delayed-ACK and throughput drops thirtyfold.
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to us: two servers share one process and stop together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _server(app: ASGIApp, args: argparse.Namespace) -> uvicorn.Server:
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", http=protocol_class(),
        ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key, timeout_graceful_shutdown=10,
    )
    return _Server(config)


def _start_moto() -> str:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    return f"http://127.0.0.1:{port}"


def _credentials(kms: Kms) -> Callable[[str], tuple[str, str]]:
    def lookup(access_key_id: str) -> tuple[str, str]:
        try:
            creds = kms.accounts.credentials(access_key_id)
        except AccessDenied:
            raise UnknownAccessKey(access_key_id) from None
        return creds.account_id, creds.secret_access_key

    return lookup


def _secrets(kms: Kms) -> Callable[[str], str]:
    return lambda access_key_id: kms.accounts.credentials(access_key_id).secret_access_key


def _kms_clients(kms: Kms, kms_url: str | None, ca: str | None) -> Callable[[Authenticated], KmsClient]:
    if kms_url is None:
        return lambda auth: InProcessKmsClient(kms.service, auth.caller, kms.buckets, kms.accounts.is_frozen)
    remote: dict[str, HttpKmsClient] = {}

    def client(auth: Authenticated) -> KmsClient:
        # The proxy calls the KMS as the caller, with the caller's own verified credentials.
        c = remote.get(auth.caller.principal)
        if c is None:
            c = remote[auth.caller.principal] = HttpKmsClient(
                kms_url, auth.caller.principal, auth.secret, auth.caller.region, ca_certs=ca)
        return c

    return client


def _spawn_workers(args: argparse.Namespace, backend_url: str, access: str,
                   secret: str) -> list[subprocess.Popen[bytes]]:
    # The same command line, marked as a child: children skip set-up and the banner.
    argv = [sys.executable, "-m", "gateway.cli", *sys.argv[1:], "--worker-child"]
    env = dict(os.environ)
    if not args.backend_url:  # the embedded backend's key goes by environment, not in `ps`
        argv += ["--backend-url", backend_url]
        env.update(SSEGW_BACKEND_ACCESS_KEY=access, SSEGW_BACKEND_SECRET_KEY=secret)
    return [subprocess.Popen(argv, env=env) for _ in range(max(0, args.kms_workers - 1))]


def _launch_weed(args: argparse.Namespace) -> EmbeddedSeaweed:
    try:
        return launch_embedded(args.data_dir / "s3", args.seaweed_port)
    except SeaweedError as e:
        raise SystemExit(f"ssegw serve: {e}") from None


def _backend(args: argparse.Namespace, weed: EmbeddedSeaweed | None) -> tuple[str, str | None, str | None, str]:
    """(url, access key, secret, what the banner says about it) of the proxy's backend."""
    if args.backend_url:
        return args.backend_url, args.backend_access_key, args.backend_secret_key, ""
    if weed is not None:
        try:
            weed.wait()
        except SeaweedError as e:
            raise SystemExit(f"ssegw serve: {e}") from None
        assert weed.credentials is not None
        return (weed.url, weed.credentials.access_key_id, weed.credentials.secret_access_key,
                f", embedded SeaweedFS: objects are kept in {weed.directory}")
    return _start_moto(), *MOTO_KEY, ", in-process moto: objects are kept in memory only"


def _log_requests() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("ssegw.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


def keep_freed_buffers(mmap_threshold: int = 8 << 20, trim_threshold: int = 32 << 20) -> bool:
    """Let glibc reuse freed megabyte buffers instead of returning them to the kernel.

    Streaming an object allocates and frees ~1 MiB buffers all the time (socket reads, sealed
    and opened packages). By default glibc hands such blocks back with munmap or a heap trim,
    so every new one is faulted in page by page: ~7,000 page faults per 64 MiB GET, about a
    third of the proxy's CPU on a VM. Keeping up to `trim_threshold` of freed heap costs that
    much memory at most. Returns False where there is no glibc mallopt (nothing changes).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, mmap_threshold)) and bool(mallopt(m_trim_threshold, trim_threshold))


def _refusal(args: argparse.Namespace, regions: tuple[str, ...]) -> str | None:
    """Why `ssegw serve` cannot start with these options (None: it can)."""
    if bool(args.tls_cert) != bool(args.tls_key):
        return "--tls-cert and --tls-key go together"
    unknown = [r for r in regions if not is_pool(r)]
    if unknown:
        return (f"unknown resource pool {', '.join(unknown)}; the pools are listed in "
                "kms_core/regions.py (the guide's section 1.9), e.g. cn-east-1 (华东1), cn-xian-5 (西安 5)")
    return None


def _banner(args: argparse.Namespace, regions: tuple[str, ...], backend_url: str, where: str,
            demo: DemoCredentials) -> str:
    scheme = "https" if args.tls_cert else "http"
    return (
        f"ssegw: data dir {args.data_dir.resolve()}, region {', '.join(regions)}\n"
        f"  S3 proxy {scheme}://{args.host}:{args.s3_port}/  (backend {backend_url}{where})\n"
        f"  KMS API  {scheme}://{args.host}:{args.kms_port}/  "
        "(AWS: X-Amz-Target TrentService.*; REST: POST /v1/kms/<operation>)\n"
        f"  console  {scheme}://{args.host}:{args.kms_port}/console/  "
        "(sign in with the demo access key id and secret below)\n"
        f"  demo account {demo.account_id}\n"
        f"    export AWS_ACCESS_KEY_ID={demo.access_key_id}\n"
        f"    export AWS_SECRET_ACCESS_KEY={demo.secret_access_key}\n"
        f"    export AWS_DEFAULT_REGION={regions[0]}\n"
        f"  try: aws s3 mb s3://demo --endpoint-url {scheme}://{args.host}:{args.s3_port}\n"
        f"       aws kms list-keys --endpoint-url {scheme}://{args.host}:{args.kms_port}"
    )


def run(args: argparse.Namespace) -> int:
    regions = served_regions(args.region)
    refusal = _refusal(args, regions)
    if refusal is not None:
        print(f"ssegw serve: {refusal}", file=sys.stderr)
        return 2
    keep_freed_buffers()
    # Our ports first: SeaweedFS picks free ports for itself, and could take ours otherwise.
    kms_sock, s3_sock = _listen(args.host, args.kms_port), _listen(args.host, args.s3_port)
    # SeaweedFS starts while the KMS opens; it stops when this process exits (or dies).
    weed = None if args.backend_url or args.worker_child or args.backend != "seaweedfs" else _launch_weed(args)
    try:
        kms, demo = prepare_node(KmsConfig(data_dir=args.data_dir, db_url=args.db_url,
                                           region=regions[0], regions=regions,
                                           hsm=hsm_from_args(args), root_key=args.root_key))
    except (RootKeyError, OptionError, KeyUnavailable) as exc:
        # Said plainly, and no serving: a node that cannot open the cluster's keys must not
        # answer requests with errors about every ciphertext.
        print(f"ssegw serve: {exc.message}", file=sys.stderr)
        return 2
    kms.start_background()
    # Every worker runs the scheduler: each due action is claimed in the database, so it
    # happens once however many processes look for it.
    scheduler = start_scheduler(kms, args.scheduler_interval)
    backend_url, access, secret, where = _backend(args, weed)
    if not access or not secret:
        print("ssegw serve: --backend-url needs --backend-access-key and --backend-secret-key",
              file=sys.stderr)
        return 2
    backend = Backend(BackendConfig(backend_url, access, secret, args.backend_region,
                                    args.backend_ca or True))
    proxy = S3Proxy(backend, _kms_clients(kms, args.kms_url, args.backend_ca),
                    allow_sse_c_over_http=args.allow_sse_c_over_http,
                    serve_plaintext=args.serve_plaintext_objects)
    domains = tuple(args.s3_domain or ["localhost"])
    console = create_console(kms, pools=regions, secure_cookies=bool(args.tls_cert),
                             idle_timeout=timedelta(minutes=args.console_idle_minutes),
                             products=ProxyProductEncryption(proxy.bucket_ops, _secrets(kms)))
    if args.access_log:
        _log_requests()
    checks = ready_checks(kms.ready_checks(), backend_url)
    servers = [
        (_server(OpsMiddleware(create_kms_app(kms, console), "kms", checks, kms_operation), args),
         [kms_sock]),
        (_server(OpsMiddleware(create_s3_app(proxy, _credentials(kms), domains=domains, regions=regions,
                                             frozen=kms.accounts.is_frozen), "s3", checks,
                               s3_operation), args),
         [s3_sock]),
    ]
    if args.worker_child:
        return _serve(kms, backend, servers, [], scheduler, proxy, args.drain_delay)
    workers = _spawn_workers(args, backend_url, access, secret)
    print(_banner(args, regions, backend_url, where, demo), flush=True)
    return _serve(kms, backend, servers, workers, scheduler, proxy, args.drain_delay)


def _serve(kms: Kms, backend: Backend, servers: list[tuple[uvicorn.Server, list[socket.socket]]],
           workers: list[subprocess.Popen[bytes]], scheduler: Scheduler,
           proxy: S3Proxy | None = None, drain_delay: float = 0.0) -> int:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        def exit_now() -> None:
            for server, _ in servers:
                server.should_exit = True

        def stop() -> None:
            # /readyz answers 503 from now on, so a load balancer stops sending new requests;
            # after --drain-delay the ports close and uvicorn lets in-flight requests finish.
            for server, _ in servers:
                if isinstance(server.config.app, OpsMiddleware):
                    server.config.app.draining = True
            loop.call_later(drain_delay, exit_now)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        if proxy is not None:
            # A key disabled, deleted or moved on any node (PostgreSQL NOTIFY): bucket keys
            # cached here stop working at once too.
            keys = proxy.keys

            def forget_keys(_message: str) -> None:
                loop.call_soon_threadsafe(keys.forget_all)

            kms.changes.subscribe(forget_keys)
        try:
            await asyncio.gather(*(server.serve(sockets=socks) for server, socks in servers))
        finally:
            await backend.close()

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=30)
        scheduler.stop()
        kms.close()  # flush usage counts and audit events: a clean stop loses nothing
    return 0
