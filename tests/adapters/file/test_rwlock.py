"""The per-file readers-writer lock: readers together, writers alone, no writer starvation."""

from __future__ import annotations

import threading

from adapters.file.rwlock import RWLock


def test_readers_share_and_a_writer_waits_for_them() -> None:
    lock = RWLock()
    inside = threading.Barrier(3)
    release = threading.Event()
    wrote = threading.Event()

    def reader() -> None:
        with lock.shared():
            inside.wait()  # both readers are in at once, or this never returns
            release.wait()

    def writer() -> None:
        with lock:
            wrote.set()

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    inside.wait()
    w = threading.Thread(target=writer)
    w.start()
    assert not wrote.wait(0.05)  # readers still inside: the writer must not have run
    release.set()
    w.join()
    assert wrote.is_set()
    for t in readers:
        t.join()


def test_a_waiting_writer_holds_back_new_readers() -> None:
    lock = RWLock()
    order: list[str] = []
    first_in = threading.Event()
    let_go = threading.Event()

    def first_reader() -> None:
        with lock.shared():
            first_in.set()
            let_go.wait()
            order.append("reader1")

    def writer() -> None:
        with lock:
            order.append("writer")

    def late_reader() -> None:
        with lock.shared():
            order.append("reader2")

    r1 = threading.Thread(target=first_reader)
    r1.start()
    first_in.wait()
    w = threading.Thread(target=writer)
    w.start()
    while not lock._gate.locked():  # the writer is queued (it holds the gate while waiting)
        threading.Event().wait(0.001)
    r2 = threading.Thread(target=late_reader)
    r2.start()
    let_go.set()
    for t in (r1, w, r2):
        t.join()
    assert order == ["reader1", "writer", "reader2"]


def test_exclusive_use_is_mutual_exclusion() -> None:
    lock = RWLock()
    count = 0

    def bump() -> None:
        nonlocal count
        for _ in range(2000):
            with lock:
                v = count
                count = v + 1

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count == 8000
