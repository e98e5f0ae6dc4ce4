"""The membership wire codec: round trips, limits, and any bytes decode or are rejected."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.membership_codec import (SCHEMA_VERSION, Ack, Entry, Gossip, MemberStatus, Nack, Ping, PingReq,
                                         Shuffle, ShuffleReply, Sync, SyncReply, Update, check_message, decode,
                                         encode, message_bytes_bound, to_wire)
from agent.core.membership_config import MembershipConfig
from agent.core.validation import InputRejected

ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-"
ids = st.text(ID_CHARS, min_size=1, max_size=40)
addresses = st.builds(lambda host, port: f"{host}:{port}", st.text("abcxyz0123456789.-", min_size=1, max_size=30),
                      st.integers(1, 65_535))
counts = st.integers(0, 2**63 - 1)
updates = st.builds(Update, ids, addresses, counts, st.sampled_from(list(MemberStatus)), ids)
entries = st.builds(Entry, ids, addresses, counts)
update_tuples = st.lists(updates, max_size=3).map(tuple)
header = dict(sender_id=ids, sender_address=addresses, seq=counts, updates=update_tuples)
messages = st.one_of(
    st.builds(Ping, **header, target_id=ids),
    st.builds(PingReq, **header, target_id=ids, target_address=addresses, nack=st.booleans()),
    st.builds(Ack, **header),
    st.builds(Nack, **header),
    st.builds(Gossip, **header),
    st.builds(Shuffle, **header, entries=st.lists(entries, max_size=3).map(tuple)),
    st.builds(ShuffleReply, **header, entries=st.lists(entries, max_size=3).map(tuple)),
    st.builds(Sync, **header, entries=update_tuples, join=st.booleans()),
    st.builds(SyncReply, **header, entries=update_tuples),
)


def _decodes_or_rejects(data: bytes) -> None:
    try:
        msg = decode(data)
    except InputRejected as exc:
        assert exc.reason and exc.detail
        return
    check_message(msg)  # whatever decodes is valid


@settings(max_examples=100, deadline=None)
@given(messages)
def test_every_valid_message_survives_a_round_trip(msg):
    assert decode(encode(msg)) == msg


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_valid_message_or_raise_input_rejected(data):
    _decodes_or_rejects(data)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**64, 2**64) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=9) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=100, deadline=None)
@given(msgpack_values)
def test_any_msgpack_structure_decodes_or_is_rejected(value):
    try:
        data = msgpack.packb(value, use_bin_type=True)
    except (OverflowError, ValueError):
        return  # not encodable by msgpack at all
    _decodes_or_rejects(data)


@settings(max_examples=100, deadline=None)
@given(messages, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupted_valid_messages_decode_or_are_rejected(msg, flips):
    data = bytearray(encode(msg))
    for position, value in flips:
        data[position % len(data)] = value
    _decodes_or_rejects(bytes(data))


HEADER_TYPES = {0: int, 1: int, 2: str, 3: str, 4: int, 5: list}


@settings(max_examples=100, deadline=None)
@given(messages, st.sampled_from(sorted(HEADER_TYPES)), msgpack_values)
def test_a_wrong_typed_header_field_is_rejected(msg, index, junk):
    wire = to_wire(msg)
    wire[index] = junk
    try:
        data = msgpack.packb(wire, use_bin_type=True)
    except (OverflowError, ValueError):
        return
    if isinstance(junk, HEADER_TYPES[index]) and not isinstance(junk, bool):
        _decodes_or_rejects(data)  # the right type may still hold a valid value
        return
    with pytest.raises(InputRejected):
        decode(data)


def _ping(**changes):
    fields = dict(sender_id="n1", sender_address="10.0.0.1:7946", seq=1, target_id="n2")
    return Ping(**{**fields, **changes})


@pytest.mark.parametrize("wire, reason", [
    ([SCHEMA_VERSION + 1, 1, "n1", "10.0.0.1:7946", 1, [], "n2"], "schema_version"),
    ([True, 1, "n1", "10.0.0.1:7946", 1, [], "n2"], "schema_version"),
    ([SCHEMA_VERSION, 42, "n1", "10.0.0.1:7946", 1, [], "n2"], "bad_kind"),
    ([SCHEMA_VERSION, 1, "n1", "10.0.0.1:7946", 1, []], "malformed"),  # Ping without target
    ([SCHEMA_VERSION, 1, "n 1", "10.0.0.1:7946", 1, [], "n2"], "bad_id"),
    ([SCHEMA_VERSION, 1, "n1", "nowhere", 1, [], "n2"], "bad_address"),
    ([SCHEMA_VERSION, 1, "n1", "10.0.0.1:7946", -1, [], "n2"], "out_of_range"),
    ([SCHEMA_VERSION, 1, "n1", "10.0.0.1:7946", True, [], "n2"], "bad_field"),
    ([SCHEMA_VERSION, 1, "n1", "10.0.0.1:7946", 1, [["n3", "10.0.0.3:1", 0, 9, "n1"]], "n2"], "bad_field"),
    ([SCHEMA_VERSION, 1, "n1", "10.0.0.1:7946", 1, [["n3", "10.0.0.3:1", -5, 0, "n1"]], "n2"], "out_of_range"),
    ([SCHEMA_VERSION, 8, "n1", "10.0.0.1:7946", 1, [], [], 1], "bad_field"),  # Sync join flag not a bool
])
def test_malformed_fields_are_rejected_with_a_reason(wire, reason):
    with pytest.raises(InputRejected) as caught:
        decode(msgpack.packb(wire, use_bin_type=True))
    assert caught.value.reason == reason


def test_oversized_input_is_rejected_before_parsing():
    with pytest.raises(InputRejected) as caught:
        decode(b"\x90" * 2_000, message_bytes_max=1_000)
    assert caught.value.reason == "oversized"


def test_trailing_bytes_and_extension_types_are_rejected():
    data = encode(_ping())
    with pytest.raises(InputRejected):
        decode(data + b"\x00")
    with pytest.raises(InputRejected):
        decode(msgpack.packb(msgpack.ExtType(1, b"x")))


def test_encode_refuses_a_message_over_the_limit_as_a_local_bug():
    update = Update("n3", "10.0.0.3:7946", 1, MemberStatus.ALIVE, "n1")
    with pytest.raises(ValueError, match="over the 100 byte limit"):
        encode(Gossip(sender_id="n1", sender_address="10.0.0.1:7946", updates=(update,) * 10), 100)


def test_default_budgets_fit_the_message_limit_even_with_the_longest_ids():
    for name in ("local", "lan", "wan"):
        c = MembershipConfig.profile(name)
        assert message_bytes_bound(c.updates_per_message_max, max(c.sync_entries_max, c.shuffle_length)) \
            <= c.message_bytes_max
