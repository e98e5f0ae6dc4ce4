"""DECENTRALIZED policies: one agent per host, each knowing only its neighbour view and their gossip.

Theory of operation
-------------------
``DecentralizedPolicy`` is the engine's ``Policy`` for a cluster of agents.
It runs one agent per host, and each agent runs the same pure core as a real
Shoal agent: ``agent.core.consolidate.Consolidator`` ("consolidate") or
``agent.core.policy.BalancePolicy`` ("balance"). What an agent may know:

- its own host, read from the engine as ``ctx.host(own_id)``, never another
  host's view (a host's monitor reports only that host);
- a bounded neighbour view of ``neighbours`` host ids (default 8), resampled
  every tick Cyclon-style (Voulgaris et al. 2005): the agent ages its
  entries, shuffles ``shuffle_length`` of them with its oldest awake
  neighbour, and both keep what they receive in place of what they gave.
  Sleeping hosts do not shuffle (they are suspended); a view keeps at most
  ``standby_entries_max`` of them, which is whom it can wake. A host that
  accepts a migration learns its source (a contact, as in a join). Free
  slots are refilled with random awake members from the membership table
  (``_Membership``: ids and awake / asleep, what SWIM's member list holds,
  no load), as agent/core/peer_view.py's caller does; without that an agent
  whose neighbours all went to sleep would be cut off for good;
- the gossip entries of its view's hosts (``_Board``): each awake agent
  publishes its entry when it observes its host at the start of a round, and
  a sleeping host's entry is the last one it published. Entries are stale
  within a round: moves decided earlier in the same round are not in them.
  Only a target's answer to an offer reflects its live state.

A round (one engine tick): every awake agent observes its host and
publishes; every awake agent shuffles its view; then the agents decide in a
random order (one seeded ``Random`` draws every choice). A plan's moves are
offered to their targets, which must be in the source's view; a target
accepts or refuses against its own live state (a sleeping target wakes to
answer: it reads its own host first); a drain that cannot place every domain
is cancelled. Accepted moves become the engine's ``Migration`` list. Nothing
global reaches a decision: ``_Board.read`` refuses ids outside the reader's
view, and tests/test_planetlab_decentralized.py checks every engine read.

Initial placement is the cloud's admission scheduler (``first_fit`` by full
MIPS, CloudSim's PowerVmAllocationPolicySimple, as npa and dvfs use), not an
agent decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from random import Random

from agent.core.config import AgentConfig
from agent.core.consolidate import (ConsolidateConfig, Consolidator, DomainDemand, Forecast, HostLoad, Move,
                                    NeighbourLoad, Offer, Plan)
from agent.core.policy import BalancePolicy, DomainLoad, LocalView, Neighbour, improves

from .policies.placement import first_fit, power_aware
from .view import HostSpec, HostView, IntervalContext, Migration, PlacementContext

PLACEMENTS: dict[str, Callable[[PlacementContext], list[int]]] = {
    "first-fit": first_fit, "power-aware": power_aware}


class LeakError(RuntimeError):
    """An agent asked for something outside its neighbour view."""


class _Board:
    """The gossip entries as the agents last published them; a read is checked against the view."""

    def __init__(self, views: dict[int, dict[int, int]]) -> None:
        self._views = views
        self._entries: dict[int, object] = {}
        self.reads = 0

    def publish(self, host_id: int, entry: object) -> None:
        self._entries[host_id] = entry

    def read(self, reader: int, ids: Sequence[int]) -> list:
        view = self._views[reader]
        out = []
        for i in ids:
            if i not in view:
                raise LeakError(f"agent {reader} read the gossip of {i}, which is not in its view")
            out.append(self._entries[i])
        self.reads += len(out)
        return out

    def awake(self, reader: int, host_id: int) -> bool:
        return bool(getattr(self.read(reader, (host_id,))[0], "awake", True))


class _Membership:
    """The member table every agent holds (SWIM): who exists and who is awake. No load."""

    def __init__(self) -> None:
        self._awake: set[int] = set()
        self._sorted: list[int] | None = None

    def set_awake(self, host_id: int, awake: bool) -> None:
        if awake != (host_id in self._awake):
            (self._awake.add if awake else self._awake.discard)(host_id)
            self._sorted = None

    def awake_ids(self) -> list[int]:
        if self._sorted is None:
            self._sorted = sorted(self._awake)
        return self._sorted


class _Overlay:
    """Each agent's Cyclon view: neighbour id -> age (ticks since the entry was made)."""

    def __init__(self, ids: Sequence[int], size: int, rng: Random, shuffle_length: int,
                 standby_entries_max: int) -> None:
        self.size = size
        self.rng = rng
        self.shuffle_length = shuffle_length
        self.standby_entries_max = standby_entries_max
        self.members = _Membership()
        self.views: dict[int, dict[int, int]] = {}
        pool = list(ids)
        for i in ids:
            picks = rng.sample(pool, min(size + 1, len(pool)))
            self.views[i] = {j: 0 for j in picks if j != i}
            while len(self.views[i]) > size:
                self.views[i].pop(next(reversed(self.views[i])))
        self.board = _Board(self.views)

    def refill(self, p: int) -> None:
        """Drop sleepers beyond the allowance, fill free slots with random awake members."""
        self._trim(p)
        view = self.views[p]
        free = self.size - len(view)
        if free <= 0:
            return
        awake = self.members.awake_ids()
        for _ in range(4 * free):          # a few draws: members already in the view are skipped
            if len(view) >= self.size or len(awake) <= 1:
                break
            j = awake[self.rng.randrange(len(awake))]
            if j != p and j not in view:
                view[j] = 0

    def shuffle(self, p: int) -> None:
        view = self.views[p]
        for j in view:
            view[j] += 1
        awake = [j for j in view if self.board.awake(p, j)]
        if not awake:
            return
        q = min(awake, key=lambda j: (-view[j], j))                  # the oldest awake entry
        others = sorted(j for j in view if j != q)
        sent = self.rng.sample(others, min(self.shuffle_length - 1, len(others)))
        qview = self.views[q]
        q_candidates = sorted(j for j in qview if j != p)
        replied = self.rng.sample(q_candidates, min(self.shuffle_length, len(q_candidates)))
        got = [(j, qview[j]) for j in replied]
        gave = [(p, 0)] + [(j, view[j]) for j in sent]
        view.pop(q)                                                   # q now holds p's fresh entry
        self._integrate(p, got, [j for j in sent])
        self._integrate(q, gave, replied)
        self._trim(p)
        self._trim(q)

    def _integrate(self, x: int, received: Sequence[tuple[int, int]], given: Sequence[int]) -> None:
        view = self.views[x]
        replaceable = [j for j in given if j in view]
        for j, age in received:
            if j == x or j in view:
                continue
            if len(view) >= self.size:
                if not replaceable:
                    break
                view.pop(replaceable.pop())
            view[j] = age

    def _trim(self, x: int) -> None:
        """Keep at most standby_entries_max sleeping hosts: a view is mostly whom one can fill."""
        view = self.views[x]
        asleep = sorted((j for j in view if not self.board.awake(x, j)), key=lambda j: (view[j], j))
        for j in asleep[self.standby_entries_max:]:
            view.pop(j)

    def contact(self, x: int, other: int) -> None:
        """x learned of ``other`` (it sent x a domain): keep it if there is room or a sleeper to drop."""
        view = self.views[x]
        if other == x or other in view:
            return
        if len(view) >= self.size:
            asleep = sorted((j for j in view if not self.board.awake(x, j)), key=lambda j: (-view[j], j))
            if not asleep:
                return
            view.pop(asleep[0])
        view[other] = 0


# ------------------------------------------------------------------ agents

class _ConsolidateAgent:
    """A host's agent running agent.core.consolidate."""

    def __init__(self, spec: HostSpec, config: ConsolidateConfig) -> None:
        self.host_id = spec.host_id
        self.core = Consolidator(spec.host_id, config)
        self.spec = spec
        self.tick = -1

    @property
    def awake(self) -> bool:
        return self.core.awake

    def initial_entry(self, awake: bool) -> NeighbourLoad:
        s = self.spec
        self.core.awake = awake
        return NeighbourLoad(s.host_id, awake, s.capacity_mips, s.pe_mips, 0.0, 0.0, 0.0, s.ram_mb,
                             s.power.idle_w, s.power.max_w)

    def observe(self, ctx: IntervalContext) -> NeighbourLoad:
        v = ctx.host(self.host_id)
        self.tick = ctx.tick
        domains = tuple(DomainDemand(vm.vm_id, vm.mips, vm.requested_mips, vm.ram_charged_mb, vm.history,
                                     vm.migrating or vm.incoming) for vm in v.vms)
        host = HostLoad(v.host_id, v.capacity_mips, v.pe_mips, v.ram_free_mb, v.power.idle_w, v.power.max_w,
                        domains)
        return self.core.observe(ctx.tick, host)

    def summary(self) -> NeighbourLoad:
        return self.core.summary()

    def decide(self, tick: int, neighbours: list) -> Plan | None:
        return self.core.decide(tick, neighbours)

    def offer(self, move: Move, kind: str) -> Offer:
        return Offer(self.host_id, move.domain_id, move.demand_mips, move.forecast, move.size_mips,
                     move.memory_mib, kind)

    def on_offer(self, tick: int, offer: Offer, neighbours: list) -> bool:
        return self.core.on_offer(tick, offer, neighbours)

    def on_cancel(self, offer: Offer) -> None:
        self.core.on_cancel(offer)

    def on_moves_started(self, tick: int, plan: Plan, moved: Sequence[int]) -> None:
        self.core.on_moves_started(tick, plan, moved)


@dataclass(frozen=True, slots=True)
class _BalanceOffer:
    source_id: int
    domain_id: int
    demand_cores: float
    memory_mib: int
    source_demand_cores: float
    source_capacity_cores: float


class _BalanceAgent:
    """A host's agent running agent.core.policy's ``balance`` rule.

    Units: that rule works in cores; here a "core" is 1 000 MIPS on every
    host, so demand moved between host types keeps its size. The cluster mean
    it compares with is the mean over the agent's own host and its awake
    neighbours (a local stand-in for push-pull averaging).
    """

    MIPS_PER_CORE = 1000.0

    def __init__(self, spec: HostSpec, config: AgentConfig, interval_s: float = 300.0) -> None:
        self.host_id = spec.host_id
        self.spec = spec
        self.config = config
        self.policy = BalancePolicy(config)
        self.cooldown_ticks = max(1, math.ceil(config.domain_cooldown_ms / 1000 / interval_s))
        self.awake = True
        self.tick = -1
        self._view: LocalView | None = None
        self._domains: dict[int, DomainLoad] = {}
        self._arrived: dict[int, int] = {}
        self._in: dict[int, _BalanceOffer] = {}
        self._out: set[int] = set()

    def initial_entry(self, awake: bool) -> Neighbour:
        self.awake = awake
        s = self.spec
        return Neighbour(s.host_id, s.capacity_mips / self.MIPS_PER_CORE, 0.0, s.ram_mb, 1e9)

    def observe(self, ctx: IntervalContext) -> Neighbour:
        v: HostView = ctx.host(self.host_id)
        self.tick = ctx.tick
        k = self.MIPS_PER_CORE
        self._in = {}
        self._out = set()
        present = {vm.vm_id for vm in v.vms}
        self._arrived = {d: t for d, t in self._arrived.items() if d in present}
        doms = []
        for vm in v.vms:
            movable = not (vm.migrating or vm.incoming) and ctx.tick - self._arrived.get(vm.vm_id, -10 ** 9) \
                >= self.cooldown_ticks
            doms.append(DomainLoad(vm.vm_id, vm.requested_mips / k, vm.ram_charged_mb, 1, movable,
                                   vm.ram_mb / ctx.migration_bandwidth_mb_s))
        self._domains = {d.domain_id: d for d in doms}
        demand = sum(min(vm.requested_mips, v.pe_mips) for vm in v.vms) / k
        self._view = LocalView(v.host_id, v.capacity_mips / k, demand, tuple(doms), 0)
        self._memory_free = v.ram_free_mb
        self.awake = bool(v.vms)
        return self.summary()

    def _demand(self) -> float:
        view = self._view
        out = sum(self._domains[d].demand_cores for d in self._out)
        return view.cpu_demand_cores - out + sum(o.demand_cores for o in self._in.values())

    def summary(self) -> Neighbour:
        mem = self._memory_free - sum(o.memory_mib for o in self._in.values())
        return Neighbour(self.host_id, self._view.cpu_capacity_cores, self._demand(), mem, 1e9, len(self._in))

    def decide(self, tick: int, neighbours: list) -> Plan | None:
        if tick != self.tick or not self.awake:
            return None
        view = self._view
        utils = [view.cpu_utilization] + [n.cpu_demand_cores / n.cpu_capacity_cores for n in neighbours
                                          if n.cpu_demand_cores > 0]
        mean = sum(utils) / len(utils)
        ranked = self.policy.candidates(view, list(neighbours), mean)
        if not ranked:
            return None
        dom = ranked[0].domain_id
        targets = tuple(p.target_id for p in ranked if p.domain_id == dom)[:3]
        d = self._domains[dom]
        move = Move(dom, targets, d.demand_cores, Forecast(d.demand_cores, 0.0), d.demand_cores, d.memory_mib)
        return Plan("balance", (move,), False, ranked[0].reason)

    def offer(self, move: Move, kind: str) -> _BalanceOffer:
        return _BalanceOffer(self.host_id, move.domain_id, move.demand_mips, move.memory_mib,
                             self._view.cpu_demand_cores, self._view.cpu_capacity_cores)

    def on_offer(self, tick: int, offer: _BalanceOffer, neighbours: list) -> bool:
        if self._out or len(self._in) >= self.config.migrations_in_max:
            return False
        live = self.summary()
        if live.memory_free_mib < offer.memory_mib:
            return False
        if not improves(offer.source_demand_cores, offer.source_capacity_cores, live.cpu_demand_cores,
                        live.cpu_capacity_cores, offer.demand_cores, self.config.improvement_min):
            return False
        self._in[offer.domain_id] = offer
        self._arrived[offer.domain_id] = tick
        self.awake = True
        return True

    def on_cancel(self, offer: _BalanceOffer) -> None:
        self._in.pop(offer.domain_id, None)

    def on_moves_started(self, tick: int, plan: Plan, moved: Sequence[int]) -> None:
        self._out.update(moved)


# ------------------------------------------------------------------ policy

@dataclass(frozen=True, slots=True)
class OverlayOptions:
    # Hosts an agent knows: the bounded view of the issue (Shoal's default).
    neighbours: int = 8
    # Cyclon's shuffle length: entries swapped per exchange.
    shuffle_length: int = 4
    # Sleeping hosts kept in a view: enough to wake one, few enough to leave room for awake ones.
    standby_entries_max: int = 2
    # The cloud's admission at t = 0: "first-fit" (CloudSim's simple policy) or "power-aware".
    placement: str = "first-fit"


class DecentralizedPolicy:
    """The engine's Policy for a cluster of agents (see the module docstring). DECENTRALIZED."""

    centralized = False
    power_aware = True

    def __init__(self, name: str, make_agent: Callable[[HostSpec], object], rng: Random,
                 options: OverlayOptions = OverlayOptions()) -> None:
        if options.neighbours < 1 or options.shuffle_length < 1 or options.standby_entries_max < 0:
            raise ValueError("neighbours and shuffle_length must be >= 1, standby_entries_max >= 0")
        if options.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {sorted(PLACEMENTS)}")
        self.name = name
        self.options = options
        self.rng = rng
        self._make_agent = make_agent
        self.agents: list = []
        self.overlay: _Overlay | None = None
        # Per tick, for plots and the report: awake agents, awake entries per awake view, plans, refusals.
        self.stats: list[tuple[int, int, float, int, int]] = []
        self.on_round: Callable[[int, "DecentralizedPolicy"], None] | None = None   # test hook
        self.moves_by_kind: dict[str, int] = {}
        self.wakes = 0

    def initial_placement(self, ctx: PlacementContext) -> list[int]:
        choice = PLACEMENTS[self.options.placement](ctx)
        occupied = set(choice)
        self.agents = [self._make_agent(spec) for spec in ctx.hosts]
        o = self.options
        self.overlay = _Overlay([s.host_id for s in ctx.hosts], o.neighbours, self.rng, o.shuffle_length,
                                o.standby_entries_max)
        for a in self.agents:       # each agent learns from admission whether it holds anything
            self.overlay.board.publish(a.host_id, a.initial_entry(a.host_id in occupied))
            self.overlay.members.set_awake(a.host_id, a.host_id in occupied)
        return choice

    def on_interval(self, ctx: IntervalContext) -> list[Migration]:
        tick = ctx.tick
        overlay = self.overlay
        board = overlay.board
        awake = [a for a in self.agents if a.awake]
        for a in awake:
            board.publish(a.host_id, a.observe(ctx))
            overlay.members.set_awake(a.host_id, a.awake)
        awake = [a for a in awake if a.awake]
        for a in awake:
            overlay.refill(a.host_id)
            overlay.shuffle(a.host_id)
        self.rng.shuffle(awake)
        out: list[Migration] = []
        plans = refused = 0
        for a in awake:
            view = overlay.views[a.host_id]
            plan = a.decide(tick, board.read(a.host_id, sorted(view)))
            if plan is None:
                continue
            plans += 1
            moved, r = self._execute(ctx, a, plan)
            refused += r
            out.extend(moved)
        views = [overlay.views[a.host_id] for a in self.agents if a.awake]
        awake_entries = sum(sum(1 for j in v if self.agents[j].awake) for v in views)
        self.stats.append((tick, len(views), awake_entries / len(views) if views else 0.0, plans, refused))
        if self.on_round is not None:
            self.on_round(tick, self)
        return out

    def _execute(self, ctx: IntervalContext, src, plan: Plan) -> tuple[list[Migration], int]:
        tick = ctx.tick
        view = self.overlay.views[src.host_id]
        accepted: list[tuple[object, object]] = []
        refused = 0
        for move in plan.moves:
            offer = src.offer(move, plan.kind)
            for tid in move.targets:
                if tid not in view:
                    raise LeakError(f"agent {src.host_id} offered to {tid}, which is not in its view")
                tgt = self.agents[tid]
                if tgt.tick != tick:             # asleep: woken to answer, it first reads its own host
                    tgt.observe(ctx)
                was_awake = tgt.awake
                tviews = self.overlay.views[tid]
                if tgt.on_offer(tick, offer, self.overlay.board.read(tid, sorted(tviews))):
                    self.wakes += not was_awake
                    self.overlay.members.set_awake(tid, True)
                    accepted.append((tgt, offer))
                    self.overlay.contact(tid, src.host_id)
                    break
                refused += 1
            else:
                if plan.all_or_nothing:
                    for t, o in accepted:
                        t.on_cancel(o)
                    accepted = []
                    break
        src.on_moves_started(tick, plan, [o.domain_id for _, o in accepted])
        self.moves_by_kind[plan.kind] = self.moves_by_kind.get(plan.kind, 0) + len(accepted)
        return [Migration(o.domain_id, t.host_id) for t, o in accepted], refused


# --------------------------------------------------------------- registry

DECENTRALIZED_NAMES = ("balance", "consolidate")


def _parse_options(text: str) -> dict[str, str]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"option {part!r} is not key=value")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def _typed(cls, values: dict[str, str]) -> dict[str, object]:
    kinds = {f.name: f.type for f in fields(cls)}
    out: dict[str, object] = {}
    for k, v in values.items():
        kind = kinds[k]
        out[k] = int(v) if kind == "int" else float(v) if kind == "float" else v
    return out


def make_decentralized(name: str, rng: Random | None = None) -> DecentralizedPolicy:
    """``balance`` or ``consolidate``, optionally ``consolidate:key=value,...`` overriding
    ConsolidateConfig / AgentConfig fields or OverlayOptions (neighbours, shuffle_length,
    standby_entries_max, placement)."""
    base, _, opts = name.partition(":")
    values = _parse_options(opts)
    overlay_keys = {f.name for f in fields(OverlayOptions)}
    overlay = OverlayOptions(**_typed(OverlayOptions, {k: v for k, v in values.items() if k in overlay_keys}))
    rest = {k: v for k, v in values.items() if k not in overlay_keys}
    rng = rng if rng is not None else Random(0)
    if base == "consolidate":
        unknown = set(rest) - {f.name for f in fields(ConsolidateConfig)}
        if unknown:
            raise ValueError(f"unknown consolidate option(s) {sorted(unknown)}")
        config = ConsolidateConfig(**_typed(ConsolidateConfig, rest)).validate()
        return DecentralizedPolicy(name, lambda spec: _ConsolidateAgent(spec, config), rng, overlay)
    if base == "balance":
        unknown = set(rest) - {f.name for f in fields(AgentConfig)}
        if unknown:
            raise ValueError(f"unknown balance option(s) {sorted(unknown)}")
        config = AgentConfig(**_typed(AgentConfig, rest)).validate()
        return DecentralizedPolicy(name, lambda spec: _BalanceAgent(spec, config), rng, overlay)
    raise ValueError(f"unknown decentralized policy {base!r}; choose one of {', '.join(DECENTRALIZED_NAMES)}")
