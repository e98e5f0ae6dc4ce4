"""Stable node identity across restarts."""

from __future__ import annotations

import uuid

import pytest

from agent.core.config import ConfigError
from agent.runtime.identity import load_identity


def test_first_start_creates_a_uuid_and_restarts_keep_it_with_rising_incarnation(tmp_path):
    first = load_identity(tmp_path)
    assert uuid.UUID(first.node_id) and first.incarnation == 1
    again = load_identity(tmp_path)
    assert again.node_id == first.node_id and again.incarnation == 2


def test_a_requested_id_is_kept_and_a_different_one_later_is_refused(tmp_path):
    assert load_identity(tmp_path, "node-a").node_id == "node-a"
    assert load_identity(tmp_path, "node-a").incarnation == 2
    with pytest.raises(ConfigError, match="never changes"):
        load_identity(tmp_path, "node-b")


def test_corrupt_identity_files_are_reported_not_crashed_on(tmp_path):
    (tmp_path / "node-id").write_text("not an id!\n")
    with pytest.raises(ConfigError, match="not a node id"):
        load_identity(tmp_path)
    (tmp_path / "node-id").write_text("ok-id\n")
    (tmp_path / "incarnation").write_text("three\n")
    with pytest.raises(ConfigError, match="whole number"):
        load_identity(tmp_path)


def test_a_refuted_incarnation_is_persisted_and_the_next_start_begins_above_it(tmp_path):
    from agent.runtime.identity import save_incarnation
    first = load_identity(tmp_path)
    save_incarnation(tmp_path, first.incarnation + 5)   # refutations raised it at run time
    save_incarnation(tmp_path, first.incarnation + 2)   # never lowers it
    assert load_identity(tmp_path).incarnation == first.incarnation + 6
