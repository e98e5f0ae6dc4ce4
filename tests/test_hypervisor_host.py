"""Host admission (Nova rules), reservations, and CPU/memory samples."""

from __future__ import annotations

import pytest

from hypervisor.domain import Domain, DomainSpec, DomainState
from hypervisor.host import Admission, AdmissionError, Host, HostSpec, HostSpecError, Reservation
from hypervisor.workload import WorkloadSpec


def dspec(domain_id: str, vcpus: int = 2, memory_mib: int = 1024, level: float = 0.5, **kw) -> DomainSpec:
    return DomainSpec(domain_id, vcpus, memory_mib, workload=WorkloadSpec("constant", (("level", level),)), **kw)


def domain(domain_id: str, vcpus: int = 2, memory_mib: int = 1024, level: float = 0.5, **kw) -> Domain:
    return Domain(dspec(domain_id, vcpus, memory_mib, level, **kw))


def reservation(
    reservation_id: str, domain_id: str, vcpus: int = 2, memory_mib: int = 1024, expires_at_s: float = 100.0
) -> Reservation:
    return Reservation(reservation_id, domain_id, vcpus, memory_mib, demand_cores=1.0, expires_at_s=expires_at_s)


# -- spec ------------------------------------------------------------------------


def test_default_overcommit_is_novas_16():
    assert HostSpec(4, 8192).cpu_overcommit_ratio == 16.0


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (HostSpec(0, 1024), "cpu_cores"),
        (HostSpec(float("nan"), 1024), "cpu_cores"),
        (HostSpec(4, 0), "memory_mib"),
        (HostSpec(4, 1024.5), "memory_mib"),
        (HostSpec(4, 1024, 0.0), "cpu_overcommit_ratio"),
        (HostSpec(4, 1024, float("inf")), "cpu_overcommit_ratio"),
    ],
)
def test_invalid_host_spec_raises_naming_the_field(spec, field):
    with pytest.raises(HostSpecError, match=field):
        spec.validate()
    with pytest.raises(HostSpecError):
        Host(spec)


# -- admission ---------------------------------------------------------------------


def test_memory_is_never_overcommitted_and_refusal_says_how_much_is_free():
    host = Host(HostSpec(cpu_cores=64, memory_mib=4096))
    host.add_domain(domain("a", memory_mib=3072))
    admission = host.admit(dspec("b", memory_mib=2048))
    assert admission == Admission(False, "memory: needs 2048 MiB, 1024 MiB free")
    assert host.admit(dspec("b", memory_mib=1024)).ok


def test_vcpus_are_overcommitted_up_to_cores_times_ratio():
    host = Host(HostSpec(cpu_cores=2, memory_mib=1 << 20, cpu_overcommit_ratio=4.0))
    for i in range(4):
        host.add_domain(domain(f"d{i}", vcpus=2))
    assert host.committed_vcpus == 8
    admission = host.admit(dspec("one-more", vcpus=1))
    assert not admission.ok
    assert admission.reason.startswith("vcpus: needs 1, 0 free")


def test_default_ratio_admits_sixteen_vcpus_per_core():
    host = Host(HostSpec(cpu_cores=1, memory_mib=1 << 20))
    host.add_domain(domain("big", vcpus=16))
    assert not host.admit(dspec("extra", vcpus=1)).ok


def test_add_domain_raises_with_the_refusal_reason():
    host = Host(HostSpec(cpu_cores=4, memory_mib=1024))
    with pytest.raises(AdmissionError, match="memory: needs 2048 MiB, 1024 MiB free") as caught:
        host.add_domain(domain("a", memory_mib=2048))
    assert caught.value.admission.ok is False
    assert host.domains == {}


def test_add_domain_refuses_an_id_already_on_the_host():
    host = Host(HostSpec(cpu_cores=4, memory_mib=8192))
    host.add_domain(domain("a"))
    with pytest.raises(AdmissionError, match="already on this host"):
        host.add_domain(domain("a"))
    assert host.committed_memory_mib == 1024


def test_remove_domain_returns_it_and_frees_its_room():
    host = Host(HostSpec(cpu_cores=4, memory_mib=1024))
    added = domain("a", memory_mib=1024)
    host.add_domain(added)
    assert host.remove_domain("a") is added
    assert host.committed_memory_mib == 0
    with pytest.raises(KeyError):
        host.remove_domain("a")


# -- reservations ------------------------------------------------------------------


def test_reservation_counts_against_memory_and_vcpus():
    host = Host(HostSpec(cpu_cores=4, memory_mib=2048))
    assert host.reserve(reservation("r1", "incoming", vcpus=3, memory_mib=1536)).ok
    assert (host.committed_memory_mib, host.committed_vcpus) == (1536, 3)
    assert host.admit(dspec("other", memory_mib=1024)) == Admission(False, "memory: needs 1024 MiB, 512 MiB free")


def test_reservation_that_does_not_fit_is_refused_and_not_stored():
    host = Host(HostSpec(cpu_cores=4, memory_mib=2048))
    host.add_domain(domain("a", memory_mib=1024))
    admission = host.reserve(reservation("r1", "incoming", memory_mib=2048))
    assert admission == Admission(False, "memory: needs 2048 MiB, 1024 MiB free")
    assert host.reservations == {}


def test_release_frees_the_room_and_returns_the_reservation():
    host = Host(HostSpec(cpu_cores=4, memory_mib=2048))
    held = reservation("r1", "incoming", memory_mib=2048)
    host.reserve(held)
    assert host.release("r1") == held
    assert host.release("r1") is None
    assert host.committed_memory_mib == 0


def test_reservations_expire_at_their_deadline_not_before():
    host = Host(HostSpec(cpu_cores=8, memory_mib=8192))
    early, late = reservation("r1", "x", expires_at_s=10.0), reservation("r2", "y", expires_at_s=20.0)
    host.reserve(early)
    host.reserve(late)
    assert host.expire_reservations(9.999) == []
    assert host.expire_reservations(10.0) == [early]
    assert list(host.reservations) == ["r2"]
    assert host.committed_memory_mib == 1024
    assert host.expire_reservations(1e9) == [late]


def test_repeating_the_same_reservation_is_accepted_once():
    host = Host(HostSpec(cpu_cores=4, memory_mib=4096))
    held = reservation("r1", "incoming")
    assert host.reserve(held).ok
    assert host.reserve(held).ok
    assert host.committed_memory_mib == 1024


def test_reservation_id_reused_with_other_terms_is_refused():
    host = Host(HostSpec(cpu_cores=4, memory_mib=4096))
    host.reserve(reservation("r1", "incoming"))
    admission = host.reserve(reservation("r1", "incoming", memory_mib=2048))
    assert not admission.ok and "other terms" in admission.reason


def test_second_reservation_for_the_same_domain_is_refused():
    host = Host(HostSpec(cpu_cores=4, memory_mib=4096))
    host.reserve(reservation("r1", "incoming"))
    admission = host.reserve(reservation("r2", "incoming"))
    assert admission == Admission(False, "domain 'incoming' already has reservation 'r1'")


def test_reservation_for_a_domain_already_here_is_refused():
    host = Host(HostSpec(cpu_cores=4, memory_mib=4096))
    host.add_domain(domain("a"))
    assert not host.reserve(reservation("r1", "a")).ok


def test_malformed_reservation_is_a_caller_error():
    host = Host(HostSpec(cpu_cores=4, memory_mib=4096))
    with pytest.raises(ValueError):
        host.reserve(Reservation("r1", "a", vcpus=0, memory_mib=1024, demand_cores=1.0, expires_at_s=1.0))


def test_arriving_domain_fits_into_its_own_reservation_and_is_counted_once():
    host = Host(HostSpec(cpu_cores=4, memory_mib=2048))
    host.reserve(reservation("r1", "incoming", memory_mib=2048))
    assert host.admit(dspec("incoming", memory_mib=2048)).ok
    host.add_domain(Domain(dspec("incoming", memory_mib=2048), state=DomainState.RESERVED_IN))
    assert host.committed_memory_mib == 2048  # not 4096 while the reservation is still held
    host.release("r1")
    assert host.committed_memory_mib == 2048


def test_admit_can_ignore_a_named_reservation():
    host = Host(HostSpec(cpu_cores=4, memory_mib=2048))
    host.reserve(reservation("r1", "placeholder", memory_mib=2048))
    assert not host.admit(dspec("a", memory_mib=2048)).ok
    assert host.admit(dspec("a", memory_mib=2048), ignore_reservation="r1").ok


# -- samples -----------------------------------------------------------------------


def test_sample_of_an_overloaded_host_records_the_unserved_demand():
    host = Host(HostSpec(cpu_cores=4, memory_mib=8192))
    host.add_domain(domain("a", vcpus=4, level=0.5))  # wants 2 cores
    host.add_domain(domain("b", vcpus=4, level=1.0))  # wants 4 cores
    sample = host.sample(30.0)
    assert sample.t_s == 30.0
    assert sample.cpu_capacity_cores == 4.0
    assert sample.cpu_demand_cores == 6.0
    assert sample.cpu_allocated_cores == pytest.approx(4.0)
    assert sample.cpu_unserved_cores == pytest.approx(2.0)
    assert sample.cpu_utilization == 1.5
    assert [domain_id for domain_id, _, _ in sample.allocations] == ["a", "b"]
    assert [demand for _, demand, _ in sample.allocations] == [2.0, 4.0]
    assert [got for _, _, got in sample.allocations] == pytest.approx([2.0, 2.0])


def test_sample_of_an_underloaded_host_serves_everything():
    host = Host(HostSpec(cpu_cores=8, memory_mib=8192))
    host.add_domain(domain("a", vcpus=2, level=0.5))
    host.add_domain(domain("b", vcpus=4, level=0.25))
    sample = host.sample(0.0)
    assert (sample.cpu_demand_cores, sample.cpu_allocated_cores, sample.cpu_unserved_cores) == (2.0, 2.0, 0.0)
    assert sample.cpu_utilization == 0.25


def test_weights_decide_who_is_served_under_overload():
    host = Host(HostSpec(cpu_cores=3, memory_mib=8192))
    host.add_domain(domain("gold", vcpus=4, level=1.0, cpu_weight=512))
    host.add_domain(domain("bronze", vcpus=4, level=1.0, cpu_weight=256))
    allocated = {domain_id: got for domain_id, _, got in host.sample(0.0).allocations}
    assert allocated == pytest.approx({"gold": 2.0, "bronze": 1.0})


def test_paused_and_arriving_domains_demand_nothing_but_hold_memory():
    host = Host(HostSpec(cpu_cores=4, memory_mib=8192))
    host.add_domain(Domain(dspec("paused", level=1.0, memory_mib=1024), state=DomainState.PAUSED))
    host.add_domain(Domain(dspec("arriving", level=1.0, memory_mib=2048), state=DomainState.RESERVED_IN))
    host.add_domain(Domain(dspec("leaving", level=1.0, memory_mib=1024), state=DomainState.MIGRATING_OUT))
    sample = host.sample(0.0)
    assert sample.cpu_demand_cores == 2.0  # only the one still running while migrating out
    assert sample.memory_used_mib == 4096
    assert sample.allocations == (("arriving", 0.0, 0.0), ("leaving", 2.0, 2.0), ("paused", 0.0, 0.0))


def test_sample_memory_includes_reservations():
    host = Host(HostSpec(cpu_cores=4, memory_mib=4096))
    host.add_domain(domain("a", memory_mib=1024))
    host.reserve(reservation("r1", "incoming", memory_mib=2048))
    sample = host.sample(0.0)
    assert (sample.memory_capacity_mib, sample.memory_used_mib) == (4096, 3072)
    assert sample.memory_utilization == 0.75
    assert sample.cpu_demand_cores == 1.0  # the reservation's expected demand is not demand yet


def test_empty_host_samples_zero():
    sample = Host(HostSpec(cpu_cores=4, memory_mib=4096)).sample(0.0)
    assert (sample.cpu_demand_cores, sample.cpu_utilization, sample.memory_utilization) == (0.0, 0.0, 0.0)
    assert sample.allocations == ()


# -- affinity labels ------------------------------------------------------------------


def test_labels_name_the_affinity_and_anti_affinity_groups():
    s = dspec("a", labels=(("affinity", "web"), ("anti-affinity", "db"), ("team", "x")))
    assert (s.affinity, s.anti_affinity, s.label("team"), s.label("none")) == ("web", "db", "x", "")
    assert (dspec("b").affinity, dspec("b").anti_affinity) == ("", "")


def test_anti_affinity_refuses_a_second_member_running_or_arriving():
    host = Host(HostSpec(16, 65536))
    db = (("anti-affinity", "db"),)
    host.add_domain(domain("db-1", labels=db))
    refused = host.admit(dspec("db-2", labels=db))
    assert not refused.ok and "anti-affinity" in refused.reason and "'db-1'" in refused.reason
    assert host.admit(dspec("db-2", labels=(("anti-affinity", "cache"),))).ok  # another group
    assert host.admit(dspec("web", labels=(("affinity", "db"),))).ok  # another kind of label
    assert host.admit(dspec("db-2", labels=db), anti_affinity=False).ok  # an HA restart
    # Arriving: a reservation of the group blocks another, and a domain of the group.
    other = Host(HostSpec(16, 65536))
    assert other.reserve(Reservation("m1", "db-1", 2, 1024, 1.0, 100.0, "db")).ok
    second = other.reserve(Reservation("m2", "db-2", 2, 1024, 1.0, 100.0, "db"))
    assert not second.ok and "arriving" in second.reason
    assert not other.admit(dspec("db-3", labels=db)).ok
    # The reservation's own domain commits over it (release, then admit) and the group is still one.
    assert other.admit(dspec("db-1", labels=db), ignore_reservation="m1").ok
    other.release("m1")
    assert other.admit(dspec("db-1", labels=db)).ok


def test_labels_are_bounded():
    from hypervisor.domain import LABEL_CHARS_MAX, LABELS_MAX, DomainSpecError
    dspec("ok", labels=tuple((f"k{i}", "v") for i in range(LABELS_MAX))).validate()
    with pytest.raises(DomainSpecError, match="at most"):
        dspec("many", labels=tuple((f"k{i}", "v") for i in range(LABELS_MAX + 1))).validate()
    with pytest.raises(DomainSpecError, match="characters"):
        dspec("long", labels=(("k", "v" * (LABEL_CHARS_MAX + 1)),)).validate()
