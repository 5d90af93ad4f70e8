"""Storage that scales out: the proxy in front of a SeaweedFS cluster of one master and two
volume servers with replication 001 (a second copy on another server of the rack). With one
volume server down, every object still reads, byte for byte."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.seaweed_cluster import SeaweedCluster
from kms_core.embedded import Kms
from tests.gateway.s3.conftest import Store, bucket_name, proxy_in_front_of

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedCluster]:
    with SeaweedCluster(tmp_path_factory.mktemp("cluster"), volumes=2, replication="001") as c:
        yield c


def _stored(volume_dir: Path, bucket: str) -> dict[str, int]:
    """Size of each of the bucket's volume files on one volume server."""
    return {p.name: p.stat().st_size for p in sorted(volume_dir.glob(f"{bucket}_*.dat"))}


def test_every_object_reads_with_a_volume_server_down(cluster: SeaweedCluster, kms: Kms,
                                                      tls_cert: tuple[Path, Path]) -> None:
    assert cluster.credentials is not None
    store = Store("seaweedfs-cluster", cluster.url, cluster.credentials.access_key_id,
                  cluster.credentials.secret_access_key)
    with proxy_in_front_of(store, kms, tls_cert) as s3:
        c: Any = s3.client(s3.tenant())
        b = bucket_name()
        c.create_bucket(Bucket=b)
        objects = {"small": os.urandom(1000), "big": os.urandom(9 * MiB + 5)}
        for key, data in objects.items():
            c.put_object(Bucket=b, Key=key, Body=data)
        parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(321)]
        up = c.create_multipart_upload(Bucket=b, Key="multi")
        done = [{"PartNumber": n, "ETag": c.upload_part(Bucket=b, Key="multi", UploadId=up["UploadId"],
                                                        PartNumber=n, Body=p)["ETag"]}
                for n, p in enumerate(parts, 1)]
        c.complete_multipart_upload(Bucket=b, Key="multi", UploadId=up["UploadId"], MultipartUpload={"Parts": done})
        objects["multi"] = b"".join(parts)

        # Replication 001: each of the bucket's volumes is on both servers, with all the data.
        copies = [_stored(cluster.directory / f"volume{i}", b) for i in range(2)]
        assert copies[0] and copies[0].keys() == copies[1].keys()
        total = sum(len(d) for d in objects.values())
        assert all(sum(copy.values()) > total for copy in copies), (copies, total)

        cluster.stop_volume(0, kill=True)  # a crash, not a goodbye
        try:
            for key, data in objects.items():
                assert c.get_object(Bucket=b, Key=key)["Body"].read() == data, key
            got = c.get_object(Bucket=b, Key="multi", Range=f"bytes={5 * MiB - 10}-{5 * MiB + 10}")["Body"].read()
            assert got == objects["multi"][5 * MiB - 10:5 * MiB + 11]
            assert sorted(o["Key"] for o in c.list_objects_v2(Bucket=b)["Contents"]) == sorted(objects)
        finally:
            cluster.start_volume(0)
        assert c.get_object(Bucket=b, Key="big")["Body"].read() == objects["big"]
