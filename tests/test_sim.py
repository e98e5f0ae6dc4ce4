"""The deterministic simulator (agent/runtime/simulator.py, `shoal sim`).

Fixed seeds for every fault class must give zero violations and zero liveness
failures; a few random seeds are added per run and printed, so a failure
reproduces with `shoal sim ... --seed S`. The checkers themselves are tested
by injecting the bugs they exist to catch, and high availability by the
faults it exists for: an owner that dies for good, a partition that heals.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from agent.core.dissemination import Dissemination
from agent.core.handoff import TargetHandoffs
from agent.core.membership import Membership
from agent.core.ownership import fold
from agent.core.policy import BalancePolicy
from agent.core.replicas import EPOCH_HANDOFF_BITS, EPOCH_TAG_BITS, OwnerReplication, ReplicaTable
from agent.runtime.simulator import ACTIVE_STATES, FAULT_CLASSES, SimOptions, Simulation, parse_seeds, run_sim
from hypervisor.domain import Domain
from hypervisor.host import Host, Reservation

ROOT = Path(__file__).resolve().parent.parent
# Small clusters keep each run near a second; the seeds were chosen once and never changed.
SMALL = dict(nodes=12, domains=48, duration_s=60.0)
FIXED_SEEDS = (1, 2, 3)


def _ok(result) -> None:
    assert result.violation is None, (f"seed {result.seed}: {result.violation}\n" + "\n".join(result.trace_tail))
    assert result.liveness_failure is None, (f"seed {result.seed}: {result.liveness_failure}\n"
                                             + "\n".join(result.trace_tail))


@pytest.mark.parametrize("faults", FAULT_CLASSES)
@pytest.mark.parametrize("seed", FIXED_SEEDS)
def test_fixed_seeds_have_no_violation_and_settle(faults: str, seed: int) -> None:
    result = run_sim(SimOptions(seed=seed, faults=faults, **SMALL))
    _ok(result)
    assert result.settle_s is not None and result.settle_s <= result.settle_bound_s
    assert result.final_cov <= 0.2
    assert result.migrations > 0  # the skewed start made the balancing rule work
    if faults != "none":
        assert sum(result.faults_injected.values()) > 0


def test_random_seeds_have_no_violation() -> None:
    seeds = [random.randrange(1, 1_000_000) for _ in range(2)]
    print(f"random seeds: {seeds} (reproduce with: shoal sim --nodes 12 --domains 48 --duration 60 --faults all "
          f"--seed S)")
    for seed in seeds:
        _ok(run_sim(SimOptions(seed=seed, faults="all", **SMALL)))


def test_same_seed_same_trace() -> None:
    a = run_sim(SimOptions(seed=7, faults="all", **SMALL)).to_json()
    b = run_sim(SimOptions(seed=7, faults="all", **SMALL)).to_json()
    a.pop("wall_seconds")
    b.pop("wall_seconds")
    assert a == b
    c = run_sim(SimOptions(seed=8, faults="all", **SMALL))
    assert c.trace_digest != a["trace_digest"]


def test_same_seed_same_trace_whatever_the_string_hash_seed() -> None:
    """No iteration over a set of strings decides anything: other processes replay the same run."""
    digests = set()
    for hash_seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-m", "shoal", "sim", "--nodes", "8", "--domains", "24", "--duration",
                              "40", "--faults", "all", "--seed", "5", "--json"],
                             env={**os.environ, "PYTHONHASHSEED": hash_seed}, cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        digests.add(json.loads(out.stdout)["per_run"][0]["trace_digest"])
    assert len(digests) == 1


def _inject_run(inject) -> Simulation:
    sim = Simulation(SimOptions(seed=3, faults="none", inject_at_s=30.0, inject=inject, **SMALL))
    sim.result = sim.run()
    return sim


def _busiest(sim: Simulation):
    return max((n for n in sim.nodes if n.up), key=lambda n: len(n.host.domains))


def test_checker_catches_two_active_copies_at_the_same_epoch() -> None:
    def duplicate(sim: Simulation) -> None:
        src = _busiest(sim)
        dom = next(d for d in src.host.domains.values() if d.state.value == "running")
        other = next(n for n in sim.nodes if n.up and n is not src and dom.domain_id not in n.host.domains)
        other.host.domains[dom.domain_id] = Domain(dom.spec, epoch=dom.epoch)
    sim = _inject_run(duplicate)
    v = sim.result.violation
    assert v is not None and v.invariant == "single_active" and "same epoch" in v.detail
    assert 30.0 <= v.time_s <= 31.0  # found at the victim's next step, not at the end


def test_two_copies_at_different_epochs_are_legal_until_they_meet_then_one_is_fenced() -> None:
    """A second copy at a higher epoch (as a buddy that restarted the domain across a partition
    would run) is not a violation; the replica pushes make the copies meet and the older goes."""
    def second_copy(sim: Simulation) -> None:
        src = _busiest(sim)
        dom = next(d for d in src.host.domains.values() if d.state.value == "running")
        other = next(n for n in sim.nodes if n.up and n is not src and dom.domain_id not in n.host.domains
                     and n.host.admit(dom.spec).ok)
        other.host.domains[dom.domain_id] = Domain(dom.spec, epoch=dom.epoch + 3)
        sim.second_copy = (dom.domain_id, src.node_id, other.node_id, dom.epoch + 3)
    sim = _inject_run(second_copy)
    _ok(sim.result)
    dom, src, other, epoch = sim.second_copy
    assert sim.result.fenced >= 1
    holders = [(n.node_id, n.host.domains[dom].epoch) for n in sim.nodes if n.up and dom in n.host.domains]
    assert holders[0][1] >= epoch and len(holders) == 1  # the newer copy (or its successor) runs, once
    assert sim.nodes[int(src[1:])].tombstones.get(dom, (0, ""))[0] >= epoch  # the older was fenced


def test_checker_catches_an_epoch_going_back() -> None:
    def regress(sim: Simulation) -> None:
        node = _busiest(sim)
        dom = next(d for d in node.host.domains.values() if d.state.value == "running")
        del node.host.domains[dom.domain_id]
        sim.check_node(node)  # it leaves ...
        node.host.domains[dom.domain_id] = Domain(dom.spec, epoch=dom.epoch - 1)  # ... and comes back older
    v = _inject_run(regress).result.violation
    assert v is not None and v.invariant == "epoch_monotonic"


def test_checker_catches_memory_overcommit() -> None:
    def overcommit(sim: Simulation) -> None:
        node = _busiest(sim)
        free = node.host.spec.memory_mib - node.host.committed_memory_mib
        # Bypasses Host.reserve's admission, as a buggy handoff would.
        node.host.reservations["bogus"] = Reservation("bogus", "ghost", 1, free + 1, 0.0, 1e9)
    v = _inject_run(overcommit).result.violation
    assert v is not None and v.invariant == "memory_capacity"


def test_checker_catches_a_vanished_domain() -> None:
    def vanish(sim: Simulation) -> None:
        node = _busiest(sim)
        dom_id = next(iter(node.host.domains))
        del node.host.domains[dom_id]
        node.journal.records = [r for r in node.journal.records if r.get("spec", {}).get("id") != dom_id]
        node.journal.synced = len(node.journal.records)
    v = _inject_run(vanish).result.violation
    assert v is not None and v.invariant == "domain_vanished"


def _quiet_node_with_replicated_domains(sim: Simulation):
    """A node with domains, no handoff in flight, each of its domains held as a replica at its epoch
    by a live buddy (so its death is one high availability must repair without loss)."""
    def replicated(node) -> bool:
        return all(any(n.up and n is not node and (r := n.ha_table.replicas.get(dom)) is not None
                       and r.owner_id == node.node_id and r.epoch == d.epoch for n in sim.nodes)
                   for dom, d in node.host.domains.items())
    candidates = [n for n in sim.nodes if n.up and n.host.domains and not n.target.active()
                  and not sim._outgoing_active(n) and not n.host.reservations and replicated(n)]
    return max(candidates, key=lambda n: (len(n.host.domains), n.index))


def _term(epoch: int) -> int:
    """How many restarts an epoch has been through (agent/core/replicas.py restart_epoch)."""
    return epoch >> (EPOCH_HANDOFF_BITS + EPOCH_TAG_BITS)


def _census(sim: Simulation) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = {}
    for n in sim.nodes:
        if n.up:
            for d in n.host.domains.values():
                if d.state in ACTIVE_STATES:
                    out.setdefault(d.domain_id, []).append((n.node_id, d.epoch))
    return out


def test_a_node_dead_for_good_has_its_domains_restarted_exactly_once_by_its_buddies() -> None:
    def crash_for_good(sim: Simulation) -> None:
        victim = _quiet_node_with_replicated_domains(sim)
        sim.victim = (victim.node_id, {d.domain_id: d.epoch for d in victim.host.domains.values()})
        victim.permanently_down = True
        sim.crash(victim, "permanently (test)")
    sim = Simulation(SimOptions(seed=2, faults="none", workload="constant", inject_at_s=40.0,
                                inject=crash_for_good, **SMALL))
    result = sim.run()
    _ok(result)
    victim_id, epochs = sim.victim
    assert len(epochs) >= 2 and result.restarts >= len(epochs)
    assert result.lost == 0 and result.unplaced == 0 and result.fenced == 0
    census = _census(sim)
    for dom, epoch in epochs.items():
        assert len(census[dom]) == 1, (dom, census[dom])
        (holder, now_epoch), = census[dom]
        assert holder != victim_id and _term(now_epoch) == _term(epoch) + 1  # restarted once
    # Every live node's journal folds back to exactly what it runs (the `restarted` records included).
    for n in sim.nodes:
        if n.up:
            assert {d: e for d, (_, e) in fold(n.journal.records).domains.items()} == \
                   {d.domain_id: d.epoch for d in n.host.domains.values()}, n.node_id


def test_a_healed_partition_fences_the_older_copies_and_leaves_each_domain_once() -> None:
    """An owner cut off long enough to be declared dead keeps running its domains while its buddies
    restart them at higher epochs; at the heal the copies meet through the replica pushes."""
    def isolate(sim: Simulation) -> None:
        victim = _quiet_node_with_replicated_domains(sim)
        sim.victim = (victim.node_id, {d.domain_id: d.epoch for d in victim.host.domains.values()})
        sim.net.side = {victim.index: 1}
        sim.trace(f"PARTITION isolate {victim.node_id} (test)")
        sim.at(sim.now_s + 25.0, sim.net.side.clear)
    sim = Simulation(SimOptions(seed=2, faults="none", inject_at_s=30.0, inject=isolate,
                                nodes=12, domains=48, duration_s=90.0))
    result = sim.run()
    _ok(result)
    victim_id, epochs = sim.victim
    assert result.restarts >= len(epochs) and result.fenced >= len(epochs)
    assert result.lost == 0
    census = _census(sim)
    assert all(len(copies) == 1 for copies in census.values())
    assert set(census) == set(sim.specs)
    for dom, epoch in epochs.items():  # the victim's own copies lost to the restarted ones
        assert _term(census[dom][0][1]) > _term(epoch)


def test_ha_calls_are_counted_and_sized_with_the_real_codec() -> None:
    sim = Simulation(SimOptions(seed=1, faults="crash", **SMALL))
    result = sim.run()
    _ok(result)
    assert result.rpcs_encoded > 100
    assert 0 < result.rpc_bytes_max_seen <= sim.config.message_bytes_max
    assert 0 < result.ha_messages_per_node_per_s < result.messages_per_node_per_s
    # The live member set the simulator keeps from membership events is the member table's.
    for n in sim.nodes:
        if n.up:
            assert n.live_ids() == {m.node_id for m in n.membership.members()
                                  if m.status.value in ("alive", "suspect")} | {n.node_id}


def test_membership_message_sizes_are_checked_with_the_real_codec() -> None:
    sim = Simulation(SimOptions(seed=1, faults="network", **SMALL))
    result = sim.run()
    _ok(result)
    assert result.messages_encoded > 1000
    assert 0 < result.message_bytes_max_seen <= sim.mcfg.message_bytes_max


def test_simulator_runs_the_agents_core_classes() -> None:
    """Not copies: the classes the simulator instantiates are the ones agent/runtime/agent.py imports."""
    import agent.runtime.agent as real
    import agent.runtime.ha as real_ha

    import agent.runtime.simulator as simulator

    sim = Simulation(SimOptions(seed=1, **SMALL))
    sim.start()
    sim.run_until(5.0)
    node = next(n for n in sim.nodes if n.up)
    assert type(node.membership) is Membership is real.Membership
    assert type(node.dissemination) is Dissemination is real.Dissemination
    assert type(node.policy) is BalancePolicy is real.BalancePolicy
    assert type(node.target) is TargetHandoffs is real.TargetHandoffs
    assert type(node.host) is Host is real.Host
    assert simulator.OutgoingMigration is real.OutgoingMigration
    assert type(node.ha_owner) is OwnerReplication is real_ha.OwnerReplication
    assert type(node.ha_table) is ReplicaTable is real_ha.ReplicaTable
    assert simulator.fold is real.fold
    assert simulator.PreCopyLimits is real.PreCopyLimits


def test_cli_prints_the_seed_and_how_to_reproduce_a_failure() -> None:
    out = subprocess.run([sys.executable, "-m", "shoal", "sim", "--nodes", "6", "--domains", "24", "--duration", "10",
                          "--seed", "4", "--cov-target", "0.0001", "--settle-max", "3", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    summary = json.loads(out.stdout)
    assert summary["runs"] == 1 and summary["liveness_failures"][0]["seed"] == 4
    for key in ("violations", "model_seconds", "wall_seconds", "messages_per_node_per_s", "migrations", "final_cov",
                "lost", "restarts", "fenced", "unplaced"):
        assert key in summary
    assert "reproduce with: shoal sim --nodes 6 --domains 24 --duration 10 --faults none" in out.stderr
    assert "--seed 4" in out.stderr and "trace tail:" in out.stderr


def test_cli_progress_lines_go_to_stderr_and_the_json_stays_whole() -> None:
    out = subprocess.run([sys.executable, "-m", "shoal", "sim", "--nodes", "6", "--domains", "12", "--duration", "20",
                          "--progress", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["runs"] == 1
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("seed 1: model ")]
    assert [ln.split(",")[0] for ln in lines] == ["seed 1: model 10/20 s", "seed 1: model 20/20 s"]
    assert all("msgs/node/s" in ln for ln in lines)


def test_a_run_leaves_the_garbage_collector_as_it_found_it() -> None:
    import gc
    before = gc.get_threshold(), gc.get_freeze_count()
    _ok(run_sim(SimOptions(seed=1, nodes=4, domains=8, duration_s=10.0)))
    assert (gc.get_threshold(), gc.get_freeze_count()) == before


def test_cli_sweep_counts_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "shoal", "sim", "--nodes", "6", "--domains", "12", "--duration", "20",
                          "--faults", "crash", "--seeds", "1-2", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["runs"] == 2 and summary["violations"] == [] and summary["liveness_failures"] == []


def test_a_formed_start_runs_the_same_protocols_under_faults_and_settles() -> None:
    result = run_sim(SimOptions(seed=2, faults="all", start="formed", **SMALL))
    _ok(result)
    assert result.start == "formed" and result.migrations > 0 and result.final_cov <= 0.2
    assert result.membership_messages_per_node_per_s > 0  # probing and gossip run from the first instant
    assert sum(result.faults_injected.values()) > 0
    assert run_sim(SimOptions(seed=2, faults="all", **SMALL)).start == "join"


def test_auto_start_is_formed_from_1000_nodes() -> None:
    assert not SimOptions(nodes=999).formed and SimOptions(nodes=1000).formed
    assert not SimOptions(nodes=5000, domains=100, start="join").formed and SimOptions(start="formed").formed
    with pytest.raises(ValueError):
        SimOptions(start="warm").validate()


def test_a_sweep_over_processes_gives_the_same_runs_in_seed_order() -> None:
    from shoal.cli import _sim_results
    options = [SimOptions(seed=s, faults="all", nodes=8, domains=24, duration_s=30.0) for s in (3, 1, 2)]
    serial = [r.trace_digest for r in _sim_results(run_sim, options, 1)]
    parallel = list(_sim_results(run_sim, options, 2))
    assert [r.seed for r in parallel] == [3, 1, 2] and [r.trace_digest for r in parallel] == serial


def test_liveness_waits_for_old_handoffs_not_for_ones_the_rule_begins_after_the_faults() -> None:
    from agent.core.handoff import OutgoingMigration
    sim = Simulation(SimOptions(seed=1, faults="none", nodes=6, domains=12, duration_s=30.0))
    result = sim.run()
    assert result.settle_s is not None and not sim.unsettled()
    node = next(n for n in sim.nodes if n.up)
    young = OutgoingMigration("young.1", "dom-00000", "n00001", "x:1", 1, started_at_s=sim.now_s)
    node.outgoing[young.migration_id] = young
    assert not sim.unsettled()  # the balancing rule at work
    sim.now_s += sim.config.reservation_lease_ms / 1000 + 1
    assert sim.unsettled()[0].startswith(f"handoff: {node.node_id} has 1 outgoing")  # outlived its lease
    del node.outgoing[young.migration_id]
    old = OutgoingMigration("old.1", "dom-00000", "n00001", "x:1", 1, started_at_s=sim.settle_from_s - 1)
    node.outgoing[old.migration_id] = old
    assert sim.unsettled()[0].startswith(f"handoff: {node.node_id} has 1 outgoing")  # begun before the faults stopped


def test_parse_seeds() -> None:
    assert parse_seeds("3") == [3]
    assert parse_seeds("1-4") == [1, 2, 3, 4]
    assert parse_seeds("1,5,9") == [1, 5, 9]
    with pytest.raises(ValueError):
        parse_seeds("5-1")


def test_membership_next_due_is_when_tick_has_work() -> None:
    """The simulator ticks a core only at next_due_s(): a tick before it sends nothing."""
    from agent.core.membership import Send
    from agent.core.membership_config import MembershipConfig

    rng = random.Random(11)
    cfg = MembershipConfig.profile("lan")
    nodes = {f"10.0.0.{i}:7000": Membership(f"n{i}", f"10.0.0.{i}:7000", cfg, random.Random(i), 0.0)
             for i in range(1, 5)}
    queue: list[tuple[float, str, object]] = []
    for i, (address, m) in enumerate(nodes.items()):
        queue += [(0.001, d.to_address, d.message) for d in m.join(0.0, ["10.0.0.1:7000"] if i else [])
                  if isinstance(d, Send)]
    now = 0.0
    ticks = 0
    while now < 60.0:
        queue.sort(key=lambda q: q[0])
        address, due = min(((a, m.next_due_s()) for a, m in nodes.items()), key=lambda ad: ad[1])
        assert due < float("inf")
        if queue and queue[0][0] <= due:
            now, to, msg = queue.pop(0)
            out = nodes[to].on_message(now, msg)
        else:
            if due > now + 1e-3:
                assert [d for d in nodes[address].tick((now + due) / 2) if isinstance(d, Send)] == []
            now = max(now, due)
            out = nodes[address].tick(now)
            ticks += 1
        queue += [(now + 0.001, d.to_address, d.message) for d in out if isinstance(d, Send) and rng.random() > 0.05]
    assert ticks > 100
    for m in nodes.values():
        assert m.live_count() == 4
