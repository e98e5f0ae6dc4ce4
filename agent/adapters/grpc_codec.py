"""Translation between protobuf messages and core values, both ways.

The only module that knows both worlds: cores never see protobuf, protobuf
never leaks past the gRPC adapter.
"""

from __future__ import annotations

from agent.core.messages import (OUTCOME_ABORTED, OUTCOME_COMMITTED, OUTCOME_RESERVED, OUTCOME_UNKNOWN,
                                 Averaging, Exchange, NodeLoad, PrepareRequest)
from hypervisor.domain import DomainSpec
from hypervisor.workload import WorkloadSpec
from shoal.v1 import gossip_pb2, migration_pb2, types_pb2

_OUTCOMES = {
    OUTCOME_UNKNOWN: migration_pb2.QueryResponse.OUTCOME_UNKNOWN,
    OUTCOME_RESERVED: migration_pb2.QueryResponse.OUTCOME_RESERVED,
    OUTCOME_COMMITTED: migration_pb2.QueryResponse.OUTCOME_COMMITTED,
    OUTCOME_ABORTED: migration_pb2.QueryResponse.OUTCOME_ABORTED,
}
_OUTCOMES_BACK = {v: k for k, v in _OUTCOMES.items()}

_LOAD_FIELDS = ("schema_version", "node_id", "address", "heartbeat", "cpu_capacity_cores", "cpu_demand_cores",
                "memory_capacity_mib", "memory_used_mib", "domains", "vcpus_committed", "vcpus_capacity",
                "migrations_inflight", "age_ms")


def outcome_to_pb(outcome: str) -> int:
    return _OUTCOMES[outcome]


def outcome_from_pb(value: int) -> str:
    return _OUTCOMES_BACK.get(value, OUTCOME_UNKNOWN)


def load_to_pb(load: NodeLoad) -> types_pb2.NodeState:
    return types_pb2.NodeState(**{name: getattr(load, name) for name in _LOAD_FIELDS})


def load_from_pb(msg: types_pb2.NodeState) -> NodeLoad:
    return NodeLoad(**{name: getattr(msg, name) for name in _LOAD_FIELDS})


def averaging_to_pb(avg: Averaging) -> gossip_pb2.Averaging:
    return gossip_pb2.Averaging(epoch=avg.epoch, demand_cores=avg.demand_cores, capacity_cores=avg.capacity_cores)


def averaging_from_pb(msg: gossip_pb2.Averaging) -> Averaging:
    return Averaging(msg.epoch, msg.demand_cores, msg.capacity_cores)


def exchange_request_to_pb(ex: Exchange) -> gossip_pb2.ExchangeRequest:
    return gossip_pb2.ExchangeRequest(schema_version=ex.schema_version, sender_id=ex.sender_id,
                                      sender_address=ex.sender_address,
                                      entries=[load_to_pb(e) for e in ex.entries],
                                      averaging=averaging_to_pb(ex.averaging))


def exchange_request_from_pb(msg: gossip_pb2.ExchangeRequest) -> Exchange:
    return Exchange(msg.sender_id, msg.sender_address, tuple(load_from_pb(e) for e in msg.entries),
                    averaging_from_pb(msg.averaging), msg.schema_version)


def exchange_response_to_pb(ex: Exchange) -> gossip_pb2.ExchangeResponse:
    return gossip_pb2.ExchangeResponse(schema_version=ex.schema_version, responder_id=ex.sender_id,
                                       entries=[load_to_pb(e) for e in ex.entries],
                                       averaging=averaging_to_pb(ex.averaging))


def exchange_response_from_pb(msg: gossip_pb2.ExchangeResponse, address: str) -> Exchange:
    return Exchange(msg.responder_id, address, tuple(load_from_pb(e) for e in msg.entries),
                    averaging_from_pb(msg.averaging), msg.schema_version)


def workload_to_pb(spec: WorkloadSpec) -> types_pb2.WorkloadSpec:
    return types_pb2.WorkloadSpec(kind=spec.kind, params=dict(spec.params), path=spec.path)


def workload_from_pb(msg: types_pb2.WorkloadSpec) -> WorkloadSpec:
    return WorkloadSpec(msg.kind, tuple(sorted(msg.params.items())), msg.path)


def spec_to_pb(spec: DomainSpec) -> types_pb2.DomainSpec:
    return types_pb2.DomainSpec(domain_id=spec.domain_id, name=spec.name, vcpus=spec.vcpus,
                                memory_mib=spec.memory_mib, cpu_weight=spec.cpu_weight,
                                cpu_cap_pct=spec.cpu_cap_pct, labels=dict(spec.labels),
                                workload=workload_to_pb(spec.workload), image_seed=spec.image_seed,
                                wws_mib=spec.wws_mib, dirty_rate_mib_s=spec.dirty_rate_mib_s)


def spec_from_pb(msg: types_pb2.DomainSpec) -> DomainSpec:
    """Translates without validating: callers validate (and turn errors into statuses)."""
    workload = workload_from_pb(msg.workload) if msg.HasField("workload") else DomainSpec.__dataclass_fields__[
        "workload"].default
    return DomainSpec(domain_id=msg.domain_id, vcpus=msg.vcpus, memory_mib=msg.memory_mib, name=msg.name,
                      cpu_weight=msg.cpu_weight or 256, cpu_cap_pct=msg.cpu_cap_pct,
                      labels=tuple(sorted(msg.labels.items())), workload=workload, image_seed=msg.image_seed,
                      wws_mib=msg.wws_mib, dirty_rate_mib_s=msg.dirty_rate_mib_s)


def prepare_to_pb(req: PrepareRequest) -> migration_pb2.PrepareRequest:
    return migration_pb2.PrepareRequest(migration_id=req.migration_id, source_id=req.source_id,
                                        spec=spec_to_pb(req.spec), epoch=req.epoch, demand_cores=req.demand_cores,
                                        source_demand_cores=req.source_demand_cores,
                                        source_capacity_cores=req.source_capacity_cores,
                                        image_bytes=req.image_bytes, require_improvement=req.require_improvement)


def prepare_from_pb(msg: migration_pb2.PrepareRequest) -> PrepareRequest:
    return PrepareRequest(msg.migration_id, msg.source_id, spec_from_pb(msg.spec), msg.epoch, msg.demand_cores,
                          msg.source_demand_cores, msg.source_capacity_cores, msg.image_bytes,
                          msg.require_improvement)
