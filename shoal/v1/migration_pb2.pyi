from shoal.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LocateRequest(_message.Message):
    __slots__ = ("domain_id",)
    DOMAIN_ID_FIELD_NUMBER: _ClassVar[int]
    domain_id: str
    def __init__(self, domain_id: _Optional[str] = ...) -> None: ...

class LocateResponse(_message.Message):
    __slots__ = ("held", "epoch", "state")
    HELD_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    held: bool
    epoch: int
    state: str
    def __init__(self, held: _Optional[bool] = ..., epoch: _Optional[int] = ..., state: _Optional[str] = ...) -> None: ...

class PrepareRequest(_message.Message):
    __slots__ = ("migration_id", "source_id", "spec", "epoch", "demand_cores", "source_demand_cores", "source_capacity_cores", "image_bytes", "require_improvement")
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    DEMAND_CORES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_DEMAND_CORES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_CAPACITY_CORES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_IMPROVEMENT_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    source_id: str
    spec: _types_pb2.DomainSpec
    epoch: int
    demand_cores: float
    source_demand_cores: float
    source_capacity_cores: float
    image_bytes: int
    require_improvement: bool
    def __init__(self, migration_id: _Optional[str] = ..., source_id: _Optional[str] = ..., spec: _Optional[_Union[_types_pb2.DomainSpec, _Mapping]] = ..., epoch: _Optional[int] = ..., demand_cores: _Optional[float] = ..., source_demand_cores: _Optional[float] = ..., source_capacity_cores: _Optional[float] = ..., image_bytes: _Optional[int] = ..., require_improvement: _Optional[bool] = ...) -> None: ...

class PrepareResponse(_message.Message):
    __slots__ = ("accepted", "reason", "lease_ms")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    lease_ms: int
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class TransferChunk(_message.Message):
    __slots__ = ("migration_id", "round", "first_page", "data")
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    FIRST_PAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    round: int
    first_page: int
    data: bytes
    def __init__(self, migration_id: _Optional[str] = ..., round: _Optional[int] = ..., first_page: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class TransferResponse(_message.Message):
    __slots__ = ("bytes_received", "image_hash")
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HASH_FIELD_NUMBER: _ClassVar[int]
    bytes_received: int
    image_hash: str
    def __init__(self, bytes_received: _Optional[int] = ..., image_hash: _Optional[str] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("migration_id", "epoch", "image_hash", "device_state")
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HASH_FIELD_NUMBER: _ClassVar[int]
    DEVICE_STATE_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    epoch: int
    image_hash: str
    device_state: bytes
    def __init__(self, migration_id: _Optional[str] = ..., epoch: _Optional[int] = ..., image_hash: _Optional[str] = ..., device_state: _Optional[bytes] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("committed", "reason", "epoch")
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    committed: bool
    reason: str
    epoch: int
    def __init__(self, committed: _Optional[bool] = ..., reason: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class AbortRequest(_message.Message):
    __slots__ = ("migration_id", "reason")
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    reason: str
    def __init__(self, migration_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AbortResponse(_message.Message):
    __slots__ = ("known", "outcome")
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    known: bool
    outcome: QueryResponse.Outcome
    def __init__(self, known: _Optional[bool] = ..., outcome: _Optional[_Union[QueryResponse.Outcome, str]] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("migration_id",)
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    def __init__(self, migration_id: _Optional[str] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("outcome", "epoch")
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNKNOWN: _ClassVar[QueryResponse.Outcome]
        OUTCOME_RESERVED: _ClassVar[QueryResponse.Outcome]
        OUTCOME_COMMITTED: _ClassVar[QueryResponse.Outcome]
        OUTCOME_ABORTED: _ClassVar[QueryResponse.Outcome]
    OUTCOME_UNKNOWN: QueryResponse.Outcome
    OUTCOME_RESERVED: QueryResponse.Outcome
    OUTCOME_COMMITTED: QueryResponse.Outcome
    OUTCOME_ABORTED: QueryResponse.Outcome
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    outcome: QueryResponse.Outcome
    epoch: int
    def __init__(self, outcome: _Optional[_Union[QueryResponse.Outcome, str]] = ..., epoch: _Optional[int] = ...) -> None: ...
