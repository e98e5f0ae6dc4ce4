"""CENTRALIZED reference policies: CloudSim 3.0.3's THR-MMT and LR-MMT (Beloglazov & Buyya 2012).

These read every host of the cluster each interval (``ctx.hosts()``); they are
the baseline Shoal's neighbour-only agents are measured against.

One ``on_interval`` is PowerVmAllocationPolicyMigrationAbstract.optimizeAllocation
replayed on a scratch copy of the views (CloudSim's saveAllocation /
restoreAllocation: the tentative moves never touch the engine):

1. ``getOverUtilizedHosts``: every host, in id order, whose detector fires.
   THR: requested MIPS / capacity > threshold (0.8). LR: a least-squares line
   through the host's last 10 utilization samples (the sum of its VMs'
   histories) predicts the next one plus the migration time (in intervals,
   rounded up); over-utilized if prediction x safety (1.2) >= 1. With fewer
   than 10 samples LR falls back to THR with threshold 0.7.
2. ``getVmsToMigrateFromHosts``: from each over-utilized host remove the VM
   with the least RAM (MMT; first in list order on ties), again and again
   until the host is no longer over-utilized.
3. ``getNewVmPlacement``: sort those VMs by current MIPS, decreasing (stable),
   and give each the host with the least power increase
   (``findHostForVm``), skipping over-utilized hosts, unsuitable hosts (one
   core must hold the request, the scheduler's free MIPS too) and hosts that
   would become over-utilized (unless they currently use no CPU). The power
   increase is P(after) - P(utilization at the tick), the latter stale while
   VMs are tentatively added, so a switched-off host only costs its slope.
4. ``getMigrationMapFromUnderUtilizedHosts``: repeatedly take the active host
   with the lowest utilization at the tick (excluding over-utilized,
   switched-off and already chosen hosts, and the targets of step 4), and try
   to move all its VMs elsewhere among active hosts not yet chosen; if one
   VM finds no host the whole host stays.

Fidelity notes (where this follows CloudSim's code rather than its intent):
- In step 4 CloudSim means to exclude step 3's targets from being emptied,
  but passes an empty map, so a step-3 target can be emptied in step 4 and a
  VM can appear twice in the returned list (it ends on the second
  destination and both migrations count). Reproduced.
- Utilization history values include zeros (PowerVm adds every tick's value
  once the clock is past 0).
- The regression is ordinary least squares (CloudSim's tricube "weights" are
  all positive, so its weighted branch is never taken); rounding may differ
  from Apache Commons Math's QR solver in the last bits.
"""

from __future__ import annotations

import bisect
import math
from typing import Sequence

from ..view import HostView, IntervalContext, Migration, PlacementContext
from .placement import power_aware

_LR_WINDOW = 10           # PowerVmAllocationPolicyMigrationLocalRegression: 10 samples
_LR_X_MEAN = 5.5          # x = 1..10
_LR_SXX = 82.5            # sum (x - 5.5)^2


class _SVm:
    __slots__ = ("vm_id", "req", "mips", "ram", "charged", "in_migration", "hist", "hist_len", "_lr")

    def __init__(self, vm_id: int, req: float, mips: float, ram: int, charged: int, in_migration: bool,
                 hist: tuple[float, ...]) -> None:
        self.vm_id = vm_id
        self.req = req
        self.mips = mips
        self.ram = ram
        self.charged = charged
        self.in_migration = in_migration
        self.hist = hist
        n = len(hist)
        while n > 0 and hist[n - 1] == 0:
            n -= 1
        self.hist_len = n        # MathUtil.trimZeroTail of this VM's share of a host history
        self._lr: dict[float, tuple[float, float]] = {}

    def lr_terms(self, host_total: float) -> tuple[float, float]:
        """This VM's part of sum(y) and sum((x - 5.5) y) over a host's last 10 samples."""
        terms = self._lr.get(host_total)
        if terms is None:
            sy = 0.0
            sxy = 0.0
            for i, h in enumerate(self.hist[:_LR_WINDOW]):
                v = h * self.mips / host_total     # PowerHostUtilizationHistory.getUtilizationHistory
                sy += v
                sxy += (4.5 - i) * v               # sample i (newest first) sits at x = 10 - i
            terms = (sy, sxy)
            self._lr[host_total] = terms
        return terms


class _SHost:
    __slots__ = ("host_id", "pe", "total", "power", "stale_util", "stale_power", "vms", "incoming",
                 "ram_free", "alloc_sum", "available", "req_sum", "lr_sy", "lr_sxy", "lr_len", "max_ram",
                 "group")

    def __init__(self, view: HostView) -> None:
        self.host_id = view.host_id
        self.pe = view.pe_mips
        self.total = view.capacity_mips
        self.power = view.power
        self.stale_util = view.utilization
        self.stale_power = view.power.watts(view.utilization)
        self.vms: list[_SVm] = []
        self.incoming: set[int] = {v.vm_id for v in view.vms if v.incoming}
        self.ram_free = view.ram_free_mb
        self.group = (view.type_name, view.ram_free_mb, view.state)


class CloudSimMigrationPolicy:
    """THR-MMT or LR-MMT exactly as CloudSim 3.0.3 runs them. CENTRALIZED: reads every host."""

    centralized = True
    power_aware = True

    def __init__(self, detector: str = "thr", threshold: float = 0.8, safety: float = 1.2,
                 fallback_threshold: float = 0.7) -> None:
        if detector not in ("thr", "lr"):
            raise ValueError("detector must be 'thr' or 'lr'")
        self.detector = detector
        self.threshold = threshold
        self.safety = safety
        self.fallback_threshold = fallback_threshold
        self.name = f"thr-mmt-{threshold:g}" if detector == "thr" else f"lr-mmt-{safety:g}"
        self._bw = 62.5
        self._interval = 300.0

    # ----------------------------------------------------------- placement

    def initial_placement(self, ctx: PlacementContext) -> list[int]:
        # At creation LR has no history and uses its fallback threshold.
        return power_aware(ctx, self.threshold if self.detector == "thr" else self.fallback_threshold)

    # ----------------------------------------------------------- detection

    def _thr_over(self, h: _SHost, extra: _SVm | None, threshold: float) -> bool:
        req = h.req_sum + extra.req if extra is not None else h.req_sum
        return req / h.total > threshold

    def _over(self, h: _SHost, extra: _SVm | None = None) -> bool:
        """isHostOverUtilized(host), with ``extra`` tentatively created on it."""
        if self.detector == "thr":
            return self._thr_over(h, extra, self.threshold)
        length = h.lr_len
        sy = h.lr_sy
        sxy = h.lr_sxy
        max_ram = h.max_ram
        if extra is not None:
            length = max(length, extra.hist_len)
            esy, esxy = extra.lr_terms(h.total)
            sy += esy
            sxy += esxy
            max_ram = max(max_ram, extra.ram)
        if length < _LR_WINDOW:
            return self._thr_over(h, extra, self.fallback_threshold)
        # getMaximumVmMigrationTime / scheduling interval, rounded up (1 for these VM sizes).
        intervals = math.ceil(max_ram / self._bw / self._interval)
        slope = sxy / _LR_SXX
        predicted = sy / _LR_WINDOW + slope * (_LR_WINDOW + intervals - _LR_X_MEAN)
        return predicted * self.safety >= 1

    # ------------------------------------------------------ scratch state

    def _recompute(self, h: _SHost) -> None:
        """The scheduler's allocation after vmCreate/vmDestroy, and the sums the checks read."""
        total = h.total
        pe = h.pe
        incoming = h.incoming
        available = total
        over = False
        sum_tr = 0.0
        caps = []
        req_sum = 0.0
        for vm in h.vms:
            r = vm.req
            req_sum += r
            c = pe if r > pe else r
            f = 2 if vm.vm_id in incoming else (1 if vm.in_migration else 0)
            tr = c * 0.1 if f == 2 else c
            caps.append((c, f))
            sum_tr += tr
            if not over:
                if available >= tr:
                    available -= tr
                else:
                    over = True
        alloc_sum = 0.0
        if over:
            scale = total / sum_tr
        for c, f in caps:
            if over:
                a = math.floor(c * scale * 0.9) if f == 1 else (
                    math.floor(c * 0.1 * scale) if f == 2 else math.floor(c * scale))
            else:
                a = c * 0.9 if f == 1 else (c * 0.1 if f == 2 else c)
            if f == 2:      # getUtilizationOfCpuMips counts an incoming VM at its full request
                alloc_sum += a * 0.9 / 0.1
            alloc_sum += a
        h.available = 0.0 if over else available
        h.alloc_sum = alloc_sum
        h.req_sum = req_sum
        if self.detector == "lr":
            sy = 0.0
            sxy = 0.0
            length = 0
            max_ram = -(2 ** 31)
            for vm in h.vms:
                vsy, vsxy = vm.lr_terms(total)
                sy += vsy
                sxy += vsxy
                if vm.hist_len > length:
                    length = vm.hist_len
                if vm.ram > max_ram:
                    max_ram = vm.ram
            h.lr_sy, h.lr_sxy, h.lr_len, h.max_ram = sy, sxy, length, max_ram

    def _add(self, h: _SHost, vm: _SVm) -> None:
        if not h.vms and h.group is not None:
            self._groups[h.group].remove(h.host_id)
            h.group = None
            bisect.insort(self._individual, h.host_id)
        h.vms.append(vm)
        h.ram_free -= vm.charged
        self._recompute(h)

    def _remove(self, h: _SHost, vm: _SVm) -> None:
        h.vms.remove(vm)
        h.ram_free += vm.charged
        self._recompute(h)

    def _build(self, views: Sequence[HostView]) -> None:
        self._hosts: dict[int, _SHost] = {}
        self._individual: list[int] = []
        self._groups: dict[tuple, list[int]] = {}
        svms: dict[int, _SVm] = {}
        for view in views:
            h = _SHost(view)
            self._hosts[h.host_id] = h
            for v in view.vms:
                svm = svms.get(v.vm_id)
                if svm is None:
                    svm = _SVm(v.vm_id, v.requested_mips, v.mips, v.ram_mb, v.ram_charged_mb, v.migrating,
                               v.history)
                    svms[v.vm_id] = svm
                h.vms.append(svm)
            self._recompute(h)
            if not h.vms and h.stale_util == 0:
                self._groups.setdefault(h.group, []).append(h.host_id)
            else:
                h.group = None
                self._individual.append(h.host_id)
        self._individual.sort()
        for ids in self._groups.values():
            ids.sort()

    # ------------------------------------------------------------ placing

    def _find_host(self, vm: _SVm, excluded: set[int], idle_allowed: bool) -> _SHost | None:
        """findHostForVm: least power increase; ties to the lowest host id."""
        hosts = self._hosts
        best = None
        best_key = (math.inf, 0)
        candidates = self._individual if idle_allowed else self._active
        reps = [ids[0] for ids in self._groups.values() if ids] if idle_allowed else ()
        r = vm.req
        for ids in (candidates, reps):
            for hid in ids:
                if hid in excluded:
                    continue
                h = hosts[hid]
                if h.pe < r or h.available < r or h.ram_free < vm.charged:
                    continue
                if h.alloc_sum != 0 and self._over(h, vm):
                    continue
                u = (h.alloc_sum + r) / h.total
                if u > 1:
                    continue
                key = (h.power.watts(u) - h.stale_power, hid)
                if key < best_key:
                    best_key = key
                    best = h
        return best

    # ----------------------------------------------------------- optimize

    def on_interval(self, ctx: IntervalContext) -> list[Migration]:
        self._bw = ctx.migration_bandwidth_mb_s
        self._interval = ctx.interval_s
        self._build(ctx.hosts())
        hosts = self._hosts
        order = sorted(hosts)
        self._active = [hid for hid in order if hosts[hid].stale_util > 0]

        # 1. over-utilized hosts, 2. MMT selection.
        over_ids = [hid for hid in order if hosts[hid].vms and self._over(hosts[hid])]
        to_migrate: list[_SVm] = []
        for hid in over_ids:
            h = hosts[hid]
            while True:
                pick = None
                for vm in h.vms:
                    if vm.in_migration:
                        continue
                    if pick is None or vm.ram < pick.ram:
                        pick = vm
                if pick is None:
                    break
                to_migrate.append(pick)
                self._remove(h, pick)
                if not self._over(h):
                    break

        # 3. placement of the selected VMs, decreasing MIPS.
        plan: list[tuple[_SVm, _SHost]] = []
        excluded = set(over_ids)
        for vm in sorted(to_migrate, key=lambda v: -v.req):
            target = self._find_host(vm, excluded, idle_allowed=True)
            if target is not None:
                self._add(target, vm)
                plan.append((vm, target))

        # 4. under-utilized hosts, least utilized first.
        excluded_place = set(over_ids)          # + switched-off hosts: not in self._active
        excluded_pick = set(over_ids)           # CloudSim forgets step 3's targets here
        ranked = sorted((hosts[hid].stale_util, hid) for hid in self._active
                        if hosts[hid].stale_util < 1 and hid not in excluded_pick)
        for _, hid in ranked:
            if hid in excluded_pick:
                continue
            h = hosts[hid]
            if self._all_out_or_any_in(h):
                continue
            excluded_pick.add(hid)
            excluded_place.add(hid)
            movable = [vm for vm in h.vms if not vm.in_migration]
            if not movable:
                continue
            placed: list[tuple[_SVm, _SHost]] = []
            for vm in sorted(movable, key=lambda v: -v.req):
                target = self._find_host(vm, excluded_place, idle_allowed=False)
                if target is None:
                    for pvm, ptarget in placed:
                        self._remove(ptarget, pvm)
                    placed = []
                    break
                self._add(target, vm)
                placed.append((vm, target))
            excluded_pick.update(t.host_id for _, t in placed)
            plan.extend(placed)
        return [Migration(vm.vm_id, target.host_id) for vm, target in plan]

    @staticmethod
    def _all_out_or_any_in(h: _SHost) -> bool:
        """areAllVmsMigratingOutOrAnyVmMigratingIn (True for an empty host)."""
        for vm in h.vms:
            if not vm.in_migration:
                return False
            if vm.vm_id in h.incoming:
                return True
        return True
