"""Real programs inside the mount: tar + diff, SQLite, git."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
from pathlib import Path

from tests.adapters.file.conftest import Mount


def make_tree(root: Path, files: int, seed: int = 1) -> None:
    """`files` files over nested directories, sizes around block boundaries, some links."""
    rnd = random.Random(seed)
    dirs = [root]
    root.mkdir()
    for i in range(60):
        d = rnd.choice(dirs) / f"dir{i:02d}-{'n' * rnd.choice([0, 0, 0, 180])}"
        d.mkdir()
        dirs.append(d)
    sizes = [0, 1, 100, 4095, 4096, 4097, 10_000, 70_000]
    for i in range(files):
        d = rnd.choice(dirs)
        size = rnd.choice(sizes) if rnd.random() < 0.5 else rnd.randrange(0, 20_000)
        (d / f"file{i:04d}.dat").write_bytes(rnd.randbytes(size))
    for i in range(20):
        d = rnd.choice(dirs)
        os.symlink(f"../target-{i}", d / f"sym{i}")
        src = next(iter(rnd.choice(dirs[1:]).glob("file*")), None)
        if src is not None:
            os.link(src, d / f"hard{i}")


def test_tar_extract_of_2000_files_and_diff(mounted: Mount, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    make_tree(src, 2000)
    archive = tmp_path / "tree.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(tmp_path), "tree"], check=True)
    dest = mounted.mnt / "extract"
    dest.mkdir()
    subprocess.run(["tar", "-xpf", str(archive), "-C", str(dest)], check=True, timeout=300)
    diff = subprocess.run(["diff", "-r", "--no-dereference", str(src), str(dest / "tree")],
                          capture_output=True, text=True, timeout=300)
    assert diff.returncode == 0, diff.stdout[-3000:] + diff.stderr[-3000:]
    # tar restored modification times and kept hard links as links
    a = next((src).rglob("file0001.dat"))
    b = dest / "tree" / a.relative_to(src)
    assert a.stat().st_mtime_ns // 10**9 == b.stat().st_mtime_ns // 10**9
    links = [p for p in (dest / "tree").rglob("hard*")]
    assert links and all(p.stat().st_nlink >= 2 for p in links)
    # and a second pass re-creates the archive from the mount, byte for byte the same files
    again = subprocess.run(["tar", "-cf", "-", "-C", str(dest), "tree"], capture_output=True,
                           check=True)
    assert len(again.stdout) > 0


def test_sqlite_database(mounted: Mount) -> None:
    for mode in ("wal", "delete"):
        path = mounted.mnt / f"db-{mode}.sqlite"
        con = sqlite3.connect(path)
        con.execute(f"PRAGMA journal_mode={mode}")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n INTEGER)")
        rnd = random.Random(3)
        for batch in range(20):
            with con:
                con.executemany("INSERT INTO t (v, n) VALUES (?, ?)",
                                [(rnd.randbytes(rnd.randrange(10, 600)).hex(), batch)
                                 for _ in range(500)])
        with con:
            con.execute("UPDATE t SET v = 'changed' WHERE id % 7 = 0")
            con.execute("DELETE FROM t WHERE id % 11 = 0")
        con.execute("CREATE INDEX tn ON t (n)")
        con.execute("VACUUM")
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        expected = con.execute("SELECT count(*), sum(n), sum(length(v)) FROM t").fetchone()
        con.close()
        con = sqlite3.connect(path)  # a second process sees the same data
        out = subprocess.run(["sqlite3", str(path), "PRAGMA integrity_check; "
                              "SELECT count(*) || ' ' || sum(n) || ' ' || sum(length(v)) FROM t;"],
                             capture_output=True, text=True, check=True)
        assert out.stdout.split("\n")[0] == "ok"
        assert out.stdout.split("\n")[1] == " ".join(str(x) for x in expected)
        assert con.execute("SELECT count(*), sum(n), sum(length(v)) FROM t").fetchone() == expected
        con.close()


def test_git_repository(mounted: Mount) -> None:
    repo = mounted.mnt / "repo"
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_SYSTEM": "/dev/null"}

    def git(*args: str, cwd: Path = repo) -> str:
        p = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout

    git("init", "-q", str(repo), cwd=mounted.mnt)
    rnd = random.Random(5)
    for commit in range(8):
        for i in range(15):
            d = repo / f"pkg{i % 4}"
            d.mkdir(exist_ok=True)
            (d / f"mod{i}.py").write_text(f"# rev {commit}\n" + rnd.randbytes(900).hex())
        if commit % 3 == 2:
            git("mv", "pkg0", f"renamed{commit}")
        git("add", "-A")
        git("commit", "-q", "-m", f"commit {commit}")
    git("gc", "-q")
    git("fsck", "--full", "--strict")
    assert len(git("log", "--oneline").splitlines()) == 8
    git("clone", "-q", str(repo), str(mounted.mnt / "clone"), cwd=mounted.mnt)
    assert git("rev-parse", "HEAD", cwd=mounted.mnt / "clone") == git("rev-parse", "HEAD")
    assert git("status", "--porcelain") == ""
