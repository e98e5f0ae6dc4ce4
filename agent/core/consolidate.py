"""The consolidation rule ("consolidate"): empty light hosts into neighbours, sleep, wake on demand.

Theory of operation
-------------------
One ``Consolidator`` runs on every host. It knows its own host (each
domain's demand now, its recent samples, its size and memory) and, for the
few hosts of its neighbour view, what they last gossiped (``NeighbourLoad``:
capacity, demand now and predicted, free memory, awake or asleep). It never
sees the rest of the cluster. Time is a tick counter passed in; the caller
runs one round per tick:

1. ``observe(tick, host)``: record the host's state; returns the gossip entry
   the host publishes (its ``NeighbourLoad``). A host with no domain left goes
   to sleep (standby) and publishes that.
2. ``decide(tick, neighbours)``: at most one ``Plan`` of moves (below).
3. The caller offers each move to its targets in order; a target answers
   with ``on_offer`` against its *live* state (what it observed plus what it
   accepted this round), so stale gossip can never overfill a host. A
   refused move tries its next target; if a drain cannot place every domain
   the caller cancels the accepted ones (``on_cancel``) and nothing moves.
4. ``on_moves_started(tick, moves)`` tells the source what really left.

The rules (CloudSim's accounting calls a host in SLA violation whenever its
VMs get less CPU than they request; Beloglazov & Buyya 2012 use the same
detect / select / place split, here applied with only local knowledge):

- *Overload*: demand above ``overload_threshold`` x capacity, or a domain
  asking more than one core (it is capped, so it is in violation). Acted on
  at once, since every tick overloaded is time in violation. The host sheds
  domains until its predicted demand is at most ``shed_target`` x capacity,
  preferring one domain that covers the whole excess (fewest migrations),
  the smallest memory first (shortest copy, as MMT), then the largest ones.
  Targets are awake neighbours that stay at or under ``placement_watermark``
  (best fit: the fullest that fits, so load packs); if none can take a
  domain, the rule wakes a sleeping neighbour (the largest, most efficient
  one) and later domains of the same plan may join it.
- *Drain*: a host whose demand stayed under ``drain_utilization_max`` x
  capacity over the last ``drain_persistence_samples`` samples (persistence:
  only an underload that lasts), holding at most ``drain_domains_max``
  domains, none cooling down, that received nothing for
  ``host_cooldown_ticks``, tries to place *every* domain on awake neighbours
  that are heavier than itself (predicted demand, then id) and stay at or
  under the watermark. Load only ever flows from lighter to heavier hosts,
  so two hosts never drain into each other. A cost-benefit filter keeps a
  drain only when the power it saves over ``drain_horizon_s`` is worth its
  migrations (``migration_cost_j`` each). All or nothing: a half-emptied
  host saves no power.
- *Prediction*: a domain is expected to use max(demand now, mean + k x
  standard deviation of its last ``prediction_window_samples`` samples), so
  a host is filled by what its domains have recently needed, not by a lull.
- *Cooldowns*: a domain that arrived stays ``domain_cooldown_ticks`` (it is
  moved again only to relieve an overload no other domain can relieve); a
  host that received or woke does not drain for ``host_cooldown_ticks``.

CPU is in MIPS (a host-independent rate: cores x per-core speed; an agent on
uniform hardware may use cores). Ids are opaque hashables (UUID strings in
the agent, host and VM numbers in the simulator).

Pure: no clock, no I/O, no global randomness.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Hashable, Sequence

Id = Hashable


class ConsolidateConfigError(ValueError):
    """The configuration is invalid; the message names the field."""


@dataclass(frozen=True, slots=True)
class ConsolidateConfig:
    # Above 100 % the domains get less than they ask: that is SLA violation time.
    overload_threshold: float = 1.0
    # A receiving host must stay at or under this (predicted): room for the demand to grow.
    placement_watermark: float = 0.92
    # Act on an overload only once it has lasted this many samples (1: at once).
    overload_persistence_samples: int = 1
    # An overloaded host sheds down to this, a band below the threshold (hysteresis).
    shed_target: float = 0.9
    # A host lighter than this may empty itself ...
    drain_utilization_max: float = 0.6
    # ... if it stayed that light over this many samples (act only on underload that lasts).
    drain_persistence_samples: int = 3
    # Draining moves every domain; beyond this many it is rarely worth it.
    drain_domains_max: int = 12
    # Power saved by a drain is counted over this horizon (how long an emptied host typically sleeps).
    drain_horizon_s: float = 3_600.0
    # What one migration is worth in energy: its SLA cost (copy time at the target, 10 % slowdown).
    migration_cost_j: float = 15_000.0
    # A domain that just arrived stays put this many ticks (no ping-pong).
    domain_cooldown_ticks: int = 12
    # A host that just received or woke does not empty itself for this many ticks.
    host_cooldown_ticks: int = 6
    # Samples the demand prediction looks back over (the current one included).
    prediction_window_samples: int = 3
    # Weight of the samples' standard deviation in the prediction.
    prediction_std_weight: float = 0.0
    # A domain goes to a host whose one core holds its prediction with this much to spare.
    core_fill_max: float = 0.95
    # Which hosts drain into which: "load" (lighter into heavier) or "domains" (fewer domains into more,
    # then lighter into heavier: the hosts kept are those whose emptying would cost the most migrations).
    drain_order: str = "load"
    # Bounds per round: domains one host sends, domains it accepts, targets tried per domain.
    moves_out_max: int = 16
    moves_in_max: int = 16
    targets_per_move: int = 3

    def validate(self) -> "ConsolidateConfig":
        if self.drain_order not in ("load", "domains"):
            raise ConsolidateConfigError(f"drain_order must be 'load' or 'domains', got {self.drain_order!r}")
        for f in dataclasses.fields(self):
            if f.type == "str":
                continue
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConsolidateConfigError(f"{f.name}: expected a finite number, got {v!r}")
            if f.type == "int" and not isinstance(v, int):
                raise ConsolidateConfigError(f"{f.name}: expected an integer, got {v!r}")
            if v < 0:
                raise ConsolidateConfigError(f"{f.name}: must be >= 0, got {v!r}")
        if not 0 < self.placement_watermark <= self.overload_threshold:
            raise ConsolidateConfigError("placement_watermark must be in (0, overload_threshold] "
                                         f"({self.placement_watermark} vs {self.overload_threshold})")
        if not 0 < self.shed_target <= self.overload_threshold:
            raise ConsolidateConfigError(f"shed_target must be in (0, overload_threshold], got {self.shed_target}")
        if self.drain_utilization_max >= self.placement_watermark:
            raise ConsolidateConfigError("drain_utilization_max must be below placement_watermark, or a drained "
                                         "host's load could not fit anywhere")
        for name in ("overload_persistence_samples", "drain_persistence_samples", "prediction_window_samples",
                     "moves_out_max", "moves_in_max", "targets_per_move"):
            if getattr(self, name) < 1:
                raise ConsolidateConfigError(f"{name}: must be at least 1")
        if not 0 < self.core_fill_max <= 1:
            raise ConsolidateConfigError(f"core_fill_max must be in (0, 1], got {self.core_fill_max}")
        return self

    def replace(self, **changes: object) -> "ConsolidateConfig":
        return dataclasses.replace(self, **changes).validate()


@dataclass(frozen=True, slots=True)
class DomainDemand:
    domain_id: Id
    size_mips: float           # one vCPU at this speed: the most it can ask for
    demand_mips: float         # now (may exceed a core of a slower host: it is then capped)
    memory_mib: int            # charged on the host that holds it (0 if memory is never short)
    history: tuple[float, ...] = ()   # past demand as fractions of size_mips, newest first
    moving: bool = False       # a migration of it is in flight


@dataclass(frozen=True, slots=True)
class HostLoad:
    node_id: Id
    capacity_mips: float
    core_mips: float
    memory_free_mib: float
    idle_w: float
    peak_w: float
    domains: tuple[DomainDemand, ...]


@dataclass(frozen=True, slots=True)
class NeighbourLoad:
    """A host's gossip entry: what its neighbours know of it."""

    node_id: Id
    awake: bool
    capacity_mips: float
    core_mips: float
    demand_mips: float
    predicted_mips: float
    memory_free_mib: float
    idle_w: float
    peak_w: float
    domains: int = 0

    def watts(self, demand_mips: float) -> float:
        """Power at this demand, linear between idle and peak (what a neighbour can know)."""
        u = min(1.0, demand_mips / self.capacity_mips)
        return self.idle_w + (self.peak_w - self.idle_w) * u


@dataclass(frozen=True, slots=True)
class Move:
    domain_id: Id
    targets: tuple[Id, ...]    # preferred first; the next is tried if one refuses
    demand_mips: float
    predicted_mips: float
    size_mips: float
    memory_mib: int


@dataclass(frozen=True, slots=True)
class Plan:
    kind: str                  # "shed" (overload) or "drain" (empty the host)
    moves: tuple[Move, ...]
    all_or_nothing: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Offer:
    source_id: Id
    domain_id: Id
    demand_mips: float
    predicted_mips: float
    size_mips: float
    memory_mib: int
    kind: str


def predict_mips(d: DomainDemand, window: int, std_weight: float) -> float:
    """max(now, mean + k x std of the last `window` samples): recent need, not a lull."""
    hist = d.history[:window]
    if not hist:
        return d.demand_mips
    mean = sum(hist) / len(hist)
    if std_weight and len(hist) > 1:
        var = sum((x - mean) ** 2 for x in hist) / len(hist)
        mean += std_weight * math.sqrt(var)
    return max(d.demand_mips, mean * d.size_mips)


def host_demand_mips(domains: Sequence[DomainDemand], core_mips: float) -> float:
    """What the domains can use: each is capped at one core."""
    return sum(min(d.demand_mips, core_mips) for d in domains)


class _Target:
    """Planning scratch for one neighbour: what this plan has added to it so far."""

    __slots__ = ("nb", "added_mips", "added_memory_mib", "added_count")

    def __init__(self, nb: NeighbourLoad) -> None:
        self.nb = nb
        self.added_mips = 0.0
        self.added_memory_mib = 0
        self.added_count = 0

    def room_mips(self, watermark: float) -> float:
        return watermark * self.nb.capacity_mips - self.nb.predicted_mips - self.added_mips


class Consolidator:
    """One host's consolidation agent (see the module docstring)."""

    def __init__(self, node_id: Id, config: ConsolidateConfig | None = None) -> None:
        self.node_id = node_id
        self.config = (config or ConsolidateConfig()).validate()
        self.awake = True
        self._host: HostLoad | None = None
        self._tick = -1
        self._pred: dict[Id, float] = {}
        self._arrived: dict[Id, int] = {}       # domain -> tick it was accepted here
        self._last_in_tick = -(10 ** 9)
        self._in: dict[Id, Offer] = {}         # accepted this round
        self._out: set[Id] = set()             # sent away this round
        self._draining = False

    # ------------------------------------------------------------- observe

    def observe(self, tick: int, host: HostLoad) -> NeighbourLoad:
        """Start of a round: take the host's state, forget last round's ledger, publish."""
        cfg = self.config
        self._tick = tick
        self._host = host
        self._in = {}
        self._out = set()
        self._draining = False
        present = {d.domain_id for d in host.domains}
        for dom in [d for d in self._arrived if d not in present]:
            del self._arrived[dom]
        self._pred = {d.domain_id: predict_mips(d, cfg.prediction_window_samples, cfg.prediction_std_weight)
                      for d in host.domains}
        self.awake = bool(host.domains)
        return self.summary()

    def summary(self) -> NeighbourLoad:
        """The gossip entry for this host as it stands (incoming and outgoing of this round included)."""
        h = self._require_host()
        demand = sum(d.demand_mips for d in h.domains if d.domain_id not in self._out)
        predicted = sum(p for dom, p in self._pred.items() if dom not in self._out)
        demand += sum(o.demand_mips for o in self._in.values())
        predicted += sum(o.predicted_mips for o in self._in.values())
        memory_free = h.memory_free_mib - sum(o.memory_mib for o in self._in.values())
        count = len(h.domains) - len(self._out) + len(self._in)
        return NeighbourLoad(h.node_id, self.awake, h.capacity_mips, h.core_mips, demand, predicted,
                             memory_free, h.idle_w, h.peak_w, count)

    # -------------------------------------------------------------- decide

    def decide(self, tick: int, neighbours: Sequence[NeighbourLoad]) -> Plan | None:
        """At most one plan: shed an overload, else maybe drain the host."""
        if tick != self._tick or not self.awake or self._out:
            return None
        h = self._require_host()
        cfg = self.config
        domains = [d for d in h.domains if not d.moving]
        if not domains:
            return None
        demand = host_demand_mips(h.domains, h.core_mips)
        capped = [d for d in domains if d.demand_mips > h.core_mips]
        over = demand > cfg.overload_threshold * h.capacity_mips
        if over and cfg.overload_persistence_samples > 1:
            over = self._lasted(h, domains, cfg.overload_persistence_samples,
                                lambda past: past > cfg.overload_threshold * h.capacity_mips)
        if over or capped:
            why = (f"demand {demand / h.capacity_mips:.2f} of capacity" if not capped
                   else f"{len(capped)} domain(s) above one core")
            return self._plan_shed(tick, h, domains, capped, neighbours, why)
        return self._plan_drain(tick, h, domains, neighbours)

    @staticmethod
    def _lasted(h: HostLoad, domains: Sequence[DomainDemand], samples: int, holds) -> bool:
        """``holds(demand)`` for the host's current domains over each of their last ``samples`` samples.

        Samples a domain does not have yet (it is new) count as not
        contradicting; the newest sample is the demand now if there is no history.
        """
        for i in range(samples):
            past = 0.0
            seen = False
            for d in domains:
                if i < len(d.history):
                    past += min(d.history[i] * d.size_mips, h.core_mips)
                    seen = True
                elif i == 0:
                    past += min(d.demand_mips, h.core_mips)
                    seen = True
            if seen and not holds(past):
                return False
        return True

    def _cooling(self, dom: Id, tick: int) -> bool:
        arrived = self._arrived.get(dom)
        return arrived is not None and tick - arrived < self.config.domain_cooldown_ticks

    def _fits_core(self, d: DomainDemand, pred: float, nb: NeighbourLoad) -> bool:
        return d.size_mips <= nb.core_mips or pred <= self.config.core_fill_max * nb.core_mips

    def _fits(self, t: _Target, d: DomainDemand, pred: float, watermark: float) -> bool:
        return (t.room_mips(watermark) >= pred and self._fits_core(d, pred, t.nb)
                and t.nb.memory_free_mib - t.added_memory_mib >= d.memory_mib
                and t.added_count < self.config.moves_in_max)

    def _best_fit(self, targets: Sequence[_Target], d: DomainDemand, pred: float) -> list[_Target]:
        """Targets that take the domain, fullest first (packing), then most efficient, then id."""
        wm = self.config.placement_watermark
        ok = [t for t in targets if self._fits(t, d, pred, wm)]
        ok.sort(key=lambda t: (t.room_mips(wm) - pred, t.nb.idle_w / t.nb.capacity_mips, repr(t.nb.node_id)))
        return ok

    def _move(self, d: DomainDemand, pred: float, chosen: Sequence[_Target]) -> Move:
        return Move(d.domain_id, tuple(t.nb.node_id for t in chosen[:self.config.targets_per_move]),
                    d.demand_mips, pred, d.size_mips, d.memory_mib)

    @staticmethod
    def _take(t: _Target, d: DomainDemand, pred: float) -> None:
        t.added_mips += pred
        t.added_memory_mib += d.memory_mib
        t.added_count += 1

    def _plan_shed(self, tick: int, h: HostLoad, domains: list[DomainDemand], capped: list[DomainDemand],
                   neighbours: Sequence[NeighbourLoad], why: str) -> Plan | None:
        cfg = self.config
        pred = self._pred
        predicted = sum(min(pred[d.domain_id], h.core_mips) for d in h.domains)
        need = predicted - cfg.shed_target * h.capacity_mips
        awake = [_Target(nb) for nb in neighbours if nb.awake and nb.node_id != self.node_id]
        asleep = [_Target(nb) for nb in neighbours if not nb.awake and nb.node_id != self.node_id]
        # Wake the biggest, most efficient sleeper first: it takes the most load per idle watt.
        asleep.sort(key=lambda t: (-t.nb.capacity_mips, t.nb.idle_w / t.nb.capacity_mips, repr(t.nb.node_id)))
        capped_ids = {d.domain_id for d in capped}
        free = [d for d in domains if d.domain_id not in capped_ids]
        cover = sorted((d for d in free if pred[d.domain_id] >= need),
                       key=lambda d: (self._cooling(d.domain_id, tick), d.memory_mib, pred[d.domain_id],
                                      repr(d.domain_id)))
        rest = sorted((d for d in free if pred[d.domain_id] < need),
                      key=lambda d: (self._cooling(d.domain_id, tick), -pred[d.domain_id], repr(d.domain_id)))
        moves: list[Move] = []
        removed = 0.0
        for d in capped + cover + rest:
            if len(moves) >= cfg.moves_out_max:
                break
            if removed >= need and d.domain_id not in capped_ids:
                break
            p = pred[d.domain_id]
            chosen = self._best_fit(awake, d, p)
            if not chosen:
                woken = [t for t in asleep if self._fits(t, d, p, cfg.placement_watermark)]
                if woken:
                    # Once woken it is awake for the rest of the plan: later domains may join it.
                    asleep.remove(woken[0])
                    awake.append(woken[0])
                    chosen = woken[:1]
            if not chosen:
                continue
            self._take(chosen[0], d, p)
            moves.append(self._move(d, p, chosen))
            removed += min(p, h.core_mips)
        if not moves:
            return None
        return Plan("shed", tuple(moves), False, f"overload: {why}")

    def _plan_drain(self, tick: int, h: HostLoad, domains: list[DomainDemand],
                    neighbours: Sequence[NeighbourLoad]) -> Plan | None:
        cfg = self.config
        if len(domains) != len(h.domains) or len(domains) > cfg.drain_domains_max:
            return None
        if tick - self._last_in_tick < cfg.host_cooldown_ticks:
            return None
        if any(self._cooling(d.domain_id, tick) for d in domains):
            return None
        limit = cfg.drain_utilization_max * h.capacity_mips
        if not self._lasted(h, domains, cfg.drain_persistence_samples, lambda past: past <= limit):
            return None
        pred = self._pred
        mine = sum(pred.values())
        if mine > limit:
            return None
        me = self._rank(len(h.domains), mine, self.node_id)
        targets = [_Target(nb) for nb in neighbours if nb.awake and nb.node_id != self.node_id
                   and self._rank(nb.domains, nb.predicted_mips, nb.node_id) > me]
        if not targets:
            return None
        moves: list[Move] = []
        for d in sorted(domains, key=lambda d: (-pred[d.domain_id], repr(d.domain_id))):
            chosen = self._best_fit(targets, d, pred[d.domain_id])
            if not chosen:
                return None
            self._take(chosen[0], d, pred[d.domain_id])
            moves.append(self._move(d, pred[d.domain_id], chosen))
        # Cost-benefit: the host's power goes, the targets' rises by their slope.
        my_u = min(1.0, host_demand_mips(h.domains, h.core_mips) / h.capacity_mips)
        saved_w = h.idle_w + (h.peak_w - h.idle_w) * my_u
        for t in targets:
            if t.added_count:
                saved_w -= t.nb.watts(t.nb.demand_mips + t.added_mips) - t.nb.watts(t.nb.demand_mips)
        if saved_w * cfg.drain_horizon_s < len(moves) * cfg.migration_cost_j:
            return None
        return Plan("drain", tuple(moves), True,
                    f"underload: {mine / h.capacity_mips:.2f} of capacity, {len(moves)} domain(s) fit neighbours")

    def _rank(self, domains: int, predicted_mips: float, node_id: Id) -> tuple:
        """A total order on hosts (the same for every agent): load flows only up it, so never in a cycle."""
        if self.config.drain_order == "domains":
            return (domains, predicted_mips, repr(node_id))
        return (predicted_mips, repr(node_id))

    # ------------------------------------------------------------- targets

    def on_offer(self, tick: int, offer: Offer, neighbours: Sequence[NeighbourLoad] = ()) -> bool:
        """Target side: accept (and reserve) only if the live state still takes it.

        A host that could empty itself into its own heavier neighbours refuses
        drained domains (``neighbours``: its view's gossip): they would only
        move twice. Load then flows straight to the local maxima of the order.
        """
        cfg = self.config
        h = self._require_host()
        if self._draining or self._out or len(self._in) >= cfg.moves_in_max:
            return False
        if offer.kind == "drain" and neighbours and self.awake and tick == self._tick \
                and self._plan_drain(tick, h, [d for d in h.domains if not d.moving], neighbours) is not None:
            return False
        live = self.summary()
        if live.predicted_mips + offer.predicted_mips > cfg.placement_watermark * h.capacity_mips:
            return False
        if host_demand_mips(h.domains, h.core_mips) > cfg.overload_threshold * h.capacity_mips:
            return False
        if offer.size_mips > h.core_mips and offer.predicted_mips > cfg.core_fill_max * h.core_mips:
            return False
        if live.memory_free_mib < offer.memory_mib:
            return False
        self._in[offer.domain_id] = offer
        self._arrived[offer.domain_id] = tick
        self._last_in_tick = tick
        self.awake = True
        return True

    def on_cancel(self, offer: Offer) -> None:
        """The source gave up (its drain could not be completed): release the reservation."""
        if self._in.pop(offer.domain_id, None) is not None:
            self._arrived.pop(offer.domain_id, None)

    def on_moves_started(self, tick: int, plan: Plan, moved: Sequence[Id]) -> None:
        """The source learns which of its plan's domains really left this round."""
        self._out.update(moved)
        if plan.kind == "drain" and moved:
            self._draining = True

    def _require_host(self) -> HostLoad:
        if self._host is None:
            raise RuntimeError("observe() must be called before the host is used")
        return self._host
