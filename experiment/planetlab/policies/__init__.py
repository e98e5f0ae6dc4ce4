"""Reference policies. All of them are CENTRALIZED: they read every host each interval.

| name      | what                                                                 |
|-----------|----------------------------------------------------------------------|
| npa       | first fit, no migration, every host at peak power (CloudSim npa)     |
| dvfs      | first fit, no migration, SPECpower curve (CloudSim dvfs)             |
| thr-mmt   | static threshold 0.8 + minimum migration time (CloudSim THR-MMT-0.8) |
| lr-mmt    | local regression, safety 1.2 + MMT (CloudSim LR-MMT-1.2)             |
| drs       | greedy load balancer in the manner of VMware DRS, no DPM             |

``thr-mmt-T`` and ``lr-mmt-S`` pick another threshold or safety parameter.

The DECENTRALIZED policies (one agent per host, neighbour view and gossip
only) live in ``experiment.planetlab.decentralized``; ``make_policy`` builds
them too:

| name        | what                                                               |
|-------------|--------------------------------------------------------------------|
| balance     | agent.core.policy's rule: hot hosts push load to cooler neighbours |
| consolidate | agent.core.consolidate: drain light hosts, sleep, wake on overload |

``consolidate:key=value,...`` overrides its settings (see decentralized.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..view import Policy
from .cloudsim import CloudSimMigrationPolicy
from .drs import DrsPolicy
from .static import NoMigrationPolicy

if TYPE_CHECKING:  # a seeded random.Random is passed in, never the global one
    from random import Random

POLICY_NAMES = ("npa", "dvfs", "thr-mmt", "lr-mmt", "drs")
DECENTRALIZED_NAMES = ("balance", "consolidate")


def make_policy(name: str, rng: Random | None = None) -> Policy:
    """A fresh policy by name (``rng`` is for policies that draw; the reference ones do not)."""
    if name.partition(":")[0] in DECENTRALIZED_NAMES:
        from ..decentralized import make_decentralized     # imports this package's placement
        return make_decentralized(name, rng)
    if name == "npa":
        return NoMigrationPolicy("npa", power_aware=False)
    if name == "dvfs":
        return NoMigrationPolicy("dvfs", power_aware=True)
    if name == "drs":
        return DrsPolicy()
    for prefix, detector, default in (("thr-mmt", "thr", 0.8), ("lr-mmt", "lr", 1.2)):
        if name == prefix or name.startswith(prefix + "-"):
            param = default if name == prefix else float(name[len(prefix) + 1:])
            if detector == "thr":
                return CloudSimMigrationPolicy("thr", threshold=param)
            return CloudSimMigrationPolicy("lr", safety=param)
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES + DECENTRALIZED_NAMES)}")


__all__ = ["CloudSimMigrationPolicy", "DECENTRALIZED_NAMES", "DrsPolicy", "NoMigrationPolicy", "POLICY_NAMES",
           "make_policy"]
