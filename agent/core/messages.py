"""Core values exchanged by agents: frozen dataclasses, free of protobuf.

The gRPC adapter translates protobuf to these and back; the cores, the
simulator and hypothesis only ever see these.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypervisor.domain import DomainSpec

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class NodeLoad:
    """One node's published load. The highest heartbeat per node is freshest."""

    node_id: str
    address: str
    heartbeat: int
    cpu_capacity_cores: float
    cpu_demand_cores: float
    memory_capacity_mib: float
    memory_used_mib: float
    domains: int = 0
    vcpus_committed: float = 0.0
    vcpus_capacity: float = 0.0
    migrations_inflight: int = 0
    age_ms: int = 0
    schema_version: int = SCHEMA_VERSION

    def aged(self, age_ms: int) -> "NodeLoad":
        """This entry as relayed with `age_ms`. dataclasses.replace runs the whole __init__
        (~10 us); gossip makes one per entry per exchange, so copy the fields directly."""
        if age_ms == self.age_ms:
            return self
        new = object.__new__(NodeLoad)
        new.__dict__.update(self.__dict__)
        new.__dict__["age_ms"] = age_ms
        return new

    @property
    def cpu_utilization(self) -> float:
        return self.cpu_demand_cores / self.cpu_capacity_cores

    @property
    def memory_utilization(self) -> float:
        return self.memory_used_mib / self.memory_capacity_mib

    @property
    def memory_free_mib(self) -> float:
        return self.memory_capacity_mib - self.memory_used_mib


@dataclass(frozen=True)
class Averaging:
    """Push-pull averaging state: estimates of mean demand and capacity per node."""

    epoch: int
    demand_cores: float
    capacity_cores: float


@dataclass(frozen=True)
class Exchange:
    """One side of a push-pull gossip exchange."""

    sender_id: str
    sender_address: str
    entries: tuple[NodeLoad, ...]
    averaging: Averaging
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True)
class PrepareRequest:
    migration_id: str
    source_id: str
    spec: DomainSpec
    epoch: int
    demand_cores: float
    source_demand_cores: float
    source_capacity_cores: float
    image_bytes: int
    require_improvement: bool = True


@dataclass(frozen=True)
class PrepareDecision:
    accepted: bool
    reason: str = ""
    lease_ms: int = 0


@dataclass(frozen=True)
class CommitDecision:
    committed: bool
    reason: str = ""
    epoch: int = 0


# Outcomes of a handoff as the target reports it (QueryResponse.Outcome).
OUTCOME_UNKNOWN = "unknown"
OUTCOME_RESERVED = "reserved"
OUTCOME_COMMITTED = "committed"
OUTCOME_ABORTED = "aborted"

