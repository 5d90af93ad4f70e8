"""The plaintext content of one open backing file: read, write and truncate in whole blocks.

The block math and the AEAD are `contentenc`'s (pure); this module does the I/O on a file
descriptor. Callers hold the node's lock (see `nodes.py`).

Crash consistency. Nothing is cached in this process that the backing store lacks: each
request ends with its pwrite done. Each write is one pwrite of whole block records, so a
kill -9 can damage only the records of the writes in flight, never their neighbours; `fs check`
names them. The size of a file is derived from its backing size, never stored separately.
"""

from __future__ import annotations

import ctypes
import os

from adapters.file import contentenc as ce
from adapters.file.errors import BlockAuthError, DamagedFile, FormatError
from adapters.file.native_blocks import AuthFailed
from adapters.file.nodes import Handle, Node

_ZERO_BLOCK = bytes(ce.BLOCK_SIZE)
B = ce.BLOCK_SIZE
FALLOC_FL_KEEP_SIZE = 0x01
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def _reserve(fd: int, offset: int, length: int) -> None:
    """fallocate(2) of the backing file with FALLOC_FL_KEEP_SIZE: space for the range, never a
    new size (os.posix_fallocate cannot keep the size)."""
    if _libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))

# Buffers for the records a read_into reads from the backing file or a write writes to it,
# taken and given back: a fresh 1 MiB buffer per request costs an allocation, its zeroing
# and a page fault per 4 KiB.
_scratch_pool: list[ctypes.Array[ctypes.c_char]] = []
_SCRATCH_LEN = ce.cipher_offset(257)  # the records of a 1 MiB request, a final one, and more
_SCRATCH_KEEP = 16


def _take_scratch(n: int) -> ctypes.Array[ctypes.c_char]:
    try:
        buf = _scratch_pool.pop()  # atomic under the GIL
    except IndexError:
        buf = ctypes.create_string_buffer(_SCRATCH_LEN)
    return buf if len(buf) >= n else ctypes.create_string_buffer(n)


def _give_scratch(buf: ctypes.Array[ctypes.c_char]) -> None:
    if len(_scratch_pool) < _SCRATCH_KEEP and len(buf) == _SCRATCH_LEN:
        _scratch_pool.append(buf)


class Content:
    """Reads and writes file content under one filesystem master key.

    Version-2 files (`contentenc`) keep their last block sealed as final: a write past the
    last block re-seals it as a full, non-final block, a shrink re-seals the new last block as
    final, and a read that reaches the end of the file authenticates the file's last record
    even when it holds no byte of the read (a fragment or an empty final block). Version-1
    files are read and written as version 1.
    """

    def __init__(self, master_key: bytes) -> None:
        self._master = master_key

    def __repr__(self) -> str:
        return "Content(...)"

    def cipher(self, node: Node, fd: int, csize: int) -> ce.FileCipher | None:
        """The node's cipher, from the file's header; None for an empty (0-byte) file."""
        if node.cipher is not None and csize >= ce.HEADER_LEN:
            return node.cipher
        if csize == 0:
            node.cipher = None
            return None
        try:
            header = ce.decode_header(os.pread(fd, ce.HEADER_LEN, 0))
        except FormatError as e:
            raise DamagedFile(node.key[1], e) from None
        node.cipher = ce.FileCipher.for_header(self._master, header)
        return node.cipher

    def _for_writing(self, node: Node, fd: int, csize: int) -> tuple[ce.FileCipher, bytes]:
        """(cipher, header still to write: b"" when the file has one)."""
        cipher = self.cipher(node, fd, csize)
        if cipher is None:
            fid = ce.new_file_id()
            return ce.FileCipher(self._master, fid), ce.encode_header(fid)
        if cipher.marks_final and ce.record_count(csize) == 0:
            # A header alone: every block was dropped. Never write over that silently.
            raise DamagedFile(node.key[1], BlockAuthError(0, "is missing: no final block"))
        return cipher, b""

    @staticmethod
    def _put(h: Handle, cipher: ce.FileCipher, header: bytes, first: int,
             records: list[bytes | memoryview]) -> None:
        """Write records from block `first`, and a new file's header with them."""
        if header and first == 0:
            os.pwritev(h.fd, [header, *records], 0)  # one write: never a header alone
        else:
            os.pwritev(h.fd, records, ce.cipher_offset(first))
            if header:
                os.pwrite(h.fd, header, 0)
        h.node.cipher = cipher

    @staticmethod
    def read_blocks(fd: int, cipher: ce.FileCipher, first: int, last: int, csize: int) -> bytes:
        """Plaintext of blocks first..last; the run is final when it reaches the file's end."""
        start = ce.cipher_offset(first)
        end = min(csize, ce.cipher_offset(last + 1))
        if end <= start:
            return b""
        try:
            return cipher.decrypt_blocks(first, os.pread(fd, end - start, start),
                                         final=end == csize)
        except FormatError as e:
            raise DamagedFile(os.fstat(fd).st_ino, e) from None

    @staticmethod
    def _last_block(cipher: ce.FileCipher, csize: int, psize: int) -> int:
        """Index of the file's last block (-1 if none): by record for version 2, where a
        trailing fragment is a (damaged) last block; by plaintext for version 1, as it was."""
        if cipher.marks_final:
            return ce.record_count(csize) - 1
        return (psize - 1) // B if psize else -1

    def read(self, h: Handle, size: int, offset: int) -> bytes:
        csize = os.fstat(h.fd).st_size
        psize = ce.plaintext_size(csize)
        if offset >= psize or size <= 0:
            return b""
        end = min(offset + size, psize)
        first, last = offset // B, (end - 1) // B
        cipher = self.cipher(h.node, h.fd, csize)
        assert cipher is not None  # psize > 0 implies a header
        if end == psize and cipher.marks_final:
            last = ce.record_count(csize) - 1  # to the end: the file must end there
        plain = self.read_blocks(h.fd, cipher, first, last, csize)
        base = first * B
        return plain[offset - base : end - base]

    def read_into(self, h: Handle, buf: int, size: int, offset: int) -> int:
        """`read`, with the plaintext written to address `buf` (room for `size` bytes); the
        number of bytes written. Whole blocks through the native loop go straight there;
        other requests (unaligned, or without the native loop) take `read`'s path and a copy."""
        csize = os.fstat(h.fd).st_size
        psize = ce.plaintext_size(csize)
        if offset >= psize or size <= 0:
            return 0
        end = min(offset + size, psize)
        cipher = self.cipher(h.node, h.fd, csize)
        assert cipher is not None  # psize > 0 implies a header
        if cipher.native is None or offset % B or (end % B and end != psize):
            plain = self.read(h, size, offset)
            ctypes.memmove(buf, plain, len(plain))
            return len(plain)
        # As in `read`. Blocks first..last give exactly end - offset bytes of plaintext (a
        # version-2 final block past them holds none): it fits in `buf`.
        first, last = offset // B, (end - 1) // B
        if end == psize and cipher.marks_final:
            last = ce.record_count(csize) - 1
        start = ce.cipher_offset(first)
        stop = min(csize, ce.cipher_offset(last + 1))
        scratch = _take_scratch(stop - start)
        try:
            if os.preadv(h.fd, [memoryview(scratch)[: stop - start]], start) != stop - start:
                raise DamagedFile(h.node.key[1], FormatError("backing file shorter than its size"))
            final = stop == csize and cipher.marks_final
            return cipher.native.decrypt_into(first, cipher.tails, final, scratch,
                                              stop - start, buf)
        except AuthFailed as e:
            raise DamagedFile(h.node.key[1], BlockAuthError(e.block)) from None
        finally:
            _give_scratch(scratch)

    def check_end(self, h: Handle) -> None:
        """On open of a file showing no content: a version-2 backing file that is not 0 bytes
        must end in a final block (the kernel sends no read for a 0-byte file, so a file with
        all its blocks dropped would otherwise read as empty)."""
        csize = os.fstat(h.fd).st_size
        if csize == 0 or ce.plaintext_size(csize) > 0:
            return
        cipher = self.cipher(h.node, h.fd, csize)
        assert cipher is not None
        if not cipher.marks_final:
            return
        nrec = ce.record_count(csize)
        if nrec == 0:
            raise DamagedFile(h.node.key[1], BlockAuthError(0, "is missing: no final block"))
        self.read_blocks(h.fd, cipher, 0, nrec - 1, csize)

    def write(self, h: Handle, data: bytes | memoryview, offset: int) -> None:
        """Write `data` at `offset`. `data` may be a view of a buffer the caller reuses (the
        FUSE request's): it is read only during the call."""
        fd = h.fd
        st = os.fstat(fd)
        if st.st_nlink > 1:
            h.node.links_stale = True
        csize = st.st_size
        psize = ce.plaintext_size(csize)
        cipher, header = self._for_writing(h.node, fd, csize)
        end = offset + len(data)
        first, last = offset // B, (end - 1) // B
        records: list[bytes | memoryview] = []
        ob = self._last_block(cipher, csize, psize)
        if 0 <= ob < first and (cipher.marks_final or psize % B):
            # Writing past the last block: it becomes a full (zero-padded) block that is not
            # the last; the blocks between stay holes (all-zero records) in the backing file.
            old = self.read_blocks(fd, cipher, ob, ob, csize)
            resealed = cipher.encrypt_blocks(ob, old + bytes(B - len(old)))
            if ob + 1 == first:
                records.append(resealed)  # contiguous: one write
            else:
                os.pwrite(fd, resealed, ce.cipher_offset(ob))
        head = b""
        if offset % B:
            if first * B < psize:
                head = self.read_blocks(fd, cipher, first, first, csize)[: offset % B]
            head += bytes(offset % B - len(head))
        tail = b""
        if end % B and end < psize:
            blk = self.read_blocks(fd, cipher, last, last, csize)
            tail = blk[end % B :]
        plain = head + data + tail if head or tail else data
        final = last == (max(psize, end) - 1) // B
        start = first - len(records)
        if cipher.native is None:
            records.append(cipher.encrypt_blocks(first, plain, final=final))
            self._put(h, cipher, header, start, records)
            return
        # The records go into a reused buffer and are written from there: a fresh 1 MiB of
        # bytes per request (and the Python loop) cost as much again as the cipher.
        scratch = _take_scratch(ce.cipher_offset(last - first + 2))
        try:
            n = cipher.encrypt_blocks_into(first, plain, scratch, final=final)
            records.append(memoryview(scratch)[:n])
            self._put(h, cipher, header, start, records)
        finally:
            _give_scratch(scratch)

    def allocate(self, h: Handle, offset: int, length: int, keep_size: bool) -> None:
        """fallocate(2) of plaintext bytes offset..offset+length: the backing space of their
        blocks is reserved (a hole stays all-zero records, which read as zeros), and unless
        `keep_size` the file grows to the range's end as a truncate up would. Reserved first,
        so a backing filesystem without room (ENOSPC) or without fallocate (EOPNOTSUPP)
        leaves the file as it was."""
        first, last = offset // B, (offset + length - 1) // B
        start = ce.cipher_offset(first)
        _reserve(h.fd, start, ce.cipher_offset(last + 1) - start)
        if not keep_size and offset + length > ce.plaintext_size(os.fstat(h.fd).st_size):
            self.truncate(h, offset + length)

    def truncate(self, h: Handle, new: int) -> None:
        fd = h.fd
        st = os.fstat(fd)
        if st.st_nlink > 1:
            h.node.links_stale = True
        csize = st.st_size
        psize = ce.plaintext_size(csize)
        if new == psize and (new or csize == 0):
            # Nothing to change but the times: a truncation sets mtime and ctime even to the
            # size the file has (POSIX; open with O_TRUNC of an empty file too), and so does
            # the backing file's.
            os.ftruncate(fd, csize)
            return
        if new == 0:
            os.ftruncate(fd, 0)
            h.node.cipher = None  # the next write starts a new file id (and format version)
            return
        cipher, header = self._for_writing(h.node, fd, csize)
        if new < psize:
            self._shrink(fd, cipher, new, csize)
        else:
            self._grow(h, cipher, header, psize, new, csize)

    def _shrink(self, fd: int, cipher: ce.FileCipher, new: int, csize: int) -> None:
        lb, keep = (new - 1) // B, new - ((new - 1) // B) * B
        if keep == B and not cipher.marks_final:
            os.ftruncate(fd, ce.cipher_offset(lb + 1))
            return
        blk = self.read_blocks(fd, cipher, lb, lb, csize)[:keep]
        rec = cipher.encrypt_blocks(lb, blk, final=True)
        # Shrink first, then rewrite the new last block: a crash in between damages only
        # that block, never one that stays whole.
        os.ftruncate(fd, ce.cipher_offset(lb) + len(rec))
        os.pwrite(fd, rec, ce.cipher_offset(lb))

    def _grow(self, h: Handle, cipher: ce.FileCipher, header: bytes, psize: int, new: int,
              csize: int) -> None:
        fd, nl = h.fd, (new - 1) // B
        ob = self._last_block(cipher, csize, psize)
        if ob >= 0:
            old = self.read_blocks(fd, cipher, ob, ob, csize)
            if ob == nl:  # grows within its last block
                pad = bytes(new - ob * B - len(old))
                os.pwrite(fd, cipher.encrypt_blocks(ob, old + pad, final=True),
                          ce.cipher_offset(ob))
                return
            if cipher.marks_final or len(old) < B:  # no longer the last: full, not final
                os.pwrite(fd, cipher.encrypt_blocks(ob, old + bytes(B - len(old))),
                          ce.cipher_offset(ob))
        # Then holes (all-zero records) up to the new last block.
        if not cipher.marks_final and new % B == 0:
            os.ftruncate(fd, ce.cipher_offset(new // B))  # version 1: the last one a hole too
        else:
            rec = cipher.encrypt_blocks(nl, _ZERO_BLOCK[: new - nl * B], final=True)
            self._put(h, cipher, header, nl, [rec])
