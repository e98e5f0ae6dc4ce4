"""A physical host: capacity, the domains on it, reservations, and samples.

Theory of operation
-------------------
Admission follows OpenStack Nova's placement rules: memory is never
overcommitted (a guest's memory must fit in what is left), and vCPUs may be
overcommitted up to `cpu_cores * cpu_overcommit_ratio` (Nova's default
`cpu_allocation_ratio` is 16). Admission counts vCPUs and memory only; CPU
*demand* is not admitted against, because it changes over time, and when it
exceeds the cores the scheduler shares them out and the sample records the
shortfall.

A reservation holds room for a domain that is about to arrive (the target side
of a migration). It counts against memory and vCPUs like a domain until it is
released or expires (`expire_reservations(now_s)`), so a target cannot promise
the same room twice. A reservation stops counting once its domain is on the
host — the room it held is now the domain's — so accounting is right whether
the handoff releases the reservation before or after adding the domain.

`sample(t_s)` asks every RUNNING or MIGRATING_OUT domain for its demand,
shares the cores with `scheduler.allocate` and reports demand, allocation,
unserved demand (the SLA shortfall) and memory use. PAUSED and RESERVED_IN
domains demand nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypervisor.domain import Domain, DomainSpec, DomainState
from hypervisor.scheduler import CpuRequest, allocate

_SCHEDULED_STATES = (DomainState.RUNNING, DomainState.MIGRATING_OUT)


class HostSpecError(ValueError):
    """A host spec is invalid; the message names the field and why."""


class AdmissionError(ValueError):
    """add_domain() was refused; `admission.reason` says why."""

    def __init__(self, admission: Admission) -> None:
        super().__init__(admission.reason)
        self.admission = admission


@dataclass(frozen=True)
class HostSpec:
    cpu_cores: float
    memory_mib: int
    cpu_overcommit_ratio: float = 16.0  # Nova's default cpu_allocation_ratio

    @property
    def vcpus_max(self) -> float:
        return self.cpu_cores * self.cpu_overcommit_ratio

    def validate(self) -> None:
        if isinstance(self.cpu_cores, bool) or not isinstance(self.cpu_cores, (int, float)):
            raise HostSpecError(f"cpu_cores must be a number, got {self.cpu_cores!r}")
        if not (math.isfinite(self.cpu_cores) and self.cpu_cores > 0):
            raise HostSpecError(f"cpu_cores must be finite and > 0, got {self.cpu_cores!r}")
        if isinstance(self.memory_mib, bool) or not isinstance(self.memory_mib, int) or self.memory_mib <= 0:
            raise HostSpecError(f"memory_mib must be an integer > 0, got {self.memory_mib!r}")
        ratio = self.cpu_overcommit_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
            raise HostSpecError(f"cpu_overcommit_ratio must be a number, got {ratio!r}")
        # Below 1 is allowed: Nova operators use it to keep cores in reserve.
        if not (math.isfinite(ratio) and ratio > 0):
            raise HostSpecError(f"cpu_overcommit_ratio must be finite and > 0, got {ratio!r}")


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    domain_id: str
    vcpus: int
    memory_mib: int
    demand_cores: float
    expires_at_s: float
    anti_affinity: str = ""  # the arriving domain's anti-affinity group, "" for none


@dataclass(frozen=True)
class Admission:
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class HostSample:
    t_s: float
    cpu_capacity_cores: float
    cpu_demand_cores: float
    cpu_allocated_cores: float
    cpu_unserved_cores: float
    cpu_utilization: float  # demand / capacity, may exceed 1.0 = overloaded
    memory_capacity_mib: int
    memory_used_mib: int  # committed incl. reservations
    memory_utilization: float
    allocations: tuple[tuple[str, float, float], ...]  # (domain_id, demand_cores, allocated_cores)


_ADMITTED = Admission(True)


class Host:
    def __init__(self, spec: HostSpec) -> None:
        spec.validate()
        self.spec = spec
        self.domains: dict[str, Domain] = {}
        self.reservations: dict[str, Reservation] = {}

    # -- accounting ------------------------------------------------------------

    def _committed(self, *, ignore_reservation: str | None = None, for_domain: str | None = None) -> tuple[int, int]:
        """(memory_mib, vcpus) held by domains and reservations.

        Left out: reservations whose domain is already here (counted as the
        domain), the reservation `ignore_reservation`, and those held for
        `for_domain` (the room being asked about is its own).
        """
        memory_mib = sum(d.spec.memory_mib for d in self.domains.values())
        vcpus = sum(d.spec.vcpus for d in self.domains.values())
        for r in self.reservations.values():
            if r.domain_id in self.domains or r.domain_id == for_domain or r.reservation_id == ignore_reservation:
                continue
            memory_mib += r.memory_mib
            vcpus += r.vcpus
        return memory_mib, vcpus

    @property
    def committed_memory_mib(self) -> int:
        return self._committed()[0]

    @property
    def committed_vcpus(self) -> int:
        return self._committed()[1]

    # -- admission ---------------------------------------------------------------

    def admit(self, spec: DomainSpec, *, ignore_reservation: str | None = None,
              anti_affinity: bool = True) -> Admission:
        """Would `spec` fit here? Reservations held for this domain count as its own room.
        `anti_affinity=False` skips the anti-affinity check (an HA restart: running comes first)."""
        if spec.domain_id in self.domains:
            return Admission(False, f"domain {spec.domain_id!r} is already on this host")
        clash = self._anti_affinity_clash(spec.anti_affinity, spec.domain_id, ignore_reservation) \
            if anti_affinity else None
        if clash is not None:
            return clash
        committed = self._committed(ignore_reservation=ignore_reservation, for_domain=spec.domain_id)
        return self._fits(spec.memory_mib, spec.vcpus, committed)

    def _anti_affinity_clash(self, group: str, domain_id: str, ignore_reservation: str | None = None
                             ) -> Admission | None:
        """A refusal if another domain of anti-affinity `group` runs here or is being received."""
        if not group:
            return None
        for d in self.domains.values():
            if d.spec.anti_affinity == group and d.domain_id != domain_id:
                return Admission(False, f"anti-affinity: {d.domain_id!r} of group {group!r} runs on this host")
        for r in self.reservations.values():
            if r.anti_affinity == group and r.domain_id != domain_id and r.reservation_id != ignore_reservation:
                return Admission(False, f"anti-affinity: {r.domain_id!r} of group {group!r} is arriving on "
                                        "this host")
        return None

    def _fits(self, memory_mib: int, vcpus: int, committed: tuple[int, int]) -> Admission:
        committed_memory_mib, committed_vcpus = committed
        free_memory_mib = self.spec.memory_mib - committed_memory_mib
        if memory_mib > free_memory_mib:
            return Admission(False, f"memory: needs {memory_mib} MiB, {max(0, free_memory_mib)} MiB free")
        vcpus_max = self.spec.vcpus_max
        if committed_vcpus + vcpus > vcpus_max:
            free_vcpus = max(0.0, vcpus_max - committed_vcpus)
            return Admission(
                False,
                f"vcpus: needs {vcpus}, {free_vcpus:g} free "
                f"({self.spec.cpu_cores:g} cores x {self.spec.cpu_overcommit_ratio:g} overcommit)",
            )
        return _ADMITTED

    def add_domain(self, domain: Domain, *, anti_affinity: bool = True) -> None:
        """Place a domain here; raise AdmissionError if it does not fit or is already here."""
        admission = self.admit(domain.spec, anti_affinity=anti_affinity)
        if not admission.ok:
            raise AdmissionError(admission)
        self.domains[domain.spec.domain_id] = domain

    def remove_domain(self, domain_id: str) -> Domain:
        try:
            return self.domains.pop(domain_id)
        except KeyError:
            raise KeyError(f"domain {domain_id!r} is not on this host") from None

    # -- reservations ------------------------------------------------------------

    def reserve(self, res: Reservation) -> Admission:
        """Hold room for an arriving domain. Repeating an identical reservation is a no-op."""
        _check_reservation(res)
        existing = self.reservations.get(res.reservation_id)
        if existing is not None:
            if existing == res:
                return _ADMITTED
            return Admission(False, f"reservation {res.reservation_id!r} already exists with other terms")
        if res.domain_id in self.domains:
            return Admission(False, f"domain {res.domain_id!r} is already on this host")
        for other in self.reservations.values():
            if other.domain_id == res.domain_id:
                return Admission(
                    False, f"domain {res.domain_id!r} already has reservation {other.reservation_id!r}"
                )
        clash = self._anti_affinity_clash(res.anti_affinity, res.domain_id)
        if clash is not None:
            return clash
        admission = self._fits(res.memory_mib, res.vcpus, self._committed())
        if admission.ok:
            self.reservations[res.reservation_id] = res
        return admission

    def release(self, reservation_id: str) -> Reservation | None:
        return self.reservations.pop(reservation_id, None)

    def expire_reservations(self, now_s: float) -> list[Reservation]:
        """Drop and return reservations whose expiry time has come (expires_at_s <= now_s)."""
        expired = [r for r in self.reservations.values() if r.expires_at_s <= now_s]
        for r in expired:
            del self.reservations[r.reservation_id]
        return expired

    # -- sampling ----------------------------------------------------------------

    def sample(self, t_s: float) -> HostSample:
        requests = [
            CpuRequest(d.spec.domain_id, d.demand_cores(t_s), d.spec.cpu_weight, d.spec.cap_cores)
            for d in self.domains.values()
            if d.state in _SCHEDULED_STATES
        ]
        capacity_cores = float(self.spec.cpu_cores)
        granted = allocate(capacity_cores, requests)
        demand_by_id = {r.domain_id: r.demand_cores for r in requests}
        allocations = tuple(
            (domain_id, demand_by_id.get(domain_id, 0.0), granted.get(domain_id, 0.0))
            for domain_id in sorted(self.domains)
        )
        demand_cores = math.fsum(demand_by_id.values())
        allocated_cores = math.fsum(granted.values())
        memory_used_mib = self.committed_memory_mib
        return HostSample(
            t_s=t_s,
            cpu_capacity_cores=capacity_cores,
            cpu_demand_cores=demand_cores,
            cpu_allocated_cores=allocated_cores,
            cpu_unserved_cores=max(0.0, demand_cores - allocated_cores),
            cpu_utilization=demand_cores / capacity_cores,
            memory_capacity_mib=self.spec.memory_mib,
            memory_used_mib=memory_used_mib,
            memory_utilization=memory_used_mib / self.spec.memory_mib,
            allocations=allocations,
        )


def _check_reservation(res: Reservation) -> None:
    # A malformed reservation is the caller's bug, not a refusal.
    if not res.reservation_id or not res.domain_id:
        raise ValueError(f"reservation needs a reservation_id and a domain_id, got {res!r}")
    if res.vcpus < 1 or res.memory_mib < 1:
        raise ValueError(f"reservation {res.reservation_id!r}: vcpus and memory_mib must be >= 1")
    if not (math.isfinite(res.demand_cores) and res.demand_cores >= 0.0):
        raise ValueError(f"reservation {res.reservation_id!r}: demand_cores must be finite and >= 0")
    if math.isnan(res.expires_at_s):
        raise ValueError(f"reservation {res.reservation_id!r}: expires_at_s is NaN")
