"""The pre-copy planner against Xen's rules (Clark et al., NSDI 2005; BENCHMARKS.md section 3)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.precopy import (MBIT_S, MIB, PreCopy, PreCopyError, PreCopyLimits, Round, StopAndCopy,
                                StopReason, downtime_estimate_s, migration_cost_s, simulate)
from hypervisor.memory import PAGE_SIZE, PAGES_PER_MIB, DirtyModel, MemoryImage

FLAT = PreCopyLimits(bandwidth_limit_bytes_s=100 * MIB, xen_rate_adaptation=False)  # every round at the max


def drive(pre: PreCopy, dirty_counts: list[int], elapsed_s: float = 1.0) -> list[Round | StopAndCopy]:
    """Feeds dirty sets of the given sizes (pages 0..k-1) until the planner stops or the list ends."""
    steps: list[Round | StopAndCopy] = [pre.first_round()]
    for count in dirty_counts:
        steps.append(pre.after_round(range(count), elapsed_s))
        if isinstance(steps[-1], StopAndCopy):
            break
    return steps


# -- the stop rules, one at a time -------------------------------------------------------
def test_round_one_sends_every_page_and_later_rounds_send_the_previous_dirty_set():
    pre = PreCopy(10_000, PAGE_SIZE, FLAT)
    first = pre.first_round()
    assert (first.number, list(first.pages)) == (1, list(range(10_000)))
    dirty = [3, 70] + list(range(100, 200)) + [9_999]
    second = pre.after_round(dirty, 1.0)
    assert isinstance(second, Round)
    assert second.number == 2 and list(second.pages) == dirty


def test_a_dirty_set_under_50_pages_stops_with_that_set_as_the_final_copy():
    steps = drive(PreCopy(10_000, PAGE_SIZE, FLAT), [500, 49])
    final = steps[-1]
    assert isinstance(final, StopAndCopy) and final.reason is StopReason.DIRTY_SMALL
    assert final.number == 3 and final.page_count == 49


def test_a_dirty_set_of_exactly_50_pages_gets_another_live_round():
    steps = drive(PreCopy(10_000, PAGE_SIZE, FLAT), [500, 50])
    assert isinstance(steps[-1], Round) and steps[-1].page_count == 50


def test_a_round_at_max_rate_that_sent_more_than_the_one_before_stops_for_no_progress():
    # Sent per round: 10 000, 100, 200: round 3 grew at the max rate.
    steps = drive(PreCopy(10_000, PAGE_SIZE, FLAT), [100, 200, 300])
    final = steps[-1]
    assert isinstance(final, StopAndCopy) and final.reason is StopReason.NO_PROGRESS
    assert final.number == 4 and final.page_count == 300


def test_a_growing_round_below_the_max_rate_does_not_stop():
    # Xen pacing: 200 pages/s dirtying is far below 500 Mbit/s, so more rate can still help.
    pre = PreCopy(10_000, PAGE_SIZE, PreCopyLimits(bandwidth_limit_bytes_s=1e9))
    steps = drive(pre, [100, 200, 300])
    assert all(isinstance(s, Round) for s in steps)
    assert steps[-1].rate_bytes_s < pre.limits.rate_top_bytes_s


def test_an_equal_round_at_max_rate_is_not_a_lack_of_progress():
    steps = drive(PreCopy(10_000, PAGE_SIZE, FLAT), [100, 100, 100])
    assert all(isinstance(s, Round) for s in steps)


def test_more_than_three_times_the_memory_sent_stops():
    # Every page dirtied each round; equal rounds never trip NO_PROGRESS.
    steps = drive(PreCopy(1_000, PAGE_SIZE, FLAT), [1_000] * 10)
    final = steps[-1]
    assert isinstance(final, StopAndCopy) and final.reason is StopReason.SENT_FACTOR_MAX
    # After 3 rounds exactly 3x is sent (not more); the 4th round crosses it.
    assert final.number == 5 and final.page_count == 1_000


def test_the_round_limit_makes_the_stop_and_copy_round_30():
    steps = drive(PreCopy(100_000, PAGE_SIZE, FLAT), [100] * 40)
    final = steps[-1]
    assert isinstance(final, StopAndCopy) and final.reason is StopReason.ROUNDS_MAX
    assert final.number == 30 and len(steps) == 30  # 29 live rounds, then the stop-and-copy


def test_the_round_limit_is_configurable():
    steps = drive(PreCopy(100_000, PAGE_SIZE, PreCopyLimits(rounds_max=5, xen_rate_adaptation=False)), [100] * 10)
    assert steps[-1].number == 5 and steps[-1].reason is StopReason.ROUNDS_MAX


def test_an_empty_dirty_set_stops_with_nothing_but_device_state():
    pre = PreCopy(256, PAGE_SIZE, FLAT)
    final = drive(pre, [0])[-1]
    assert isinstance(final, StopAndCopy) and final.page_count == 0
    assert final.accounted_bytes == FLAT.device_state_bytes


# -- rates ----------------------------------------------------------------------------
def test_xen_rate_starts_at_100_mbit_and_follows_the_dirtying_rate_plus_50():
    pre = PreCopy(100_000, PAGE_SIZE, PreCopyLimits(bandwidth_limit_bytes_s=1e9))
    assert pre.first_round().rate_bytes_s == 100 * MBIT_S
    # 1 000 pages/s is 4.1 MB/s; +6.25 MB/s is under the start rate: stays at 100 Mbit/s.
    assert pre.after_round(range(1_000), 1.0).rate_bytes_s == 100 * MBIT_S
    # 10 000 pages in 1 s: 40.96 MB/s + 50 Mbit/s.
    assert pre.after_round(range(10_000), 1.0).rate_bytes_s == pytest.approx(10_000 * PAGE_SIZE + 50 * MBIT_S)
    # 20 000 pages in 0.1 s would need 819 MB/s: capped at 500 Mbit/s.
    assert pre.after_round(range(20_000), 0.1).rate_bytes_s == 500 * MBIT_S


def test_the_bandwidth_limit_caps_the_xen_rate():
    pre = PreCopy(100_000, PAGE_SIZE, PreCopyLimits(bandwidth_limit_bytes_s=5e6))
    assert pre.first_round().rate_bytes_s == 5e6
    assert pre.after_round(range(20_000), 0.1).rate_bytes_s == 5e6


def test_without_xen_adaptation_every_round_and_the_final_copy_go_at_the_limit():
    steps = drive(PreCopy(100_000, PAGE_SIZE, FLAT), [1_000, 10])
    assert [s.rate_bytes_s for s in steps] == [100 * MIB] * 3


def test_the_stop_and_copy_goes_at_the_hard_cap_not_at_the_xen_rate():
    limits = PreCopyLimits(bandwidth_limit_bytes_s=1e9)
    final = drive(PreCopy(1_000, PAGE_SIZE, limits), [10])[-1]
    assert final.rate_bytes_s == 1e9
    assert final.downtime_estimate_s == pytest.approx((10 * PAGE_SIZE + limits.device_state_bytes) / 1e9)


def test_at_the_limit_below_xen_max_growth_stops_for_no_progress():
    # The limit (5 MB/s) is below 500 Mbit/s, so it is the max rate even with Xen pacing on.
    steps = drive(PreCopy(10_000, PAGE_SIZE, PreCopyLimits(bandwidth_limit_bytes_s=5e6)), [100, 200, 300])
    assert steps[-1].reason is StopReason.NO_PROGRESS


# -- accounting -------------------------------------------------------------------------
def test_virtual_pages_count_as_accounted_bytes_but_only_real_pages_ship():
    pre = PreCopy(1_000, PAGE_SIZE, FLAT, real_page_count=100)
    first = pre.first_round()
    assert (first.accounted_bytes, first.real_bytes, len(first.real_pages)) == (
        1_000 * PAGE_SIZE, 100 * PAGE_SIZE, 100)
    second = pre.after_round([50, 99, 100, 900] + list(range(901, 960)), 0.5)
    assert list(second.real_pages) == [50, 99]
    final = pre.after_round([7, 500], 0.25)
    assert isinstance(final, StopAndCopy) and list(final.real_pages) == [7]
    stats = pre.after_stop_and_copy(0.01)
    assert stats.rounds == 2 and stats.pages_sent_per_round == (1_000, 63)
    assert stats.accounted_bytes_sent == (1_000 + 63 + 2) * PAGE_SIZE + FLAT.device_state_bytes
    assert stats.real_bytes_sent == (100 + 2 + 1) * PAGE_SIZE
    assert (stats.downtime_pages, stats.downtime_real_pages) == (2, 1)
    assert stats.precopy_s == 0.75 and stats.downtime_s == 0.01
    assert stats.stop_reason is StopReason.DIRTY_SMALL


# -- misuse by the caller -------------------------------------------------------------------
def test_steps_out_of_order_are_refused():
    pre = PreCopy(1_000, PAGE_SIZE, FLAT)
    with pytest.raises(PreCopyError, match="in flight"):
        pre.after_round([], 1.0)
    pre.first_round()
    with pytest.raises(PreCopyError, match="twice"):
        pre.first_round()
    with pytest.raises(PreCopyError, match="in flight"):
        pre.after_stop_and_copy(0.0)
    pre.after_round([1], 1.0)
    assert pre.done
    with pytest.raises(PreCopyError, match="in flight"):
        pre.after_round([1], 1.0)


@pytest.mark.parametrize(("pages", "elapsed_s", "message"), [
    ([5, 3], 1.0, "ascending"),
    ([3, 3], 1.0, "ascending"),
    ([1_000], 1.0, "outside"),
    ([-1], 1.0, "outside"),
    ([1], -0.1, "elapsed_s"),
    ([1], float("inf"), "elapsed_s"),
])
def test_bad_round_reports_are_refused_and_change_nothing(pages, elapsed_s, message):
    pre = PreCopy(1_000, PAGE_SIZE, FLAT)
    pre.first_round()
    with pytest.raises(PreCopyError, match=message):
        pre.after_round(pages, elapsed_s)
    assert pre.stats.rounds == 0
    assert isinstance(pre.after_round(range(60), 1.0), Round)


@pytest.mark.parametrize("changes", [
    {"rounds_max": 1}, {"sent_factor_max": 0.5}, {"bandwidth_limit_bytes_s": 0},
    {"bandwidth_limit_bytes_s": float("nan")}, {"rate_start_bytes_s": 600 * MBIT_S}, {"dirty_pages_min": -1},
])
def test_bad_limits_are_refused(changes):
    with pytest.raises(PreCopyError):
        PreCopyLimits(**changes)


# -- properties --------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(total=st.integers(1, 5_000), counts=st.lists(st.integers(0, 5_000), min_size=40, max_size=40),
       adaptive=st.booleans(), elapsed_s=st.floats(0, 10))
def test_any_dirtying_ends_in_a_stop_and_copy_within_xen_bounds(total, counts, adaptive, elapsed_s):
    limits = PreCopyLimits(bandwidth_limit_bytes_s=50e6, xen_rate_adaptation=adaptive)
    pre = PreCopy(total, PAGE_SIZE, limits)
    steps = drive(pre, [min(c, total) for c in counts], elapsed_s)
    final = steps[-1]
    assert isinstance(final, StopAndCopy)
    stats = pre.stats
    assert stats.rounds <= limits.rounds_max - 1
    # The 3x check runs after a round, so a round may overshoot it by at most one image.
    assert sum(stats.pages_sent_per_round) <= (limits.sent_factor_max + 1) * total
    assert all(s.rate_bytes_s <= limits.bandwidth_limit_bytes_s for s in steps)
    if final.reason is StopReason.DIRTY_SMALL:
        assert final.page_count < limits.dirty_pages_min


# -- end to end with a real image ----------------------------------------------------------------
def migrate(source: MemoryImage, model: DirtyModel, limits: PreCopyLimits) -> tuple[MemoryImage, PreCopy, str]:
    """Pure simulation of the runtime loop: rounds take bytes / rate of model time while
    the guest keeps writing; returns the target, the planner and the source hash at pause."""
    target = MemoryImage.empty(source.size_mib, source.real_bytes_max)
    pre = PreCopy.for_image(source, limits)
    source.take_dirty()  # log-dirty on
    now_s = 0.0
    step: Round | StopAndCopy = pre.first_round()
    while isinstance(step, Round):
        for first, data in source.iter_page_chunks(step.real_pages, 256 * 1024):
            target.write_pages(first, data)
        elapsed_s = step.accounted_bytes / step.rate_bytes_s
        model.advance(source, now_s, now_s + elapsed_s)
        now_s += elapsed_s
        step = pre.after_round(source.take_dirty(), elapsed_s)
    paused_hash = source.content_hash()  # the guest is paused: nothing writes from here
    assert target.content_hash() != paused_hash or step.page_count == 0
    for first, data in source.iter_page_chunks(step.real_pages, 256 * 1024):
        target.write_pages(first, data)
    pre.after_stop_and_copy(step.downtime_estimate_s)
    return target, pre, paused_hash


def test_pre_copy_then_stop_and_copy_rebuilds_the_image_exactly():
    source = MemoryImage(64, 64 * MIB, seed=21)
    target, pre, paused_hash = migrate(source, DirtyModel.from_mib(4, 20, seed=3),
                                       PreCopyLimits(bandwidth_limit_bytes_s=1e9))
    assert target.content_hash() == paused_hash == source.content_hash()
    stats = pre.stats
    assert stats.stop_reason is StopReason.DIRTY_SMALL and stats.rounds > 2
    assert stats.real_bytes_sent + pre.limits.device_state_bytes == stats.accounted_bytes_sent


def test_skipping_the_final_copy_leaves_the_target_stale():
    source = MemoryImage(16, 16 * MIB, seed=2)
    model = DirtyModel.from_mib(wws_mib=4, dirty_rate_mib_s=400, seed=1)
    target = MemoryImage.empty(16, 16 * MIB)
    pre = PreCopy.for_image(source, FLAT)
    step = pre.first_round()
    for first, data in source.iter_page_chunks(step.real_pages, 256 * 1024):
        target.write_pages(first, data)
    model.advance(source, 0.0, 0.16)
    final = pre.after_round(source.take_dirty(), 0.16)
    assert target.content_hash() != source.content_hash() and final.page_count > 0


def test_with_capped_real_bytes_virtual_dirty_pages_are_accounted_and_the_hash_still_matches():
    source = MemoryImage(size_mib=64, real_bytes_max=2 * MIB, seed=8)  # WWS spans real and virtual pages
    target, pre, paused_hash = migrate(source, DirtyModel.from_mib(4, 20, seed=4),
                                       PreCopyLimits(bandwidth_limit_bytes_s=1e9))
    assert target.content_hash() == paused_hash
    stats = pre.stats
    assert stats.real_bytes_sent < stats.accounted_bytes_sent - 62 * MIB


def test_a_guest_dirtying_faster_than_the_link_is_forced_to_stop_by_the_3x_rule():
    source = MemoryImage(64, 64 * MIB, seed=5)
    # 200 MiB/s of writes into a 16 MiB WWS against a 50 MiB/s link: every round resends the WWS.
    target, pre, paused_hash = migrate(source, DirtyModel.from_mib(16, 200, seed=5),
                                       PreCopyLimits(bandwidth_limit_bytes_s=50 * MIB, xen_rate_adaptation=False))
    stats = pre.stats
    assert stats.stop_reason is StopReason.SENT_FACTOR_MAX
    assert stats.pages_sent_per_round == (64 * PAGES_PER_MIB,) + (16 * PAGES_PER_MIB,) * 9
    assert stats.downtime_pages == 16 * PAGES_PER_MIB  # the large final set is reported, not hidden
    assert stats.downtime_estimate_s > 0.3
    assert target.content_hash() == paused_hash


def test_a_guest_dirtying_faster_than_the_link_with_a_small_wws_hits_the_round_limit():
    stats = simulate(64 * PAGES_PER_MIB, PreCopyLimits(bandwidth_limit_bytes_s=50 * MIB, xen_rate_adaptation=False),
                     wws_pages=PAGES_PER_MIB, dirty_rate_pages_s=200 * PAGES_PER_MIB)
    assert stats.stop_reason is StopReason.ROUNDS_MAX
    assert stats.rounds == 29 and stats.downtime_pages == PAGES_PER_MIB


# -- estimates -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dirty_rate_mib_s", [0, 20, 200, 954, 5_000])
def test_a_wws_under_5_mib_at_1_gb_s_means_downtime_under_50_ms(dirty_rate_mib_s):
    downtime_s = downtime_estimate_s(memory_mib=1024, wws_mib=4.9, dirty_rate_mib_s=dirty_rate_mib_s,
                                     bandwidth_mib_s=1e9 / MIB)
    assert downtime_s < 0.050


def test_migration_cost_without_dirtying_is_mmt_memory_over_bandwidth():
    device_s = PreCopyLimits().device_state_bytes / (100 * MIB)
    assert migration_cost_s(870, 0, 100) == pytest.approx(8.70 + device_s)


def test_migration_cost_grows_with_the_dirty_rate_and_stays_bounded_by_xen_rules():
    costs = [migration_cost_s(1024, rate, 100) for rate in (0, 10, 50, 90, 100, 1_000)]
    assert costs == sorted(costs)
    # At most 3x the memory in live rounds plus one overshooting round plus the final copy.
    assert costs[-1] <= 5 * 1024 / 100 + 1
    assert all(math.isfinite(c) for c in costs)


def test_bad_estimate_inputs_are_refused():
    with pytest.raises(PreCopyError):
        migration_cost_s(1024, 10, 0)
    with pytest.raises(PreCopyError):
        downtime_estimate_s(1024, -1, 10, 100)
