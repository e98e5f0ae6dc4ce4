"""Utilization dissemination: push-pull gossip of node loads plus push-pull
averaging of the cluster mean.

Theory of operation
-------------------
Every `gossip_interval_ms` the runtime asks `make_exchange()` for a message,
sends it to `pick_peer()`, and feeds the answer to `on_exchange_reply()`; the
peer handles the same message with `on_exchange()`. Both sides merge the other's
entries keeping, per node, the entry with the highest heartbeat (a node raises
its own heartbeat each time it publishes, starting from a value the runtime
derives from the wall clock so a restarted node is not ignored). Each entry
travels with its age at the sender, so ages stay meaningful across hops without
synchronized clocks. The table is bounded: past `peer_entries_max` entries the
stalest are dropped, the membership view's members last (the runtime names them
at each `tick`: the policy decides among them), so memory and the cost of a
digest stay flat whatever N is.

The mean utilization is estimated by push-pull averaging (Jelasity, Montresor,
Babaoglu 2005): each node holds an estimate of (mean demand, mean capacity);
in an exchange both ends replace theirs by the pair's average, which conserves
the sum, so every estimate converges to the true mean with variance falling by
about 0.3x per round whatever N is. Loads change, so the protocol restarts in
epochs: a node starts epoch e+1 after `averaging_epoch_rounds` rounds,
re-seeding the estimate with its own load; a node that hears a higher epoch
joins it. The estimate reported is the one reached at the end of the previous
epoch (the current one has just been re-seeded).

Pure: time comes in as `now_s`, randomness from the `Random` given.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import replace
from operator import itemgetter
from random import Random
from typing import Iterable

from agent.core.config import AgentConfig
from agent.core.messages import Averaging, Exchange, NodeLoad
from agent.core.policy import Neighbour
from agent.core.validation import check_exchange


class PeerEntry:
    """One peer's latest load and the local time it last changed, minus its age on arrival.
    A plain slotted class: one is made per entry merged, on every exchange."""

    __slots__ = ("load", "changed_at_s")

    def __init__(self, load: NodeLoad, changed_at_s: float) -> None:
        self.load = load
        self.changed_at_s = changed_at_s

    def age_s(self, now_s: float) -> float:
        return max(0.0, now_s - self.changed_at_s)

    def __repr__(self) -> str:
        return f"PeerEntry({self.load!r}, {self.changed_at_s!r})"


class Dissemination:
    def __init__(self, node_id: str, address: str, config: AgentConfig, rng: Random,
                 seeds: tuple[str, ...] = (), heartbeat_origin: int = 0) -> None:
        self.node_id = node_id
        self.address = address
        self.config = config
        self.rng = rng
        self.seeds = tuple(s for s in seeds if s != address)
        self._heartbeat = heartbeat_origin
        self.entries: dict[str, PeerEntry] = {}
        self.view_ids: frozenset[str] = frozenset()  # kept before other entries when the table is full
        self.self_load: NodeLoad | None = None
        self._avg = Averaging(epoch=0, demand_cores=0.0, capacity_cores=0.0)
        self._avg_rounds = 0
        self._avg_settled: Averaging | None = None

    # -- own state ---------------------------------------------------------
    def publish(self, load: NodeLoad, now_s: float) -> NodeLoad:
        """Sets this node's load with the next heartbeat; returns the entry."""
        self._heartbeat += 1
        self.self_load = replace(load, node_id=self.node_id, address=self.address,
                                 heartbeat=self._heartbeat, age_ms=0)
        if self._avg.capacity_cores == 0.0:
            self._avg = Averaging(self._avg.epoch, load.cpu_demand_cores, load.cpu_capacity_cores)
        return self.self_load

    # -- gossip ---------------------------------------------------------------
    def pick_peer(self, now_s: float, candidates: list[str] | None = None) -> str | None:
        """A random peer's address: one of `candidates` (the membership view) when
        given, else a known peer; a seed while none is known."""
        others = sorted(set(candidates or ()) - {self.address})
        if others:
            return self.rng.choice(others)
        live = [e.load.address for e in self.entries.values()
                if e.age_s(now_s) * 1000 < self.config.peer_forget_ms]
        if live:
            return self.rng.choice(sorted(live))
        if self.seeds:
            return self.rng.choice(self.seeds)
        return None

    def make_exchange(self, now_s: float) -> Exchange:
        self._avg_rounds += 1
        if self._avg_rounds >= self.config.averaging_epoch_rounds and self.self_load is not None:
            self._start_epoch(self._avg.epoch + 1)
        return Exchange(self.node_id, self.address, self._digest(now_s), self._avg)

    def on_exchange(self, now_s: float, msg: Exchange) -> Exchange:
        """Handles a push from a peer; returns the pull answer. Raises InputRejected."""
        check_exchange(msg, self.config.gossip_entries_max)
        self._merge(now_s, msg.entries)
        reply_avg = self._avg_step(msg.averaging)
        return Exchange(self.node_id, self.address, self._digest(now_s), reply_avg)

    def on_exchange_reply(self, now_s: float, msg: Exchange) -> None:
        """Handles the pull answer. Raises InputRejected."""
        check_exchange(msg, self.config.gossip_entries_max)
        self._merge(now_s, msg.entries)
        theirs = msg.averaging
        if theirs.epoch > self._avg.epoch:
            self._start_epoch(theirs.epoch)
        elif theirs.epoch == self._avg.epoch and theirs.capacity_cores > 0:
            # The responder already averaged; adopting its value completes the step.
            self._avg = theirs

    def tick(self, now_s: float, view_ids: frozenset[str] | set[str] | None = None) -> list[str]:
        """Forgets entries not refreshed for peer_forget_ms; returns their ids. `view_ids`:
        the membership view now, whose entries the bound drops last."""
        if view_ids is not None:
            self.view_ids = frozenset(view_ids)
        # age_s * 1000 >= forget, written out (forget > 0, so a clamped age of 0 never is).
        forget_ms = self.config.peer_forget_ms
        gone = [nid for nid, e in self.entries.items() if (now_s - e.changed_at_s) * 1000 >= forget_ms]
        for nid in gone:
            del self.entries[nid]
        return gone

    # -- views -----------------------------------------------------------------
    def peers(self, now_s: float) -> list[tuple[NodeLoad, float]]:
        """Known peers (not self) with their ages in seconds, by node id."""
        return [(e.load, e.age_s(now_s)) for _, e in sorted(self.entries.items())]

    def fresh_peers(self, now_s: float) -> list[NodeLoad]:
        """Peers whose entry is recent enough to base a decision on, by node id."""
        limit_s = self.config.peer_stale_ms / 1000
        entries = self.entries
        # age_s <= limit, written out (a clamped age of 0 always is).
        return [e.load for e in (entries[nid] for nid in sorted(entries)) if now_s - e.changed_at_s <= limit_s]

    def neighbours(self, now_s: float, usable: set[str] | frozenset[str],
                   sent_recently: Iterable[tuple[float, str, float]] = ()) -> list[Neighbour]:
        """The policy's neighbours: fresh peers among `usable` (alive and in the view), each with
        the demand this node sent it since its entry was published added (`sent_recently`:
        (local time, target id, demand cores) of moves begun), as that is not in the entry yet."""
        sent = list(sent_recently)
        out = []
        for load in self.fresh_peers(now_s):
            if load.node_id not in usable:
                continue  # suspect, dead, left, or outside the bounded view
            changed_at = self.entries[load.node_id].changed_at_s
            extra = sum(d for at, tgt, d in sent if tgt == load.node_id and at >= changed_at)
            out.append(Neighbour(load.node_id, load.cpu_capacity_cores, load.cpu_demand_cores + extra,
                                 load.memory_free_mib, load.vcpus_capacity - load.vcpus_committed,
                                 load.migrations_inflight))
        return out

    def mean_utilization_estimate(self, now_s: float) -> float | None:
        """The cluster's mean CPU utilization (summed demand over summed capacity): the push-pull
        estimate of the last averaging epoch that completed here. Until one has, the same ratio
        over this node and the peers it holds fresh entries of: epoch 0 averages what each node
        held when it booted (in a new cluster, often nothing yet), so it is never used, and an
        epoch still running is only part mixed. None while nothing at all is known."""
        avg = self._avg_settled
        if avg is not None:
            return avg.demand_cores / avg.capacity_cores
        loads = self.fresh_peers(now_s)
        if self.self_load is not None:
            loads.append(self.self_load)
        capacity = math.fsum(load.cpu_capacity_cores for load in loads)
        if capacity <= 0:
            return None
        return math.fsum(load.cpu_demand_cores for load in loads) / capacity

    @property
    def averaging(self) -> Averaging:
        return self._avg

    # -- internals -------------------------------------------------------------
    def _digest(self, now_s: float) -> tuple[NodeLoad, ...]:
        # (age, load) pairs first, and copies only of the entries sent: the table holds up to
        # peer_entries_max peers heard of in the last peer_forget_ms, a digest at most
        # gossip_entries_max of them.
        forget_ms = self.config.peer_forget_ms
        entries = self.entries
        others = []
        for nid in sorted(entries):
            e = entries[nid]
            age_ms = (now_s - e.changed_at_s) * 1000
            if age_ms < forget_ms:
                others.append((int(age_ms) if age_ms > 0 else 0, e.load))
        room = self.config.gossip_entries_max - (1 if self.self_load else 0)
        if len(others) > room:
            # Half the freshest (news spreads fast, as in rumor mongering), half
            # random among the rest (older entries still get refreshed somewhere). The list is
            # by node id already, and the sort is stable: ties in age stay by node id.
            others.sort(key=itemgetter(0))
            fresh, rest = others[: room // 2], others[room // 2:]
            others = fresh + self.rng.sample(rest, room - len(fresh))
        return ((self.self_load,) if self.self_load else ()) + tuple(load.aged(age_ms)
                                                                      for age_ms, load in others)

    def _merge(self, now_s: float, entries: tuple[NodeLoad, ...]) -> None:
        for load in entries:
            if load.node_id == self.node_id:
                continue
            known = self.entries.get(load.node_id)
            if known is not None and known.load.heartbeat >= load.heartbeat:
                continue
            changed_at = now_s - load.age_ms / 1000
            if known is not None:
                changed_at = max(changed_at, known.changed_at_s)
            self.entries[load.node_id] = PeerEntry(load.aged(0), changed_at)
        excess = len(self.entries) - self.config.peer_entries_max
        if excess > 0:
            # Keep the view's, then the freshest; ties by node id, so a seed replays exactly.
            view = self.view_ids
            for *_, nid in heapq.nlargest(excess, [(nid not in view, -e.changed_at_s, nid)
                                                   for nid, e in self.entries.items()]):
                del self.entries[nid]

    def _start_epoch(self, epoch: int) -> None:
        if self._avg.epoch > 0 and self._avg.capacity_cores > 0:  # epoch 0: see mean_utilization_estimate
            self._avg_settled = self._avg
        own = self.self_load
        demand, capacity = (own.cpu_demand_cores, own.cpu_capacity_cores) if own else (0.0, 0.0)
        self._avg = Averaging(epoch, demand, capacity)
        self._avg_rounds = 0

    def _avg_step(self, theirs: Averaging) -> Averaging:
        """Responder side of one averaging step; returns what to send back."""
        if theirs.epoch > self._avg.epoch:
            self._start_epoch(theirs.epoch)
        if theirs.epoch < self._avg.epoch or theirs.capacity_cores <= 0:
            return self._avg  # the initiator will join our epoch
        if self._avg.capacity_cores <= 0:
            return self._avg
        self._avg = Averaging(self._avg.epoch,
                              (self._avg.demand_cores + theirs.demand_cores) / 2,
                              (self._avg.capacity_cores + theirs.capacity_cores) / 2)
        return self._avg
