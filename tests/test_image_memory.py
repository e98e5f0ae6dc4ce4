"""agent/runtime/image_memory.py: a target's image memory faulted in off the
event loop, and the allocator setting that keeps chunk buffers warm."""

from __future__ import annotations

import asyncio
import platform
import sys
import threading
import time
from random import Random

import pytest

from agent.core.config import AgentConfig
from agent.core.handoff import TargetHandoffs
from agent.core.messages import PrepareRequest
from agent.runtime import image_memory
from hypervisor.domain import DomainSpec
from hypervisor.host import Host, HostSpec
from hypervisor.memory import PAGE_SIZE, PAGES_PER_MIB, MemoryImage

MIB = 1024 * 1024
BIG = 4 * image_memory.PREFAULT_BYTES_MIN  # takes the mmap + populating-thread path


def join_prefaulters(timeout_s: float = 30.0) -> None:
    for thread in threading.enumerate():
        if thread.name == "shoal-prefault":
            thread.join(timeout_s)
            assert not thread.is_alive(), "the prefault thread never finished"


def test_small_buffers_are_plain_zeroed_bytearrays():
    buf = image_memory.zeroed_buffer(3 * PAGE_SIZE)
    assert isinstance(buf, bytearray) and buf == bytes(3 * PAGE_SIZE)


def test_large_buffer_is_zeroed_and_keeps_bytes_written_while_it_is_faulted_in():
    buf = image_memory.zeroed_buffer(BIG)
    assert len(buf) == BIG
    # Written at once, while the populating thread is (most likely) still
    # short of these pages: populating must never zero what the loop wrote.
    marks = {0: b"first", BIG - PAGE_SIZE: b"last page", BIG // 2 + 123: b"middle"}
    with memoryview(buf) as view:
        for offset, data in marks.items():
            view[offset:offset + len(data)] = data
    join_prefaulters()
    with memoryview(buf) as view:
        for offset, data in marks.items():
            assert bytes(view[offset:offset + len(data)]) == data
        # Everything else is still zero.
        assert bytes(view[8 * PAGE_SIZE:16 * PAGE_SIZE]) == bytes(8 * PAGE_SIZE)
    assert sum(bytes(buf).count(m) for m in marks.values()) == len(marks)
    assert bytes(buf).count(0) == BIG - sum(len(m) for m in marks.values())


def test_image_on_prefaulted_memory_receives_and_hashes_like_a_bytearray_one():
    size_mib = BIG // MIB
    source = MemoryImage(size_mib, BIG, seed=11)
    received = MemoryImage.empty(size_mib, BIG, allocate=image_memory.zeroed_buffer)
    # Round 1 whole, then a few scattered pages rewritten (a later round).
    for first, data in source.iter_chunks(MIB):
        received.write_pages(first, data)
    rng = Random(3)
    for page in rng.sample(range(source.real_page_count), 40):
        data = rng.randbytes(PAGE_SIZE)
        source.write_pages(page, data)
        received.write_pages(page, memoryview(data))  # a decoded chunk may be a view
    join_prefaulters()
    assert received.content_hash() == source.content_hash() == received.content_hash_uncached()
    assert received.read_pages(0, size_mib * PAGES_PER_MIB) == source.read_pages(0, size_mib * PAGES_PER_MIB)


def _resident_pages(buf) -> int:
    """Pages of buf resident in memory (mincore)."""
    import ctypes
    import mmap as mmap_module

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    pages = len(buf) // mmap_module.PAGESIZE
    vec = ctypes.create_string_buffer(pages)
    anchor = ctypes.c_char.from_buffer(buf)
    try:
        assert libc.mincore(ctypes.addressof(anchor), len(buf), vec) == 0, ctypes.get_errno()
    finally:
        del anchor
    return sum(b & 1 for b in vec.raw)


def test_wait_populated_returns_when_every_page_is_faulted_in():
    buf = image_memory.zeroed_buffer(BIG)
    # Elsewhere a plain bytearray, which has nothing to wait for (the wait answers True at once).
    assert isinstance(buf, image_memory.PopulatingBuffer if sys.platform.startswith("linux") else bytearray)
    assert asyncio.run(image_memory.wait_populated(buf, 30.0)) is True
    assert buf.populated.is_set()
    release = tuple(int(x) for x in platform.release().split("-")[0].split(".")[:2])
    # MADV_POPULATE_WRITE (Linux 5.14): every page is in before the first write.
    if sys.platform.startswith("linux") and release >= (5, 14):
        assert _resident_pages(buf) == BIG // PAGE_SIZE
    assert bytes(buf) == bytes(BIG)


def test_wait_populated_is_bounded_by_its_timeout():
    buf = image_memory.PopulatingBuffer(-1, 4 * PAGE_SIZE)
    buf.populated = threading.Event()  # a populating thread that never finishes
    started = time.monotonic()
    assert asyncio.run(image_memory.wait_populated(buf, 0.05)) is False
    assert 0.04 <= time.monotonic() - started < 5.0
    assert asyncio.run(image_memory.wait_populated(buf, 0.0)) is False
    buf.populated.set()
    assert asyncio.run(image_memory.wait_populated(buf, 0.0)) is True


def test_wait_populated_has_nothing_to_wait_for_on_other_buffers():
    assert asyncio.run(image_memory.wait_populated(bytearray(PAGE_SIZE), 0.0)) is True


def test_empty_refuses_an_allocator_that_returns_the_wrong_size():
    with pytest.raises(ValueError, match="returned"):
        MemoryImage.empty(1, MIB, allocate=lambda n: bytearray(n - PAGE_SIZE))


def test_target_allocates_incoming_images_with_its_allocator():
    sizes: list[int] = []

    def allocate(n: int) -> bytearray:
        sizes.append(n)
        return bytearray(n)

    config = AgentConfig(image_real_bytes_max=64 * 1024)
    target = TargetHandoffs("tgt", Host(HostSpec(8.0, 4096)), config, allocate_image=allocate)
    spec = DomainSpec(domain_id="d1", vcpus=1, memory_mib=128)
    decision = target.on_prepare(0.0, PrepareRequest("m1", "src", spec, 1, 0.5, 4.0, 8.0, 64 * 1024, False), 0.0)
    assert decision.accepted, decision.reason
    assert sizes == [64 * 1024]


def test_tune_allocator_is_idempotent():
    first = image_memory.tune_allocator()
    assert image_memory.tune_allocator() is first
    if sys.platform.startswith("linux") and "glibc" in " ".join(__import__("platform").libc_ver()):
        assert first
