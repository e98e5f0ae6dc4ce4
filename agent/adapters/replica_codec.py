"""Protobuf <-> replica core values (agent/core/replicas.py), both ways, validated."""

from __future__ import annotations

import math

from agent.adapters.grpc_codec import spec_from_pb, spec_to_pb
from agent.core.replicas import Checkpoint, Conflict, Replica
from agent.core.validation import InputRejected, check_id
from hypervisor.domain import DomainSpecError
from hypervisor.workload import WorkloadError
from shoal.v1 import replica_pb2

# Buddies named in one record: far above any sensible ha_replicas.
BUDDIES_MAX = 16


def replica_to_pb(r: Replica) -> replica_pb2.ReplicaRecord:
    msg = replica_pb2.ReplicaRecord(spec=spec_to_pb(r.spec), epoch=r.epoch, owner_id=r.owner_id,
                                    buddies=list(r.buddies))
    if r.checkpoint is not None:
        cp = r.checkpoint
        msg.checkpoint.CopyFrom(replica_pb2.CheckpointInfo(epoch=cp.epoch, taken_model_s=cp.taken_model_s,
                                                          image_hash=cp.image_hash, size_bytes=cp.size_bytes))
    return msg


def replica_from_pb(msg: replica_pb2.ReplicaRecord) -> Replica:
    """Raises InputRejected("bad_replica", ...) on anything that is not a valid record."""
    try:
        spec = spec_from_pb(msg.spec)
        spec.validate()
    except (DomainSpecError, WorkloadError, ValueError, TypeError) as exc:
        raise InputRejected("bad_replica", f"replica spec: {exc}") from None
    check_id("owner_id", msg.owner_id)
    if msg.epoch < 1:
        raise InputRejected("bad_replica", f"replica of {spec.domain_id}: epoch {msg.epoch} < 1")
    if len(msg.buddies) > BUDDIES_MAX:
        raise InputRejected("bad_replica", f"replica of {spec.domain_id}: {len(msg.buddies)} buddies")
    for b in msg.buddies:
        check_id("buddy", b)
    checkpoint = None
    if msg.HasField("checkpoint"):
        cp = msg.checkpoint
        if not math.isfinite(cp.taken_model_s):
            raise InputRejected("bad_replica", "checkpoint time is not finite")
        checkpoint = Checkpoint(cp.epoch, cp.taken_model_s, cp.image_hash, cp.size_bytes)
    return Replica(spec, msg.epoch, msg.owner_id, tuple(msg.buddies), checkpoint)


def conflict_to_pb(c: Conflict) -> replica_pb2.ReplicaConflict:
    return replica_pb2.ReplicaConflict(domain_id=c.domain_id, holder_id=c.holder_id, epoch=c.epoch, running=c.running)


def conflict_from_pb(msg: replica_pb2.ReplicaConflict) -> Conflict:
    check_id("holder_id", msg.holder_id)
    return Conflict(msg.domain_id, msg.holder_id, msg.epoch, msg.running)
