from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkloadSpec(_message.Message):
    __slots__ = ("kind", "params", "path")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    kind: str
    params: _containers.ScalarMap[str, float]
    path: str
    def __init__(self, kind: _Optional[str] = ..., params: _Optional[_Mapping[str, float]] = ..., path: _Optional[str] = ...) -> None: ...

class DomainSpec(_message.Message):
    __slots__ = ("domain_id", "name", "vcpus", "memory_mib", "cpu_weight", "cpu_cap_pct", "labels", "workload", "image_seed", "wws_mib", "dirty_rate_mib_s")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DOMAIN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    CPU_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CPU_CAP_PCT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SEED_FIELD_NUMBER: _ClassVar[int]
    WWS_MIB_FIELD_NUMBER: _ClassVar[int]
    DIRTY_RATE_MIB_S_FIELD_NUMBER: _ClassVar[int]
    domain_id: str
    name: str
    vcpus: int
    memory_mib: int
    cpu_weight: int
    cpu_cap_pct: int
    labels: _containers.ScalarMap[str, str]
    workload: WorkloadSpec
    image_seed: int
    wws_mib: float
    dirty_rate_mib_s: float
    def __init__(self, domain_id: _Optional[str] = ..., name: _Optional[str] = ..., vcpus: _Optional[int] = ..., memory_mib: _Optional[int] = ..., cpu_weight: _Optional[int] = ..., cpu_cap_pct: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., workload: _Optional[_Union[WorkloadSpec, _Mapping]] = ..., image_seed: _Optional[int] = ..., wws_mib: _Optional[float] = ..., dirty_rate_mib_s: _Optional[float] = ...) -> None: ...

class NodeState(_message.Message):
    __slots__ = ("schema_version", "node_id", "address", "heartbeat", "cpu_capacity_cores", "cpu_demand_cores", "memory_capacity_mib", "memory_used_mib", "domains", "vcpus_committed", "vcpus_capacity", "migrations_inflight", "age_ms")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    CPU_CAPACITY_CORES_FIELD_NUMBER: _ClassVar[int]
    CPU_DEMAND_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_CAPACITY_MIB_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_MIB_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    VCPUS_COMMITTED_FIELD_NUMBER: _ClassVar[int]
    VCPUS_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    MIGRATIONS_INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    AGE_MS_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    node_id: str
    address: str
    heartbeat: int
    cpu_capacity_cores: float
    cpu_demand_cores: float
    memory_capacity_mib: float
    memory_used_mib: float
    domains: int
    vcpus_committed: float
    vcpus_capacity: float
    migrations_inflight: int
    age_ms: int
    def __init__(self, schema_version: _Optional[int] = ..., node_id: _Optional[str] = ..., address: _Optional[str] = ..., heartbeat: _Optional[int] = ..., cpu_capacity_cores: _Optional[float] = ..., cpu_demand_cores: _Optional[float] = ..., memory_capacity_mib: _Optional[float] = ..., memory_used_mib: _Optional[float] = ..., domains: _Optional[int] = ..., vcpus_committed: _Optional[float] = ..., vcpus_capacity: _Optional[float] = ..., migrations_inflight: _Optional[int] = ..., age_ms: _Optional[int] = ...) -> None: ...
