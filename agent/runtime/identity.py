"""A node's stable identity, kept in its state dir.

The node id is a UUID generated on first start and never changed, so a node
that comes back on another address (the container case) is the same member.
The incarnation rises by one on every start, so a restarted node's news
overrides what the cluster remembers of its previous life. Both files are
written atomically with fsync: a crash mid-write never loses the identity.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from agent.core.config import ConfigError
from agent.core.validation import ID_RE

NODE_ID_FILE = "node-id"
INCARNATION_FILE = "incarnation"


@dataclass(frozen=True)
class Identity:
    node_id: str
    incarnation: int
    state_dir: Path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_identity(state_dir: str | Path, requested_id: str | None = None) -> Identity:
    """Reads (or creates) the node id and bumps the incarnation; raises ConfigError."""
    root = Path(state_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"state dir {root}: {exc}") from None
    id_path, inc_path = root / NODE_ID_FILE, root / INCARNATION_FILE
    try:
        if id_path.exists():
            node_id = id_path.read_text().strip()
            if not ID_RE.match(node_id):
                raise ConfigError(f"{id_path} holds {node_id!r}, not a node id")
            if requested_id and requested_id != node_id:
                raise ConfigError(f"--id {requested_id} differs from the id {node_id} kept in {id_path}; "
                                  "a node's id never changes (use another state dir for another node)")
        else:
            node_id = requested_id or str(uuid.uuid4())
            _write_atomic(id_path, node_id + "\n")
        text = inc_path.read_text().strip() if inc_path.exists() else "0"
        if not text.isdigit():
            raise ConfigError(f"{inc_path} does not hold a whole number")
        incarnation = int(text) + 1
        _write_atomic(inc_path, f"{incarnation}\n")
    except OSError as exc:
        raise ConfigError(f"state dir {root}: {exc}") from None
    return Identity(node_id, incarnation, root)


def ensure_node_id(state_dir: str | Path) -> str:
    """The node id kept in `state_dir`, made now if missing, without starting the node
    (no incarnation bump): a launcher issues the node's certificate for this id
    before the agent's first start. Raises ConfigError."""
    root = Path(state_dir)
    id_path = root / NODE_ID_FILE
    try:
        root.mkdir(parents=True, exist_ok=True)
        if id_path.exists():
            node_id = id_path.read_text().strip()
            if not ID_RE.match(node_id):
                raise ConfigError(f"{id_path} holds {node_id!r}, not a node id")
            return node_id
        node_id = str(uuid.uuid4())
        _write_atomic(id_path, node_id + "\n")
        return node_id
    except OSError as exc:
        raise ConfigError(f"state dir {root}: {exc}") from None


def save_incarnation(state_dir: str | Path, incarnation: int) -> None:
    """Persists an incarnation that rose at run time (a refutation), so the next
    start begins above it instead of being suspected once more."""
    path = Path(state_dir) / INCARNATION_FILE
    try:
        current = int(path.read_text().strip()) if path.exists() else 0
    except ValueError:
        current = 0
    if incarnation > current:
        _write_atomic(path, f"{incarnation}\n")
