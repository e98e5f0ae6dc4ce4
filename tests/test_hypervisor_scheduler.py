"""Proportional-share CPU allocation with caps (Xen credit scheduler model)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypervisor.scheduler import CpuRequest, allocate


def req(domain_id, demand_cores, weight=256, cap_cores=None):
    return CpuRequest(domain_id, demand_cores, weight, cap_cores)


def limit(r: CpuRequest) -> float:
    return r.demand_cores if r.cap_cores is None else min(r.demand_cores, r.cap_cores)


def test_demand_that_fits_is_granted_in_full():
    assert allocate(4.0, [req("a", 1.0), req("b", 2.5)]) == {"a": 1.0, "b": 2.5}


def test_overload_is_split_by_weight():
    granted = allocate(3.0, [req("a", 10.0, weight=512), req("b", 10.0, weight=256)])
    assert granted == pytest.approx({"a": 2.0, "b": 1.0})


def test_share_a_small_domain_leaves_goes_to_the_others():
    granted = allocate(4.0, [req("small", 0.5), req("big1", 10.0), req("big2", 10.0)])
    assert granted == pytest.approx({"small": 0.5, "big1": 1.75, "big2": 1.75})


def test_cap_limits_a_domain_even_when_cores_are_idle():
    granted = allocate(8.0, [req("capped", 4.0, cap_cores=1.5), req("free", 1.0)])
    assert granted == {"capped": 1.5, "free": 1.0}


def test_capped_domain_share_is_redistributed_by_weight():
    granted = allocate(
        6.0, [req("capped", 9.0, weight=1000, cap_cores=1.0), req("a", 9.0, weight=100), req("b", 9.0, weight=300)]
    )
    assert granted == pytest.approx({"capped": 1.0, "a": 1.25, "b": 3.75})


def test_result_keeps_request_order():
    assert list(allocate(1.0, [req("z", 1.0), req("a", 1.0), req("m", 1.0)])) == ["z", "a", "m"]


def test_no_requests_gives_empty_allocation():
    assert allocate(4.0, []) == {}


@pytest.mark.parametrize(
    ("capacity_cores", "requests", "message"),
    [
        (-1.0, [], "capacity_cores"),
        (math.inf, [], "capacity_cores"),
        (1.0, [req("a", -0.1)], "demand_cores"),
        (1.0, [req("a", math.nan)], "demand_cores"),
        (1.0, [req("a", 1.0, weight=0)], "weight"),
        (1.0, [req("a", 1.0, cap_cores=-1.0)], "cap_cores"),
        (1.0, [req("a", 1.0), req("a", 2.0)], "twice"),
    ],
)
def test_invalid_input_raises_value_error(capacity_cores, requests, message):
    with pytest.raises(ValueError, match=message):
        allocate(capacity_cores, requests)


@st.composite
def request_lists(draw):
    count = draw(st.integers(0, 12))
    return [
        CpuRequest(
            f"d{i}",
            draw(st.floats(0.0, 64.0)),
            draw(st.integers(1, 65535)),
            draw(st.none() | st.floats(0.0, 64.0)),
        )
        for i in range(count)
    ]


capacities = st.floats(0.0, 128.0)


@settings(max_examples=150)
@given(capacities, request_lists())
def test_total_never_exceeds_capacity(capacity_cores, requests):
    assert math.fsum(allocate(capacity_cores, requests).values()) <= capacity_cores


@settings(max_examples=150)
@given(capacities, request_lists())
def test_nobody_gets_more_than_its_demand_or_cap(capacity_cores, requests):
    granted = allocate(capacity_cores, requests)
    for r in requests:
        assert 0.0 <= granted[r.domain_id] <= limit(r)


@settings(max_examples=150)
@given(capacities, request_lists())
def test_everyone_gets_its_demand_when_total_demand_fits(capacity_cores, requests):
    granted = allocate(capacity_cores, requests)
    if math.fsum(limit(r) for r in requests) <= capacity_cores:
        assert granted == {r.domain_id: limit(r) for r in requests}


@settings(max_examples=150)
@given(capacities, request_lists())
def test_allocation_is_work_conserving(capacity_cores, requests):
    granted = allocate(capacity_cores, requests)
    wanted = math.fsum(limit(r) for r in requests)
    assert math.fsum(granted.values()) == pytest.approx(min(wanted, capacity_cores), rel=1e-9, abs=1e-9)


@settings(max_examples=150)
@given(capacities, request_lists())
def test_unmet_domains_get_shares_proportional_to_weight(capacity_cores, requests):
    granted = allocate(capacity_cores, requests)
    unmet = [r for r in requests if granted[r.domain_id] < limit(r) - 1e-9]
    per_weight = [granted[r.domain_id] / r.weight for r in unmet]
    if per_weight:
        assert max(per_weight) == pytest.approx(min(per_weight), rel=1e-9, abs=1e-12)
    # And a satisfied domain never got more per weight than an unmet one.
    for r in requests:
        if r not in unmet and per_weight:
            assert granted[r.domain_id] / r.weight <= max(per_weight) + 1e-9


@given(capacities, st.integers(2, 8), st.floats(0.1, 64.0))
def test_equal_weights_with_unmet_demand_get_equal_shares(capacity_cores, count, demand_cores):
    requests = [req(f"d{i}", demand_cores) for i in range(count)]
    granted = allocate(capacity_cores, requests)
    if count * demand_cores > capacity_cores:
        assert max(granted.values()) == pytest.approx(min(granted.values()), abs=1e-12)
        assert granted["d0"] == pytest.approx(capacity_cores / count)


@given(capacities, request_lists())
def test_allocation_is_deterministic_and_independent_of_request_order(capacity_cores, requests):
    granted = allocate(capacity_cores, requests)
    assert allocate(capacity_cores, requests) == granted
    reordered = allocate(capacity_cores, list(reversed(requests)))
    assert reordered == pytest.approx(granted, rel=1e-12, abs=1e-12)
