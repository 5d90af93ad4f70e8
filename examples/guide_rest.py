"""The guide's REST call, as a client written from the guide makes it: shared by the examples.

POST /v1/kms/<operation> with camelCase JSON, signed with SigV4 (service `kms`) by the access
key in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, for the pool in AWS_DEFAULT_REGION. The reply
is the guide's envelope: `statusCode` 800 and the result in `returnObj.result`, or 900 with
`errorCode` and `message`.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def kms(url: str, operation: str, **fields: object) -> dict[str, Any]:
    """POST /v1/kms/<operation>, SigV4-signed; returns `returnObj.result` (the guide's reply
    shape), or exits with the error's code and message (statusCode 900)."""
    body = json.dumps(fields).encode()
    request = AWSRequest(method="POST", url=f"{url}/v1/kms/{operation}", data=body,
                         headers={"Content-Type": "application/json"})
    creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    SigV4Auth(creds, "kms", os.environ.get("AWS_DEFAULT_REGION", "cn-east-1")).add_auth(request)
    try:
        with urllib.request.urlopen(urllib.request.Request(
                request.url, data=body, headers=dict(request.headers.items()), method="POST")) as resp:
            reply = json.load(resp)
    except urllib.error.HTTPError as e:
        reply = json.load(e)
    if reply["statusCode"] != 800:
        sys.exit(f"{operation}: {reply['errorCode']}: {reply['message']}")
    result: dict[str, Any] = reply["returnObj"]["result"]
    return result
