"""A random sequence of file operations applied to the mount and to a plain directory, with the
two compared after every step (hypothesis stateful testing)."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.adapters.file.conftest import Mount

NAMES = st.sampled_from(["a", "b", "c", "sub/d", "sub/e", "x" * 200])
OFFSETS = st.one_of(st.integers(0, 20_000), st.sampled_from([4095, 4096, 4097, 8192, 65536]))
DATA = st.one_of(st.binary(min_size=0, max_size=9000), st.sampled_from([b"\0" * 4096, b"z" * 4097]))
_cases = itertools.count()


class Twin:
    """The same call on the mount and on the reference directory; same outcome required."""

    def __init__(self, enc: Path, ref: Path) -> None:
        self.enc, self.ref = enc, ref

    def both(self, fn: Callable[..., object], *args: object) -> tuple[str, object]:
        out: list[tuple[str, object]] = []
        for root in (self.enc, self.ref):
            try:
                out.append(("ok", fn(root, *args)))
            except OSError as e:
                out.append(("err", e.errno))
        assert out[0] == out[1], out
        return out[0]


def make_machine(mount: Mount, ref_base: Path) -> type[RuleBasedStateMachine]:
    class FsMachine(RuleBasedStateMachine):
        handles = Bundle("handles")

        def __init__(self) -> None:
            super().__init__()
            n = next(_cases)
            self.t = Twin(mount.mnt / f"case{n}", ref_base / f"case{n}")
            for root in (self.t.enc, self.t.ref):
                (root / "sub").mkdir(parents=True)
            self.open: list[tuple[int, int]] = []

        @rule(target=handles, name=NAMES, trunc=st.booleans())
        def open_file(self, name: str, trunc: bool) -> tuple[int, int] | None:
            flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if trunc else 0)
            kind, fds = self._open(name, flags)
            if kind == "err":
                return None
            self.open.append(fds)
            return fds

        def _open(self, name: str, flags: int) -> tuple[str, tuple[int, int]]:
            fds = []
            for root in (self.t.enc, self.t.ref):
                try:
                    fds.append(os.open(root / name, flags, 0o644))
                except OSError as e:
                    assert e.errno is not None
                    fds.append(-e.errno)
            assert (fds[0] < 0) == (fds[1] < 0) and (min(fds) >= 0 or fds[0] == fds[1]), fds
            return ("ok" if fds[0] >= 0 else "err"), (fds[0], fds[1])

        @rule(h=handles, offset=OFFSETS, data=DATA)
        def write(self, h: tuple[int, int] | None, offset: int, data: bytes) -> None:
            if h is None or h not in self.open:
                return
            assert os.pwrite(h[0], data, offset) == os.pwrite(h[1], data, offset)

        @rule(h=handles, offset=OFFSETS, size=st.integers(0, 20_000))
        def read(self, h: tuple[int, int] | None, offset: int, size: int) -> None:
            if h is None or h not in self.open:
                return
            assert os.pread(h[0], size, offset) == os.pread(h[1], size, offset)
            assert os.fstat(h[0]).st_size == os.fstat(h[1]).st_size

        @rule(h=handles, length=OFFSETS)
        def ftruncate(self, h: tuple[int, int] | None, length: int) -> None:
            if h is None or h not in self.open:
                return
            os.ftruncate(h[0], length)
            os.ftruncate(h[1], length)

        @rule(name=NAMES, length=OFFSETS)
        def truncate(self, name: str, length: int) -> None:
            self.t.both(lambda r, n: os.truncate(r / n, length), name)

        @rule(src=NAMES, dst=NAMES)
        def rename(self, src: str, dst: str) -> None:
            self.t.both(lambda r, a, b: os.rename(r / a, r / b), src, dst)

        @rule(name=NAMES)
        def unlink(self, name: str) -> None:
            self.t.both(lambda r, n: os.unlink(r / n), name)

        @rule(h=consumes(handles))
        def close(self, h: tuple[int, int] | None) -> None:
            if h is None or h not in self.open:
                return
            self.open.remove(h)
            os.close(h[0])
            os.close(h[1])

        @invariant()
        def same_tree(self) -> None:
            for sub in ("", "sub"):
                names = sorted(os.listdir(self.t.enc / sub))
                assert names == sorted(os.listdir(self.t.ref / sub))
                for n in names:
                    e, r = self.t.enc / sub / n, self.t.ref / sub / n
                    if r.is_file():
                        assert e.read_bytes() == r.read_bytes(), n
                        assert e.stat().st_size == r.stat().st_size

        def teardown(self) -> None:
            for a, b in self.open:
                os.close(a)
                os.close(b)
            shutil.rmtree(self.t.enc)
            shutil.rmtree(self.t.ref)

    return FsMachine


def test_mount_behaves_like_a_plain_directory(mounted: Mount, tmp_path: Path) -> None:
    machine = make_machine(mounted, tmp_path)
    run_state_machine_as_test(machine, settings=settings(
        max_examples=40, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))
