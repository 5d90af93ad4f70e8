"""Versioning through the proxy: the same boto3 calls against the proxy and moto straight."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from tests.gateway.s3.conftest import S3Stack, Side, bucket_name, outcome


def _etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def _history(side: Side) -> list[tuple[str, str]]:
    """(kind, key) of every version and delete marker, newest first per key, as listed."""
    r = side.client.list_object_versions(Bucket=side.bucket)
    entries = [("v", v["Key"], v["LastModified"]) for v in r.get("Versions", [])]
    entries += [("dm", d["Key"], d["LastModified"]) for d in r.get("DeleteMarkers", [])]
    return sorted((k, key) for k, key, _ in entries)


def test_versioning_differential(sides: list[Side]) -> None:
    seen: dict[str, list[Any]] = {}
    for side in sides:
        c, b = side.client, side.bucket
        obs: list[Any] = []
        obs.append(c.get_bucket_versioning(Bucket=b).get("Status"))
        c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
        obs.append(c.get_bucket_versioning(Bucket=b).get("Status"))
        v1 = c.put_object(Bucket=b, Key="k", Body=b"first")
        v2 = c.put_object(Bucket=b, Key="k", Body=b"second!")
        obs.append((v1["ETag"], v2["ETag"], v1["VersionId"] != v2["VersionId"]))
        got1 = c.get_object(Bucket=b, Key="k", VersionId=v1["VersionId"])
        obs.append((got1["Body"].read(), got1["ETag"], got1["VersionId"] == v1["VersionId"]))
        head2 = c.head_object(Bucket=b, Key="k", VersionId=v2["VersionId"])
        obs.append((head2["ContentLength"], head2["ETag"], head2["VersionId"] == v2["VersionId"]))
        current = c.get_object(Bucket=b, Key="k")
        obs.append((current["Body"].read(), current["VersionId"] == v2["VersionId"]))
        listed = c.list_object_versions(Bucket=b)
        obs.append([(v["Key"], v["Size"], v["ETag"], v["IsLatest"]) for v in listed["Versions"]])
        # Copy an older version: to another key, and onto its own key (a restore).
        cp = c.copy_object(Bucket=b, Key="copy", CopySource={"Bucket": b, "Key": "k", "VersionId": v1["VersionId"]})
        obs.append((cp["CopySourceVersionId"] == v1["VersionId"], "VersionId" in cp))
        obs.append(c.get_object(Bucket=b, Key="copy")["Body"].read())
        # A delete marker hides the key; its versions stay readable.
        d = c.delete_object(Bucket=b, Key="k")
        obs.append((d.get("DeleteMarker"), "VersionId" in d))
        missing = outcome(c.get_object, Bucket=b, Key="k")
        obs.append((missing[0], missing[1], missing[2]["ResponseMetadata"]["HTTPHeaders"].get("x-amz-delete-marker")))
        obs.append(outcome(c.head_object, Bucket=b, Key="k")[:2])
        on_marker = outcome(c.get_object, Bucket=b, Key="k", VersionId=d["VersionId"])
        obs.append(on_marker[:2])
        obs.append(c.get_object(Bucket=b, Key="k", VersionId=v1["VersionId"])["Body"].read())
        listed = c.list_object_versions(Bucket=b, Prefix="k")
        obs.append(([(m["Key"], m["IsLatest"]) for m in listed["DeleteMarkers"]],
                    [(v["Size"], v["IsLatest"]) for v in listed["Versions"]]))
        # Paging with key and version markers.
        pages = c.list_object_versions(Bucket=b, MaxKeys=1)
        obs.append((pages["IsTruncated"], pages.get("NextKeyMarker"), bool(pages.get("NextVersionIdMarker"))))
        rest = c.list_object_versions(Bucket=b, KeyMarker=pages["NextKeyMarker"],
                                      VersionIdMarker=pages["NextVersionIdMarker"])
        obs.append(len(rest.get("Versions", [])) + len(rest.get("DeleteMarkers", [])))
        # Deleting a version by id answers its id.
        gone = c.delete_object(Bucket=b, Key="k", VersionId=v2["VersionId"])
        obs.append(gone["VersionId"] == v2["VersionId"])
        obs.append(outcome(c.get_object, Bucket=b, Key="k", VersionId=v2["VersionId"])[:2])
        c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Suspended"})
        obs.append(c.get_bucket_versioning(Bucket=b).get("Status"))
        seen[side.name] = obs
    assert seen["proxy"] == seen["moto"]
    assert seen["proxy"][2][0] == _etag(b"first")  # plaintext ETags through the proxy


def test_a_bucket_emptied_by_its_versions_listing_is_empty(sides: list[Side]) -> None:
    for side in sides:
        c, b = side.client, side.bucket
        c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
        for i in range(3):
            c.put_object(Bucket=b, Key=f"k{i % 2}", Body=b"x" * i)
        c.delete_object(Bucket=b, Key="k0")
        # What clients (and the external suite's clean-up) do: list versions, delete each.
        for page in c.get_paginator("list_object_versions").paginate(Bucket=b):
            for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
                c.delete_object(Bucket=b, Key=v["Key"], VersionId=v["VersionId"])
        assert "Versions" not in c.list_object_versions(Bucket=b)
        assert "DeleteMarkers" not in c.list_object_versions(Bucket=b)
        c.delete_bucket(Bucket=b)
        assert outcome(c.head_bucket, Bucket=b)[0] == 404


def test_every_version_stays_readable_after_rotation(s3: S3Stack) -> None:
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    key_id = s3.kms.service.create_key(t.caller).key_id
    ids = []
    for i in range(3):
        ids.append(c.put_object(Bucket=b, Key="k", Body=f"v{i}".encode(), ServerSideEncryption="aws:kms",
                                SSEKMSKeyId=key_id)["VersionId"])
        s3.kms.service.rotate_key_on_demand(t.caller, key_id)
    for i, vid in enumerate(ids):
        assert c.get_object(Bucket=b, Key="k", VersionId=vid)["Body"].read() == f"v{i}".encode()


def test_the_null_version_and_batch_deletes_of_versions(sides: list[Side]) -> None:
    seen: dict[str, list[Any]] = {}
    for side in sides:
        c, b = side.client, side.bucket
        obs: list[Any] = []
        c.put_object(Bucket=b, Key="k", Body=b"before")  # before versioning: the "null" version
        c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
        c.put_object(Bucket=b, Key="k", Body=b"after!!")
        c.put_object(Bucket=b, Key="j", Body=b"j")
        c.delete_object(Bucket=b, Key="j")
        listed = c.list_object_versions(Bucket=b)
        obs.append(sorted((v["Key"], v["Size"], v["ETag"], v["IsLatest"], v["VersionId"] == "null")
                          for v in listed["Versions"]))
        obs.append(c.get_object(Bucket=b, Key="k", VersionId="null")["Body"].read())
        obs.append(c.head_object(Bucket=b, Key="k", VersionId="null")["ContentLength"])
        # How SDKs empty a versioned bucket: DeleteObjects over the versions listing.
        doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                  for v in listed["Versions"] + listed["DeleteMarkers"]]
        deleted = c.delete_objects(Bucket=b, Delete={"Objects": doomed})
        obs.append((len(deleted["Deleted"]), deleted.get("Errors", [])))
        after = c.list_object_versions(Bucket=b)
        obs.append(("Versions" in after, "DeleteMarkers" in after))
        obs.append(outcome(c.delete_bucket, Bucket=b)[:2])
        seen[side.name] = obs
    assert seen["proxy"] == seen["moto"]
    assert seen["proxy"][1] == b"before" and seen["proxy"][-1] == (204, None)


def test_upload_part_copy_from_an_older_version(s3: S3Stack) -> None:
    c = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    old = os.urandom(5 * 1024 * 1024)
    v_old = c.put_object(Bucket=b, Key="src", Body=old)["VersionId"]
    c.put_object(Bucket=b, Key="src", Body=b"newer")
    up = c.create_multipart_upload(Bucket=b, Key="dst")["UploadId"]
    p1 = c.upload_part_copy(Bucket=b, Key="dst", UploadId=up, PartNumber=1,
                            CopySource={"Bucket": b, "Key": "src", "VersionId": v_old})
    assert p1["CopySourceVersionId"] == v_old
    p2 = c.upload_part(Bucket=b, Key="dst", UploadId=up, PartNumber=2, Body=b"tail")
    done = c.complete_multipart_upload(Bucket=b, Key="dst", UploadId=up, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": p1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]})
    assert "VersionId" in done
    assert c.get_object(Bucket=b, Key="dst")["Body"].read() == old + b"tail"
