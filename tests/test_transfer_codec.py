"""grpc_codec's hand-made TransferChunk codec: encoding copies the pages once,
decoding not at all; both agree with protobuf on every message, and bad bytes
raise DecodeError."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.adapters.grpc_codec import TransferChunkView, decode_transfer_chunk, encode_transfer_chunk
from shoal.v1 import migration_pb2

chunks = st.builds(migration_pb2.TransferChunk, migration_id=st.text(max_size=40),
                   round=st.integers(0, 2**32 - 1), first_page=st.integers(0, 2**64 - 1),
                   data=st.binary(max_size=3 * 4096))


def fields(msg) -> tuple:
    return msg.migration_id, msg.round, msg.first_page, bytes(msg.data)


@settings(max_examples=300, deadline=None)
@given(chunks)
def test_every_message_decodes_as_protobuf_decodes_it(chunk):
    wire = chunk.SerializeToString()
    view = decode_transfer_chunk(wire)
    assert fields(view) == fields(migration_pb2.TransferChunk.FromString(wire))
    if len(chunk.data):  # the pages are a view into the message, not a copy
        assert isinstance(view.data, memoryview) and view.data.obj is wire


@settings(max_examples=200, deadline=None)
@given(chunks, chunks, st.binary(max_size=30))
def test_repeated_fields_last_wins_and_unknown_fields_are_skipped(first, second, junk):
    # Concatenated messages merge (the last scalar wins), as protobuf defines;
    # an unknown field (number 15, length-delimited) is skipped.
    unknown = bytes([15 << 3 | 2, len(junk)]) + junk
    wire = first.SerializeToString() + unknown + second.SerializeToString()
    assert fields(decode_transfer_chunk(wire)) == fields(migration_pb2.TransferChunk.FromString(wire))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_decode_like_protobuf_or_raise_decode_error(wire):
    try:
        ours = decode_transfer_chunk(wire)
    except DecodeError:
        return
    theirs = migration_pb2.TransferChunk.FromString(wire)  # what we accept, protobuf accepts too
    assert fields(ours) == fields(theirs)


@pytest.mark.parametrize("wire", [
    bytes([4 << 3 | 2, 10]) + b"short",      # data longer than the message
    bytes([3 << 3 | 0, 0x80]),               # truncated varint
    bytes([3 << 3 | 0]) + b"\xff" * 11,      # varint over 10 bytes
    bytes([1 << 3 | 2, 2]) + b"\xff\xfe",    # migration_id not UTF-8
    bytes([0 << 3 | 0, 1]),                  # field number 0
    bytes([5 << 3 | 3]),                     # a group
])
def test_malformed_chunks_raise_decode_error(wire):
    with pytest.raises(DecodeError):
        decode_transfer_chunk(wire)


@settings(max_examples=300, deadline=None)
@given(chunks)
def test_encoding_by_hand_is_byte_for_byte_protobufs(chunk):
    view = TransferChunkView(chunk.migration_id, chunk.round, chunk.first_page, memoryview(chunk.data))
    assert encode_transfer_chunk(view) == chunk.SerializeToString()
    assert fields(decode_transfer_chunk(encode_transfer_chunk(view))) == fields(chunk)
