from shoal.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Averaging(_message.Message):
    __slots__ = ("epoch", "demand_cores", "capacity_cores")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    DEMAND_CORES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_CORES_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    demand_cores: float
    capacity_cores: float
    def __init__(self, epoch: _Optional[int] = ..., demand_cores: _Optional[float] = ..., capacity_cores: _Optional[float] = ...) -> None: ...

class ExchangeRequest(_message.Message):
    __slots__ = ("schema_version", "sender_id", "sender_address", "entries", "averaging")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    AVERAGING_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    sender_id: str
    sender_address: str
    entries: _containers.RepeatedCompositeFieldContainer[_types_pb2.NodeState]
    averaging: Averaging
    def __init__(self, schema_version: _Optional[int] = ..., sender_id: _Optional[str] = ..., sender_address: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[_types_pb2.NodeState, _Mapping]]] = ..., averaging: _Optional[_Union[Averaging, _Mapping]] = ...) -> None: ...

class ExchangeResponse(_message.Message):
    __slots__ = ("schema_version", "responder_id", "entries", "averaging")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESPONDER_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    AVERAGING_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    responder_id: str
    entries: _containers.RepeatedCompositeFieldContainer[_types_pb2.NodeState]
    averaging: Averaging
    def __init__(self, schema_version: _Optional[int] = ..., responder_id: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[_types_pb2.NodeState, _Mapping]]] = ..., averaging: _Optional[_Union[Averaging, _Mapping]] = ...) -> None: ...
