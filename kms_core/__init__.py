"""Embedded Key Management Service: key lifecycle, key stores and the cryptographic API.

Layers, bottom up: pure formats and state machines (`blob`, `states`, `enc_context`), key stores
(`keystore/`), metadata (`models`, `db`), the HTTP-free service (`service`: a front over the key
repository `repository` and the operation modules of `ops/`), and the product-facing client
interface (`client`). `kms_core` never imports `gateway` or `adapters`.
"""
