"""Unit tests of the membership core's pure pieces: formulas, timers, queue, view, config."""

from __future__ import annotations

import math
from random import Random

import pytest

from agent.core.awareness import Awareness
from agent.core.broadcasts import BroadcastQueue, retransmit_limit
from agent.core.config import ConfigError
from agent.core.membership_config import (MembershipConfig, detection_bound_s, first_probe_periods_bound,
                                          gossip_rounds_bound, suspicion_timeout_max_s)
from agent.core.peer_view import PeerView
from agent.core.suspicion import (Suspicion, confirmations_expected, suspicion_timeout_min_s,
                                  suspicion_timeout_s)

# -- suspicion (memberlist suspicion.go / util.go) ------------------------------------------


def test_suspicion_timeout_min_scales_with_log10_n_and_never_below_one_scale():
    assert suspicion_timeout_min_s(4, 1, 1.0) == 4.0
    assert suspicion_timeout_min_s(4, 10, 1.0) == 4.0
    assert suspicion_timeout_min_s(4, 100, 1.0) == pytest.approx(8.0)
    assert suspicion_timeout_min_s(4, 1000, 0.5) == pytest.approx(6.0)


def test_suspicion_timeout_falls_log_scaled_from_max_to_min_as_confirmations_arrive():
    # memberlist's TestSuspicion_remainingSuspicionTime table: k = 3, min 2 s, max 30 s.
    assert suspicion_timeout_s(0, 3, 2.0, 30.0) == 30.0
    assert suspicion_timeout_s(1, 3, 2.0, 30.0) == pytest.approx(30 - math.log(2) / math.log(4) * 28)  # 16 s
    assert suspicion_timeout_s(2, 3, 2.0, 30.0) == pytest.approx(30 - math.log(3) / math.log(4) * 28)
    assert suspicion_timeout_s(3, 3, 2.0, 30.0) == 2.0
    assert suspicion_timeout_s(0, 0, 2.0, 30.0) == 2.0  # nobody to confirm: the minimum at once


def test_confirmations_expected_is_mult_minus_two_but_zero_in_a_tiny_cluster():
    assert confirmations_expected(4, 10) == 2
    assert confirmations_expected(4, 3) == 0  # n - 2 < k: not enough other members to confirm
    assert confirmations_expected(3, 3) == 1


def test_same_accuser_twice_does_not_shorten_the_suspicion():
    s = Suspicion("a", k=2, min_s=2.0, max_s=12.0, started_s=100.0)
    assert s.deadline_s == 112.0
    assert not s.confirm("a")
    assert s.deadline_s == 112.0
    assert s.confirm("b")
    after_b = s.deadline_s
    assert 102.0 < after_b < 112.0
    assert not s.confirm("b")
    assert s.confirm("c")
    assert s.deadline_s == 102.0
    assert not s.confirm("d")  # k reached: the accuser set stays bounded
    assert s.accusers == {"a", "b", "c"}
    assert not s.expired(101.9) and s.expired(102.0)


# -- awareness (memberlist awareness.go) ------------------------------------------------------


def test_awareness_score_is_clamped_and_scales_timeouts():
    a = Awareness(8)
    assert a.scale(500) == 500
    assert a.apply_delta(-1) == 0
    assert a.apply_delta(3) == 3
    assert a.scale(0.5) == 2.0
    assert a.apply_delta(100) == 7  # max - 1
    assert a.scale(1) == 8
    assert Awareness(1).apply_delta(5) == 0  # awareness_max 1 turns Lifeguard's probe scaling off


# -- broadcast queue (memberlist queue.go) ------------------------------------------------------


def test_retransmit_limit_is_mult_times_ceil_log10_n_plus_one():
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 9) == 4
    assert retransmit_limit(4, 10) == 8
    assert retransmit_limit(3, 128) == 9


def test_broadcasts_go_fewest_transmits_first_newest_first_and_stop_at_the_limit():
    q: BroadcastQueue[str] = BroadcastQueue(100)
    q.enqueue("a", "a1")
    q.enqueue("b", "b1")
    assert q.take(1, transmit_limit=2) == ["b1"]  # newest first among equals
    assert q.take(1, transmit_limit=2) == ["a1"]  # then the one sent fewer times
    assert q.take(5, transmit_limit=2) == ["b1", "a1"]
    assert len(q) == 0 and q.take(5, 2) == []


def test_newer_update_about_a_node_replaces_the_queued_one_and_restarts_its_count():
    q: BroadcastQueue[str] = BroadcastQueue(100)
    q.enqueue("a", "a-suspect")
    q.enqueue("b", "b-alive")
    q.take(2, transmit_limit=3)
    q.enqueue("a", "a-alive")
    assert q.pending() == ["a-alive", "b-alive"]
    assert q.take(1, transmit_limit=3) == ["a-alive"]


def test_broadcast_queue_is_bounded_and_drops_the_most_sent():
    q: BroadcastQueue[int] = BroadcastQueue(3)
    for i in range(3):
        q.enqueue(str(i), i)
    q.take(1, transmit_limit=10)  # item 2 sent once
    q.enqueue("3", 3)
    assert len(q) == 3 and q.dropped == 1
    assert 2 not in q.pending()


def test_take_skips_keys_already_in_the_message():
    q: BroadcastQueue[str] = BroadcastQueue(10)
    q.enqueue("a", "a1")
    q.enqueue("b", "b1")
    assert q.take(5, 4, skip_keys=frozenset({"b"})) == ["a1"]


# -- partial view (Cyclon) -------------------------------------------------------------------------


def test_view_never_exceeds_its_size_and_oldest_is_the_shuffle_partner():
    v = PeerView(3, Random(1))
    assert all(v.add(i) for i in "abc")
    assert not v.add("d") and len(v) == 3
    v.age_all()
    v.touch("b")
    v.age_all()
    assert v.oldest(["a", "b", "c"]) == "a"
    assert v.oldest(["b"]) == "b"


def test_cyclon_integrate_fills_free_slots_then_replaces_given_entries_but_not_pinned():
    v = PeerView(4, Random(1))
    for i in "abc":
        v.add(i)
    added = v.integrate(["x", "y", "z", "a"], given=["b", "c"], pinned=frozenset({"c"}))
    assert added == ["x", "y"]  # x in the free slot, y in place of b; c is pinned, so z finds no room
    assert v.ids() == ["a", "c", "x", "y"]


def test_replace_random_keeps_pinned_entries():
    v = PeerView(2, Random(1))
    v.add("a")
    v.add("b")
    assert v.replace_random("c", pinned=frozenset({"a"})) == "b"
    assert v.ids() == ["a", "c"]


# -- config ----------------------------------------------------------------------------------------


def test_lan_profile_is_memberlists_default_lan_config():
    c = MembershipConfig.profile("lan")
    assert (c.probe_interval_ms, c.probe_timeout_ms, c.indirect_checks) == (1_000, 500, 3)
    assert (c.suspicion_mult, c.suspicion_max_timeout_mult, c.retransmit_mult) == (4, 6, 4)
    assert (c.gossip_interval_ms, c.gossip_fanout, c.awareness_max) == (200, 3, 8)


def test_wan_profile_is_memberlists_default_wan_config_and_local_probes_every_500_ms():
    wan = MembershipConfig.profile("wan")
    assert (wan.probe_interval_ms, wan.probe_timeout_ms, wan.suspicion_mult) == (5_000, 3_000, 6)
    assert (wan.gossip_interval_ms, wan.gossip_fanout) == (500, 4)
    local = MembershipConfig.profile("local")
    assert local.probe_interval_ms == 500 and local.profile_name == "local"


@pytest.mark.parametrize("changes, field", [
    ({"probe_timeout_ms": 1_000}, "probe_timeout_ms"),
    ({"indirect_checks": 0}, "indirect_checks"),
    ({"shuffle_length": 17}, "shuffle_length"),
    ({"gossip_fanout": 20}, "gossip_fanout"),
    ({"join_backoff_ms": 60_000}, "join_backoff_ms"),
    ({"message_bytes_max": 10_000}, "message_bytes_max"),
    ({"probe_interval_ms": 1.5}, "probe_interval_ms"),
    ({"awareness_max": True}, "awareness_max"),
])
def test_invalid_config_names_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        MembershipConfig().replace(**changes).validate()


def test_from_mapping_applies_profile_then_overrides_and_rejects_unknown_keys():
    c = MembershipConfig.from_mapping({"profile": "local", "view_size_max": 8})
    assert c.probe_interval_ms == 500 and c.view_size_max == 8
    with pytest.raises(ConfigError, match="probe_intervall_ms"):
        MembershipConfig.from_mapping({"probe_intervall_ms": 3})
    with pytest.raises(ConfigError, match="profile"):
        MembershipConfig.profile("moon")


def test_detection_bound_for_ten_local_nodes_is_under_ten_seconds():
    assert detection_bound_s(MembershipConfig.profile("local"), 10) < 10.0


def test_detection_bound_adds_probe_suspicion_and_spread_and_grows_with_n():
    c = MembershipConfig.profile("lan")
    b32 = detection_bound_s(c, 32)
    parts = (first_probe_periods_bound(c, 32) + 2) * 1.0 + suspicion_timeout_max_s(c, 32) \
        + gossip_rounds_bound(c, 32) * 0.2
    assert b32 == pytest.approx(parts)
    assert detection_bound_s(c, 1_000) > b32
    assert suspicion_timeout_max_s(c, 32) == pytest.approx(6 * 4 * math.log10(32))


def test_membership_core_imports_without_loading_io_modules():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; import agent.core.membership, agent.core.membership_codec; "
            "bad = sorted(m for m in ('asyncio', 'grpc', 'socket', 'time', 'threading') if m in sys.modules "
            "and m not in START); print(','.join(bad))")
    # `time` and friends may be loaded by the interpreter itself; only what the core adds counts.
    prelude = "import sys; START = set(sys.modules); "
    out = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == ""
