"""Memory images: real and virtual pages, chunked copies, content hashes."""

from __future__ import annotations

import pytest

from hypervisor.memory import PAGE_SIZE, MemoryImage

MIB = 1024 * 1024


def test_pages_beyond_the_real_limit_are_counted_but_not_stored():
    image = MemoryImage(size_mib=16, real_bytes_max=1 * MIB, seed=1)
    assert image.page_count == 16 * 256
    assert image.real_page_count == 256
    assert image.virtual_page_count == 15 * 256
    with pytest.raises(ValueError, match="past the real region"):
        image.read_pages(256, 1)


def test_small_image_is_entirely_real():
    image = MemoryImage(size_mib=2, real_bytes_max=64 * MIB, seed=1)
    assert image.real_page_count == image.page_count == 512


def test_same_seed_gives_the_same_content_and_another_seed_does_not():
    assert MemoryImage(4, 4 * MIB, seed=5).content_hash() == MemoryImage(4, 4 * MIB, seed=5).content_hash()
    assert MemoryImage(4, 4 * MIB, seed=5).content_hash() != MemoryImage(4, 4 * MIB, seed=6).content_hash()


def test_every_page_is_distinct():
    image = MemoryImage(1, MIB, seed=3)
    pages = {image.read_pages(i, 1) for i in range(image.real_page_count)}
    assert len(pages) == image.real_page_count


def test_copying_all_chunks_into_an_empty_image_gives_an_equal_hash():
    source = MemoryImage(size_mib=64, real_bytes_max=64 * MIB, seed=11)
    target = MemoryImage.empty(size_mib=64, real_bytes_max=64 * MIB)
    assert target.content_hash() != source.content_hash()
    for first_page, data in source.iter_chunks(256 * 1024):
        target.write_pages(first_page, data)
    assert target.content_hash() == source.content_hash()


def test_chunks_cover_the_real_region_once_in_order():
    image = MemoryImage(size_mib=8, real_bytes_max=MIB + 3 * PAGE_SIZE, seed=2)
    chunks = list(image.iter_chunks(64 * PAGE_SIZE))
    assert [first for first, _ in chunks] == [0, 64, 128, 192, 256]
    assert b"".join(data for _, data in chunks) == image.read_pages(0, image.real_page_count)
    assert len(chunks[-1][1]) == 3 * PAGE_SIZE


def test_hash_changes_after_a_write_and_the_write_reads_back():
    image = MemoryImage(2, 2 * MIB, seed=9)
    before = image.content_hash()
    page = bytes(range(256)) * (PAGE_SIZE // 256)
    image.write_pages(17, page)
    assert image.read_pages(17, 1) == page
    assert image.content_hash() != before


def test_hash_covers_the_virtual_page_count():
    small = MemoryImage.empty(size_mib=2, real_bytes_max=MIB)
    large = MemoryImage.empty(size_mib=4, real_bytes_max=MIB)
    assert small.read_pages(0, 256) == large.read_pages(0, 256)
    assert small.content_hash() != large.content_hash()


@pytest.mark.parametrize(
    ("first", "data", "message"),
    [
        (0, b"x" * (PAGE_SIZE - 1), "whole number"),
        (0, b"x" * (PAGE_SIZE + 1), "whole number"),
        (255, b"x" * (2 * PAGE_SIZE), "past the real region"),
        (-1, b"x" * PAGE_SIZE, "non-negative"),
    ],
)
def test_bad_write_raises_value_error_and_changes_nothing(first, data, message):
    image = MemoryImage(size_mib=4, real_bytes_max=MIB, seed=4)
    before = image.content_hash()
    with pytest.raises(ValueError, match=message):
        image.write_pages(first, data)
    assert image.content_hash() == before


@pytest.mark.parametrize("chunk_bytes", [0, -PAGE_SIZE, PAGE_SIZE + 1])
def test_chunk_size_must_be_whole_pages(chunk_bytes):
    with pytest.raises(ValueError, match="multiple"):
        list(MemoryImage(1, MIB, seed=1).iter_chunks(chunk_bytes))


def test_image_with_no_real_bytes_still_counts_its_pages():
    image = MemoryImage(size_mib=1024, real_bytes_max=0, seed=1)
    assert (image.page_count, image.real_page_count) == (262144, 0)
    assert list(image.iter_chunks(PAGE_SIZE)) == []
