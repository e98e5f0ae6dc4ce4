"""Initial placements at t = 0, when every VM asks for its full MIPS and RAM.

At creation CloudSim's Host.isSuitableForVm checks: one core holds the VM's
MIPS, the host's unreserved MIPS hold it, and RAM (4096 MB), bandwidth
(1 Gbit/s, 100 Mbit/s per VM) and storage still have room.
"""

from __future__ import annotations

from ..catalog import HOST_BW_KBIT_S, HOST_STORAGE_MB, VM_BW_KBIT_S, VM_SIZE_MB
from ..view import HostSpec, PlacementContext, VmSpec


class _Slot:
    __slots__ = ("spec", "available_mips", "allocated_mips", "ram_free_mb", "bw_free", "storage_free", "count")

    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec
        self.available_mips = float(spec.capacity_mips)
        self.allocated_mips = 0.0
        self.ram_free_mb = spec.ram_mb
        self.bw_free = HOST_BW_KBIT_S
        self.storage_free = HOST_STORAGE_MB
        self.count = 0

    def suits(self, vm: VmSpec) -> bool:
        return (self.spec.pe_mips >= vm.mips and self.available_mips >= vm.mips
                and self.ram_free_mb >= vm.ram_mb and self.bw_free >= VM_BW_KBIT_S
                and self.storage_free >= VM_SIZE_MB)

    def take(self, vm: VmSpec) -> None:
        self.available_mips -= vm.mips
        self.allocated_mips += vm.mips
        self.ram_free_mb -= vm.ram_mb
        self.bw_free -= VM_BW_KBIT_S
        self.storage_free -= VM_SIZE_MB
        self.count += 1


def _no_room(vm: VmSpec) -> ValueError:
    return ValueError(f"no host can create VM {vm.vm_id} ({vm.mips} MIPS, {vm.ram_mb} MB): add hosts")


def first_fit(ctx: PlacementContext) -> list[int]:
    """PowerVmAllocationPolicySimple (npa, dvfs): the first suitable host in id order."""
    slots = [_Slot(h) for h in ctx.hosts]
    out = []
    for vm in ctx.vms:
        for s in slots:
            if s.suits(vm):
                s.take(vm)
                out.append(s.spec.host_id)
                break
        else:
            raise _no_room(vm)
    return out


def power_aware(ctx: PlacementContext, creation_threshold: float = 0.8) -> list[int]:
    """PowerVmAllocationPolicyMigrationAbstract.findHostForVm at creation: least power increase.

    At t = 0 no host has been updated, so CloudSim's "power before" is every
    host's idle power and the increase is P((reserved + vm) / capacity) - P(0):
    an empty host always looks cheapest, so the VMs spread out first. The
    over-utilization check sees only the new VM's request (placed VMs request 0
    until their cloudlets start). Ties go to the lowest host id.
    """
    slots = [_Slot(h) for h in ctx.hosts]
    out = []
    for vm in ctx.vms:
        best = None
        best_diff = float("inf")
        seen_empty: set[str] = set()
        for s in slots:
            if s.count == 0:
                # Identical empty hosts give identical results: the first of each type decides.
                if s.spec.type_name in seen_empty:
                    continue
                seen_empty.add(s.spec.type_name)
            if not s.suits(vm):
                continue
            if s.allocated_mips != 0 and vm.mips / s.spec.capacity_mips > creation_threshold:
                continue
            power = s.spec.power
            diff = power.watts((s.allocated_mips + vm.mips) / s.spec.capacity_mips) - power.watts(0.0)
            if diff < best_diff:
                best_diff = diff
                best = s
        if best is None:
            raise _no_room(vm)
        best.take(vm)
        out.append(best.spec.host_id)
    return out


def least_loaded(ctx: PlacementContext) -> list[int]:
    """Worst fit (what a load balancer such as DRS does): the host with the lowest reserved fraction."""
    slots = [_Slot(h) for h in ctx.hosts]
    out = []
    for vm in ctx.vms:
        best = None
        best_key = None
        for s in slots:
            if not s.suits(vm):
                continue
            key = ((s.allocated_mips + vm.mips) / s.spec.capacity_mips, s.spec.host_id)
            if best_key is None or key < best_key:
                best, best_key = s, key
        if best is None:
            raise _no_room(vm)
        best.take(vm)
        out.append(best.spec.host_id)
    return out
