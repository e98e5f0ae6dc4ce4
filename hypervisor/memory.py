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

Dirty logging (Xen's log-dirty mode): every page, real or virtual, has a bit
in a dirty bitmap. Any write sets it (`write_pages`, `mark_dirty`, a
`DirtyModel`); `take_dirty()` returns the pages set since the last take, in
order, and clears them, which is what the pre-copy loop needs between rounds
(`agent/core/precopy.py`). The bitmap is one byte per page, allocated on the
first write (a 16 GiB guest costs 4 MiB while it is tracked), beside a list
of the pages set since the last take, so a take costs O(dirty pages), not
O(pages). `dirty_all()` is kept as a flag, not a list of every index.

A `DirtyModel` is the guest's writing: `dirty_rate_pages_s` page writes per
second, each to a distinct page chosen (from a seed) inside a writable working
set (WWS) of `wws_pages` pages, as in the pre-copy literature (Clark et al.
section 3: a round's dirty set is at most the WWS however long it lasts). Real
pages get new bytes, so the hash moves; virtual pages are only marked dirty.
Pre-copy round bookkeeping lives in `agent/core/precopy.py`, not here.

Content hash (two-level)
------------------------
`content_hash()` sits in the migration's downtime twice (source at pause,
target at commit), so it must not hash every real byte each time. The real
region is cut into blocks of `HASH_BLOCK_PAGES` pages (the last may be short);
each block has a cached BLAKE3 digest and a valid flag, and the image hash is
BLAKE3 (in key-derivation mode with this layout's context string) over a
header (page counts, block size) and the block digests in order. Only blocks whose flag is clear are hashed again:

- `DirtyModel.advance` (the guest, writing all the time) clears the flags of
  the blocks it touches: a source rehashes only the blocks dirtied since;
- `write_pages` (the migration target's only writer) digests every block it
  touches right away, from the bytes just written (digest-on-write): a target
  has its hash ready when the last chunk lands, whatever the rounds before the
  last wrote. A block partly written is hashed whole (16 KiB for a 4 KiB
  page), cheap next to receiving the page; leaving it invalid instead would put
  every block touched by rounds 2..n into the commit's hash (48 ms for a
  64 MiB WWS, measured) rather than only the stop-and-copy's;
- a read (`read_pages`, `iter_chunks`, `iter_page_chunks`) digests the invalid
  blocks it touches, so a source's first pre-copy round, which reads
  everything, leaves its hash warm, and each later round refreshes the blocks
  it sends;
- `warm_hash()` digests every invalid block now.

The value is a function of the geometry and the real bytes only, never of the
order or chunking of the writes; `content_hash_uncached()` recomputes it from
scratch (what the tests compare against). Cost of the cache: 33 bytes per
block, 0.2% of the real bytes with 16 KiB blocks.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from random import Random
from typing import Callable, Iterable, Iterator

from blake3 import blake3

PAGE_SIZE = 4096
PAGES_PER_MIB = 1024 * 1024 // PAGE_SIZE

_STAMP = struct.Struct("<Q")

# Block size of the two-level hash. Small blocks bound the rehash after
# scattered writes: 1024 pages dirtied at random over 256 MiB touch ~1000
# blocks, 16 MiB to rehash at 16 KiB blocks (~14 ms measured) against ~650
# blocks, 160 MiB (~110 ms) at 256 KiB blocks. The per-block overhead (a
# hash call, 33 bytes of cache: 528 KiB for 256 MiB) stays small against
# 16 KiB of hashing (those timings were SHA-256's; BLAKE3, below, is ~3x
# faster: a cold hash of 256 MiB takes ~65 ms here). It divides the agent's
# transfer chunk.
HASH_BLOCK_PAGES = 4
# Block digest: BLAKE3 (the `blake3` package, the reference Rust implementation).
# It is collision resistant (an equal image hash means equal bytes) and uses
# SIMD within a block (1 KiB chunks hashed in parallel lanes: AVX-512, AVX2,
# NEON), so 16 KiB blocks hash at ~4.3 GB/s here against ~1.2-1.4 GB/s for
# SHA-256 even with the SHA extensions (measured on this 2-core machine). The
# target hashes every byte it receives during pre-copy and both sides hash in
# the downtime, so this is migration throughput and downtime. The algorithm
# cannot be picked per machine (source and target must compute the same hash).
_block_hash = blake3
_DIGEST_SIZE = 32
_HASH_HEADER = struct.Struct("<QQQ")  # page count, real page count, block pages
_HASH_CONTEXT = "shoal 2026-12 memory image hash v3"  # BLAKE3 key derivation context: this layout


class MemoryImage:
    # Pages per hash block; a class attribute so tests can try other sizes in a subclass.
    _hash_block_pages = HASH_BLOCK_PAGES

    def __init__(self, size_mib: int, real_bytes_max: int, seed: int) -> None:
        self._init(size_mib, real_bytes_max)
        self.seed: int | None = seed
        self._bytes = self._filled(seed)

    @classmethod
    def empty(cls, size_mib: int, real_bytes_max: int,
              allocate: "Callable[[int], bytearray] | None" = None) -> MemoryImage:
        """A zero-filled image of the same geometry, for the receiving side.

        `allocate(n)` returns the n zero bytes to hold it: any writable buffer
        (default a bytearray). The shell passes one that spares the event loop
        a large memset (an anonymous mmap faulted in by a thread:
        agent/runtime/image_memory.py)."""
        image = cls.__new__(cls)
        image._init(size_mib, real_bytes_max)
        image.seed = None
        size = image._real_page_count * PAGE_SIZE
        image._bytes = bytearray(size) if allocate is None else allocate(size)
        if len(image._bytes) != size:
            raise ValueError(f"allocate({size}) returned {len(image._bytes)} bytes")
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
        # Dirty log: bitmap allocated on first use, pages set since the last take.
        self._dirty_bits: bytearray | None = None
        self._dirty_pending: list[int] = []
        self._dirty_everything = False
        # Two-level hash: a digest per block of the real region, valid while its flag is 1.
        block_pages = self._hash_block_pages
        if isinstance(block_pages, bool) or not isinstance(block_pages, int) or block_pages < 1:
            raise ValueError(f"hash block pages must be an integer >= 1, got {block_pages!r}")
        self._block_count = -(-self._real_page_count // block_pages)
        self._block_digests = bytearray(self._block_count * _DIGEST_SIZE)
        self._block_valid = bytearray(self._block_count)

    def _filled(self, seed: int) -> bytearray:
        pattern = Random(seed).randbytes(PAGE_SIZE)
        (head,) = _STAMP.unpack_from(pattern)
        buf = bytearray(pattern) * self._real_page_count
        for page in range(self._real_page_count):
            _STAMP.pack_into(buf, page * PAGE_SIZE, head ^ page)
        return buf

    @property
    def buffer(self) -> "bytearray | object":
        """The buffer holding the real bytes (what `empty`'s `allocate` returned):
        for a shell that manages its memory, never to write through."""
        return self._bytes

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
        return self._read(first, count)

    def _read(self, first: int, count: int) -> bytes:
        # One copy: slicing the bytearray itself would copy twice (slice, then bytes).
        with memoryview(self._bytes) as view:
            data = bytes(view[first * PAGE_SIZE : (first + count) * PAGE_SIZE])
        if count:  # digest-on-read: the bytes are hot in the cache now
            block_pages = self._hash_block_pages
            self._refresh_blocks(first // block_pages, -(-(first + count) // block_pages))
        return data

    def write_pages(self, first: int, data: bytes) -> None:
        if len(data) % PAGE_SIZE:
            raise ValueError(f"write of {len(data)} bytes is not a whole number of {PAGE_SIZE}-byte pages")
        count = len(data) // PAGE_SIZE
        self._check_range(first, count)
        # Through a memoryview: assigning bytes to a bytearray slice first copies
        # them into a temporary bytearray (CPython), one more pass over fresh memory.
        with memoryview(self._bytes) as view:
            view[first * PAGE_SIZE : (first + count) * PAGE_SIZE] = data
        self._mark(range(first, first + count))
        if count:  # digest-on-write: every block the write touches, whole or partly
            block_pages = self._hash_block_pages
            self._digest_blocks(first // block_pages, -(-(first + count) // block_pages))

    def iter_chunks(self, chunk_bytes: int) -> Iterator[tuple[int, bytes]]:
        """Yield (first_page, data) over the real region, chunk_bytes at a time."""
        if chunk_bytes <= 0 or chunk_bytes % PAGE_SIZE:
            raise ValueError(f"chunk_bytes must be a positive multiple of {PAGE_SIZE}, got {chunk_bytes}")
        chunk_pages = chunk_bytes // PAGE_SIZE
        for first in range(0, self._real_page_count, chunk_pages):
            yield first, self._read(first, min(chunk_pages, self._real_page_count - first))

    def iter_page_chunks(self, pages: Iterable[int], chunk_bytes: int) -> Iterator[tuple[int, bytes]]:
        """Yield (first_page, data) for the real pages among `pages`, runs of
        consecutive pages merged up to chunk_bytes; virtual pages are skipped
        (they have no bytes to send). Sorted input gives the fewest chunks."""
        if chunk_bytes <= 0 or chunk_bytes % PAGE_SIZE:
            raise ValueError(f"chunk_bytes must be a positive multiple of {PAGE_SIZE}, got {chunk_bytes}")
        run_pages_max = chunk_bytes // PAGE_SIZE
        if isinstance(pages, range) and pages.step == 1:  # round 1: one contiguous run, no per-page loop
            self._check_pages(pages)
            first, end = pages.start, min(pages.stop, self._real_page_count)
            for start in range(first, end, run_pages_max):
                yield start, self._read(start, min(run_pages_max, end - start))
            return
        run_first, run_count = -1, 0
        for page in pages:
            if not 0 <= page < self._page_count:
                raise ValueError(f"page {page} is outside the image's {self._page_count} pages")
            if page >= self._real_page_count:
                continue
            if run_count and page == run_first + run_count and run_count < run_pages_max:
                run_count += 1
                continue
            if run_count:
                yield run_first, self._read(run_first, run_count)
            run_first, run_count = page, 1
        if run_count:
            yield run_first, self._read(run_first, run_count)

    # -- dirty log -----------------------------------------------------------------
    @property
    def dirty_count(self) -> int:
        """Pages (real and virtual) written since the last `take_dirty()`."""
        return self._page_count if self._dirty_everything else len(self._dirty_pending)

    def dirty_all(self) -> None:
        """Marks every page dirty (what a fresh pre-copy's first round sends)."""
        self._dirty_bits = None
        self._dirty_pending = []
        self._dirty_everything = True

    def mark_dirty(self, pages: Iterable[int]) -> None:
        """Marks pages dirty without changing bytes (a write the model does not store)."""
        pages = list(pages)
        self._check_pages(pages)
        self._mark(pages)

    def take_dirty(self) -> list[int]:
        """The pages dirtied since the last take, ascending; clears them."""
        if self._dirty_everything:
            self._dirty_everything = False
            return list(range(self._page_count))
        taken = sorted(self._dirty_pending)
        self._dirty_pending = []
        bits = self._dirty_bits
        if bits is not None:
            if len(taken) * 8 > len(bits):  # cheaper to wipe than to clear one by one
                self._dirty_bits = bytearray(len(bits))
            else:
                for page in taken:
                    bits[page] = 0
        return taken

    def _mark(self, pages: Iterable[int]) -> None:
        if self._dirty_everything:
            return
        bits = self._dirty_bits
        if bits is None:
            bits = self._dirty_bits = bytearray(self._page_count)
        pending = self._dirty_pending
        if isinstance(pages, range) and pages.step == 1 and bits.find(1, pages.start, pages.stop) < 0:
            # A whole chunk written (a migration target's round): no per-page loop.
            bits[pages.start:pages.stop] = b"\x01" * len(pages)
            pending.extend(pages)
            return
        for page in pages:
            if not bits[page]:
                bits[page] = 1
                pending.append(page)

    def _check_pages(self, pages: "list[int] | range") -> None:
        if not len(pages):
            return
        if isinstance(pages, range):  # O(1): never walk a whole-image range
            low, high = min(pages[0], pages[-1]), max(pages[0], pages[-1])
        else:
            low, high = min(pages), max(pages)
        if low < 0 or high >= self._page_count:
            raise ValueError(f"pages {low}..{high} are outside the image's {self._page_count} pages")

    # -- content hash ----------------------------------------------------------------
    def content_hash(self) -> str:
        """Hex digest of the geometry and the real bytes; hashes only the blocks
        written since they were last digested."""
        self._refresh_blocks(0, self._block_count)
        return self._combine(self._block_digests)

    def content_hash_uncached(self) -> str:
        """`content_hash()` recomputed from every real byte, ignoring (and not
        touching) the digest cache: the reference the cache must always equal."""
        block_bytes = self._hash_block_pages * PAGE_SIZE
        with memoryview(self._bytes) as view:
            digests = b"".join(_block_hash(view[offset : offset + block_bytes]).digest()
                               for offset in range(0, len(view), block_bytes))
        return self._combine(digests)

    def warm_hash(self) -> int:
        """Digests every invalid block now (so a later `content_hash()` only
        combines); returns how many blocks it hashed."""
        return self._refresh_blocks(0, self._block_count)

    def _combine(self, digests: "bytes | bytearray") -> str:
        # The page counts are hashed too: two images with equal real bytes but
        # different sizes are different guests.
        digest = blake3(derive_key_context=_HASH_CONTEXT)
        digest.update(_HASH_HEADER.pack(self._page_count, self._real_page_count, self._hash_block_pages))
        digest.update(digests)
        return digest.hexdigest()

    def _refresh_blocks(self, lo: int, hi: int) -> int:
        """Digests the invalid blocks in [lo, hi), run by run; returns how many."""
        valid = self._block_valid
        done = 0
        start = valid.find(0, lo, hi)
        while start >= 0:
            stop = valid.find(1, start, hi)
            if stop < 0:
                stop = hi
            self._digest_blocks(start, stop)
            done += stop - start
            start = valid.find(0, stop, hi)
        return done

    def _digest_blocks(self, lo: int, hi: int) -> None:
        """Digests blocks [lo, hi) from the current bytes and marks them valid."""
        block_bytes = self._hash_block_pages * PAGE_SIZE
        digests = self._block_digests
        with memoryview(self._bytes) as view:
            for block in range(lo, hi):
                offset = block * block_bytes  # the slice stops at the real region's end
                digests[block * _DIGEST_SIZE : (block + 1) * _DIGEST_SIZE] = \
                    _block_hash(view[offset : offset + block_bytes]).digest()
        self._block_valid[lo:hi] = b"\x01" * (hi - lo)

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


@dataclass(frozen=True)
class DirtyModel:
    """A guest's page writes: `dirty_rate_pages_s` writes per second, each to a
    distinct page drawn (seeded) from the writable working set, pages
    [wws_first_page, wws_first_page + wws_pages) clipped to the image."""

    wws_pages: int
    dirty_rate_pages_s: float
    seed: int
    # Where the WWS starts; 0 puts it over the real pages (bytes really change).
    wws_first_page: int = 0

    def __post_init__(self) -> None:
        for name in ("wws_pages", "seed", "wws_first_page"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or (value < 0 and name != "seed"):
                raise ValueError(f"DirtyModel.{name} must be an integer{' >= 0' if name != 'seed' else ''}, "
                                 f"got {value!r}")
        rate = self.dirty_rate_pages_s
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate < 0:
            raise ValueError(f"DirtyModel.dirty_rate_pages_s must be a finite number >= 0, got {rate!r}")

    @classmethod
    def from_mib(cls, wws_mib: float, dirty_rate_mib_s: float, seed: int, wws_first_page: int = 0) -> DirtyModel:
        for name, value in (("wws_mib", wws_mib), ("dirty_rate_mib_s", dirty_rate_mib_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        return cls(round(wws_mib * PAGES_PER_MIB), dirty_rate_mib_s * PAGES_PER_MIB, seed, wws_first_page)

    @property
    def wws_bytes(self) -> int:
        return self.wws_pages * PAGE_SIZE

    @property
    def dirty_rate_bytes_s(self) -> float:
        return self.dirty_rate_pages_s * PAGE_SIZE

    def writes_between(self, t0_s: float, t1_s: float) -> int:
        """Page writes in [t0_s, t1_s): rounded on the cumulative count, so many
        short steps add up to the same total as one long one (no lost fractions)."""
        if not (math.isfinite(t0_s) and math.isfinite(t1_s)) or t1_s < t0_s:
            raise ValueError(f"need finite t0_s <= t1_s, got {t0_s!r}, {t1_s!r}")
        rate = self.dirty_rate_pages_s
        return math.floor(rate * t1_s + 0.5) - math.floor(rate * t0_s + 0.5)

    def advance(self, image: MemoryImage, t0_s: float, t1_s: float) -> list[int]:
        """Applies the writes of [t0_s, t1_s) to the image; returns the pages written.

        Deterministic in (seed, t0_s, t1_s): replaying an interval writes the
        same pages with the same bytes. One write per page per interval, at
        most the whole WWS (rewriting a dirty page adds nothing to send)."""
        first = min(self.wws_first_page, image.page_count)
        end = min(first + self.wws_pages, image.page_count)
        count = min(self.writes_between(t0_s, t1_s), end - first)
        if count <= 0:
            return []
        # A str seed is hashed with SHA-512 by Random: stable across runs and PYTHONHASHSEED.
        rng = Random(f"shoal-dirty:{self.seed}:{t0_s!r}:{t1_s!r}")
        pages = rng.sample(range(first, end), count)
        buf, real = image._bytes, image.real_page_count
        valid, block_pages = image._block_valid, image._hash_block_pages
        words = PAGE_SIZE // _STAMP.size
        for page in pages:
            if page < real:  # word 0 keeps the page-index stamp; overwrite another
                _STAMP.pack_into(buf, page * PAGE_SIZE + _STAMP.size * rng.randrange(1, words),
                                 rng.getrandbits(64))
                valid[page // block_pages] = 0  # the block's digest is stale
        image._mark(pages)
        return pages
