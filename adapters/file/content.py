"""The plaintext content of one open backing file: read, write and truncate in whole blocks.

The block math and the AEAD are `contentenc`'s (pure); this module does the I/O on a file
descriptor. Callers hold the node's lock (see `nodes.py`).

Crash consistency. Nothing is cached in this process that the backing store lacks: each
request ends with its pwrite done. Each write is one pwrite of whole block records, so a
kill -9 can damage only the records of the writes in flight, never their neighbours; `fs check`
names them. The size of a file is derived from its backing size, never stored separately.
"""

from __future__ import annotations

import os

from adapters.file import contentenc as ce
from adapters.file.errors import DamagedFile, FormatError
from adapters.file.nodes import Handle, Node

_ZERO_BLOCK = bytes(ce.BLOCK_SIZE)
B = ce.BLOCK_SIZE


class Content:
    """Reads and writes file content under one filesystem master key."""

    def __init__(self, master_key: bytes) -> None:
        self._master = master_key

    def __repr__(self) -> str:
        return "Content(...)"

    def cipher(self, node: Node, fd: int, csize: int, create: bool) -> ce.FileCipher | None:
        """The node's cipher, reading the header or (create=True) writing a new one."""
        if node.cipher is not None and csize >= ce.HEADER_LEN:
            return node.cipher
        if csize == 0:
            node.cipher = None
            if not create:
                return None
            fid = ce.new_file_id()
            os.pwrite(fd, ce.encode_header(fid), 0)
            node.cipher = ce.FileCipher(self._master, fid)
            return node.cipher
        try:
            fid = ce.decode_header(os.pread(fd, ce.HEADER_LEN, 0))
        except FormatError as e:
            raise DamagedFile(node.key[1], e) from None
        node.cipher = ce.FileCipher(self._master, fid)
        return node.cipher

    @staticmethod
    def read_blocks(fd: int, cipher: ce.FileCipher, first: int, last: int, csize: int) -> bytes:
        start = ce.cipher_offset(first)
        end = min(csize, ce.cipher_offset(last + 1))
        if end <= start:
            return b""
        try:
            return cipher.decrypt_blocks(first, os.pread(fd, end - start, start))
        except FormatError as e:
            raise DamagedFile(os.fstat(fd).st_ino, e) from None

    def read(self, h: Handle, size: int, offset: int) -> bytes:
        csize = os.fstat(h.fd).st_size
        psize = ce.plaintext_size(csize)
        if offset >= psize or size <= 0:
            return b""
        end = min(offset + size, psize)
        first, last = offset // B, (end - 1) // B
        cipher = self.cipher(h.node, h.fd, csize, create=False)
        assert cipher is not None  # psize > 0 implies a header
        plain = self.read_blocks(h.fd, cipher, first, last, csize)
        base = first * B
        return plain[offset - base : end - base]

    def write(self, h: Handle, data: bytes, offset: int) -> None:
        fd = h.fd
        st = os.fstat(fd)
        if st.st_nlink > 1:
            h.node.links_stale = True
        csize = st.st_size
        psize = ce.plaintext_size(csize)
        cipher = self.cipher(h.node, fd, csize, create=True)
        assert cipher is not None
        csize = max(csize, ce.HEADER_LEN)
        end = offset + len(data)
        first, last = offset // B, (end - 1) // B
        if psize % B and (psize - 1) // B < first:
            # Writing past EOF: the old partial last block becomes a full block of zeros-padded
            # data; the blocks between stay holes (all-zero records) in the backing file.
            ob = (psize - 1) // B
            old = self.read_blocks(fd, cipher, ob, ob, csize)
            os.pwrite(fd, cipher.encrypt_blocks(ob, old + bytes(B - len(old))),
                      ce.cipher_offset(ob))
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
        os.pwrite(fd, cipher.encrypt_blocks(first, plain), ce.cipher_offset(first))

    def truncate(self, h: Handle, new: int) -> None:
        fd = h.fd
        st = os.fstat(fd)
        if st.st_nlink > 1:
            h.node.links_stale = True
        csize = st.st_size
        psize = ce.plaintext_size(csize)
        if new == psize and (new or csize == 0):
            return
        if new == 0:
            os.ftruncate(fd, 0)
            h.node.cipher = None  # the next write starts a new file id
            return
        cipher = self.cipher(h.node, fd, csize, create=True)
        assert cipher is not None
        csize = max(csize, ce.HEADER_LEN)
        if new < psize:
            self._shrink(fd, cipher, new, csize)
        else:
            self._grow(fd, cipher, psize, new, csize)

    def _shrink(self, fd: int, cipher: ce.FileCipher, new: int, csize: int) -> None:
        lb, keep = (new - 1) // B, new - ((new - 1) // B) * B
        if keep == B:
            os.ftruncate(fd, ce.cipher_offset(lb + 1))
            return
        blk = self.read_blocks(fd, cipher, lb, lb, csize)[:keep]
        rec = cipher.encrypt_blocks(lb, blk)
        # Shrink first, then rewrite the new last block: a crash in between damages only
        # that block, never one that stays whole.
        os.ftruncate(fd, ce.cipher_offset(lb) + len(rec))
        os.pwrite(fd, rec, ce.cipher_offset(lb))

    def _grow(self, fd: int, cipher: ce.FileCipher, psize: int, new: int, csize: int) -> None:
        # Pad the old partial last block, then holes up to the new size.
        if psize % B:
            ob = (psize - 1) // B
            old = self.read_blocks(fd, cipher, ob, ob, csize)
            upto = min(B, new - ob * B)
            os.pwrite(fd, cipher.encrypt_blocks(ob, old + bytes(upto - len(old))),
                      ce.cipher_offset(ob))
            if new <= (ob + 1) * B:
                return
        if new % B == 0:
            os.ftruncate(fd, ce.cipher_offset(new // B))  # all-zero records: holes
        else:
            lb = new // B
            os.pwrite(fd, cipher.encrypt_blocks(lb, _ZERO_BLOCK[: new % B]), ce.cipher_offset(lb))
