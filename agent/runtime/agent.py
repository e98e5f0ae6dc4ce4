"""The node agent: an asyncio shell around the pure cores.

The agent owns the hypervisor model of its node and three periodic loops:
gossip (push-pull with one random peer), policy (the local balancing rule),
and housekeeping (publish own load, expire leases, resolve in-doubt
handoffs). Handlers called by the gRPC servicers (`on_*`) run on the event
loop, so the model is only ever touched from one thread and needs no locks.
Every I/O result, including failures, is fed back into the cores.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from random import Random

import grpc

from agent.adapters.grpc_client import PeerClients
from agent.core.config import AgentConfig
from agent.core.dissemination import Dissemination
from agent.core import encapsulation, membership_codec
from agent.core.handoff import (SOURCE_TERMINAL, OutgoingMigration, SourceState, TargetHandoffs)
from agent.adapters.journal import Journal
from agent.core.ownership import InDoubt, Recovered, fold, spec_to_record
from agent.core.membership import JoinFailed, MemberEvent, Membership, MemberStatus, Send
from agent.core.membership_config import MembershipConfig
from agent.core.messages import (OUTCOME_ABORTED, OUTCOME_COMMITTED, OUTCOME_RESERVED, OUTCOME_UNKNOWN,
                                 CommitDecision, Exchange, NodeLoad, PrepareDecision, PrepareRequest)
from agent.core.precopy import PreCopy, PreCopyLimits, Round, StopAndCopy, migration_cost_s
from agent.core.policy import BalancePolicy, DomainLoad, LocalView, Neighbour, Proposal, kept_together
from agent.core.validation import InputRejected
from agent.runtime.ha import HighAvailability
from agent.runtime import image_memory
from agent.runtime.metrics import Metrics
from hypervisor.clock import ScaledClock
from hypervisor.domain import Domain, DomainSpec, DomainSpecError, DomainState
from hypervisor.host import Host, HostSpec
from hypervisor.memory import PAGE_SIZE, DirtyModel, MemoryImage

log = logging.getLogger("shoal.agent")

# Proposals tried per policy round before giving up until the next round.
PROPOSALS_PER_ROUND_MAX = 3
MIB = 1024 * 1024
# How often the membership core is ticked; it decides itself what is due.
MEMBERSHIP_TICK_S = 0.05
# Fault injection for the crash-matrix tests: the agent hard-exits (as if
# SIGKILLed) when it reaches the named handoff point. Never set in production.
CRASH_ENV = "SHOAL_CRASH_AT"
CRASH_POINTS = frozenset({
    "source:after_prepare", "source:mid_precopy", "source:after_pause", "source:after_commit_sent",
    "source:after_commit_ack", "target:after_prepare", "target:mid_precopy", "target:after_pause",
    "target:after_commit_sent", "target:after_commit_ack"})
# Telemetry state and Prometheus gauges are refreshed this often.
REPORT_INTERVAL_S = 1.0
# Per-second message and byte rates in `status` average over this many 1 s samples.
RATE_WINDOW_SAMPLES = 11
TRAFFIC_KEYS = ("messages_sent", "bytes_sent", "messages_received", "bytes_received")
# Compact the journal into a snapshot after this many appends.
JOURNAL_COMPACT_APPENDS = 10_000
# Time given to the `left` announcement on a graceful stop.
LEAVE_GRACE_S = 1.0


class Refused(Exception):
    """A control request the agent will not carry out; `code` is the gRPC status."""

    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class MigrationResult:
    migrated: bool
    reason: str
    migration_id: str = ""
    epoch: int = 0
    bytes_sent: int = 0
    duration_s: float = 0.0  # the whole migration: PREPARE sent to COMMIT acknowledged
    rounds: int = 0
    downtime_s: float = 0.0
    stop_reason: str = ""
    accounted_bytes: int = 0
    # The transfer phase within duration_s: round 1's first page sent to the
    # stop-and-copy's last page acknowledged (every round, the pause between).
    transfer_s: float = 0.0
    prepare_s: float = 0.0  # PREPARE's round trip, the target's image memory populated included


class Agent:
    def __init__(self, node_id: str, host_spec: HostSpec, config: AgentConfig, *,
                 seeds: tuple[str, ...] = (), rng_seed: int | None = None,
                 clock_origin_s: float | None = None, incarnation: int = 1,
                 membership_config: MembershipConfig | None = None, journal: Journal | None = None,
                 recovered: Recovered | None = None,
                 persist_incarnation: Callable[[int], None] | None = None) -> None:
        self.node_id = node_id
        self.incarnation = incarnation
        self.membership_config = membership_config or MembershipConfig.profile(config.profile)
        self.membership: Membership | None = None
        self.config = config
        self.host = Host(host_spec)
        self.seeds = seeds
        self.rng = Random(rng_seed if rng_seed is not None else uuid.uuid4().int)
        self.clock = ScaledClock(origin_wall_s=clock_origin_s if clock_origin_s is not None else time.time(),
                                 scale=config.time_scale)
        self.metrics = Metrics()
        self.images: dict[str, MemoryImage] = {}
        self.cooldown_until_s: dict[str, float] = {}
        self.outgoing: dict[str, OutgoingMigration] = {}
        self.tombstones: dict[str, tuple[int, str]] = {}  # domain id -> (epoch, new owner)
        self.sent_recently: list[tuple[float, str, float]] = []  # (now_s, target, demand)
        self.balancing = True
        self.address = ""
        self.dissemination: Dissemination | None = None
        self.target: TargetHandoffs = TargetHandoffs(node_id, self.host, config,
                                                     allocate_image=image_memory.zeroed_buffer)
        self.policy = BalancePolicy(config)
        self.clients = PeerClients(config)
        self._tasks: set[asyncio.Task] = set()
        self._policy_wake = asyncio.Event()
        self._stopping = False
        self.journal = journal
        # Telemetry sinks, set by the process shell; they never feed back into decisions.
        self.telemetry = None  # agent.adapters.telemetry.TelemetryPublisher
        self.health = None  # agent.adapters.grpc_server.HealthReporter, set by start_server
        self.server_tls = None  # agent.adapters.tls.ReloadableServerCredentials, None under --insecure
        self.prom = None  # agent.adapters.prom.AgentMetrics
        self._last_report_s = 0.0
        self.persist_incarnation = persist_incarnation
        self._persisted_incarnation = incarnation
        self._traffic: deque[tuple[float, dict[str, int]]] = deque(maxlen=RATE_WINDOW_SAMPLES)
        self._crash_at = os.environ.get(CRASH_ENV, "")
        if self._crash_at and self._crash_at not in CRASH_POINTS:
            raise ValueError(f"{CRASH_ENV}={self._crash_at!r} is not one of {sorted(CRASH_POINTS)}")
        self._journal_appends = 0
        self._recovered_in_doubt: list[InDoubt] = []
        if recovered is not None:
            self._recover(recovered)
        self.ha = HighAvailability(self)

    def event(self, kind: str, **fields) -> None:
        """An operator-visible event: to MQTT when telemetry is on (never blocks)."""
        if self.telemetry is not None:
            self.telemetry.publish_event({"event": kind, "node": self.node_id, "t_s": round(time.time(), 3),
                                          **fields})

    def report(self) -> None:
        """Periodic state to MQTT (retained) and Prometheus; at most once a second."""
        now = self.now_s()
        if (self.telemetry is None and self.prom is None) or now - self._last_report_s < REPORT_INTERVAL_S:
            return
        self._last_report_s = now
        st = self.status()
        if self.prom is not None:
            self.prom.update_from_status(st)
            counts: dict[str, int] = {}
            for m in st["members"]:
                counts[m["status"]] = counts.get(m["status"], 0) + 1
            self.prom.set_members(counts)
        if self.telemetry is not None:
            self.telemetry.publish_state({
                "node": self.node_id, "address": self.address, "t_s": round(time.time(), 3),
                "cpu_utilization": st["cpu_utilization"], "memory_utilization": st["memory_utilization"],
                "domains": sum(d["state"] != "reserved-in" for d in st["domains"]), "members": sum(m["status"] == "alive" for m in st["members"]),
                "migrations_inflight": len(st["migrations"]),
                "mean_utilization_estimate": st["mean_utilization_estimate"]})

    def _maybe_crash(self, point: str, delay_s: float = 0.0) -> None:
        """The crash-matrix hook (CRASH_ENV); os._exit skips every cleanup, like SIGKILL."""
        if self._crash_at != point:
            return
        log.error("%s: crashing at %s (%s)", self.node_id, point, CRASH_ENV)
        if delay_s:
            asyncio.get_running_loop().call_later(delay_s, os._exit, 137)
        else:
            os._exit(137)

    # -- journal -----------------------------------------------------------------
    def _recover(self, r: Recovered) -> None:
        """Rebuilds domains from the journal; in-doubt handoffs are resolved once serving."""
        for line in r.skipped:
            log.warning("%s: journal record skipped: %s", self.node_id, line)
        in_doubt = {d.domain_id for d in r.in_doubt.values()}
        for spec, epoch in sorted(r.domains.values(), key=lambda se: se[0].domain_id):
            state = DomainState.PAUSED if spec.domain_id in in_doubt else DomainState.RUNNING
            self.host.domains[spec.domain_id] = Domain(spec, epoch=epoch, state=state)
            self.images[spec.domain_id] = MemoryImage(spec.memory_mib, self.config.image_real_bytes_max,
                                                      seed=spec.image_seed)
        self.tombstones.update(r.departed)
        self.target.departed_epochs.update({d: e for d, (e, _) in r.departed.items()})
        self.target.recovered_commits.update(r.arrived)
        self._recovered_in_doubt = [d for d in r.in_doubt.values() if d.domain_id in self.host.domains]
        log.info("%s: recovered %d domains from the journal (%d handoffs in doubt)", self.node_id,
                 len(r.domains), len(self._recovered_in_doubt))

    def _journal(self, record: dict) -> None:
        """Appends with fsync before the step takes effect outside this process."""
        if self.journal is None:
            return
        self.journal.append(record)
        self._journal_appends += 1
        if self._journal_appends >= JOURNAL_COMPACT_APPENDS:
            self._journal_appends = 0
            self.journal.compact(self._ownership().snapshot())

    def _ownership(self) -> Recovered:
        r = Recovered(domains={d.domain_id: (d.spec, d.epoch) for d in self.host.domains.values()},
                      departed=dict(self.tombstones), arrived=dict(self.target.recovered_commits))
        for m in self.target.incoming.values():
            if m.committed_epoch:
                r.arrived[m.migration_id] = m.committed_epoch
        for m in self.outgoing.values():
            if m.state in (SourceState.COMMITTING, SourceState.IN_DOUBT):
                r.in_doubt[m.migration_id] = InDoubt(m.migration_id, m.domain_id, m.target_id, m.target_address,
                                                     m.epoch)
        return r

    async def _resolve_recovered(self) -> None:
        for d in self._recovered_in_doubt:
            mig = OutgoingMigration(d.migration_id, d.domain_id, d.target_id, d.target_address, d.epoch,
                                    self.now_s(), state=SourceState.IN_DOUBT)
            self.outgoing[mig.migration_id] = mig
            result = await self._resolve_in_doubt(mig)
            log.info("%s: in-doubt handoff of %s resolved: %s", self.node_id, d.domain_id,
                     "moved" if result.migrated else result.reason)
        self._recovered_in_doubt = []

    # -- time ----------------------------------------------------------------
    @staticmethod
    def now_s() -> float:
        """Monotonic seconds, for ages, leases and cooldowns."""
        return time.monotonic()

    def model_time_s(self) -> float:
        """Model time, shared by all agents of a cluster through the clock origin."""
        return self.clock.model_time(time.time())

    # -- lifecycle -------------------------------------------------------------
    def bind(self, address: str) -> None:
        """Called once the server is listening, with the address peers should use."""
        self.address = address
        self.dissemination = Dissemination(self.node_id, address, self.config, self.rng, self.seeds,
                                           heartbeat_origin=int(time.time() * 1000))
        self.membership = Membership(self.node_id, address, self.membership_config, self.rng, self.now_s(),
                                     incarnation=self.incarnation)
        self.publish()

    def start_loops(self) -> None:
        for coro in (self._membership_loop(), self._gossip_loop(), self._policy_loop(), self._housekeeping_loop(),
                     self._resolve_recovered(), self.ha.run()):
            self._spawn(coro)
        if self.health is not None:
            self._spawn(self.health.run())

    async def stop(self) -> None:
        """Announces `left` (best effort, bounded), then stops every loop."""
        if self.membership is not None and self.membership.joined and not self._stopping:
            sends = [d for d in self.membership.leave(self.now_s()) if isinstance(d, Send)]
            if sends:
                await asyncio.wait([asyncio.ensure_future(self._send_membership(d, report_failure=False))
                                    for d in sends], timeout=LEAVE_GRACE_S)
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.clients.close()
        if self.journal is not None:
            self.journal.close()

    def spawn(self, coro) -> asyncio.Task:
        """Runs a coroutine as one of the agent's tasks (cancelled on stop)."""
        return self._spawn(coro)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- own load ------------------------------------------------------------
    def outgoing_demand_cores(self, t_s: float) -> float:
        return sum(self.host.domains[m.domain_id].demand_cores(t_s) for m in self.outgoing.values()
                   if m.state not in SOURCE_TERMINAL and m.domain_id in self.host.domains)

    def publish(self) -> NodeLoad:
        sample = self.host.sample(self.model_time_s())
        spec = self.host.spec
        load = NodeLoad(node_id=self.node_id, address=self.address, heartbeat=0,
                        cpu_capacity_cores=spec.cpu_cores, cpu_demand_cores=sample.cpu_demand_cores,
                        memory_capacity_mib=float(spec.memory_mib), memory_used_mib=float(sample.memory_used_mib),
                        domains=len(self.host.domains), vcpus_committed=float(self.host.committed_vcpus),
                        vcpus_capacity=spec.cpu_cores * spec.cpu_overcommit_ratio,
                        migrations_inflight=len(self.target.active()) + self._outgoing_active())
        assert self.dissemination is not None
        return self.dissemination.publish(load, self.now_s())

    def _outgoing_active(self) -> int:
        return sum(1 for m in self.outgoing.values() if m.state not in SOURCE_TERMINAL)

    # -- membership ------------------------------------------------------------------
    async def _membership_loop(self) -> None:
        assert self.membership is not None
        self._execute(self.membership.join(self.now_s(), self.seeds))
        while True:
            await asyncio.sleep(MEMBERSHIP_TICK_S)
            self._execute(self.membership.tick(self.now_s()))

    def _execute(self, directives: list) -> None:
        """Carries out what the membership core decided."""
        for d in directives:
            if isinstance(d, Send):
                self._spawn(self._send_membership(d))
            elif isinstance(d, MemberEvent):
                self._on_member_event(d)
            elif isinstance(d, JoinFailed):
                self.metrics.inc("join_failures")
                log.warning("%s: no seed answered after %d join attempts (seeds %s); still retrying",
                            self.node_id, d.attempts, ",".join(d.seeds))

    async def _send_membership(self, d: Send, report_failure: bool = True) -> None:
        payload = membership_codec.encode(d.message, self.membership_config.message_bytes_max)
        kind = type(d.message).__name__.lower()
        self.metrics.inc("messages_sent", type=kind)
        self.metrics.inc("bytes_sent", len(payload), type=kind)
        try:
            await self.clients.deliver(d.to_address, payload, self.membership_config.probe_timeout_ms / 1000)
        except grpc.aio.AioRpcError as exc:
            self.metrics.inc("membership_send_failed", code=exc.code().name)
            if report_failure and self.membership is not None and not self._stopping:
                self._execute(self.membership.on_send_failed(self.now_s(), d.to_address, d.message))

    def on_membership_packet(self, payload: bytes) -> None:
        """A membership message from the network. Raises InputRejected."""
        assert self.membership is not None
        msg = membership_codec.decode(payload, self.membership_config.message_bytes_max)
        kind = type(msg).__name__.lower()
        self.metrics.inc("messages_received", type=kind)
        self.metrics.inc("bytes_received", len(payload), type=kind)
        self._execute(self.membership.on_message(self.now_s(), msg))

    def _on_member_event(self, ev: MemberEvent) -> None:
        m = ev.member
        self.metrics.inc("member_events", status=m.status.value)
        level = logging.WARNING if m.status in (MemberStatus.SUSPECT, MemberStatus.DEAD) else logging.INFO
        log.log(level, "%s: member %s at %s is %s (was %s, incarnation %d)", self.node_id, m.node_id, m.address,
                m.status.value, ev.previous.value if ev.previous else "unknown", m.incarnation)
        if ev.previous is not m.status:
            self.event("member", member=m.node_id, address=m.address, status=m.status.value,
                       previous=ev.previous.value if ev.previous else None, incarnation=m.incarnation)
        if m.status in (MemberStatus.DEAD, MemberStatus.LEFT):
            assert self.dissemination is not None
            self.dissemination.entries.pop(m.node_id, None)
            self._spawn(self.clients.forget(m.address))
        elif m.node_id != self.node_id:
            self.clients.expect(m.address, m.node_id)  # calls there must reach this node, not any node
        self.ha.on_member_event(ev)

    def live_view_ids(self) -> set[str]:
        """Members this node may gossip with and migrate to: alive and in its bounded view."""
        assert self.membership is not None
        return {m.node_id for m in self.membership.view() if m.status is MemberStatus.ALIVE}

    # -- loops -------------------------------------------------------------------
    async def _gossip_loop(self) -> None:
        interval_s = self.config.gossip_interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s * (0.75 + 0.5 * self.rng.random()))
            await self.gossip_once()

    async def gossip_once(self) -> None:
        assert self.dissemination is not None
        now = self.now_s()
        assert self.membership is not None
        members = [m for m in self.membership.view() if m.status is MemberStatus.ALIVE]
        for node_id in self.dissemination.tick(now, {m.node_id for m in members}):
            log.info("%s: forgot peer %s (no news for %d ms)", self.node_id, node_id, self.config.peer_forget_ms)
            self.metrics.inc("peers_forgotten")
        view = [m.address for m in members]
        address = self.dissemination.pick_peer(now, candidates=view)
        if address is None:
            return
        self.publish()
        try:
            reply, sent_bytes, received_bytes = await self.clients.exchange(address,
                                                                            self.dissemination.make_exchange(now))
            self.dissemination.on_exchange_reply(self.now_s(), reply)
            self.metrics.inc("gossip_exchanges_sent")
            self.metrics.inc("messages_sent", type="exchange")
            self.metrics.inc("bytes_sent", sent_bytes, type="exchange")
            self.metrics.inc("messages_received", type="exchange_reply")
            self.metrics.inc("bytes_received", received_bytes, type="exchange_reply")
        except grpc.aio.AioRpcError as exc:
            self.metrics.inc("gossip_failed", code=exc.code().name)
            log.debug("%s: gossip with %s failed: %s", self.node_id, address, exc.code().name)
        except InputRejected as exc:
            self.metrics.inc("rejected_inputs", reason=exc.reason)
            log.warning("%s: rejected gossip reply from %s: %s", self.node_id, address, exc)

    async def _policy_loop(self) -> None:
        interval_s = self.config.policy_interval_ms / 1000
        while True:
            try:
                await asyncio.wait_for(self._policy_wake.wait(), timeout=interval_s)
            except asyncio.TimeoutError:
                pass
            self._policy_wake.clear()
            if self.balancing and not self.target.draining:
                self.policy_round()

    def policy_round(self) -> list[Proposal]:
        """Starts the migrations the local rule proposes; returns them.

        Each migration is registered synchronously (begin_migration) before
        the next decision, so the next decision already sees it in flight.
        """
        started = []
        while self._outgoing_active() < self.config.migrations_out_max:
            candidates = self.policy.candidates(self.local_view(), self.neighbours(), self.mean_estimate())
            if not candidates:
                break
            proposal = candidates[0]
            began = self.begin_migration(proposal.domain_id, proposal.target_id, require_improvement=True)
            if isinstance(began, MigrationResult):
                log.warning("%s: policy proposal not startable: %s", self.node_id, began.reason)
                break
            log.info("%s: proposing %s -> %s (%s; source %.2f, target %.2f after)", self.node_id,
                     proposal.domain_id, proposal.target_id, proposal.reason,
                     proposal.source_utilization_after, proposal.target_utilization_after)
            fallbacks = [p.target_id for p in candidates[1:] if p.domain_id == proposal.domain_id]
            self._spawn(self._run_with_fallbacks(began, fallbacks[:PROPOSALS_PER_ROUND_MAX - 1]))
            started.append(proposal)
        return started

    async def _run_with_fallbacks(self, mig: OutgoingMigration, fallback_targets: list[str]) -> None:
        """Runs a migration; when the target rejects it, tries the next-best targets."""
        result = await self.run_migration(mig)
        for target_id in fallback_targets:
            if result.migrated or not result.reason.startswith("rejected"):
                break
            began = self.begin_migration(mig.domain_id, target_id, require_improvement=True)
            if isinstance(began, MigrationResult):
                break
            result = await self.run_migration(began)
        self._policy_wake.set()

    def _sample_traffic(self, now: float) -> None:
        """Keeps 1 s samples of the traffic totals for the per-second rates in status."""
        if self._traffic and now - self._traffic[-1][0] < 1.0:
            return
        totals = dict.fromkeys(TRAFFIC_KEYS, 0)
        for key, value in self.metrics.counters.items():
            base = key.split("{", 1)[0]
            if base in totals:
                totals[base] += value
        self._traffic.append((now, totals))

    def traffic_rates(self) -> dict[str, float]:
        if len(self._traffic) < 2:
            return {f"{k}_per_s": 0.0 for k in TRAFFIC_KEYS}
        (t0, first), (t1, last) = self._traffic[0], self._traffic[-1]
        return {f"{k}_per_s": round((last[k] - first[k]) / (t1 - t0), 2) for k in TRAFFIC_KEYS}

    def _maybe_persist_incarnation(self) -> None:
        if self.membership is None or self.persist_incarnation is None:
            return
        if self.membership.incarnation > self._persisted_incarnation:
            self.persist_incarnation(self.membership.incarnation)
            self._persisted_incarnation = self.membership.incarnation

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            now = self.now_s()
            self._sample_traffic(now)
            self._maybe_persist_incarnation()
            self.report()
            for mig in self.target.tick(now):
                self.metrics.inc("reservations_expired")
                log.warning("%s: reservation %s for %s expired uncommitted", self.node_id,
                            mig.migration_id, mig.spec.domain_id)
            horizon = now - self.config.peer_stale_ms / 1000
            self.sent_recently = [s for s in self.sent_recently if s[0] >= horizon]

    # -- views for the policy ---------------------------------------------------
    def local_view(self) -> LocalView:
        t = self.model_time_s()
        now = self.now_s()
        busy = {m.domain_id for m in self.outgoing.values() if m.state not in SOURCE_TERMINAL}
        together = kept_together((d.domain_id, d.spec.affinity) for d in self.host.domains.values())
        domains = tuple(
            DomainLoad(d.domain_id, d.demand_cores(t), d.spec.memory_mib, d.spec.vcpus,
                       movable=(d.state is DomainState.RUNNING and d.domain_id not in busy
                                and d.domain_id not in together
                                and self.cooldown_until_s.get(d.domain_id, 0.0) <= now),
                       cost_s=migration_cost_s(d.spec.memory_mib, d.spec.dirty_rate_mib_s,
                                               self.config.migration_bandwidth_mib_s, wws_mib=d.spec.wws_mib))
            for d in sorted(self.host.domains.values(), key=lambda d: d.domain_id))
        demand = sum(d.demand_cores for d in domains if d.domain_id not in busy)
        return LocalView(self.node_id, self.host.spec.cpu_cores, demand, domains, self._outgoing_active())

    def neighbours(self) -> list[Neighbour]:
        assert self.dissemination is not None
        return self.dissemination.neighbours(self.now_s(), self.live_view_ids(), self.sent_recently)

    def mean_estimate(self) -> float | None:
        assert self.dissemination is not None
        return self.dissemination.mean_utilization_estimate(self.now_s())

    # -- gossip handler ----------------------------------------------------------
    def on_exchange(self, msg: Exchange) -> Exchange:
        assert self.dissemination is not None
        self.publish()
        reply = self.dissemination.on_exchange(self.now_s(), msg)
        self.metrics.inc("gossip_exchanges_received")
        return reply

    # -- control -----------------------------------------------------------------
    def create_domain(self, spec: DomainSpec, epoch: int = 1, record: dict | None = None,
                      anti_affinity: bool = True) -> Domain:
        """Creates a domain here, journaled first (`record`: the journal record, when not a plain create).
        `anti_affinity=False`: an HA restart, which runs the domain even beside another of its
        anti-affinity group (availability first; an operator can move it)."""
        try:
            spec.validate()
        except DomainSpecError as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        if spec.domain_id in self.host.domains or any(
                m.spec.domain_id == spec.domain_id for m in self.target.active()):
            raise Refused(grpc.StatusCode.ALREADY_EXISTS, f"domain {spec.domain_id} already exists here")
        if self.target.draining:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, "node is draining")
        if len(self.host.domains) >= self.config.domains_max:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, f"at most {self.config.domains_max} domains")
        admission = self.host.admit(spec, anti_affinity=anti_affinity)
        if not admission.ok:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, admission.reason)
        domain = Domain(spec, epoch=epoch, state=DomainState.RUNNING)
        self._journal(record or {"t": "domain", "spec": spec_to_record(spec), "epoch": epoch})
        self.host.add_domain(domain, anti_affinity=anti_affinity)
        image = MemoryImage(spec.memory_mib, self.config.image_real_bytes_max, seed=spec.image_seed)
        # Hash now, off any migration's path: pre-copy then only rehashes dirtied blocks.
        image.warm_hash()
        self.images[spec.domain_id] = image
        self.metrics.inc("domains_created")
        log.info("%s: created domain %s (%d vCPU, %d MiB)", self.node_id, spec.domain_id, spec.vcpus,
                 spec.memory_mib)
        self.publish()
        return domain

    def save_domain(self, domain_id: str) -> bytes:
        """A consistent snapshot of one domain (it keeps running: the loop is not yielded)."""
        domain = self.host.domains.get(domain_id)
        if domain is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, f"no domain {domain_id} here")
        self.metrics.inc("domains_saved")
        return encapsulation.encode(domain.spec, domain.epoch, domain.state.value, self.images[domain_id])

    async def restore_domain(self, blob: bytes) -> Domain:
        """Brings a saved domain back here at epoch+1, unless a live member runs it at
        an equal or higher epoch. Raises Refused (or InputRejected for a bad file)."""
        saved = encapsulation.decode(blob, self.config.image_real_bytes_max)
        dom_id = saved.spec.domain_id
        local = self.host.domains.get(dom_id)
        if local is not None:
            raise Refused(grpc.StatusCode.ALREADY_EXISTS, f"domain {dom_id} already runs here at epoch {local.epoch}")
        departed = self.tombstones.get(dom_id)
        if departed is not None and departed[0] >= saved.epoch:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"domain {dom_id} moved on at epoch {departed[0]} to {departed[1]}; the file is at "
                          f"epoch {saved.epoch}")
        assert self.membership is not None
        peers = [m for m in self.membership.members()
                 if m.node_id != self.node_id and m.status in (MemberStatus.ALIVE, MemberStatus.SUSPECT)]
        answers = await asyncio.gather(*(self.clients.locate(m.address, dom_id) for m in peers),
                                       return_exceptions=True)
        for member, answer in zip(peers, answers):
            if isinstance(answer, Exception):
                raise Refused(grpc.StatusCode.UNAVAILABLE, f"cannot ask {member.node_id} whether it runs {dom_id}: "
                                                           f"{answer}; try again when membership is healthy")
            held, epoch = answer
            if held and epoch >= saved.epoch:
                raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                              f"domain {dom_id} already runs on {member.node_id} at epoch {epoch} "
                              f"(the file is at epoch {saved.epoch})")
        domain = self.create_domain(saved.spec, epoch=saved.epoch + 1)
        self.images[dom_id] = saved.image
        self.metrics.inc("domains_restored")
        self.event("domain_restored", domain=dom_id, epoch=domain.epoch)
        log.info("%s: restored domain %s at epoch %d", self.node_id, dom_id, domain.epoch)
        return domain

    def on_locate(self, domain_id: str) -> tuple[bool, int, str]:
        d = self.host.domains.get(domain_id)
        return (True, d.epoch, d.state.value) if d is not None else (False, 0, "")

    async def drain(self) -> int:
        """Stops accepting domains and migrates every domain away; returns how many remain."""
        self.target.draining = True
        for domain_id in sorted(self.host.domains):
            for nb in sorted(self.neighbours(), key=lambda n: n.cpu_demand_cores / n.cpu_capacity_cores):
                result = await self.migrate(domain_id, nb.node_id, require_improvement=False)
                if result.migrated:
                    break
        return len(self.host.domains)

    # -- migration: source side ----------------------------------------------------
    async def migrate(self, domain_id: str, target_id: str, *, require_improvement: bool,
                      bandwidth_mib_s: float | None = None) -> MigrationResult:
        """Migrates one domain to one node; returns the outcome (or why it was refused)."""
        began = self.begin_migration(domain_id, target_id, require_improvement=require_improvement,
                                     bandwidth_mib_s=bandwidth_mib_s)
        if isinstance(began, MigrationResult):
            return began
        return await self.run_migration(began)

    def begin_migration(self, domain_id: str, target_id: str, *, require_improvement: bool,
                        bandwidth_mib_s: float | None = None) -> OutgoingMigration | MigrationResult:
        """Checks and registers an outgoing migration (synchronously: no await)."""
        assert self.dissemination is not None
        domain = self.host.domains.get(domain_id)
        if domain is None:
            return MigrationResult(False, f"refused: no domain {domain_id} here")
        if domain.state is not DomainState.RUNNING:
            return MigrationResult(False, f"refused: domain {domain_id} is {domain.state.value}")
        if target_id == self.node_id:
            return MigrationResult(False, "refused: target is this node")
        entry = self.dissemination.entries.get(target_id)
        if entry is None:
            return MigrationResult(False, f"refused: unknown node {target_id}")
        if self._outgoing_active() >= self.config.migrations_out_max:
            return MigrationResult(False, f"refused: {self._outgoing_active()} migrations already in flight "
                                          f"(max {self.config.migrations_out_max})")
        src_demand = self.local_view().cpu_demand_cores
        mig = OutgoingMigration(uuid.uuid4().hex, domain_id, target_id, entry.load.address, domain.epoch,
                                self.now_s())
        mig.require_improvement = require_improvement
        mig.bandwidth_bytes_s = (bandwidth_mib_s or self.config.migration_bandwidth_mib_s) * MIB
        mig.source_demand_cores = src_demand
        self.outgoing[mig.migration_id] = mig
        domain.state = DomainState.MIGRATING_OUT
        self.metrics.inc("migrations_started")
        self.event("migration_started", migration=mig.migration_id, domain=domain_id, target=target_id)
        return mig

    async def run_migration(self, mig: OutgoingMigration) -> MigrationResult:
        image_memory.tune_allocator()  # chunk buffers reuse freed heap, not fresh pages
        domain = self.host.domains[mig.domain_id]
        target_id = mig.target_id
        domain_id = mig.domain_id
        demand = domain.demand_cores(self.model_time_s())
        image = self.images[domain_id]
        req = PrepareRequest(mig.migration_id, self.node_id, domain.spec, domain.epoch, demand,
                             mig.source_demand_cores, self.host.spec.cpu_cores, image.real_page_count * PAGE_SIZE,
                             mig.require_improvement)
        try:
            try:
                decision: PrepareDecision = await self.clients.prepare(mig.target_address, req)
            except grpc.aio.AioRpcError as exc:
                return self._abort_local(mig, "failed", f"prepare failed: {exc.code().name} {exc.details()}")
            if not decision.accepted:
                return self._abort_local(mig, "rejected", f"rejected by {target_id}: {decision.reason}")
            mig.step("accepted")
            self._maybe_crash("source:after_prepare")
            self.sent_recently.append((self.now_s(), target_id, demand))
            try:
                await self._precopy(mig, domain, image)
            except grpc.aio.AioRpcError as exc:
                self._spawn(self._abort_remote(mig))
                return self._abort_local(mig, "failed", f"transfer failed: {exc.code().name} {exc.details()}")
            mig.step("transferred")
            # The domain stays paused from the stop-and-copy until the outcome is known.
            image_hash = image.content_hash()
            try:
                self._maybe_crash("source:after_commit_sent", delay_s=0.002)
                commit: CommitDecision = await self.clients.commit(mig.target_address, mig.migration_id,
                                                                   mig.epoch + 1, image_hash)
            except grpc.aio.AioRpcError as exc:
                mig.step("failed", f"commit answer lost: {exc.code().name}")
                self.metrics.inc("migrations_in_doubt")
                log.warning("%s: commit of %s to %s in doubt (%s); asking the target", self.node_id, domain_id,
                            target_id, exc.code().name)
                return await self._resolve_in_doubt(mig)
            if commit.committed:
                self._maybe_crash("source:after_commit_ack")
                return self._finish(mig, commit.epoch)
            self._spawn(self._abort_remote(mig))
            return self._abort_local(mig, "refused", f"commit refused by {target_id}: {commit.reason}")
        except asyncio.CancelledError:
            if mig.state in (SourceState.PREPARING, SourceState.TRANSFERRING):
                self._abort_local(mig, "failed", "agent stopping")
            raise

    async def _precopy(self, mig: OutgoingMigration, domain: Domain, image: MemoryImage) -> None:
        """Xen pre-copy over gRPC streams: rounds while the guest runs and dirties
        pages, then the stop-and-copy with the guest paused (DESIGN.md, Live migration).

        Rounds take real wall time; the guest's dirtying advances with it (in
        model time). Virtual pages are counted in accounted_bytes but cost no
        wall time: only real pages have bytes to move.
        """
        spec = domain.spec
        limits = PreCopyLimits(bandwidth_limit_bytes_s=mig.bandwidth_bytes_s,
                               xen_rate_adaptation=self.config.migration_xen_rate_adaptation)
        pre = PreCopy.for_image(image, limits)
        dirtying = (DirtyModel.from_mib(spec.wws_mib, spec.dirty_rate_mib_s, seed=spec.image_seed)
                    if spec.wws_mib > 0 and spec.dirty_rate_mib_s > 0 else None)
        image.take_dirty()  # start the dirty log now: round 1 sends everything anyway
        step: Round | StopAndCopy = pre.first_round()
        mig.transfer_started_at_s = self.now_s()
        model_t = self.model_time_s()
        while isinstance(step, Round):
            started = self.now_s()
            await self._send_pages(mig, image, step.real_pages, step.number, step.rate_bytes_s)
            self._maybe_crash("source:mid_precopy")
            elapsed_s = self.now_s() - started
            if dirtying is not None:
                dirtying.advance(image, model_t, model_t + elapsed_s * self.config.time_scale)
            model_t += elapsed_s * self.config.time_scale
            step = pre.after_round(image.take_dirty(), elapsed_s)
        # Journaled before COMMIT can be sent: after a crash from here on, the
        # domain comes back paused and in doubt, never running beside a committed copy.
        self._journal({"t": "pause", "mid": mig.migration_id, "id": mig.domain_id, "target": mig.target_id,
                       "addr": mig.target_address, "epoch": mig.epoch})
        domain.state = DomainState.PAUSED
        mig.paused_at_s = self.now_s()
        await self._send_pages(mig, image, step.real_pages, step.number, step.rate_bytes_s)
        mig.transfer_ended_at_s = self.now_s()
        self._maybe_crash("source:after_pause")
        mig.rounds = step.number
        mig.stop_reason = step.reason.value
        mig.accounted_bytes = pre.stats.accounted_bytes_sent

    async def _send_pages(self, mig: OutgoingMigration, image: MemoryImage, pages, round_no: int,
                          rate_bytes_s: float) -> None:
        if not len(pages):
            return  # only virtual pages this round: nothing to ship
        received, _ = await self.clients.transfer(
            mig.target_address, mig.migration_id, image.iter_page_chunks(pages, self.config.transfer_chunk_bytes),
            round_no=round_no, rate_bytes_s=rate_bytes_s)
        mig.bytes_sent += len(pages) * PAGE_SIZE

    def _finish(self, mig: OutgoingMigration, epoch: int) -> MigrationResult:
        if mig.paused_at_s is not None:
            mig.downtime_s = self.now_s() - mig.paused_at_s
        mig.step("committed")
        self._journal({"t": "gone", "mid": mig.migration_id, "id": mig.domain_id, "epoch": epoch,
                       "to": mig.target_id})
        self.host.remove_domain(mig.domain_id)
        self.images.pop(mig.domain_id, None)
        self.cooldown_until_s.pop(mig.domain_id, None)
        self.tombstones[mig.domain_id] = (epoch, mig.target_id)
        self.target.departed_epochs[mig.domain_id] = epoch
        duration = self.now_s() - mig.started_at_s
        transfer_s = prepare_s = 0.0
        if mig.transfer_started_at_s is not None and mig.transfer_ended_at_s is not None:
            transfer_s = mig.transfer_ended_at_s - mig.transfer_started_at_s
            prepare_s = mig.transfer_started_at_s - mig.started_at_s
        self.metrics.inc("migrations_succeeded")
        self.metrics.inc("migration_bytes_sent", mig.bytes_sent)
        log.info("%s: migrated %s to %s at epoch %d (%d rounds, %d bytes, %.3f s of which transfer %.3f s, "
                 "downtime %.1f ms, %s)", self.node_id, mig.domain_id, mig.target_id, epoch, mig.rounds,
                 mig.bytes_sent, duration, transfer_s, mig.downtime_s * 1000, mig.stop_reason)
        self.publish()
        if self.prom is not None:
            self.prom.observe_migration(duration, mig.downtime_s if mig.paused_at_s is not None else None)
        self.event("migration_finished", migration=mig.migration_id, domain=mig.domain_id, target=mig.target_id,
                   epoch=epoch, rounds=mig.rounds, bytes=mig.bytes_sent, duration_s=round(duration, 4),
                   transfer_s=round(transfer_s, 4),
                   downtime_ms=round(mig.downtime_s * 1000, 3), stop_reason=mig.stop_reason)
        return MigrationResult(True, "", mig.migration_id, epoch, mig.bytes_sent, duration, mig.rounds,
                               mig.downtime_s, mig.stop_reason, mig.accounted_bytes, transfer_s, prepare_s)

    def _abort_local(self, mig: OutgoingMigration, event: str, reason: str) -> MigrationResult:
        paused = mig.paused_at_s is not None or mig.state is SourceState.IN_DOUBT
        mig.step(event, reason)
        if paused:
            self._journal({"t": "resume", "mid": mig.migration_id, "id": mig.domain_id})
        domain = self.host.domains.get(mig.domain_id)
        if domain is not None:
            domain.state = DomainState.RUNNING
        # Don't retry the same domain at once: let gossip catch up first.
        self.cooldown_until_s[mig.domain_id] = self.now_s() + self.config.gossip_interval_ms * 2 / 1000
        self.metrics.inc("migrations_failed", reason=event)
        self.event("migration_failed", migration=mig.migration_id, domain=mig.domain_id, target=mig.target_id,
                   reason=event, detail=reason)
        (log.info if event == "rejected" else log.warning)("%s: migration of %s to %s %s: %s", self.node_id,
                                                            mig.domain_id, mig.target_id, event, reason)
        return MigrationResult(False, reason, mig.migration_id)

    async def _abort_remote(self, mig: OutgoingMigration) -> None:
        try:
            await self.clients.abort(mig.target_address, mig.migration_id, mig.reason or "aborted by source")
        except grpc.aio.AioRpcError:
            pass  # the reservation's lease expires on its own

    async def _resolve_in_doubt(self, mig: OutgoingMigration) -> MigrationResult:
        """Asks the target until the outcome is known; the domain stays paused meanwhile."""
        delay_s = 0.1
        while True:
            # The target may have restarted on another address: membership knows where it is now.
            member = self.membership.member(mig.target_id) if self.membership is not None else None
            if member is not None:
                mig.target_address = member.address
            try:
                outcome, epoch = await self.clients.query(mig.target_address, mig.migration_id)
                if outcome == OUTCOME_RESERVED:
                    outcome = await self.clients.abort(mig.target_address, mig.migration_id, "commit in doubt")
                if outcome == OUTCOME_COMMITTED:
                    return self._finish(mig, epoch or mig.epoch + 1)
                if outcome in (OUTCOME_ABORTED, OUTCOME_UNKNOWN):
                    return self._abort_local(mig, "aborted", f"target reports {outcome}")
            except grpc.aio.AioRpcError as exc:
                mig.step("failed")
                log.warning("%s: target %s unreachable while resolving %s: %s", self.node_id, mig.target_id,
                            mig.migration_id, exc.code().name)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 5.0)

    # -- migration: target side -------------------------------------------------
    def on_prepare(self, req: PrepareRequest) -> PrepareDecision:
        image_memory.tune_allocator()  # chunk buffers reuse freed heap, not fresh pages
        t = self.model_time_s()
        decision = self.target.on_prepare(self.now_s(), req, self.host.sample(t).cpu_demand_cores)
        if decision.accepted:
            self.metrics.inc("reservations_accepted")
            # At once: a delay would let a small image's whole migration finish first.
            self._maybe_crash("target:after_prepare")
        else:
            self.metrics.inc("reservations_refused")
            log.info("%s: refused %s from %s: %s", self.node_id, req.spec.domain_id, req.source_id, decision.reason)
        return decision

    async def populate_reserved_image(self, migration_id: str, timeout_s: float) -> bool:
        """Waits, at most timeout_s, until the memory reserved for an accepted
        handoff's image is faulted in (image_memory.wait_populated): a hypervisor
        allocates a guest's memory when it reserves it, and pages faulted now are
        not faulted while round 1 streams in. Returns whether it is all in; an
        image not yet populated is still correct, only slower to fill."""
        mig = self.target.incoming.get(migration_id)
        if mig is None:
            return False
        return await image_memory.wait_populated(mig.image.buffer, timeout_s)

    def on_chunk(self, migration_id: str, first_page: int, data: bytes) -> None:
        self._maybe_crash("target:mid_precopy")
        self.target.on_chunk(migration_id, first_page, data)
        self.metrics.inc("migration_bytes_received", len(data))

    def bytes_received(self, migration_id: str) -> int:
        return self.target.incoming[migration_id].bytes_received

    def on_commit(self, migration_id: str, epoch: int, image_hash: str) -> CommitDecision:
        self._maybe_crash("target:after_pause")  # the stop-and-copy arrived; COMMIT not applied
        decision, domain = self.target.on_commit(self.now_s(), migration_id, epoch, image_hash)
        if domain is not None:
            # Journaled before the answer: the source drops its copy on COMMITTED.
            self._journal({"t": "arrived", "mid": migration_id, "spec": spec_to_record(domain.spec), "epoch": epoch})
            self._maybe_crash("target:after_commit_sent")  # journaled, not yet answered
            self._maybe_crash("target:after_commit_ack", delay_s=0.05)  # after the answer went out
            self.images[domain.domain_id] = self.target.incoming[migration_id].image
            self.cooldown_until_s[domain.domain_id] = self.now_s() + self.config.domain_cooldown_ms / 1000
            self.tombstones.pop(domain.domain_id, None)
            self.metrics.inc("migrations_received")
            self.event("domain_arrived", domain=domain.domain_id, epoch=epoch, migration=migration_id)
            log.info("%s: domain %s arrived at epoch %d", self.node_id, domain.domain_id, epoch)
            self.publish()
        elif not decision.committed:
            log.warning("%s: refused commit %s: %s", self.node_id, migration_id, decision.reason)
        return decision

    def on_abort(self, migration_id: str) -> str:
        return self.target.on_abort(migration_id)

    def on_query(self, migration_id: str) -> tuple[str, int]:
        outcome = self.target.outcome(migration_id)
        mig = self.target.incoming.get(migration_id)
        return outcome, (mig.committed_epoch if mig else 0)

    # -- status -------------------------------------------------------------------
    def status(self) -> dict:
        assert self.dissemination is not None
        t = self.model_time_s()
        sample = self.host.sample(t)
        alloc = {a[0]: a[2] for a in sample.allocations}
        domains = [{"id": d.domain_id, "epoch": d.epoch, "state": d.state.value,
                    "cpu_demand_cores": round(d.demand_cores(t), 4),
                    "cpu_allocated_cores": round(alloc.get(d.domain_id, 0.0), 4),
                    "memory_mib": d.spec.memory_mib, "vcpus": d.spec.vcpus, "workload": d.spec.workload.to_text(),
                    "dirty_rate_mib_s": d.spec.dirty_rate_mib_s, "wws_mib": d.spec.wws_mib,
                    "labels": dict(d.spec.labels)}
                   for d in sorted(self.host.domains.values(), key=lambda d: d.domain_id)]
        # Incoming handoffs hold a reservation here: listed as reserved-in (not an active copy).
        domains += [{"id": m.spec.domain_id, "epoch": m.epoch + 1, "state": "reserved-in", "cpu_demand_cores": 0.0,
                     "cpu_allocated_cores": 0.0, "memory_mib": m.spec.memory_mib, "vcpus": m.spec.vcpus,
                     "workload": m.spec.workload.to_text(), "dirty_rate_mib_s": m.spec.dirty_rate_mib_s,
                     "wws_mib": m.spec.wws_mib, "labels": dict(m.spec.labels)} for m in self.target.active()]
        peers = [{"id": load.node_id, "address": load.address, "cpu_utilization": round(load.cpu_utilization, 4),
                  "memory_utilization": round(load.memory_utilization, 4), "age_s": round(age, 3),
                  "domains": load.domains} for load, age in self.dissemination.peers(self.now_s())]
        migrations = [{"id": m.migration_id, "domain_id": m.domain_id, "direction": "out", "peer_id": m.target_id,
                       "state": m.state.value} for m in self.outgoing.values() if m.state not in SOURCE_TERMINAL]
        migrations += [{"id": m.migration_id, "domain_id": m.spec.domain_id, "direction": "in",
                        "peer_id": m.source_id, "state": m.state.value} for m in self.target.active()]
        mean = self.mean_estimate()
        assert self.membership is not None
        now = self.now_s()
        in_view = {m.node_id for m in self.membership.view()}
        members = [{"id": m.node_id, "address": m.address, "status": m.status.value, "incarnation": m.incarnation,
                    "last_change_s": round(max(0.0, now - m.last_change_s), 3), "in_view": m.node_id in in_view}
                   for m in self.membership.members()]
        counters = self.metrics.snapshot()
        counters.update({f"membership_{k}": v for k, v in self.membership.counters.items()})
        return {
            "id": self.node_id, "address": self.address, "model_time_s": round(t, 3),
            "cpu_utilization": round(sample.cpu_utilization, 4),
            "memory_utilization": round(sample.memory_utilization, 4),
            "cpu_capacity_cores": sample.cpu_capacity_cores, "cpu_demand_cores": round(sample.cpu_demand_cores, 4),
            "cpu_unserved_cores": round(sample.cpu_unserved_cores, 4),
            "memory_capacity_mib": sample.memory_capacity_mib, "memory_used_mib": sample.memory_used_mib,
            "domains": domains, "peers": peers, "migrations": migrations,
            "mean_utilization_estimate": round(mean, 4) if mean is not None else -1.0,
            "balancing": self.balancing, "draining": self.target.draining,
            "incarnation": self.membership.incarnation, "members": members, "rates": self.traffic_rates(),
            "counters": dict(sorted(counters.items())), "ha": self.ha.status(),
        }
