from shoal.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckpointPiece(_message.Message):
    __slots__ = ("owner_id", "domain_id", "epoch", "taken_model_s", "data", "dead_owner_id")
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TAKEN_MODEL_S_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DEAD_OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    owner_id: str
    domain_id: str
    epoch: int
    taken_model_s: float
    data: bytes
    dead_owner_id: str
    def __init__(self, owner_id: _Optional[str] = ..., domain_id: _Optional[str] = ..., epoch: _Optional[int] = ..., taken_model_s: _Optional[float] = ..., data: _Optional[bytes] = ..., dead_owner_id: _Optional[str] = ...) -> None: ...

class PutCheckpointResponse(_message.Message):
    __slots__ = ("stored", "reason")
    STORED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    stored: bool
    reason: str
    def __init__(self, stored: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class HoldsRequest(_message.Message):
    __slots__ = ("domain_id",)
    DOMAIN_ID_FIELD_NUMBER: _ClassVar[int]
    domain_id: str
    def __init__(self, domain_id: _Optional[str] = ...) -> None: ...

class HoldsResponse(_message.Message):
    __slots__ = ("replica", "replica_epoch", "replica_owner", "running", "running_epoch")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    REPLICA_EPOCH_FIELD_NUMBER: _ClassVar[int]
    REPLICA_OWNER_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_EPOCH_FIELD_NUMBER: _ClassVar[int]
    replica: bool
    replica_epoch: int
    replica_owner: str
    running: bool
    running_epoch: int
    def __init__(self, replica: _Optional[bool] = ..., replica_epoch: _Optional[int] = ..., replica_owner: _Optional[str] = ..., running: _Optional[bool] = ..., running_epoch: _Optional[int] = ...) -> None: ...

class CheckpointInfo(_message.Message):
    __slots__ = ("epoch", "taken_model_s", "image_hash", "size_bytes")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TAKEN_MODEL_S_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HASH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    taken_model_s: float
    image_hash: str
    size_bytes: int
    def __init__(self, epoch: _Optional[int] = ..., taken_model_s: _Optional[float] = ..., image_hash: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ReplicaRecord(_message.Message):
    __slots__ = ("spec", "epoch", "owner_id", "buddies", "checkpoint")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    BUDDIES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    spec: _types_pb2.DomainSpec
    epoch: int
    owner_id: str
    buddies: _containers.RepeatedScalarFieldContainer[str]
    checkpoint: CheckpointInfo
    def __init__(self, spec: _Optional[_Union[_types_pb2.DomainSpec, _Mapping]] = ..., epoch: _Optional[int] = ..., owner_id: _Optional[str] = ..., buddies: _Optional[_Iterable[str]] = ..., checkpoint: _Optional[_Union[CheckpointInfo, _Mapping]] = ...) -> None: ...

class ReplicateRequest(_message.Message):
    __slots__ = ("owner_id", "replicas")
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    owner_id: str
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaRecord]
    def __init__(self, owner_id: _Optional[str] = ..., replicas: _Optional[_Iterable[_Union[ReplicaRecord, _Mapping]]] = ...) -> None: ...

class ReplicaConflict(_message.Message):
    __slots__ = ("domain_id", "holder_id", "epoch", "running")
    DOMAIN_ID_FIELD_NUMBER: _ClassVar[int]
    HOLDER_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    domain_id: str
    holder_id: str
    epoch: int
    running: bool
    def __init__(self, domain_id: _Optional[str] = ..., holder_id: _Optional[str] = ..., epoch: _Optional[int] = ..., running: _Optional[bool] = ...) -> None: ...

class ReplicateResponse(_message.Message):
    __slots__ = ("conflicts", "stored")
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    conflicts: _containers.RepeatedCompositeFieldContainer[ReplicaConflict]
    stored: int
    def __init__(self, conflicts: _Optional[_Iterable[_Union[ReplicaConflict, _Mapping]]] = ..., stored: _Optional[int] = ...) -> None: ...

class AdoptRequest(_message.Message):
    __slots__ = ("replica", "epoch", "coordinator_id")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_ID_FIELD_NUMBER: _ClassVar[int]
    replica: ReplicaRecord
    epoch: int
    coordinator_id: str
    def __init__(self, replica: _Optional[_Union[ReplicaRecord, _Mapping]] = ..., epoch: _Optional[int] = ..., coordinator_id: _Optional[str] = ...) -> None: ...

class AdoptResponse(_message.Message):
    __slots__ = ("adopted", "reason")
    ADOPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    adopted: bool
    reason: str
    def __init__(self, adopted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...
