"""Utilization gossip: freshest entry wins, ages travel, bad entries are rejected,
and push-pull averaging converges to the true mean."""

from __future__ import annotations

import math
from dataclasses import replace
from random import Random

import pytest

from agent.core.config import AgentConfig, ConfigError
from agent.core.dissemination import Dissemination
from agent.core.messages import Averaging, Exchange, NodeLoad
from agent.core.validation import InputRejected

CFG = AgentConfig()


def load(node_id: str, demand: float, capacity: float = 10.0, hb: int = 0) -> NodeLoad:
    return NodeLoad(node_id, f"127.0.0.1:{1000 + int(node_id[1:])}", hb, capacity, demand, 1000.0, 100.0)


def node(i: int, demand: float, capacity: float = 10.0, seed: int = 0) -> Dissemination:
    d = Dissemination(f"n{i}", f"127.0.0.1:{1000 + i}", CFG, Random(seed + i))
    d.publish(load(f"n{i}", demand, capacity), now_s=0.0)
    return d


def exchange(a: Dissemination, b: Dissemination, now_s: float) -> None:
    a.on_exchange_reply(now_s, b.on_exchange(now_s, a.make_exchange(now_s)))


def test_exchange_teaches_both_sides_about_each_other():
    a, b = node(1, 2.0), node(2, 6.0)
    exchange(a, b, 1.0)
    assert [l.node_id for l, _ in a.peers(1.0)] == ["n2"]
    assert [l.node_id for l, _ in b.peers(1.0)] == ["n1"]


def test_older_heartbeat_never_replaces_a_newer_one():
    a = node(1, 1.0)
    new = replace(load("n9", 5.0), heartbeat=10)
    old = replace(load("n9", 9.0), heartbeat=3)
    a.on_exchange(0.0, Exchange("n9", new.address, (new,), Averaging(0, 0, 0)))
    a.on_exchange(0.0, Exchange("n9", old.address, (old,), Averaging(0, 0, 0)))
    assert a.entries["n9"].load.cpu_demand_cores == 5.0


def test_age_travels_with_the_entry_across_hops():
    a, b, c = node(1, 1.0), node(2, 1.0), node(3, 1.0)
    exchange(a, b, 0.0)     # b learns a at t=0
    exchange(c, b, 4.0)     # c learns a from b at t=4: a's entry is 4 s old
    age = dict((l.node_id, age) for l, age in c.peers(4.0))["n1"]
    assert 3.9 <= age <= 4.1


def test_stale_entries_are_not_fresh_and_old_ones_are_forgotten():
    a, b = node(1, 1.0), node(2, 1.0)
    exchange(a, b, 0.0)
    assert [l.node_id for l in a.fresh_peers(1.0)] == ["n2"]
    assert a.fresh_peers(CFG.peer_stale_ms / 1000 + 1) == []
    assert a.tick(CFG.peer_forget_ms / 1000 + 1) == ["n2"]
    assert a.peers(100.0) == []


@pytest.mark.parametrize("bad,reason", [
    ({"cpu_demand_cores": math.nan}, "non_finite"),
    ({"cpu_demand_cores": math.inf}, "non_finite"),
    ({"cpu_demand_cores": -1.0}, "negative"),
    ({"cpu_demand_cores": 10.0 * 101}, "out_of_range"),
    ({"cpu_capacity_cores": 0.0}, "out_of_range"),
    ({"schema_version": 99}, "schema_version"),
    ({"node_id": "bad id with spaces"}, "bad_id"),
    ({"address": "no-port"}, "bad_address"),
])
def test_malformed_entry_is_rejected_and_changes_nothing(bad, reason):
    a = node(1, 1.0)
    entry = replace(load("n5", 1.0), **bad)
    with pytest.raises(InputRejected) as info:
        a.on_exchange(0.0, Exchange("n5", "127.0.0.1:1005", (entry,), Averaging(0, 0, 0)))
    assert info.value.reason == reason
    assert a.entries == {}


def test_too_many_entries_is_rejected_as_oversized():
    a = node(1, 1.0)
    entries = tuple(load(f"n{i}", 1.0) for i in range(2, CFG.gossip_entries_max + 3))
    with pytest.raises(InputRejected) as info:
        a.on_exchange(0.0, Exchange("n2", "127.0.0.1:1002", entries, Averaging(0, 0, 0)))
    assert info.value.reason == "oversized"


def test_digest_is_bounded_by_gossip_entries_max():
    cfg = AgentConfig(gossip_entries_max=5)
    a = Dissemination("n0", "127.0.0.1:1000", cfg, Random(1))
    a.publish(load("n0", 1.0), 0.0)
    for i in range(1, 20):
        a.on_exchange(0.0, Exchange(f"n{i}", f"127.0.0.1:{1000 + i}", (load(f"n{i}", 1.0),), Averaging(0, 0, 0)))
    assert len(a.make_exchange(0.0).entries) == 5


def test_table_keeps_the_view_then_the_freshest_within_peer_entries_max():
    cfg = AgentConfig(gossip_entries_max=4, peer_entries_max=8, peer_forget_ms=1_000_000)
    a = Dissemination("n0", "127.0.0.1:1000", cfg, Random(1))
    a.publish(load("n0", 1.0), 0.0)
    a.tick(0.0, view_ids={"n1", "n2"})
    for t in range(1, 40):  # n1, n2 (the view) first and never again; then 37 others, one a second
        a.on_exchange(float(t), Exchange(f"n{t}", f"127.0.0.1:{1000 + t}", (load(f"n{t}", 1.0, hb=1),),
                                         Averaging(0, 0, 0)))
        assert len(a.entries) <= 8
    assert set(a.entries) == {"n1", "n2"} | {f"n{t}" for t in range(34, 40)}
    a.tick(40.0, view_ids={"n39"})  # the view moved on: n1 and n2 now go first
    a.on_exchange(41.0, Exchange("n41", "127.0.0.1:1041", (load("n41", 1.0, hb=1),), Averaging(0, 0, 0)))
    assert "n41" in a.entries and len(a.entries) == 8 and "n1" not in a.entries
    with pytest.raises(ConfigError):
        AgentConfig(gossip_entries_max=16, peer_entries_max=8).validate()


def test_push_pull_averaging_converges_to_the_true_mean():
    rng = Random(7)
    demands = [rng.uniform(0, 16) for _ in range(40)]
    capacities = [rng.choice([8.0, 16.0, 32.0]) for _ in range(40)]
    nodes = [node(i, d, c) for i, (d, c) in enumerate(zip(demands, capacities))]
    truth = sum(demands) / sum(capacities)
    for rnd in range(15):
        for a in nodes:
            exchange(a, nodes[rng.randrange(len(nodes))], float(rnd))
    errors = [abs(n.averaging.demand_cores / n.averaging.capacity_cores - truth) for n in nodes]
    assert max(errors) < 0.01 * max(truth, 1e-9) + 1e-3


def test_epoch_0_is_never_the_estimate_since_it_averages_what_nodes_held_at_boot():
    # A new cluster: agents boot empty (epoch 0 starts with no demand), then get their domains.
    cfg = AgentConfig(averaging_epoch_rounds=5)
    nodes = [Dissemination(f"n{i}", f"127.0.0.1:{1000 + i}", cfg, Random(i)) for i in range(6)]
    for n in nodes:
        n.publish(load(n.node_id, 0.0), 0.0)
    for n in nodes:
        n.publish(load(n.node_id, 2.0 + 4.0 * (n.node_id == "n0")), 0.5)
    truth = (5 * 2.0 + 6.0) / 60.0
    rng = Random(5)
    estimates = []
    for rnd in range(40):
        for a in nodes:
            exchange(a, nodes[rng.randrange(6)], 1.0 + rnd * 0.1)
        estimates.append([n.mean_utilization_estimate(1.0 + rnd * 0.1) for n in nodes])
    # Epoch 0 ended (all nodes are past it) with a mean near 0; no node ever reported that: each
    # node's own figure (0.2 or 0.6) and its peers' bound what it says before an epoch completes.
    assert all(n.averaging.epoch >= 2 for n in nodes)
    assert all(0.199 <= e <= 0.601 for row in estimates for e in row), estimates
    # (5-round epochs of 6 nodes settle within a few percent of the truth)
    assert all(abs(n.mean_utilization_estimate(5.0) - truth) < 0.03 for n in nodes)


def test_before_an_epoch_completes_the_estimate_is_the_mean_over_fresh_entries():
    a, b, c = node(1, 2.0, 10.0), node(2, 6.0, 10.0), node(3, 12.0, 20.0)
    assert a.mean_utilization_estimate(0.0) == pytest.approx(0.2)  # only itself known
    exchange(a, b, 0.0)
    exchange(a, c, 0.0)
    assert a.mean_utilization_estimate(0.0) == pytest.approx(20.0 / 40.0)
    # c's entry goes stale: it no longer counts.
    b.publish(load("n2", 6.0), 3.0)
    exchange(a, b, 3.0)
    assert a.mean_utilization_estimate(CFG.peer_stale_ms / 1000 + 0.5) == pytest.approx(8.0 / 20.0)
    fresh = Dissemination("n9", "127.0.0.1:1009", CFG, Random(1))
    assert fresh.mean_utilization_estimate(0.0) is None


def test_averaging_restarts_in_a_new_epoch_and_tracks_load_change():
    cfg = AgentConfig(averaging_epoch_rounds=5)
    nodes = [Dissemination(f"n{i}", f"127.0.0.1:{1000 + i}", cfg, Random(i)) for i in range(6)]
    for n in nodes:
        n.publish(load(n.node_id, 2.0), 0.0)
    rng = Random(3)
    for rnd in range(12):
        for a in nodes:
            exchange(a, nodes[rng.randrange(6)], float(rnd))
    for n in nodes:  # every node's load doubles
        n.publish(load(n.node_id, 4.0), 20.0)
    for rnd in range(30):
        for a in nodes:
            exchange(a, nodes[rng.randrange(6)], 20.0 + rnd)
    assert all(n.averaging.epoch > 1 for n in nodes)
    assert all(abs(n.mean_utilization_estimate(50.0) - 0.4) < 0.02 for n in nodes)


def test_pick_peer_falls_back_to_seeds_until_peers_are_known():
    d = Dissemination("n1", "127.0.0.1:1001", CFG, Random(1), seeds=("127.0.0.1:2000", "127.0.0.1:1001"))
    assert d.pick_peer(0.0) == "127.0.0.1:2000"  # never itself
    lonely = Dissemination("n1", "127.0.0.1:1001", CFG, Random(1))
    assert lonely.pick_peer(0.0) is None


def test_digest_over_the_bound_keeps_the_freshest_half():
    cfg = AgentConfig(gossip_entries_max=6)
    a = Dissemination("n0", "127.0.0.1:1000", cfg, Random(2))
    a.publish(load("n0", 1.0), 0.0)
    for i in range(1, 12):  # n1 heard at t=1 ... n11 at t=11
        a.on_exchange(float(i), Exchange(f"n{i}", f"127.0.0.1:{1000 + i}", (load(f"n{i}", 1.0),),
                                         Averaging(0, 0, 0)))
    ids = [e.node_id for e in a.make_exchange(12.0).entries]
    assert ids[0] == "n0" and len(ids) == 6
    assert {"n11", "n10"} <= set(ids)  # the two freshest always travel


def test_pick_peer_never_returns_its_own_address_from_the_view():
    d = Dissemination("n1", "127.0.0.1:1001", CFG, Random(1), seeds=("127.0.0.1:2000",))
    assert d.pick_peer(0.0, candidates=["127.0.0.1:1001"]) == "127.0.0.1:2000"
