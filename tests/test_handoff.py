"""The migration handoff machines: tables, admission, epochs, idempotency, leases."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.config import AgentConfig
from agent.core.handoff import (SOURCE_TRANSITIONS, TARGET_TRANSITIONS, HandoffError, OutgoingMigration,
                                SourceState, TargetHandoffs, TargetState)
from agent.core.messages import OUTCOME_ABORTED, OUTCOME_COMMITTED, OUTCOME_RESERVED, OUTCOME_UNKNOWN, PrepareRequest
from agent.core.validation import InputRejected
from hypervisor.domain import DomainSpec
from hypervisor.host import Host, HostSpec
from hypervisor.memory import PAGE_SIZE, MemoryImage

CFG = AgentConfig(image_real_bytes_max=64 * 1024)


def target(memory_mib: int = 4096, cores: float = 8.0) -> TargetHandoffs:
    return TargetHandoffs("tgt", Host(HostSpec(cores, memory_mib)), CFG)


def prepare(mid: str = "m1", memory_mib: int = 1024, epoch: int = 3, demand: float = 1.0,
            src_demand: float = 7.0, improve: bool = True, dom: str = "d1") -> PrepareRequest:
    spec = DomainSpec(domain_id=dom, vcpus=2, memory_mib=memory_mib)
    image_bytes = MemoryImage.empty(memory_mib, CFG.image_real_bytes_max).real_page_count * PAGE_SIZE
    return PrepareRequest(mid, "src", spec, epoch, demand, src_demand, 8.0, image_bytes, improve)


def send_image(t: TargetHandoffs, mid: str, seed: int = 5) -> str:
    src = MemoryImage(1024, CFG.image_real_bytes_max, seed=seed)
    for first, data in src.iter_chunks(16 * 1024):
        t.on_chunk(mid, first, data)
    return src.content_hash()


def test_prepare_reserves_memory_under_a_lease():
    t = target()
    assert t.on_prepare(0.0, prepare(), own_demand_cores=1.0).accepted
    assert t.host.committed_memory_mib == 1024
    assert t.outcome("m1") == OUTCOME_RESERVED


def test_prepare_that_exceeds_target_memory_is_refused_with_a_reason():
    t = target(memory_mib=512)
    d = t.on_prepare(0.0, prepare(memory_mib=1024), own_demand_cores=0.0)
    assert not d.accepted and "memory" in d.reason
    assert t.host.committed_memory_mib == 0


def test_reservations_count_against_later_prepares():
    t = target(memory_mib=1536)
    assert t.on_prepare(0.0, prepare("m1", dom="d1"), 0.0).accepted
    d = t.on_prepare(0.0, prepare("m2", dom="d2"), 0.0)
    assert not d.accepted and "memory" in d.reason


def test_balancing_prepare_is_refused_when_target_would_end_above_source():
    t = target()
    d = t.on_prepare(0.0, prepare(src_demand=3.0, demand=1.0), own_demand_cores=6.0)
    assert not d.accepted and "no improvement" in d.reason
    # an operator's move does not need to improve balance
    assert t.on_prepare(0.0, prepare(src_demand=3.0, demand=1.0, improve=False), own_demand_cores=6.0).accepted


def test_commit_activates_at_epoch_plus_one_and_is_idempotent():
    t = target()
    t.on_prepare(0.0, prepare(epoch=3), 0.0)
    digest = send_image(t, "m1")
    decision, dom = t.on_commit(1.0, "m1", 4, digest)
    assert decision.committed and dom is not None and dom.epoch == 4
    assert "d1" in t.host.domains and t.host.reservations == {}
    again, dom2 = t.on_commit(1.0, "m1", 4, digest)
    assert again.committed and dom2 is None and len(t.host.domains) == 1
    assert t.outcome("m1") == OUTCOME_COMMITTED


def test_commit_with_stale_epoch_or_wrong_hash_is_refused():
    t = target()
    t.on_prepare(0.0, prepare(epoch=3), 0.0)
    digest = send_image(t, "m1")
    assert not t.on_commit(1.0, "m1", 3, digest)[0].committed
    bad = t.on_commit(1.0, "m1", 4, "0" * 64)[0]
    assert not bad.committed and "hash" in bad.reason
    assert "d1" not in t.host.domains


def test_chunk_for_unknown_migration_or_past_the_image_is_rejected():
    t = target()
    with pytest.raises(InputRejected) as info:
        t.on_chunk("nope", 0, b"\0" * PAGE_SIZE)
    assert info.value.reason == "unknown_migration"
    t.on_prepare(0.0, prepare(), 0.0)
    pages = t.incoming["m1"].image.real_page_count
    with pytest.raises(InputRejected):
        t.on_chunk("m1", pages, b"\0" * PAGE_SIZE)
    with pytest.raises(InputRejected):
        t.on_chunk("m1", 0, b"\0" * 100)


def test_uncommitted_reservation_expires_and_frees_memory():
    t = target()
    t.on_prepare(0.0, prepare(), 0.0)
    assert t.tick(1.0) == []
    expired = t.tick(CFG.reservation_lease_ms / 1000 + 0.1)
    assert [m.migration_id for m in expired] == ["m1"]
    assert t.host.committed_memory_mib == 0
    assert not t.on_commit(20.0, "m1", 4, "x")[0].committed
    assert t.outcome("m1") == OUTCOME_ABORTED


def test_prepare_below_the_epoch_at_which_the_domain_left_is_stale():
    t = target()
    t.departed_epochs["d1"] = 5
    d = t.on_prepare(0.0, prepare(epoch=4), 0.0)
    assert not d.accepted and "stale epoch" in d.reason


def test_abort_releases_and_unknown_abort_says_unknown():
    t = target()
    t.on_prepare(0.0, prepare(), 0.0)
    assert t.on_abort("m1") == OUTCOME_ABORTED
    assert t.host.committed_memory_mib == 0
    assert t.on_abort("zzz") == OUTCOME_UNKNOWN


def test_source_machine_rejects_illegal_transitions():
    m = OutgoingMigration("m", "d", "t", "a:1", 1, 0.0)
    with pytest.raises(HandoffError):
        m.step("committed")
    assert m.step("accepted") is SourceState.TRANSFERRING
    assert m.step("transferred") is SourceState.COMMITTING
    assert m.step("failed") is SourceState.IN_DOUBT
    assert m.step("committed") is SourceState.DONE


def test_tables_reach_only_declared_states():
    assert {v for v in SOURCE_TRANSITIONS.values()} <= set(SourceState)
    assert {v for v in TARGET_TRANSITIONS.values()} <= set(TargetState)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["prepare", "chunk", "commit", "commit_stale", "abort", "tick"]),
                          st.integers(0, 2)), max_size=25))
def test_any_message_sequence_leaves_at_most_one_active_copy_and_bounded_memory(ops):
    """Duplicated, reordered and late messages for three migrations of one domain."""
    t = target(memory_mib=2048)
    digest = MemoryImage(1024, CFG.image_real_bytes_max, seed=5).content_hash()
    now = 0.0
    for op, k in ops:
        mid = f"m{k}"
        try:
            if op == "prepare":
                t.on_prepare(now, prepare(mid), 0.0)
            elif op == "chunk":
                send_image(t, mid)
            elif op == "commit":
                t.on_commit(now, mid, 4, digest)
            elif op == "commit_stale":
                t.on_commit(now, mid, 3, digest)
            elif op == "abort":
                t.on_abort(mid)
            else:
                now += 4.0
                t.tick(now)
        except InputRejected:
            pass
        assert t.host.committed_memory_mib <= 2048
        committed = [m for m in t.incoming.values() if m.state is TargetState.COMMITTED]
        assert len(committed) <= 1
        assert len(t.host.domains) <= 1
