"""Dirty logging and the dirty-page model of hypervisor/memory.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypervisor.memory import PAGE_SIZE, PAGES_PER_MIB, DirtyModel, MemoryImage

MIB = 1024 * 1024


def test_a_new_image_is_clean_and_a_write_dirties_exactly_its_pages():
    image = MemoryImage(4, 4 * MIB, seed=1)
    assert image.dirty_count == 0
    image.write_pages(10, b"\x01" * (3 * PAGE_SIZE))
    image.write_pages(2, b"\x02" * PAGE_SIZE)
    image.write_pages(11, b"\x03" * PAGE_SIZE)  # already dirty: counted once
    assert image.dirty_count == 4
    assert image.take_dirty() == [2, 10, 11, 12]
    assert image.dirty_count == 0
    assert image.take_dirty() == []


def test_dirty_all_covers_virtual_pages_and_one_take_clears_it():
    image = MemoryImage(size_mib=16, real_bytes_max=MIB, seed=1)
    image.dirty_all()
    image.mark_dirty([5])
    assert image.dirty_count == image.page_count == 16 * PAGES_PER_MIB
    assert image.take_dirty() == list(range(image.page_count))
    assert image.dirty_count == 0
    image.mark_dirty([7])
    assert image.take_dirty() == [7]


def test_marking_a_virtual_page_dirties_it_without_changing_the_hash():
    image = MemoryImage(size_mib=8, real_bytes_max=MIB, seed=1)
    before = image.content_hash()
    image.mark_dirty([image.page_count - 1, image.real_page_count])
    assert image.content_hash() == before
    assert image.take_dirty() == [image.real_page_count, image.page_count - 1]


@pytest.mark.parametrize("pages", [[-1], [0, 4 * PAGES_PER_MIB]])
def test_marking_a_page_outside_the_image_raises_and_marks_nothing(pages):
    image = MemoryImage(4, MIB, seed=1)
    with pytest.raises(ValueError, match="outside"):
        image.mark_dirty(pages)
    assert image.dirty_count == 0


def test_many_takes_clear_the_bitmap_so_pages_can_be_dirtied_again():
    image = MemoryImage(4, 4 * MIB, seed=1)
    for _ in range(3):
        image.mark_dirty(range(0, image.page_count, 3))  # more than 1/8 of the pages: the wipe path
        assert image.take_dirty() == list(range(0, image.page_count, 3))
        image.mark_dirty([1, 2])  # few: the one-by-one path
        assert image.take_dirty() == [1, 2]


def test_advance_writes_rate_times_interval_distinct_pages_inside_the_wws():
    image = MemoryImage(16, 16 * MIB, seed=3)
    model = DirtyModel(wws_pages=1000, dirty_rate_pages_s=300.0, seed=7)
    before = image.content_hash()
    written = model.advance(image, 0.0, 1.5)
    assert len(written) == len(set(written)) == 450
    assert all(0 <= p < 1000 for p in written)
    assert image.take_dirty() == sorted(written)
    assert image.content_hash() != before


def test_each_written_real_page_changes_but_keeps_its_index_stamp():
    image = MemoryImage(4, 4 * MIB, seed=3)
    original = MemoryImage(4, 4 * MIB, seed=3)
    written = DirtyModel(wws_pages=512, dirty_rate_pages_s=100.0, seed=1).advance(image, 0.0, 1.0)
    for page in written:
        new, old = image.read_pages(page, 1), original.read_pages(page, 1)
        assert new != old
        assert new[:8] == old[:8]


def test_advance_is_a_pure_function_of_seed_and_interval():
    def run(seed: int) -> tuple[str, list[int]]:
        image = MemoryImage(8, 8 * MIB, seed=1)
        model = DirtyModel.from_mib(wws_mib=2, dirty_rate_mib_s=1, seed=seed)
        for t in range(5):
            model.advance(image, t * 0.25, (t + 1) * 0.25)
        return image.content_hash(), image.take_dirty()

    assert run(4) == run(4)
    assert run(4) != run(5)


def test_successive_intervals_write_new_bytes_even_to_the_same_pages():
    image = MemoryImage(1, MIB, seed=1)
    model = DirtyModel(wws_pages=10, dirty_rate_pages_s=10.0, seed=2)  # every round writes the whole WWS
    hashes = set()
    for t in range(4):
        assert sorted(model.advance(image, float(t), t + 1.0)) == list(range(10))
        hashes.add(image.content_hash())
    assert len(hashes) == 4


def test_a_round_dirties_at_most_the_wws_however_long_it_lasts():
    image = MemoryImage(64, 64 * MIB, seed=1)
    model = DirtyModel.from_mib(wws_mib=4, dirty_rate_mib_s=1000, seed=1)
    model.advance(image, 0.0, 10.0)
    assert image.take_dirty() == list(range(4 * PAGES_PER_MIB))


def test_virtual_wws_pages_are_dirtied_without_bytes():
    image = MemoryImage(size_mib=8, real_bytes_max=MIB, seed=1)
    before = image.content_hash()
    model = DirtyModel(wws_pages=512, dirty_rate_pages_s=512.0, seed=1, wws_first_page=image.real_page_count)
    written = model.advance(image, 0.0, 1.0)
    assert len(written) == 512 and min(written) >= image.real_page_count
    assert image.content_hash() == before
    assert image.dirty_count == 512


def test_a_wws_across_the_real_boundary_changes_only_the_real_pages_bytes():
    image = MemoryImage(size_mib=8, real_bytes_max=MIB, seed=1)
    model = DirtyModel(wws_pages=512, dirty_rate_pages_s=512.0, seed=1, wws_first_page=image.real_page_count - 256)
    written = set(model.advance(image, 0.0, 1.0))
    assert written == set(range(image.real_page_count - 256, image.real_page_count + 256))
    original = MemoryImage(size_mib=8, real_bytes_max=MIB, seed=1)
    changed = {p for p in range(image.real_page_count) if image.read_pages(p, 1) != original.read_pages(p, 1)}
    assert changed == written & set(range(image.real_page_count))


def test_many_short_steps_write_as_many_pages_as_one_long_one():
    model = DirtyModel(wws_pages=10**6, dirty_rate_pages_s=37.3, seed=1)
    steps = sum(model.writes_between(i * 0.01, (i + 1) * 0.01) for i in range(1000))
    assert steps == model.writes_between(0.0, 10.0) == 373


def test_from_mib_converts_to_pages():
    model = DirtyModel.from_mib(wws_mib=4, dirty_rate_mib_s=20, seed=9)
    assert (model.wws_pages, model.dirty_rate_pages_s, model.seed) == (1024, 20 * 256, 9)
    assert model.wws_bytes == 4 * MIB and model.dirty_rate_bytes_s == 20 * MIB


@pytest.mark.parametrize("kwargs", [
    {"wws_pages": -1, "dirty_rate_pages_s": 1.0, "seed": 1},
    {"wws_pages": 1, "dirty_rate_pages_s": -1.0, "seed": 1},
    {"wws_pages": 1, "dirty_rate_pages_s": float("nan"), "seed": 1},
    {"wws_pages": 1.5, "dirty_rate_pages_s": 1.0, "seed": 1},
])
def test_a_bad_model_is_refused(kwargs):
    with pytest.raises(ValueError):
        DirtyModel(**kwargs)


def test_time_running_backwards_is_refused():
    with pytest.raises(ValueError, match="t0_s <= t1_s"):
        DirtyModel(1, 1.0, 1).advance(MemoryImage(1, MIB, seed=1), 2.0, 1.0)


def test_page_chunks_merge_runs_skip_virtual_pages_and_respect_the_chunk_size():
    image = MemoryImage(size_mib=2, real_bytes_max=MIB, seed=1)  # 256 real of 512 pages
    pages = [3, 4, 5, 6, 7, 9, 255, 256, 400]
    chunks = list(image.iter_page_chunks(pages, 2 * PAGE_SIZE))
    assert [(first, len(data) // PAGE_SIZE) for first, data in chunks] == [(3, 2), (5, 2), (7, 1), (9, 1), (255, 1)]
    for first, data in chunks:
        assert data == image.read_pages(first, len(data) // PAGE_SIZE)


def test_page_chunks_of_a_whole_image_range_cover_the_real_region():
    image = MemoryImage(size_mib=8, real_bytes_max=MIB + PAGE_SIZE, seed=1)
    chunks = list(image.iter_page_chunks(range(image.page_count), 64 * PAGE_SIZE))
    assert b"".join(d for _, d in chunks) == image.read_pages(0, image.real_page_count)
    with pytest.raises(ValueError, match="outside"):
        list(image.iter_page_chunks(range(image.page_count + 1), PAGE_SIZE))
    with pytest.raises(ValueError, match="outside"):
        list(image.iter_page_chunks([image.page_count], PAGE_SIZE))


def test_copying_the_dirty_pages_brings_a_stale_copy_up_to_date():
    source = MemoryImage(64, 64 * MIB, seed=5)
    target = MemoryImage.empty(64, 64 * MIB)
    for first, data in source.iter_chunks(1024 * 1024):
        target.write_pages(first, data)
    model = DirtyModel.from_mib(wws_mib=16, dirty_rate_mib_s=40, seed=5)  # thousands of pages per round
    for t in range(2):
        model.advance(source, float(t), t + 1.0)
        dirty = source.take_dirty()
        assert len(dirty) > 2000
        assert target.content_hash() != source.content_hash()
        for first, data in source.iter_page_chunks(dirty, 256 * 1024):
            target.write_pages(first, data)
        assert target.content_hash() == source.content_hash()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("write"), st.integers(0, 60), st.integers(1, 8)),
                          st.tuples(st.just("mark"), st.lists(st.integers(0, 63), max_size=6)),
                          st.tuples(st.just("take"))), max_size=25))
def test_whole_chunk_writes_and_single_marks_log_exactly_the_pages_set_since_the_last_take(steps):
    # write_pages marks its pages as one range (no per-page loop when none is
    # set yet); the log must still hold each page once, whatever came before.
    image = MemoryImage.empty(1, 64 * PAGE_SIZE)
    model: set[int] = set()
    for step in steps:
        if step[0] == "write":
            first, count = step[1], min(step[2], 64 - step[1])
            image.write_pages(first, bytes(count * PAGE_SIZE))
            model |= set(range(first, first + count))
        elif step[0] == "mark":
            image.mark_dirty(step[1])
            model |= set(step[1])
        else:
            assert image.take_dirty() == sorted(model)
            model = set()
        assert image.dirty_count == len(model)
    assert image.take_dirty() == sorted(model)
