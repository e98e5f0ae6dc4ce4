"""Pre-copy live migration: which pages each round sends, at what rate, and
when to stop and copy (Clark et al., "Live Migration of Virtual Machines",
NSDI 2005, section 3; Xen's xc_domain_save).

Theory of operation
-------------------
The planner is a clock-free state machine fed by the runtime. It never reads
memory or a clock: the runtime tells it what the guest dirtied during a round
and how long the round took, and it answers with the next directive.

    pre = PreCopy.for_image(image, limits)
    image.take_dirty()                    # start the dirty log (Xen: log-dirty on)
    step = pre.first_round()              # Round 1: every page
    while isinstance(step, Round):
        send step.real_pages at step.rate_bytes_s; let the guest run meanwhile
        step = pre.after_round(image.take_dirty(), elapsed_s)
    pause the guest; send step.real_pages and the device state (StopAndCopy)
    pre.after_stop_and_copy(downtime_s)

Round 1 sends every page; round n+1 sends the pages dirtied during round n.
After each live round the planner stops (and the guest is paused, so the dirty
set just taken is final) when, checked in this order:

- DIRTY_SMALL: the dirty set just taken has fewer than `dirty_pages_min` (50)
  pages. Xen tests the round just *sent* (`sent_this_iter < 50`); that round
  is the previous dirty set, so testing the fresh dirty set stops one tiny
  live round earlier and bounds the stop-and-copy at 50 pages.
- NO_PROGRESS: the round just sent went at the maximum rate and sent more
  pages than the round before it (Xen 3.0: `sent_this_iter > sent_last_iter
  && RATE_IS_MAX()`): more bandwidth cannot help, the guest outruns it.
- SENT_FACTOR_MAX: more than `sent_factor_max` (3) times the image has been
  sent in live rounds (Xen: `total_sent > p2m_size * max_factor`).
- ROUNDS_MAX: `rounds_max - 1` (29) live rounds are done, so the
  stop-and-copy is round `rounds_max` (30) (Xen: DEF_MAX_ITERS 29, "limit us
  to 30 times round loop").

Rate (paper section 3, "dynamic rate-limiting"): round 1 goes at
`rate_start_bytes_s` (100 Mbit/s); round n+1 at the dirtying rate measured in
round n plus `rate_increment_bytes_s` (50 Mbit/s), kept within
[rate_start, rate_max] (500 Mbit/s). Shoal adds a per-migration
`bandwidth_limit_bytes_s`, the hard cap on every rate; "the maximum rate" is
min(rate_max, limit). With `xen_rate_adaptation=False` every round goes at the
limit, so the limit is also the maximum rate. The stop-and-copy is not rate
limited beyond the hard cap: the guest is paused and every millisecond is
downtime.

Accounting. Every page counts `page_size` accounted bytes; only real pages
(index < real_page_count, see hypervisor/memory.py) carry bytes the runtime
ships, so the stats keep `accounted_bytes_sent` (what a real guest of this
size would move, the number the rules and estimates use) apart from
`real_bytes_sent` (what really crossed the transport). The device state is
accounted only.

Misuse by the local caller (a step out of order, unsorted pages, a negative
time) raises PreCopyError; the planner has no remote peer.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Sequence

from hypervisor.memory import PAGE_SIZE, PAGES_PER_MIB, MemoryImage

MIB = 1024 * 1024
MBIT_S = 125_000  # bytes per second in 1 Mbit/s (Xen's rates are decimal megabits)


class PreCopyError(ValueError):
    """The caller drove the planner out of order or with bad input (a bug)."""


class StopReason(str, Enum):
    DIRTY_SMALL = "dirty_small"
    NO_PROGRESS = "no_progress"
    SENT_FACTOR_MAX = "sent_factor_max"
    ROUNDS_MAX = "rounds_max"


@dataclass(frozen=True)
class PreCopyLimits:
    # Shoal's per-migration cap; 1 GbE, the hosts of BENCHMARKS.md section 1.
    bandwidth_limit_bytes_s: float = 125_000_000.0
    # Xen: 29 live rounds, then the stop-and-copy: 30 rounds in all.
    rounds_max: int = 30
    # Xen: never send more than 3x the memory in live rounds.
    sent_factor_max: float = 3.0
    # Xen: a round under 50 pages is small enough to send with the guest paused.
    dirty_pages_min: int = 50
    # Clark et al.'s dynamic rate limiting; off: every round at the hard cap.
    xen_rate_adaptation: bool = True
    # Xen: the first round at 100 Mbit/s so the guest's own traffic keeps room.
    rate_start_bytes_s: float = 100 * MBIT_S
    # Xen: next rate = last round's dirtying rate + 50 Mbit/s.
    rate_increment_bytes_s: float = 50 * MBIT_S
    # Xen: at most 500 Mbit/s (half a 2005 gigabit link).
    rate_max_bytes_s: float = 500 * MBIT_S
    # vCPU context and device-model save records are tens of KiB in Xen.
    device_state_bytes: int = 32 * 1024

    def __post_init__(self) -> None:
        for name in ("bandwidth_limit_bytes_s", "sent_factor_max", "rate_start_bytes_s",
                     "rate_increment_bytes_s", "rate_max_bytes_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (value == 0 and name != "rate_increment_bytes_s"):
                raise PreCopyError(f"{name}: must be a positive finite number, got {value!r}")
        for name in ("rounds_max", "dirty_pages_min", "device_state_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PreCopyError(f"{name}: must be an integer >= 0, got {value!r}")
        if self.rounds_max < 2:
            raise PreCopyError(f"rounds_max: at least 2 (one live round, then stop-and-copy), "
                               f"got {self.rounds_max}")
        if self.sent_factor_max < 1:
            raise PreCopyError(f"sent_factor_max: at least 1 (round 1 sends the whole image), "
                               f"got {self.sent_factor_max}")
        if self.rate_start_bytes_s > self.rate_max_bytes_s:
            raise PreCopyError(f"rate_start_bytes_s ({self.rate_start_bytes_s}) exceeds "
                               f"rate_max_bytes_s ({self.rate_max_bytes_s})")
        if not isinstance(self.xen_rate_adaptation, bool):
            raise PreCopyError(f"xen_rate_adaptation: expected a bool, got {self.xen_rate_adaptation!r}")

    @property
    def rate_top_bytes_s(self) -> float:
        """The maximum rate a live round may get: what NO_PROGRESS compares with."""
        if self.xen_rate_adaptation:
            return min(self.rate_max_bytes_s, self.bandwidth_limit_bytes_s)
        return self.bandwidth_limit_bytes_s


@dataclass(frozen=True)
class Round:
    """Directive: send these pages (ascending) at this rate while the guest runs."""

    number: int
    pages: Sequence[int] = field(repr=False)
    real_pages: Sequence[int] = field(repr=False)  # the leading real ones: the only bytes to ship
    rate_bytes_s: float
    accounted_bytes: int
    real_bytes: int

    @property
    def page_count(self) -> int:
        return len(self.pages)


@dataclass(frozen=True)
class StopAndCopy:
    """Directive: pause the guest now; send these pages and the device state."""

    number: int
    pages: Sequence[int] = field(repr=False)
    real_pages: Sequence[int] = field(repr=False)
    rate_bytes_s: float
    accounted_bytes: int  # pages plus device state
    real_bytes: int
    device_state_bytes: int
    reason: StopReason
    downtime_estimate_s: float

    @property
    def page_count(self) -> int:
        return len(self.pages)


@dataclass(frozen=True)
class PreCopyStats:
    rounds: int  # live rounds completed (the stop-and-copy is not one of them)
    pages_sent_per_round: tuple[int, ...]
    rate_per_round_bytes_s: tuple[float, ...]
    accounted_bytes_sent: int  # live rounds, plus the stop-and-copy once it is issued
    real_bytes_sent: int
    precopy_s: float  # sum of the live rounds' elapsed times
    stop_reason: StopReason | None
    downtime_pages: int
    downtime_real_pages: int
    downtime_bytes: int  # accounted: pages plus device state
    downtime_estimate_s: float
    downtime_s: float | None  # measured, once the runtime reports it

    @property
    def total_s(self) -> float:
        downtime = self.downtime_s if self.downtime_s is not None else self.downtime_estimate_s
        return self.precopy_s + downtime


class PreCopy:
    """One migration's pre-copy plan. Not reusable: one instance per migration."""

    def __init__(self, total_pages: int, page_size: int = PAGE_SIZE, limits: PreCopyLimits | None = None,
                 real_page_count: int | None = None) -> None:
        for name, value in (("total_pages", total_pages), ("page_size", page_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise PreCopyError(f"{name} must be a positive integer, got {value!r}")
        real = total_pages if real_page_count is None else real_page_count
        if isinstance(real, bool) or not isinstance(real, int) or not 0 <= real <= total_pages:
            raise PreCopyError(f"real_page_count must be in 0..{total_pages}, got {real!r}")
        self.total_pages = total_pages
        self.page_size = page_size
        self.real_page_count = real
        self.limits = limits if limits is not None else PreCopyLimits()
        self._phase = "new"  # new -> copying -> stopping -> done
        self._current: Round | None = None
        self._final: StopAndCopy | None = None
        self._pages_sent: list[int] = []
        self._rates: list[float] = []
        self._accounted_bytes = 0
        self._real_bytes = 0
        self._precopy_s = 0.0
        self._downtime_s: float | None = None

    @classmethod
    def for_image(cls, image: MemoryImage, limits: PreCopyLimits | None = None) -> PreCopy:
        return cls(image.page_count, PAGE_SIZE, limits, image.real_page_count)

    @property
    def done(self) -> bool:
        """True once the stop-and-copy is issued: no more rounds."""
        return self._phase in ("stopping", "done")

    def first_round(self) -> Round:
        if self._phase != "new":
            raise PreCopyError(f"first_round() called twice (phase {self._phase})")
        self._phase = "copying"
        rate = self.limits.rate_start_bytes_s if self.limits.xen_rate_adaptation else math.inf
        self._current = self._round(1, range(self.total_pages), min(rate, self.limits.bandwidth_limit_bytes_s))
        return self._current

    def after_round(self, dirtied_pages: Sequence[int], elapsed_s: float) -> Round | StopAndCopy:
        """The round just directed is sent; `dirtied_pages` (ascending) were
        dirtied while it ran, over `elapsed_s`. Returns the next directive."""
        if self._phase != "copying" or self._current is None:
            raise PreCopyError(f"after_round() needs a live round in flight (phase {self._phase})")
        self._check_elapsed(elapsed_s)
        self._check_pages(dirtied_pages)
        done = self._current
        self._pages_sent.append(done.page_count)
        self._rates.append(done.rate_bytes_s)
        self._accounted_bytes += done.accounted_bytes
        self._real_bytes += done.real_bytes
        self._precopy_s += elapsed_s
        reason = self._stop_reason(done, len(dirtied_pages))
        if reason is not None:
            return self._stop(done.number + 1, dirtied_pages, reason)
        self._current = self._round(done.number + 1, dirtied_pages,
                                    self._next_rate(len(dirtied_pages), elapsed_s))
        return self._current

    def after_stop_and_copy(self, elapsed_s: float) -> PreCopyStats:
        """The stop-and-copy is sent (the guest was paused `elapsed_s`)."""
        if self._phase != "stopping":
            raise PreCopyError(f"after_stop_and_copy() needs a stop-and-copy in flight (phase {self._phase})")
        self._check_elapsed(elapsed_s)
        self._phase = "done"
        self._downtime_s = elapsed_s
        return self.stats

    @property
    def stats(self) -> PreCopyStats:
        final = self._final
        return PreCopyStats(
            rounds=len(self._pages_sent),
            pages_sent_per_round=tuple(self._pages_sent),
            rate_per_round_bytes_s=tuple(self._rates),
            accounted_bytes_sent=self._accounted_bytes + (final.accounted_bytes if final else 0),
            real_bytes_sent=self._real_bytes + (final.real_bytes if final else 0),
            precopy_s=self._precopy_s,
            stop_reason=final.reason if final else None,
            downtime_pages=final.page_count if final else 0,
            downtime_real_pages=len(final.real_pages) if final else 0,
            downtime_bytes=final.accounted_bytes if final else 0,
            downtime_estimate_s=final.downtime_estimate_s if final else 0.0,
            downtime_s=self._downtime_s,
        )

    # -- rules -----------------------------------------------------------------------
    def _stop_reason(self, done: Round, dirty_count: int) -> StopReason | None:
        lim = self.limits
        if dirty_count < lim.dirty_pages_min:
            return StopReason.DIRTY_SMALL
        if (len(self._pages_sent) >= 2 and self._pages_sent[-1] > self._pages_sent[-2]
                and done.rate_bytes_s >= lim.rate_top_bytes_s):
            return StopReason.NO_PROGRESS
        if sum(self._pages_sent) > lim.sent_factor_max * self.total_pages:
            return StopReason.SENT_FACTOR_MAX
        if done.number >= lim.rounds_max - 1:
            return StopReason.ROUNDS_MAX
        return None

    def _next_rate(self, dirty_count: int, elapsed_s: float) -> float:
        lim = self.limits
        if not lim.xen_rate_adaptation:
            return lim.bandwidth_limit_bytes_s
        if elapsed_s > 0:
            dirty_rate = dirty_count * self.page_size / elapsed_s
        else:  # an instant round that still saw writes: the guest outruns any rate
            dirty_rate = math.inf if dirty_count else 0.0
        rate = min(max(dirty_rate + lim.rate_increment_bytes_s, lim.rate_start_bytes_s), lim.rate_max_bytes_s)
        return min(rate, lim.bandwidth_limit_bytes_s)

    # -- directives --------------------------------------------------------------------
    def _round(self, number: int, pages: Sequence[int], rate_bytes_s: float) -> Round:
        real = pages[:bisect_left(pages, self.real_page_count)]
        return Round(number, pages, real, rate_bytes_s, len(pages) * self.page_size,
                     len(real) * self.page_size)

    def _stop(self, number: int, pages: Sequence[int], reason: StopReason) -> StopAndCopy:
        real = pages[:bisect_left(pages, self.real_page_count)]
        rate = self.limits.bandwidth_limit_bytes_s
        device = self.limits.device_state_bytes
        accounted = len(pages) * self.page_size + device
        self._final = StopAndCopy(number, pages, real, rate, accounted, len(real) * self.page_size, device,
                                  reason, accounted / rate)
        self._current = None
        self._phase = "stopping"
        return self._final

    # -- caller misuse -----------------------------------------------------------------
    @staticmethod
    def _check_elapsed(elapsed_s: float) -> None:
        if isinstance(elapsed_s, bool) or not isinstance(elapsed_s, (int, float)) \
                or not math.isfinite(elapsed_s) or elapsed_s < 0:
            raise PreCopyError(f"elapsed_s must be a finite number >= 0, got {elapsed_s!r}")

    def _check_pages(self, pages: Sequence[int]) -> None:
        if not len(pages):
            return
        if isinstance(pages, range):
            if pages.step <= 0 or pages[0] < 0 or pages[-1] >= self.total_pages:
                raise PreCopyError(f"dirty range {pages} is not ascending inside 0..{self.total_pages - 1}")
            return
        if pages[0] < 0 or pages[-1] >= self.total_pages:
            raise PreCopyError(f"dirty pages {pages[0]}..{pages[-1]} outside 0..{self.total_pages - 1}")
        if any(a >= b for a, b in zip(pages, pages[1:])):
            raise PreCopyError("dirty pages must be strictly ascending (as MemoryImage.take_dirty returns them)")


# -- estimates -------------------------------------------------------------------------
def simulate(total_pages: int, limits: PreCopyLimits | None = None, *, wws_pages: int,
             dirty_rate_pages_s: float, real_page_count: int | None = None,
             page_size: int = PAGE_SIZE) -> PreCopyStats:
    """Runs the planner against a fluid model of the guest: a round of b bytes at
    rate r lasts b / r, and meanwhile min(WWS, rate x time) distinct pages get
    dirty. Pure and cheap (at most rounds_max steps)."""
    if isinstance(wws_pages, bool) or not isinstance(wws_pages, int) or wws_pages < 0:
        raise PreCopyError(f"wws_pages must be an integer >= 0, got {wws_pages!r}")
    if not math.isfinite(dirty_rate_pages_s) or dirty_rate_pages_s < 0:
        raise PreCopyError(f"dirty_rate_pages_s must be a finite number >= 0, got {dirty_rate_pages_s!r}")
    pre = PreCopy(total_pages, page_size, limits, real_page_count)
    step: Round | StopAndCopy = pre.first_round()
    while isinstance(step, Round):
        elapsed_s = step.accounted_bytes / step.rate_bytes_s
        dirty = min(wws_pages, total_pages, math.floor(dirty_rate_pages_s * elapsed_s + 0.5))
        step = pre.after_round(range(dirty), elapsed_s)
    return pre.after_stop_and_copy(step.downtime_estimate_s)


def _fluid(memory_mib: float, wws_mib: float, dirty_rate_mib_s: float, bandwidth_mib_s: float,
           limits: PreCopyLimits | None) -> PreCopyStats:
    for name, value in (("memory_mib", memory_mib), ("wws_mib", wws_mib),
                        ("dirty_rate_mib_s", dirty_rate_mib_s), ("bandwidth_mib_s", bandwidth_mib_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0 or (value == 0 and name in ("memory_mib", "bandwidth_mib_s")):
            raise PreCopyError(f"{name} must be a finite number >= 0 (memory and bandwidth > 0), got {value!r}")
    total_pages = max(1, round(memory_mib * PAGES_PER_MIB))
    # The estimate is of the link, not of Xen's pacing: every round at the given bandwidth.
    fluid_limits = replace(limits or PreCopyLimits(), bandwidth_limit_bytes_s=bandwidth_mib_s * MIB,
                           xen_rate_adaptation=False)
    return simulate(total_pages, fluid_limits, wws_pages=round(wws_mib * PAGES_PER_MIB),
                    dirty_rate_pages_s=dirty_rate_mib_s * PAGES_PER_MIB)


def migration_cost_s(memory_mib: float, dirty_rate_mib_s: float, bandwidth_mib_s: float, *,
                     wws_mib: float | None = None, limits: PreCopyLimits | None = None) -> float:
    """Estimated pre-copy time plus downtime, for ranking candidate domains as
    MMT does (Beloglazov & Buyya 2012: RAM / bandwidth). With no dirtying it
    is RAM / bandwidth plus the device state; a dirtying guest pays for its
    rounds, at most 3x its memory (Xen's cap) plus the final set. Without a
    WWS every page may be dirtied (the classic geometric-series model)."""
    stats = _fluid(memory_mib, memory_mib if wws_mib is None else wws_mib, dirty_rate_mib_s,
                   bandwidth_mib_s, limits)
    return stats.total_s


def downtime_estimate_s(memory_mib: float, wws_mib: float, dirty_rate_mib_s: float, bandwidth_mib_s: float, *,
                        limits: PreCopyLimits | None = None) -> float:
    """Estimated stop-and-copy time: the final dirty set (at most the WWS) and
    the device state at the given bandwidth, after Xen's rounds."""
    return _fluid(memory_mib, wws_mib, dirty_rate_mib_s, bandwidth_mib_s, limits).downtime_estimate_s
