"""Run ONCE per format version to freeze tests/vectors/sfs_v<N>.json and the example filesystem
under tests/adapters/file/example_fs_v<N>/. Never regenerate a shipped version: the tests exist
to prove that today's code still reads what was written then.

    PYTHONPATH=. .venv/bin/python -m tests.adapters.file.make_vectors 2

Version 1 was frozen by this script's earlier form (see git history); today's code writes
version 2 only, so only version 2 can be made here.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from adapters.file import contentenc as ce
from adapters.file.config import FsConfig, encode_config
from adapters.file.names import NameCipher

HERE = Path(__file__).parent
VERSION = 2
VECTORS = HERE.parents[1] / "vectors" / f"sfs_v{VERSION}.json"
EXAMPLE = HERE / f"example_fs_v{VERSION}"
MASTER = bytes(range(32))  # a test key, never used for real data


def vectors() -> dict[str, object]:
    fid = bytes(range(100, 116))
    cipher = ce.FileCipher(MASTER, fid)
    names = NameCipher(MASTER)
    diriv = bytes(range(200, 216))
    blocks = []
    cases = ((0, bytes(range(256)) * 16, False), (0, bytes(range(256)) * 16, True),
             (1, b"partial block", True), (9, b"z", True), (0, b"", True))
    for block, plain, final in cases:
        nonce = hashlib.sha256(b"nonce%d%d%d" % (block, final, len(plain))).digest()[:12]
        blocks.append({"block": block, "final": final, "plaintext": plain.hex(),
                       "nonce": nonce.hex(),
                       "record": cipher.encrypt_blocks(block, plain, nonce, final=final).hex()})
    # A whole file: two full blocks and a final partial one, with fixed nonces.
    body = bytes(range(256)) * 32 + b"the end"
    nonces = b"".join(hashlib.sha256(b"file%d" % i).digest()[:12] for i in range(3))
    file_vector = {"plaintext": body.hex(), "nonces": nonces.hex(),
                   "backing": (ce.encode_header(fid)
                               + cipher.encrypt_blocks(0, body, nonces, final=True)).hex()}
    name_vectors = []
    for name in (b"a", b"hello.txt", "\u00e9t\u00e9 2024.pdf".encode(), b"n" * 159, b"L" * 255):
        backing, long = names.backing_name(name, diriv)
        name_vectors.append({"name": name.hex(), "backing": backing, "long": long})
    cfg = FsConfig(fs_id="0123456789abcdef0123456789abcdef", key_id="key-uuid",
                   sealed_master_key=b"sealed-bytes", created_at="2026-01-01T00:00:00Z")
    return {
        "masterKey": MASTER.hex(), "fileId": fid.hex(), "dirIv": diriv.hex(),
        "header": ce.encode_header(fid).hex(),
        "version": VERSION,
        "blocks": blocks,
        "file": file_vector,
        "sizes": [[p, ce.cipher_size(p)] for p in (0, 1, 4095, 4096, 4097, 8192, 1 << 20)],
        "names": name_vectors,
        "symlink": {"target": "../some/where", "nonce": "00" * 12,
                    "stored": names.encrypt_target(b"../some/where", bytes(12))},
        "config": encode_config(cfg).decode(),
    }


def _serve(backing: str, mnt: str) -> None:
    from adapters.file.fusefs import serve

    serve(backing, mnt, MASTER, fsname="example")


def example_fs() -> dict[str, object]:
    from adapters.file.backing import write_diriv

    backing = EXAMPLE / "backing"
    backing.mkdir(parents=True)
    write_diriv(str(backing))
    with tempfile.TemporaryDirectory() as mnt:
        p = multiprocessing.get_context("fork").Process(target=_serve, args=(str(backing), mnt))
        p.start()
        while not os.path.ismount(mnt):
            time.sleep(0.05)
        m = Path(mnt)
        (m / "empty").write_bytes(b"")
        (m / "one").write_bytes(b"1")
        (m / "block").write_bytes(bytes(range(256)) * 16)
        (m / "docs").mkdir()
        (m / "docs" / "readme.txt").write_text(f"the frozen example filesystem, format v{VERSION}\n"
                                                * 200)
        (m / "docs" / ("long-" * 40 + ".md")).write_text("a long name\n")
        with open(m / "docs" / "sparse", "wb") as f:
            f.seek(3 * 4096 + 10)
            f.write(b"end")
        os.symlink("docs/readme.txt", m / "link")
        (m / "docs" / "nested").mkdir()
        (m / "docs" / "nested" / "deep.bin").write_bytes(hashlib.sha256(b"x").digest() * 300)
        (m / "two-blocks").write_bytes(bytes(range(256)) * 32)  # ends on a block boundary
        (m / "shrunk").write_bytes(b"s" * 20000)
        os.truncate(m / "shrunk", 3 * 4096)  # its new last block re-sealed as final
        (m / "grown").write_bytes(b"g" * 5000)
        os.truncate(m / "grown", 5 * 4096 + 1)  # old last block re-sealed as not final
        with open(m / "appended", "wb") as f:
            for i in range(5):
                f.write(bytes([65 + i]) * 3000)
                f.flush()
        expected: dict[str, object] = {}
        for root, dirs, files in os.walk(m):
            for n in dirs + files:
                q = Path(root) / n
                rel = "/" + str(q.relative_to(m))
                if q.is_symlink():
                    expected[rel] = {"symlink": os.readlink(q)}
                elif q.is_dir():
                    expected[rel] = {"dir": True}
                else:
                    data = q.read_bytes()
                    expected[rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        subprocess.run(["fusermount3", "-u", mnt], check=True)
        p.join()
    return {"masterKey": MASTER.hex(), "entries": expected}


def main() -> None:
    if sys.argv[1:] != [str(VERSION)]:
        sys.exit(f"usage: make_vectors {VERSION} (the only version today's code writes)")
    if VECTORS.exists() or EXAMPLE.exists():
        sys.exit("vectors already frozen; never regenerate a shipped format version")
    VECTORS.write_text(json.dumps(vectors(), indent=1) + "\n")
    info = example_fs()
    (EXAMPLE / "expected.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
