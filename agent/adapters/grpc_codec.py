"""Translation between protobuf messages and core values, both ways.

The only module that knows both worlds: cores never see protobuf, protobuf
never leaks past the gRPC adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

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


# -- Transfer chunks: decoded without copying their pages ---------------------------
@dataclass(frozen=True, slots=True)
class TransferChunkView:
    """A TransferChunk without protobuf: decoded, `data` is a view into the
    received message; to encode, `data` is any bytes-like object."""

    migration_id: str
    round: int
    first_page: int
    data: "memoryview | bytes"


_CHUNK_MIGRATION_ID, _CHUNK_ROUND, _CHUNK_FIRST_PAGE, _CHUNK_DATA = (
    migration_pb2.TransferChunk.DESCRIPTOR.fields_by_name[name].number
    for name in ("migration_id", "round", "first_page", "data"))


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise DecodeError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise DecodeError("varint longer than 10 bytes")


def decode_transfer_chunk(buf: bytes) -> TransferChunkView:
    """TransferChunk.FromString without the two copies of `data` that protobuf
    makes (into its arena, then into a new bytes on access): 1 MiB per chunk,
    ~40 ms of the target's loop per 256 MiB, measured. Same wire semantics as
    protobuf for what it accepts (fields in any order, the last one wins,
    unknown fields skipped); groups and malformed input raise DecodeError."""
    migration_id, round_no, first_page, data = "", 0, 0, memoryview(b"")
    view = memoryview(buf)
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if not 0 < field < 1 << 29:
            raise DecodeError(f"field number {field} out of range")
        if wire == 0:
            value, pos = _varint(buf, pos)
            if field == _CHUNK_ROUND:
                round_no = value & 0xFFFFFFFF
            elif field == _CHUNK_FIRST_PAGE:
                first_page = value & 0xFFFFFFFFFFFFFFFF
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if size > end - pos:
                raise DecodeError("length-delimited field past the end")
            if field == _CHUNK_DATA:
                data = view[pos:pos + size]
            elif field == _CHUNK_MIGRATION_ID:
                try:
                    migration_id = str(view[pos:pos + size], "utf-8")
                except UnicodeDecodeError as exc:
                    raise DecodeError("migration_id is not UTF-8") from exc
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise DecodeError("fixed-width field past the end")
        else:
            raise DecodeError(f"unsupported wire type {wire}")
    return TransferChunkView(migration_id, round_no, first_page, data)


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_transfer_chunk(chunk: TransferChunkView) -> bytes:
    """TransferChunk.SerializeToString, byte for byte, with one copy of `data`
    (protobuf makes three: into the message, into its encoder, into bytes)."""
    head = bytearray()
    if chunk.migration_id:
        mid = chunk.migration_id.encode("utf-8")
        head += _varint_bytes(_CHUNK_MIGRATION_ID << 3 | 2) + _varint_bytes(len(mid)) + mid
    if chunk.round:
        head += _varint_bytes(_CHUNK_ROUND << 3) + _varint_bytes(chunk.round)
    if chunk.first_page:
        head += _varint_bytes(_CHUNK_FIRST_PAGE << 3) + _varint_bytes(chunk.first_page)
    size = len(chunk.data)
    if not size:
        return bytes(head)
    head += _varint_bytes(_CHUNK_DATA << 3 | 2) + _varint_bytes(size)
    return b"".join((head, chunk.data))
