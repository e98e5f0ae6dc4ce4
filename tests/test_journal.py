"""The append-only journal: round trips, fsync, recovery from torn and corrupt tails."""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.adapters import journal as journal_module
from agent.adapters.journal import HEADER, Journal, JournalError, RecordTooLarge, encode_record

RECORDS = [
    {"kind": "domain", "id": "d-1", "epoch": 3, "owner": "node-a"},
    {"kind": "tombstone", "id": "d-2", "epoch": 7, "new_owner": "node-b", "labels": ["web", "eu"]},
    {"kind": "checkpoint", "blob": b"\x00\xff" * 20, "ratio": 0.25, "none": None, 1: {"nested": [1, 2]}},
]


def write_journal(path: Path, records: list[dict]) -> list[int]:
    """Writes records one append at a time; returns the file size after each."""
    journal, recovered = Journal.open(path)
    assert recovered == []
    ends = []
    with journal:
        for record in records:
            journal.append(record)
            ends.append(journal.size_bytes)
    return ends


def scratch_dir() -> tempfile.TemporaryDirectory:
    """A directory for hypothesis examples (function fixtures can't be reset per example):
    in RAM when there is a tmpfs, since hundreds of disk fsyncs only add noise here."""
    shm = Path("/dev/shm")
    return tempfile.TemporaryDirectory(dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None)


def reopen(path: Path) -> list[dict]:
    journal, records = Journal.open(path)
    journal.close()
    return records


def test_records_round_trip_in_order(tmp_path):
    path = tmp_path / "node.journal"
    write_journal(path, RECORDS[:1])
    journal, recovered = Journal.open(path)
    with journal:
        assert recovered == RECORDS[:1]
        journal.append_many(RECORDS[1:])
    assert reopen(path) == RECORDS
    assert path.stat().st_size == len(HEADER) + sum(len(encode_record(r)) for r in RECORDS)


def test_every_append_is_fsynced_and_a_batch_once(tmp_path, monkeypatch):
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd))[1])
    journal, _ = Journal.open(tmp_path / "j")
    assert len(calls) == 2  # the new file, then its directory
    journal.append(RECORDS[0])
    journal.append(RECORDS[1])
    assert len(calls) == 4
    journal.append_many(RECORDS * 10)
    assert len(calls) == 5
    journal.append_many([])
    assert len(calls) == 5
    journal.compact(RECORDS)
    assert len(calls) == 7  # the snapshot, then the directory after the rename
    journal.close()


def test_a_file_cut_at_every_byte_of_its_last_record_recovers_the_records_before_it(tmp_path, caplog):
    source = tmp_path / "full"
    ends = write_journal(source, RECORDS)
    data = source.read_bytes()
    last_start = ends[-2]
    for cut in range(last_start, len(data)):
        path = tmp_path / f"cut-{cut}"
        path.write_bytes(data[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="agent.adapters.journal"):
            journal, recovered = Journal.open(path)
        journal.close()
        assert recovered == RECORDS[:-1], f"cut at byte {cut}"
        assert path.stat().st_size == last_start
        if cut > last_start:
            assert f"at byte {last_start}" in caplog.text
            assert journal.truncated_at_byte == last_start and journal.bytes_dropped == cut - last_start
    assert reopen(source) == RECORDS


@pytest.mark.parametrize("where", ["length", "crc", "payload"])
def test_a_flipped_byte_in_the_middle_record_drops_it_and_everything_after(tmp_path, caplog, where):
    path = tmp_path / "j"
    ends = write_journal(path, RECORDS)
    data = bytearray(path.read_bytes())
    start, end = ends[0], ends[1]
    offset = {"length": start + 1, "crc": start + 5, "payload": (start + 8 + end) // 2}[where]
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="agent.adapters.journal"):
        journal, recovered = Journal.open(path)
    assert recovered == RECORDS[:1]
    assert f"at byte {start}" in caplog.text
    assert path.stat().st_size == start
    with journal:  # the journal goes on from the cut
        journal.append(RECORDS[2])
    assert reopen(path) == [RECORDS[0], RECORDS[2]]


@settings(max_examples=40, deadline=None)
@given(records=st.lists(st.dictionaries(st.text(max_size=8),
                                        st.one_of(st.integers(-2**63, 2**63 - 1), st.text(max_size=30),
                                                  st.binary(max_size=30), st.booleans(), st.none()),
                                        max_size=4), max_size=8),
       cut_fraction=st.floats(0, 1))
def test_any_appends_then_any_truncation_recover_exactly_the_whole_records(records, cut_fraction):
    with scratch_dir() as tmp:
        path = Path(tmp) / "j"
        ends = write_journal(path, records)
        data = path.read_bytes()
        cut = round(cut_fraction * len(data))
        path.write_bytes(data[:cut])
        recovered = reopen(path)
        assert recovered == records[:sum(1 for e in ends if e <= cut)]
        assert reopen(path) == recovered  # recovery is idempotent


@settings(max_examples=60, deadline=None)
@given(garbage=st.binary(max_size=200))
def test_garbage_after_the_header_never_crashes_the_open(garbage):
    with scratch_dir() as tmp:
        path = Path(tmp) / "j"
        write_journal(path, RECORDS[:2])
        path.write_bytes(path.read_bytes() + garbage)
        recovered = reopen(path)
        assert recovered[:2] == RECORDS[:2] and all(isinstance(r, dict) for r in recovered)
        assert reopen(path) == recovered


def test_a_record_over_the_limit_is_refused_and_nothing_is_written(tmp_path):
    journal, _ = Journal.open(tmp_path / "j", record_bytes_max=100)
    with journal:
        journal.append({"ok": 1})
        size = journal.size_bytes
        with pytest.raises(RecordTooLarge, match="exceeds record_bytes_max"):
            journal.append({"blob": b"x" * 200})
        with pytest.raises(RecordTooLarge):
            journal.append_many([{"ok": 2}, {"blob": b"x" * 200}])
        assert journal.size_bytes == size == (tmp_path / "j").stat().st_size
    assert reopen(tmp_path / "j") == [{"ok": 1}]


def test_a_record_must_be_a_dict(tmp_path):
    journal, _ = Journal.open(tmp_path / "j")
    with journal, pytest.raises(TypeError, match="dict"):
        journal.append(["not", "a", "dict"])  # type: ignore[arg-type]


def test_compaction_replaces_the_journal_with_the_snapshot(tmp_path):
    path = tmp_path / "j"
    write_journal(path, RECORDS * 5)
    journal, recovered = Journal.open(path)
    with journal:
        assert len(recovered) == 15
        journal.compact([{"snapshot": 1}])
        journal.append({"after": 2})
    assert reopen(path) == [{"snapshot": 1}, {"after": 2}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j", "j.lock"]


def test_a_failed_write_is_rolled_back_so_later_appends_stay_readable(tmp_path, monkeypatch):
    path = tmp_path / "j"
    journal, _ = Journal.open(path)
    journal.append(RECORDS[0])
    real_write = os.write

    def half_then_enospc(fd, data):
        real_write(fd, bytes(data[:len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(JournalError, match="rolled back"):
        journal.append(RECORDS[1])
    monkeypatch.setattr(os, "write", real_write)
    journal.append(RECORDS[2])
    journal.close()
    assert reopen(path) == [RECORDS[0], RECORDS[2]]


def test_a_file_that_is_not_a_journal_is_moved_aside_not_truncated(tmp_path, caplog):
    path = tmp_path / "j"
    path.write_bytes(b"precious operator notes\n")
    with caplog.at_level(logging.ERROR, logger="agent.adapters.journal"):
        journal, recovered = Journal.open(path)
    journal.close()
    assert recovered == [] and "not a Shoal journal" in caplog.text
    assert (tmp_path / "j.corrupt-1").read_bytes() == b"precious operator notes\n"
    assert reopen(path) == []


@pytest.mark.parametrize("torn", [b"", b"SHO", HEADER[:-1]])
def test_a_header_torn_at_creation_starts_an_empty_journal(tmp_path, torn):
    path = tmp_path / "j"
    path.write_bytes(torn)
    journal, recovered = Journal.open(path)
    with journal:
        assert recovered == []
        journal.append(RECORDS[0])
    assert reopen(path) == RECORDS[:1]
    assert not (tmp_path / "j.corrupt-1").exists()


def test_another_format_version_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "j"
    path.write_bytes(journal_module.MAGIC + b"\x02\x00" + encode_record({"v": 2}))
    before = path.read_bytes()
    with pytest.raises(JournalError, match="format version 2"):
        Journal.open(path)
    assert path.read_bytes() == before


def test_a_second_writer_is_refused_while_the_first_holds_the_journal(tmp_path):
    journal, _ = Journal.open(tmp_path / "j")
    with pytest.raises(JournalError, match="in use"):
        Journal.open(tmp_path / "j")
    journal.close()
    reopen(tmp_path / "j")


def test_a_closed_journal_refuses_appends(tmp_path):
    journal, _ = Journal.open(tmp_path / "j")
    journal.close()
    journal.close()  # idempotent
    with pytest.raises(JournalError, match="closed"):
        journal.append({"x": 1})
