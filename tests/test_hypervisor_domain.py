"""Domain specs (validation, Xen-style quotas) and live domains' CPU demand."""

from __future__ import annotations

import dataclasses

import pytest

from hypervisor.domain import Domain, DomainSpec, DomainSpecError, DomainState
from hypervisor.workload import WorkloadSpec


def spec(**overrides) -> DomainSpec:
    return dataclasses.replace(DomainSpec("web-1", vcpus=4, memory_mib=2048), **overrides)


def constant(level: float) -> WorkloadSpec:
    return WorkloadSpec("constant", (("level", level),))


def test_default_spec_is_valid_and_uncapped_with_half_load():
    s = spec()
    s.validate()
    assert s.cpu_weight == 256
    assert s.cap_cores is None
    assert Domain(s).demand_cores(0.0) == 2.0


def test_cap_pct_is_percent_of_one_core():
    assert spec(cpu_cap_pct=150).cap_cores == 1.5
    assert spec(cpu_cap_pct=400).cap_cores == 4.0


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"domain_id": ""}, "domain_id must be a non-empty string"),
        ({"domain_id": "a" * 129}, "at most 128 characters"),
        ({"domain_id": "web 1"}, "may hold only"),
        ({"domain_id": "web/1"}, "may hold only"),
        ({"vcpus": 0}, "vcpus must be in 1..512"),
        ({"vcpus": 513}, "vcpus must be in 1..512"),
        ({"vcpus": True}, "vcpus must be an integer"),
        ({"vcpus": 2.0}, "vcpus must be an integer"),
        ({"memory_mib": 0}, "memory_mib must be in 1..4194304"),
        ({"memory_mib": 4194305}, "memory_mib must be in 1..4194304"),
        ({"cpu_weight": 0}, "cpu_weight must be in 1..65535"),
        ({"cpu_weight": 65536}, "cpu_weight must be in 1..65535"),
        ({"cpu_cap_pct": -1}, "cpu_cap_pct must be in 0..400"),
        ({"cpu_cap_pct": 401}, "cpu_cap_pct must be in 0..400"),
        ({"image_seed": -1}, "image_seed"),
        ({"labels": (("tier",),)}, "(key, value) pair"),
        ({"labels": (("", "x"),)}, "label keys must be non-empty"),
        ({"labels": (("tier", "a"), ("tier", "b"))}, "given twice"),
        ({"workload": WorkloadSpec("constant", (("level", 2.0),))}, "workload: constant: level must be <= 1"),
    ],
)
def test_invalid_field_raises_domain_spec_error_naming_it(overrides, problem):
    with pytest.raises(DomainSpecError) as caught:
        spec(**overrides).validate()
    assert problem in str(caught.value)


def test_edge_values_are_accepted():
    longest_id = "A.b_c:d-9" + "x" * 119
    spec(domain_id=longest_id, vcpus=512, memory_mib=4194304, cpu_weight=65535, cpu_cap_pct=51200).validate()
    spec(vcpus=1, memory_mib=1, cpu_weight=1, cpu_cap_pct=100, labels=(("tier", "web"), ("zone", ""))).validate()


def test_domain_refuses_an_invalid_spec():
    with pytest.raises(DomainSpecError):
        Domain(spec(vcpus=0))


def test_domain_state_values_are_the_wire_strings():
    assert [s.value for s in DomainState] == ["running", "paused", "migrating-out", "reserved-in"]
    assert DomainState("migrating-out") is DomainState.MIGRATING_OUT


def test_demand_is_fraction_times_vcpus():
    domain = Domain(spec(vcpus=8, workload=constant(0.25)))
    assert domain.demand_cores(10.0) == 2.0


def test_demand_follows_the_workload_over_time():
    flash = WorkloadSpec.parse("flash:base=0.1,peak=0.9,start_s=10,duration_s=10,ramp_s=0")
    domain = Domain(spec(vcpus=2, workload=flash))
    assert domain.demand_cores(0.0) == pytest.approx(0.2)
    assert domain.demand_cores(15.0) == pytest.approx(1.8)


def test_demand_is_limited_by_cap():
    domain = Domain(spec(vcpus=4, cpu_cap_pct=150, workload=constant(1.0)))
    assert domain.demand_cores(0.0) == 1.5


def test_paused_domain_demands_nothing():
    domain = Domain(spec(workload=constant(1.0)), state=DomainState.PAUSED)
    assert domain.demand_cores(0.0) == 0.0
    domain.state = DomainState.RUNNING
    assert domain.demand_cores(0.0) == 4.0


def test_new_domain_starts_running_at_epoch_zero_unless_told():
    assert (Domain(spec()).epoch, Domain(spec()).state) == (0, DomainState.RUNNING)
    moved = Domain(spec(), epoch=3, state=DomainState.RESERVED_IN)
    assert (moved.epoch, moved.state) == (3, DomainState.RESERVED_IN)
