"""How a run is charged: CloudSim's accounting, or a strict one a real cluster would see.

``cloudsim`` reproduces CloudSim 3.0.3 including its quirks, so that results
compare line by line with ``cloudsim-3.0.3-results.csv``:

- RAM limits only the first placement. After creation a VM's requested RAM
  reads 0 (its RAM utilization model is UtilizationModelNull) and every
  optimization destroys and re-creates all VMs, so no host ever runs out of RAM.
- A host at 0 % CPU is "switched off" for free: it draws nothing, needs no
  time to come back, and no host ever sleeps with VMs on it at 0 % either.
- A migration costs no CPU beyond the VM's 10 % degradation and the
  destination's 10 % reservation.
- The destination counts the incoming VM's full request as *requested* but
  gives it 10 %, so every destination is in SLA violation while a migration
  lands (this is a large part of CloudSim's SLATAH).
- A VM whose trace reads exactly 0 % at a processing time (and is not
  migrating) is taken for finished and removed for the rest of the day
  (HostDynamicWorkload.getCompletedVms: "requested MIPS == 0"). With ticks at
  300.1 s, 600.1 s, ... this happens when two consecutive samples are 0; by
  the end of 20110303 about a third of the VMs are gone, which is why
  CloudSim's dvfs uses 765 kWh and not the ~930 kWh its placement implies.
- The meter starts at the first tick (300.1 s): the interval [0, 300.1] counts
  neither energy nor SLA, and the run ends with the last tick before 24 h
  (86 100.1 s) plus the migrations it started.

``strict`` keeps the same workload, decisions and migration timing, and charges:

- RAM at every placement and migration: a VM holds its full RAM on its host,
  and a migration reserves it on the destination from the start; the engine
  rejects migrations that do not fit (``Result.migrations_rejected``).
- Standby: a host with no VM (not even incoming) is suspended and draws
  ``standby_power_w``; a host with VMs draws at least its idle power even if
  they are at 0 %.
- Waking: a migration to a sleeping host waits ``wake_time_s`` (the host draws
  its peak power meanwhile) before the copy starts.
- Migration CPU: both ends spend ``migration_cpu_pe_fraction`` of one core for
  the whole copy (dom0 moving pages at 62.5 MB/s), counted in energy and taken
  from the CPU the VMs share.
- The destination's requested CPU for an incoming VM is its 10 % reservation,
  so a destination is in violation only if it really cannot serve its VMs.
- A VM at 0 % is idle, not finished: it stays on its host all day.
- The meter runs over the whole day, from 0 to 24 h.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .catalog import MIGRATION_BANDWIDTH_MB_S


@dataclass(frozen=True, slots=True)
class Accounting:
    name: str
    # RAM charged at every placement and migration (False: only at creation, CloudSim's quirk).
    ram_enforced: bool
    # A host at 0 % CPU draws nothing (CloudSim); else an empty host sleeps and draws standby power.
    zero_util_is_off: bool
    # Destination's requested CPU for an incoming VM: its full request (CloudSim) or its 10 % reservation.
    dst_requests_full: bool
    # Meter from t = 0 to the end of the day instead of from the first tick to the last.
    meter_whole_day: bool
    # A VM requesting 0 MIPS at a processing time is removed for good (CloudSim's getCompletedVms).
    zero_demand_ends_vm: bool = False
    # Suspend-to-RAM (ACPI S3) draw of a 1-socket server with 4 GB; typical measured values are 5-15 W.
    standby_power_w: float = 0.0
    # Resume from S3 plus hypervisor readiness; booting from S5 would take minutes.
    wake_time_s: float = 0.0
    # dom0 copying pages at 62.5 MB/s keeps a fraction of one core busy on each end.
    migration_cpu_pe_fraction: float = 0.0
    # Half of the 1 Gbit/s link (CloudSim: bw / (2 * 8000)).
    migration_bandwidth_mb_s: float = MIGRATION_BANDWIDTH_MB_S
    # The migrating VM gets 90 % of what it requests (CloudSim's 10 % degradation).
    migration_degradation: float = 0.1
    # The destination reserves 10 % of the migrating VM's MIPS.
    migration_reservation: float = 0.1

    def validate(self) -> "Accounting":
        if self.standby_power_w < 0 or self.wake_time_s < 0:
            raise ValueError("standby_power_w and wake_time_s must be >= 0")
        if not 0 <= self.migration_cpu_pe_fraction <= 1:
            raise ValueError("migration_cpu_pe_fraction must be within [0, 1] (a fraction of one core)")
        if self.migration_bandwidth_mb_s <= 0:
            raise ValueError("migration_bandwidth_mb_s must be > 0")
        if self.zero_util_is_off and (self.standby_power_w or self.wake_time_s):
            raise ValueError("standby power and wake time apply only when a host at 0 % is not free")
        if (self.migration_degradation, self.migration_reservation) != (0.1, 0.1):
            # The engine hard-codes CloudSim's 0.9 / 0.1 factors to keep its doubles identical to Java's.
            raise ValueError("migration_degradation and migration_reservation are fixed at 0.1")
        return self

    def with_(self, **changes) -> "Accounting":
        return replace(self, **changes).validate()


CLOUDSIM = Accounting(name="cloudsim", ram_enforced=False, zero_util_is_off=True, dst_requests_full=True,
                      meter_whole_day=False, zero_demand_ends_vm=True).validate()

STRICT = Accounting(name="strict", ram_enforced=True, zero_util_is_off=False, dst_requests_full=False,
                    meter_whole_day=True, standby_power_w=10.0, wake_time_s=30.0,
                    migration_cpu_pe_fraction=0.2).validate()

ACCOUNTINGS = {a.name: a for a in (CLOUDSIM, STRICT)}


def accounting_by_name(name: str | Accounting) -> Accounting:
    if isinstance(name, Accounting):
        return name.validate()
    try:
        return ACCOUNTINGS[name]
    except KeyError:
        raise ValueError(f"unknown accounting {name!r}; choose one of {sorted(ACCOUNTINGS)}") from None
