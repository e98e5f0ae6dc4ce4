"""Whole-cluster properties of the membership core in the deterministic harness.

Detection within the bound the chaos tests use, no false verdicts without
faults, flat per-node traffic as N grows (bounded partial view), epidemic
spread in O(log N) gossip rounds, and Lifeguard at work on a starved node.
Each test prints what it measured; timings are virtual, so they are exact
and can be asserted.
"""

from __future__ import annotations

import math

import pytest

from agent.core.membership import MemberStatus
from agent.core.membership_codec import Gossip, Update
from agent.core.membership_config import MembershipConfig, detection_bound_s, gossip_rounds_bound
from tests.membership_harness import Net, address_of, node_id

LOCAL = MembershipConfig.profile("local")
ALIVE, SUSPECT, DEAD = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD


def converged_net(n: int, seed: int, config: MembershipConfig = LOCAL, **kwargs) -> Net:
    net = Net(config, seed, **kwargs)
    net.start(n, seeds=2)
    net.run_until(net.converged, 60, f"convergence of {n} nodes")
    return net


def test_killed_node_is_marked_dead_by_every_survivor_within_the_detection_bound_at_n32():
    net = converged_net(32, seed=11)
    net.run_for(5)
    bound_s = detection_bound_s(LOCAL, 32)
    for victim in ("n07", "n20"):
        kill_s = net.now_s
        net.kill(victim)
        took_s = net.run_until(lambda: net.all_see(victim, DEAD), bound_s, f"every survivor sees {victim} dead")
        seen = net.first_seen(victim, DEAD, kill_s)
        print(f"N=32 kill {victim}: first dead {min(seen.values()) - kill_s:.2f} s, all dead {took_s:.2f} s, "
              f"bound {bound_s:.2f} s")
        assert set(seen) == set(net.nodes)
    assert {o.event.member.node_id for o in net.verdicts(DEAD)} == {"n07", "n20"}


def test_no_member_is_declared_dead_in_600_virtual_seconds_without_faults():
    net = converged_net(16, seed=5, delay_s=(0.001, 0.030))
    start_s = net.now_s
    net.run_for(600)
    suspicions = net.verdicts(SUSPECT, start_s)
    print(f"600 s, N=16, no faults: {len(suspicions)} suspicions, "
          f"{sum(n.counters['probes_sent'] for n in net.nodes.values())} probes")
    assert net.verdicts(DEAD) == []
    assert net.converged()


def test_no_member_is_declared_dead_with_five_percent_message_loss():
    net = converged_net(16, seed=6, loss=0.05)
    start_s = net.now_s
    net.run_for(120)
    print(f"120 s, N=16, 5 % loss: {len(net.verdicts(SUSPECT, start_s))} suspicions, "
          f"{sum(n.counters['refutations'] for n in net.nodes.values())} refutations")
    assert net.verdicts(DEAD) == []


@pytest.fixture(scope="module")
def steady() -> dict[int, Net]:
    """Converged clusters of 16 and 128 nodes, past the join burst, shared by the scaling tests.

    Each test only moves time forward and measures differences, so order does not matter.
    """
    nets = {n: converged_net(n, seed=n) for n in (16, 128)}
    for net in nets.values():
        net.run_for(10)
    return nets


def _messages_per_node_s(net: Net, window_s: float = 20.0) -> float:
    before = sum(net.sent.values())
    net.run_for(window_s)
    return (sum(net.sent.values()) - before) / len(net.nodes) / window_s


def test_messages_per_node_per_second_do_not_grow_from_16_to_128_nodes(steady):
    rates = {n: _messages_per_node_s(net) for n, net in steady.items()}
    print("messages per node per second: " + ", ".join(f"N={n}: {r:.2f}" for n, r in rates.items()))
    assert rates[128] <= rates[16] * 1.15
    # One ping + one ack per probe interval each way, plus a shuffle and a sync now and then.
    assert rates[128] < 2 * 2 * 1000 / LOCAL.probe_interval_ms


def test_views_stay_bounded_and_every_node_is_in_some_view_so_its_death_is_noticed(steady):
    net = steady[128]
    in_degree = {nid: 0 for nid in net.nodes}
    for node in net.nodes.values():
        view = node.view()
        assert len(view) <= LOCAL.view_size_max
        for member in view:
            in_degree[member.node_id] += 1
    print(f"N=128 view in-degree min {min(in_degree.values())} max {max(in_degree.values())}")
    assert min(in_degree.values()) >= LOCAL.view_size_max // 4


def _rounds_to_reach_all(net: Net) -> float:
    n = len(net.nodes)
    origin = node_id(n // 2)
    incarnation = net.nodes[origin].incarnation
    # A suspicion shown only to the origin makes it refute: one fresh update, spread from one node.
    net.inject(origin, Gossip(sender_id=node_id(1), sender_address=address_of(1),
                              updates=(Update(origin, address_of(n // 2), incarnation, SUSPECT, node_id(1)),)))
    took_s = net.run_until(lambda: all(node.member(origin).incarnation == incarnation + 1
                                       for node in net.nodes.values()), 30, "refutation reaches every node")
    return took_s / (LOCAL.gossip_interval_ms / 1000)


def test_an_update_reaches_every_member_in_o_log_n_gossip_rounds(steady):
    rounds = {n: _rounds_to_reach_all(net) for n, net in steady.items()}
    print("gossip rounds to reach all: " + ", ".join(f"N={n}: {r:.1f}" for n, r in rounds.items()))
    for n, r in rounds.items():
        assert r <= gossip_rounds_bound(LOCAL, n)
    # 8x the members, far less than 8x the rounds: the spread is logarithmic.
    assert rounds[128] <= rounds[16] * math.log(128) / math.log(16) + 2


def _starved_run(awareness_max: int) -> tuple[Net, dict[str, dict[str, int]]]:
    net = converged_net(8, seed=3, config=LOCAL.replace(awareness_max=awareness_max))
    before = {nid: dict(node.counters) for nid, node in net.nodes.items()}
    net.extra_delay_s["n04"] = 0.6  # everything n04 receives is late, its acks included
    net.run_for(60)
    delta = {nid: {k: node.counters[k] - before[nid][k] for k in node.counters} for nid, node in net.nodes.items()}
    return net, delta


def test_lifeguard_makes_a_starved_node_slow_down_and_stop_suspecting_healthy_peers():
    net, delta = _starved_run(awareness_max=8)
    _, plain = _starved_run(awareness_max=1)  # Lifeguard's local health off: plain SWIM
    starved, healthy = delta["n04"], delta["n01"]
    print(f"starved node: awareness {net.nodes['n04'].awareness.score}, probes {starved['probes_sent']} "
          f"(healthy {healthy['probes_sent']}), suspicions raised {starved['suspicions_raised']} "
          f"(without Lifeguard {plain['n04']['suspicions_raised']})")
    assert net.nodes["n04"].awareness.score > 0
    assert starved["probes_sent"] < healthy["probes_sent"] / 3
    assert starved["suspicions_raised"] * 10 <= plain["n04"]["suspicions_raised"]
    assert all(net.nodes[nid].awareness.score == 0 for nid in net.nodes if nid != "n04")
    assert [o for o in net.verdicts(DEAD) if o.event.member.node_id != "n04"] == []


def test_cluster_over_the_wire_codec_converges_and_detects_a_kill():
    net = converged_net(8, seed=12, wire=True)
    net.kill("n05")
    net.run_until(lambda: net.all_see("n05", DEAD), detection_bound_s(LOCAL, 8), "dead over the wire")
    assert net.rejected == []
