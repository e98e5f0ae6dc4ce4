"""Beloglazov & Buyya's PlanetLab consolidation experiment, as CloudSim 3.0.3 runs it.

``run(day, policy, hosts=800, accounting="cloudsim")`` replays one day of
PlanetLab traces (shared/workloads/planetlab) on CloudSim's hosts and VMs and
returns a ``Result`` with energy, migrations, SLATAH, PDM, SLAV, ESV and the
overall SLA violation, comparable line by line with
``cloudsim-3.0.3-results.csv`` (see shared/BENCHMARKS.md section 1).

Modules: ``workload`` (traces), ``catalog`` (host/VM types, SPECpower),
``accounting`` (cloudsim vs strict), ``metrics`` (the formulas),
``engine`` (the simulator and the policy API), ``view`` (what a policy
sees), ``policies`` (the centralized reference policies),
``decentralized`` (one Shoal agent per host: ``balance``, ``consolidate``),
``result``, ``results`` (the ten-day table in RESULTS.md).
Command line: ``python -m experiment.planetlab 20110303 thr-mmt consolidate``.
"""

from .accounting import CLOUDSIM, STRICT, Accounting
from .engine import Engine, IntervalStats
from .policies import DECENTRALIZED_NAMES, POLICY_NAMES, make_policy
from .result import Result
from .runner import run
from .view import HostView, IntervalContext, Migration, PlacementContext, Policy, VmView
from .workload import default_workloads_dir, load_day

__all__ = ["Accounting", "CLOUDSIM", "STRICT", "Engine", "HostView", "IntervalContext", "IntervalStats",
           "Migration", "PlacementContext", "DECENTRALIZED_NAMES", "POLICY_NAMES", "Policy", "Result", "VmView",
           "default_workloads_dir", "load_day", "make_policy", "run"]
