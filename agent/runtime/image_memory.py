"""Memory for migration images: allocated without stalling the event loop.

Theory of operation
-------------------
Two costs dominate a large migration on a VM like the ones Shoal runs on
(Firecracker, no transparent huge pages): first touches of fresh pages
(about 2.5-3 us per 4 KiB page) and copies. Measured on `shoal bench
migration --size-mib 256`, the target took 150 000-170 000 minor faults
where the image holds 65 536 pages (now ~75 000), ~0.45 s of system time:

- `bytearray(n)` for the target's image memsets it, faulting every page in
  the PREPARE handler, on the event loop, before the first byte moves
  (~165 ms for 256 MiB). `zeroed_buffer` returns an anonymous mmap instead
  (zero-filled by the kernel, nothing touched) and a daemon thread asks the
  kernel to fault it in from the front with `madvise(MADV_POPULATE_WRITE)`
  (Linux >= 5.14). The call goes through ctypes, which releases the GIL, so
  the loop keeps serving meanwhile; `mmap.madvise` would hold the GIL for the
  whole call. Populating never changes a page's bytes, so a page the loop
  wrote first keeps them. Where madvise is missing or refuses, pages fault on
  first write instead: the cost moves into the writes, no worse than the memset.
- The target allocates when it accepts a PREPARE (it reserves the guest's
  memory then, as a hypervisor does), and `wait_populated` lets the PREPARE
  answer wait for the thread, bounded by the RPC's deadline: the faults are
  then paid before round 1 instead of competing with it for the CPU
  (populating 256 MiB took 60-140 ms here, up to ~600 ms when the microVM's
  host had not backed those pages yet, against ~360 ms of the target's CPU for
  the whole migration). An image not populated in time is still correct: the
  thread goes on, and pages it has not reached fault on first write.
  Not done: transparent huge pages (`MADV_HUGEPAGE`; THP is in madvise mode
  here) halve a warm populate (30 ms against 60 ms for 256 MiB) but took
  380-700 ms in a fresh process, measured, when the huge pages came from
  memory the host had not backed yet.
- glibc returns freed heap to the kernel (trim) and serves large requests
  with fresh mmaps, so every 1 MiB chunk (protobuf, gRPC's buffers, the
  bytes objects) lands on fresh pages and faults again. `tune_allocator`
  fixes the mmap threshold and raises the trim threshold, so freed chunk
  buffers are reused; each malloc arena keeps at most `TRIM_THRESHOLD_BYTES`
  of free heap. Applied once per process, by the first migration (either side) and
  by the benchmark's raw-TCP reference, so both sides of that comparison run
  on the same allocator settings.

Everything here is best effort: on another libc or OS the functions fall back
to a plain bytearray and leave malloc alone.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import mmap
import sys
import threading

log = logging.getLogger("shoal.memory")

# Smaller images are a plain bytearray: the memset is cheap and no thread is worth it.
PREFAULT_BYTES_MIN = 8 * 1024 * 1024
# Populated per call: small enough that the populating thread stays ahead of
# round 1's writer should PREPARE stop waiting for it, large enough that GIL
# hand-offs between calls are few.
PREFAULT_STEP_BYTES = 16 * 1024 * 1024
_MADV_POPULATE_WRITE = 23  # linux/mman.h, Linux 5.14

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Requests at or above this are mmapped (and unmapped on free): above the
# 1 MiB transfer chunk and gRPC's message buffers, below any image.
MMAP_THRESHOLD_BYTES = 8 * 1024 * 1024
# Free heap an arena keeps for reuse before giving it back to the kernel: 16 MiB
# already stops the refaults with 1 MiB chunks (measured; 8 MiB does not).
TRIM_THRESHOLD_BYTES = 32 * 1024 * 1024

_libc = None
_tuned = False
_lock = threading.Lock()


def _load_libc():
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(None, use_errno=True)
            lib.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            lib.madvise.restype = ctypes.c_int
            lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            lib.mallopt.restype = ctypes.c_int
            _libc = lib
        except (OSError, AttributeError):
            _libc = False
    return _libc or None


def tune_allocator() -> bool:
    """Keeps freed bulk buffers in the heap for reuse (glibc only); idempotent.
    Returns whether the settings are in force."""
    global _tuned
    with _lock:
        if _tuned:
            return True
        libc = _load_libc() if sys.platform.startswith("linux") else None
        if libc is None:
            return False
        ok = (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
              and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1)
        _tuned = ok
        if not ok:
            log.info("mallopt refused; bulk transfers will fault fresh pages")
        return ok


class PopulatingBuffer(mmap.mmap):
    """A private anonymous mapping being faulted in by a thread; `populated` is
    set when the thread is done (whether madvise populated it all or gave up)."""

    populated: threading.Event


def zeroed_buffer(size_bytes: int) -> "bytearray | mmap.mmap":
    """A writable zero-filled buffer of size_bytes, faulted in off the event loop."""
    if size_bytes < PREFAULT_BYTES_MIN or not sys.platform.startswith("linux"):
        return bytearray(size_bytes)
    # Private anonymous: zero pages, nothing touched yet (the default, MAP_SHARED, is shmem).
    libc = _load_libc()
    if libc is None:
        return mmap.mmap(-1, size_bytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf = PopulatingBuffer(-1, size_bytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.populated = threading.Event()
    threading.Thread(target=_populate, args=(libc, buf, size_bytes), name="shoal-prefault", daemon=True).start()
    return buf


async def wait_populated(buf: object, timeout_s: float) -> bool:
    """Waits (off the loop) at most timeout_s for `buf`'s populating thread;
    returns whether it is done. Any other buffer has nothing to wait for."""
    if not isinstance(buf, PopulatingBuffer):
        return True
    if buf.populated.is_set():
        return True
    if timeout_s <= 0:
        return False
    return await asyncio.to_thread(buf.populated.wait, timeout_s)


def _populate(libc, buf: PopulatingBuffer, size_bytes: int) -> None:
    try:
        anchor = ctypes.c_char.from_buffer(buf)  # pins the mapping while we work on it
        try:
            base = ctypes.addressof(anchor)
            for offset in range(0, size_bytes, PREFAULT_STEP_BYTES):
                # ctypes drops the GIL for the call: the loop runs meanwhile.
                if libc.madvise(base + offset, min(PREFAULT_STEP_BYTES, size_bytes - offset),
                                _MADV_POPULATE_WRITE) != 0:
                    return  # old kernel (EINVAL) or no memory yet (ENOMEM): first writes fault instead
        finally:
            del anchor
    finally:
        buf.populated.set()
