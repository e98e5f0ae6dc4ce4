"""CPU allocation among domains: proportional share by weight, with caps.

Theory of operation
-------------------
Xen's credit scheduler gives each domain CPU in proportion to its weight,
never more than its cap, and hands time a domain leaves unused to the others.
Over an accounting period that is weighted max-min fairness, computed here by
water-filling:

1. Each domain can use at most `limit = min(demand, cap)`.
2. If the limits fit in the capacity, everyone gets its limit.
3. Otherwise raise a common level L until the capacity is used up; a domain
   gets `min(limit, L * weight)`. Domains are visited in order of
   `limit / weight`: each one whose limit is below its fair share of what is
   left is satisfied and leaves; the rest split the remainder by weight.

The result is deterministic (ties broken by domain id), never gives a domain
more than its limit, is work-conserving (the capacity is used up whenever the
limits exceed it), and its exact sum (`math.fsum`) never exceeds the capacity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class CpuRequest:
    domain_id: str
    demand_cores: float
    weight: int
    cap_cores: float | None  # None = uncapped

    def limit_cores(self) -> float:
        if self.cap_cores is None:
            return self.demand_cores
        return min(self.demand_cores, self.cap_cores)


def allocate(capacity_cores: float, requests: Sequence[CpuRequest]) -> dict[str, float]:
    """Cores granted to each domain, keyed by domain id in request order."""
    _check(capacity_cores, requests)
    limits = {r.domain_id: r.limit_cores() for r in requests}
    if math.fsum(limits.values()) <= capacity_cores:
        return limits

    granted: dict[str, float] = {}
    remaining_cores = capacity_cores
    remaining_weight = sum(r.weight for r in requests)
    by_need = sorted(requests, key=lambda r: (limits[r.domain_id] / r.weight, r.domain_id))
    for index, request in enumerate(by_need):
        limit = limits[request.domain_id]
        if limit * remaining_weight <= remaining_cores * request.weight:
            granted[request.domain_id] = limit
            remaining_cores = max(0.0, remaining_cores - limit)
            remaining_weight -= request.weight
            continue
        # Everyone from here on wants more than its share: split by weight.
        level = remaining_cores / remaining_weight
        for rest in by_need[index:]:
            granted[rest.domain_id] = min(limits[rest.domain_id], level * rest.weight)
        break

    _trim_rounding(granted, capacity_cores)
    return {r.domain_id: granted[r.domain_id] for r in requests}


def _trim_rounding(granted: dict[str, float], capacity_cores: float) -> None:
    # The level arithmetic can overshoot by a few ulps; take them from the
    # largest grant so "sum <= capacity" holds exactly, not approximately.
    while granted and math.fsum(granted.values()) > capacity_cores:
        excess = math.fsum(granted.values()) - capacity_cores
        largest = max(granted, key=lambda d: (granted[d], d))
        granted[largest] = max(0.0, math.nextafter(granted[largest] - excess, 0.0))


def _check(capacity_cores: float, requests: Sequence[CpuRequest]) -> None:
    if not (math.isfinite(capacity_cores) and capacity_cores >= 0.0):
        raise ValueError(f"capacity_cores must be finite and >= 0, got {capacity_cores!r}")
    seen: set[str] = set()
    for r in requests:
        if r.domain_id in seen:
            raise ValueError(f"domain {r.domain_id!r} requested twice")
        seen.add(r.domain_id)
        if not (math.isfinite(r.demand_cores) and r.demand_cores >= 0.0):
            raise ValueError(f"{r.domain_id}: demand_cores must be finite and >= 0, got {r.demand_cores!r}")
        if r.weight < 1:
            raise ValueError(f"{r.domain_id}: weight must be >= 1, got {r.weight!r}")
        if r.cap_cores is not None and not (math.isfinite(r.cap_cores) and r.cap_cores >= 0.0):
            raise ValueError(f"{r.domain_id}: cap_cores must be finite and >= 0 or None, got {r.cap_cores!r}")
