"""The filesystem master key and the KMS: init seals it, mount unseals it (the one KMS call of a
mount), rekey re-seals it under another CMK without the plaintext leaving the KMS."""

from __future__ import annotations

import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from adapters.file.backing import write_diriv
from adapters.file.config import CONFIG_NAME, ConfigError, FsConfig, decode_config, encode_config
from adapters.file.contentenc import MASTER_KEY_LEN
from adapters.file.errors import FsError as FsError
from kms_core.client import KmsClient

PRODUCT = "sfs"


@dataclass(frozen=True)
class Unlocked:
    config: FsConfig
    master_key: bytes

    def __repr__(self) -> str:
        return f"Unlocked(fs_id={self.config.fs_id!r})"


def config_path(backing: Path) -> Path:
    return backing / CONFIG_NAME


def load_config(backing: Path) -> FsConfig:
    try:
        return decode_config(config_path(backing).read_bytes())
    except FileNotFoundError:
        raise FsError(f"{backing} is not an encrypted filesystem (no {CONFIG_NAME})") from None
    except ConfigError as e:
        raise FsError(str(e)) from e


def write_config(backing: Path, cfg: FsConfig) -> None:
    """Atomic replace: a crash leaves the old config or the new one, never a torn file."""
    path = config_path(backing)
    tmp = path.with_name(f"{CONFIG_NAME}.tmp-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        os.write(fd, encode_config(cfg))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(backing, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def init_filesystem(backing: Path, client: KmsClient, key: str | None = None) -> FsConfig:
    backing.mkdir(parents=True, exist_ok=True)
    if any(backing.iterdir()):
        raise FsError(f"{backing} is not empty; init needs an empty directory")
    fs_id = uuid.uuid4().hex
    dk = client.generate_data_key(PRODUCT, key, context={"sfs:filesystem": fs_id},
                                  length=MASTER_KEY_LEN)
    cfg = FsConfig(fs_id=fs_id, key_id=dk.key_id, sealed_master_key=dk.sealed,
                   created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    write_diriv(str(backing))
    write_config(backing, cfg)
    return cfg


def unlock(backing: Path, client: KmsClient) -> Unlocked:
    cfg = load_config(backing)
    dk = client.decrypt_data_key(cfg.sealed_master_key, cfg.encryption_context())
    if dk.plaintext is None or len(dk.plaintext) != MASTER_KEY_LEN:
        raise FsError("the KMS returned no usable master key")
    return Unlocked(cfg, dk.plaintext)


def prepare_for_writing(backing: Path, cfg: FsConfig) -> FsConfig:
    """Before a mount writes files: record today's content version in the config."""
    new = cfg.writing_current()
    if new != cfg:
        write_config(backing, new)
    return new


def rekey(backing: Path, client: KmsClient, to_key: str) -> FsConfig:
    cfg = load_config(backing)
    ctx = cfg.encryption_context()
    dk = client.reseal_data_key(cfg.sealed_master_key, PRODUCT, to_key,
                                source_context=ctx, context=ctx)
    new = cfg.resealed(dk.key_id, dk.sealed)
    write_config(backing, new)
    return new
