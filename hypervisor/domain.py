"""Guest domains: the spec (what an operator asks for) and the live domain.

A `DomainSpec` is a frozen value that travels with the domain when it
migrates. A `Domain` is the host's record of one guest: its spec, its state,
its `epoch` (raised by whoever takes ownership, so a stale copy can be told
apart from the current one) and its CPU-demand source.

CPU quotas follow Xen's credit scheduler: `cpu_weight` is a relative share
(default 256), `cpu_cap_pct` is a ceiling in percent of one physical core
(0 = uncapped, 150 = one and a half cores).
"""

from __future__ import annotations

import enum
import re
import math
from dataclasses import dataclass

from hypervisor.workload import DemandSource, WorkloadError, WorkloadSpec, make_demand

VCPUS_MAX = 512
MEMORY_MIB_MAX = 4 * 1024 * 1024  # 4 TiB
CPU_WEIGHT_MAX = 65535  # Xen's credit scheduler accepts 1..65535
DOMAIN_ID_CHARS_MAX = 128
IMAGE_SEED_MAX = 2**64 - 1  # fits a uint64 on the wire

_DOMAIN_ID_RE = re.compile(r"[A-Za-z0-9._:-]+")


class DomainSpecError(ValueError):
    """A domain spec is invalid; the message names the field and why."""


# Placement labels (DESIGN.md: "Affinity / anti-affinity labels constrain targets"). Domains
# with the same `affinity` value stay together: the balancing rule moves none of them away
# from another member on its host. Domains with the same `anti-affinity` value never share a
# host: a host refuses (creation, a migration's PREPARE, an HA restart) one whose group
# already runs or is being received there.
LABELS_MAX = 32
LABEL_CHARS_MAX = 128
AFFINITY_LABEL = "affinity"
ANTI_AFFINITY_LABEL = "anti-affinity"


@dataclass(frozen=True)
class DomainSpec:
    domain_id: str
    vcpus: int
    memory_mib: int
    name: str = ""
    cpu_weight: int = 256
    cpu_cap_pct: int = 0  # Xen-style: percent of one physical core, 0 = uncapped
    labels: tuple[tuple[str, str], ...] = ()
    workload: WorkloadSpec = WorkloadSpec("constant", (("level", 0.5),))
    image_seed: int = 0
    # Memory dirtying while the guest runs (drives pre-copy): its writable
    # working set and the rate it rewrites pages in it. 0 = a quiet guest.
    wws_mib: float = 0.0
    dirty_rate_mib_s: float = 0.0

    @property
    def cap_cores(self) -> float | None:
        return None if self.cpu_cap_pct == 0 else self.cpu_cap_pct / 100.0

    def label(self, key: str) -> str:
        for k, v in self.labels:
            if k == key:
                return v
        return ""

    @property
    def affinity(self) -> str:
        """The group this domain is kept together with ("" for none): label `affinity`."""
        return self.label(AFFINITY_LABEL)

    @property
    def anti_affinity(self) -> str:
        """The group no other member of which may share its host ("" for none): label `anti-affinity`."""
        return self.label(ANTI_AFFINITY_LABEL)

    def validate(self) -> None:
        """Raise DomainSpecError unless every field is in range."""
        if not isinstance(self.domain_id, str) or not self.domain_id:
            raise DomainSpecError("domain_id must be a non-empty string")
        if len(self.domain_id) > DOMAIN_ID_CHARS_MAX:
            raise DomainSpecError(
                f"domain_id must be at most {DOMAIN_ID_CHARS_MAX} characters, got {len(self.domain_id)}"
            )
        if not _DOMAIN_ID_RE.fullmatch(self.domain_id):
            raise DomainSpecError(f"domain_id {self.domain_id!r} may hold only A-Z a-z 0-9 . _ : -")
        who = self.domain_id
        _check_int(who, "vcpus", self.vcpus, 1, VCPUS_MAX)
        _check_int(who, "memory_mib", self.memory_mib, 1, MEMORY_MIB_MAX)
        _check_int(who, "cpu_weight", self.cpu_weight, 1, CPU_WEIGHT_MAX)
        _check_int(who, "cpu_cap_pct", self.cpu_cap_pct, 0, self.vcpus * 100)
        _check_int(who, "image_seed", self.image_seed, 0, IMAGE_SEED_MAX)
        for field_name in ("wws_mib", "dirty_rate_mib_s"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise DomainSpecError(f"{who}: {field_name} must be a finite number >= 0, got {value!r}")
        if self.wws_mib > self.memory_mib:
            raise DomainSpecError(f"{who}: wws_mib {self.wws_mib} exceeds memory_mib {self.memory_mib}")
        if not isinstance(self.name, str):
            raise DomainSpecError(f"{who}: name must be a string")
        keys: set[str] = set()
        if not isinstance(self.labels, tuple) or len(self.labels) > LABELS_MAX:
            raise DomainSpecError(f"{who}: at most {LABELS_MAX} labels, as a tuple of pairs")
        for label in self.labels:
            if not (isinstance(label, tuple) and len(label) == 2 and all(isinstance(x, str) for x in label)):
                raise DomainSpecError(f"{who}: each label must be a (key, value) pair of strings, got {label!r}")
            if not label[0]:
                raise DomainSpecError(f"{who}: label keys must be non-empty")
            if max(len(label[0]), len(label[1])) > LABEL_CHARS_MAX:
                raise DomainSpecError(f"{who}: label {label[0][:32]!r}: keys and values hold at most "
                                      f"{LABEL_CHARS_MAX} characters")
            if label[0] in keys:
                raise DomainSpecError(f"{who}: label {label[0]!r} given twice")
            keys.add(label[0])
        if not isinstance(self.workload, WorkloadSpec):
            raise DomainSpecError(f"{who}: workload must be a WorkloadSpec")
        try:
            self.workload.validate()
        except WorkloadError as exc:
            raise DomainSpecError(f"{who}: workload: {exc}") from exc


def _check_int(who: str, field: str, value: object, low: int, high: int) -> None:
    # bool is an int subclass; True vCPUs is a bug, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise DomainSpecError(f"{who}: {field} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise DomainSpecError(f"{who}: {field} must be in {low}..{high}, got {value}")


class DomainState(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    MIGRATING_OUT = "migrating-out"  # still running here while its pages are copied
    RESERVED_IN = "reserved-in"  # arriving: accounted here, not yet running


class Domain:
    """One guest on one host. Mutable: the host changes its state and epoch."""

    def __init__(self, spec: DomainSpec, *, epoch: int = 0, state: DomainState = DomainState.RUNNING) -> None:
        spec.validate()
        self.spec = spec
        self.epoch = epoch
        self.state = state
        self.demand: DemandSource = make_demand(spec.workload)

    @property
    def domain_id(self) -> str:
        return self.spec.domain_id

    def demand_cores(self, t_s: float) -> float:
        """Cores the guest wants at model time t_s, after its cap; 0 when paused."""
        if self.state is DomainState.PAUSED:
            return 0.0
        cores = self.demand.fraction_at(t_s) * self.spec.vcpus
        cap = self.spec.cap_cores
        return cores if cap is None else min(cores, cap)

    def __repr__(self) -> str:
        return f"Domain({self.spec.domain_id!r}, epoch={self.epoch}, state={self.state.value})"
