"""The committed generated code equals what the pinned grpcio-tools generates now."""

from __future__ import annotations

from pathlib import Path

from shoal import protogen

GENERATED = Path(protogen.__file__).resolve().parent / "v1"


def test_generated_code_is_fresh(tmp_path):
    files = protogen.generate(tmp_path)
    assert files, "protoc generated nothing"
    stale = [f.name for f in files if (GENERATED / f.name).read_bytes() != f.read_bytes()]
    assert stale == [], f"shoal/v1 is stale; run `make proto`: {stale}"
    committed = {p.name for p in GENERATED.glob("*_pb2*.py*")}
    assert committed == {f.name for f in files}


def test_field_numbers_of_gossip_state_are_stable():
    # Append-only field numbers: renumbering would break mixed-version clusters.
    from shoal.v1 import types_pb2
    fields = {f.name: f.number for f in types_pb2.NodeState.DESCRIPTOR.fields}
    assert fields["schema_version"] == 1 and fields["node_id"] == 2 and fields["heartbeat"] == 4
    assert fields["cpu_demand_cores"] == 6 and fields["age_ms"] == 13
