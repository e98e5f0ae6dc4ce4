"""The outcome of one run, in fractions (CloudSim's "SLA 0.00357 %" is slav = 3.57e-5)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .engine import IntervalStats


@dataclass(frozen=True, slots=True)
class Result:
    day: str
    policy: str
    hosts: int
    vms: int
    energy_kwh: float
    migrations: int              # migrations started
    slatah: float                # SLA violation time per active host (fraction)
    pdm: float                   # performance degradation due to migration (fraction)
    slav: float                  # slatah x pdm
    esv: float                   # energy_kwh x slav
    sla_overall: float           # CPU not served / CPU requested, over all VMs
    wall_seconds: float
    timeline: tuple[IntervalStats, ...]
    accounting: str = "cloudsim"
    centralized: bool = True
    migrations_rejected: int = 0
    host_shutdowns: int = 0                # CloudSim's "number of host shutdowns"
    vms_finished: int = 0                  # VMs CloudSim retired for reading 0 % (cloudsim accounting)
    host_views_per_interval: float = 0.0   # how many hosts the policy read per interval
    simulated_s: float = 0.0
    seed: int = 0
    view_lag_ticks: int = 0                # 1: decisions saw the previous tick's sample only

    def to_dict(self) -> dict:
        d = asdict(self)
        d["timeline"] = [asdict(s) for s in self.timeline]
        return d

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Result":
        d = json.loads(text)
        d["timeline"] = tuple(IntervalStats(**s) for s in d["timeline"])
        return cls(**d)

    def summary_row(self) -> str:
        return (f"{self.day} {self.policy:<12} {self.accounting:<8} {self.energy_kwh:9.2f} kWh "
                f"{self.migrations:7d} mig  SLATAH {self.slatah * 100:6.2f} %  PDM {self.pdm * 100:5.2f} %  "
                f"SLAV {self.slav:.3g}  ESV {self.esv:.3g}  SLA {self.sla_overall * 100:6.3f} %  "
                f"{self.wall_seconds:6.1f} s")
