"""Deterministic simulation of a Shoal cluster: the real cores, a virtual clock, seeded faults.

Theory of operation
-------------------
One process runs N node agents on the in-memory network
(agent/adapters/memory_transport.py) with a virtual clock, in the manner of
FoundationDB's simulator and TigerBeetle's VOPR:

- A discrete-event engine: a heap of (virtual time, sequence, callback). No
  asyncio and no task per loop: every node schedules its own next events
  (the membership core says when it is next due, `Membership.next_due_s`;
  gossip, policy and housekeeping re-arm themselves), so the cost of a node
  does not depend on N.
- One seed. `Random(seed)` drives every fault, every latency and the domain
  plan; each node's cores get their own `Random` drawn from it at start. The
  same seed gives the same run, event for event (the trace digest says so).
- The same cores as the gRPC agent (agent/runtime/agent.py), never a second
  implementation: `Membership`, `Dissemination`, `BalancePolicy`,
  `OutgoingMigration` / `TargetHandoffs`, the pre-copy planner (`simulate`,
  Xen's stopping rules, in virtual time from a bandwidth model), the
  ownership journal `fold`, the replica cores `OwnerReplication` /
  `ReplicaTable`, and the hypervisor `Host` / `Domain`. The glue here mirrors
  the agent's: what it journals and when, the order of handoff steps, the
  in-doubt resolution by Query, and high availability step by step as
  agent/runtime/ha.py takes it (below). Memory images are virtual beyond one
  real page, whose bytes do cross the network and whose hash the target
  checks at COMMIT.
- Faults (fault classes none, crash, partition, network, all): crash (plain;
  or at the next journal append, losing that unsynced record or keeping it),
  restart from the journal with a higher incarnation, partitions (isolate
  one, random split, asymmetric), heal, loss, duplication, reordering, delay,
  a slow node (the Lifeguard case), failed migration transfers.
- High availability, as HighAvailability does it: every ha_push_interval_ms
  (and at once when membership declares a member dead) each node asks its
  OwnerReplication what each buddy should hold and pushes it (Replicate); a
  buddy's ReplicaTable stores it, fencing its own copy if the push outranks
  it, and answers conflicts, which the owner fences at once or first
  verifies (Locate). Then the table's failover decides, from the node's own
  membership verdicts (dead only, never suspect), what to restart: the
  members ranked ahead are asked (Holds), every live member and the "dead"
  owner are asked whether a copy already runs (Locate), and the domain is
  restarted here (journaled `restarted`, which the ownership fold recovers)
  or on a peer with room (Adopt), or reported unplaced and decided again.
  A fenced copy is journaled `fenced` and leaves a tombstone. HA calls go
  through the same network (counted apart as `ha` messages); a call to an
  address nobody listens on fails at once, as a refused connection does.
- Safety checkers after every step of a node that can change ownership (and
  after every event of any kind in clusters of up to CHECK_EVERY_EVENT_NODES):
  at most one active copy of a domain per epoch (while faults act, copies at
  different epochs are legal: two sides of a partition, an owner back from a
  crash after its domains were restarted; they meet and the older is
  fenced), a node's copy never older than what it ran or saw replace it,
  incarnations only rise, no host over its memory (domains and
  reservations), every message within its size bound (membership messages
  and the HA calls encoded with the real codecs, a sample of them at scale),
  no domain vanishing from every journal while its holder lives. The first
  violation stops the run.
- Liveness: the faults stop (network healed, crashed nodes due to restart
  restart), and within a bound derived from the configuration (failure
  detection, HA push and refresh intervals, RPC deadlines, balancing rounds)
  membership must converge, every handoff complete or abort (those the
  balancing rule begins after the faults stopped may still be in flight, if
  younger than the reservation lease: under a shifting load a large cluster
  always has one somewhere), high
  availability settle (no restart or verification in flight, nothing
  unplaced that fits a live node), every domain with a live holder or a
  live replica run exactly once (a domain whose owner and every replica
  holder died is `lost`, counted apart), and the utilization CoV fall under
  its target.

Cost per node stays flat in N: membership verdicts are kept per node as one
byte per node index, and the live set handed to the replica cores is one
frozenset object per distinct view (nodes that agree share it), rebuilt only
when a verdict changes. A member new to a node does not wake its HA loop
(the next round takes it in): in a 10 000-node start every node hears of
10 000 of them.

Start. `join` boots every node within the first second, each joining through
three seeds, and membership spreads by SWIM's dissemination: every node learns
of every other, O(N^2) updates in all, which one process cannot afford at
10 000 nodes. `formed` starts the nodes as a cluster that converged long ago
(Membership.bootstrap: every member known alive, a random view, one shared
Member object per node); everything after the first instant runs the same
cores as `join`. `auto` (the default) joins up to FORMED_START_NODES_MIN - 1
nodes and starts formed from there; the result says which.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import heapq
import math
import sys
import time
import weakref
from collections import Counter, deque
from itertools import compress
from dataclasses import dataclass, field
from random import Random
from typing import Any, Callable, Iterator

from agent.adapters import grpc_codec, replica_codec
from agent.adapters.memory_transport import MemoryNetwork
from agent.core import membership_codec
from agent.core.config import AgentConfig, config_from_mapping
from agent.core.dissemination import Dissemination
from agent.core.handoff import SOURCE_TERMINAL, TARGET_TERMINAL, OutgoingMigration, SourceState, TargetHandoffs
from agent.core.membership import Member, MemberEvent, Membership, MemberStatus, Send
from agent.core.membership_config import MembershipConfig, detection_bound_s
from agent.core.messages import (OUTCOME_ABORTED, OUTCOME_COMMITTED, OUTCOME_RESERVED, OUTCOME_UNKNOWN,
                                 CommitDecision, Exchange, NodeLoad, PrepareDecision, PrepareRequest)
from agent.core.ownership import fold, spec_to_record
from agent.core.policy import BalancePolicy, DomainLoad, LocalView, Neighbour, kept_together, overload_reason
from agent.core.precopy import PreCopyLimits, simulate
from agent.core.replicas import (Conflict, Copy, FenceLocal, OwnedDomain, OwnerReplication, PeerRoom, Replica,
                                 ReplicaPush, ReplicaTable, ReplicateOutcome, Restart, Room, Unplaced,
                                 newer_copy_known)
from agent.core.validation import InputRejected
from hypervisor.domain import Domain, DomainSpec, DomainSpecError, DomainState
from hypervisor.host import Host, HostSpec
from hypervisor.memory import PAGE_SIZE, PAGES_PER_MIB, MemoryImage
from hypervisor.workload import WorkloadSpec
from shoal.v1 import migration_pb2, replica_pb2

FAULT_CLASSES = ("none", "crash", "partition", "network", "all")
ALIVE, SUSPECT, DEAD, LEFT = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT
ACTIVE_STATES = (DomainState.RUNNING, DomainState.MIGRATING_OUT)
MIB = 1024 * 1024
# Up to this many nodes every event is followed by every per-node check; above, only the events
# that can change ownership or reservations are (the others cannot break those invariants).
CHECK_EVERY_EVENT_NODES = 256
# Up to this many nodes every membership message is encoded with the real codec; above, one in
# SIZE_SAMPLE_EVERY is (the bound is a property of the core's budgets, not of N).
ENCODE_ALL_NODES = 256
SIZE_SAMPLE_EVERY = 64
# Membership convergence is checked on every live observer up to this many nodes; above, on a
# seeded sample of this many observers (each against every node).
CONVERGENCE_OBSERVERS_MAX = 256
# One real page per image: its bytes cross the network and the target checks their hash.
IMAGE_REAL_BYTES = PAGE_SIZE
HOUSEKEEPING_S = 0.5
TRACE_TAIL = 40
# Faults begin once the cluster has formed, and restarted nodes come back after this long.
FAULTS_START_S = 5.0
RESTART_AFTER_S = (3.0, 30.0)
FAULT_WINDOW_S = (5.0, 30.0)
# Mean model seconds between fault injections (exponential gaps).
FAULT_GAP_S_MEAN = 8.0
PERMANENT_CRASH_P = 0.1
# A crash armed at the next journal append that has not happened by then happens anyway.
ARMED_CRASH_S_MAX = 30.0
DEFAULT_COV_TARGET = 0.2
SINE_PERIOD_S = 300.0
# A call to an address nobody listens on (a crashed node) is refused about this fast, as a TCP
# RST is; a call across a partition waits for its deadline instead.
REFUSED_S = 0.001
LIVE_STATES = (ALIVE, SUSPECT)


# What a finished incoming handoff keeps in place of its image (a terminal record never reads it).
_NO_IMAGE = MemoryImage.empty(0, 0)


class _NodeCrash(Exception):
    """Raised inside a node's handler by an armed journal crash: the node dies on the spot."""


@dataclass
class Violation:
    seed: int
    invariant: str
    detail: str
    time_s: float

    def to_json(self) -> dict:
        return {"seed": self.seed, "invariant": self.invariant, "detail": self.detail, "time_s": round(self.time_s, 4)}


START_MODES = ("auto", "join", "formed")
# From here `auto` starts formed: a 1000-node join already costs minutes of one core.
FORMED_START_NODES_MIN = 1000


@dataclass
class SimOptions:
    nodes: int = 16
    domains: int = 64
    seed: int = 1
    duration_s: float = 120.0
    faults: str = "none"
    cov_target: float = DEFAULT_COV_TARGET
    settle_s_max: float | None = None  # None: derived from the configuration (liveness_bound_s)
    cpu_cores: float = 16.0
    memory_mib: int = 65_536
    profile: str = "lan"
    # sine: every domain's demand swings around its level (period SINE_PERIOD_S, random phase), so
    # the balancing rule keeps migrating while faults hit; constant: balance once, then quiet.
    workload: str = "sine"
    # join | formed | auto (formed from FORMED_START_NODES_MIN nodes): see "Start" above.
    start: str = "auto"
    # A line on stderr every 10 model seconds (model and wall time, messages, migrations): long runs.
    progress: bool = False
    # Test hook: called once at this model time with the simulation (inject a bug, check the checker).
    inject_at_s: float | None = None
    inject: Callable[["Simulation"], None] | None = None

    def validate(self) -> "SimOptions":
        if self.nodes < 2:
            raise ValueError(f"--nodes must be at least 2, got {self.nodes}")
        if self.domains < 0:
            raise ValueError(f"--domains must be >= 0, got {self.domains}")
        if self.faults not in FAULT_CLASSES:
            raise ValueError(f"--faults must be one of {', '.join(FAULT_CLASSES)}, got {self.faults!r}")
        if self.start not in START_MODES:
            raise ValueError(f"--start must be one of {', '.join(START_MODES)}, got {self.start!r}")
        if self.workload not in ("sine", "constant"):
            raise ValueError(f"workload must be sine or constant, got {self.workload!r}")
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ValueError(f"--duration must be a positive number of model seconds, got {self.duration_s}")
        return self

    @property
    def formed(self) -> bool:
        return self.start == "formed" or (self.start == "auto" and self.nodes >= FORMED_START_NODES_MIN)


@dataclass
class SimResult:
    seed: int
    nodes: int
    domains: int
    faults: str
    start: str  # join | formed
    model_seconds: float
    wall_seconds: float
    violation: Violation | None
    liveness_failure: str | None
    settle_s: float | None
    settle_bound_s: float
    messages: int
    messages_per_node_per_s: float
    messages_per_node_per_s_steady: float  # second half of the fault phase
    membership_messages_per_node_per_s: float
    ha_messages_per_node_per_s: float  # replica pushes, Holds, Locate, Adopt and their answers
    migrations: int
    migrations_failed: int
    final_cov: float
    lost: int
    lost_domains: list[str]
    restarts: int  # high availability: domains restarted for a confirmed-dead owner
    fenced: int  # running copies destroyed because a newer copy won
    unplaced: int  # domains of dead owners no node had room for, at the end
    unplaced_reports: int  # unplaced reports over the run (once per domain and reporter)
    faults_injected: dict[str, int]
    message_bytes_max_seen: int
    messages_encoded: int
    rpc_bytes_max_seen: int  # HA calls and answers, encoded as the protobuf messages the agent sends
    rpcs_encoded: int
    trace_digest: str
    trace_tail: list[str]

    def to_json(self) -> dict:
        return {
            "seed": self.seed, "nodes": self.nodes, "domains": self.domains, "faults": self.faults,
            "start": self.start, "model_seconds": round(self.model_seconds, 3), "wall_seconds": round(self.wall_seconds, 3),
            "violation": self.violation.to_json() if self.violation else None,
            "liveness_failure": self.liveness_failure,
            "settle_s": round(self.settle_s, 3) if self.settle_s is not None else None,
            "settle_bound_s": round(self.settle_bound_s, 3),
            "messages": self.messages, "messages_per_node_per_s": round(self.messages_per_node_per_s, 3),
            "messages_per_node_per_s_steady": round(self.messages_per_node_per_s_steady, 3),
            "membership_messages_per_node_per_s": round(self.membership_messages_per_node_per_s, 3),
            "ha_messages_per_node_per_s": round(self.ha_messages_per_node_per_s, 3),
            "migrations": self.migrations, "migrations_failed": self.migrations_failed,
            "final_cov": round(self.final_cov, 4), "lost": self.lost, "lost_domains": self.lost_domains[:20],
            "restarts": self.restarts, "fenced": self.fenced, "unplaced": self.unplaced,
            "unplaced_reports": self.unplaced_reports,
            "faults_injected": dict(sorted(self.faults_injected.items())),
            "message_bytes_max_seen": self.message_bytes_max_seen, "messages_encoded": self.messages_encoded,
            "rpc_bytes_max_seen": self.rpc_bytes_max_seen, "rpcs_encoded": self.rpcs_encoded,
            "trace_digest": self.trace_digest,
        }


class SimJournal:
    """The ownership journal as a list of records with a synced prefix (the fsync'd part).

    The real journal fsyncs every append before the step takes effect. A crash
    armed at the next append either loses that record (the crash came before
    fsync returned) or keeps it (the crash came right after); either way the
    effect the record guards never happens.
    """

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.synced = 0

    def append(self, record: dict) -> None:
        self.records.append(record)
        self.synced = len(self.records)

    def lose_unsynced_tail(self) -> None:
        del self.records[self.synced:]


# -- the cluster plan ------------------------------------------------------------------------
def plan_domains(opts: SimOptions, rng: Random) -> list[tuple[DomainSpec, int]]:
    """Domain specs and their first node: total demand half the cluster, all on a quarter of the nodes.

    The skewed start gives the balancing rule work to do; memory is sized so a
    quarter of the nodes holds every domain.
    """
    if opts.domains == 0:
        return []
    loaded = max(1, math.ceil(opts.nodes / 4))
    per_node = math.ceil(opts.domains / loaded)
    total_demand = 0.5 * opts.nodes * opts.cpu_cores
    vcpus = max(1, math.ceil(total_demand / opts.domains / 0.6))
    memory_mib = max(64, min(4096, int(0.9 * opts.memory_mib / per_node) // 64 * 64))
    if memory_mib * per_node > opts.memory_mib or vcpus * per_node > opts.cpu_cores * 16:
        raise ValueError(f"{opts.domains} domains do not fit a quarter of {opts.nodes} nodes "
                         f"({opts.cpu_cores:g} cores, {opts.memory_mib} MiB each)")
    weights = [0.5 + rng.random() for _ in range(opts.domains)]
    scale = total_demand / sum(weights)
    plans = []
    for i, w in enumerate(weights):
        level = min(1.0, w * scale / vcpus)
        wws_mib = float(min(memory_mib // 8, 256))
        if opts.workload == "sine":
            workload = WorkloadSpec("sine", (("amplitude", round(0.3 * level, 4)), ("mean", round(level, 4)),
                                             ("period_s", SINE_PERIOD_S),
                                             ("phase_s", float(rng.randrange(int(SINE_PERIOD_S))))))
        else:
            workload = WorkloadSpec("constant", (("level", round(level, 4)),))
        spec = DomainSpec(domain_id=f"dom-{i:05d}", vcpus=vcpus, memory_mib=memory_mib, name=f"guest {i}",
                          workload=workload, image_seed=i + 1,
                          wws_mib=wws_mib, dirty_rate_mib_s=round(rng.uniform(0.0, 60.0), 1))
        plans.append((spec, i % loaded))
    return plans


def liveness_bound_s(mcfg: MembershipConfig, cfg: AgentConfig, nodes: int, domains: int) -> float:
    """How long after the faults stop the cluster gets to settle.

    A crash just before the end is detected within detection_bound_s; a healed
    partition merges within a reconnect interval plus a sync; a reservation
    left by an interrupted handoff expires within its lease (and the in-doubt
    source asks every few seconds). High availability then acts on the
    verdicts: within a push interval a buddy decides a restart and makes
    three calls in turn (Holds ahead, Locate, Adopt), each within an RPC
    deadline, and the survivors of a healed partition meet within a refresh
    interval (twice: a push may find a copy that is verified first, and a
    restart pushes its new record before the next meeting). Then balancing
    needs rounds to move what the faults displaced: every domain of a node,
    two at a time, a policy interval plus a migration each, bounded generously.
    """
    membership_s = detection_bound_s(mcfg, nodes) + (mcfg.reconnect_interval_ms + mcfg.sync_interval_ms) / 1000
    handoff_s = cfg.reservation_lease_ms / 1000 + 2 * cfg.rpc_timeout_ms / 1000 + 5.0
    ha_s = 2 * (cfg.ha_push_interval_ms + cfg.ha_refresh_ms) / 1000 + 4 * cfg.rpc_timeout_ms / 1000
    per_node = max(1, math.ceil(domains / max(1, nodes)))
    balance_s = 60.0 + per_node * (cfg.policy_interval_ms / 1000 + 5.0)
    return membership_s + handoff_s + ha_s + balance_s


# -- one node ------------------------------------------------------------------------------
def node_id_of(index: int) -> str:
    return f"n{index:05d}"


class SimNode:
    """One agent's state: the same cores the asyncio Agent holds, driven by events."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.node_id = node_id_of(index)
        self.ip = f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"
        self.gen = 0
        self.up = False
        self.address = ""
        self.journal = SimJournal()
        self.incarnation_persisted = 0  # the identity file's incarnation (rises on every start)
        self.incarnation_max = 0  # highest own incarnation ever: must never go down
        self.crash_armed: str | None = None  # "lose_tail" | "keep_tail": crash at the next journal append
        self.restart_pending = False
        self.permanently_down = False
        self.up_since_s = 0.0
        self.up_total_s = 0.0
        self.active: dict[str, int] = {}  # domain id -> epoch of this node's active copies (as last checked)

    def start(self, sim: "Simulation", now_s: float, seeds: tuple[str, ...]) -> None:
        self.gen += 1
        self.up = True
        self.up_since_s = now_s
        self.address = f"{self.ip}:{7000 + self.gen}"
        cfg = sim.config
        self.rng = Random(sim.rng.getrandbits(64))
        self.host = Host(sim.host_spec)
        self.target = TargetHandoffs(self.node_id, self.host, cfg)
        self.policy = BalancePolicy(cfg)
        self.outgoing: dict[str, OutgoingMigration] = {}
        self.tombstones: dict[str, tuple[int, str]] = {}
        self.cooldown_until_s: dict[str, float] = {}
        self.sent_recently: list[tuple[float, str, float]] = []
        self.fallbacks: dict[str, list[str]] = {}
        self.pending: dict[int, tuple[Callable, Callable]] = {}
        self.rpc_seq = 0
        self.mig_seq = 0
        self.mtick_at = math.inf
        self.mtick_token = 0
        self.incarnation_persisted += 1
        self.membership = Membership(self.node_id, self.address, sim.mcfg, self.rng, now_s,
                                     incarnation=self.incarnation_persisted)
        self.dissemination = Dissemination(self.node_id, self.address, cfg, self.rng, seeds,
                                           heartbeat_origin=int(now_s * 1000) + 1)
        self.seeds = seeds
        # High availability (HighAvailability in agent/runtime/ha.py): in memory only, as there.
        self.ha_owner = OwnerReplication(self.node_id, cfg.ha_replicas, cfg.ha_refresh_ms / 1000)
        self.ha_table = ReplicaTable(self.node_id, entries_max=cfg.domains_max * cfg.ha_replicas)
        self.dead_since: dict[str, float] = {}  # confirmed dead by membership -> local time of the verdict
        self.ha_busy: set[str] = set()  # domains with a restart or a verification in flight
        self.ha_token = 0  # the live chain of HA rounds (a wake starts a new one)
        self.ha_woken = False
        # Members not known dead or left, me included, kept from membership events as one byte per
        # node index (the agent lists its member table each round: O(N) time per node per round, and
        # a set per node would be O(N) memory per node, which 10 000 simulated nodes cannot afford;
        # with me included, nodes that agree share one interned set).
        self.live_bits = bytearray(sim.opts.nodes)
        self.live_bits[self.index] = 1
        self.live_frozen: frozenset[str] | None = None  # None: rebuild (Simulation.live_set)

    def live_ids(self) -> set[str]:
        return {node_id_of(i) for i, alive in enumerate(self.live_bits) if alive}

    def running(self) -> dict[str, int]:
        """As HighAvailability.running: my copies, domain id -> epoch (paused mid-handoff counts)."""
        return {d.domain_id: d.epoch for d in self.host.domains.values()}


class Simulation:
    def __init__(self, opts: SimOptions) -> None:
        self.opts = opts.validate()
        self.seed = opts.seed
        self.rng = Random(opts.seed)
        self.config: AgentConfig = config_from_mapping({"profile": opts.profile,
                                                        "image_real_bytes_max": IMAGE_REAL_BYTES})
        self.mcfg = MembershipConfig.profile(opts.profile)
        self.host_spec = HostSpec(opts.cpu_cores, opts.memory_mib, self.config.cpu_overcommit_ratio)
        self.now_s = 0.0
        self._heap: list = []
        self._seq = 0
        self.net = MemoryNetwork(self.rng, self.at, self._deliver)
        self.nodes = [SimNode(i) for i in range(opts.nodes)]
        self._formed_members: dict[str, Member] | None = None  # start(): the table a formed start gives
        self.settle_from_s: float | None = None  # when the faults stopped (the liveness phase began)
        self._node_ids = [n.node_id for n in self.nodes]
        self._live_sets: weakref.WeakValueDictionary[bytes, frozenset[str]] = weakref.WeakValueDictionary()
        self.check_every_event = opts.nodes <= CHECK_EVERY_EVENT_NODES
        self.encode_every = 1 if opts.nodes <= ENCODE_ALL_NODES else SIZE_SAMPLE_EVERY
        self._encode_count = 0
        self.messages_encoded = 0
        self.message_bytes_max_seen = 0
        self.holders: dict[str, dict[int, int]] = {}  # domain id -> {node index: epoch} of active copies
        # (node index, domain id) -> the highest epoch of the domain that node ran or handed on (the
        # epoch of the copy that replaced its own): a copy it activates later must not be older.
        self.epoch_floor: dict[tuple[int, str], int] = {}
        self._rpc_encode_count = 0
        self.rpcs_encoded = 0
        self.rpc_bytes_max_seen = 0
        self.specs: dict[str, DomainSpec] = {}
        self.violation: Violation | None = None
        self.counters: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self._progress_mark = (0.0, 0)  # (model s, messages sent) at the last progress line
        self.tail: deque[str] = deque(maxlen=TRACE_TAIL)
        self.digest = hashlib.blake2b(digest_size=16)
        self.transfer_fail_p = 0.0
        self._costs: dict[str, tuple[float, float, float]] = {}  # domain id -> (cost, precopy, downtime)
        self.faults_on = opts.faults != "none"
        self._fault_tokens: Counter[str] = Counter()
        # Handlers that never touch domains or reservations: at scale they skip the per-node check
        # (packets that do, the handoff RPCs, check inside _on_packet).
        self._quiet = {self._mtick, self._gossip_round, self._send_failed, self._on_packet}

    # -- engine ------------------------------------------------------------------------------
    def at(self, at_s: float, fn: Callable, *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at_s, self._seq, fn, args))

    def run_until(self, end_s: float) -> None:
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= end_s and self.violation is None:
            at_s, _, fn, args = pop(heap)
            self.now_s = at_s
            fn(*args)
        if self.violation is None:
            self.now_s = end_s

    def at_node(self, at_s: float, node: SimNode, fn: Callable, *args: Any) -> None:
        self.at(at_s, self._node_event, node, node.gen, fn, args)

    def _node_event(self, node: SimNode, gen: int, fn: Callable, args: tuple) -> None:
        if not node.up or node.gen != gen:
            return
        try:
            fn(node, *args)
        except _NodeCrash:
            self.crash(node, f"at a journal append ({node.crash_armed or 'armed'})")
            return
        if self.check_every_event or fn not in self._quiet:
            self.check_node(node)

    # -- trace ------------------------------------------------------------------------------------
    def trace(self, text: str) -> None:
        line = f"{self.now_s:10.4f} {text}"
        self.digest.update(line.encode())
        self.tail.append(line)

    def violate(self, invariant: str, detail: str) -> None:
        if self.violation is None:
            self.violation = Violation(self.seed, invariant, detail, self.now_s)
            self.trace(f"VIOLATION {invariant}: {detail}")

    # -- cluster set-up ------------------------------------------------------------------------
    def start(self) -> None:
        plans = plan_domains(self.opts, self.rng)
        by_node: dict[int, list[DomainSpec]] = {}
        for spec, idx in plans:
            by_node.setdefault(idx, []).append(spec)
            self.specs[spec.domain_id] = spec
        if self.opts.formed:
            # Every member known alive at its first address and incarnation (SimNode.start): one
            # shared Member per node, so N tables of N entries hold N objects, not N^2.
            self._formed_members = {n.node_id: Member(n.node_id, f"{n.ip}:7001", 1, ALIVE, 0.0) for n in self.nodes}
        for node in self.nodes:
            at_s = 0.0 if node.index == 0 or self.opts.formed else self.rng.uniform(0.0, 1.0)
            self.at(at_s, self._boot, node, by_node.get(node.index, []))

    def _boot(self, node: SimNode, specs: list[DomainSpec]) -> None:
        seeds = tuple(n.address for n in self.nodes[:3] if n is not node and n.up)
        self._start_node(node, seeds)
        for spec in specs:
            self._create_domain(node, spec)
        self.check_node(node)

    def _create_domain(self, node: SimNode, spec: DomainSpec) -> None:
        """As Agent.create_domain: admitted, journaled, then placed."""
        admission = node.host.admit(spec)
        if not admission.ok:
            raise ValueError(f"initial placement of {spec.domain_id} on {node.node_id}: {admission.reason}")
        node.journal.append({"t": "domain", "spec": spec_to_record(spec), "epoch": 1})
        node.host.add_domain(Domain(spec, epoch=1, state=DomainState.RUNNING))

    def _start_node(self, node: SimNode, seeds: tuple[str, ...]) -> None:
        now = self.now_s
        node.start(self, now, seeds)
        if node.membership.incarnation <= node.incarnation_max and node.incarnation_max:
            self.violate("incarnation_monotonic", f"{node.node_id} restarted at incarnation "
                                                  f"{node.membership.incarnation} <= {node.incarnation_max}")
        node.incarnation_max = max(node.incarnation_max, node.membership.incarnation)
        self.net.register(node.address, node)
        in_doubt = self._recover(node)
        self.publish(node)
        formed = self._formed_members if node.gen == 1 else None
        if formed is not None:
            if formed[node.node_id].address != node.address:
                raise AssertionError(f"{node.node_id} started at {node.address}, formed table says otherwise")
            node.membership.bootstrap(formed)
            node.live_bits[:] = b"\x01" * len(node.live_bits)
            node.live_frozen = None
            self._exec(node, [])  # schedules its first membership tick
        else:
            self._exec(node, node.membership.join(now, seeds))
        rng = node.rng
        gossip_s = self.config.gossip_interval_ms / 1000
        self.at_node(now + gossip_s * rng.random(), node, self._gossip_round)
        self.at_node(now + self.config.policy_interval_ms / 1000 * (1 + rng.random()), node, self._policy_round)
        self.at_node(now + HOUSEKEEPING_S * rng.random(), node, self._housekeeping)
        self.at_node(now + self.config.ha_push_interval_ms / 1000 * rng.random(), node, self._ha_round,
                     node.ha_token)
        for d in in_doubt:
            mig = OutgoingMigration(d.migration_id, d.domain_id, d.target_id, d.target_address, d.epoch, now,
                                    state=SourceState.IN_DOUBT)
            node.outgoing[mig.migration_id] = mig
            self.at_node(now, node, self._resolve_in_doubt, mig, 0.1)

    def _recover(self, node: SimNode) -> list:
        """As Agent._recover: the journal's fold rebuilds domains; in-doubt handoffs come back paused."""
        if not node.journal.records:
            return []
        r = fold(node.journal.records)
        if r.skipped:
            self.violate("journal", f"{node.node_id}: records skipped on recovery: {r.skipped[:2]}")
        in_doubt_ids = {d.domain_id for d in r.in_doubt.values()}
        for spec, epoch in sorted(r.domains.values(), key=lambda se: se[0].domain_id):
            state = DomainState.PAUSED if spec.domain_id in in_doubt_ids else DomainState.RUNNING
            node.host.domains[spec.domain_id] = Domain(spec, epoch=epoch, state=state)
        node.tombstones.update(r.departed)
        node.target.departed_epochs.update({d: e for d, (e, _) in r.departed.items()})
        node.target.recovered_commits.update(r.arrived)
        self.trace(f"{node.node_id} recovered {len(r.domains)} domains, {len(r.in_doubt)} in doubt")
        return [d for d in r.in_doubt.values() if d.domain_id in node.host.domains]

    # -- faults: crash and restart -------------------------------------------------------------------
    def crash(self, node: SimNode, how: str) -> None:
        if not node.up:
            return
        if node.crash_armed == "lose_tail":
            node.journal.lose_unsynced_tail()
        node.crash_armed = None
        node.up = False
        node.up_total_s += self.now_s - node.up_since_s
        self.net.unregister(node.address)
        self._set_active(node, {})
        self.faults_injected["crash"] += 1
        self.trace(f"CRASH {node.node_id} gen {node.gen} {how}")

    def restart(self, node: SimNode) -> None:
        if node.up or node.permanently_down:
            return
        node.restart_pending = False
        live = [n.address for n in self.nodes if n.up]
        seeds = tuple(self.rng.sample(live, min(3, len(live))))
        self.faults_injected["restart"] += 1
        self.trace(f"RESTART {node.node_id} gen {node.gen + 1}")
        self._start_node(node, seeds)
        self.check_node(node)

    # -- journal (crash points) ---------------------------------------------------------------------
    def journal(self, node: SimNode, record: dict) -> None:
        armed = node.crash_armed
        if armed == "lose_tail":
            node.journal.records.append(record)  # written, never fsync'd: crash() drops it
            raise _NodeCrash()
        node.journal.append(record)
        if armed == "keep_tail":
            raise _NodeCrash()

    # -- membership glue (Agent._execute / _send_membership / on_membership_packet) --------------------
    def _exec(self, node: SimNode, directives: list) -> None:
        for d in directives:
            if type(d) is Send:
                self._send_membership(node, d)
            elif type(d) is MemberEvent:
                self._on_member_event(node, d)
        inc = node.membership.incarnation
        if inc < node.incarnation_max:
            self.violate("incarnation_monotonic", f"{node.node_id} incarnation fell {node.incarnation_max} -> {inc}")
        elif inc > node.incarnation_max:
            node.incarnation_max = inc
            node.incarnation_persisted = max(node.incarnation_persisted, inc)  # Agent._maybe_persist_incarnation
        self._reschedule_tick(node)

    def _reschedule_tick(self, node: SimNode, floor_s: float | None = None) -> None:
        due = node.membership.next_due_s()
        if floor_s is not None and due < floor_s:
            due = floor_s
        if due < self.now_s:
            due = self.now_s
        if due < node.mtick_at:
            node.mtick_at = due
            node.mtick_token += 1
            self.at_node(due, node, self._mtick, node.mtick_token)

    def _mtick(self, node: SimNode, token: int) -> None:
        if token != node.mtick_token:
            return
        node.mtick_at = math.inf
        now = self.now_s
        directives = node.membership.tick(now)
        for d in directives:
            if type(d) is Send:
                self._send_membership(node, d)
            elif type(d) is MemberEvent:
                self._on_member_event(node, d)
        self._reschedule_tick(node, floor_s=now + 1e-3)  # whatever was due is done

    def _send_membership(self, node: SimNode, d: Send) -> None:
        msg = d.message
        self._encode_count += 1
        if self._encode_count >= self.encode_every:
            self._encode_count = 0
            try:
                size = len(membership_codec.encode(msg, self.mcfg.message_bytes_max))
            except ValueError as exc:
                self.violate("message_size", f"{node.node_id} -> {d.to_address} {type(msg).__name__}: {exc}")
                return
            self.messages_encoded += 1
            if size > self.message_bytes_max_seen:
                self.message_bytes_max_seen = size
        if not self.net.send(self.now_s, node.index, d.to_address, "m", ("m", node.address, msg)):
            # The gRPC deliver would fail at its deadline (the probe timeout): the core is told.
            self.at_node(self.now_s + self.mcfg.probe_timeout_ms / 1000, node, self._send_failed, d)

    def _send_failed(self, node: SimNode, d: Send) -> None:
        self._exec(node, node.membership.on_send_failed(self.now_s, d.to_address, d.message))

    def _on_member_event(self, node: SimNode, ev: MemberEvent) -> None:
        m = ev.member
        if ev.previous is not None and ev.previous is not m.status:
            self.trace(f"{node.node_id} sees {m.node_id} {m.status.value} (was {ev.previous.value}, "
                       f"inc {m.incarnation})")
        if m.status is DEAD or m.status is LEFT:
            node.dissemination.entries.pop(m.node_id, None)
        if m.node_id != node.node_id:
            i = int(m.node_id[1:])
            alive = 1 if m.status in LIVE_STATES else 0
            if node.live_bits[i] != alive:
                node.live_bits[i] = alive
                node.live_frozen = None
        self._ha_on_member_event(node, ev)

    # -- delivery -----------------------------------------------------------------------------------
    def _deliver(self, node: SimNode, gen: int, packet: tuple) -> None:
        self._node_event(node, gen, self._on_packet, (packet,))

    def _on_packet(self, node: SimNode, packet: tuple) -> None:
        kind, from_address, payload = packet
        now = self.now_s
        if kind == "m":
            try:
                directives = node.membership.on_message(now, payload)
            except InputRejected as exc:
                self.counters["rejected_inputs"] += 1
                self.trace(f"{node.node_id} rejected a membership message: {exc}")
                return
            self._exec(node, directives)
        elif kind == "x":
            self.publish(node)
            try:
                reply = node.dissemination.on_exchange(now, payload)
            except InputRejected:
                self.counters["rejected_inputs"] += 1
                return
            self._send(node, from_address, "xr", reply)
        elif kind == "xr":
            try:
                node.dissemination.on_exchange_reply(now, payload)
            except InputRejected:
                self.counters["rejected_inputs"] += 1
        elif kind == "rpc" or kind == "ha":
            rpc_id, method, args = payload
            result = self._serve_rpc(node, method, args)
            self._send(node, from_address, kind + "_r", (rpc_id, result))
            self.check_node(node)
        elif kind == "rpc_r" or kind == "ha_r":
            rpc_id, result = payload
            entry = node.pending.pop(rpc_id, None)
            if entry is not None:  # else a late answer to a call that already timed out, or a duplicate
                entry[0](node, result)
                self.check_node(node)

    def _send(self, node: SimNode, address: str, kind: str, payload: Any) -> bool:
        if kind == "x" and self._encode_count == 0:
            size = grpc_codec.exchange_request_to_pb(payload).ByteSize()
            if size > self.config.message_bytes_max:
                self.violate("message_size", f"{node.node_id} exchange of {size} bytes")
        return self.net.send(self.now_s, node.index, address, kind, (kind, node.address, payload))

    # -- RPCs (unary calls of the handoff and of HA, each with the agent's deadline) --------------------
    def rpc(self, node: SimNode, address: str, method: str, args: Any, on_reply: Callable,
            on_fail: Callable, *, kind: str = "rpc") -> None:
        """`kind` "ha" counts the call apart (ha_messages_per_node_per_s) and, as a gRPC channel
        does, fails it at once when nobody listens at the address (a crashed node)."""
        node.rpc_seq += 1
        rpc_id = node.rpc_seq
        node.pending[rpc_id] = (on_reply, on_fail)
        self._send(node, address, kind, (rpc_id, method, args))
        if kind == "ha" and address not in self.net.endpoints:
            self.at_node(self.now_s + REFUSED_S, node, self._rpc_deadline, rpc_id, "UNAVAILABLE")
            return
        self.at_node(self.now_s + self.config.rpc_timeout_ms / 1000, node, self._rpc_deadline, rpc_id)

    def _rpc_deadline(self, node: SimNode, rpc_id: int, code: str = "DEADLINE_EXCEEDED") -> None:
        entry = node.pending.pop(rpc_id, None)
        if entry is not None:
            entry[1](node, code)
            self.check_node(node)

    def _serve_rpc(self, node: SimNode, method: str, args: Any) -> tuple[str, Any]:
        now = self.now_s
        try:
            if method == "prepare":
                return "ok", node.target.on_prepare(now, args, self.demand_cores(node))
            if method == "chunk":
                mid, first_page, data = args
                node.target.on_chunk(mid, first_page, data)
                return "ok", len(data)
            if method == "commit":
                return "ok", self._on_commit(node, *args)
            if method == "abort":
                return "ok", node.target.on_abort(args)
            if method == "query":
                mig = node.target.incoming.get(args)
                return "ok", (node.target.outcome(args), mig.committed_epoch if mig else 0)
            if method == "locate":  # Agent.on_locate
                d = node.host.domains.get(args)
                return "ok", (True, d.epoch, d.state.value) if d is not None else (False, 0, "")
            if method in ("replicate", "adopt", "holds"):
                return self._ha_serve(node, method, args)
        except InputRejected as exc:
            return "error", f"{exc.reason}: {exc.detail}"
        raise ValueError(f"unknown rpc {method}")

    def _on_commit(self, node: SimNode, mid: str, epoch: int, image_hash: str) -> CommitDecision:
        """As Agent.on_commit: the arrival is journaled before the answer goes back."""
        decision, domain = node.target.on_commit(self.now_s, mid, epoch, image_hash)
        if domain is not None:
            self.journal(node, {"t": "arrived", "mid": mid, "spec": spec_to_record(domain.spec), "epoch": epoch})
            node.cooldown_until_s[domain.domain_id] = self.now_s + self.config.domain_cooldown_ms / 1000
            node.tombstones.pop(domain.domain_id, None)
            self.trace(f"{node.node_id} received {domain.domain_id} at epoch {epoch} ({mid})")
            self.publish(node)
        return decision

    # -- own load (Agent.publish) ------------------------------------------------------------------------
    def demand_cores(self, node: SimNode) -> float:
        t = self.now_s
        return math.fsum(d.demand_cores(t) for d in node.host.domains.values() if d.state in ACTIVE_STATES)

    def _outgoing_active(self, node: SimNode) -> int:
        return sum(1 for m in node.outgoing.values() if m.state not in SOURCE_TERMINAL)

    def publish(self, node: SimNode) -> NodeLoad:
        host = node.host
        spec = host.spec
        memory_used, vcpus = host._committed()
        load = NodeLoad(node_id=node.node_id, address=node.address, heartbeat=0, cpu_capacity_cores=spec.cpu_cores,
                        cpu_demand_cores=self.demand_cores(node), memory_capacity_mib=float(spec.memory_mib),
                        memory_used_mib=float(memory_used), domains=len(host.domains),
                        vcpus_committed=float(vcpus), vcpus_capacity=spec.cpu_cores * spec.cpu_overcommit_ratio,
                        migrations_inflight=len(node.target.active()) + self._outgoing_active(node))
        return node.dissemination.publish(load, self.now_s)

    # -- periodic loops ---------------------------------------------------------------------------------
    def _gossip_round(self, node: SimNode) -> None:
        """As Agent.gossip_once: push-pull with one live view member."""
        now = self.now_s
        interval_s = self.config.gossip_interval_ms / 1000
        self.at_node(now + interval_s * (0.75 + 0.5 * node.rng.random()), node, self._gossip_round)
        members = [m for m in node.membership.view() if m.status is ALIVE]
        node.dissemination.tick(now, {m.node_id for m in members})
        view = [m.address for m in members]
        address = node.dissemination.pick_peer(now, candidates=view)
        if address is None:
            return
        self.publish(node)
        self._send(node, address, "x", node.dissemination.make_exchange(now))

    def _housekeeping(self, node: SimNode) -> None:
        now = self.now_s
        self.at_node(now + HOUSEKEEPING_S, node, self._housekeeping)
        for mig in node.target.tick(now):
            self.trace(f"{node.node_id} reservation {mig.migration_id} for {mig.spec.domain_id} expired")
        # Finished handoffs: outgoing records are dropped (the journal has what recovery needs), and a
        # terminal incoming record keeps its answer but not its image (its dirty log is a byte per page;
        # the agent moves the image to the domain, the simulator's images are virtual).
        if any(m.state in SOURCE_TERMINAL for m in node.outgoing.values()):
            node.outgoing = {k: m for k, m in node.outgoing.items() if m.state not in SOURCE_TERMINAL}
        for mig in node.target.incoming.values():
            if mig.state in TARGET_TERMINAL and mig.image is not _NO_IMAGE:
                mig.image = _NO_IMAGE
        horizon = now - self.config.peer_stale_ms / 1000
        if node.sent_recently and node.sent_recently[0][0] < horizon:
            node.sent_recently = [s for s in node.sent_recently if s[0] >= horizon]
        self.check_node(node)

    def _policy_round(self, node: SimNode) -> None:
        """As Agent.policy_round: start what the local rule proposes, each registered before the next decision."""
        now = self.now_s
        self.at_node(now + self.config.policy_interval_ms / 1000, node, self._policy_round)
        cfg = self.config
        mean = node.dissemination.mean_utilization_estimate(now)
        while self._outgoing_active(node) < cfg.migrations_out_max:
            # The rule's own first test, on numbers at hand, before building its full input.
            busy = {m.domain_id for m in node.outgoing.values() if m.state not in SOURCE_TERMINAL}
            t = now
            demand = math.fsum(d.demand_cores(t) for d in node.host.domains.values()
                               if d.state in ACTIVE_STATES and d.domain_id not in busy)
            if overload_reason(demand / node.host.spec.cpu_cores, mean, cfg) is None:
                return
            candidates = node.policy.candidates(self.local_view(node), self.neighbours(node), mean)
            if not candidates:
                return
            proposal = candidates[0]
            mig = self.begin_migration(node, proposal.domain_id, proposal.target_id)
            if mig is None:
                return
            node.fallbacks[mig.migration_id] = [p.target_id for p in candidates[1:]
                                                if p.domain_id == proposal.domain_id][:2]
            self.run_migration(node, mig)

    def local_view(self, node: SimNode) -> LocalView:
        t = now = self.now_s
        busy = {m.domain_id for m in node.outgoing.values() if m.state not in SOURCE_TERMINAL}
        together = kept_together((d.domain_id, d.spec.affinity) for d in node.host.domains.values())
        domains = tuple(
            DomainLoad(d.domain_id, d.demand_cores(t), d.spec.memory_mib, d.spec.vcpus,
                       movable=(d.state is DomainState.RUNNING and d.domain_id not in busy
                                and d.domain_id not in together
                                and node.cooldown_until_s.get(d.domain_id, 0.0) <= now),
                       cost_s=self._cost(d.spec)[0])
            for d in sorted(node.host.domains.values(), key=lambda d: d.domain_id))
        demand = sum(d.demand_cores for d in domains if d.domain_id not in busy)
        return LocalView(node.node_id, node.host.spec.cpu_cores, demand, domains, self._outgoing_active(node))

    def neighbours(self, node: SimNode) -> list[Neighbour]:
        usable = {m.node_id for m in node.membership.view() if m.status is ALIVE}
        return node.dissemination.neighbours(self.now_s, usable, node.sent_recently)

    def _cost(self, spec: DomainSpec) -> tuple[float, float, float]:
        """(estimated cost for the policy, pre-copy seconds, downtime seconds): Xen's rules on the fluid model."""
        cached = self._costs.get(spec.domain_id)
        if cached is None:
            bandwidth = self.config.migration_bandwidth_mib_s * MIB
            limits = PreCopyLimits(bandwidth_limit_bytes_s=bandwidth,
                                   xen_rate_adaptation=self.config.migration_xen_rate_adaptation)
            stats = simulate(spec.memory_mib * PAGES_PER_MIB, limits, wws_pages=round(spec.wws_mib * PAGES_PER_MIB),
                             dirty_rate_pages_s=spec.dirty_rate_mib_s * PAGES_PER_MIB)
            cached = (stats.total_s, stats.precopy_s, stats.downtime_estimate_s)
            self._costs[spec.domain_id] = cached
        return cached

    # -- migration: source side (Agent.begin_migration / run_migration / _precopy / _finish) ---------------
    def begin_migration(self, node: SimNode, domain_id: str, target_id: str) -> OutgoingMigration | None:
        domain = node.host.domains.get(domain_id)
        if domain is None or domain.state is not DomainState.RUNNING or target_id == node.node_id:
            return None
        entry = node.dissemination.entries.get(target_id)
        if entry is None or self._outgoing_active(node) >= self.config.migrations_out_max:
            return None
        src_demand = self.local_view(node).cpu_demand_cores
        node.mig_seq += 1
        mig = OutgoingMigration(f"{node.node_id}.{node.gen}.{node.mig_seq}", domain_id, target_id,
                                entry.load.address, domain.epoch, self.now_s)
        mig.require_improvement = True
        mig.bandwidth_bytes_s = self.config.migration_bandwidth_mib_s * MIB
        mig.source_demand_cores = src_demand
        node.outgoing[mig.migration_id] = mig
        domain.state = DomainState.MIGRATING_OUT
        self.counters["migrations_started"] += 1
        return mig

    def run_migration(self, node: SimNode, mig: OutgoingMigration) -> None:
        domain = node.host.domains[mig.domain_id]
        demand = domain.demand_cores(self.now_s)
        req = PrepareRequest(mig.migration_id, node.node_id, domain.spec, domain.epoch, demand,
                             mig.source_demand_cores, node.host.spec.cpu_cores, IMAGE_REAL_BYTES,
                             mig.require_improvement)
        self.trace(f"{node.node_id} prepare {mig.domain_id} -> {mig.target_id} ({mig.migration_id})")
        self.rpc(node, mig.target_address, "prepare", req,
                 lambda n, res: self._on_prepared(n, mig, demand, res),
                 lambda n, err: self._abort_local(n, mig, "failed", f"prepare failed: {err}"))

    def _on_prepared(self, node: SimNode, mig: OutgoingMigration, demand: float, result: tuple) -> None:
        if mig.state is not SourceState.PREPARING:
            return
        status, decision = result
        if status != "ok" or not decision.accepted:
            reason = decision.reason if status == "ok" else decision
            self._abort_local(node, mig, "rejected", f"rejected by {mig.target_id}: {reason}")
            self._fallback(node, mig)
            return
        mig.step("accepted")
        node.sent_recently.append((self.now_s, mig.target_id, demand))
        _, precopy_s, downtime_s = self._cost(node.host.domains[mig.domain_id].spec)
        if self.transfer_fail_p and self.rng.random() < self.transfer_fail_p:
            self.faults_injected["transfer_failure"] += 1
            self.at_node(self.now_s + precopy_s * self.rng.random(), node, self._transfer_failed, mig)
        self.at_node(self.now_s + precopy_s, node, self._precopy_done, mig, downtime_s)

    def _fallback(self, node: SimNode, mig: OutgoingMigration) -> None:
        """As Agent._run_with_fallbacks: a rejected proposal tries the next-best targets."""
        targets = node.fallbacks.pop(mig.migration_id, [])
        if not targets:
            return
        nxt = self.begin_migration(node, mig.domain_id, targets[0])
        if nxt is not None:
            node.fallbacks[nxt.migration_id] = targets[1:]
            self.run_migration(node, nxt)

    def _transfer_failed(self, node: SimNode, mig: OutgoingMigration) -> None:
        if mig.state is SourceState.TRANSFERRING and mig.paused_at_s is None:
            self._abort_remote(node, mig)
            self._abort_local(node, mig, "failed", "transfer failed: UNAVAILABLE (injected)")

    def _precopy_done(self, node: SimNode, mig: OutgoingMigration, downtime_s: float) -> None:
        """The live rounds are over: journal the pause, pause, send the stop-and-copy."""
        if mig.state is not SourceState.TRANSFERRING:
            return
        self.journal(node, {"t": "pause", "mid": mig.migration_id, "id": mig.domain_id, "target": mig.target_id,
                            "addr": mig.target_address, "epoch": mig.epoch})
        domain = node.host.domains[mig.domain_id]
        domain.state = DomainState.PAUSED
        mig.paused_at_s = self.now_s
        image = MemoryImage(domain.spec.memory_mib, IMAGE_REAL_BYTES, seed=domain.spec.image_seed)
        data = image.read_pages(0, image.real_page_count)
        image_hash = image.content_hash()
        self.at_node(self.now_s + downtime_s, node, self._send_stop_and_copy, mig, data, image_hash)

    def _send_stop_and_copy(self, node: SimNode, mig: OutgoingMigration, data: bytes, image_hash: str) -> None:
        if mig.state is not SourceState.TRANSFERRING:
            return
        mig.bytes_sent += len(data)
        self.rpc(node, mig.target_address, "chunk", (mig.migration_id, 0, data),
                 lambda n, res: self._on_chunk_sent(n, mig, image_hash, res),
                 lambda n, err: self._chunk_failed(n, mig, err))

    def _chunk_failed(self, node: SimNode, mig: OutgoingMigration, err: str) -> None:
        if mig.state is SourceState.TRANSFERRING:
            self._abort_remote(node, mig)
            self._abort_local(node, mig, "failed", f"transfer failed: {err}")

    def _on_chunk_sent(self, node: SimNode, mig: OutgoingMigration, image_hash: str, result: tuple) -> None:
        if mig.state is not SourceState.TRANSFERRING:
            return
        if result[0] != "ok":
            self._chunk_failed(node, mig, str(result[1]))
            return
        mig.step("transferred")
        self.rpc(node, mig.target_address, "commit", (mig.migration_id, mig.epoch + 1, image_hash),
                 lambda n, res: self._on_committed(n, mig, res),
                 lambda n, err: self._commit_lost(n, mig, err))

    def _on_committed(self, node: SimNode, mig: OutgoingMigration, result: tuple) -> None:
        if mig.state is not SourceState.COMMITTING:
            return
        status, decision = result
        if status == "ok" and decision.committed:
            self._finish(node, mig, decision.epoch)
            return
        self._abort_remote(node, mig)
        self._abort_local(node, mig, "refused", f"commit refused by {mig.target_id}: "
                                                f"{decision.reason if status == 'ok' else decision}")

    def _commit_lost(self, node: SimNode, mig: OutgoingMigration, err: str) -> None:
        if mig.state is not SourceState.COMMITTING:
            return
        mig.step("failed", f"commit answer lost: {err}")
        self.counters["migrations_in_doubt"] += 1
        self.trace(f"{node.node_id} commit of {mig.domain_id} to {mig.target_id} in doubt")
        self._resolve_in_doubt(node, mig, 0.1)

    def _resolve_in_doubt(self, node: SimNode, mig: OutgoingMigration, delay_s: float) -> None:
        """As Agent._resolve_in_doubt: ask the target (where membership says it is now) until it knows."""
        if mig.state is not SourceState.IN_DOUBT:
            return
        member = node.membership.member(mig.target_id)
        if member is not None:
            mig.target_address = member.address

        def retry(n: SimNode, err: Any) -> None:
            if mig.state is SourceState.IN_DOUBT:
                mig.step("failed")
                self.at_node(self.now_s + delay_s, n, self._resolve_in_doubt, mig, min(delay_s * 2, 5.0))

        def outcome_known(n: SimNode, outcome: str, epoch: int) -> None:
            if mig.state is not SourceState.IN_DOUBT:
                return
            if outcome == OUTCOME_COMMITTED:
                self._finish(n, mig, epoch or mig.epoch + 1)
            elif outcome in (OUTCOME_ABORTED, OUTCOME_UNKNOWN):
                self._abort_local(n, mig, "aborted", f"target reports {outcome}")
            else:
                retry(n, outcome)

        def on_query(n: SimNode, res: tuple) -> None:
            if res[0] != "ok":
                retry(n, res[1])
                return
            outcome, epoch = res[1]
            if outcome == OUTCOME_RESERVED:
                self.rpc(n, mig.target_address, "abort", mig.migration_id,
                         lambda n2, r2: outcome_known(n2, r2[1], epoch) if r2[0] == "ok" else retry(n2, r2[1]),
                         retry)
            else:
                outcome_known(n, outcome, epoch)

        self.rpc(node, mig.target_address, "query", mig.migration_id, on_query, retry)

    def _abort_remote(self, node: SimNode, mig: OutgoingMigration) -> None:
        self.rpc(node, mig.target_address, "abort", mig.migration_id, lambda n, r: None, lambda n, e: None)

    def _finish(self, node: SimNode, mig: OutgoingMigration, epoch: int) -> None:
        mig.step("committed")
        self.journal(node, {"t": "gone", "mid": mig.migration_id, "id": mig.domain_id, "epoch": epoch,
                            "to": mig.target_id})
        if mig.paused_at_s is not None:
            mig.downtime_s = self.now_s - mig.paused_at_s
        node.host.remove_domain(mig.domain_id)
        node.cooldown_until_s.pop(mig.domain_id, None)
        node.tombstones[mig.domain_id] = (epoch, mig.target_id)
        node.target.departed_epochs[mig.domain_id] = epoch
        self._raise_floor(node, mig.domain_id, epoch)
        node.fallbacks.pop(mig.migration_id, None)
        self.counters["migrations"] += 1
        self.trace(f"{node.node_id} migrated {mig.domain_id} to {mig.target_id} at epoch {epoch}")
        self.publish(node)

    def _abort_local(self, node: SimNode, mig: OutgoingMigration, event: str, reason: str) -> None:
        if mig.state in SOURCE_TERMINAL:
            return
        paused = mig.paused_at_s is not None or mig.state is SourceState.IN_DOUBT
        mig.step(event, reason)
        if paused:
            self.journal(node, {"t": "resume", "mid": mig.migration_id, "id": mig.domain_id})
        domain = node.host.domains.get(mig.domain_id)
        if domain is not None:
            domain.state = DomainState.RUNNING
        node.cooldown_until_s[mig.domain_id] = self.now_s + self.config.gossip_interval_ms * 2 / 1000
        self.counters["migrations_failed"] += 1
        self.trace(f"{node.node_id} migration of {mig.domain_id} to {mig.target_id} {event}: {reason}")

    # -- high availability (HighAvailability in agent/runtime/ha.py, step by step) --------------------------
    def _ha_on_member_event(self, node: SimNode, ev: MemberEvent) -> None:
        """As HighAvailability.on_member_event. A member new to me does not wake the loop (the next
        round, within ha_push_interval_ms, takes it in): in a 10 000-node join every node hears
        10 000 of those, and the agent's asyncio loop coalesces them where virtual time cannot."""
        m = ev.member
        if m.node_id == node.node_id:
            return
        if m.status is DEAD:
            node.dead_since.setdefault(m.node_id, self.now_s)
            self._ha_wake(node)
        elif m.status in LIVE_STATES or m.status is LEFT:
            node.dead_since.pop(m.node_id, None)
            if m.status is ALIVE and ev.previous is not None:
                self._ha_wake(node)  # a returning member: buddies may change, copies may meet

    def _ha_wake(self, node: SimNode) -> None:
        """HighAvailability._wake.set(): a round now, and the next one a full interval after it."""
        if node.ha_woken:
            return
        node.ha_woken = True
        node.ha_token += 1
        self.at_node(self.now_s, node, self._ha_round, node.ha_token)

    def _ha_round(self, node: SimNode, token: int) -> None:
        """HighAvailability.run: one round every ha_push_interval_ms, or at once when woken."""
        if token != node.ha_token:
            return  # a wake started a newer chain
        node.ha_woken = False
        self.at_node(self.now_s + self.config.ha_push_interval_ms / 1000, node, self._ha_round, token)
        self._ha_tick(node)

    def _ha_tick(self, node: SimNode) -> None:
        """As HighAvailability.tick: push to buddies, then act on confirmed-dead owners' replicas."""
        if not node.membership.joined:
            return
        now = self.now_s
        live = self.live_set(node)
        # Paused (mid-handoff, or in doubt after a crash) is still ours: its record must stay.
        owned = [OwnedDomain(d.spec, d.epoch) for d in node.host.domains.values()]
        for push in node.ha_owner.tick(now, owned, live):
            self._ha_push(node, push)
        table = node.ha_table
        # failover() would find nothing: skip its O(N) inputs (the member table, every peer's room).
        if node.dead_since and self._ha_has_orphans(node):
            known = [m.node_id for m in node.membership.members()]
            decisions = table.failover(node.dead_since, self._ha_room(node), self._ha_peer_rooms(node, live),
                                       live_ids=live, known_ids=known)
            for dec in decisions:
                if isinstance(dec, Unplaced) and not dec.ahead:
                    self._ha_report_unplaced(node, dec)
                else:
                    node.ha_busy.add(dec.domain_id)
                    self._ha_act(node, dec)

    def live_set(self, node: SimNode) -> frozenset[str]:
        """The live members (`node` too), as one frozenset object while its membership does not change,
        and one object for every node with the same view (interned), so 10 000 nodes that agree hold
        one set between them, not 10 000."""
        live = node.live_frozen
        if live is None:
            key = bytes(node.live_bits)
            live = self._live_sets.get(key)
            if live is None:
                live = frozenset(compress(self._node_ids, node.live_bits))
                self._live_sets[key] = live
            node.live_frozen = live
        return live

    @staticmethod
    def _ha_has_orphans(node: SimNode) -> bool:
        """ReplicaTable.failover's own test for work: a record of a dead owner, pushed before the
        verdict, not already decided."""
        since = node.dead_since
        claimed = node.ha_table.claimed
        return any(r.owner_id in since and r.updated_s <= since[r.owner_id] and d not in claimed
                   for d, r in node.ha_table.replicas.items())

    @staticmethod
    def _ha_room(node: SimNode) -> Room:
        host = node.host
        return Room(host.spec.memory_mib - host.committed_memory_mib, host.spec.vcpus_max - host.committed_vcpus)

    def _ha_peer_rooms(self, node: SimNode, live: frozenset[str]) -> list[PeerRoom]:
        return [PeerRoom(load.node_id, Room(int(load.memory_capacity_mib - load.memory_used_mib),
                                            load.vcpus_capacity - load.vcpus_committed))
                for load in node.dissemination.fresh_peers(self.now_s) if load.node_id in live]

    @staticmethod
    def _ha_address(node: SimNode, node_id: str) -> str | None:
        m = node.membership.member(node_id)
        return m.address if m is not None and m.status in LIVE_STATES else None

    def _ha_report_unplaced(self, node: SimNode, dec: Unplaced) -> None:
        if not node.ha_table.report_unplaced(dec):
            return  # reported once per record; it stays listed while unplaced
        self.counters["ha_unplaced_reports"] += 1
        self.trace(f"{node.node_id} cannot place {dec.domain_id} of dead {dec.replica.owner_id}: {dec.reason}")

    def _gather(self, node: SimNode, calls: list[tuple[str, str, Any]],
                then: Callable[[SimNode, list[tuple[str, Any]]], None]) -> None:
        """asyncio.gather(..., return_exceptions=True) of HA calls: `then` gets every answer, in call
        order, as ("ok", value), ("error", reason) or ("failed", status code)."""
        if not calls:
            then(node, [])
            return
        answers: list[tuple[str, Any] | None] = [None] * len(calls)
        left = [len(calls)]

        def answered(n: SimNode, i: int, answer: tuple[str, Any]) -> None:
            answers[i] = answer
            left[0] -= 1
            if left[0] == 0:
                then(n, answers)  # type: ignore[arg-type]

        for i, (address, method, args) in enumerate(calls):
            self.rpc(node, address, method, args, lambda n, res, i=i: answered(n, i, res),
                     lambda n, err, i=i: answered(n, i, ("failed", err)), kind="ha")

    # owner side
    def _ha_push(self, node: SimNode, push: ReplicaPush) -> None:
        """As HighAvailability._push: every way it ends reaches the owner core (acked or failed)."""
        address = self._ha_address(node, push.to_id)
        if address is None:
            node.ha_owner.on_failed(push)
            return
        if self._rpc_sampled():
            req = replica_pb2.ReplicateRequest(owner_id=push.owner_id,
                                               replicas=[replica_codec.replica_to_pb(r) for r in push.replicas])
            if not self._check_rpc_size(node, "replicate", req):
                return
            for rep, msg in zip(push.replicas, req.replicas):
                try:
                    back = replica_codec.replica_from_pb(msg)
                except InputRejected as exc:
                    self.violate("message_codec", f"{node.node_id}: its replica of {rep.domain_id} does not "
                                                  f"decode: {exc}")
                    return
                if back != rep:
                    self.violate("message_codec", f"{node.node_id}: replica of {rep.domain_id} changed in the "
                                                  f"codec: {rep} -> {back}")
                    return
        self.rpc(node, address, "replicate", (push.owner_id, push.replicas),
                 lambda n, res: self._ha_pushed(n, push, res), lambda n, err: n.ha_owner.on_failed(push), kind="ha")

    def _ha_pushed(self, node: SimNode, push: ReplicaPush, result: tuple[str, Any]) -> None:
        if result[0] != "ok":
            node.ha_owner.on_failed(push)  # the buddy refused it: retried next round
            return
        conflicts: tuple[Conflict, ...] = result[1]
        node.ha_owner.on_acked(self.now_s, push)
        fence, verify = node.ha_owner.on_conflicts(node.running(), push.to_id, conflicts)
        for f in fence:
            self._ha_fence_local(node, f, f"{push.to_id} runs it")
        for c in verify:
            if c.domain_id not in node.ha_busy:
                node.ha_busy.add(c.domain_id)
                self._ha_verify(node, c.domain_id, c.holder_id)

    def _ha_verify(self, node: SimNode, domain_id: str, holder_id: str) -> None:
        """A buddy heard of a newer copy: fence mine only if its holder confirms it runs it."""
        address = self._ha_address(node, holder_id)
        if address is None:
            node.ha_busy.discard(domain_id)
            return

        def located(n: SimNode, res: tuple[str, Any]) -> None:
            if res[0] == "ok" and res[1][0]:
                f = n.ha_owner.verified(n.running(), domain_id, holder_id, res[1][1])
                if f is not None:
                    self._ha_fence_local(n, f, f"{holder_id} confirmed it runs it")
            n.ha_busy.discard(domain_id)

        self._ha_locate(node, address, domain_id, located, lambda n, err: n.ha_busy.discard(domain_id))

    def _ha_locate(self, node: SimNode, address: str, domain_id: str, on_reply: Callable, on_fail: Callable) -> None:
        if self._rpc_sampled() and not self._check_rpc_size(node, "locate",
                                                            migration_pb2.LocateRequest(domain_id=domain_id)):
            return
        self.rpc(node, address, "locate", domain_id, on_reply, on_fail, kind="ha")

    def _ha_fence_local(self, node: SimNode, f: FenceLocal, why: str) -> bool:
        """As HighAvailability.fence_local: destroys my copy that a newer one outranks, journaled first."""
        domain = node.host.domains.get(f.domain_id)
        if domain is None or domain.epoch != f.epoch:
            return False
        if domain.state is not DomainState.RUNNING:
            return False  # mid-handoff: the handoff settles first, the next push meets it again
        self.journal(node, {"t": "fenced", "id": f.domain_id, "epoch": f.epoch, "winner": f.winner.node_id,
                            "winner_epoch": f.winner.epoch})
        node.host.remove_domain(f.domain_id)
        node.cooldown_until_s.pop(f.domain_id, None)
        node.tombstones[f.domain_id] = (f.winner.epoch, f.winner.node_id)
        node.target.departed_epochs[f.domain_id] = f.winner.epoch
        self._raise_floor(node, f.domain_id, f.winner.epoch)
        self.counters["ha_fenced"] += 1
        self.trace(f"{node.node_id} fenced {f.domain_id} at epoch {f.epoch}: {f.winner.node_id} at epoch "
                   f"{f.winner.epoch} wins ({why})")
        self.publish(node)
        return True

    # buddy side
    def _ha_serve(self, node: SimNode, method: str, args: Any) -> tuple[str, Any]:
        """The ReplicaServicer's calls, with its validation (InputRejected: an error answer)."""
        sampled = self._rpc_sampled()
        if method == "replicate":
            owner_id, replicas = args
            if owner_id == node.node_id:
                raise InputRejected("bad_replica", "a replica push from this node's own id")
            if len(replicas) > self.config.domains_max:
                raise InputRejected("bad_replica", f"{len(replicas)} replicas in one push "
                                                   f"(domains_max {self.config.domains_max})")
            if any(r.owner_id != owner_id for r in replicas):
                raise InputRejected("bad_replica", "a replica owned by another node than the pusher")
            out = self._ha_on_replicate(node, owner_id, replicas)
            if sampled:
                self._check_rpc_size(node, "replicate answer", replica_pb2.ReplicateResponse(
                    conflicts=[replica_codec.conflict_to_pb(c) for c in out.conflicts], stored=out.stored))
            return "ok", out.conflicts
        if method == "adopt":
            replica, epoch, coordinator_id = args
            if sampled:
                self._check_rpc_size(node, "adopt", replica_pb2.AdoptRequest(
                    replica=replica_codec.replica_to_pb(replica), epoch=epoch, coordinator_id=coordinator_id))
            if epoch <= replica.epoch:
                raise InputRejected("bad_replica", f"adopt at epoch {epoch}, not above the replica's {replica.epoch}")
            return "ok", self._ha_on_adopt(node, replica, epoch, coordinator_id)
        if method == "holds":
            rep = node.ha_table.replicas.get(args)
            dom = node.host.domains.get(args)
            if sampled:
                self._check_rpc_size(node, "holds answer", replica_pb2.HoldsResponse(
                    replica=rep is not None, replica_epoch=rep.epoch if rep else 0,
                    replica_owner=rep.owner_id if rep else "", running=dom is not None,
                    running_epoch=dom.epoch if dom else 0))
            return "ok", rep is not None or dom is not None
        raise ValueError(f"unknown rpc {method}")

    def _ha_on_replicate(self, node: SimNode, owner_id: str, replicas: tuple[Replica, ...]) -> ReplicateOutcome:
        out = node.ha_table.on_replicate(self.now_s, owner_id, replicas, node.running())
        for f in out.fence:
            self._ha_fence_local(node, f, f"{owner_id} pushed a newer copy")
        return out

    def _ha_act(self, node: SimNode, dec: Restart | Unplaced) -> None:
        """As HighAvailability._act: nobody ranked ahead holds the domain? Then restart or report it."""
        dom = dec.domain_id

        def decided(n: SimNode, ahead_holds: bool | None) -> None:
            if ahead_holds is not False:
                # True: it is theirs to act on; None: one of them did not answer (ask again next round).
                n.ha_table.abandon(dom, drop=False, defer=ahead_holds is True)
                n.ha_busy.discard(dom)
                return
            if isinstance(dec, Unplaced):
                self._ha_report_unplaced(n, dec)
                n.ha_busy.discard(dom)
                return
            self._ha_restart(n, dec)

        def answered(n: SimNode, answers: list[tuple[str, Any]]) -> None:
            if any(a[0] == "ok" and a[1] is True for a in answers):
                decided(n, True)
            else:
                decided(n, None if any(a[0] != "ok" for a in answers) else False)

        addresses = [a for a in (self._ha_address(node, n) for n in dec.ahead) if a is not None]
        if not addresses:
            decided(node, False)
            return
        if self._rpc_sampled() and not self._check_rpc_size(node, "holds", replica_pb2.HoldsRequest(domain_id=dom)):
            return
        self._gather(node, [(a, "holds", dom) for a in addresses], answered)

    def _ha_restart(self, node: SimNode, dec: Restart) -> None:
        """As HighAvailability._restart: not if a copy at the record's epoch or later runs (or the
        'dead' owner answers); then here, or on the peer the decision names."""
        dom = dec.domain_id

        def finish(n: SimNode, settled: bool) -> None:
            if not settled and dom in n.ha_table.claimed:
                n.ha_table.abandon(dom, drop=False)  # decided again next round
            n.ha_busy.discard(dom)

        def done(n: SimNode, reason: str) -> None:
            if not reason:
                n.ha_table.on_restarted(dom)
                finish(n, True)
            else:
                self.trace(f"{n.node_id} restart of {dom} on {dec.target_id} failed: {reason} (retried)")
                finish(n, False)

        def with_newer(n: SimNode, newer: Copy | None) -> None:
            if newer is not None:
                if newer.node_id == dec.dead_owner_id:
                    # The owner answers: the verdict was wrong or is being refuted. Keep the record.
                    self.counters["ha_restarts_refused_owner_alive"] += 1
                    self.trace(f"{n.node_id} not restarting {dom}: its owner {newer.node_id}, declared dead, "
                               f"runs it at epoch {newer.epoch}")
                    finish(n, False)
                    return
                n.ha_table.abandon(dom, drop=True)
                self.trace(f"{n.node_id} not restarting {dom} of dead {dec.dead_owner_id}: {newer.node_id} runs it "
                           f"at epoch {newer.epoch}")
                finish(n, True)
                return
            if dec.target_id == n.node_id:
                done(n, self._ha_restart_here(n, dec.replica, dec.epoch, dec.dead_owner_id))
            else:
                self._ha_adopt_remote(n, dec, done)

        self._ha_newer_copy_elsewhere(node, dec, with_newer)

    @staticmethod
    def _ha_newer_copy_here(node: SimNode, dec: Restart) -> Copy | None:
        mine = node.host.domains.get(dec.domain_id)
        return newer_copy_known(node.node_id, None if mine is None else mine.epoch,
                                node.tombstones.get(dec.domain_id), dec)

    def _ha_newer_copy_elsewhere(self, node: SimNode, dec: Restart, then: Callable) -> None:
        here = self._ha_newer_copy_here(node, dec)
        if here is not None:
            then(node, here)
            return
        peers = [m for m in node.membership.members()
                 if m.status is ALIVE and m.node_id not in (node.node_id, dec.dead_owner_id)]
        # The "dead" owner too, at its last address: a wrong verdict must not start a second copy.
        owner = node.membership.member(dec.dead_owner_id)
        if owner is not None:
            peers.append(owner)

        def answered(n: SimNode, answers: list[tuple[str, Any]]) -> None:
            for m, a in zip(peers, answers):
                if a[0] == "ok" and a[1][0] and a[1][1] >= dec.replica.epoch:
                    then(n, Copy(a[1][1], m.node_id, dec.domain_id))
                    return
            then(n, self._ha_newer_copy_here(n, dec))  # asked again: my copy may have been fenced meanwhile

        if peers and self._rpc_sampled() and not self._check_rpc_size(
                node, "locate", migration_pb2.LocateRequest(domain_id=dec.domain_id)):
            return
        self._gather(node, [(m.address, "locate", dec.domain_id) for m in peers], answered)

    def _ha_adopt_remote(self, node: SimNode, dec: Restart, done: Callable[[SimNode, str], None]) -> None:
        address = self._ha_address(node, dec.target_id)
        if address is None:
            done(node, f"{dec.target_id} is no longer live")
            return

        def answered(n: SimNode, res: tuple[str, Any]) -> None:
            if res[0] != "ok":
                done(n, f"adopt failed: {res[1]}")
                return
            if not res[1]:
                # Counted as a restart where it runs (the adopter); here only as a placement.
                self.counters["ha_placed_on_peer"] += 1
                self.trace(f"{n.node_id} placed {dec.domain_id} of dead {dec.dead_owner_id} on {dec.target_id} "
                           f"at epoch {dec.epoch}")
            done(n, res[1])

        self.rpc(node, address, "adopt", (dec.replica, dec.epoch, node.node_id), answered,
                 lambda n, err: done(n, f"adopt failed: {err}"), kind="ha")

    def _ha_restart_here(self, node: SimNode, rep: Replica, epoch: int, dead_owner_id: str,
                         coordinator_id: str = "") -> str:
        """As HighAvailability.restart_here (Agent.create_domain's checks, the `restarted` record
        journaled first, so the ownership fold brings it back after a crash); "" or why not."""
        spec = rep.spec
        host = node.host
        try:
            spec.validate()
        except DomainSpecError as exc:
            return str(exc)
        if spec.domain_id in host.domains or any(m.spec.domain_id == spec.domain_id for m in node.target.active()):
            return f"domain {spec.domain_id} already exists here"
        if len(host.domains) >= self.config.domains_max:
            return f"at most {self.config.domains_max} domains"
        admission = host.admit(spec, anti_affinity=False)
        if not admission.ok:
            return admission.reason
        self.journal(node, {"t": "restarted", "spec": spec_to_record(spec), "epoch": epoch, "from": dead_owner_id})
        host.add_domain(Domain(spec, epoch=epoch, state=DomainState.RUNNING), anti_affinity=False)
        node.tombstones.pop(spec.domain_id, None)
        node.ha_owner.inherit(spec.domain_id, rep.buddies)
        node.ha_table.on_restarted(spec.domain_id)
        self.counters["ha_restarts"] += 1
        self.trace(f"{node.node_id} restarted {spec.domain_id} of dead {dead_owner_id} at epoch {epoch} (cold"
                   f"{', for ' + coordinator_id if coordinator_id else ''})")
        self._ha_wake(node)  # push the new replica to my buddies now
        self.publish(node)
        return ""

    def _ha_on_adopt(self, node: SimNode, rep: Replica, epoch: int, coordinator_id: str) -> str:
        """As HighAvailability.on_adopt: a coordinator asks me to run a dead owner's domain."""
        if rep.domain_id in node.host.domains:
            return f"{rep.domain_id} already runs here"
        tomb = node.tombstones.get(rep.domain_id)
        if tomb is not None and tomb[0] >= epoch:
            return f"{rep.domain_id} moved on at epoch {tomb[0]}"
        return self._ha_restart_here(node, rep, epoch, rep.owner_id, coordinator_id)

    # message sizes of the HA calls, with the real protobuf messages (a sample of them at scale)
    def _rpc_sampled(self) -> bool:
        self._rpc_encode_count += 1
        if self._rpc_encode_count >= self.encode_every:
            self._rpc_encode_count = 0
            return True
        return False

    def _check_rpc_size(self, node: SimNode, what: str, msg: Any) -> bool:
        size = msg.ByteSize()
        self.rpcs_encoded += 1
        if size > self.rpc_bytes_max_seen:
            self.rpc_bytes_max_seen = size
        if size > self.config.message_bytes_max:
            self.violate("message_size", f"{node.node_id}: {what} of {size} bytes (max {self.config.message_bytes_max})")
            return False
        return True

    # -- safety checkers ---------------------------------------------------------------------------------
    def check_node(self, node: SimNode) -> None:
        if not node.up or self.violation is not None:
            return
        host = node.host
        memory_mib = host.committed_memory_mib
        if memory_mib > host.spec.memory_mib:
            self.violate("memory_capacity", f"{node.node_id} commits {memory_mib} MiB (domains and reservations) "
                                            f"of {host.spec.memory_mib}")
        active = {d.domain_id: d.epoch for d in host.domains.values() if d.state in ACTIVE_STATES}
        if active != node.active:
            self._set_active(node, active)

    def _set_active(self, node: SimNode, active: dict[str, int]) -> None:
        """Invariant 1 while faults may act: at most one active copy of a domain per epoch. Copies at
        different epochs are legal (a partition's two sides, a crashed owner back from its journal
        after HA restarted its domains) until they meet and the older is fenced; the liveness phase
        requires exactly one. And a node's copy never comes back older than what it ran or saw replace it."""
        before = node.active
        node.active = active
        for dom in before:
            if dom not in active:
                self.holders[dom].pop(node.index, None)
        for dom, epoch in active.items():
            if before.get(dom) == epoch:
                continue
            holders = self.holders.setdefault(dom, {})
            holders[node.index] = epoch
            if len(holders) > 1 and sum(1 for e in holders.values() if e == epoch) > 1:
                where = ", ".join(f"{self.nodes[i].node_id}@{e}" for i, e in sorted(holders.items()))
                self.violate("single_active", f"{dom} active on {where} (same epoch)")
            key = (node.index, dom)
            floor = self.epoch_floor.get(key, 0)
            if epoch < floor:
                self.violate("epoch_monotonic", f"{dom} active on {node.node_id} at epoch {epoch} after that node "
                                                f"ran it or saw it replaced at epoch {floor}")
            elif epoch > floor:
                self.epoch_floor[key] = epoch

    def _raise_floor(self, node: SimNode, domain_id: str, epoch: int) -> None:
        """`node`'s copy left for a copy at `epoch` (handed off, or fenced by it)."""
        key = (node.index, domain_id)
        if epoch > self.epoch_floor.get(key, 0):
            self.epoch_floor[key] = epoch

    # -- faults ------------------------------------------------------------------------------------------
    def schedule_faults(self) -> None:
        if not self.faults_on:
            return
        t = FAULTS_START_S
        gap_s = FAULT_GAP_S_MEAN
        while True:
            t += self.rng.expovariate(1 / gap_s)
            if t >= self.opts.duration_s:
                break
            self.at(t, self._inject_fault)

    def _fault_kinds(self) -> list[str]:
        crash = ["crash", "crash", "crash_at_append"]
        partition = ["isolate", "split", "asymmetric"]
        network = ["loss", "duplicate", "reorder", "delay", "slow", "transfer_failure"]
        return {"crash": crash, "partition": partition, "network": network,
                "all": crash + partition + network}[self.opts.faults]

    def _inject_fault(self) -> None:
        kind = self.rng.choice(self._fault_kinds())
        up = [n for n in self.nodes if n.up]
        net = self.net
        window_s = self.rng.uniform(*FAULT_WINDOW_S)
        if kind in ("crash", "crash_at_append"):
            if len(up) <= max(2, self.opts.nodes // 2):
                return
            busy = [n for n in up if n.target.active() or self._outgoing_active(n)]
            # A crash at a journal append hits a node in the middle of a handoff when there is one.
            node = self.rng.choice(busy if kind == "crash_at_append" and busy else up)
            permanent = self.rng.random() < PERMANENT_CRASH_P
            node.permanently_down = permanent
            if not permanent:
                node.restart_pending = True
                self.at(self.now_s + self.rng.uniform(*RESTART_AFTER_S), self.restart, node)
            if kind == "crash":
                self.crash(node, "permanently" if permanent else "")
            else:
                node.crash_armed = self.rng.choice(["lose_tail", "keep_tail"])
                self.faults_injected["crash_armed"] += 1
                self.trace(f"ARM crash of {node.node_id} at its next journal append ({node.crash_armed})")
                self.at(self.now_s + ARMED_CRASH_S_MAX, self._crash_if_armed, node, node.gen)
            return
        self.faults_injected[kind] += 1
        self._fault_tokens[kind] += 1
        token = self._fault_tokens[kind]
        if kind == "isolate":
            victim = self.rng.choice(up)
            net.side = {victim.index: 1}
            self.trace(f"PARTITION isolate {victim.node_id} for {window_s:.1f}s")
        elif kind == "split":
            net.side = {n.index: self.rng.randrange(2) for n in self.nodes}
            self.trace(f"PARTITION split {sum(net.side.values())}/{len(self.nodes)} for {window_s:.1f}s")
        elif kind == "asymmetric":
            victim = self.rng.choice(up)
            (net.deaf if self.rng.random() < 0.5 else net.mute).add(victim.index)
            self.trace(f"PARTITION asymmetric {victim.node_id} for {window_s:.1f}s")
        elif kind == "loss":
            net.loss_p = self.rng.uniform(0.01, 0.2)
            self.trace(f"NETWORK loss {net.loss_p:.3f} for {window_s:.1f}s")
        elif kind == "duplicate":
            net.duplicate_p = self.rng.uniform(0.01, 0.2)
            self.trace(f"NETWORK duplicate {net.duplicate_p:.3f} for {window_s:.1f}s")
        elif kind == "reorder":
            net.reorder_p = self.rng.uniform(0.1, 0.5)
            self.trace(f"NETWORK reorder {net.reorder_p:.3f} for {window_s:.1f}s")
        elif kind == "delay":
            net.delay_s_max = self.rng.uniform(0.05, 0.3)
            self.trace(f"NETWORK delay up to {net.delay_s_max:.3f}s for {window_s:.1f}s")
        elif kind == "slow":
            victim = self.rng.choice(up)
            net.slow_s[victim.index] = self.rng.uniform(0.2, 1.5)
            self.trace(f"SLOW {victim.node_id} by {net.slow_s[victim.index]:.2f}s for {window_s:.1f}s")
        elif kind == "transfer_failure":
            self.transfer_fail_p = 0.5
            self.trace(f"MIGRATION transfers fail half the time for {window_s:.1f}s")
        self.at(self.now_s + window_s, self._end_fault, kind, token)

    def _crash_if_armed(self, node: SimNode, gen: int) -> None:
        if node.up and node.gen == gen and node.crash_armed:
            node.crash_armed = None
            self.crash(node, "armed crash not reached: crashed plainly")

    def _end_fault(self, kind: str, token: int) -> None:
        if self._fault_tokens[kind] != token:
            return  # a newer fault of this kind replaced it
        net = self.net
        if kind in ("isolate", "split"):
            net.side.clear()
        elif kind == "asymmetric":
            net.deaf.clear()
            net.mute.clear()
        elif kind == "loss":
            net.loss_p = 0.0
        elif kind == "duplicate":
            net.duplicate_p = 0.0
        elif kind == "reorder":
            net.reorder_p = 0.0
        elif kind == "delay":
            net.delay_s_max = 0.0
        elif kind == "slow":
            net.slow_s.clear()
        elif kind == "transfer_failure":
            self.transfer_fail_p = 0.0
        self.trace(f"HEAL {kind}")

    def stop_faults(self) -> None:
        """The liveness phase: network healed, armed crashes disarmed, crashed nodes due back restarted."""
        self.faults_on = False
        self.net.heal()
        self.transfer_fail_p = 0.0
        self._fault_tokens.update({k: 1_000_000 for k in list(self._fault_tokens)})
        for node in self.nodes:
            node.crash_armed = None
        self.trace("FAULTS STOP")
        for node in self.nodes:
            if not node.up and node.restart_pending:
                self.restart(node)

    # -- liveness ------------------------------------------------------------------------------------------
    def unsettled(self) -> list[str]:
        """What keeps the cluster from the settled state; empty when settled."""
        why = []
        live = [n for n in self.nodes if n.up]
        dead_ids = [n.node_id for n in self.nodes if not n.up]
        observers = live
        if len(live) > CONVERGENCE_OBSERVERS_MAX:
            observers = Random(self.seed ^ 0x5EED).sample(live, CONVERGENCE_OBSERVERS_MAX)
        for obs in observers:
            m = obs.membership
            for other in live:
                if other is not obs and m.status_of(other.node_id) is not ALIVE:
                    why.append(f"membership: {obs.node_id} sees {other.node_id} as {m.status_of(other.node_id)}")
                    break
            else:
                for dead in dead_ids:
                    if m.status_of(dead) in (ALIVE, SUSPECT):
                        why.append(f"membership: {obs.node_id} sees dead {dead} as {m.status_of(dead).value}")
                        break
            if why:
                break
        # Handoffs the balancing rule starts after the faults stopped are the rule at work, not
        # unfinished business: in a large cluster under a shifting load one is always in flight
        # somewhere. Every handoff begun before must be done, and none may outlive its lease.
        young = self._young_handoffs(live)
        young_domains = {dom for dom, _ in young.values()}
        for node in live:
            busy = [m for m in node.outgoing.values() if m.state not in SOURCE_TERMINAL
                    and not self._stuck_on_dead_target(m) and m.migration_id not in young]
            incoming = [m for m in node.target.active() if m.migration_id not in young]
            if busy or incoming:
                why.append(f"handoff: {node.node_id} has {len(busy)} outgoing, {len(incoming)} incoming "
                           f"(begun before the faults stopped or older than the reservation lease)")
                break
        counts, paused, lost, stuck = self.domain_census()
        for dom in self.specs:
            if counts.get(dom, 0) == 0 and dom in paused and dom in young_domains:
                continue  # paused for a young handoff's stop-and-copy
            if counts.get(dom, 0) != 1 and (counts.get(dom, 0) > 1 or dom in paused):
                why.append(f"domain: {dom} has {counts.get(dom, 0)} active copies"
                           f"{' and a paused one' if dom in paused else ''}")
                break
        if not why:
            why += self._ha_unsettled(live, set(lost) - stuck)
        cov = self.cov()
        if cov > self.opts.cov_target:
            why.append(f"imbalance: CoV {cov:.3f} above {self.opts.cov_target}")
        return why

    def _young_handoffs(self, live: list[SimNode]) -> dict[str, tuple[str, float]]:
        """Migration id -> (domain, start) of the handoffs in flight that began after the faults
        stopped and are younger than the reservation lease."""
        if self.settle_from_s is None:
            return {}
        lease_s = self.config.reservation_lease_ms / 1000
        return {m.migration_id: (m.domain_id, m.started_at_s) for node in live for m in node.outgoing.values()
                if m.state not in SOURCE_TERMINAL and m.started_at_s >= self.settle_from_s
                and self.now_s - m.started_at_s <= lease_s}

    def _stuck_on_dead_target(self, mig: OutgoingMigration) -> bool:
        """An in-doubt handoff whose target died for good: only its journal knows whether it committed,
        so the source must keep its paused copy and keep asking. HA restarts the domain only if the
        target committed and pushed its record before it died; else the domain is counted lost (the
        agent has no rule yet to resume a copy in doubt once its target is confirmed dead)."""
        if mig.state is not SourceState.IN_DOUBT:
            return False
        target = self.nodes[int(mig.target_id[1:])]
        return not target.up and target.permanently_down

    def _ha_unsettled(self, live: list[SimNode], nowhere: set[str]) -> list[str]:
        """High availability has settled: no restart or verification in flight, and every domain that
        runs nowhere (`nowhere`) while a live node holds its replica from a dead owner is unplaced
        for want of room on every live node."""
        for node in live:
            if node.ha_busy or node.ha_table.claimed:
                return [f"ha: {node.node_id} has restarts or verifications in flight "
                        f"({len(node.ha_busy)} busy, {len(node.ha_table.claimed)} claimed)"]
        if not nowhere:
            return []
        for node in live:
            for dom, rep in node.ha_table.replicas.items():
                if dom not in nowhere or self._node(rep.owner_id).up:
                    continue
                room = next((n for n in live if n.host.admit(rep.spec, anti_affinity=False).ok), None)
                if dom in node.ha_table.unplaced and room is None:
                    continue  # reported unplaced: no live node has room for it
                return [f"ha: {dom} runs nowhere, but {node.node_id} holds its replica from dead {rep.owner_id}"
                        f"{' (unplaced, though ' + room.node_id + ' has room)' if room else ''}"]
        return []

    def _node(self, node_id: str) -> SimNode:
        return self.nodes[int(node_id[1:])]

    def unplaced_domains(self, nowhere: set[str]) -> set[str]:
        """Domains that run nowhere and that a live node reports unplaced (no room anywhere)."""
        return {dom for n in self.nodes if n.up for dom in n.ha_table.unplaced
                if dom in nowhere and dom in n.ha_table.replicas}

    def domain_census(self) -> tuple[dict[str, int], set[str], list[str], set[str]]:
        """(active copies per domain on live nodes, domains only paused on live nodes, lost domains,
        domains only paused in doubt with a target that died for good).

        Lost: held by no live node, or only paused on one whose handoff is in doubt with a target that
        died for good (the domain's fate is in the dead node's journal). With high availability a
        domain is lost when its owner and every holder of its replica died."""
        counts: dict[str, int] = {}
        held: set[str] = set()
        paused: set[str] = set()
        stuck: set[str] = set()
        for node in self.nodes:
            if not node.up:
                continue
            for mig in node.outgoing.values():
                if self._stuck_on_dead_target(mig):
                    stuck.add(mig.domain_id)
            for d in node.host.domains.values():
                if d.state in ACTIVE_STATES:
                    held.add(d.domain_id)
                    counts[d.domain_id] = counts.get(d.domain_id, 0) + 1
                elif d.domain_id not in stuck:
                    held.add(d.domain_id)
                    paused.add(d.domain_id)
        lost = [dom for dom in self.specs if dom not in held]
        return counts, paused - set(counts), lost, stuck

    def check_lost(self, lost: list[str]) -> None:
        """A domain held by no live node must still be in some dead node's journal: else it vanished."""
        if not lost:
            return
        on_dead: set[str] = set()
        for node in self.nodes:
            if not node.up:
                on_dead.update(fold(node.journal.records).domains)
            else:  # paused, in doubt with a target that died for good
                on_dead.update(m.domain_id for m in node.outgoing.values() if self._stuck_on_dead_target(m))
        vanished = [dom for dom in lost if dom not in on_dead]
        if vanished:
            self.violate("domain_vanished", f"{len(vanished)} domains held by no node, live or dead: {vanished[:5]}")

    def cov(self) -> float:
        utils = [self.demand_cores(n) / n.host.spec.cpu_cores for n in self.nodes if n.up]
        if not utils:
            return 0.0
        mean = sum(utils) / len(utils)
        if mean <= 0:
            return 0.0
        return math.sqrt(sum((u - mean) ** 2 for u in utils) / len(utils)) / mean

    # -- the run ------------------------------------------------------------------------------------------------
    def run(self) -> SimResult:
        wall_start = time.perf_counter()
        self.start()
        with _long_lived_heap():
            return self._run(wall_start)

    def _run(self, wall_start: float) -> SimResult:
        opts = self.opts
        self.schedule_faults()
        if opts.inject is not None:
            self.at(opts.inject_at_s if opts.inject_at_s is not None else opts.duration_s / 2, self._run_inject)
        t = 0.0
        half: tuple[int, float] | None = None  # (messages sent, node-seconds) at half the fault phase
        while t < opts.duration_s and self.violation is None:
            t = min(opts.duration_s, t + 10.0)
            self.run_until(t)
            sent_now = sum(self.net.sent.values())
            self.trace(f"progress sent={sent_now} migrations={self.counters['migrations']}")
            if opts.progress:
                self._print_progress(t, wall_start, sent_now)
            if half is None and t >= opts.duration_s / 2:
                half = (sum(self.net.sent.values()), self._node_seconds())
        steady = 0.0
        if half is not None and self.violation is None:
            # The second half of the fault phase: past the join storm and the first balancing.
            sent, node_s = sum(self.net.sent.values()) - half[0], self._node_seconds() - half[1]
            steady = sent / node_s if node_s > 0 else 0.0
        bound_s = opts.settle_s_max if opts.settle_s_max is not None else liveness_bound_s(
            self.mcfg, self.config, opts.nodes, opts.domains)
        settle_s = None
        liveness_failure = None
        why: list[str] = []
        if self.violation is None:
            self.stop_faults()
            start_s = self.settle_from_s = self.now_s
            step_s = 1.0 if opts.nodes <= 1000 else 5.0
            while self.violation is None:
                why = self.unsettled()
                if not why:
                    settle_s = self.now_s - start_s
                    break
                if self.now_s - start_s >= bound_s:
                    liveness_failure = f"not settled {bound_s:.0f} model s after the faults stopped: {why[0]}"
                    self.trace(f"LIVENESS FAILURE {liveness_failure}")
                    break
                self.run_until(self.now_s + step_s)
        counts, _, lost, stuck = self.domain_census()
        if self.violation is None:
            self.check_lost(lost)
        unplaced = self.unplaced_domains(set(lost) - stuck)
        lost = [dom for dom in lost if dom not in unplaced]  # unplaced ones are counted apart
        model_s = self.now_s
        node_s = self._node_seconds()
        sent = sum(self.net.sent.values())
        return SimResult(
            seed=self.seed, nodes=opts.nodes, domains=opts.domains, faults=opts.faults,
            start="formed" if opts.formed else "join", model_seconds=model_s,
            wall_seconds=time.perf_counter() - wall_start, violation=self.violation,
            liveness_failure=liveness_failure, settle_s=settle_s, settle_bound_s=bound_s, messages=sent,
            messages_per_node_per_s=sent / node_s if node_s else 0.0,
            messages_per_node_per_s_steady=steady,
            membership_messages_per_node_per_s=self.net.sent["m"] / node_s if node_s else 0.0,
            ha_messages_per_node_per_s=(self.net.sent["ha"] + self.net.sent["ha_r"]) / node_s if node_s else 0.0,
            migrations=self.counters["migrations"], migrations_failed=self.counters["migrations_failed"],
            final_cov=self.cov(), lost=len(lost), lost_domains=lost, restarts=self.counters["ha_restarts"],
            fenced=self.counters["ha_fenced"], unplaced=len(unplaced),
            unplaced_reports=self.counters["ha_unplaced_reports"], faults_injected=dict(self.faults_injected),
            message_bytes_max_seen=self.message_bytes_max_seen, messages_encoded=self.messages_encoded,
            rpc_bytes_max_seen=self.rpc_bytes_max_seen, rpcs_encoded=self.rpcs_encoded,
            trace_digest=self.digest.hexdigest(), trace_tail=list(self.tail))

    def _print_progress(self, t: float, wall_start: float, sent: int) -> None:
        prev_t, prev_sent = self._progress_mark
        self._progress_mark = (t, sent)
        rate = (sent - prev_sent) / (self.opts.nodes * (t - prev_t)) if t > prev_t else 0.0
        print(f"seed {self.seed}: model {t:.0f}/{self.opts.duration_s:g} s, wall "
              f"{time.perf_counter() - wall_start:.0f} s, {rate:.2f} msgs/node/s (last {t - prev_t:g} s), "
              f"{self.counters['migrations']} migrations, {sum(self.faults_injected.values())} faults",
              file=sys.stderr, flush=True)

    def _node_seconds(self) -> float:
        """Model seconds summed over nodes while they were up."""
        return sum(n.up_total_s + ((self.now_s - n.up_since_s) if n.up else 0.0) for n in self.nodes)

    def _run_inject(self) -> None:
        assert self.opts.inject is not None
        self.trace("INJECT (test hook)")
        self.opts.inject(self)


@contextlib.contextmanager
def _long_lived_heap() -> Iterator[None]:
    """The cluster built by `start` lives as long as the run (N nodes' tables: millions of objects
    at 10 000 nodes), and every full collection of the cyclic GC would walk all of it again (13 %
    of the wall time at 2000 nodes, measured). It is frozen out of the collector's generations and
    collections of what the run allocates are spaced out; both are undone afterwards. Memory is
    unchanged: reference counting frees what is not in a cycle, the collector still runs."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 1_000)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def run_sim(opts: SimOptions) -> SimResult:
    return Simulation(opts).run()


def parse_seeds(text: str) -> list[int]:
    """"7" or "1-200" (inclusive) or "1,5,9"."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            lo, hi = part.split("-", 1)
            a, b = int(lo), int(hi)
            if b < a:
                raise ValueError(f"seed range {part!r} runs backwards")
            seeds.extend(range(a, b + 1))
        elif part:
            seeds.append(int(part))
    if not seeds:
        raise ValueError(f"no seeds in {text!r}")
    return seeds


def summarize(results: list[SimResult]) -> dict:
    """The --json object of a run or a sweep."""
    n = len(results)
    return {
        "runs": n,
        "violations": [r.violation.to_json() for r in results if r.violation],
        "liveness_failures": [{"seed": r.seed, "detail": r.liveness_failure} for r in results if r.liveness_failure],
        "model_seconds": round(sum(r.model_seconds for r in results), 3),
        "wall_seconds": round(sum(r.wall_seconds for r in results), 3),
        "messages_per_node_per_s": round(sum(r.messages_per_node_per_s for r in results) / n, 3) if n else 0.0,
        "messages_per_node_per_s_steady": round(sum(r.messages_per_node_per_s_steady for r in results) / n, 3)
        if n else 0.0,
        "membership_messages_per_node_per_s": round(
            sum(r.membership_messages_per_node_per_s for r in results) / n, 3) if n else 0.0,
        "migrations": sum(r.migrations for r in results),
        "migrations_failed": sum(r.migrations_failed for r in results),
        "ha_messages_per_node_per_s": round(sum(r.ha_messages_per_node_per_s for r in results) / n, 3) if n else 0.0,
        "final_cov": round(max((r.final_cov for r in results), default=0.0), 4),
        "lost": sum(r.lost for r in results),
        "restarts": sum(r.restarts for r in results),
        "fenced": sum(r.fenced for r in results),
        "unplaced": sum(r.unplaced for r in results),
        "settle_s_max": round(max((r.settle_s or 0.0 for r in results), default=0.0), 3),
        "per_run": [r.to_json() for r in results],
    }
