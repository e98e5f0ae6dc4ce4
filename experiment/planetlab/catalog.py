"""The machines of CloudSim 3.0.3's power examples: host types, VM types, power tables.

Values are those of ``org.cloudbus.cloudsim.examples.power.Constants`` and the
``PowerModelSpecPowerHpProLiantMl110G4Xeon3040`` / ``...G5Xeon3075`` classes
(SPECpower_ssj2008 results), as listed in shared/BENCHMARKS.md section 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Half of the 1 Gbit/s link carries migrations (CloudSim: bw / (2 * 8000) with bw = 1e6 kbit/s).
MIGRATION_BANDWIDTH_MB_S = 1_000_000 / (2 * 8000)  # 62.5
HOST_BW_KBIT_S = 1_000_000
VM_BW_KBIT_S = 100_000          # each VM asks for 100 Mbit/s at creation
HOST_STORAGE_MB = 1_000_000
VM_SIZE_MB = 2_500


@dataclass(frozen=True, slots=True)
class PowerModel:
    """Linear interpolation in a SPECpower table of 11 points (0 %, 10 %, ..., 100 % CPU).

    ``watts`` repeats PowerModelSpecPower.getPower() operation for operation
    (same doubles as Java), so energies compare bit for bit with CloudSim's.
    """

    name: str
    table_w: tuple[float, ...]

    def watts(self, utilization: float) -> float:
        if utilization < 0 or utilization > 1:
            raise ValueError(f"utilization {utilization!r} outside [0, 1]")
        data = self.table_w
        if math.fmod(utilization, 0.1) == 0:
            return data[int(utilization * 10)]
        u1 = math.floor(utilization * 10)
        u2 = math.ceil(utilization * 10)
        p1 = data[u1]
        p2 = data[u2]
        delta = (p2 - p1) / 10
        return p1 + delta * (utilization - u1 / 10) * 100

    @property
    def idle_w(self) -> float:
        return self.table_w[0]

    @property
    def max_w(self) -> float:
        return self.table_w[-1]


@dataclass(frozen=True, slots=True)
class HostType:
    name: str
    pes: int
    pe_mips: float
    ram_mb: int
    power: PowerModel

    @property
    def total_mips(self) -> float:
        return float(self.pes * int(self.pe_mips))


@dataclass(frozen=True, slots=True)
class VmType:
    mips: float
    ram_mb: int
    pes: int = 1


G4_POWER = PowerModel("HP ProLiant ML110 G4 (Xeon 3040)",
                      (86.0, 89.4, 92.6, 96.0, 99.5, 102.0, 106.0, 108.0, 112.0, 114.0, 117.0))
G5_POWER = PowerModel("HP ProLiant ML110 G5 (Xeon 3075)",
                      (93.7, 97.0, 101.0, 105.0, 110.0, 116.0, 121.0, 125.0, 129.0, 133.0, 135.0))

HOST_TYPES: tuple[HostType, ...] = (
    HostType("G4", 2, 1860.0, 4096, G4_POWER),
    HostType("G5", 2, 2660.0, 4096, G5_POWER),
)

VM_TYPES: tuple[VmType, ...] = (
    VmType(2500.0, 870),
    VmType(2000.0, 1740),
    VmType(1000.0, 1740),
    VmType(500.0, 613),
)


def host_type_for(index: int) -> HostType:
    """Host i has type i % 2 (CloudSim Helper.createHostList)."""
    return HOST_TYPES[index % len(HOST_TYPES)]


def vm_type_for(index: int, vm_count: int) -> VmType:
    """VM i has type i // ceil(N / 4) (CloudSim PlanetLabHelper / Helper.createVmList)."""
    return VM_TYPES[index // math.ceil(vm_count / len(VM_TYPES))]


def migration_time_s(ram_mb: float, bandwidth_mb_s: float = MIGRATION_BANDWIDTH_MB_S) -> float:
    """CloudSim: vm.getRam() / ((double) targetHost.getBw() / (2 * 8000))."""
    return ram_mb / bandwidth_mb_s
