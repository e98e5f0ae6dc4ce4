from shoal.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SaveDomainRequest(_message.Message):
    __slots__ = ("domain_id",)
    DOMAIN_ID_FIELD_NUMBER: _ClassVar[int]
    domain_id: str
    def __init__(self, domain_id: _Optional[str] = ...) -> None: ...

class FilePiece(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class RestoreDomainResponse(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: DomainStatus
    def __init__(self, domain: _Optional[_Union[DomainStatus, _Mapping]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DomainStatus(_message.Message):
    __slots__ = ("domain_id", "epoch", "state", "cpu_demand_cores", "cpu_allocated_cores", "memory_mib", "vcpus", "workload", "dirty_rate_mib_s", "wws_mib", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DOMAIN_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CPU_DEMAND_CORES_FIELD_NUMBER: _ClassVar[int]
    CPU_ALLOCATED_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    DIRTY_RATE_MIB_S_FIELD_NUMBER: _ClassVar[int]
    WWS_MIB_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    domain_id: str
    epoch: int
    state: str
    cpu_demand_cores: float
    cpu_allocated_cores: float
    memory_mib: int
    vcpus: int
    workload: str
    dirty_rate_mib_s: float
    wws_mib: float
    labels: _containers.ScalarMap[str, str]
    def __init__(self, domain_id: _Optional[str] = ..., epoch: _Optional[int] = ..., state: _Optional[str] = ..., cpu_demand_cores: _Optional[float] = ..., cpu_allocated_cores: _Optional[float] = ..., memory_mib: _Optional[int] = ..., vcpus: _Optional[int] = ..., workload: _Optional[str] = ..., dirty_rate_mib_s: _Optional[float] = ..., wws_mib: _Optional[float] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PeerStatus(_message.Message):
    __slots__ = ("node_id", "address", "cpu_utilization", "memory_utilization", "age_s", "domains")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    cpu_utilization: float
    memory_utilization: float
    age_s: float
    domains: int
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., cpu_utilization: _Optional[float] = ..., memory_utilization: _Optional[float] = ..., age_s: _Optional[float] = ..., domains: _Optional[int] = ...) -> None: ...

class MigrationStatus(_message.Message):
    __slots__ = ("migration_id", "domain_id", "direction", "peer_id", "state")
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_ID_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    domain_id: str
    direction: str
    peer_id: str
    state: str
    def __init__(self, migration_id: _Optional[str] = ..., domain_id: _Optional[str] = ..., direction: _Optional[str] = ..., peer_id: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("node_id", "address", "cpu_utilization", "memory_utilization", "cpu_capacity_cores", "cpu_demand_cores", "cpu_unserved_cores", "memory_capacity_mib", "memory_used_mib", "domains", "peers", "counters", "mean_utilization_estimate", "balancing", "migrations", "draining", "model_time_s", "members", "incarnation", "rates", "ha")
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class RatesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    CPU_CAPACITY_CORES_FIELD_NUMBER: _ClassVar[int]
    CPU_DEMAND_CORES_FIELD_NUMBER: _ClassVar[int]
    CPU_UNSERVED_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_CAPACITY_MIB_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_MIB_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    MEAN_UTILIZATION_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    BALANCING_FIELD_NUMBER: _ClassVar[int]
    MIGRATIONS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    MODEL_TIME_S_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    RATES_FIELD_NUMBER: _ClassVar[int]
    HA_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    cpu_utilization: float
    memory_utilization: float
    cpu_capacity_cores: float
    cpu_demand_cores: float
    cpu_unserved_cores: float
    memory_capacity_mib: float
    memory_used_mib: float
    domains: _containers.RepeatedCompositeFieldContainer[DomainStatus]
    peers: _containers.RepeatedCompositeFieldContainer[PeerStatus]
    counters: _containers.ScalarMap[str, int]
    mean_utilization_estimate: float
    balancing: bool
    migrations: _containers.RepeatedCompositeFieldContainer[MigrationStatus]
    draining: bool
    model_time_s: float
    members: _containers.RepeatedCompositeFieldContainer[MemberInfo]
    incarnation: int
    rates: _containers.ScalarMap[str, float]
    ha: HaStatus
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., cpu_utilization: _Optional[float] = ..., memory_utilization: _Optional[float] = ..., cpu_capacity_cores: _Optional[float] = ..., cpu_demand_cores: _Optional[float] = ..., cpu_unserved_cores: _Optional[float] = ..., memory_capacity_mib: _Optional[float] = ..., memory_used_mib: _Optional[float] = ..., domains: _Optional[_Iterable[_Union[DomainStatus, _Mapping]]] = ..., peers: _Optional[_Iterable[_Union[PeerStatus, _Mapping]]] = ..., counters: _Optional[_Mapping[str, int]] = ..., mean_utilization_estimate: _Optional[float] = ..., balancing: _Optional[bool] = ..., migrations: _Optional[_Iterable[_Union[MigrationStatus, _Mapping]]] = ..., draining: _Optional[bool] = ..., model_time_s: _Optional[float] = ..., members: _Optional[_Iterable[_Union[MemberInfo, _Mapping]]] = ..., incarnation: _Optional[int] = ..., rates: _Optional[_Mapping[str, float]] = ..., ha: _Optional[_Union[HaStatus, _Mapping]] = ...) -> None: ...

class HaStatus(_message.Message):
    __slots__ = ("replicas", "restarts", "fenced", "unplaced", "replicas_factor", "checkpoints_held", "checkpointed")
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    FENCED_FIELD_NUMBER: _ClassVar[int]
    UNPLACED_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FACTOR_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_HELD_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTED_FIELD_NUMBER: _ClassVar[int]
    replicas: int
    restarts: int
    fenced: int
    unplaced: _containers.RepeatedCompositeFieldContainer[UnplacedDomain]
    replicas_factor: int
    checkpoints_held: int
    checkpointed: int
    def __init__(self, replicas: _Optional[int] = ..., restarts: _Optional[int] = ..., fenced: _Optional[int] = ..., unplaced: _Optional[_Iterable[_Union[UnplacedDomain, _Mapping]]] = ..., replicas_factor: _Optional[int] = ..., checkpoints_held: _Optional[int] = ..., checkpointed: _Optional[int] = ...) -> None: ...

class UnplacedDomain(_message.Message):
    __slots__ = ("domain_id", "owner_id", "reason")
    DOMAIN_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    domain_id: str
    owner_id: str
    reason: str
    def __init__(self, domain_id: _Optional[str] = ..., owner_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class MemberInfo(_message.Message):
    __slots__ = ("node_id", "address", "status", "incarnation", "last_change_s", "in_view")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    LAST_CHANGE_S_FIELD_NUMBER: _ClassVar[int]
    IN_VIEW_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    status: str
    incarnation: int
    last_change_s: float
    in_view: bool
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., status: _Optional[str] = ..., incarnation: _Optional[int] = ..., last_change_s: _Optional[float] = ..., in_view: _Optional[bool] = ...) -> None: ...

class ListDomainsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDomainsResponse(_message.Message):
    __slots__ = ("domains",)
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    domains: _containers.RepeatedCompositeFieldContainer[DomainStatus]
    def __init__(self, domains: _Optional[_Iterable[_Union[DomainStatus, _Mapping]]] = ...) -> None: ...

class CreateDomainRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: _types_pb2.DomainSpec
    def __init__(self, spec: _Optional[_Union[_types_pb2.DomainSpec, _Mapping]] = ...) -> None: ...

class CreateDomainResponse(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: DomainStatus
    def __init__(self, domain: _Optional[_Union[DomainStatus, _Mapping]] = ...) -> None: ...

class MigrateDomainRequest(_message.Message):
    __slots__ = ("domain_id", "target_node_id", "bandwidth_mib_s", "no_wait")
    DOMAIN_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_MIB_S_FIELD_NUMBER: _ClassVar[int]
    NO_WAIT_FIELD_NUMBER: _ClassVar[int]
    domain_id: str
    target_node_id: str
    bandwidth_mib_s: float
    no_wait: bool
    def __init__(self, domain_id: _Optional[str] = ..., target_node_id: _Optional[str] = ..., bandwidth_mib_s: _Optional[float] = ..., no_wait: _Optional[bool] = ...) -> None: ...

class MigrateDomainResponse(_message.Message):
    __slots__ = ("migrated", "reason", "migration_id", "epoch", "bytes_sent", "duration_s", "rounds", "downtime_ms", "stop_reason", "accounted_bytes", "hash_equal", "transfer_s", "prepare_s")
    MIGRATED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    DOWNTIME_MS_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTED_BYTES_FIELD_NUMBER: _ClassVar[int]
    HASH_EQUAL_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_S_FIELD_NUMBER: _ClassVar[int]
    PREPARE_S_FIELD_NUMBER: _ClassVar[int]
    migrated: bool
    reason: str
    migration_id: str
    epoch: int
    bytes_sent: int
    duration_s: float
    rounds: int
    downtime_ms: float
    stop_reason: str
    accounted_bytes: int
    hash_equal: bool
    transfer_s: float
    prepare_s: float
    def __init__(self, migrated: _Optional[bool] = ..., reason: _Optional[str] = ..., migration_id: _Optional[str] = ..., epoch: _Optional[int] = ..., bytes_sent: _Optional[int] = ..., duration_s: _Optional[float] = ..., rounds: _Optional[int] = ..., downtime_ms: _Optional[float] = ..., stop_reason: _Optional[str] = ..., accounted_bytes: _Optional[int] = ..., hash_equal: _Optional[bool] = ..., transfer_s: _Optional[float] = ..., prepare_s: _Optional[float] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("domains_remaining",)
    DOMAINS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    domains_remaining: int
    def __init__(self, domains_remaining: _Optional[int] = ...) -> None: ...

class SetBalancingRequest(_message.Message):
    __slots__ = ("enabled",)
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    def __init__(self, enabled: _Optional[bool] = ...) -> None: ...

class SetBalancingResponse(_message.Message):
    __slots__ = ("enabled", "migrations_inflight")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    MIGRATIONS_INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    migrations_inflight: int
    def __init__(self, enabled: _Optional[bool] = ..., migrations_inflight: _Optional[int] = ...) -> None: ...
