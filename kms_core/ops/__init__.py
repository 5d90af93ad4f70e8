"""The KMS service's operations, one module per concern, each a class handed the collaborators it
uses (the `KeyRepository`, and where needed another operation object):

- `crypto`: encrypt, decrypt, data keys, re-encryption of symmetric blobs (the hot path);
- `keys`: creating, describing, listing keys, their states and the products' default keys;
- `aliases`: alias management;
- `rotation`: rotation policies and on-demand rotation;
- `imports`: imported key material (BYOK);
- `asymmetric`: key pairs, versions, signatures, public-key encryption, data key export;
- `trash`: unlinking and destroying key material exactly once, across processes;
- `due`: the scheduler's due work (rotations, destruction after the deletion window, expiry).

`kms_core.service.KmsService` is the front that callers use: it builds these and delegates,
and marks each public call as an `@operation` (frozen-account gate, audit, metering).
"""
