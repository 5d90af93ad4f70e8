"""Object format v4, pure: frozen vectors of the metadata (MAC'd at CreateMultipartUpload) and
of the manifest tag (size, layout, parts digest, MAC), and what a changed manifest does."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.s3.envelope import (
    FORMAT_VERSION_4,
    MAX_TAG_VALUE,
    Algorithm,
    ObjectCorrupt,
    ObjectMeta,
    manifest_fits,
    parts_digest,
    sealed_size,
)

V4 = json.loads((Path(__file__).parents[2] / "vectors" / "object_v4.json").read_text())


def _meta(v: dict[str, Any]) -> ObjectMeta:
    meta = ObjectMeta.decode(v["headers"])
    assert meta is not None
    return meta


@pytest.mark.parametrize("v", V4["objects"], ids=[o["headers"]["x-amz-meta-ssegw-alg"] for o in V4["objects"]])
def test_frozen_metadata_and_manifest(v: dict[str, Any]) -> None:
    meta = _meta(v)
    assert meta.version == FORMAT_VERSION_4 and meta.multipart and meta.manifest_in_tag
    assert meta.encode() == v["headers"]
    dk = bytes.fromhex(v["data_key"])
    assert meta.signed(dk, v["bucket"], v["key"]).encode() == v["headers"]  # MAC'd at Create
    with pytest.raises(ObjectCorrupt):
        meta.verify(dk, v["bucket"], v["key"])  # no manifest yet: not complete
    done = meta.read_manifest(v["manifest"])
    done.verify(dk, v["bucket"], v["key"])
    assert done.parts_digest == parts_digest([bytes.fromhex(s) for s in v["salts"]])
    assert done.manifest() == v["manifest"]
    assert done.encode() == v["headers"]  # the manifest never goes into the metadata
    assert meta.with_manifest(dk, done.size or 0, done.layout or (), done.parts_digest or b"").manifest() == \
        v["manifest"]
    with pytest.raises(ObjectCorrupt):
        done.verify(dk, v["bucket"], v["key"] + "x")  # the metadata MAC binds the name
    with pytest.raises(ObjectCorrupt):
        done.verify(os.urandom(len(dk)), v["bucket"], v["key"])


@pytest.mark.parametrize("v", V4["objects"][:1])
def test_every_manifest_change_fails(v: dict[str, Any]) -> None:
    meta, dk = _meta(v), bytes.fromhex(v["data_key"])
    fields = v["manifest"].split(" ")
    edits = [
        [str(int(fields[0]) + 1), *fields[1:]],
        [fields[0], fields[1].replace(":2", ":3"), *fields[2:]],
        [*fields[:2], fields[2][:-4] + "AAA=", fields[3]],
        [*fields[:3], fields[3][:-4] + "AAA="],
    ]
    for edit in edits:
        try:
            other = meta.read_manifest(" ".join(edit))
        except ObjectCorrupt:
            continue
        with pytest.raises(ObjectCorrupt):
            other.verify(dk, v["bucket"], v["key"])
    for bad in [None, "", "1 2 3", "x 5242976:1 AAAA AAAA", v["manifest"] + " extra", "9" * 300,
                v["manifest"].replace(":", "*")]:
        with pytest.raises(ObjectCorrupt):
            meta.read_manifest(bad)
    # A manifest made for another upload (another base nonce) under the same data key.
    other_upload = dataclasses.replace(meta, base_nonce=bytes(12))
    with pytest.raises(ObjectCorrupt):
        other_upload.signed(dk, v["bucket"], v["key"]).read_manifest(v["manifest"]).verify(
            dk, v["bucket"], v["key"])


def test_v4_metadata_holds_no_size_or_layout_and_is_multipart_only() -> None:
    v = V4["objects"][0]
    for name, value in (("size", "5"), ("layout", "16*1"), ("parts", "AAAA")):
        with pytest.raises(ObjectCorrupt):
            ObjectMeta.decode({**v["headers"], f"x-amz-meta-ssegw-{name}": value})
    single = {k: val for k, val in v["headers"].items() if k != "x-amz-meta-ssegw-mp"}
    with pytest.raises(ObjectCorrupt):
        ObjectMeta.decode(single)


def test_manifest_fits_one_tag() -> None:
    # The biggest object S3 allows (10,000 parts of 5 GiB but the last), in one tag.
    worst = (16 + sealed_size(5 * 1024**3),) * 9_999 + (16 + sealed_size(1),)
    assert manifest_fits(worst)
    ragged = tuple(16 + sealed_size(5 * 1024**2 + i) for i in range(1, 40))
    assert not manifest_fits(ragged)
    meta = ObjectMeta(Algorithm.AES_256_GCM, b"k", bytes(12), None, "kid", "aws:kms", multipart=True,
                      format=FORMAT_VERSION_4)
    from gateway.s3.multipart import Layout

    text = meta.with_manifest(os.urandom(32), Layout(worst, header=16).size, worst, bytes(32)).manifest()
    assert len(text) <= MAX_TAG_VALUE
