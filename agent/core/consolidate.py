"""The consolidation rule ("consolidate"): empty light hosts into neighbours, sleep, wake on demand.

Theory of operation
-------------------
One ``Consolidator`` runs on every host. It knows its own host (each
domain's demand now, its recent samples, its size and memory) and, for the
few hosts of its neighbour view, what they last gossiped (``NeighbourLoad``:
capacity, demand now, forecast, free memory, awake or asleep). It never sees
the rest of the cluster. Time is a tick counter passed in; the caller runs
one round per tick:

1. ``observe(tick, host)``: record the host's state; returns the gossip entry
   the host publishes. A host with no domain left goes to sleep (standby)
   and says so.
2. ``decide(tick, neighbours)``: at most one ``Plan`` of moves (below).
3. The caller offers each move to its targets in order; a target answers
   with ``on_offer`` against its *live* state (what it observed plus what it
   accepted this round), so stale gossip can never overfill a host. A
   refused move tries its next target; if a drain cannot place every domain
   the caller cancels the accepted ones (``on_cancel``) and nothing moves.
4. ``on_moves_started(tick, plan, moved)`` tells the source what really left.

Forecast (demand prediction from recent history): over a domain's last
``prediction_window_samples`` samples, its *level* is max(demand now, mean +
``level_sigmas`` standard deviations): what it has recently needed, not the
lull it may be in. A host's forecast is the sum of its domains' levels, plus
optionally ``headroom_sigmas`` standard deviations of the *sum*, sqrt(sum of
the variances): the "effective size" of stochastic bin packing (Chen et al.,
"Effective VM sizing in virtualized data centers", IM 2011), where headroom
grows with the square root of the domain count because domains rarely peak
together. On the PlanetLab days the per-domain level alone did better (fewer
overloads for the same energy), so the default is 1 and 0 sigmas. A host
takes a domain only if its forecast with it stays at or under
``placement_watermark`` x capacity.

The rules (CloudSim's accounting calls a host in SLA violation whenever its
VMs get less CPU than they request; Beloglazov & Buyya 2012 split the work
into detect, select and place, applied here with local knowledge only):

- *Overload*: demand now above ``overload_threshold`` x capacity (for
  ``overload_persistence_samples`` samples in a row), or a domain asking for
  more than one core (it is capped, so it is in violation). The host sheds
  until its forecast is at most ``shed_target`` x capacity (a hysteresis
  band below the threshold), preferring one domain that is enough on its own
  (fewest migrations), the smallest memory first (shortest copy, as MMT);
  otherwise the largest first. Targets are awake neighbours (best fit: the
  one left with the least room, so load packs); if none takes a domain, the
  rule wakes a sleeping neighbour (the largest, most efficient one), and
  later domains of the same plan may join it.
- *Drain*: a host whose demand stayed at or under ``drain_utilization_max``
  x capacity over its last ``drain_persistence_samples`` samples (an
  underload that lasts), with at most ``drain_domains_max`` domains, none
  cooling down, and that received nothing for ``host_cooldown_ticks``, tries
  to place *every* domain on awake neighbours ranked above it (``drain_order``:
  capacity, then domain count, then forecast, then id: small hosts, which
  draw more power per MIPS, empty into big ones, and the hosts that would
  cost the most migrations to empty are the ones kept). Load only flows up
  that order, so two hosts never drain into each other; a host that could drain itself refuses drained domains, so
  they go straight to the local maxima instead of moving twice. Cost-benefit:
  the drain must save, over ``drain_horizon_s``, more energy than
  ``migration_cost_j`` per migration (the host's power goes; the targets'
  power rises along their slope). All or nothing: a half-emptied host saves
  no power.
- *Cooldowns*: a domain that arrived stays ``domain_cooldown_ticks`` (it may
  still leave to relieve an overload when nothing else does); a host that
  received or woke does not drain for ``host_cooldown_ticks``.

CPU is in MIPS (a host-independent rate: cores x per-core speed; an agent on
uniform hardware may use cores). Ids are opaque hashables (UUID strings in
the agent, host and VM numbers in the simulator).

Pure: no clock, no I/O, no global randomness.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

Id = Hashable


class ConsolidateConfigError(ValueError):
    """The configuration is invalid; the message names the field."""


DRAIN_ORDERS = ("capacity-domains", "capacity", "load")


@dataclass(frozen=True, slots=True)
class ConsolidateConfig:
    # Above 100 % the domains get less than they ask: that is SLA violation time.
    overload_threshold: float = 1.0
    # Act on an overload once it has lasted this many samples (1: at once; each sample overloaded is violation).
    overload_persistence_samples: int = 1
    # A receiving host's forecast must stay at or under this: room for what the forecast misses.
    placement_watermark: float = 0.92
    # An overloaded host sheds down to this forecast, a band below the threshold (hysteresis).
    shed_target: float = 0.9
    # A host this light may empty itself ...
    drain_utilization_max: float = 0.6
    # ... if it stayed that light over this many samples (act only on an underload that lasts).
    drain_persistence_samples: int = 3
    # Draining moves every domain; with more than this it rarely pays.
    drain_domains_max: int = 24
    # The power a drain saves is counted over this horizon (how long an emptied host typically sleeps).
    drain_horizon_s: float = 3_600.0
    # One migration's cost in energy terms: its copy time in violation at the target, its 10 % slowdown.
    migration_cost_j: float = 15_000.0
    # A domain that just arrived stays this many ticks (no ping-pong).
    domain_cooldown_ticks: int = 12
    # A host that just received or woke does not empty itself for this many ticks.
    host_cooldown_ticks: int = 6
    # Samples the forecast looks back over (the current one included): half an hour at 300 s.
    prediction_window_samples: int = 6
    # A domain's level is max(now, its recent mean + this many of its own standard deviations): what it
    # has recently needed, not a lull. One sigma kept 20110303 under 150 overloads in 287 ticks.
    level_sigmas: float = 1.0
    # Standard deviations of a host's *summed* demand kept free on top of the levels (the effective-size
    # alternative; 2 is ~98 % one-sided if normal). 0: on PlanetLab the per-domain level did better.
    headroom_sigmas: float = 0.0
    # A domain goes to a host whose one core holds its forecast with this much to spare.
    core_fill_max: float = 0.95
    # The order load flows up, compared key by key. "capacity-domains": capacity (a big host draws less
    # power per MIPS, so small hosts empty into big ones), then domain count (the host whose emptying would
    # cost the most migrations is kept), then forecast, then id. "capacity" drops the domain count,
    # "load" is forecast then id. On the ten days the domain count saved 7 % of migrations for 1 % energy.
    drain_order: str = "capacity-domains"
    # Bounds per round: domains one host sends, domains it accepts, targets tried per domain.
    moves_out_max: int = 16
    moves_in_max: int = 16
    targets_per_move: int = 3

    def validate(self) -> "ConsolidateConfig":
        if self.drain_order not in DRAIN_ORDERS:
            raise ConsolidateConfigError(f"drain_order: one of {DRAIN_ORDERS}, got {self.drain_order!r}")
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
class Forecast:
    level_mips: float          # max(now, recent mean)
    variance_mips2: float      # of the recent samples

    def bound_mips(self, sigmas: float) -> float:
        return self.level_mips + sigmas * math.sqrt(self.variance_mips2)


@dataclass(frozen=True, slots=True)
class NeighbourLoad:
    """A host's gossip entry: what its neighbours know of it."""

    node_id: Id
    awake: bool
    capacity_mips: float
    core_mips: float
    demand_mips: float         # now
    expected_mips: float       # sum of its domains' forecast levels
    variance_mips2: float      # sum of their variances
    memory_free_mib: float
    idle_w: float
    peak_w: float
    domains: int = 0

    def forecast_mips(self, sigmas: float) -> float:
        return self.expected_mips + sigmas * math.sqrt(self.variance_mips2)

    def watts(self, demand_mips: float) -> float:
        """Power at this demand, linear between idle and peak (what a neighbour can know)."""
        u = min(1.0, demand_mips / self.capacity_mips)
        return self.idle_w + (self.peak_w - self.idle_w) * u


@dataclass(frozen=True, slots=True)
class Move:
    domain_id: Id
    targets: tuple[Id, ...]    # preferred first; the next is tried if one refuses
    demand_mips: float
    forecast: Forecast
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
    forecast: Forecast
    size_mips: float
    memory_mib: int
    kind: str


def forecast(d: DomainDemand, window: int, level_sigmas: float = 0.0) -> Forecast:
    """Level max(now, mean + level_sigmas x std) and variance of the last ``window`` samples, in MIPS."""
    hist = d.history[:window]
    if not hist:
        return Forecast(d.demand_mips, 0.0)
    n = len(hist)
    mean = sum(hist) / n
    var = sum((x - mean) ** 2 for x in hist) / n
    level = (mean + level_sigmas * math.sqrt(var)) * d.size_mips
    return Forecast(max(d.demand_mips, level), var * d.size_mips * d.size_mips)


def host_demand_mips(domains: Sequence[DomainDemand], core_mips: float) -> float:
    """What the domains can use: each is capped at one core."""
    return sum(min(d.demand_mips, core_mips) for d in domains)


class _Target:
    """Planning scratch for one neighbour: what this plan has added to it so far."""

    __slots__ = ("nb", "expected_mips", "variance_mips2", "memory_mib", "count")

    def __init__(self, nb: NeighbourLoad) -> None:
        self.nb = nb
        self.expected_mips = nb.expected_mips
        self.variance_mips2 = nb.variance_mips2
        self.memory_mib = nb.memory_free_mib
        self.count = 0

    def room_after_mips(self, f: Forecast, watermark: float, sigmas: float) -> float:
        after = self.expected_mips + f.level_mips + sigmas * math.sqrt(self.variance_mips2 + f.variance_mips2)
        return watermark * self.nb.capacity_mips - after

    def take(self, f: Forecast, memory_mib: int) -> None:
        self.expected_mips += f.level_mips
        self.variance_mips2 += f.variance_mips2
        self.memory_mib -= memory_mib
        self.count += 1


class Consolidator:
    """One host's consolidation agent (see the module docstring)."""

    def __init__(self, node_id: Id, config: ConsolidateConfig | None = None) -> None:
        self.node_id = node_id
        self.config = (config or ConsolidateConfig()).validate()
        self.awake = True
        self._host: HostLoad | None = None
        self._tick = -1
        self._fc: dict[Id, Forecast] = {}
        self._arrived: dict[Id, int] = {}       # domain -> tick it was accepted here
        self._last_in_tick = -(10 ** 9)
        self._in: dict[Id, Offer] = {}         # accepted this round
        self._out: set[Id] = set()             # sent away this round
        self._draining = False

    # ------------------------------------------------------------- observe

    def observe(self, tick: int, host: HostLoad) -> NeighbourLoad:
        """Start of a round: take the host's state, forget last round's ledger, publish."""
        self._tick = tick
        self._host = host
        self._in = {}
        self._out = set()
        self._draining = False
        present = {d.domain_id for d in host.domains}
        for dom in [d for d in self._arrived if d not in present]:
            del self._arrived[dom]
        window = self.config.prediction_window_samples
        sig = self.config.level_sigmas
        self._fc = {d.domain_id: forecast(d, window, sig) for d in host.domains}
        self.awake = bool(host.domains)
        return self.summary()

    def summary(self) -> NeighbourLoad:
        """The gossip entry for this host as it stands (this round's incoming and outgoing included)."""
        h = self._require_host()
        demand = expected = variance = 0.0
        for d in h.domains:
            if d.domain_id not in self._out:
                f = self._fc[d.domain_id]
                demand += d.demand_mips
                expected += f.level_mips
                variance += f.variance_mips2
        memory_free = h.memory_free_mib
        for o in self._in.values():
            demand += o.demand_mips
            expected += o.forecast.level_mips
            variance += o.forecast.variance_mips2
            memory_free -= o.memory_mib
        count = len(h.domains) - len(self._out) + len(self._in)
        return NeighbourLoad(h.node_id, self.awake, h.capacity_mips, h.core_mips, demand, expected, variance,
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
        limit = cfg.overload_threshold * h.capacity_mips
        over = demand > limit and self._lasted(h, domains, cfg.overload_persistence_samples,
                                                lambda past: past > limit)
        capped = [d for d in domains if d.demand_mips > h.core_mips]
        if over or capped:
            why = (f"{len(capped)} domain(s) above one core" if capped
                   else f"demand {demand / h.capacity_mips:.2f} of capacity")
            return self._plan_shed(tick, h, domains, capped, neighbours, why)
        return self._plan_drain(tick, h, domains, neighbours)

    @staticmethod
    def _lasted(h: HostLoad, domains: Sequence[DomainDemand], samples: int,
                holds: Callable[[float], bool]) -> bool:
        """``holds(demand)`` for the host's current domains in each of their last ``samples`` samples.

        Sample 0 is the demand now; samples a domain does not have yet (it is
        new) do not count against.
        """
        for i in range(samples):
            past = 0.0
            seen = False
            for d in domains:
                if i == 0:
                    past += min(d.demand_mips, h.core_mips)
                    seen = True
                elif i < len(d.history):
                    past += min(d.history[i] * d.size_mips, h.core_mips)
                    seen = True
            if seen and not holds(past):
                return False
        return True

    def _cooling(self, dom: Id, tick: int) -> bool:
        arrived = self._arrived.get(dom)
        return arrived is not None and tick - arrived < self.config.domain_cooldown_ticks

    def _fits_core(self, size_mips: float, f: Forecast, core_mips: float) -> bool:
        cfg = self.config
        return size_mips <= core_mips or f.bound_mips(cfg.headroom_sigmas) <= cfg.core_fill_max * core_mips

    def _room(self, t: _Target, d: DomainDemand, f: Forecast) -> float | None:
        """Room ``t`` has left after taking the domain, or None if it cannot take it."""
        cfg = self.config
        if t.count >= cfg.moves_in_max or t.memory_mib < d.memory_mib:
            return None
        if not self._fits_core(d.size_mips, f, t.nb.core_mips):
            return None
        room = t.room_after_mips(f, cfg.placement_watermark, cfg.headroom_sigmas)
        return room if room >= 0 else None

    def _best_fit(self, targets: Sequence[_Target], d: DomainDemand, f: Forecast) -> list[_Target]:
        """Targets that take the domain, least room left first (packing), then most efficient, then id."""
        ranked = []
        for t in targets:
            room = self._room(t, d, f)
            if room is not None:
                ranked.append(((room, t.nb.idle_w / t.nb.capacity_mips, repr(t.nb.node_id)), t))
        ranked.sort(key=lambda kt: kt[0])
        return [t for _, t in ranked]

    def _move(self, d: DomainDemand, chosen: Sequence[_Target]) -> Move:
        return Move(d.domain_id, tuple(t.nb.node_id for t in chosen[:self.config.targets_per_move]),
                    d.demand_mips, self._fc[d.domain_id], d.size_mips, d.memory_mib)

    def _plan_shed(self, tick: int, h: HostLoad, domains: list[DomainDemand], capped: list[DomainDemand],
                   neighbours: Sequence[NeighbourLoad], why: str) -> Plan | None:
        cfg = self.config
        k = cfg.headroom_sigmas
        fc = self._fc
        expected = sum(min(fc[d.domain_id].level_mips, h.core_mips) for d in h.domains)
        variance = sum(fc[d.domain_id].variance_mips2 for d in h.domains)
        goal = cfg.shed_target * h.capacity_mips
        awake = [_Target(nb) for nb in neighbours if nb.awake and nb.node_id != self.node_id]
        asleep = [_Target(nb) for nb in neighbours if not nb.awake and nb.node_id != self.node_id]
        # Wake the biggest, most efficient sleeper first: it takes the most load per idle watt.
        asleep.sort(key=lambda t: (-t.nb.capacity_mips, t.nb.idle_w / t.nb.capacity_mips, repr(t.nb.node_id)))
        must = list(capped)
        left = [d for d in domains if d not in must]
        moves: list[Move] = []
        while len(moves) < cfg.moves_out_max:
            from_must = bool(must)
            if from_must:
                pool = [must.pop(0)]
            elif expected + k * math.sqrt(max(0.0, variance)) <= goal:
                break
            else:
                # One domain enough on its own (smallest memory: shortest copy), else the largest first.
                def enough(d: DomainDemand) -> bool:
                    f = fc[d.domain_id]
                    return (expected - min(f.level_mips, h.core_mips)
                            + k * math.sqrt(max(0.0, variance - f.variance_mips2))) <= goal
                cover = sorted((d for d in left if enough(d)),
                               key=lambda d: (self._cooling(d.domain_id, tick), d.memory_mib,
                                              fc[d.domain_id].level_mips, repr(d.domain_id)))
                rest = sorted((d for d in left if not enough(d)),
                              key=lambda d: (self._cooling(d.domain_id, tick), -fc[d.domain_id].level_mips,
                                             repr(d.domain_id)))
                pool = cover + rest
            placed = None
            for d in pool:
                chosen = self._best_fit(awake, d, fc[d.domain_id])
                if not chosen:
                    woken = [t for t in asleep if self._room(t, d, fc[d.domain_id]) is not None][:1]
                    if woken:
                        # Awake from now on: later domains of this plan may join it.
                        asleep.remove(woken[0])
                        awake.append(woken[0])
                        chosen = woken
                if chosen:
                    placed = (d, chosen)
                    break
                if d in left:
                    left.remove(d)      # nowhere to go this round
            if placed is None:
                if from_must:
                    continue            # a capped domain nobody can take: still try the others
                break
            d, chosen = placed
            f = fc[d.domain_id]
            chosen[0].take(f, d.memory_mib)
            moves.append(self._move(d, chosen))
            if d in left:
                left.remove(d)
            expected -= min(f.level_mips, h.core_mips)
            variance -= f.variance_mips2
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
        k = cfg.headroom_sigmas
        fc = self._fc
        mine = sum(f.level_mips for f in fc.values()) + k * math.sqrt(sum(f.variance_mips2 for f in fc.values()))
        if mine > limit:
            return None
        me = self._rank(h.capacity_mips, len(h.domains), mine, self.node_id)
        targets = [_Target(nb) for nb in neighbours if nb.awake and nb.node_id != self.node_id
                   and self._rank(nb.capacity_mips, nb.domains, nb.forecast_mips(k), nb.node_id) > me]
        if not targets:
            return None
        moves: list[Move] = []
        for d in sorted(domains, key=lambda d: (-fc[d.domain_id].level_mips, repr(d.domain_id))):
            chosen = self._best_fit(targets, d, fc[d.domain_id])
            if not chosen:
                return None
            chosen[0].take(fc[d.domain_id], d.memory_mib)
            moves.append(self._move(d, chosen))
        # Cost-benefit: this host's power goes; each target's rises along its slope.
        my_u = min(1.0, host_demand_mips(h.domains, h.core_mips) / h.capacity_mips)
        saved_w = h.idle_w + (h.peak_w - h.idle_w) * my_u
        for t in targets:
            if t.count:
                added = t.expected_mips - t.nb.expected_mips
                saved_w -= t.nb.watts(t.nb.demand_mips + added) - t.nb.watts(t.nb.demand_mips)
        if saved_w * cfg.drain_horizon_s < len(moves) * cfg.migration_cost_j:
            return None
        return Plan("drain", tuple(moves), True,
                    f"underload: forecast {mine / h.capacity_mips:.2f} of capacity, {len(moves)} domain(s) fit")

    def _rank(self, capacity_mips: float, domains: int, forecast_mips: float, node_id: Id) -> tuple:
        """The order load flows up (the same for every agent, so it never flows in a cycle)."""
        order = self.config.drain_order
        if order == "capacity-domains":
            return (capacity_mips, domains, forecast_mips, repr(node_id))
        if order == "capacity":
            return (capacity_mips, forecast_mips, repr(node_id))
        return (forecast_mips, repr(node_id))

    # ------------------------------------------------------------- targets

    def on_offer(self, tick: int, offer: Offer, neighbours: Sequence[NeighbourLoad] = ()) -> bool:
        """Target side: accept (and reserve) only if the live state still takes it.

        A host that could empty itself into its own heavier neighbours
        (``neighbours``: its view's gossip) refuses drained domains: they would
        only move twice. Load then flows straight to the local maxima.
        """
        cfg = self.config
        h = self._require_host()
        if self._draining or self._out or len(self._in) >= cfg.moves_in_max:
            return False
        if host_demand_mips(h.domains, h.core_mips) > cfg.overload_threshold * h.capacity_mips:
            return False
        live = _Target(self.summary())
        if live.room_after_mips(offer.forecast, cfg.placement_watermark, cfg.headroom_sigmas) < 0:
            return False
        if not self._fits_core(offer.size_mips, offer.forecast, h.core_mips):
            return False
        if live.memory_mib < offer.memory_mib:
            return False
        if offer.kind == "drain" and neighbours and self.awake and tick == self._tick \
                and self._plan_drain(tick, h, [d for d in h.domains if not d.moving], neighbours) is not None:
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
