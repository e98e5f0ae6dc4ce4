"""The membership wire protocol: message values, their validation, their bytes.

Every membership message is a frozen dataclass carrying the sender's stable
id and current address, a sequence number (matching an answer to its
question), and the membership updates piggy-backed on it (SWIM section 4.4:
dissemination rides on the failure detector's own messages).

    Ping          probe of `target_id`; answered by Ack with the same seq
    PingReq       "probe `target_id` for me" (SWIM indirect probe, k relays);
                  the relay answers Ack (relayed) or, with `nack`, Nack when
                  the target stayed silent (Lifeguard section IV-A)
    Ack / Nack    answers to Ping / PingReq
    Gossip        updates only, no answer (memberlist's gossip timer)
    Shuffle       Cyclon view exchange: a few view entries; answered by
    ShuffleReply  the same number of the peer's entries
    Sync          push-pull anti-entropy: a bounded sample of the sender's
    SyncReply     member table, answered by a sample of the receiver's. With
                  `join` it is the first contact with a seed (known by
                  address only), as memberlist joins with a push-pull.

`updates` are news, each piggy-backed a limited number of times; `entries`
of a Sync are state (the sender's current view of members, news or not).

Wire form (msgpack, arrays for compactness, schema version first):
    [version, kind, sender_id, sender_address, seq, [update...], *kind fields]
    update = [node_id, address, incarnation, status, source_id]
    entry  = [node_id, address, incarnation]
    Ping: target_id; PingReq: target_id, target_address, nack;
    Shuffle, ShuffleReply: [entry...]; Sync: [update...], join; SyncReply: [update...]

`decode` turns any bytes into a valid message or raises InputRejected (the
remote peer misbehaved). `encode` of a message larger than the limit raises
ValueError: the local core broke its own budget, a bug, never the peer's fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Union

import msgpack

from agent.core.validation import InputRejected, check_address, check_id

SCHEMA_VERSION = 1
# Sequence numbers and incarnations fit msgpack's signed 64-bit integers.
SEQ_MAX = 2**63 - 1
INCARNATION_MAX = 2**63 - 1
# Used by decode when the caller does not pass its configured limit.
MESSAGE_BYTES_MAX_DEFAULT = 256 * 1024


class MemberStatus(str, Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


STATUS_CODES: dict[MemberStatus, int] = {MemberStatus.ALIVE: 0, MemberStatus.SUSPECT: 1,
                                         MemberStatus.DEAD: 2, MemberStatus.LEFT: 3}
STATUS_BY_CODE: dict[int, MemberStatus] = {code: status for status, code in STATUS_CODES.items()}


@dataclass(frozen=True)
class Update:
    """One membership fact: `node_id` at `incarnation` is `status` (said by `source_id`).

    For suspect the source is the accuser (independent accusers shorten the
    suspicion timeout); for alive, dead and left it is who first said so.
    """

    node_id: str
    address: str
    incarnation: int
    status: MemberStatus
    source_id: str


@dataclass(frozen=True)
class Entry:
    """A peer-sampling entry: a member believed alive, as Cyclon exchanges them."""

    node_id: str
    address: str
    incarnation: int


@dataclass(frozen=True, kw_only=True)
class Ping:
    sender_id: str
    sender_address: str
    seq: int
    updates: tuple[Update, ...] = ()
    target_id: str  # a process now at that address under another id must not answer


@dataclass(frozen=True, kw_only=True)
class PingReq:
    sender_id: str
    sender_address: str
    seq: int  # the originator's probe seq; the relayed Ack / Nack carries it back
    updates: tuple[Update, ...] = ()
    target_id: str
    target_address: str
    nack: bool = True


@dataclass(frozen=True, kw_only=True)
class Ack:
    sender_id: str
    sender_address: str
    seq: int
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Nack:
    sender_id: str
    sender_address: str
    seq: int
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Gossip:
    sender_id: str
    sender_address: str
    seq: int = 0
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Shuffle:
    sender_id: str
    sender_address: str
    seq: int
    updates: tuple[Update, ...] = ()
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ShuffleReply:
    sender_id: str
    sender_address: str
    seq: int
    updates: tuple[Update, ...] = ()
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Sync:
    sender_id: str
    sender_address: str
    seq: int
    updates: tuple[Update, ...] = ()
    entries: tuple[Update, ...] = ()
    join: bool = False  # first contact: the receiver also gives the joiner a place in its view


@dataclass(frozen=True, kw_only=True)
class SyncReply:
    sender_id: str
    sender_address: str
    seq: int
    updates: tuple[Update, ...] = ()
    entries: tuple[Update, ...] = ()


Message = Union[Ping, PingReq, Ack, Nack, Gossip, Shuffle, ShuffleReply, Sync, SyncReply]

KIND_CODES: dict[type, int] = {Ping: 1, PingReq: 2, Ack: 3, Nack: 4, Gossip: 5, Shuffle: 6,
                               ShuffleReply: 7, Sync: 8, SyncReply: 9}
KIND_BY_CODE: dict[int, type] = {code: kind for kind, code in KIND_CODES.items()}
WITH_VIEW_ENTRIES = (Shuffle, ShuffleReply)
WITH_STATE_ENTRIES = (Sync, SyncReply)


# -- validation ------------------------------------------------------------------


def _check_int(name: str, value: Any, value_max: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputRejected("bad_field", f"{name} is {type(value).__name__}, expected an integer")
    if not 0 <= value <= value_max:
        raise InputRejected("out_of_range", f"{name} {value} not in [0, {value_max}]")


def _check_str(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise InputRejected("bad_field", f"{name} is {type(value).__name__}, expected a string")


def check_update(update: Update) -> None:
    if not isinstance(update, Update):
        raise InputRejected("bad_field", f"update is {type(update).__name__}")
    for name in ("node_id", "address", "source_id"):
        _check_str(f"update.{name}", getattr(update, name))
    check_id("update node id", update.node_id)
    check_address(update.address)
    check_id("update source id", update.source_id)
    _check_int("update.incarnation", update.incarnation, INCARNATION_MAX)
    if not isinstance(update.status, MemberStatus):
        raise InputRejected("bad_field", f"update.status {update.status!r} is not a member status")


def check_entry(entry: Entry) -> None:
    if not isinstance(entry, Entry):
        raise InputRejected("bad_field", f"entry is {type(entry).__name__}")
    _check_str("entry.node_id", entry.node_id)
    _check_str("entry.address", entry.address)
    check_id("entry node id", entry.node_id)
    check_address(entry.address)
    _check_int("entry.incarnation", entry.incarnation, INCARNATION_MAX)


def check_message(msg: Message) -> None:
    """Raises InputRejected unless every field of `msg` is well formed.

    Counts are not limited here (the byte limit bounds them on the wire); the
    core applies its own per-message budgets and counts what it ignores.
    """
    if type(msg) not in KIND_CODES:
        raise InputRejected("bad_kind", f"{type(msg).__name__} is not a membership message")
    _check_str("sender_id", msg.sender_id)
    _check_str("sender_address", msg.sender_address)
    check_id("sender id", msg.sender_id)
    check_address(msg.sender_address)
    _check_int("seq", msg.seq, SEQ_MAX)
    if not isinstance(msg.updates, tuple):
        raise InputRejected("bad_field", "updates is not a tuple")
    for update in msg.updates:
        check_update(update)
    if isinstance(msg, (Ping, PingReq)):
        _check_str("target_id", msg.target_id)
        check_id("target id", msg.target_id)
    if isinstance(msg, PingReq):
        _check_str("target_address", msg.target_address)
        check_address(msg.target_address)
        if not isinstance(msg.nack, bool):
            raise InputRejected("bad_field", f"nack is {type(msg.nack).__name__}, expected a bool")
    if isinstance(msg, WITH_VIEW_ENTRIES + WITH_STATE_ENTRIES):
        if not isinstance(msg.entries, tuple):
            raise InputRejected("bad_field", "entries is not a tuple")
        check = check_entry if isinstance(msg, WITH_VIEW_ENTRIES) else check_update
        for entry in msg.entries:
            check(entry)
    if isinstance(msg, Sync) and not isinstance(msg.join, bool):
        raise InputRejected("bad_field", f"join is {type(msg.join).__name__}, expected a bool")


# -- bytes -----------------------------------------------------------------------


def _update_to_wire(u: Update) -> list:
    return [u.node_id, u.address, u.incarnation, STATUS_CODES[u.status], u.source_id]


def _entry_to_wire(e: Entry) -> list:
    return [e.node_id, e.address, e.incarnation]


def to_wire(msg: Message) -> list:
    fields: list = [SCHEMA_VERSION, KIND_CODES[type(msg)], msg.sender_id, msg.sender_address, msg.seq,
                    [_update_to_wire(u) for u in msg.updates]]
    if isinstance(msg, Ping):
        fields.append(msg.target_id)
    elif isinstance(msg, PingReq):
        fields += [msg.target_id, msg.target_address, msg.nack]
    elif isinstance(msg, WITH_VIEW_ENTRIES):
        fields.append([_entry_to_wire(e) for e in msg.entries])
    elif isinstance(msg, WITH_STATE_ENTRIES):
        fields.append([_update_to_wire(u) for u in msg.entries])
        if isinstance(msg, Sync):
            fields.append(msg.join)
    return fields


def encode(msg: Message, message_bytes_max: int = MESSAGE_BYTES_MAX_DEFAULT) -> bytes:
    data = msgpack.packb(to_wire(msg), use_bin_type=True)
    if len(data) > message_bytes_max:
        raise ValueError(f"{type(msg).__name__} encodes to {len(data)} bytes, over the {message_bytes_max} "
                         "byte limit: the core's budgets do not fit message_bytes_max")
    return data


def _refuse_ext(code: int, data: bytes) -> Any:
    raise InputRejected("malformed", f"msgpack extension type {code} is not part of the protocol")


def _list(name: str, value: Any, length: int | None = None) -> list:
    if not isinstance(value, list):
        raise InputRejected("malformed", f"{name} is {type(value).__name__}, expected an array")
    if length is not None and len(value) != length:
        raise InputRejected("malformed", f"{name} has {len(value)} fields, expected {length}")
    return value


def _update_from_wire(raw: Any) -> Update:
    node_id, address, incarnation, status, source_id = _list("update", raw, 5)
    if isinstance(status, bool) or not isinstance(status, int) or status not in STATUS_BY_CODE:
        raise InputRejected("bad_field", f"update status {status!r} is not a status code")
    return Update(node_id, address, incarnation, STATUS_BY_CODE[status], source_id)


def _entry_from_wire(raw: Any) -> Entry:
    node_id, address, incarnation = _list("entry", raw, 3)
    return Entry(node_id, address, incarnation)


def from_wire(raw: Any) -> Message:
    top = _list("message", raw)
    if len(top) < 2:
        raise InputRejected("malformed", "message has no header")
    version, kind_code = top[0], top[1]
    if isinstance(version, bool) or not isinstance(version, int) or version != SCHEMA_VERSION:
        raise InputRejected("schema_version", f"message schema version {version!r}, this agent speaks "
                                              f"{SCHEMA_VERSION}")
    if isinstance(kind_code, bool) or not isinstance(kind_code, int) or kind_code not in KIND_BY_CODE:
        raise InputRejected("bad_kind", f"message kind {kind_code!r} is unknown")
    kind = KIND_BY_CODE[kind_code]
    extra = {Ping: 1, PingReq: 3, Shuffle: 1, ShuffleReply: 1, Sync: 2, SyncReply: 1}.get(kind, 0)
    _list("message", top, 6 + extra)
    header = dict(sender_id=top[2], sender_address=top[3], seq=top[4],
                  updates=tuple(_update_from_wire(u) for u in _list("updates", top[5])))
    if kind is Ping:
        msg: Message = Ping(**header, target_id=top[6])
    elif kind is PingReq:
        msg = PingReq(**header, target_id=top[6], target_address=top[7], nack=top[8])
    elif kind in WITH_VIEW_ENTRIES:
        msg = kind(**header, entries=tuple(_entry_from_wire(e) for e in _list("entries", top[6])))
    elif kind is Sync:
        msg = Sync(**header, entries=tuple(_update_from_wire(u) for u in _list("entries", top[6])), join=top[7])
    elif kind is SyncReply:
        msg = SyncReply(**header, entries=tuple(_update_from_wire(u) for u in _list("entries", top[6])))
    else:
        msg = kind(**header)
    check_message(msg)
    return msg


def decode(data: bytes, message_bytes_max: int = MESSAGE_BYTES_MAX_DEFAULT) -> Message:
    """Bytes from a peer to a valid message; anything else raises InputRejected."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputRejected("malformed", f"expected bytes, got {type(data).__name__}")
    if len(data) > message_bytes_max:
        raise InputRejected("oversized", f"{len(data)} bytes, at most {message_bytes_max} allowed")
    try:
        raw = msgpack.unpackb(bytes(data), raw=False, use_list=True, strict_map_key=True,
                              ext_hook=_refuse_ext)
    except InputRejected:
        raise
    except Exception as exc:  # msgpack raises many types (ExtraData, FormatError, StackError, ...)
        raise InputRejected("malformed", f"not a msgpack message: {type(exc).__name__}: {exc}") from None
    return from_wire(raw)


def message_bytes_bound(updates: int, entries: int) -> int:
    """Bytes of the largest message with that many updates and (state) entries.

    Every id and address at its longest valid length, so a
    config whose budgets pass this bound can never produce an oversized message.
    """
    node_id = "i" * 128
    address = "a" * 255 + ":65535"
    update = Update(node_id, address, INCARNATION_MAX, MemberStatus.SUSPECT, node_id)
    widest = PingReq(sender_id=node_id, sender_address=address, seq=SEQ_MAX, updates=(update,) * updates,
                     target_id=node_id, target_address=address)
    with_entries = Sync(sender_id=node_id, sender_address=address, seq=SEQ_MAX,
                        updates=(update,) * updates, entries=(update,) * entries, join=True)
    return max(len(msgpack.packb(to_wire(m), use_bin_type=True)) for m in (widest, with_entries))
