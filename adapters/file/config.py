"""The filesystem config at the backing root (`sfs.conf`). Pure: no I/O.

JSON, so an operator can read it; `version` first. It holds the filesystem id and the master
key sealed by the KMS with the encryption context {"sfs:filesystem": <fs id>}: a sealed key
copied into another filesystem's config does not unseal there, and the fs id cannot be edited
without the KMS refusing the key. Re-keying replaces only `sealedMasterKey` and `cmkUuid`.

`contentEncryption.version` is the newest file content version (`contentenc`) the tree may
hold: a mount that writes version-2 files raises it from 1 to 2, so code that reads only
version 1 refuses the whole filesystem instead of failing file by file.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from adapters.file.contentenc import BLOCK_SIZE, HEADER_VERSION, READABLE_VERSIONS
from adapters.file.errors import ConfigError as ConfigError

CONFIG_NAME = "sfs.conf"
CONFIG_FORMAT = "ssegw-sfs"
CONFIG_VERSION = 1
CONTEXT_KEY = "sfs:filesystem"
_FS_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class FsConfig:
    fs_id: str
    key_id: str
    sealed_master_key: bytes = field(repr=False)
    created_at: str
    version: int = CONFIG_VERSION
    content_version: int = HEADER_VERSION
    block_size: int = BLOCK_SIZE

    def encryption_context(self) -> dict[str, str]:
        return encryption_context(self.fs_id)

    def resealed(self, key_id: str, sealed: bytes) -> FsConfig:
        return replace(self, key_id=key_id, sealed_master_key=sealed)

    def writing_current(self) -> FsConfig:
        """This config once files of today's content version are written into the tree."""
        return replace(self, content_version=max(self.content_version, HEADER_VERSION))


def encryption_context(fs_id: str) -> dict[str, str]:
    return {CONTEXT_KEY: fs_id}


def encode_config(cfg: FsConfig) -> bytes:
    doc: dict[str, Any] = {
        "version": cfg.version,
        "format": CONFIG_FORMAT,
        "fsId": cfg.fs_id,
        "cmkUuid": cfg.key_id,
        "sealedMasterKey": base64.b64encode(cfg.sealed_master_key).decode("ascii"),
        "contentEncryption": {"version": cfg.content_version, "cipher": "AES-256-GCM",
                              "blockSize": cfg.block_size, "kdf": "HKDF-SHA256"},
        "nameEncryption": {"cipher": "AES-SIV", "encoding": "base64url", "dirIv": True,
                           "longNames": True},
        "creationDate": cfg.created_at,
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def decode_config(data: bytes) -> FsConfig:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{CONFIG_NAME} is not JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != CONFIG_FORMAT:
        raise ConfigError(f"not an {CONFIG_FORMAT} config")
    if doc.get("version") != CONFIG_VERSION:
        raise ConfigError(f"unknown config version {doc.get('version')!r}")
    try:
        content = doc["contentEncryption"]
        cfg = FsConfig(
            fs_id=str(doc["fsId"]), key_id=str(doc["cmkUuid"]),
            sealed_master_key=base64.b64decode(doc["sealedMasterKey"], validate=True),
            created_at=str(doc["creationDate"]), version=CONFIG_VERSION,
            content_version=int(content["version"]), block_size=int(content["blockSize"]),
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as e:
        raise ConfigError(f"{CONFIG_NAME} is missing or has a bad field: {e}") from e
    if not _FS_ID.match(cfg.fs_id):
        raise ConfigError("bad fsId")
    if cfg.content_version not in READABLE_VERSIONS or cfg.block_size != BLOCK_SIZE:
        raise ConfigError("unsupported content encryption parameters")
    return cfg
