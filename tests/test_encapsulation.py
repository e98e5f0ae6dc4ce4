"""A saved domain file round-trips, and damaged files are refused, not restored."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.encapsulation import decode, encode
from agent.core.validation import InputRejected
from hypervisor.domain import DomainSpec
from hypervisor.memory import MemoryImage

REAL = 64 * 1024
SPEC = DomainSpec(domain_id="web", vcpus=2, memory_mib=16, image_seed=3)


def saved() -> tuple[bytes, MemoryImage]:
    image = MemoryImage(16, REAL, seed=3)
    image.write_pages(2, b"\x07" * 4096)
    return encode(SPEC, 4, "running", image), image


def test_round_trip_keeps_spec_epoch_state_and_image():
    blob, image = saved()
    back = decode(blob, REAL)
    assert back.spec == SPEC and back.epoch == 4 and back.state == "running"
    assert back.image.content_hash() == image.content_hash()


def test_tampered_image_is_refused_by_its_hash():
    blob, _ = saved()
    doc = msgpack.unpackb(blob)
    doc["image"]["data"] = b"\x00" + doc["image"]["data"][1:]
    with pytest.raises(InputRejected, match="hash mismatch"):
        decode(msgpack.packb(doc, use_bin_type=True), REAL)


def test_different_real_size_is_refused_with_the_reason():
    blob, _ = saved()
    with pytest.raises(InputRejected, match="image_real_bytes_max differs"):
        decode(blob, REAL * 2)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 10_000), junk=st.binary(max_size=64))
def test_truncated_or_garbage_files_raise_the_protocol_error(cut, junk):
    blob, _ = saved()
    for data in (blob[:cut], junk, blob[:cut] + junk):
        if data == blob:
            continue
        with pytest.raises(InputRejected):
            decode(data, REAL)
