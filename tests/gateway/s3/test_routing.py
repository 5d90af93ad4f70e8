"""The routing table: every S3 sub-resource, every method, every level: its handler or 501."""

from __future__ import annotations

from urllib.parse import quote

import botocore.session
import pytest

from gateway.s3 import routing
from gateway.s3.app import handlers
from gateway.s3.errors import S3Error
from tests.gateway.s3.conftest import S3Stack, bucket_name, error_of, signed_request

# Written out here, not derived from the table: what each sub-resource alone must reach.
SERVED: dict[tuple[str, str, str], str] = {
    ("GET", "bucket", "versions"): "ListObjectVersions",
    ("GET", "bucket", "uploads"): "ListMultipartUploads",
    ("GET", "bucket", "location"): "GetBucketLocation",
    ("POST", "bucket", "delete"): "DeleteObjects",
    ("PUT", "bucket", "encryption"): "PutBucketEncryption",
    ("GET", "bucket", "encryption"): "GetBucketEncryption",
    ("DELETE", "bucket", "encryption"): "DeleteBucketEncryption",
    ("PUT", "bucket", "versioning"): "PutBucketVersioning",
    ("GET", "bucket", "versioning"): "GetBucketVersioning",
    ("PUT", "bucket", "acl"): "PutBucketAcl",
    ("GET", "bucket", "acl"): "GetBucketAcl",
    ("GET", "object", "versionId"): "GetObject",
    ("GET", "object", "partNumber"): "GetObject",
    ("HEAD", "object", "versionId"): "HeadObject",
    ("HEAD", "object", "partNumber"): "HeadObject",
    ("DELETE", "object", "versionId"): "DeleteObject",
    ("POST", "object", "uploads"): "CreateMultipartUpload",
    ("POST", "object", "uploadId"): "CompleteMultipartUpload",
    ("DELETE", "object", "uploadId"): "AbortMultipartUpload",
    ("GET", "object", "uploadId"): "ListParts",
    ("PUT", "object", "acl"): "PutObjectAcl",
    ("GET", "object", "acl"): "GetObjectAcl",
    ("GET", "object", "attributes"): "GetObjectAttributes",
    ("PUT", "object", "tagging"): "PutObjectTagging",
    ("GET", "object", "tagging"): "GetObjectTagging",
    ("DELETE", "object", "tagging"): "DeleteObjectTagging",
}
LEVELS: tuple[routing.Level, ...] = ("service", "bucket", "object")
VALUES = {"versionId": "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY", "partNumber": "1", "uploadId": "no-such-upload"}
NAMES = sorted(routing.SUBRESOURCES)


def test_the_list_covers_every_subresource_of_the_s3_model() -> None:
    model = botocore.session.get_session().get_service_model("s3")
    from_model = set()
    for name in model.operation_names:
        op = model.operation_model(name)
        query = op.http["requestUri"].partition("?")[2]
        from_model |= {p.partition("=")[0] for p in query.split("&") if p and p != "list-type=2"}
        members = op.input_shape.members if op.input_shape is not None else {}
        from_model |= {m.serialization.get("name") for m in members.values()
                       if m.serialization.get("location") == "querystring"
                       and m.serialization.get("name") in ("versionId", "partNumber", "uploadId")}
    from_model.discard("select-type")  # an argument of ?select, not an operation
    assert from_model - routing.SUBRESOURCES == set()
    # The names the issue lists, whatever the model of the day says.
    assert {"acl", "accelerate", "analytics", "attributes", "cors", "delete", "encryption",
            "intelligent-tiering", "inventory", "legal-hold", "lifecycle", "location", "logging", "metrics",
            "notification", "object-lock", "ownershipControls", "partNumber", "policy", "policyStatus",
            "publicAccessBlock", "replication", "requestPayment", "restore", "retention", "select", "tagging",
            "torrent", "uploadId", "uploads", "versioning", "versionId", "versions", "website"} <= routing.SUBRESOURCES


def test_every_route_has_a_handler_and_every_operation_a_route() -> None:
    assert {r.operation for r in routing.ROUTES} == _handler_names()


def _handler_names() -> set[str]:
    class Anything:
        def __getattr__(self, name: str) -> Anything:
            return self

    return set(handlers(Anything()))  # type: ignore[arg-type]


@pytest.mark.parametrize("method", routing.METHODS)
def test_each_subresource_alone_reaches_its_handler_or_501(method: str) -> None:
    for level in LEVELS:
        for name in NAMES:
            expected = SERVED.get((method, level, name))
            try:
                got: str | None = routing.resolve(method, level, [name], {}).operation
            except S3Error as e:
                assert (e.code, e.status) == ("NotImplemented", 501)
                assert f"?{name}" in e.message, e.message
                got = None
            assert got == expected, (method, level, name)


def test_headers_and_argument_parameters() -> None:
    copy = {"x-amz-copy-source": "/b/k"}
    assert routing.resolve("PUT", "object", [], copy).operation == "CopyObject"
    assert routing.resolve("PUT", "object", [], {}).operation == "PutObject"
    assert routing.resolve("PUT", "object", ["partNumber", "uploadId"], copy).operation == "UploadPartCopy"
    assert routing.resolve("PUT", "object", ["uploadId", "partNumber"], {}).operation == "UploadPart"
    # Arguments are not selectors: listing parameters, SDK hints, response overrides.
    assert routing.resolve("GET", "bucket", ["list-type", "prefix", "x-id"], {}).operation == "ListObjects"
    assert routing.resolve("GET", "bucket", ["versions", "key-marker"], {}).operation == "ListObjectVersions"
    assert routing.resolve("GET", "object", ["response-content-type", "versionId"], {}).operation == "GetObject"
    assert routing.resolve("GET", "object", ["acl", "versionId"], {}).operation == "GetObjectAcl"
    # Two selectors where one is not served: 501 naming the one that is not.
    assert routing.resolve("GET", "object", ["tagging", "versionId"], {}).operation == "GetObjectTagging"
    with pytest.raises(S3Error) as e:
        routing.resolve("GET", "object", ["tagging", "acl"], {})
    assert e.value.status == 501 and "?tagging" in e.value.message
    with pytest.raises(S3Error) as e:
        routing.resolve("POST", "bucket", [], {})
    assert e.value.status == 501 and "PostObject" in e.value.message


def test_the_walk_over_http(s3: S3Stack) -> None:
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_object(Bucket=b, Key="obj", Body=b"kept")
    paths = {"service": "/", "bucket": f"/{b}", "object": f"/{b}/walk"}
    for method in routing.METHODS:
        for level in LEVELS:
            for name in NAMES:
                query = f"{name}={quote(VALUES.get(name, ''), safe='')}"
                r = signed_request(s3, t, method, paths[level], query)
                expected = SERVED.get((method, level, name))
                where = (method, level, name, r.status, r.data[:300])
                if expected is None:
                    assert r.status == 501, where
                    if method != "HEAD":
                        err = error_of(r)
                        assert err["Code"] == "NotImplemented" and f"?{name}" in err["Message"], where
                        assert err["Resource"] == paths[level] and err["RequestId"], where
                        assert r.headers["x-amz-request-id"] == err["RequestId"]
                else:
                    # The handler answered: whatever it said, it is not the router's 501.
                    assert r.status != 501 or b"not implemented by this gateway" not in r.data, where
    # Nothing the walk sent ran another operation: the bucket, its object and its owner stand.
    assert c.get_object(Bucket=b, Key="obj")["Body"].read() == b"kept"
    assert [x["Name"] for x in c.list_buckets()["Buckets"]].count(b) == 1
    assert "Versions" not in c.list_object_versions(Bucket=b, Prefix="walk")


def test_other_methods_get_s3_xml(s3: S3Stack) -> None:
    t = s3.tenant()
    b = bucket_name()
    s3.client(t).create_bucket(Bucket=b)
    for method in ("OPTIONS", "PATCH"):
        r = signed_request(s3, t, method, f"/{b}/k")
        assert r.status == 405 and error_of(r)["Code"] == "MethodNotAllowed", (method, r.data)


def test_misrouted_requests_of_the_issue(s3: S3Stack) -> None:
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    r = signed_request(s3, t, "PUT", f"/{b}", "ownershipControls=",
                       body=b"<OwnershipControls><Rule><ObjectOwnership>BucketOwnerEnforced</ObjectOwnership>"
                            b"</Rule></OwnershipControls>")
    assert r.status == 501 and error_of(r)["Code"] == "NotImplemented"  # not CreateBucket's 409
    assert "?ownershipControls" in error_of(r)["Message"]
    c.put_object(Bucket=b, Key="k", Body=b"x")
    listed = c.list_object_versions(Bucket=b)
    assert [v["Key"] for v in listed["Versions"]] == ["k"]  # ListObjectVersions, not ListObjects
