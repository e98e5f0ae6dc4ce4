"""The replica core: rendezvous ranking, pushes, failover decisions, fencing (agent/core/replicas.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.replicas import (EPOCH_HANDOFF_BITS, EPOCH_TAG_BITS, Checkpoint, Conflict, Copy, OwnedDomain,
                                 OwnerReplication, PeerRoom, Replica, ReplicaTable, Restart, Room, Unplaced, buddies_for,
                                 fence_loser, hrw_score, rank, restart_epoch)
from hypervisor.domain import DomainSpec

NODES = [f"node-{i}" for i in range(8)]
BIG = Room(memory_mib=1 << 20, vcpus=1e6)


def spec(dom: str, memory_mib: int = 512, vcpus: int = 1) -> DomainSpec:
    return DomainSpec(domain_id=dom, vcpus=vcpus, memory_mib=memory_mib)


def pushed_tables(owner: str, domains: list[str], live: list[str], r: int = 2) -> dict[str, ReplicaTable]:
    """Every live node's table after one round of pushes from `owner`."""
    repl = OwnerReplication(owner, r, refresh_s=5.0)
    tables = {n: ReplicaTable(n) for n in live if n != owner}
    for push in repl.tick(0.0, [OwnedDomain(spec(d), 3) for d in domains], live):
        tables[push.to_id].on_replicate(0.0, owner, push.replicas, running={})
        repl.on_acked(0.0, push)
    return tables


# -- ranking ------------------------------------------------------------------------

def test_hrw_score_is_stable_across_processes():
    # A fixed value: Python's salted hash() would differ between runs and nodes.
    assert hrw_score("node-1", "web") == hrw_score("node-1", "web")
    assert hrw_score("node-1", "web") != hrw_score("node-2", "web")
    assert rank("web", NODES) == rank("web", list(reversed(NODES)))


def test_buddies_exclude_the_owner_and_take_the_top_r():
    order = rank("db", NODES)
    assert buddies_for("db", order[0], NODES, 2) == tuple(order[1:3])
    assert buddies_for("db", order[5], NODES, 2) == tuple(order[0:2])
    assert buddies_for("db", order[0], [order[0]], 2) == ()


@given(st.lists(st.sampled_from(NODES), min_size=1, unique=True), st.text(min_size=1, max_size=12))
def test_removing_a_node_only_moves_the_domains_it_ranked_for(live, dom):
    before = rank(dom, live)
    for gone in live:
        after = rank(dom, [n for n in live if n != gone])
        assert after == [n for n in before if n != gone]


@given(st.text(min_size=1, max_size=12), st.sampled_from(NODES), st.sampled_from(NODES), st.integers(1, 3))
def test_two_owners_of_one_domain_share_a_buddy_or_are_each_others(dom, a, b, r):
    if a == b:
        return
    ba, bb = set(buddies_for(dom, a, NODES, r)), set(buddies_for(dom, b, NODES, r))
    assert ba & bb or b in ba or a in bb


@settings(max_examples=40, deadline=None)
@given(st.integers(257, 3000), st.integers(0, 2**32), st.integers(1, 4), st.booleans())
def test_large_live_sets_rank_in_arrays_exactly_as_by_the_definition(n, salt, r, owner_inside):
    # Above a few hundred members buddies_for ranks a frozenset with numpy; it must pick what the
    # definition (top r by score, then id, the owner excluded) picks, whoever the owner is.
    live = frozenset(f"n{salt % 97}-{i}" for i in range(n))
    ids = sorted(live)
    for k in range(5):
        dom = f"d{salt}-{k}"
        owner = ids[(salt + k) % n] if owner_inside else "elsewhere"
        want = tuple(rank(dom, [x for x in live if x != owner])[:r])
        assert buddies_for(dom, owner, live, r) == want
        assert buddies_for(dom, owner, list(live), r) == want  # not a frozenset: the heap path


def test_a_tie_at_the_boundary_is_settled_by_node_id(monkeypatch):
    import agent.core.replicas as replicas
    live = frozenset(f"m{i}" for i in range(400))
    monkeypatch.setattr(replicas._LiveScores, "_cache", {})
    scores = replicas._LiveScores.of(live)
    scores.words[:] = 7  # every member scores the same: the order is by id alone
    assert buddies_for("any", "m0", live, 3) == ("m1", "m10", "m100")


# -- owner side -----------------------------------------------------------------------

def test_owner_pushes_full_sets_and_only_changes_after_ack():
    repl = OwnerReplication("node-0", 2, refresh_s=5.0)
    owned = [OwnedDomain(spec(f"d{i}"), 1) for i in range(10)]
    first = repl.tick(0.0, owned, NODES)
    assert sum(len(p.replicas) for p in first) == 20  # each domain to 2 buddies
    assert all(r.owner_id == "node-0" and "node-0" not in r.buddies for p in first for r in p.replicas)
    assert repl.tick(0.1, owned, NODES) == []  # in flight
    for p in first:
        repl.on_acked(0.1, p)
    assert repl.tick(0.2, owned, NODES) == []  # nothing changed
    bumped = [OwnedDomain(d.spec, 2) if d.domain_id == "d3" else d for d in owned]
    again = repl.tick(0.3, bumped, NODES)
    assert {p.to_id for p in again} == set(buddies_for("d3", "node-0", NODES, 2))
    assert {p.to_id for p in repl.tick(6.0, owned, NODES)} >= {p.to_id for p in first} - {p.to_id for p in again}


def test_a_former_buddy_gets_an_empty_push_and_drops_the_replica():
    repl = OwnerReplication("node-0", 1, refresh_s=5.0)
    d = OwnedDomain(spec("x"), 1)
    (p,) = repl.tick(0.0, [d], NODES)
    repl.on_acked(0.0, p)
    table = ReplicaTable(p.to_id)
    table.on_replicate(0.0, "node-0", p.replicas, {})
    assert len(table) == 1
    pushes = repl.tick(1.0, [], NODES)  # the domain left (migrated)
    assert [(q.to_id, q.replicas) for q in pushes] == [(p.to_id, ())]
    out = table.on_replicate(1.0, "node-0", (), {})
    assert out.dropped == 1 and len(table) == 0


def test_failed_push_is_retried_next_tick():
    repl = OwnerReplication("node-0", 2, refresh_s=5.0)
    owned = [OwnedDomain(spec("x"), 1)]
    first = repl.tick(0.0, owned, NODES)
    for p in first:
        repl.on_failed(p)
    assert {p.to_id for p in repl.tick(0.1, owned, NODES)} == {p.to_id for p in first}


def test_inherited_domain_is_announced_to_the_dead_owners_buddies_once():
    me = "node-1"
    repl = OwnerReplication(me, 1, refresh_s=60.0)
    owned = [OwnedDomain(spec("x"), 5)]
    mine = set(buddies_for("x", me, NODES, 1))
    other = next(n for n in NODES if n != me and n not in mine)
    repl.inherit("x", [other, me])
    first = repl.tick(0.0, owned, NODES)
    assert {p.to_id for p in first} == mine | {other}
    for p in first:
        repl.on_acked(0.0, p)
    second = repl.tick(0.1, owned, NODES)
    assert [(p.to_id, p.replicas) for p in second] == [(other, ())]


# -- buddy side: failover --------------------------------------------------------------

def test_only_the_first_live_buddy_restarts_in_the_next_term():
    tables = pushed_tables("node-0", [f"d{i}" for i in range(20)], NODES)
    restarts = {}
    for node, table in tables.items():
        for dec in table.failover({"node-0"}, BIG):
            assert isinstance(dec, Restart)
            assert dec.domain_id not in restarts, "two nodes restarted one domain"
            restarts[dec.domain_id] = (node, dec.epoch)
    assert set(restarts) == {f"d{i}" for i in range(20)}
    for dom, (node, epoch) in restarts.items():
        assert node == buddies_for(dom, "node-0", NODES, 2)[0]
        assert epoch == restart_epoch(3, node, dom)


def test_no_restart_while_the_owner_is_only_suspected():
    tables = pushed_tables("node-0", ["a", "b", "c"], NODES)
    # a suspect is still a member: only a confirmed dead verdict counts
    assert all(t.failover(set(), BIG) == [] for t in tables.values())
    assert all(t.failover({"node-5"} - {"node-0"}, BIG) == [] for t in tables.values()
               if all(r.owner_id == "node-0" for r in t.replicas.values()))


def test_second_buddy_takes_over_when_the_first_is_dead_too_at_a_distinct_epoch():
    dom = "svc"
    first, second = buddies_for(dom, "node-0", NODES, 2)
    tables = pushed_tables("node-0", [dom], NODES)
    decisions = tables[second].failover({"node-0", first}, BIG)
    assert [(type(d), d.epoch) for d in decisions] == [(Restart, restart_epoch(3, second, dom))]
    assert tables[second].failover({"node-0"}, BIG) == []  # claimed already; and first is alive anyway


def test_admission_control_places_what_fits_and_reports_the_rest():
    tables = pushed_tables("node-0", [f"d{i}" for i in range(30)], NODES, r=1)
    coordinator = max(tables.values(), key=len)
    n = len(coordinator)
    assert n >= 3  # 30 domains over 7 buddies
    # Room for exactly one domain here; one peer has room for one more.
    room = Room(memory_mib=600, vcpus=64)
    peers = [PeerRoom("node-7" if coordinator.node_id != "node-7" else "node-6", Room(700, 64))]
    decisions = coordinator.failover({"node-0"}, room, peers)
    restarts = [d for d in decisions if isinstance(d, Restart)]
    unplaced = [d for d in decisions if isinstance(d, Unplaced)]
    assert len(restarts) == min(n, 2) and len(unplaced) == n - min(n, 2)
    assert {d.target_id for d in restarts} <= {coordinator.node_id, peers[0].node_id}
    assert set(coordinator.unplaced) == {d.domain_id for d in unplaced}
    # Capacity appears: the unplaced ones are decided again and placed.
    later = coordinator.failover({"node-0"}, BIG)
    assert {d.domain_id for d in later} == {d.domain_id for d in unplaced}
    assert all(isinstance(d, Restart) for d in later) and not coordinator.unplaced


def test_an_unplaced_record_is_reported_once_however_often_a_retry_finds_it_unplaced():
    """The CI flake of session 3: a restart tried on a peer whose advertised room was stale
    failed, the record came back unplaced and was published a second time."""
    (table,) = [t for t in pushed_tables("node-0", ["d"], NODES, r=1).values() if len(t)]
    (first,) = table.failover({"node-0"}, Room(0, 0))
    assert isinstance(first, Unplaced) and table.report_unplaced(first)
    peer = next(n for n in NODES[1:] if n != table.node_id)
    (retry,) = table.failover({"node-0"}, Room(0, 0), [PeerRoom(peer, Room(600, 64))])
    assert isinstance(retry, Restart) and not table.unplaced  # the peer's room is stale: it fails
    table.abandon("d", drop=False)
    (again,) = table.failover({"node-0"}, Room(0, 0))
    assert isinstance(again, Unplaced) and not table.report_unplaced(again)  # same record: not again
    assert set(table.unplaced) == {"d"}
    # A new record (the domain restarted elsewhere, its new owner died too) is reported anew.
    rec = table.replicas["d"]
    table.on_replicate(1.0, peer, [Replica(rec.spec, rec.epoch + 1, peer, (table.node_id,))], running={})
    (newer,) = table.failover({peer: 2.0}, Room(0, 0))
    assert isinstance(newer, Unplaced) and table.report_unplaced(newer)


def test_restart_is_cold_and_says_what_memory_is_lost():
    rep = Replica(spec("x"), 2, "dead", ("me",))
    assert "all memory" in Restart(rep, 3, "me", "dead").memory_lost
    rep2 = Replica(spec("x"), 2, "dead", ("me",), Checkpoint(2, 41.5))
    assert "41.500" in Restart(rep2, 3, "me", "dead").memory_lost


# -- fencing ------------------------------------------------------------------------------

def test_fencing_higher_epoch_wins_then_greater_node_id():
    assert fence_loser(Copy(3, "a"), Copy(4, "b")) == Copy(3, "a")
    assert fence_loser(Copy(5, "a"), Copy(5, "b")) == Copy(5, "a")
    assert fence_loser(Copy(5, "a"), Copy(5, "a")) is None


@given(st.lists(st.tuples(st.integers(1, 5), st.sampled_from(NODES)), min_size=2, max_size=8, unique=True),
       st.randoms(use_true_random=False))
def test_fencing_pairs_in_any_order_leave_exactly_the_maximum(copies, rnd):
    alive = {Copy(e, n) for e, n in copies}
    while len(alive) > 1:
        a, b = rnd.sample(sorted(alive), 2)
        loser = fence_loser(a, b)
        assert loser in (a, b)
        alive.discard(loser)
    assert alive == {max(Copy(e, n) for e, n in copies)}


def test_push_meeting_a_running_copy_fences_exactly_one_side():
    dom = "web"
    owner, buddy = "node-0", buddies_for(dom, "node-0", NODES, 1)[0]
    rep = Replica(spec(dom), 4, owner, (buddy,))
    # The buddy restarted the domain at epoch 5 while the owner was cut off: the owner loses.
    table = ReplicaTable(buddy)
    out = table.on_replicate(0.0, owner, [rep], running={dom: 5})
    assert out.fence == () and out.conflicts == (Conflict(dom, buddy, 5, running=True),)
    repl = OwnerReplication(owner, 1, 5.0)
    fence, verify = repl.on_conflicts({dom: 4}, buddy, out.conflicts)
    assert [(f.domain_id, f.epoch, f.winner) for f in fence] == [(dom, 4, Copy(5, buddy))] and verify == []
    # The owner's copy is newer: the buddy destroys its own and keeps the record.
    table2 = ReplicaTable(buddy)
    out2 = table2.on_replicate(0.0, owner, [Replica(spec(dom), 6, owner, (buddy,))], running={dom: 5})
    assert [f.winner for f in out2.fence] == [Copy(6, owner)] and out2.conflicts == ()
    assert table2.replicas[dom].epoch == 6


def test_buddy_reports_a_newer_owner_and_the_pusher_verifies_before_fencing():
    dom = "api"
    table = ReplicaTable("node-3")
    table.on_replicate(0.0, "node-5", [Replica(spec(dom), 7, "node-5", ("node-3",))], {})
    out = table.on_replicate(1.0, "node-1", [Replica(spec(dom), 6, "node-1", ("node-3",))], {})
    assert out.conflicts == (Conflict(dom, "node-5", 7, running=False),)
    assert table.replicas[dom].owner_id == "node-5"  # the higher record is kept
    repl = OwnerReplication("node-1", 2, 5.0)
    fence, verify = repl.on_conflicts({dom: 6}, "node-3", out.conflicts)
    assert fence == [] and verify == list(out.conflicts)
    assert repl.verified({dom: 6}, dom, "node-5", 7).winner == Copy(7, "node-5")
    assert repl.verified({dom: 8}, dom, "node-5", 7) is None


def test_a_newer_owners_push_replaces_the_dead_owners_record():
    table = ReplicaTable("node-3")
    table.on_replicate(0.0, "node-1", [Replica(spec("x"), 2, "node-1", ("node-3", "node-4"))], {})
    table.on_replicate(1.0, "node-4", [Replica(spec("x"), 3, "node-4", ("node-3",))], {})
    assert table.replicas["x"].owner_id == "node-4"
    assert table.failover({"node-1"}, BIG) == []


# -- one model of a cluster: random views, kills, pushes ------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(1, 3))
def test_with_one_view_every_orphan_is_restarted_exactly_once(seed, kills, r):
    import random
    rnd = random.Random(seed)
    owned = {n: [OwnedDomain(spec(f"{n}-d{i}"), rnd.randint(1, 4)) for i in range(rnd.randint(0, 4))]
             for n in NODES}
    tables = {n: ReplicaTable(n) for n in NODES}
    for n in NODES:
        repl = OwnerReplication(n, r, 5.0)
        for push in repl.tick(0.0, owned[n], NODES):
            tables[push.to_id].on_replicate(0.0, n, push.replicas, {})
    dead = set(rnd.sample(NODES, kills))
    restarted: dict[str, list[int]] = {}
    for n in NODES:
        if n in dead:
            continue
        for dec in tables[n].failover(dead, BIG):
            assert isinstance(dec, Restart) and dec.target_id == n
            restarted.setdefault(dec.domain_id, []).append(dec.epoch)
    for n in dead:
        for d in owned[n]:
            holders = set(buddies_for(d.domain_id, n, NODES, r))
            if holders - dead:
                assert len(restarted.get(d.domain_id, [])) == 1, (d.domain_id, restarted)
                assert restarted[d.domain_id][0] > d.epoch
            else:
                assert d.domain_id not in restarted  # lost: every holder died with the owner
    assert all(len(v) == 1 for v in restarted.values())


def test_a_record_pushed_after_the_dead_verdict_is_not_failed_over():
    dom = "late"
    buddy = buddies_for(dom, "node-0", NODES, 2)[0]
    table = ReplicaTable(buddy)
    table.on_replicate(10.0, "node-0", [Replica(spec(dom), 1, "node-0", (buddy,))], {})
    # membership said dead at t=5, yet the owner pushed at t=10: it lives (a healed partition)
    assert table.failover({"node-0": 5.0}, BIG) == []
    assert [d.domain_id for d in table.failover({"node-0": 12.0}, BIG)] == [dom]


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.floats(0.0, 0.6))
def test_with_stale_buddy_lists_the_ranking_check_still_restarts_exactly_once(seed, kills, loss):
    """Owners push while membership fills in (lists change) and some pushes are lost, so
    holders keep different lists. With `live_ids`, a holder acts only if nobody ranked
    ahead of it holds the replica (what the agent asks over Holds): exactly one acts."""
    import random
    rnd = random.Random(seed)
    owned = {n: [OwnedDomain(spec(f"{n}-d{i}"), 1) for i in range(rnd.randint(0, 3))] for n in NODES}
    tables = {n: ReplicaTable(n) for n in NODES}
    early = rnd.sample(NODES, 4)
    for n in NODES:
        repl = OwnerReplication(n, 2, 5.0)
        for view in (early + [n], NODES):
            for push in repl.tick(0.0, owned[n], view):
                if rnd.random() < loss:
                    repl.on_failed(push)
                    continue
                tables[push.to_id].on_replicate(0.0, n, push.replicas, {})
                repl.on_acked(0.0, push)
    dead = set(rnd.sample(NODES, kills))
    live = [n for n in NODES if n not in dead]
    acted: dict[str, list[tuple[str, int]]] = {}
    for n in live:
        for dec in tables[n].failover(dead, BIG, live_ids=live, known_ids=NODES):
            if any(dec.domain_id in tables[a].replicas for a in dec.ahead):
                tables[n].abandon(dec.domain_id, drop=False, defer=True)
                continue
            acted.setdefault(dec.domain_id, []).append((n, dec.epoch))
    for n in dead:
        for d in owned[n]:
            holders = [h for h in live if d.domain_id in tables[h].replicas]
            assert len(acted.get(d.domain_id, [])) == (1 if holders else 0), (d.domain_id, holders, acted)


def test_holders_that_both_act_restart_at_different_epochs():
    # A partition: each side sees the other side's holder dead, so both act; the epochs differ.
    dom = "split"
    first, second = buddies_for(dom, "node-0", NODES, 2)
    tables = pushed_tables("node-0", [dom], NODES)
    a = tables[first].failover({"node-0", second}, BIG, live_ids=[first], known_ids=NODES)
    b = tables[second].failover({"node-0", first}, BIG, live_ids=[second], known_ids=NODES)
    assert [d.ahead for d in a + b] == [(), ()]
    assert a[0].epoch != b[0].epoch
    assert (a[0].epoch, b[0].epoch) == (restart_epoch(3, first, dom), restart_epoch(3, second, dom))


def test_restart_epochs_of_diverged_lineages_never_meet():
    """A cut-off owner keeps handing its domain off (epoch + 1, + 2, ...) while holders across the
    partition restart it; "restart, then hand off" must not meet "hand off, then restart", nor two
    restarts one restart; and the restarter's tag depends on nobody's member table."""
    term = EPOCH_HANDOFF_BITS + EPOCH_TAG_BITS
    for dom in ("a", "b", "c"):
        for epoch in (1, 3, restart_epoch(7, "node-2", dom) + 5):
            for x in NODES:
                r = restart_epoch(epoch, x, dom)
                assert r >> term == (epoch >> term) + 1 and r % (1 << EPOCH_HANDOFF_BITS) == 0
                assert r > epoch + 1000  # above the cut-off owner's handoffs meanwhile
                assert restart_epoch(epoch + 1, x, dom) == r  # one member, one epoch per term
                for y in NODES:
                    if y != x:
                        assert restart_epoch(epoch, y, dom) != r  # two members acting at once
                        assert r + 1 != restart_epoch(epoch + 1, y, dom)  # restart+handoff, handoff+restart
                    assert restart_epoch(r, y, dom) != restart_epoch(epoch, x, dom)  # two restarts, one
    # A higher-ranked restarter gets the higher epoch: its copy wins when they meet.
    dom = "ranked"
    ranking = rank(dom, NODES)
    assert sorted(NODES, key=lambda n: -restart_epoch(3, n, dom)) == ranking


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(NODES)), max_size=20))
def test_cached_placement_follows_membership_changes_exactly(changes):
    """The owner re-ranks incrementally on joins and leaves; it must equal a full ranking."""
    repl = OwnerReplication("node-0", 2, 5.0)
    owned = [OwnedDomain(spec(f"d{i}"), 1) for i in range(25)]
    live = set(NODES[:3])
    repl.tick(0.0, owned, live)
    for join, node in changes:
        (live.add if join else live.discard)(node)
        repl.tick(1.0, owned, live)
        assert repl.placement(owned, live) == {d.domain_id: repl._placement[d.domain_id] for d in owned}


def test_a_restarter_knows_of_a_newer_copy_from_its_own_copy_or_tombstone():
    from agent.core.replicas import newer_copy_known
    rep = Replica(spec("d"), 5, "dead", ("me", "b"))
    dec = Restart(rep, 6, "me", "dead")
    assert newer_copy_known("me", None, None, dec) is None
    assert newer_copy_known("me", 5, None, dec) == Copy(5, "me", "d")  # I already run it
    assert newer_copy_known("me", 4, None, dec) is None  # an older copy of mine is no reason
    assert newer_copy_known("me", None, (7, "c"), dec) == Copy(7, "c", "d")  # it moved on to c
    # The handoff that made the record (to the dead owner) is not a newer copy.
    assert newer_copy_known("me", None, (5, "dead"), dec) is None
    assert newer_copy_known("me", None, (4, "c"), dec) is None
