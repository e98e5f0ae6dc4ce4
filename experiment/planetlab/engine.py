"""A discrete-event replay of CloudSim 3.0.3's PowerDatacenter, with pluggable policies.

Theory of operation
-------------------
The engine holds hosts and VMs and advances a simulated clock; it never reads
the wall clock or global randomness. Time follows CloudSim exactly:

- t = 0: every VM is created in id order, asking for its full MIPS and RAM
  (``Policy.initial_placement``). Cloudlets start at 0.1 s (CloudSim's
  VM_CREATE_ACK delay), so the ticks fall at 300.1, 600.1, ... (each the
  previous plus 300.0 in floating point, as CloudSim's event queue adds
  them); events at or after the 24 h limit are never processed, so the last
  tick is 86 100.1 s.
- At a tick the engine *updates* every host (below), charges energy for the
  interval since the previous processing time, then asks the policy for
  migrations and starts them in the order given.
- A migration lasts RAM / 62.5 MB/s. The VM is listed on both hosts; its
  source gives it 90 % of its share (the 10 % degradation) and the
  destination reserves 10 % of its request. At completion time the engine
  updates every host (charging energy), moves the VMs whose copies finished,
  and updates every host again (CloudSim's processVmMigrate).

A host *update* (HostDynamicWorkload.updateVmsProcessing) recomputes each
listed VM's request, trace utilization x MIPS interpolated at that time,
capped at one core (VmSchedulerTimeSharedOverSubscription). If the capped
requests (10 % for an incoming VM) fit the host they are granted; otherwise
every VM gets the same fraction, rounded down to a whole MIPS. The host's
utilization is what was granted (a migrating-out VM counted at its full
share) over its capacity; it drives the power model, and the state entries
(time, allocated, requested) feed the metrics (metrics.py). The arithmetic
is CloudSim's, operation for operation, so the doubles are Java's. After
every update of all hosts, the ``cloudsim`` accounting retires the VMs that
request 0 MIPS (CloudSim's getCompletedVms); see accounting.py for that and
the other quirks, and for what ``strict`` charges instead.

Ordering the engine relies on: updates of all hosts go in host id order;
each host's VM list keeps insertion order (an arriving VM goes last), which
is the order CloudSim breaks ties in; same-time events run in the order they
were scheduled.

Policy API
----------
A policy (view.Policy) has ``name``, ``centralized``, ``power_aware`` and two
methods:

``initial_placement(ctx: PlacementContext) -> Sequence[int]``
    a host id for every VM (``ctx.vms``) given the hosts' specs: the cloud's
    admission scheduler at t = 0, which sees every host (a decentralized
    policy may reuse ``policies.placement``). The engine checks each choice
    against full MIPS (one core must hold the VM), the host's unreserved MIPS
    and RAM, and refuses an impossible placement.

``on_interval(ctx: IntervalContext) -> Sequence[Migration]``
    called at every tick after the update. ``ctx.host(host_id)`` and
    ``ctx.hosts(ids)`` return frozen ``HostView`` snapshots, built only when
    asked and counted in ``ctx.views_read``: nothing forces a policy to know
    the whole cluster. A decentralized policy gives each agent the views of
    its own host and its neighbours only (``ctx.hosts(neighbour_ids)``); a
    centralized one calls ``ctx.hosts()``. Each ``HostView`` carries capacity
    (cores, MIPS per core, RAM), state (on / standby / waking), current
    utilization, requested and allocated MIPS, and its VMs in list order,
    each with MIPS, RAM, RAM it charges a placement under this accounting,
    current request and allocation, migration state (migrating, incoming)
    and utilization history (newest first, sampled at ticks).

    The returned ``Migration(vm_id, dst_host_id)`` are applied in order. Under
    ``cloudsim`` accounting every one starts (as CloudSim, which even starts a
    second migration of a VM it already moves: it then ends on the last
    destination and both count); only a migration to the VM's own host is
    rejected. Under ``strict`` accounting a migration is also rejected when
    the VM is already moving or the destination lacks RAM, and one to a
    sleeping host first wakes it. Rejections are counted, never raised.

Views are snapshots: a policy's own bookkeeping (such as CloudSim's tentative
re-allocation) is its business and never changes the engine's state.

What a decision may know of the demand
--------------------------------------
At a tick the views carry the demand just computed for that tick: the trace
sample that starts the interval being decided (interpolated 0.1 s into it),
which is what CloudSim's policies see, and it holds, as a step, until the
next processing time. ``view_lag_ticks=1`` takes that away: every
demand-derived field of a view (each VM's request, allocation and history,
the host's requested and allocated MIPS and utilization) is computed from the
sample of the previous tick, as a monitor that reports the last interval
would, so a policy sees no sample of the interval it is deciding. Placement,
migration state and RAM stay current. The metering never changes: the lag
only affects what policies read.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

from .accounting import Accounting
from .catalog import HOST_BW_KBIT_S, HostType, host_type_for, vm_type_for
from .metrics import J_PER_KWH, HostMeter, VmMeter, interval_energy_j, pdm, sla_overall, slatah
from .view import (HostSpec, HostView, IntervalContext, Migration, PlacementContext, Policy, VmSpec,
                   VmView)
from .workload import SAMPLE_INTERVAL_S, Trace, utilization_at

START_S = 0.1                 # cloudlets start when the VM_CREATE_ACKs arrive (CloudSim minTimeBetweenEvents)
DAY_S = 86_400.0              # CloudSim's Constants.SIMULATION_LIMIT
HISTORY_LENGTH = 30           # PowerVm.HISTORY_LENGTH
VM_BW_KBIT_S_AT_CREATION = 100_000

_DONE, _WAKE = 0, 1


class _Vm:
    __slots__ = ("vm_id", "name", "mips", "ram_mb", "samples", "host", "in_migration", "busy", "req",
                 "history", "history_t", "meter", "finished", "u_start")

    def __init__(self, vm_id: int, name: str, mips: float, ram_mb: int, samples: tuple[float, ...]) -> None:
        self.vm_id = vm_id
        self.name = name
        self.mips = mips
        self.ram_mb = ram_mb
        self.samples = samples
        self.host: _Host | None = None
        self.in_migration = False
        self.busy = False            # strict: migration accepted (maybe waiting for a wake)
        self.req = 0.0
        self.history: deque[float] = deque(maxlen=HISTORY_LENGTH)
        self.history_t = 0.0
        self.meter = VmMeter()
        self.finished = False
        self.u_start = 0.0           # utilization when the cloudlet starts (what a lagged view shows first)


class _Host:
    __slots__ = ("host_id", "htype", "pe_mips", "total_mips", "ram_mb", "power", "vms", "incoming",
                 "allocs", "util", "prev_util", "alloc_mips", "req_mips", "state", "pending",
                 "overhead_mips", "ram_charged_mb", "meter", "energy_j")

    def __init__(self, host_id: int, htype: HostType) -> None:
        self.host_id = host_id
        self.htype = htype
        self.pe_mips = htype.pe_mips
        self.total_mips = htype.total_mips
        self.ram_mb = htype.ram_mb
        self.power = htype.power
        self.vms: list[_Vm] = []        # CloudSim's host.getVmList(): residents and incoming, in order
        self.incoming: set[int] = set()
        self.allocs: list[float] = []   # allocation of each listed VM at the last update
        self.util = 0.0
        self.prev_util = 0.0
        self.alloc_mips = 0.0
        self.req_mips = 0.0
        self.state = "on"
        self.pending: list[_Vm] = []    # strict: VMs waiting for this host to wake
        self.overhead_mips = 0.0        # strict: CPU spent on migrations in flight
        self.ram_charged_mb = 0
        self.meter = HostMeter()
        self.energy_j = 0.0


@dataclass(frozen=True, slots=True)
class IntervalStats:
    """One tick, for plots: hosts on, spread of their utilization, migrations started."""

    time_s: float
    active_hosts: int
    util_mean: float
    util_std: float
    util_max: float
    overloaded_hosts: int     # demand above capacity
    migrations: int


@dataclass(frozen=True, slots=True)
class EngineOutcome:
    energy_kwh: float
    migrations: int
    migrations_rejected: int
    vms_finished: int
    host_shutdowns: int
    slatah: float
    pdm: float
    sla_overall: float
    simulated_s: float
    host_views_per_interval: float
    timeline: tuple[IntervalStats, ...]


class Engine:
    def __init__(self, traces: Sequence[Trace], host_count: int, policy: Policy, accounting: Accounting,
                 *, limit_s: float = DAY_S, interval_s: float = SAMPLE_INTERVAL_S,
                 start_s: float = START_S, view_lag_ticks: int = 0) -> None:
        if host_count <= 0 or not traces:
            raise ValueError("need at least one host and one trace")
        if view_lag_ticks not in (0, 1):
            raise ValueError("view_lag_ticks must be 0 (the tick's own sample) or 1 (the previous tick's)")
        self.view_lag_ticks = view_lag_ticks
        self.policy = policy
        self.acct = accounting
        self.limit_s = limit_s
        self.interval_s = interval_s
        self.start_s = start_s
        n = len(traces)
        self.vms = [_Vm(i, tr.name, vm_type_for(i, n).mips, vm_type_for(i, n).ram_mb, tr.samples)
                    for i, tr in enumerate(traces)]
        for vm in self.vms:
            vm.u_start = utilization_at(vm.samples, start_s, interval_s)
        self.hosts = [_Host(i, host_type_for(i)) for i in range(host_count)]
        self.host_ids = tuple(range(host_count))
        self.last_t = 0.0
        self.migrations = 0
        self.rejected = 0
        self.vms_finished = 0
        self._events: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self._views_read = 0
        self._intervals = 0
        self.timeline: list[IntervalStats] = []
        self._strict = not accounting.zero_util_is_off

    # ----------------------------------------------------------------- run

    def run(self, progress: Callable[[int, int], None] | None = None) -> EngineOutcome:
        self._place_initial()
        if self.acct.meter_whole_day:
            self._global_update(0.0)
            self._sweep_standby(0.0)
        ticks: list[float] = []
        t = self.start_s
        while True:
            t = t + self.interval_s
            if t >= self.limit_s:
                break
            ticks.append(t)
        for k, t in enumerate(ticks, start=1):
            self._drain(t)
            self._tick(k, t)
            if progress is not None:
                progress(k, len(ticks))
        self._drain(self.limit_s)
        if self.acct.meter_whole_day:
            self._global_update(self.limit_s)
        return self._outcome()

    def _tick(self, k: int, t: float) -> None:
        self._global_update(t)
        stats = self._stats(t)
        ctx = IntervalContext(t, k, self.interval_s, self.host_ids, self.acct.ram_enforced,
                              self.acct.migration_bandwidth_mb_s, self._view)
        before = self.migrations
        for m in self.policy.on_interval(ctx):
            self._request(m, t)
        self._views_read += ctx.views_read
        self._intervals += 1
        if self._strict:
            self._sweep_standby(t)
        self.timeline.append(IntervalStats(stats[0], stats[1], stats[2], stats[3], stats[4], stats[5],
                                           self.migrations - before))

    def _drain(self, until: float) -> None:
        events = self._events
        while events and events[0][0] < until:
            t = events[0][0]
            group = []
            while events and events[0][0] == t:
                group.append(heapq.heappop(events))
            if t > self.last_t:
                self._global_update(t)
            for _, _, kind, payload in group:
                if kind == _DONE:
                    self._complete(payload, t)
                else:
                    self._wake(payload, t)
            self._global_update(t)      # CloudSim's forced update after the last migration at t
            if self._strict:
                self._sweep_standby(t)

    # ----------------------------------------------------------- placement

    def _place_initial(self) -> None:
        ctx = PlacementContext(
            vms=tuple(VmSpec(v.vm_id, v.name, v.mips, v.ram_mb) for v in self.vms),
            hosts=tuple(HostSpec(h.host_id, h.htype.name, h.htype.pes, h.pe_mips, h.total_mips, h.ram_mb,
                                 h.power) for h in self.hosts),
            ram_enforced=self.acct.ram_enforced)
        choice = list(self.policy.initial_placement(ctx))
        if len(choice) != len(self.vms):
            raise ValueError(f"initial placement gave {len(choice)} hosts for {len(self.vms)} VMs")
        reserved = [0.0] * len(self.hosts)
        for vm, hid in zip(self.vms, choice):
            if not 0 <= hid < len(self.hosts):
                raise ValueError(f"VM {vm.vm_id} placed on unknown host {hid}")
            h = self.hosts[hid]
            if vm.mips > h.pe_mips or reserved[hid] + vm.mips > h.total_mips \
                    or h.ram_charged_mb + vm.ram_mb > h.ram_mb \
                    or (len(h.vms) + 1) * VM_BW_KBIT_S_AT_CREATION > HOST_BW_KBIT_S:
                raise ValueError(f"VM {vm.vm_id} ({vm.mips} MIPS, {vm.ram_mb} MB) does not fit host {hid}")
            reserved[hid] += vm.mips
            h.ram_charged_mb += vm.ram_mb
            h.vms.append(vm)
            vm.host = h
        if not self.acct.ram_enforced:
            for h in self.hosts:        # CloudSim: requested RAM reads 0 after creation
                h.ram_charged_mb = 0

    # ------------------------------------------------------------- updates

    def _global_update(self, t: float) -> None:
        """PowerDatacenter.updateCloudetProcessingWithoutSchedulingFutureEventsForce."""
        dt = t - self.last_t
        self._refresh_demands(t)
        update = self._update_host
        for h in self.hosts:
            if h.vms or h.util != 0.0 or h.meter.active or h.meter.t is None:
                update(h, t)
            else:
                h.prev_util = 0.0
        if dt > 0:
            self._charge_energy(dt)
        if self.acct.zero_demand_ends_vm:
            self._remove_completed()
        self.last_t = t

    def _remove_completed(self) -> None:
        """PowerDatacenter: VMs whose request is 0 (getCompletedVms) are deallocated for good."""
        for h in self.hosts:
            if not h.vms:
                continue
            done = [vm for vm in h.vms if not vm.in_migration and vm.req == 0]
            for vm in done:
                self._detach(vm.host, vm)
                vm.host = None
                vm.finished = True
                self.vms_finished += 1

    def _refresh_demands(self, t: float) -> None:
        # PowerVm.updateVmProcessing samples the utilization history at ticks only.
        at_tick = math.fmod(t - self.start_s, self.interval_s) == 0
        for vm in self.vms:
            if vm.host is None:
                continue
            u = utilization_at(vm.samples, t, self.interval_s)
            vm.req = u * vm.mips
            if at_tick and t > vm.history_t:
                vm.history.appendleft(u)
                vm.history_t = t

    def _update_host(self, h: _Host, t: float) -> None:
        """HostDynamicWorkload.updateVmsProcessing with VmSchedulerTimeSharedOverSubscription."""
        h.prev_util = h.util
        vms = h.vms
        strict = self._strict
        if not vms:
            h.allocs = []
            h.alloc_mips = 0.0
            h.req_mips = 0.0
            h.util = 0.0
            h.meter.record(t, 0.0, 0.0, strict and h.state == "on")
            return
        total = h.total_mips
        pe = h.pe_mips
        incoming = h.incoming
        overhead = h.overhead_mips if h.overhead_mips < total else total
        share_total = total - overhead
        available = share_total
        over = False
        sum_tr = 0.0
        caps = []
        flags = []
        for vm in vms:
            r = vm.req
            c = pe if r > pe else r
            if vm.vm_id in incoming:
                f = 2
                tr = c * 0.1
            elif vm.in_migration:
                f = 1
                tr = c
            else:
                f = 0
                tr = c
            caps.append(c)
            flags.append(f)
            sum_tr += tr
            if not over:
                if available >= tr:
                    available -= tr
                else:
                    over = True
        scale = share_total / sum_tr if over else 1.0
        dst_full = self.acct.dst_requests_full
        floor = math.floor
        allocs = []
        util_mips = 0.0
        req_mips = 0.0
        i = 0
        for vm in vms:
            c = caps[i]
            f = flags[i]
            i += 1
            r = vm.req
            if over:
                if f == 1:
                    a = floor(c * scale * 0.9)
                elif f == 2:
                    a = floor(c * 0.1 * scale)
                else:
                    a = floor(c * scale)
            else:
                a = c * 0.9 if f == 1 else (c * 0.1 if f == 2 else c)
            allocs.append(a)
            if f == 2:
                util_mips += a
                req_mips += r if dst_full else c * 0.1
            else:
                vm.meter.record(t, a, r, f == 1)
                if f == 1:
                    if strict:
                        util_mips += floor(c * scale) if over else c
                    else:
                        util_mips += a / 0.9     # CloudSim undoes the degradation, ulps and all
                else:
                    util_mips += a
                req_mips += r
        h.allocs = allocs
        h.alloc_mips = util_mips
        h.req_mips = req_mips
        u = (util_mips + overhead) / total
        if 1 < u < 1.01:
            u = 1.0
        h.util = u
        h.meter.record(t, util_mips, req_mips, (h.state == "on") if strict else util_mips > 0)

    def _charge_energy(self, dt: float) -> None:
        power_aware = self.policy.power_aware
        strict = self._strict
        standby_w = self.acct.standby_power_w
        for h in self.hosts:
            if not power_aware:
                e = h.power.max_w * dt
            elif strict:
                if h.state == "standby":
                    e = standby_w * dt
                elif h.state == "waking":
                    e = h.power.max_w * dt
                else:
                    e = interval_energy_j(h.power, h.prev_util, h.util, dt, zero_is_off=False)
            elif h.prev_util == 0:
                continue
            else:
                e = interval_energy_j(h.power, h.prev_util, h.util, dt)
            h.energy_j += e

    # ----------------------------------------------------------- migrations

    def _request(self, m: Migration, t: float) -> None:
        if not (0 <= m.vm_id < len(self.vms) and 0 <= m.dst_host_id < len(self.hosts)):
            self.rejected += 1
            return
        vm = self.vms[m.vm_id]
        dst = self.hosts[m.dst_host_id]
        if vm.host is None or vm.host is dst:
            self.rejected += 1
            return
        if self.acct.ram_enforced:
            if vm.busy or vm.in_migration or dst.ram_charged_mb + vm.ram_mb > dst.ram_mb:
                self.rejected += 1
                return
            dst.ram_charged_mb += vm.ram_mb
        vm.busy = True
        self.migrations += 1
        if self._strict and dst.state != "on":
            if dst.state == "standby":
                dst.state = "waking"
                self._push(t + self.acct.wake_time_s, _WAKE, dst)
            dst.pending.append(vm)
            return
        self._start(vm, dst, t)

    def _start(self, vm: _Vm, dst: _Host, t: float) -> None:
        """PowerDatacenter.updateCloudletProcessing: targetHost.addMigratingInVm(vm) and the VM_MIGRATE event."""
        src = vm.host
        vm.in_migration = True
        if vm.vm_id not in dst.incoming:
            dst.incoming.add(vm.vm_id)
            dst.vms.append(vm)
            dst.allocs.append(0.0)
            if self._strict:
                frac = self.acct.migration_cpu_pe_fraction
                src.overhead_mips += frac * src.pe_mips
                dst.overhead_mips += frac * dst.pe_mips
            self._update_host(dst, t)
            self._update_host(src, t)
        self._push(t + vm.ram_mb / self.acct.migration_bandwidth_mb_s, _DONE, (vm, dst, src))

    def _complete(self, payload: tuple[_Vm, _Host, _Host], t: float) -> None:
        """Datacenter.processVmMigrate: deallocate from the current host, re-create on the destination."""
        vm, dst, started_from = payload
        src = vm.host
        self._detach(src, vm)
        dst.incoming.discard(vm.vm_id)
        self._detach(dst, vm)
        dst.vms.append(vm)
        dst.allocs.append(0.0)
        vm.host = dst
        vm.in_migration = False
        vm.busy = False
        if self._strict:
            src.ram_charged_mb -= vm.ram_mb
            frac = self.acct.migration_cpu_pe_fraction
            started_from.overhead_mips = max(0.0, started_from.overhead_mips - frac * started_from.pe_mips)
            dst.overhead_mips = max(0.0, dst.overhead_mips - frac * dst.pe_mips)

    @staticmethod
    def _detach(h: _Host, vm: _Vm) -> None:
        """Take ``vm`` off ``h``'s list, keeping the per-VM allocations aligned with it."""
        for i, other in enumerate(h.vms):
            if other is vm:
                del h.vms[i]
                if i < len(h.allocs):
                    del h.allocs[i]
                return

    def _wake(self, h: _Host, t: float) -> None:
        h.state = "on"
        pending, h.pending = h.pending, []
        for vm in pending:
            self._start(vm, h, t)
        if not pending:
            self._update_host(h, t)

    def _sweep_standby(self, t: float) -> None:
        for h in self.hosts:
            if h.state == "on" and not h.vms and not h.pending:
                h.state = "standby"
                self._update_host(h, t)

    def _push(self, t: float, kind: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, kind, payload))

    # --------------------------------------------------------------- views

    def _view(self, host_id: int) -> HostView:
        if self.view_lag_ticks:
            return self._lagged_view(host_id)
        h = self.hosts[host_id]
        ram_enforced = self.acct.ram_enforced
        allocs = h.allocs if len(h.allocs) == len(h.vms) else [0.0] * len(h.vms)
        vms = tuple(
            VmView(vm.vm_id, vm.mips, vm.ram_mb, vm.ram_mb if ram_enforced else 0, vm.req, a,
                   vm.host.host_id, vm.in_migration or vm.busy, vm.vm_id in h.incoming, tuple(vm.history))
            for vm, a in zip(h.vms, allocs))
        ram_free = h.ram_mb - h.ram_charged_mb if ram_enforced else h.ram_mb
        return HostView(h.host_id, h.htype.name, h.htype.pes, h.pe_mips, h.total_mips, h.ram_mb, ram_free,
                        h.power, h.state, h.util, h.req_mips, h.alloc_mips, vms)

    def _lagged_view(self, host_id: int) -> HostView:
        """The view as a monitor reporting the previous tick's sample would give it (view_lag_ticks=1).

        Each listed VM's request is its utilization at the previous tick (at
        the first tick: when its cloudlet started) x MIPS; the allocations
        share the host's CPU among those requests by the engine's rule (an
        incoming VM asks for 10 %, a migrating-out VM gets 90 %).
        """
        h = self.hosts[host_id]
        ram_enforced = self.acct.ram_enforced
        total = h.total_mips
        pe = h.pe_mips
        overhead = h.overhead_mips if h.overhead_mips < total else total
        share_total = total - overhead
        rows = []
        sum_tr = 0.0
        for vm in h.vms:
            hist = tuple(vm.history)
            u = hist[1] if len(hist) > 1 else vm.u_start
            r = u * vm.mips
            c = pe if r > pe else r
            incoming = vm.vm_id in h.incoming
            tr = c * 0.1 if incoming else c
            sum_tr += tr
            rows.append((vm, hist[1:], r, c, incoming))
        scale = share_total / sum_tr if sum_tr > share_total else 1.0
        vms = []
        util_mips = 0.0
        req_mips = 0.0
        for vm, hist, r, c, incoming in rows:
            granted = c * scale
            if incoming:
                a = granted * 0.1
                util_mips += a
                req_mips += r if self.acct.dst_requests_full else c * 0.1
            else:
                a = granted * 0.9 if vm.in_migration else granted
                util_mips += granted
                req_mips += r
            vms.append(VmView(vm.vm_id, vm.mips, vm.ram_mb, vm.ram_mb if ram_enforced else 0, r, a,
                              vm.host.host_id, vm.in_migration or vm.busy, incoming, hist))
        util = min(1.0, (util_mips + overhead) / total) if vms else 0.0
        ram_free = h.ram_mb - h.ram_charged_mb if ram_enforced else h.ram_mb
        return HostView(h.host_id, h.htype.name, h.htype.pes, h.pe_mips, h.total_mips, h.ram_mb, ram_free,
                        h.power, h.state, util, req_mips, util_mips, tuple(vms))

    # ------------------------------------------------------------- results

    def _stats(self, t: float) -> tuple[float, int, float, float, float, int]:
        if self._strict:
            active = [h.util for h in self.hosts if h.state == "on"]
        else:
            active = [h.util for h in self.hosts if h.util > 0]
        overloaded = sum(1 for h in self.hosts if h.req_mips > h.total_mips)
        if not active:
            return (t, 0, 0.0, 0.0, 0.0, overloaded)
        mean = sum(active) / len(active)
        std = math.sqrt(sum((u - mean) ** 2 for u in active) / len(active))
        return (t, len(active), mean, std, max(active), overloaded)

    def _outcome(self) -> EngineOutcome:
        vm_meters = [v.meter for v in self.vms]
        host_meters = [h.meter for h in self.hosts]
        for m in host_meters:
            m.close()
        return EngineOutcome(
            energy_kwh=sum(h.energy_j for h in self.hosts) / J_PER_KWH,
            migrations=self.migrations,
            migrations_rejected=self.rejected,
            vms_finished=self.vms_finished,
            host_shutdowns=sum(m.shutdowns for m in host_meters),
            slatah=slatah(host_meters),
            pdm=pdm(vm_meters),
            sla_overall=sla_overall(vm_meters),
            simulated_s=self.last_t,
            host_views_per_interval=self._views_read / self._intervals if self._intervals else 0.0,
            timeline=tuple(self.timeline))
