"""Prometheus metrics for one agent: its own registry, an HTTP endpoint, and a bridge
from the agent's flat counters (agent.runtime.metrics.Metrics).

Every agent gets its own CollectorRegistry, so agents in one process (tests,
the simulator) never share or collide on series. The agent keeps counting in
its flat `Metrics` (cheap, no locks, what `shoal status` shows);
`sync_counters(snapshot)` carries the increase since the last sync into the
Prometheus counters. The mapping from flat names to Prometheus metrics is
the table COUNTER_MAP below; a flat counter it doesn't name still appears,
as shoal_<name>_total with the labels of its key.

The HTTP endpoint runs in prometheus_client's own thread; metric updates are
thread-safe, and everything that reads agent state happens on the event loop
(the agent pushes values, the scraper never pulls from the agent).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

log = logging.getLogger("shoal.prom")

PREFIX = "shoal"
# Whole migrations: from a fraction of a second (tiny image, loopback) to minutes (large image, slow link).
MIGRATION_DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Stop-and-copy downtime: Clark et al. report 60-210 ms for real workloads; resolve around that.
MIGRATION_DOWNTIME_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MEMBER_STATUSES = ("alive", "suspect", "dead")

# Flat counter name -> (AgentMetrics counter attribute, labels the name implies).
# Labels in the flat key (`name{reason=x}`) are added to these.
COUNTER_MAP: dict[str, tuple[str, dict[str, str]]] = {
    "migrations_started": ("migrations_started", {}),
    "migrations_succeeded": ("migrations_succeeded", {}),
    "migrations_failed": ("migrations_failed", {}),
    "rejected_inputs": ("rejected_inputs", {}),
    "suspicions": ("suspicions", {}),
    "false_suspicions": ("false_suspicions", {}),
    "messages": ("messages", {}),
    "bytes": ("bytes", {}),
    "gossip_exchanges_sent": ("messages", {"type": "gossip", "direction": "out"}),
    "gossip_exchanges_received": ("messages", {"type": "gossip", "direction": "in"}),
    "migration_bytes_sent": ("bytes", {"type": "migration", "direction": "out"}),
    "migration_bytes_received": ("bytes", {"type": "migration", "direction": "in"}),
    "ha_restarts": ("ha_restarts", {}),
    "ha_fenced": ("ha_fenced", {}),
}
_KEY_RE = re.compile(r"^([a-zA-Z_][a-zA-Z0-9_]*)(?:\{(.*)\})?$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def parse_counter_key(key: str) -> tuple[str, dict[str, str]] | None:
    """`name{a=x,b=y}` -> ("name", {"a": "x", "b": "y"}); None if it isn't that shape."""
    m = _KEY_RE.match(key)
    if m is None:
        return None
    labels: dict[str, str] = {}
    if m.group(2):
        for part in m.group(2).split(","):
            name, sep, value = part.partition("=")
            if not sep or not _LABEL_RE.match(name) or name.startswith("__"):
                return None
            labels[name] = value
    return m.group(1), labels


@dataclass
class MetricsHttpServer:
    """The /metrics endpoint: prometheus_client's WSGI server and its thread."""

    server: object
    thread: object
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class AgentMetrics:
    """One agent's Prometheus metrics (all named shoal_*)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, node_id: str | None = None,
                 cluster: str | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r, p = self.registry, PREFIX
        self.cpu_utilization = Gauge(f"{p}_cpu_utilization", "CPU demand over capacity of this node (1 = full)",
                                     registry=r)
        self.memory_utilization = Gauge(f"{p}_memory_utilization", "Committed memory over capacity of this node",
                                        registry=r)
        self.domains = Gauge(f"{p}_domains", "Guest domains on this node", registry=r)
        self.members = Gauge(f"{p}_members", "Cluster members this node knows of, by status", ["status"],
                             registry=r)
        self.migrations_started = Counter(f"{p}_migrations_started", "Outgoing migrations started", registry=r)
        self.migrations_succeeded = Counter(f"{p}_migrations_succeeded", "Outgoing migrations committed",
                                            registry=r)
        self.migrations_failed = Counter(f"{p}_migrations_failed", "Outgoing migrations that did not commit",
                                         ["reason"], registry=r)
        self.rejected_inputs = Counter(f"{p}_rejected_inputs", "Messages refused as invalid or unauthorised",
                                       ["reason"], registry=r)
        self.messages = Counter(f"{p}_messages", "Protocol messages", ["type", "direction"], registry=r)
        self.bytes = Counter(f"{p}_bytes", "Protocol payload bytes", ["type", "direction"], registry=r)
        self.suspicions = Counter(f"{p}_suspicions", "Members this node began to suspect", registry=r)
        self.false_suspicions = Counter(f"{p}_false_suspicions", "Suspicions later refuted by the member",
                                        registry=r)
        self.ha_replicas = Gauge(f"{p}_ha_replicas", "Replicas this node holds for other owners", registry=r)
        self.ha_checkpoints_held = Gauge(f"{p}_ha_checkpoints_held",
                                         "Checkpoints of other owners' domains this node holds", registry=r)
        self.ha_unplaced = Gauge(f"{p}_ha_unplaced", "Domains of dead owners this node could place nowhere",
                                 registry=r)
        self.ha_restarts = Counter(f"{p}_ha_restarts", "Domains of confirmed-dead owners restarted here (cold)",
                                   registry=r)
        self.ha_fenced = Counter(f"{p}_ha_fenced", "Copies destroyed because a newer copy runs elsewhere",
                                 registry=r)
        self.migration_duration_seconds = Histogram(
            f"{p}_migration_duration_seconds", "Wall time of committed migrations, PREPARE to COMMITTED",
            registry=r, buckets=MIGRATION_DURATION_BUCKETS_S)
        self.migration_downtime_seconds = Histogram(
            f"{p}_migration_downtime_seconds", "Time a migrating domain was paused (stop-and-copy)",
            registry=r, buckets=MIGRATION_DOWNTIME_BUCKETS_S)
        if node_id is not None:
            info = Gauge(f"{p}_node_info", "Identity of this agent (always 1)", ["node_id", "cluster"], registry=r)
            info.labels(node_id=node_id, cluster=cluster or "").set(1)
        self._dynamic: dict[str, Counter] = {}
        self._last: dict[str, float] = {}
        self._skipped: set[str] = set()
        self._member_statuses: set[str] = set(MEMBER_STATUSES)
        for status in MEMBER_STATUSES:
            self.members.labels(status=status).set(0)

    # -- values the agent pushes --------------------------------------------------------
    def set_load(self, cpu_utilization: float, memory_utilization: float, domains: int) -> None:
        self.cpu_utilization.set(cpu_utilization)
        self.memory_utilization.set(memory_utilization)
        self.domains.set(domains)

    def set_members(self, counts: Mapping[str, int]) -> None:
        """Members by status; a status seen before and missing now is set to 0."""
        self._member_statuses |= set(counts)
        for status in self._member_statuses:
            self.members.labels(status=status).set(counts.get(status, 0))

    def observe_migration(self, duration_s: float, downtime_s: float | None = None) -> None:
        self.migration_duration_seconds.observe(duration_s)
        if downtime_s is not None:
            self.migration_downtime_seconds.observe(downtime_s)

    def update_from_status(self, status: Mapping) -> None:
        """Gauges and counters from Agent.status() (call it on the event loop)."""
        self.set_load(status["cpu_utilization"], status["memory_utilization"], sum(d.get("state") != "reserved-in" for d in status["domains"]))
        self.sync_counters(status["counters"])
        ha = status.get("ha")
        if ha is not None:
            self.ha_replicas.set(ha["replicas"])
            self.ha_unplaced.set(len(ha["unplaced"]))
            self.ha_checkpoints_held.set(ha.get("checkpoints_held", 0))

    # -- the flat counters ----------------------------------------------------------------
    def sync_counters(self, counters: Mapping[str, int | float]) -> list[str]:
        """Adds each flat counter's increase since the last sync; returns keys it could not map."""
        skipped = []
        for key, value in counters.items():
            target = self._resolve(key)
            if target is None:
                skipped.append(key)
                if key not in self._skipped:
                    self._skipped.add(key)
                    log.warning("flat counter %r has no Prometheus counter; not exported", key)
                continue
            last = self._last.get(key, 0)
            # A value below the last one means the source restarted from zero.
            delta = value - last if value >= last else value
            self._last[key] = value
            if delta > 0:
                target.inc(delta)
        return skipped

    def _resolve(self, key: str):
        parsed = parse_counter_key(key)
        if parsed is None:
            return None
        name, labels = parsed
        attr, implied = COUNTER_MAP.get(name, (None, {}))
        if attr is not None:
            counter: Counter = getattr(self, attr)
        else:
            counter = self._dynamic_counter(name, sorted(labels))
            if counter is None:
                return None
        labels = {**labels, **implied}
        wanted = counter._labelnames  # noqa: SLF001 - the public API offers no accessor
        if set(labels) - set(wanted):
            return None
        if not wanted:
            return counter
        return counter.labels(**{n: labels.get(n, "unknown") for n in wanted})

    def _dynamic_counter(self, name: str, labelnames: list[str]) -> Counter | None:
        counter = self._dynamic.get(name)
        if counter is not None:
            return counter if list(counter._labelnames) == labelnames else None  # noqa: SLF001
        base = name.removesuffix("_total")
        try:
            counter = Counter(f"{PREFIX}_{base}", f"Agent counter {name}", labelnames, registry=self.registry)
        except ValueError:  # collides with a metric that already exists
            return None
        self._dynamic[name] = counter
        return counter

    # -- exposition -------------------------------------------------------------------------
    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def start_http(self, host: str = "127.0.0.1", port: int = 0) -> tuple[MetricsHttpServer, int]:
        """Serves /metrics on HOST:PORT (0 picks a port) in a thread; returns it and the bound port."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        bound = server.server_address[1]
        return MetricsHttpServer(server, thread, host, bound), bound
