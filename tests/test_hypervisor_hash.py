"""The two-level content hash of hypervisor/memory.py: the cached hash always
equals a from-scratch one, equal bytes hash equal however they were written,
and only the blocks written since are hashed again."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypervisor.memory import HASH_BLOCK_PAGES, PAGE_SIZE, PAGES_PER_MIB, DirtyModel, MemoryImage

MIB = 1024 * 1024


def with_block_pages(block_pages: int) -> type[MemoryImage]:
    """MemoryImage hashing in blocks of `block_pages` pages (the default, or an odd size)."""
    if block_pages == HASH_BLOCK_PAGES:
        return MemoryImage
    return type(f"MemoryImage{block_pages}", (MemoryImage,), {"_hash_block_pages": block_pages})


def page_bytes(seed: int, count: int) -> bytes:
    return Random(seed).randbytes(count * PAGE_SIZE)


def blocks_of(pages, block_pages: int = HASH_BLOCK_PAGES) -> set[int]:
    return {page // block_pages for page in pages}


# Geometry: up to 2 MiB (512 pages), a real region of any page count (0, a
# block multiple or not, all of it), blocks of 1, 3 (not a power of two), the
# default, and 64 pages (larger than some real regions).
geometries = st.tuples(
    st.sampled_from([1, 3, HASH_BLOCK_PAGES, 64]),
    st.integers(1, 2),
    st.one_of(st.integers(0, 520), st.sampled_from([0, 1, 63, 64, 65, 255, 256, 257, 512])),
    st.booleans(),  # seeded source image, or an empty receiving one
)


@st.composite
def operations(draw, real_pages: int, pages: int):
    kind = draw(st.sampled_from(["write", "write", "advance", "read", "chunks", "page_chunks", "hash", "warm",
                                 "uncached", "dirty_log"]))
    if kind in ("write", "read"):
        if real_pages == 0:
            return ("hash",)
        first = draw(st.integers(0, real_pages - 1))
        count = draw(st.integers(0 if kind == "read" else 1, min(real_pages - first, 80)))
        return (kind, first, count, draw(st.integers(0, 2**16)))
    if kind == "advance":
        wws_first = draw(st.integers(0, pages))
        return (kind, wws_first, draw(st.integers(0, 200)), draw(st.floats(0, 400)), draw(st.integers(0, 9)),
                draw(st.integers(0, 4)))
    if kind == "chunks":
        return (kind, draw(st.integers(1, 70)))
    if kind == "page_chunks":
        subset = draw(st.lists(st.integers(0, pages - 1), max_size=40, unique=True))
        return (kind, sorted(subset) if draw(st.booleans()) else subset, draw(st.integers(1, 70)))
    return (kind,)


def apply(image: MemoryImage, op: tuple) -> None:
    kind = op[0]
    if kind == "write":
        _, first, count, seed = op
        image.write_pages(first, page_bytes(seed, count))
    elif kind == "read":
        _, first, count, _ = op
        assert len(image.read_pages(first, count)) == count * PAGE_SIZE
    elif kind == "advance":
        _, wws_first, wws_pages, rate, seed, step = op
        DirtyModel(wws_pages, rate, seed, wws_first_page=wws_first).advance(image, float(step), step + 1.0)
    elif kind == "chunks":
        for _ in image.iter_chunks(op[1] * PAGE_SIZE):
            pass
    elif kind == "page_chunks":
        for _ in image.iter_page_chunks(op[1], op[2] * PAGE_SIZE):
            pass
    elif kind == "hash":
        image.content_hash()
    elif kind == "warm":
        image.warm_hash()
    elif kind == "uncached":
        image.content_hash_uncached()
    elif kind == "dirty_log":
        image.mark_dirty([0])
        image.take_dirty()


@settings(max_examples=150, deadline=None)
@given(st.data(), geometries)
def test_the_cached_hash_equals_a_from_scratch_one_after_any_writes(data, geometry):
    block_pages, size_mib, real_pages, seeded = geometry
    cls = with_block_pages(block_pages)
    real_max = real_pages * PAGE_SIZE
    image = cls(size_mib, real_max, seed=3) if seeded else cls.empty(size_mib, real_max)
    ops = data.draw(st.lists(operations(image.real_page_count, image.page_count), max_size=12))
    for op in ops:
        apply(image, op)
        assert image.content_hash() == image.content_hash_uncached(), op
    # The same bytes written in one go into a fresh image hash the same.
    copy = cls.empty(size_mib, real_max)
    copy.write_pages(0, image.read_pages(0, image.real_page_count))
    assert copy.content_hash() == image.content_hash() == copy.content_hash_uncached()


@settings(max_examples=100, deadline=None)
@given(st.data(), geometries)
def test_equal_bytes_hash_equal_whatever_the_chunking_and_order(data, geometry):
    block_pages, size_mib, real_pages, _ = geometry
    cls = with_block_pages(block_pages)
    real_max = real_pages * PAGE_SIZE
    source = cls(size_mib, real_max, seed=5)
    DirtyModel(64, 64.0, seed=data.draw(st.integers(0, 9))).advance(source, 0.0, 1.0)  # not just the fill
    real = source.real_page_count
    # Cut [0, real) at arbitrary pages; send the pieces in any order, after junk writes they overwrite.
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(real - 1, 1)), max_size=8))) - {real})
    bounds = [0, *cuts, real] if real else []
    pieces = list(zip(bounds, bounds[1:]))
    pieces = data.draw(st.permutations(pieces))
    target = cls.empty(size_mib, real_max)
    for first, end in data.draw(st.lists(st.sampled_from(pieces), max_size=3)) if pieces else []:
        target.write_pages(first, page_bytes(first, end - first))  # junk, overwritten below
        target.content_hash()
    for first, end in pieces:
        target.write_pages(first, source.read_pages(first, end - first))
    assert target.content_hash() == source.content_hash() == source.content_hash_uncached()
    assert target.warm_hash() == 0  # written pieces are digested on write: nothing left at commit


def test_the_hash_sees_any_single_byte_and_where_each_page_lies():
    image = MemoryImage(1, MIB, seed=1)
    before = image.content_hash()
    for page, offset in [(0, 0), (5, 4095), (255, 1234)]:
        data = bytearray(image.read_pages(page, 1))
        data[offset] ^= 1
        image.write_pages(page, bytes(data))
        assert image.content_hash() != before
        data[offset] ^= 1
        image.write_pages(page, bytes(data))
        assert image.content_hash() == before
    swapped = MemoryImage(1, MIB, seed=1)
    first, second = swapped.read_pages(0, 1), swapped.read_pages(1, 1)
    swapped.write_pages(0, second)
    swapped.write_pages(1, first)
    assert swapped.content_hash() != before


def test_a_fresh_image_is_hashed_once_then_only_the_blocks_the_guest_dirtied():
    image = MemoryImage(16, 16 * MIB, seed=2)
    assert image.warm_hash() == image.real_page_count // HASH_BLOCK_PAGES
    assert image.warm_hash() == 0
    warm = image.content_hash()
    model = DirtyModel(wws_pages=image.page_count, dirty_rate_pages_s=1024.0, seed=4)  # 1024 pages anywhere
    written = model.advance(image, 0.0, 1.0)
    assert len(written) == 1024
    stale = blocks_of(written)
    assert image.content_hash_uncached() != warm  # the reference does not touch the cache...
    assert image.warm_hash() == len(stale) <= 1024  # ...so the dirtied blocks are still to hash, and no others
    assert image.content_hash() == image.content_hash_uncached() != warm


def test_virtual_pages_dirtied_leave_every_digest_valid():
    image = MemoryImage(size_mib=8, real_bytes_max=MIB, seed=1)
    image.warm_hash()
    DirtyModel(512, 512.0, seed=1, wws_first_page=image.real_page_count).advance(image, 0.0, 1.0)
    image.mark_dirty([0, 1])
    assert image.warm_hash() == 0


def test_a_target_written_in_aligned_chunks_has_its_hash_ready_when_the_last_lands():
    source = MemoryImage(4, 4 * MIB + 3 * PAGE_SIZE, seed=8)  # a short last block too
    target = MemoryImage.empty(4, 4 * MIB + 3 * PAGE_SIZE)
    for first, data in source.iter_chunks(256 * 1024):
        target.write_pages(first, data)
    assert target.warm_hash() == 0
    assert target.content_hash() == source.content_hash()


def test_partial_block_writes_are_digested_on_write_too():
    target = MemoryImage.empty(1, MIB)
    target.write_pages(1, page_bytes(1, 1))  # inside block 0
    target.write_pages(HASH_BLOCK_PAGES - 1, page_bytes(2, 2))  # straddles blocks 0 and 1
    assert target.warm_hash() == target.real_page_count // HASH_BLOCK_PAGES - 2  # the untouched zero blocks
    assert target.content_hash() == target.content_hash_uncached()


def test_a_first_round_read_warms_the_source_and_later_reads_refresh_what_they_send():
    image = MemoryImage(8, 8 * MIB, seed=6)
    for _ in image.iter_page_chunks(range(image.page_count), 256 * 1024):
        pass
    assert image.warm_hash() == 0
    written = DirtyModel(wws_pages=2048, dirty_rate_pages_s=300.0, seed=2).advance(image, 0.0, 1.0)
    for _ in image.iter_page_chunks(sorted(written), 256 * 1024):
        pass
    assert image.warm_hash() == 0
    assert image.content_hash() == image.content_hash_uncached()


def test_the_digest_cache_is_small():
    image = MemoryImage(64, 64 * MIB, seed=1)
    blocks = image.real_page_count // HASH_BLOCK_PAGES
    cache = len(image._block_digests) + len(image._block_valid)
    assert cache <= 64 * blocks and cache <= 0.01 * 64 * MIB


def test_an_image_without_real_bytes_hashes_its_geometry():
    assert MemoryImage.empty(4, 0).content_hash() == MemoryImage(4, 0, seed=9).content_hash()
    assert MemoryImage.empty(4, 0).content_hash() != MemoryImage.empty(8, 0).content_hash()
    assert MemoryImage.empty(4, 0).warm_hash() == 0


@pytest.mark.parametrize("block_pages", [0, -1, True, 1.5])
def test_a_bad_block_size_is_refused(block_pages):
    with pytest.raises(ValueError, match="hash block pages"):
        with_block_pages(block_pages)(1, MIB, seed=1)


def test_block_size_divides_the_agent_transfer_chunk():
    # Round 1 ships 256 KiB chunks from page 0: every one covers whole blocks.
    assert (256 * 1024 // PAGE_SIZE) % HASH_BLOCK_PAGES == 0 and PAGES_PER_MIB % HASH_BLOCK_PAGES == 0
