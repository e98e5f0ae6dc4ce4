"""The metrics of Beloglazov & Buyya (2012), computed as CloudSim 3.0.3's Helper does.

CloudSim records a *state entry* for every host and every VM at each
processing time (ticks every 300 s and migration completions); an entry holds
(time, allocated MIPS, requested MIPS, flag), and a later entry at the same
time replaces it. Every metric integrates these entries as step functions,
the value of an entry holding until the next one:

- SLATAH = sum over hosts of the time an *active* entry (flag = allocated > 0)
  had allocated < requested, divided by the total time of active entries
  (pooled over hosts: Helper.getSlaTimePerActiveHost).
- PDM = sum over VMs of (requested - allocated) x time over entries flagged
  "in migration" (at the source), divided by all requested MIPS x time
  (pooled over VMs: Helper.getSlaMetrics "underallocated_migration").
- Overall SLA violation = (requested - allocated) / requested, both integrated
  over all VM entries (Helper.getSlaMetrics "overall").
- SLAV = SLATAH x PDM; ESV = energy (kWh) x SLAV.

Energy is not a step function: per host and per interval between two
processing times it is the mean of the power at the start and at the end
times the interval (PowerHost.getEnergyLinearInterpolation), and nothing at
all when the host's utilization at the start was 0 ("switched off").
"""

from __future__ import annotations

from .catalog import PowerModel

J_PER_KWH = 3_600_000.0


def interval_energy_j(power: PowerModel, util_from: float, util_to: float, dt_s: float,
                      zero_is_off: bool = True) -> float:
    """PowerHost.getEnergyLinearInterpolation: trapezoid of the SPECpower curve; 0 if the host was off."""
    if zero_is_off and util_from == 0:
        return 0.0
    p_from = power.watts(util_from)
    p_to = power.watts(util_to)
    return (p_from + (p_to - p_from) / 2) * dt_s


class HostMeter:
    """Integrates one host's state entries into active time and SLA-violation time."""

    __slots__ = ("t", "allocated", "requested", "active", "active_s", "violation_s", "shutdowns",
                 "_final_active")

    def __init__(self) -> None:
        self.t: float | None = None
        self.allocated = 0.0
        self.requested = 0.0
        self.active = False
        self.active_s = 0.0
        self.violation_s = 0.0
        self.shutdowns = 0          # Helper.getTimesBeforeHostShutdown().size(): active -> inactive
        self._final_active = True   # CloudSim starts counting as if every host were on

    def record(self, t: float, allocated: float, requested: float, active: bool) -> None:
        prev_t = self.t
        if prev_t is not None and t != prev_t:
            self._finalize()
            if self.active:
                dt = t - prev_t
                self.active_s += dt
                if self.allocated < self.requested:
                    self.violation_s += dt
        self.t = t
        self.allocated = allocated
        self.requested = requested
        self.active = active

    def _finalize(self) -> None:
        if self._final_active and not self.active:
            self.shutdowns += 1
        self._final_active = self.active

    def close(self) -> None:
        """The last entry is final too (for the shutdown count)."""
        if self.t is not None:
            self._finalize()
            self.t = None


class VmMeter:
    """Integrates one VM's state entries into requested, allocated and migration-shortfall MIPS x s."""

    __slots__ = ("t", "allocated", "requested", "migrating", "requested_mips_s", "allocated_mips_s",
                 "migration_shortfall_mips_s")

    def __init__(self) -> None:
        self.t: float | None = None
        self.allocated = 0.0
        self.requested = 0.0
        self.migrating = False
        self.requested_mips_s = 0.0
        self.allocated_mips_s = 0.0
        self.migration_shortfall_mips_s = 0.0

    def record(self, t: float, allocated: float, requested: float, migrating: bool) -> None:
        prev_t = self.t
        if prev_t is not None and t != prev_t:
            dt = t - prev_t
            self.allocated_mips_s += self.allocated * dt
            self.requested_mips_s += self.requested * dt
            if self.migrating:
                self.migration_shortfall_mips_s += (self.requested - self.allocated) * dt
        self.t = t
        self.allocated = allocated
        self.requested = requested
        self.migrating = migrating


def slatah(hosts: list[HostMeter]) -> float:
    active = sum(h.active_s for h in hosts)
    return sum(h.violation_s for h in hosts) / active if active > 0 else 0.0


def pdm(vms: list[VmMeter]) -> float:
    requested = sum(v.requested_mips_s for v in vms)
    return sum(v.migration_shortfall_mips_s for v in vms) / requested if requested > 0 else 0.0


def sla_overall(vms: list[VmMeter]) -> float:
    requested = sum(v.requested_mips_s for v in vms)
    allocated = sum(v.allocated_mips_s for v in vms)
    return (requested - allocated) / requested if requested > 0 else 0.0
