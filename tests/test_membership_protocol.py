"""Scenario and unit tests of the SWIM + Lifeguard core: a few nodes, one rule at a time.

Small clusters run in the deterministic harness (tests/membership_harness.py);
single-rule tests drive one `Membership` by hand.
"""

from __future__ import annotations

from random import Random

import pytest

from agent.core.membership import JoinFailed, Member, MemberEvent, Membership, MemberStatus, Send
from agent.core.membership_codec import Ack, Gossip, Ping, PingReq, Sync, Update
from agent.core.membership_config import MembershipConfig
from agent.core.suspicion import suspicion_timeout_min_s
from agent.core.validation import InputRejected
from tests.membership_harness import Net, address_of

LOCAL = MembershipConfig.profile("local")
ALIVE, SUSPECT, DEAD, LEFT = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT


def converged_net(n: int, seed: int = 1, config: MembershipConfig = LOCAL, **kwargs) -> Net:
    net = Net(config, seed, **kwargs)
    net.start(n)
    net.run_until(net.converged, 30, "convergence")
    return net


def gossip_from(sender: int, *updates: Update) -> Gossip:
    return Gossip(sender_id=f"n{sender:02d}", sender_address=address_of(sender), updates=updates)


def update(node: int, incarnation: int, status: MemberStatus, source: int = 2, generation: int = 0) -> Update:
    return Update(f"n{node:02d}", address_of(node, generation), incarnation, status, f"n{source:02d}")


def lone_node(config: MembershipConfig = LOCAL, node_id: str = "n01") -> Membership:
    return Membership(node_id, address_of(1), config, Random(1), 0.0)


# -- probing ------------------------------------------------------------------------------------


def test_probes_of_live_members_are_all_acked_and_lower_a_raised_awareness():
    net = converged_net(3)
    n01 = net.nodes["n01"]
    n01.awareness.apply_delta(3)
    before = dict(n01.counters)
    net.run_for(10)
    probes = n01.counters["probes_sent"] - before["probes_sent"]
    assert probes >= 10
    assert abs(n01.counters["acks_received"] - before["acks_received"] - probes) <= 1  # one may be in flight
    assert n01.counters["suspicions_raised"] == 0
    assert n01.awareness.score == 0


def test_member_unreachable_directly_is_reached_through_an_indirect_probe_and_never_suspected():
    net = converged_net(3)
    net.partition(["n01"], ["n03"])  # only this pair cannot talk; n02 relays
    net.run_for(30)
    n01 = net.nodes["n01"]
    assert n01.counters["indirect_probes_sent"] > 0
    assert n01.counters["acks_received"] >= n01.counters["probes_sent"] - 1  # one may be in flight
    assert n01.counters["suspicions_raised"] == 0
    assert net.verdicts(SUSPECT) == [] and net.verdicts(DEAD) == []


def test_prober_that_hears_neither_acks_nor_nacks_blames_itself_by_the_missing_nacks():
    net = converged_net(4)
    n01 = net.nodes["n01"]
    net.drop = lambda from_id, to_id, msg: to_id == "n01"  # n01 is deaf: its own fault, not its peers'
    net.run_until(lambda: n01.counters["suspicions_raised"] == 1, 5, "n01's first failed probe")
    assert n01.counters["indirect_probes_sent"] == 2  # the two other view members
    assert n01.awareness.score == 2  # one point per missing nack
    assert n01.counters["refutations"] == 0  # so the score is not the refutation's doing


def test_seed_makes_room_in_its_full_view_for_a_joiner():
    config = LOCAL.replace(view_size_max=3, shuffle_length=2, indirect_checks=2, shuffle_interval_ms=600_000)
    net = converged_net(5, config=config)
    assert len(net.nodes["n01"].view()) == 3
    net.add("n06", address_of(6), [address_of(1)])
    net.step()
    assert "n06" in [m.node_id for m in net.nodes["n01"].view()]


def test_silent_member_is_suspected_after_relays_nack_and_the_prober_keeps_its_health():
    net = converged_net(3)
    net.kill("n03")
    n01 = net.nodes["n01"]
    net.run_until(lambda: n01.counters["suspicions_raised"] == 1, 10, "n01's probe of n03 fails")
    assert n01.status_of("n03") == SUSPECT
    assert n01.counters["indirect_probes_sent"] >= 1
    assert n01.counters["nacks"] >= 1  # n02 answered "I could not reach it either"
    assert n01.awareness.score == 0  # nacks arrived: the target is down, not us


def test_suspect_is_declared_dead_between_the_min_and_max_suspicion_timeouts():
    net = converged_net(3)
    kill_s = net.now_s
    net.kill("n03")
    net.run_until(lambda: net.all_see("n03", DEAD), 20, "n03 dead everywhere")
    suspected = net.first_seen("n03", SUSPECT, kill_s)
    dead = net.first_seen("n03", DEAD, kill_s)
    min_s = suspicion_timeout_min_s(LOCAL.suspicion_mult, 3, LOCAL.probe_interval_ms / 1000)
    max_s = LOCAL.suspicion_max_timeout_mult * min_s
    first_dead = min(dead.values())
    assert min_s - 0.06 <= first_dead - min(suspected.values()) <= max_s + 0.06
    assert all(n.counters["members_dead"] == 1 for n in net.nodes.values())


def test_independent_accuser_shortens_the_suspicion_but_a_repeated_one_does_not():
    net = converged_net(6)
    n01 = net.nodes["n01"]
    net.kill("n06")
    net.inject("n01", gossip_from(2, update(6, 0, SUSPECT, source=2)))
    first_deadline_s = n01.suspicion_deadline_s("n06")
    net.inject("n01", gossip_from(3, update(6, 0, SUSPECT, source=2)))
    assert n01.suspicion_deadline_s("n06") == first_deadline_s
    net.inject("n01", gossip_from(3, update(6, 0, SUSPECT, source=3)))
    assert n01.suspicion_deadline_s("n06") < first_deadline_s
    assert any(u.node_id == "n06" and u.source_id == "n03" for u in n01.pending_updates())  # spread on


def test_suspected_member_refutes_with_a_higher_incarnation_and_stays_alive():
    net = converged_net(3)
    net.inject("n01", gossip_from(2, update(3, 0, SUSPECT)))
    assert net.nodes["n01"].status_of("n03") == SUSPECT
    net.run_until(lambda: net.nodes["n01"].status_of("n03") == ALIVE, 5, "refutation reaches n01")
    assert net.nodes["n03"].incarnation == 1
    assert net.nodes["n03"].counters["refutations"] == 1
    assert net.nodes["n01"].counters["false_suspicions"] == 1
    assert net.nodes["n01"].member("n03").incarnation == 1
    net.run_for(10)
    assert net.verdicts(DEAD) == []


def test_ping_to_a_suspect_carries_the_suspicion_first_so_it_can_refute():
    net = converged_net(3)
    pings: list[Ping] = []

    def drop_all_to_n03(from_id, to_id, msg):
        if to_id == "n03" and from_id == "n01" and isinstance(msg, Ping):
            pings.append(msg)
        return to_id == "n03"

    net.drop = drop_all_to_n03
    net.inject("n01", gossip_from(2, update(3, 0, SUSPECT)))
    net.run_until(lambda: bool(pings), 5, "n01 pings n03")
    assert pings[0].updates[0] == update(3, 0, SUSPECT, source=1)


def test_failed_ping_send_starts_indirect_probes_without_waiting_for_the_timeout():
    net = converged_net(3, refuse_dead=True)  # a send to a dead address fails at once, as over TCP
    net.kill("n03")
    n01 = net.nodes["n01"]
    answers: list[list] = []
    on_send_failed = n01.on_send_failed

    def spy(now_s, to_address, msg):
        out = on_send_failed(now_s, to_address, msg)
        if isinstance(msg, Ping) and msg.target_id == "n03":
            answers.append([type(d.message) for d in out if isinstance(d, Send)])
        return out

    n01.on_send_failed = spy
    net.run_until(lambda: [PingReq] in answers, 5, "n01's own probe of n03 fails to send")
    assert n01.counters["send_failures"] >= 1


# -- leave and rejoin -----------------------------------------------------------------------------


def test_leave_is_announced_as_left_not_dead_and_an_old_alive_does_not_resurrect_it():
    net = converged_net(5)
    leaver = net.nodes["n03"]
    net._dispatch("n03", leaver.leave(net.now_s))
    net.run_until(lambda: net.all_see("n03", LEFT), 5, "everyone sees n03 left")
    net.kill("n03")
    net.run_for(20)
    assert net.all_see("n03", LEFT)
    assert net.verdicts(DEAD) == []
    assert all(n.counters["members_dead"] == 0 for n in net.nodes.values())
    net.inject("n01", gossip_from(2, update(3, leaver.incarnation, ALIVE)))
    assert net.nodes["n01"].status_of("n03") == LEFT
    net.inject("n01", gossip_from(2, update(3, leaver.incarnation + 1, ALIVE)))
    assert net.nodes["n01"].status_of("n03") == ALIVE  # a rejoin carries a higher incarnation


def test_restarted_node_with_a_new_address_and_higher_incarnation_replaces_its_dead_entry():
    net = converged_net(5)
    net.kill("n03")
    net.run_until(lambda: net.all_see("n03", DEAD), 15, "n03 dead everywhere")
    mark = len(net.observed)  # not a time: the last death verdicts may share the restart's instant
    net.restart("n03", address_of(3, generation=1), incarnation=1, seeds=[address_of(1)])
    net.run_until(net.converged, 10, "n03 back everywhere")
    for observer in ("n01", "n02", "n04", "n05"):
        member = net.member(observer, "n03")
        assert (member.address, member.incarnation, member.status) == (address_of(3, 1), 1, ALIVE)
    back = [o.event for o in net.observed[mark:] if o.event.member.node_id == "n03"]
    assert {e.previous for e in back} == {DEAD}


def test_quick_restart_at_a_new_address_moves_the_member_without_a_death():
    net = converged_net(5)
    net.kill("n03")
    net.restart("n03", address_of(3, generation=1), incarnation=1, seeds=[address_of(2)])
    net.run_until(lambda: all(net.member(o, "n03").address == address_of(3, 1)
                              for o in net.nodes if o != "n03"), 10, "new address known")
    net.run_for(15)
    assert net.all_see("n03", ALIVE)
    assert net.verdicts(DEAD) == []


def test_restart_that_lost_its_incarnation_refutes_its_own_death():
    net = converged_net(5)
    net.kill("n03")
    net.run_until(lambda: net.all_see("n03", DEAD), 15, "n03 dead everywhere")
    net.restart("n03", address_of(3), incarnation=0, seeds=[address_of(1)])  # no persisted incarnation
    net.run_until(net.converged, 10, "n03 alive again")
    assert net.nodes["n03"].incarnation >= 1
    assert net.nodes["n03"].counters["refutations"] >= 1


def test_partitioned_halves_declare_each_other_dead_then_merge_after_the_heal():
    net = converged_net(6)
    left, right = ["n01", "n02", "n03"], ["n04", "n05", "n06"]
    net.partition(left, right)
    net.run_until(lambda: all(net.nodes[a].status_of(b) == DEAD for a in left for b in right)
                  and all(net.nodes[b].status_of(a) == DEAD for a in left for b in right), 30, "split")
    net.heal()
    net.run_until(net.converged, 60, "merge after heal (reconnect)")
    assert net.all_see("n01", ALIVE) and net.all_see("n06", ALIVE)


# -- join --------------------------------------------------------------------------------------------


def test_first_node_without_seeds_is_joined_at_once():
    node = lone_node()
    assert node.join(0.0, []) == []
    assert node.joined
    assert [m.node_id for m in node.members()] == ["n01"]


def test_unanswered_join_retries_with_growing_backoff_and_reports_join_failed_once():
    node = lone_node()
    sends_s, failures = [], []
    out = node.join(0.0, [address_of(8), address_of(9)])
    sends_s += [0.0] * sum(isinstance(d, Send) for d in out)
    for step in range(1, 1_200):
        now = step * 0.05
        for d in node.tick(now):
            if isinstance(d, Send) and isinstance(d.message, Sync) and d.message.join:
                sends_s.append(now)
            elif isinstance(d, JoinFailed):
                failures.append(d)
    rounds = sorted(set(sends_s))
    gaps = [b - a for a, b in zip(rounds, rounds[1:])]
    assert len(rounds) > LOCAL.join_attempts_max  # retries go on after the report
    assert all(later >= 1.5 * earlier for earlier, later in zip(gaps[:4], gaps[1:5]))  # doubling
    assert max(gaps) <= LOCAL.join_backoff_ms_max / 1000 * 1.25 + 0.05
    assert failures == [JoinFailed((address_of(8), address_of(9)), LOCAL.join_attempts_max)]
    assert not node.joined


def test_join_succeeds_when_the_seed_comes_up_late():
    net = Net(LOCAL, seed=4)
    net.add("n02", address_of(2), [address_of(1)])
    net.run_for(3)
    assert not net.nodes["n02"].joined
    net.add("n01", address_of(1), [])
    net.run_until(net.converged, 10, "late seed joined")
    assert net.nodes["n02"].joined


def test_join_with_a_malformed_seed_address_is_a_caller_error():
    with pytest.raises(ValueError, match="seeds"):
        lone_node().join(0.0, ["no-port"])


# -- bad input -----------------------------------------------------------------------------------------


def test_update_with_a_lower_incarnation_than_known_is_ignored():
    net = converged_net(3)
    net.inject("n01", gossip_from(2, update(3, 4, ALIVE)))
    net.inject("n01", gossip_from(2, update(3, 3, SUSPECT), update(3, 2, DEAD),
                                  Update("n03", "10.9.9.9:1", 3, ALIVE, "n02")))
    member = net.member("n01", "n03")
    assert (member.status, member.incarnation, member.address) == (ALIVE, 4, address_of(3))
    assert net.nodes["n01"].counters["updates_stale"] == 3


@pytest.mark.parametrize("status", [SUSPECT, DEAD, LEFT])
def test_forged_verdict_about_the_receiver_makes_it_refute_with_a_higher_incarnation(status):
    net = converged_net(3)
    target = net.nodes["n02"]
    net.inject("n02", gossip_from(3, update(2, 0, status, source=3)))
    assert target.incarnation == 1
    assert target.status_of("n02") == ALIVE
    assert update(2, 1, ALIVE) in target.pending_updates()
    net.run_until(lambda: all(net.member(o, "n02").incarnation == 1 for o in ("n01", "n03")), 5, "refutation")


def test_forged_verdict_about_the_receiver_at_an_older_incarnation_is_ignored():
    net = converged_net(3)
    net.inject("n02", gossip_from(3, update(2, 0, SUSPECT, source=3)))  # -> incarnation 1
    net.inject("n02", gossip_from(3, update(2, 0, DEAD, source=3)))
    assert net.nodes["n02"].incarnation == 1
    assert net.nodes["n02"].counters["refutations"] == 1


def test_flood_of_updates_beyond_the_per_message_budget_is_cut_and_counted():
    config = LOCAL.replace(updates_per_message_max=8)
    net = converged_net(3, config=config)
    flood = tuple(Update(f"x{i:03d}", f"10.1.0.{i}:7946", 0, ALIVE, "n02") for i in range(20))
    net.inject("n01", gossip_from(2, *flood))
    n01 = net.nodes["n01"]
    assert n01.counters["updates_ignored"] == 12
    assert len(n01.members()) == 3 + 8


def test_members_beyond_members_max_are_ignored_and_counted():
    config = LOCAL.replace(members_max=20)
    net = converged_net(3, config=config)
    for start in range(0, 40, 8):
        net.inject("n01", gossip_from(2, *(Update(f"x{i:03d}", f"10.1.0.{i}:7946", 0, ALIVE, "n02")
                                           for i in range(start, start + 8))))
    n01 = net.nodes["n01"]
    assert len(n01.members()) == 20
    assert n01.counters["members_rejected"] == 40 - 17


def test_ping_req_flood_is_bounded_by_relays_inflight_max():
    node = lone_node(LOCAL.replace(relays_inflight_max=4))
    sent = []
    for seq in range(10):
        out = node.on_message(0.0, PingReq(sender_id="n02", sender_address=address_of(2), seq=seq,
                                           target_id="n03", target_address=address_of(3)))
        sent += [d for d in out if isinstance(d, Send)]
    assert len(sent) == 4
    assert node.counters["relays_rejected"] == 6


@pytest.mark.parametrize("msg, reason", [
    (Ping(sender_id="bad id", sender_address=address_of(2), seq=1, target_id="n01"), "bad_id"),
    (Ping(sender_id="n02", sender_address="10.0.0.2", seq=1, target_id="n01"), "bad_address"),
    (Ping(sender_id="n02", sender_address=address_of(2), seq=-1, target_id="n01"), "out_of_range"),
    (Ack(sender_id="n02", sender_address=address_of(2), seq=1,
         updates=(Update("n03", address_of(3), -2, ALIVE, "n02"),)), "out_of_range"),
    (Ack(sender_id="n02", sender_address=address_of(2), seq=1,
         updates=(Update("n03", address_of(3), 0, "zombie", "n02"),)), "bad_field"),  # type: ignore[arg-type]
    (Ack(sender_id="n02", sender_address=address_of(2), seq=1, updates=[]), "bad_field"),  # type: ignore[arg-type]
    (Ping(sender_id="n01", sender_address=address_of(2), seq=1, target_id="n01"), "own_id"),
])
def test_malformed_message_raises_input_rejected_and_changes_nothing(msg, reason):
    node = lone_node()
    before = (node.members(), dict(node.counters))
    with pytest.raises(InputRejected) as caught:
        node.on_message(1.0, msg)
    assert caught.value.reason == reason
    assert (node.members(), dict(node.counters)) == before


def test_ping_meant_for_another_id_at_our_address_is_not_answered():
    node = lone_node()
    out = node.on_message(0.0, Ping(sender_id="n02", sender_address=address_of(2), seq=7, target_id="n09"))
    assert [d for d in out if isinstance(d, Send)] == []
    assert node.counters["misdirected_pings"] == 1


def test_a_new_member_is_reported_once_and_listed_by_id():
    node = lone_node()
    out = node.on_message(0.0, gossip_from(2, update(3, 0, ALIVE), update(2, 0, ALIVE)))
    events = [d for d in out if isinstance(d, MemberEvent)]
    assert sorted(e.member.node_id for e in events) == ["n02", "n03"]
    assert all(e.previous is None for e in events)
    assert [m.node_id for m in node.members()] == ["n01", "n02", "n03"]
    assert node.on_message(0.1, gossip_from(2, update(3, 0, ALIVE))) == []


def test_answer_to_a_member_we_hold_dead_carries_the_verdict_first_so_it_can_refute():
    node = lone_node()
    node.on_message(0.0, gossip_from(2, update(3, 0, ALIVE)))
    node.on_message(0.1, gossip_from(2, update(3, 0, DEAD)))
    out = node.on_message(0.2, Ping(sender_id="n03", sender_address=address_of(3), seq=5, target_id="n01"))
    (ack,) = [d.message for d in out if isinstance(d, Send)]
    assert isinstance(ack, Ack) and ack.seq == 5
    assert ack.updates[0] == update(3, 0, DEAD, source=1)


def test_a_peers_dead_verdict_in_a_sync_only_makes_the_member_suspect():
    node = lone_node()
    node.on_message(0.0, gossip_from(2, update(3, 0, ALIVE)))
    node.on_message(0.1, Sync(sender_id="n02", sender_address=address_of(2), seq=1,
                              entries=(update(2, 0, ALIVE), update(3, 0, DEAD))))
    assert node.status_of("n03") == SUSPECT  # time to refute, as memberlist's push-pull merge allows
    assert node.status_of("n02") == ALIVE


def test_bootstrap_starts_a_node_as_a_member_of_a_formed_cluster():
    """The simulator's formed start: all known alive, a random view, nothing learned one by one."""
    members = {f"n{i:02d}": Member(f"n{i:02d}", address_of(i), 0, ALIVE, 0.0) for i in range(1, 41)}
    node = Membership("n01", address_of(1), LOCAL, Random(1), 0.0)
    node.bootstrap(members)
    assert node.joined and node.live_count() == 40 and len(node.members()) == 40
    view = node.view()
    assert len(view) == LOCAL.view_size_max and "n01" not in {m.node_id for m in view}
    other = Membership("n02", address_of(2), LOCAL, Random(2), 0.0)
    other.bootstrap(members)
    assert {m.node_id for m in other.view()} != {m.node_id for m in view}  # each its own random sample
    # It runs the protocol from there: within a probe interval it pings a member of its view.
    sent = [d for t in range(0, 2 * LOCAL.probe_interval_ms, 10) for d in node.tick(t / 1000) if isinstance(d, Send)]
    pinged = {d.to_address for d in sent if isinstance(d.message, Ping)}
    assert pinged and pinged <= {m.address for m in view}
    with pytest.raises(ValueError):
        Membership("n03", address_of(3), LOCAL, Random(3), 0.0).bootstrap(
            {**members, "n04": Member("n04", address_of(4), 0, DEAD, 0.0)})
