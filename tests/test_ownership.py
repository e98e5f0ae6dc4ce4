"""Recovery of domain ownership from journal records."""

from __future__ import annotations

from agent.core.ownership import fold, spec_from_record, spec_to_record
from hypervisor.domain import DomainSpec
from hypervisor.workload import WorkloadSpec

SPEC = DomainSpec(domain_id="d1", vcpus=2, memory_mib=512, workload=WorkloadSpec("constant", (("level", 0.3),)),
                  image_seed=4, wws_mib=2.0, dirty_rate_mib_s=5.0)


def test_spec_round_trips_through_a_record():
    assert spec_from_record(spec_to_record(SPEC)) == SPEC


def test_created_domain_is_recovered_at_its_epoch():
    r = fold([{"t": "domain", "spec": spec_to_record(SPEC), "epoch": 1}])
    assert r.domains == {"d1": (SPEC, 1)} and not r.in_doubt


def test_pause_without_outcome_is_in_doubt_and_keeps_the_domain():
    r = fold([{"t": "domain", "spec": spec_to_record(SPEC), "epoch": 1},
              {"t": "pause", "mid": "m1", "id": "d1", "target": "t", "addr": "127.0.0.1:1", "epoch": 1}])
    assert "d1" in r.domains and list(r.in_doubt) == ["m1"]


def test_gone_drops_the_domain_and_leaves_a_tombstone():
    r = fold([{"t": "domain", "spec": spec_to_record(SPEC), "epoch": 1},
              {"t": "pause", "mid": "m1", "id": "d1", "target": "t", "addr": "127.0.0.1:1", "epoch": 1},
              {"t": "gone", "mid": "m1", "id": "d1", "epoch": 2, "to": "t"}])
    assert r.domains == {} and r.in_doubt == {} and r.departed == {"d1": (2, "t")}


def test_resume_clears_the_doubt():
    r = fold([{"t": "domain", "spec": spec_to_record(SPEC), "epoch": 1},
              {"t": "pause", "mid": "m1", "id": "d1", "target": "t", "addr": "127.0.0.1:1", "epoch": 1},
              {"t": "resume", "mid": "m1", "id": "d1"}])
    assert r.domains["d1"][1] == 1 and r.in_doubt == {}


def test_domain_that_came_back_at_a_higher_epoch_is_held_again():
    r = fold([{"t": "domain", "spec": spec_to_record(SPEC), "epoch": 1},
              {"t": "gone", "mid": "m1", "id": "d1", "epoch": 2, "to": "t"},
              {"t": "arrived", "mid": "m2", "spec": spec_to_record(SPEC), "epoch": 3}])
    assert r.domains["d1"][1] == 3 and r.arrived == {"m2": 3} and "d1" not in r.departed


def test_garbage_records_are_skipped_not_fatal():
    r = fold([{"t": "domain", "spec": {"id": "x"}, "epoch": 1}, {"t": "bogus"}, {"no": "type"},
              {"t": "domain", "spec": spec_to_record(SPEC), "epoch": 1}])
    assert list(r.domains) == ["d1"] and len(r.skipped) == 3


def test_snapshot_folds_back_to_the_same_state():
    r = fold([{"t": "domain", "spec": spec_to_record(SPEC), "epoch": 1},
              {"t": "pause", "mid": "m1", "id": "d1", "target": "t", "addr": "127.0.0.1:1", "epoch": 1},
              {"t": "arrived", "mid": "m9", "spec": spec_to_record(DomainSpec(domain_id="d2", vcpus=1,
                                                                               memory_mib=64)), "epoch": 5},
              {"t": "gone", "mid": "", "id": "d7", "epoch": 4, "to": "x"}])
    again = fold(r.snapshot())
    assert again.domains == r.domains and again.in_doubt == r.in_doubt
    assert again.arrived == r.arrived and again.departed == r.departed
