"""The local balancing rule ("balance", DESIGN.md).

Theory of operation
-------------------
A node acts only on what it knows: its own domains and load, the fresh gossip
entries of its neighbours, and the push-pull estimate of the cluster mean. It
is *overloaded* when its CPU utilization (demand / capacity, which may exceed
1.0) is above the high watermark, or above the estimated mean by more than the
margin. Then it considers every (domain, neighbour) pair and keeps the moves
that strictly lower the larger utilization of the pair, by at least
`improvement_min`:

    max(u_src - d/C_src, u_tgt + d/C_tgt) < max(u_src, u_tgt) - improvement_min

Each such move replaces the pair's larger utilization by two smaller ones, so
the vector of all utilizations sorted high to low falls lexicographically (with
equal capacities, the sum of squares falls too): no sequence of accepted moves
can cycle (no ping-pong), and the system converges. Among them
it prefers the cheapest migration (least estimated pre-copy time: memory size
and dirty rate, the MMT rule of Beloglazov & Buyya), then the neighbour that
ends lowest. The target re-checks the same
inequality against its live state including reservations (`improves`), which
is what keeps many sources from piling onto one stale-looking neighbour.

Pure: no clock, no I/O; the caller passes a snapshot and gets a proposal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from agent.core.config import AgentConfig


@dataclass(frozen=True)
class DomainLoad:
    domain_id: str
    demand_cores: float
    memory_mib: int
    vcpus: int
    movable: bool = True  # False while cooling down, migrating or paused
    # Estimated migration time (pre-copy model); None: memory at 1 GiB/s (plain MMT).
    cost_s: float | None = None

    @property
    def migration_cost_s(self) -> float:
        return self.cost_s if self.cost_s is not None else self.memory_mib / 1024


@dataclass(frozen=True)
class LocalView:
    node_id: str
    cpu_capacity_cores: float
    cpu_demand_cores: float  # already net of outgoing migrations in flight
    domains: tuple[DomainLoad, ...]
    migrations_out_inflight: int

    @property
    def cpu_utilization(self) -> float:
        return self.cpu_demand_cores / self.cpu_capacity_cores


@dataclass(frozen=True)
class Neighbour:
    node_id: str
    cpu_capacity_cores: float
    cpu_demand_cores: float  # as gossiped, plus what we sent it since
    memory_free_mib: float
    vcpus_free: float
    migrations_inflight: int = 0


@dataclass(frozen=True)
class Proposal:
    domain_id: str
    target_id: str
    source_utilization_after: float
    target_utilization_after: float
    reason: str


def kept_together(groups: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Of a host's (domain id, affinity group) pairs, the domains the rule may not move: those
    whose group has another member on the host (moving one alone would split the group).
    A group's last member here may move (to where it would be alone anyway)."""
    members: dict[str, list[str]] = {}
    for domain_id, group in groups:
        if group:
            members.setdefault(group, []).append(domain_id)
    return frozenset(d for ids in members.values() if len(ids) > 1 for d in ids)


def improves(src_demand: float, src_capacity: float, tgt_demand: float, tgt_capacity: float,
             moved_demand: float, improvement_min: float) -> bool:
    """True when moving `moved_demand` lowers max(u_src, u_tgt) by improvement_min."""
    before = max(src_demand / src_capacity, tgt_demand / tgt_capacity)
    after = max((src_demand - moved_demand) / src_capacity, (tgt_demand + moved_demand) / tgt_capacity)
    return after < before - improvement_min


def overload_reason(utilization: float, mean_estimate: float | None, config: AgentConfig) -> str | None:
    if utilization > config.high_watermark:
        return f"utilization {utilization:.2f} above high watermark {config.high_watermark:.2f}"
    if mean_estimate is not None and utilization > mean_estimate + config.mean_margin:
        return (f"utilization {utilization:.2f} above cluster mean {mean_estimate:.2f} "
                f"+ margin {config.mean_margin:.2f}")
    return None


class BalancePolicy:
    name = "balance"

    def __init__(self, config: AgentConfig) -> None:
        self.config = config

    def decide(self, view: LocalView, neighbours: list[Neighbour],
               mean_estimate: float | None) -> Proposal | None:
        """The best move, or None when the node is fine or nothing helps."""
        ranked = self.candidates(view, neighbours, mean_estimate)
        return ranked[0] if ranked else None

    def candidates(self, view: LocalView, neighbours: list[Neighbour],
                   mean_estimate: float | None) -> list[Proposal]:
        """Every helpful move, best first: cheapest domain, then lowest ending target."""
        if view.migrations_out_inflight >= self.config.migrations_out_max:
            return []
        why = overload_reason(view.cpu_utilization, mean_estimate, self.config)
        if why is None:
            return []
        ranked: list[tuple[tuple[float, float, float, str, str], Proposal]] = []
        for dom in view.domains:
            if not dom.movable or dom.demand_cores <= 0:
                continue
            for nb in neighbours:
                if nb.migrations_inflight >= self.config.migrations_in_max:
                    continue
                if nb.memory_free_mib < dom.memory_mib or nb.vcpus_free < dom.vcpus:
                    continue
                if not improves(view.cpu_demand_cores, view.cpu_capacity_cores, nb.cpu_demand_cores,
                                nb.cpu_capacity_cores, dom.demand_cores, self.config.improvement_min):
                    continue
                tgt_after = (nb.cpu_demand_cores + dom.demand_cores) / nb.cpu_capacity_cores
                src_after = (view.cpu_demand_cores - dom.demand_cores) / view.cpu_capacity_cores
                key = (dom.migration_cost_s, tgt_after, -dom.demand_cores, dom.domain_id, nb.node_id)
                ranked.append((key, Proposal(dom.domain_id, nb.node_id, src_after, tgt_after, why)))
        ranked.sort(key=lambda kp: kp[0])
        return [p for _, p in ranked]
