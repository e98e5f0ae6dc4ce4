"""The local balancing rule: when to act, which move, and why moves can't ping-pong."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.config import AgentConfig
from agent.core.policy import BalancePolicy, DomainLoad, LocalView, Neighbour, improves, kept_together, overload_reason

CFG = AgentConfig()


def view(demand: float, domains: list[DomainLoad], capacity: float = 10.0, inflight: int = 0) -> LocalView:
    return LocalView("self", capacity, demand, tuple(domains), inflight)


def nb(node_id: str, demand: float, capacity: float = 10.0, mem_free: float = 1e6, inflight: int = 0) -> Neighbour:
    return Neighbour(node_id, capacity, demand, mem_free, 1e6, inflight)


def test_node_below_watermark_and_near_mean_does_nothing():
    policy = BalancePolicy(CFG)
    v = view(5.0, [DomainLoad("d1", 5.0, 1024, 4)])
    assert policy.decide(v, [nb("a", 1.0)], mean_estimate=0.45) is None


def test_overloaded_node_moves_cheapest_domain_to_lowest_neighbour():
    policy = BalancePolicy(CFG)
    v = view(9.0, [DomainLoad("big", 3.0, 8192, 4), DomainLoad("small", 2.0, 512, 2)])
    p = policy.decide(v, [nb("a", 4.0), nb("b", 1.0)], mean_estimate=0.5)
    assert (p.domain_id, p.target_id) == ("small", "b")
    assert abs(p.source_utilization_after - 0.7) < 1e-9 and abs(p.target_utilization_after - 0.3) < 1e-9
    assert "high watermark" in p.reason


def test_above_mean_plus_margin_triggers_even_below_watermark():
    assert overload_reason(0.7, 0.4, CFG) is not None
    assert overload_reason(0.45, 0.4, CFG) is None


def test_move_that_would_overload_the_target_is_not_proposed():
    policy = BalancePolicy(CFG)
    v = view(9.0, [DomainLoad("d", 6.0, 512, 4)])
    # target would end at 1.3 > source's 0.9 now: the larger utilization would rise
    assert policy.decide(v, [nb("a", 7.0)], mean_estimate=0.5) is None


def test_memory_and_concurrency_limits_exclude_targets():
    policy = BalancePolicy(CFG)
    v = view(9.0, [DomainLoad("d", 2.0, 4096, 2)])
    assert policy.decide(v, [nb("a", 1.0, mem_free=1000)], 0.5) is None
    assert policy.decide(v, [nb("a", 1.0, inflight=CFG.migrations_in_max)], 0.5) is None
    assert policy.decide(view(9.0, [DomainLoad("d", 2.0, 512, 2)], inflight=CFG.migrations_out_max),
                         [nb("a", 1.0)], 0.5) is None


def test_domains_cooling_down_are_not_moved():
    policy = BalancePolicy(CFG)
    v = view(9.0, [DomainLoad("d", 2.0, 512, 2, movable=False)])
    assert policy.decide(v, [nb("a", 1.0)], 0.5) is None


@settings(max_examples=300, deadline=None)
@given(src=st.floats(0.1, 50), tgt=st.floats(0, 50), moved=st.floats(0.01, 10),
       c1=st.floats(1, 64), c2=st.floats(1, 64), others=st.lists(st.floats(0, 3), max_size=6))
def test_accepted_moves_lower_the_sorted_utilization_vector(src, tgt, moved, c1, c2, others):
    # The potential behind "no ping-pong": the utilizations sorted high to low fall
    # lexicographically with every accepted move, so no sequence of moves can cycle.
    if moved > src or not improves(src, c1, tgt, c2, moved, CFG.improvement_min):
        return
    before = sorted([src / c1, tgt / c2, *others], reverse=True)
    after = sorted([(src - moved) / c1, (tgt + moved) / c2, *others], reverse=True)
    assert after < before


@settings(max_examples=300, deadline=None)
@given(src=st.floats(0.1, 50), tgt=st.floats(0, 50), moved=st.floats(0.01, 10), cap=st.floats(1, 64))
def test_with_equal_capacities_accepted_moves_lower_the_sum_of_squares(src, tgt, moved, cap):
    if moved > src or not improves(src, cap, tgt, cap, moved, CFG.improvement_min):
        return
    assert ((src - moved) / cap) ** 2 + ((tgt + moved) / cap) ** 2 < (src / cap) ** 2 + (tgt / cap) ** 2


def test_reverse_of_an_accepted_move_is_never_accepted():
    # A -> B helps, so B -> A of the same domain right after cannot help.
    assert improves(9.0, 10.0, 1.0, 10.0, 2.0, CFG.improvement_min)
    assert not improves(1.0 + 2.0, 10.0, 9.0 - 2.0, 10.0, 2.0, CFG.improvement_min)


def test_members_of_an_affinity_group_on_one_host_are_kept_together():
    pairs = [("web-1", "web"), ("web-2", "web"), ("db-1", "db"), ("solo", ""), ("x", "")]
    assert kept_together(pairs) == frozenset({"web-1", "web-2"})  # db's only member here may go
    assert kept_together([]) == frozenset()
