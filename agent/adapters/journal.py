"""An append-only journal file: msgpack records, each checksummed, fsynced.

Theory of operation
-------------------
Layout: an 8-byte header (b"SHOALJ" + format version, u16 little-endian),
then records. A record is

    u32 LE payload length | u32 LE CRC-32 (zlib) of length + payload | payload

and the payload is one msgpack map. CRC-32C would be the usual choice but is
not in the standard library; zlib's CRC-32 detects the same torn and flipped
bytes. The CRC covers the length, so a corrupt length is caught too.

Durability: `append` writes one record and fsyncs the file before returning;
`append_many` writes a batch and fsyncs once (each record is atomic on a
crash, the batch is not: a crash may keep a prefix of it). Creating the file
fsyncs its directory so the name survives a crash. A failed write is rolled
back (the file is truncated to the last good record) so a later append never
lands behind a torn one; if even that fails the journal refuses further
appends until reopened.

Recovery (`Journal.open`): records are read until the first one that is torn
(file ends inside it) or corrupt (bad CRC, or not a msgpack map); the file is
truncated there, a warning names the byte offset, and the valid prefix is
returned. Nothing after a bad record is trusted: a journal is a prefix or it
is nothing. A file whose header is not a Shoal journal header is never
truncated: it is renamed aside (`<name>.corrupt-N`, logged as an error) and a
fresh journal starts, so pointing the agent at the wrong file loses nothing.
A Shoal journal of another format version is refused (JournalError) and left
untouched: that is a downgrade to sort out, not corruption.

Compaction (`compact(records)`): the snapshot is written to `<name>.tmp`,
fsynced, renamed over the journal (atomic on POSIX), and the directory is
fsynced; a crash leaves either the old journal or the new one.

One writer: a lock file (`<name>.lock`, flock) keeps a second process from
appending to the same journal. `record_bytes_max` bounds appends only;
reading is bounded by the file size, so lowering the limit never truncates
records already written. Calls block on fsync (~0.2 ms here); an asyncio
caller may run them in a thread but must keep one call in flight at a time.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Iterable

import msgpack

log = logging.getLogger(__name__)

MAGIC = b"SHOALJ"
FORMAT_VERSION = 1
HEADER = MAGIC + struct.pack("<H", FORMAT_VERSION)
_FRAME = struct.Struct("<II")  # payload length, CRC-32
# A record past this is refused: the journal holds node state, not images.
RECORD_BYTES_MAX_DEFAULT = 1024 * 1024


class JournalError(Exception):
    """The journal cannot be used (locked by another process, failed write)."""


class RecordTooLarge(JournalError, ValueError):
    """A record's encoding exceeds record_bytes_max; nothing was written."""


def encode_record(record: dict[str, Any], record_bytes_max: int = RECORD_BYTES_MAX_DEFAULT) -> bytes:
    """One framed record, or RecordTooLarge / TypeError before anything is written."""
    if not isinstance(record, dict):
        raise TypeError(f"a journal record is a dict, got {type(record).__name__}")
    payload = msgpack.packb(record, use_bin_type=True)
    if len(payload) > record_bytes_max:
        raise RecordTooLarge(f"record of {len(payload)} bytes exceeds record_bytes_max ({record_bytes_max})")
    length = struct.pack("<I", len(payload))
    return length + struct.pack("<I", zlib.crc32(payload, zlib.crc32(length))) + payload


def decode_records(data: bytes, offset: int = 0) -> tuple[list[dict[str, Any]], int, str]:
    """Records from `offset` up to the first torn or corrupt one.

    Returns (records, end, problem): `end` is the offset just past the last
    good record, `problem` is "" if the data ended cleanly there."""
    records: list[dict[str, Any]] = []
    view = memoryview(data)
    while offset < len(data):
        if len(data) - offset < _FRAME.size:
            return records, offset, "torn record header"
        length, crc = _FRAME.unpack_from(data, offset)
        start = offset + _FRAME.size
        if length > len(data) - start:
            return records, offset, f"torn record (length {length}, {len(data) - start} bytes left)"
        payload = view[start:start + length]
        if zlib.crc32(payload, zlib.crc32(view[offset:offset + 4])) != crc:
            return records, offset, "CRC mismatch"
        try:
            record = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception as exc:  # a CRC-valid but undecodable payload is corruption, whatever the error
            return records, offset, f"undecodable payload ({type(exc).__name__})"
        if not isinstance(record, dict):
            return records, offset, f"payload is a {type(record).__name__}, not a map"
        records.append(record)
        offset = start + length
    return records, offset, ""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Open with `Journal.open(path)`; see the module docstring."""

    def __init__(self, path: Path, fd: int, lock_fd: int, end_bytes: int, record_bytes_max: int) -> None:
        self.path = path
        self.record_bytes_max = record_bytes_max
        self._fd: int | None = fd
        self._lock_fd: int | None = lock_fd
        self._end_bytes = end_bytes  # size of the file up to the last good record
        self._broken = ""
        self.records_appended = 0
        # Recovery report of open(): where the file was cut, and how much went.
        self.truncated_at_byte: int | None = None
        self.bytes_dropped = 0

    # -- opening ------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], *,
             record_bytes_max: int = RECORD_BYTES_MAX_DEFAULT) -> tuple[Journal, list[dict[str, Any]]]:
        """Opens (or creates) the journal; returns it and the recovered records."""
        if isinstance(record_bytes_max, bool) or not isinstance(record_bytes_max, int) or record_bytes_max <= 0:
            raise ValueError(f"record_bytes_max must be a positive integer, got {record_bytes_max!r}")
        path = Path(path)
        lock_fd = cls._lock(path)
        try:
            return cls._open_locked(path, lock_fd, record_bytes_max)
        except BaseException:
            os.close(lock_fd)
            raise

    @staticmethod
    def _lock(path: Path) -> int:
        lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise JournalError(f"journal {path} is in use by another process ({path}.lock is held)") from None
        return lock_fd

    @classmethod
    def _open_locked(cls, path: Path, lock_fd: int, record_bytes_max: int) -> tuple[Journal, list[dict[str, Any]]]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = None
        if data is not None and data.startswith(MAGIC) and len(data) >= len(HEADER) and not data.startswith(HEADER):
            (version,) = struct.unpack_from("<H", data, len(MAGIC))
            raise JournalError(f"journal {path} has format version {version}; this agent reads "
                               f"version {FORMAT_VERSION} (left untouched)")
        if data is not None and not HEADER.startswith(data[:len(HEADER)]):
            aside = cls._move_aside(path)
            log.error("journal %s: not a Shoal journal header (%r); moved it to %s and starting empty",
                      path, data[:len(HEADER)], aside)
            data = None
        if data is None or len(data) < len(HEADER):  # absent, or torn while being created
            if data:
                log.warning("journal %s: torn header (%d bytes); starting empty", path, len(data))
            return cls._create(path, lock_fd, record_bytes_max), []
        records, end, problem = decode_records(data, len(HEADER))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        journal = cls(path, fd, lock_fd, end, record_bytes_max)
        if problem:
            log.warning("journal %s: %s at byte %d; truncating %d bytes and keeping %d records",
                        path, problem, end, len(data) - end, len(records))
            os.ftruncate(fd, end)
            os.fsync(fd)
            journal.truncated_at_byte = end
            journal.bytes_dropped = len(data) - end
        return journal, records

    @classmethod
    def _create(cls, path: Path, lock_fd: int, record_bytes_max: int) -> Journal:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            _write_all(fd, HEADER)
            os.fsync(fd)
            _fsync_dir(path.parent)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, lock_fd, len(HEADER), record_bytes_max)

    @staticmethod
    def _move_aside(path: Path) -> Path:
        n = 1
        while (aside := path.with_name(f"{path.name}.corrupt-{n}")).exists():
            n += 1
        os.rename(path, aside)
        return aside

    # -- writing -------------------------------------------------------------------
    @property
    def size_bytes(self) -> int:
        return self._end_bytes

    def append(self, record: dict[str, Any]) -> None:
        """Writes one record and fsyncs: durable when this returns."""
        self._write(encode_record(record, self.record_bytes_max), 1)

    def append_many(self, records: Iterable[dict[str, Any]]) -> None:
        """Writes records with one fsync; all are refused if any is too large."""
        frames = [encode_record(r, self.record_bytes_max) for r in records]
        if frames:
            self._write(b"".join(frames), len(frames))

    def compact(self, records: Iterable[dict[str, Any]]) -> None:
        """Replaces the journal with exactly `records` (a snapshot), atomically."""
        fd = self._writable()
        body = HEADER + b"".join(encode_record(r, self.record_bytes_max) for r in records)
        tmp = self.path.with_name(f"{self.path.name}.tmp")
        tmp_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(tmp_fd, body)
            os.fsync(tmp_fd)
        except BaseException:
            os.close(tmp_fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(tmp_fd)
        new_fd = os.open(tmp, os.O_WRONLY | os.O_APPEND)
        try:
            os.replace(tmp, self.path)
        except BaseException:
            os.close(new_fd)
            tmp.unlink(missing_ok=True)
            raise
        # From here the new file is the journal, whatever happens next.
        self._fd = new_fd
        self._end_bytes = len(body)
        os.close(fd)
        _fsync_dir(self.path.parent)

    def close(self) -> None:
        for name in ("_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                os.close(fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _writable(self) -> int:
        if self._fd is None:
            raise JournalError(f"journal {self.path} is closed")
        if self._broken:
            raise JournalError(f"journal {self.path} is unusable until reopened: {self._broken}")
        return self._fd

    def _write(self, frames: bytes, count: int) -> None:
        fd = self._writable()
        try:
            _write_all(fd, frames)
            os.fsync(fd)
        except OSError as exc:
            self._roll_back(fd, exc)
            raise JournalError(f"journal {self.path}: append failed ({exc}); rolled back") from exc
        self._end_bytes += len(frames)
        self.records_appended += count

    def _roll_back(self, fd: int, cause: OSError) -> None:
        try:
            os.ftruncate(fd, self._end_bytes)
            os.fsync(fd)
        except OSError as exc:
            self._broken = f"write failed ({cause}) and the roll-back failed too ({exc})"
            log.error("journal %s: %s", self.path, self._broken)

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}, size_bytes={self._end_bytes})"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
