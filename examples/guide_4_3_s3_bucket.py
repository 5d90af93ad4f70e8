"""Guide 4.3 (object storage): server-side encryption of a bucket through the gateway, with boto3.

Two buckets, as the console's "服务端加密" offers them:
  * encrypted-with-my-key   default encryption (PutBucketEncryption) with a CMK you chose
  * encrypted-by-default    SSE-S3 (AES256): the product's default key `alias_oss`, created on
                            first use, free of key-hosting fees
The proxy encrypts every object before it reaches the backend and decrypts on GET: boto3 sees
plaintext, the backend only ciphertext.

    python examples/guide_4_3_s3_bucket.py --s3-url http://127.0.0.1:9000 --kms-url http://127.0.0.1:9100
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid

import boto3
from guide_rest import kms  # the guide's REST call (examples/guide_rest.py)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kms-url", default=os.environ.get("SSEGW_KMS_URL", "http://127.0.0.1:9100"))
    p.add_argument("--s3-url", default=os.environ.get("SSEGW_S3_URL", "http://127.0.0.1:9000"))
    a = p.parse_args()
    s3 = boto3.client("s3", endpoint_url=a.s3_url)  # credentials and region from AWS_* variables
    suffix = uuid.uuid4().hex[:8]

    # A bucket whose objects are sealed under a key you chose (and pay hosting for).
    mine = kms(a.kms_url, "createKey", description="guide 4.3: bucket key")["cmkUuid"]
    chosen = f"encrypted-with-my-key-{suffix}"
    s3.create_bucket(Bucket=chosen)
    s3.put_bucket_encryption(Bucket=chosen, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": mine}}]})
    s3.put_object(Bucket=chosen, Key="report.txt", Body=b"quarterly numbers")
    head = s3.head_object(Bucket=chosen, Key="report.txt")
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].endswith(mine)
    assert s3.get_object(Bucket=chosen, Key="report.txt")["Body"].read() == b"quarterly numbers"

    # A bucket on the default key: ask for SSE-S3 (or say nothing at all).
    default = f"encrypted-by-default-{suffix}"
    s3.create_bucket(Bucket=default)
    s3.put_object(Bucket=default, Key="notes.txt", Body=b"meeting notes", ServerSideEncryption="AES256")
    assert s3.get_object(Bucket=default, Key="notes.txt")["Body"].read() == b"meeting notes"
    oss = kms(a.kms_url, "describeKey", cmkUuid="alias_oss")  # made on first use
    assert oss["defaultKey"] and oss["defaultProduct"] == "oss"

    # Disable the chosen key and its objects are unreadable (a clear S3 error, never garbage).
    kms(a.kms_url, "disableKey", cmkUuid=mine)
    try:
        s3.get_object(Bucket=chosen, Key="report.txt")["Body"].read()
        sys.exit("a disabled key still decrypted")
    except s3.exceptions.ClientError as e:
        refused = e.response["Error"]["Code"]
    kms(a.kms_url, "enableKey", cmkUuid=mine)
    print(json.dumps({"chosenBucket": chosen, "chosenKey": mine, "defaultBucket": default,
                      "defaultKey": oss["cmkUuid"], "whileDisabled": refused}))


if __name__ == "__main__":
    main()
