"""One error root for the file adapter, mapped to errno by attribute at the FUSE edge; and the
config's content version raised by a mount."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest

from adapters.file import errors
from adapters.file.config import FsConfig, decode_config
from adapters.file.fuselib import FuseOSError, _answering_errno
from adapters.file.masterkey import config_path, prepare_for_writing, write_config


def _all_errors() -> list[type[errors.SfsError]]:
    return [c for c in vars(errors).values()
            if isinstance(c, type) and issubclass(c, errors.SfsError)]


def test_every_error_has_one_root_an_errno_and_its_own_code() -> None:
    found = _all_errors()
    assert len(found) >= 10
    codes = [c.code for c in found]
    assert len(set(codes)) == len(codes)
    for c in found:
        assert isinstance(c.errno, int) and c.errno > 0


@pytest.mark.parametrize(("error", "expected"), [
    (errors.NameTooLong("x"), errno.ENAMETOOLONG),
    (errors.InvalidName("x"), errno.EINVAL),
    (errors.BadName("x"), errno.EIO),
    (errors.DamagedFile(7, errors.BlockAuthError(3)), errno.EIO),
    (errors.DamagedDirectory("x"), errno.EIO),
])
def test_the_fuse_edge_answers_the_errno_an_error_carries(
    error: errors.SfsError, expected: int, caplog: pytest.LogCaptureFixture
) -> None:
    def read(path: str) -> bytes:
        raise error

    wrapped = _answering_errno(read)
    assert wrapped.__name__ == "read"  # mfusepy treats some operations by name
    with caplog.at_level(logging.DEBUG, "ssegw.fs"), pytest.raises(FuseOSError) as e:
        wrapped("/x")
    assert e.value.errno == expected
    assert [r.getMessage() for r in caplog.records] == [f"read: {error.message}"]
    assert caplog.records[0].levelno == (logging.ERROR if expected == errno.EIO
                                         else logging.DEBUG)
    assert caplog.records[0].exc_info is None  # one line, no traceback


def test_damaged_file_names_inode_and_block() -> None:
    e = errors.DamagedFile(1234, errors.BlockAuthError(5))
    assert e.message == "inode 1234: block 5 failed authentication"


def test_a_mount_records_content_version_2_in_the_config(tmp_path: Path) -> None:
    v1 = FsConfig(fs_id="0123456789abcdef0123456789abcdef", key_id="k",
                  sealed_master_key=b"sealed", created_at="2026-01-01T00:00:00Z",
                  content_version=1)
    write_config(tmp_path, v1)
    got = prepare_for_writing(tmp_path, decode_config(config_path(tmp_path).read_bytes()))
    assert got.content_version == 2
    doc = json.loads(config_path(tmp_path).read_text())
    assert doc["contentEncryption"]["version"] == 2
    assert doc["sealedMasterKey"] == "c2VhbGVk" and doc["fsId"] == v1.fs_id
    before = config_path(tmp_path).stat().st_ino
    assert prepare_for_writing(tmp_path, got) == got  # already current: not rewritten
    assert config_path(tmp_path).stat().st_ino == before
    doc["contentEncryption"]["version"] = 3
    with pytest.raises(errors.ConfigError):
        decode_config(json.dumps(doc).encode())
