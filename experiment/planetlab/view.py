"""What a policy sees and what it returns (see engine.py for the whole API).

Views are frozen snapshots built on demand, host by host: a policy is handed
an ``IntervalContext`` and asks it for the hosts it is allowed to know. A
centralized policy asks for all of them; a decentralized agent asks only for
its own host and its neighbours, and the engine counts what was read
(``IntervalContext.views_read``) so a run can show how much each policy knew.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from .catalog import PowerModel

@dataclass(frozen=True, slots=True)
class VmSpec:
    """A VM before placement: its size."""

    vm_id: int
    name: str           # the trace file it replays
    mips: float         # one core of this many MIPS
    ram_mb: int


@dataclass(frozen=True, slots=True)
class HostSpec:
    """A host's fixed capacity and power curve."""

    host_id: int
    type_name: str
    pes: int
    pe_mips: float
    capacity_mips: float
    ram_mb: int
    power: PowerModel


@dataclass(frozen=True, slots=True)
class VmView:
    """One VM as listed on one host (a migrating VM is listed on its source and its destination)."""

    vm_id: int
    mips: float
    ram_mb: int
    # RAM a placement of this VM charges a host under the run's accounting
    # (0 under ``cloudsim``: after creation CloudSim never checks RAM again).
    ram_charged_mb: int
    requested_mips: float     # current demand: trace utilization x mips, uncapped
    allocated_mips: float     # what this host's scheduler gave it at the last update
    host_id: int              # the host it runs on (its source while migrating)
    migrating: bool           # a migration of this VM is in flight
    incoming: bool            # listed here as the destination of that migration
    # Utilization (fraction of mips) sampled at past ticks, newest first, at most 30.
    history: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class HostView:
    """One host as a monitor on it would report it at the current tick."""

    host_id: int
    type_name: str
    pes: int
    pe_mips: float
    capacity_mips: float
    ram_mb: int
    ram_free_mb: int
    power: PowerModel
    state: str                # "on", "standby" (strict accounting) or "waking"
    utilization: float        # allocated / capacity at the last update (CloudSim's getUtilizationOfCpu)
    requested_mips: float     # sum of the listed VMs' requests (incoming ones included)
    allocated_mips: float     # sum of what they got (a migrating-out VM counted at its full share)
    vms: tuple[VmView, ...]   # in the host's list order; CloudSim's ties follow this order


@dataclass(frozen=True, slots=True)
class Migration:
    """Move ``vm_id`` to ``dst_host_id``; it runs on its source until the copy completes."""

    vm_id: int
    dst_host_id: int


@dataclass(frozen=True, slots=True)
class PlacementContext:
    """Input of the initial placement at t = 0 (every VM asks for its full MIPS and RAM)."""

    vms: tuple[VmSpec, ...]
    hosts: tuple[HostSpec, ...]
    ram_enforced: bool


class IntervalContext:
    """Handed to ``Policy.on_interval`` every 300 s; builds host views lazily and counts them."""

    def __init__(self, now_s: float, tick: int, interval_s: float, host_ids: tuple[int, ...],
                 ram_enforced: bool, migration_bandwidth_mb_s: float,
                 build_view: Callable[[int], HostView]) -> None:
        self.now_s = now_s
        self.tick = tick
        self.interval_s = interval_s
        self.host_ids = host_ids
        self.ram_enforced = ram_enforced
        self.migration_bandwidth_mb_s = migration_bandwidth_mb_s
        self._build_view = build_view
        self._cache: dict[int, HostView] = {}

    @property
    def views_read(self) -> int:
        """Distinct hosts whose view was read during this interval."""
        return len(self._cache)

    def host(self, host_id: int) -> HostView:
        view = self._cache.get(host_id)
        if view is None:
            view = self._build_view(host_id)
            self._cache[host_id] = view
        return view

    def hosts(self, host_ids: Sequence[int] | None = None) -> tuple[HostView, ...]:
        """Views of ``host_ids`` (all hosts if None: only a centralized policy should do that)."""
        ids = self.host_ids if host_ids is None else host_ids
        return tuple(self.host(h) for h in ids)


class Policy(Protocol):
    """A consolidation policy the engine can run."""

    name: str
    centralized: bool   # reads every host's view each interval
    power_aware: bool   # False: every host draws its peak power all day (CloudSim's "npa")

    def initial_placement(self, ctx: PlacementContext) -> Sequence[int]:
        """Host id for each VM of ``ctx.vms``, in order."""
        ...

    def on_interval(self, ctx: IntervalContext) -> Sequence[Migration]:
        """Migrations to start now, applied in the order given."""
        ...
