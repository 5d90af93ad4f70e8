"""SeaweedFS as it scales out, on one machine: a master, volume servers, a filer and an S3
gateway, each its own `weed` process (`gateway.seaweed` runs the one-process embedded store)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gateway.seaweed import (
    _MASTER_TOML,
    IDENTITY_FILE,
    Credentials,
    _signed_get,
    _until,
    _volume_servers,
    listen_port,
    load_or_create_credentials,
    spawn_weed,
    stop_process,
)


class SeaweedCluster:
    """SeaweedFS as it scales out, on one machine: one master, `volumes` volume servers (each
    its own process and directory, as on its own disk or host), a filer, an S3 gateway, and
    `replication` (SeaweedFS's xyz: copies in other data centers, other racks, other servers of
    the same rack) for new buckets. For trials and tests; README shows the same commands for
    several machines.
    """

    def __init__(self, directory: Path, *, volumes: int = 2, replication: str = "001",
                 host: str = "127.0.0.1", start_timeout: float = 60.0) -> None:
        self.directory = directory.resolve()
        self.volumes = volumes
        self.replication = replication
        self.host = host
        self.start_timeout = start_timeout
        self.ports: dict[str, int] = {}
        self.credentials: Credentials | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    @property
    def master(self) -> str:
        return f"{self.host}:{self.ports['master']}"

    @property
    def _master_address(self) -> str:
        """host:port.grpcport: SeaweedFS's own notation, else it guesses grpc = port + 10000."""
        return f"{self.master}.{self.ports['master_grpc']}"

    def _port(self, name: str) -> int:
        if name not in self.ports:
            port = listen_port(self.host)
            while port in self.ports.values():
                port = listen_port(self.host)
            self.ports[name] = port
        return self.ports[name]

    def _spawn(self, name: str, args: list[str]) -> None:
        d = self.directory / name
        d.mkdir(parents=True, exist_ok=True)
        self.processes[name] = spawn_weed(args, d, self.directory / f"{name}.log")

    def start(self) -> SeaweedCluster:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.credentials = load_or_create_credentials(self.directory)
        (self.directory / "master").mkdir(exist_ok=True)
        (self.directory / "master" / "master.toml").write_text(_MASTER_TOML)
        try:
            self._spawn("master", [
                "master", f"-ip={self.host}", f"-ip.bind={self.host}", f"-port={self._port('master')}",
                f"-port.grpc={self._port('master_grpc')}", f"-mdir={self.directory / 'master'}",
                f"-defaultReplication={self.replication}", "-volumeSizeLimitMB=64", "-telemetry=false"])
            for i in range(self.volumes):
                self.start_volume(i, wait=False)
            _until(lambda: _volume_servers(self.master) == self.volumes, list(self.processes.values()),
                   self.start_timeout, "the SeaweedFS volume servers", self.directory / "master.log")
            self._spawn("filer", [
                "filer", f"-ip={self.host}", f"-ip.bind={self.host}", f"-master={self._master_address}",
                f"-port={self._port('filer')}", f"-port.grpc={self._port('filer_grpc')}",
                f"-defaultReplicaPlacement={self.replication}"])
            self._spawn("s3", [
                "s3", f"-filer={self.host}:{self.ports['filer']}.{self.ports['filer_grpc']}",
                f"-ip.bind={self.host}", f"-port={self._port('s3')}", f"-port.grpc={self._port('s3_grpc')}",
                f"-config={self.directory / IDENTITY_FILE}", "-port.iceberg=0", "-port.lance=0", "-iam=false",
                "-allowDeleteBucketNotEmpty=false", "-autoCreateBucket=false"])
            creds = self.credentials
            _until(lambda: _signed_get(self.url + "/", creds) == 200, list(self.processes.values()),
                   self.start_timeout, "the SeaweedFS S3 gateway", self.directory / "s3.log")
        except BaseException:
            self.stop()
            raise
        return self

    def start_volume(self, i: int, *, wait: bool = True) -> None:
        """Start (or restart) volume server `i`; with `wait`, until the master counts it."""
        name = f"volume{i}"
        (self.directory / name).mkdir(parents=True, exist_ok=True)
        self._spawn(name, [
            "volume", f"-ip={self.host}", f"-ip.bind={self.host}", f"-mserver={self._master_address}",
            f"-port={self._port(name)}", f"-port.grpc={self._port(name + '_grpc')}",
            f"-dir={self.directory / name}", "-max=0", "-preStopSeconds=0"])
        if wait:
            _until(lambda: _volume_servers(self.master) == self.volumes, list(self.processes.values()),
                   self.start_timeout, f"volume server {i}", self.directory / f"{name}.log")

    def stop_volume(self, i: int, *, kill: bool = False) -> None:
        """Stop volume server `i` (SIGKILL with `kill`: a crash) and wait until the master has
        dropped it, so reads go to the other copies."""
        proc = self.processes.pop(f"volume{i}")
        if kill:
            proc.kill()
            proc.wait()
        else:
            stop_process(proc, 30.0)
        _until(lambda: _volume_servers(self.master) == self.volumes - 1, list(self.processes.values()),
               self.start_timeout, "the master dropping the volume server", self.directory / "master.log")

    def stop(self, timeout: float = 30.0) -> None:
        # The S3 gateway and filer first (nothing writes after), then volumes, the master last.
        order = ("s3", "filer", "volume", "master")
        for name in sorted(self.processes, key=lambda n: order.index("volume" if n.startswith("volume") else n)):
            stop_process(self.processes.pop(name), timeout)

    def __enter__(self) -> SeaweedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
