"""A domain's memory image: pages, some real, the rest only counted.

Theory of operation
-------------------
A guest of `size_mib` has `size_mib * 256` pages of 4 KiB. Holding gigabytes
per simulated guest is out of reach, so only the first
`min(pages, real_bytes_max // PAGE_SIZE)` pages hold real bytes; the rest are
accounted (they count toward sizes, transfer volumes and times) but have no
storage. Live migration moves the real pages through the transport, and the
destination's `content_hash()` must equal the source's at stop time (Clark et
al., NSDI 2005, pre-copy then stop-and-copy).

The initial content is a pure function of the seed: one random page pattern
from `Random(seed)`, with each page's index stamped into its first 8 bytes so
no two pages are alike and a page written to the wrong offset changes the
hash. Filling 64 MiB costs one bulk copy plus one small write per page.

A dirty-page generator (writable working set, dirty rate) and pre-copy round
bookkeeping belong on top of `write_pages`; this module keeps only storage.
"""

from __future__ import annotations

import hashlib
import struct
from random import Random
from typing import Iterator

PAGE_SIZE = 4096
PAGES_PER_MIB = 1024 * 1024 // PAGE_SIZE

_STAMP = struct.Struct("<Q")


class MemoryImage:
    def __init__(self, size_mib: int, real_bytes_max: int, seed: int) -> None:
        self._init(size_mib, real_bytes_max)
        self.seed: int | None = seed
        self._bytes = self._filled(seed)

    @classmethod
    def empty(cls, size_mib: int, real_bytes_max: int) -> MemoryImage:
        """A zero-filled image of the same geometry, for the receiving side."""
        image = cls.__new__(cls)
        image._init(size_mib, real_bytes_max)
        image.seed = None
        image._bytes = bytearray(image._real_page_count * PAGE_SIZE)
        return image

    def _init(self, size_mib: int, real_bytes_max: int) -> None:
        if isinstance(size_mib, bool) or not isinstance(size_mib, int) or size_mib < 0:
            raise ValueError(f"size_mib must be an integer >= 0, got {size_mib!r}")
        if isinstance(real_bytes_max, bool) or not isinstance(real_bytes_max, int) or real_bytes_max < 0:
            raise ValueError(f"real_bytes_max must be an integer >= 0, got {real_bytes_max!r}")
        self.size_mib = size_mib
        self.real_bytes_max = real_bytes_max
        self._page_count = size_mib * PAGES_PER_MIB
        self._real_page_count = min(self._page_count, real_bytes_max // PAGE_SIZE)

    def _filled(self, seed: int) -> bytearray:
        pattern = Random(seed).randbytes(PAGE_SIZE)
        (head,) = _STAMP.unpack_from(pattern)
        buf = bytearray(pattern) * self._real_page_count
        for page in range(self._real_page_count):
            _STAMP.pack_into(buf, page * PAGE_SIZE, head ^ page)
        return buf

    @property
    def page_count(self) -> int:
        return self._page_count

    @property
    def real_page_count(self) -> int:
        return self._real_page_count

    @property
    def virtual_page_count(self) -> int:
        return self._page_count - self._real_page_count

    def read_pages(self, first: int, count: int) -> bytes:
        self._check_range(first, count)
        return bytes(self._bytes[first * PAGE_SIZE : (first + count) * PAGE_SIZE])

    def write_pages(self, first: int, data: bytes) -> None:
        if len(data) % PAGE_SIZE:
            raise ValueError(f"write of {len(data)} bytes is not a whole number of {PAGE_SIZE}-byte pages")
        count = len(data) // PAGE_SIZE
        self._check_range(first, count)
        self._bytes[first * PAGE_SIZE : (first + count) * PAGE_SIZE] = data

    def iter_chunks(self, chunk_bytes: int) -> Iterator[tuple[int, bytes]]:
        """Yield (first_page, data) over the real region, chunk_bytes at a time."""
        if chunk_bytes <= 0 or chunk_bytes % PAGE_SIZE:
            raise ValueError(f"chunk_bytes must be a positive multiple of {PAGE_SIZE}, got {chunk_bytes}")
        view = memoryview(self._bytes)
        for offset in range(0, len(self._bytes), chunk_bytes):
            yield offset // PAGE_SIZE, bytes(view[offset : offset + chunk_bytes])

    def content_hash(self) -> str:
        # The page counts are hashed too: two images with equal real bytes but
        # different sizes are different guests.
        digest = hashlib.blake2b(digest_size=32)
        digest.update(_STAMP.pack(self._page_count))
        digest.update(_STAMP.pack(self._real_page_count))
        digest.update(self._bytes)
        return digest.hexdigest()

    def _check_range(self, first: int, count: int) -> None:
        if first < 0 or count < 0:
            raise ValueError(f"page range must be non-negative, got first={first} count={count}")
        if first + count > self._real_page_count:
            raise ValueError(
                f"pages {first}..{first + count - 1} are past the real region "
                f"({self._real_page_count} of {self._page_count} pages hold bytes)"
            )

    def __repr__(self) -> str:
        return (
            f"MemoryImage(size_mib={self.size_mib}, real_pages={self._real_page_count}, "
            f"pages={self._page_count})"
        )
