"""The XML request bodies the proxy accepts: size caps, a safe parser, and one validator each.

Every XML body is read whole only after its declared length passed the operation's cap, checked
against its signed payload hash (the caller reads it with `S3Proxy.buffered_body`), then parsed
here and validated into plain values. The proxy acts on those values and writes its own XML to
the backend: nothing the client sent is forwarded as is, so a malformed body is answered
`MalformedXML` by us and never reaches the backend.

The parser is expat driven by hand: no DTD, no entity declarations (so no entity expansion, no
external entities), a bounded depth and element count. Elements come back as ElementTree
elements with `{namespace}name` tags; the S3 namespace and no namespace are both accepted, as
S3 does.
"""

from __future__ import annotations

import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.parsers import expat

from gateway.s3.backend import S3_NS
from gateway.s3.errors import S3Error

# Caps on the bytes read for each body. S3 allows 1,000 keys of up to 1,024 bytes in a
# DeleteObjects request and 10,000 parts in a CompleteMultipartUpload; the rest are small.
MAX_DELETE_KEYS = 1000
MAX_PARTS = 10_000
MAX_KEY_BYTES = 1024
DELETE_LIMIT = 2 * 1024 * 1024
COMPLETE_LIMIT = 4 * 1024 * 1024
SMALL_LIMIT = 64 * 1024  # configuration bodies (encryption, CreateBucket, tagging, ...)
MAX_DEPTH = 16
MAX_ELEMENTS = 100_000

_NS = f"{{{S3_NS}}}"


def malformed(detail: str = "") -> S3Error:
    message = ("The XML you provided was not well-formed or did not validate against our "
               "published schema")
    return S3Error("MalformedXML", f"{message}{f' ({detail})' if detail else ''}", 400)


def too_large(limit: int) -> S3Error:
    return S3Error("MaxMessageLengthExceeded",
                   f"Your request was too big: this request body may be at most {limit} bytes.", 400)


class _Refused(Exception):
    pass


def parse(body: bytes, root: str) -> ET.Element:
    """The document element of `body`, which must be named `root`; MalformedXML otherwise."""
    if not body.strip():
        raise malformed("the body is empty")
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    depth = count = 0

    def refuse(*_: object) -> None:
        raise _Refused("DTDs and entity declarations are not accepted")

    def refuse_external(*_: object) -> int:
        raise _Refused("external entities are not accepted")

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth, count
        depth += 1
        count += 1
        if depth > MAX_DEPTH or count > MAX_ELEMENTS:
            raise _Refused("the document nests too deep or has too many elements")
        # Attributes are kept (xsi:type of an ACL's Grantee) with the same {namespace}name form.
        builder.start("{" + name if "}" in name else name,
                      {("{" + k if "}" in k else k): v for k, v in attrs.items()})

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end("{" + name if "}" in name else name)

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse_external
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(body, True)
        element = builder.close()
    except _Refused as e:
        raise malformed(str(e)) from None
    except (expat.ExpatError, AssertionError, ValueError):
        raise malformed() from None
    if local(element) != root or element.tag not in (root, _NS + root):
        raise malformed(f"the document element must be {root}")
    return element


def local(el: ET.Element) -> str:
    return el.tag.rsplit("}", 1)[-1]


def children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if local(c) == name]


def only_child(el: ET.Element, name: str, *, required: bool = False) -> ET.Element | None:
    found = children(el, name)
    if len(found) > 1:
        raise malformed(f"{local(el)} has more than one {name}")
    if not found:
        if required:
            raise malformed(f"{local(el)} needs a {name}")
        return None
    return found[0]


def text(el: ET.Element, name: str, *, required: bool = False) -> str | None:
    """The text of `el`'s single child `name` (stripped), None when absent."""
    child = only_child(el, name, required=required)
    if child is None:
        return None
    if len(child):
        raise malformed(f"{name} must hold text, not elements")
    return (child.text or "").strip()


def boolean(el: ET.Element, name: str, default: bool = False) -> bool:
    value = text(el, name)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise malformed(f"{name} must be true or false")
    return value.lower() == "true"


def _only(el: ET.Element, allowed: set[str]) -> None:
    for c in el:
        if local(c) not in allowed:
            raise malformed(f"{local(el)} does not take a {local(c)}")


# ---------------------------------------------------------------------- the bodies we accept


@dataclass(frozen=True)
class DeleteRequest:
    objects: list[tuple[str, str | None]]  # (key, version id)
    quiet: bool


def delete_objects(body: bytes) -> DeleteRequest:
    root = parse(body, "Delete")
    _only(root, {"Object", "Quiet"})
    objects: list[tuple[str, str | None]] = []
    for obj in children(root, "Object"):
        _only(obj, {"Key", "VersionId", "ETag", "LastModifiedTime", "Size"})
        key = only_child(obj, "Key", required=True)
        assert key is not None
        # Keys are taken as sent (spaces matter in keys); only the version id is stripped.
        if len(key) or not key.text:
            raise malformed("every Object needs a non-empty Key")
        if len(key.text.encode()) > MAX_KEY_BYTES:
            raise S3Error("KeyTooLongError", "Your key is too long", 400)
        objects.append((key.text, text(obj, "VersionId") or None))
    if not objects:
        raise malformed("Delete needs at least one Object")
    if len(objects) > MAX_DELETE_KEYS:
        raise malformed(f"Delete may name at most {MAX_DELETE_KEYS} objects")
    return DeleteRequest(objects, boolean(root, "Quiet"))


@dataclass(frozen=True)
class CompletedPart:
    number: int
    etag: str | None
    checksums: dict[str, str]  # ChecksumCRC32 etc. as sent


_PART_FIELDS = {"PartNumber", "ETag", "ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME",
                "ChecksumSHA1", "ChecksumSHA256"}


def complete_multipart(body: bytes) -> list[CompletedPart]:
    """The parts listed, in the order sent (order and existence are the caller's checks)."""
    root = parse(body, "CompleteMultipartUpload")
    _only(root, {"Part"})
    parts: list[CompletedPart] = []
    for p in children(root, "Part"):
        _only(p, _PART_FIELDS)
        number = text(p, "PartNumber", required=True)
        assert number is not None
        if not number.isdigit() or not 1 <= int(number) <= MAX_PARTS:
            raise malformed("PartNumber must be an integer from 1 to 10000")
        checksums = {local(c): (c.text or "").strip() for c in p if local(c).startswith("Checksum")}
        parts.append(CompletedPart(int(number), text(p, "ETag"), checksums))
    if not parts:
        raise malformed("CompleteMultipartUpload needs at least one Part")
    if len(parts) > MAX_PARTS:
        raise malformed(f"at most {MAX_PARTS} parts")
    return parts


@dataclass(frozen=True)
class EncryptionRule:
    sse: str
    kms_key: str | None
    bucket_key: bool


def bucket_encryption(body: bytes) -> EncryptionRule:
    root = parse(body, "ServerSideEncryptionConfiguration")
    _only(root, {"Rule"})
    rule = only_child(root, "Rule", required=True)
    assert rule is not None
    _only(rule, {"ApplyServerSideEncryptionByDefault", "BucketKeyEnabled", "BlockedEncryptionTypes"})
    default = only_child(rule, "ApplyServerSideEncryptionByDefault", required=True)
    assert default is not None
    _only(default, {"SSEAlgorithm", "KMSMasterKeyID"})
    sse = text(default, "SSEAlgorithm", required=True)
    key = text(default, "KMSMasterKeyID") or None
    return encryption_rule(sse, key, boolean(rule, "BucketKeyEnabled"))


def encryption_rule(sse: str | None, key: str | None, bucket_key: bool) -> EncryptionRule:
    """A bucket's default encryption, checked: from PutBucketEncryption's XML or the console."""
    if sse not in ("AES256", "aws:kms"):
        raise S3Error("InvalidArgument", "SSEAlgorithm must be AES256 or aws:kms", 400)
    if key and sse != "aws:kms":
        raise S3Error("InvalidArgument", "KMSMasterKeyID is allowed only with aws:kms", 400)
    return EncryptionRule(sse, key, bucket_key)


def create_bucket(body: bytes) -> str | None:
    """The LocationConstraint of a CreateBucket body (None: no body or none given)."""
    if not body.strip():
        return None
    root = parse(body, "CreateBucketConfiguration")
    _only(root, {"LocationConstraint", "Location", "Bucket", "Tags"})
    return text(root, "LocationConstraint") or None


def versioning(body: bytes) -> str:
    """The Status of a VersioningConfiguration: Enabled or Suspended (MFA delete: 501)."""
    root = parse(body, "VersioningConfiguration")
    _only(root, {"Status", "MfaDelete", "MFADelete"})
    mfa = text(root, "MfaDelete") or text(root, "MFADelete")
    if mfa == "Enabled":
        raise S3Error("NotImplemented", "MFA delete is not implemented by this gateway", 501)
    if mfa not in (None, "Disabled"):
        raise malformed("MfaDelete must be Enabled or Disabled")
    status = text(root, "Status")
    if status not in ("Enabled", "Suspended"):
        raise malformed("Status must be Enabled or Suspended")
    return status


@dataclass(frozen=True)
class Grant:
    grantee_type: str  # CanonicalUser, Group, AmazonCustomerByEmail
    grantee: str  # the ID, URI or EmailAddress named
    permission: str


_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


def access_control_policy(body: bytes) -> list[Grant]:
    """The grants of an AccessControlPolicy (PutBucketAcl, PutObjectAcl)."""
    root = parse(body, "AccessControlPolicy")
    _only(root, {"Owner", "AccessControlList"})
    acl = only_child(root, "AccessControlList", required=True)
    assert acl is not None
    _only(acl, {"Grant"})
    grants = []
    for g in children(acl, "Grant"):
        _only(g, {"Grantee", "Permission"})
        grantee = only_child(g, "Grantee", required=True)
        assert grantee is not None
        _only(grantee, {"ID", "DisplayName", "URI", "EmailAddress"})
        permission = text(g, "Permission", required=True)
        kind = grantee.get(_XSI_TYPE) or ("Group" if text(grantee, "URI") else
                                          "AmazonCustomerByEmail" if text(grantee, "EmailAddress") else
                                          "CanonicalUser")
        who = text(grantee, "ID") or text(grantee, "URI") or text(grantee, "EmailAddress") or ""
        assert permission is not None
        grants.append(Grant(kind, who, permission))
    return grants


MAX_TAGS = 10  # S3's limit on an object's tags
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256


def _invalid_tag(message: str) -> S3Error:
    return S3Error("InvalidTag", message, 400)


def _tag_text(text: str) -> bool:
    """S3's tag alphabet: letters, numbers and spaces in any script, and _ . : / = + - @."""
    return all(c in "_.:/=+-@" or unicodedata.category(c)[0] in "LNZ" for c in text)


def too_many_tags(limit: int, why: str = "") -> S3Error:
    """S3's answer to more tags than an object may have (BadRequest, not InvalidTag)."""
    return S3Error("BadRequest", f"Object tags cannot be greater than {limit}{why}", 400)


def object_tagging(body: bytes) -> dict[str, str]:
    """The tags of a PutObjectTagging body, in order, as S3 validates them: at most ten, keys
    of 1-128 characters and values of up to 256, no key twice, none under `aws:`."""
    root = parse(body, "Tagging")
    _only(root, {"TagSet"})
    tag_set = only_child(root, "TagSet", required=True)
    assert tag_set is not None
    _only(tag_set, {"Tag"})
    tags: dict[str, str] = {}
    for tag in children(tag_set, "Tag"):
        _only(tag, {"Key", "Value"})
        key_el, value_el = only_child(tag, "Key", required=True), only_child(tag, "Value", required=True)
        assert key_el is not None and value_el is not None
        if len(key_el) or len(value_el):
            raise malformed("a tag's Key and Value hold text, not elements")
        key, value = key_el.text or "", value_el.text or ""  # not stripped: spaces are part of a tag
        if not key or len(key) > MAX_TAG_KEY:
            raise _invalid_tag(f"The TagKey you have provided is invalid: 1 to {MAX_TAG_KEY} characters")
        if len(value) > MAX_TAG_VALUE:
            raise _invalid_tag(f"The TagValue you have provided is too long, max {MAX_TAG_VALUE}")
        if not (_tag_text(key) and _tag_text(value)):
            raise _invalid_tag("The TagKey or TagValue you have provided has characters a tag may not hold")
        if key.startswith("aws:"):
            raise _invalid_tag("Your TagKey cannot be prefixed with aws:")
        if key in tags:
            raise _invalid_tag("Cannot provide multiple Tags with the same key")
        tags[key] = value
    if len(tags) > MAX_TAGS:
        raise too_many_tags(MAX_TAGS)
    return tags
