"""CENTRALIZED reference policies without migration: CloudSim's ``npa`` and ``dvfs``.

Both place VMs first-fit at creation (PowerVmAllocationPolicySimple, which
scans every host) and never migrate. ``npa`` (no power awareness) charges
every host its peak power all day (PowerDatacenterNonPowerAware); ``dvfs``
charges the SPECpower curve, so an idle-but-on host draws idle power and a
host at 0 % draws nothing.
"""

from __future__ import annotations

from ..view import IntervalContext, Migration, PlacementContext
from .placement import first_fit


class NoMigrationPolicy:
    centralized = True

    def __init__(self, name: str, power_aware: bool) -> None:
        self.name = name
        self.power_aware = power_aware

    def initial_placement(self, ctx: PlacementContext) -> list[int]:
        return first_fit(ctx)

    def on_interval(self, ctx: IntervalContext) -> list[Migration]:
        return []
