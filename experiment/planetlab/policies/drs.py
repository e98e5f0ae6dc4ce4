"""CENTRALIZED reference policy: a greedy load balancer in the manner of VMware DRS.

Every interval it reads all hosts, computes each host's load (sum of its VMs'
demand / capacity; an incoming VM counts at the destination) and, while the
standard deviation of the loads exceeds ``target_std``, applies the single
move that lowers the sum of squared loads the most (equivalently the
variance), among VMs of the ``fanout`` most loaded hosts and destinations
among the ``fanout`` least loaded ones. A move must fit (one core holds the
VM's demand, RAM charged by the accounting, the destination stays at or
below ``max_load``) and gain at least ``min_gain``. At most
``max_moves_per_interval`` moves per interval and ``per_host_migrations_max``
per host (vMotion's limit on 1 GbE is 4 concurrent per host).

There is no power management (no DPM): hosts are never emptied on purpose.
Initial placement is worst fit (least reserved host first).
"""

from __future__ import annotations

import math

from ..view import IntervalContext, Migration, PlacementContext
from .placement import least_loaded


class DrsPolicy:
    centralized = True
    power_aware = True

    def __init__(self, target_std: float = 0.05, fanout: int = 8, max_moves_per_interval: int = 32,
                 per_host_migrations_max: int = 4, max_load: float = 0.8, min_gain: float = 1e-4) -> None:
        self.name = "drs"
        self.target_std = target_std
        self.fanout = fanout
        self.max_moves_per_interval = max_moves_per_interval
        self.per_host_migrations_max = per_host_migrations_max
        self.max_load = max_load
        self.min_gain = min_gain

    def initial_placement(self, ctx: PlacementContext) -> list[int]:
        return least_loaded(ctx)

    def on_interval(self, ctx: IntervalContext) -> list[Migration]:
        views = [v for v in ctx.hosts() if v.state == "on"]
        if len(views) < 2:
            return []
        cap = {v.host_id: v.capacity_mips for v in views}
        pe = {v.host_id: v.pe_mips for v in views}
        ram_free = {v.host_id: v.ram_free_mb for v in views}
        demand = {v.host_id: sum(vm.requested_mips for vm in v.vms) for v in views}
        movable = {v.host_id: [vm for vm in v.vms if not vm.migrating] for v in views}
        moves_on = {v.host_id: 0 for v in views}
        n = len(views)
        out: list[Migration] = []
        for _ in range(self.max_moves_per_interval):
            loads = {hid: demand[hid] / cap[hid] for hid in cap}
            mean = sum(loads.values()) / n
            std = math.sqrt(sum((x - mean) ** 2 for x in loads.values()) / n)
            if std <= self.target_std:
                break
            ranked = sorted(loads, key=lambda hid: (loads[hid], hid))
            sources = [hid for hid in reversed(ranked) if moves_on[hid] < self.per_host_migrations_max][:self.fanout]
            dests = [hid for hid in ranked if moves_on[hid] < self.per_host_migrations_max][:self.fanout]
            best = None
            best_gain = self.min_gain
            for s in sources:
                ls = loads[s]
                for vm in movable[s]:
                    d_mips = vm.requested_mips
                    if d_mips <= 0:
                        continue
                    for d in dests:
                        if d == s or pe[d] < d_mips or ram_free[d] < vm.ram_charged_mb:
                            continue
                        ld = loads[d]
                        new_s = ls - d_mips / cap[s]
                        new_d = ld + d_mips / cap[d]
                        if new_d > self.max_load:
                            continue
                        gain = ls * ls + ld * ld - new_s * new_s - new_d * new_d
                        if gain > best_gain:
                            best_gain = gain
                            best = (s, vm, d)
            if best is None:
                break
            s, vm, d = best
            movable[s].remove(vm)
            demand[s] -= vm.requested_mips
            demand[d] += vm.requested_mips
            ram_free[d] -= vm.ram_charged_mb
            ram_free[s] += vm.ram_charged_mb
            moves_on[s] += 1
            moves_on[d] += 1
            out.append(Migration(vm.vm_id, d))
        return out
