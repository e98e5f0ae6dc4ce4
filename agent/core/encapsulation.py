"""A whole domain as one msgpack document: spec, epoch, state, memory image.

Pure: encode/decode bytes; the agent reads and writes the files. Every decode
validates the format, the spec and the image hash, so a truncated, foreign or
tampered file is refused with InputRejected, never half-restored.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from agent.core.ownership import spec_from_record, spec_to_record
from agent.core.validation import InputRejected
from hypervisor.domain import DomainSpec
from hypervisor.memory import PAGE_SIZE, MemoryImage

FORMAT = "shoal-domain"
VERSION = 1


@dataclass(frozen=True)
class SavedDomain:
    spec: DomainSpec
    epoch: int
    state: str
    image: MemoryImage


def encode(spec: DomainSpec, epoch: int, state: str, image: MemoryImage) -> bytes:
    data = image.read_pages(0, image.real_page_count) if image.real_page_count else b""
    return msgpack.packb({"format": FORMAT, "version": VERSION, "spec": spec_to_record(spec), "epoch": epoch,
                          "state": state, "image": {"pages": image.page_count, "real_pages": image.real_page_count,
                                                    "data": data, "hash": image.content_hash()}},
                         use_bin_type=True)


def decode(blob: bytes, real_bytes_max: int) -> SavedDomain:
    """Parses and verifies a saved domain; raises InputRejected with the reason."""
    try:
        doc = msgpack.unpackb(blob, raw=False, strict_map_key=True, max_bin_len=len(blob), max_str_len=1 << 20)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise InputRejected("bad_file", f"not a msgpack document: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputRejected("bad_file", "not a saved Shoal domain")
    if doc.get("version") != VERSION:
        raise InputRejected("bad_file", f"saved domain version {doc.get('version')!r}, this agent reads {VERSION}")
    try:
        spec = spec_from_record(doc["spec"])
        epoch, state, img = int(doc["epoch"]), str(doc["state"]), doc["image"]
        pages, real_pages, data, digest = int(img["pages"]), int(img["real_pages"]), img["data"], str(img["hash"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputRejected("bad_file", f"saved domain is missing or mangles a field: {exc}") from None
    if epoch < 0:
        raise InputRejected("bad_file", f"epoch {epoch} is negative")
    image = MemoryImage.empty(spec.memory_mib, real_bytes_max)
    if image.page_count != pages:
        raise InputRejected("bad_file", f"image of {pages} pages does not match {spec.memory_mib} MiB")
    if image.real_page_count != real_pages or not isinstance(data, bytes) or len(data) != real_pages * PAGE_SIZE:
        raise InputRejected("bad_file", f"image has {real_pages} real pages, this agent keeps "
                                        f"{image.real_page_count} (image_real_bytes_max differs) or the data is cut")
    if real_pages:
        image.write_pages(0, data)
    image.take_dirty()
    if image.content_hash() != digest:
        raise InputRejected("bad_file", "image hash mismatch: the file is corrupt")
    return SavedDomain(spec, epoch, state, image)
