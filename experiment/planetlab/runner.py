"""``run()``: one day of the PlanetLab experiment under one policy."""

from __future__ import annotations

import os
import random
import time
from typing import Callable

from .accounting import Accounting, accounting_by_name
from .engine import DAY_S, Engine
from .policies import make_policy
from .result import Result
from .view import Policy
from .workload import load_day


def run(day: str, policy: str | Policy, hosts: int = 800, accounting: str | Accounting = "cloudsim",
        workloads_dir: str | os.PathLike[str] | None = None, seed: int = 0,
        progress: Callable[[int, int], None] | None = None, *, limit_s: float = DAY_S,
        vm_limit: int | None = None, view_lag_ticks: int = 0) -> Result:
    """Replay ``day`` (one VM per trace file, sorted names) on ``hosts`` hosts under ``policy``.

    ``policy`` is a name (see ``policies.POLICY_NAMES``) or a Policy object;
    ``accounting`` is "cloudsim" (comparable with CloudSim 3.0.3), "strict",
    or an ``Accounting``. ``workloads_dir`` defaults to ``$SHOAL_PLANETLAB_DIR``
    or ``../shared/workloads/planetlab`` from the repository root. ``progress``
    is called with (ticks done, ticks in all). ``limit_s`` shortens the day
    (CloudSim's SIMULATION_LIMIT); ``vm_limit`` keeps only the first traces.
    ``view_lag_ticks=1`` shows policies the previous tick's demand sample
    instead of the current one (no look-ahead at all; see engine.py).
    """
    started = time.perf_counter()
    acct = accounting_by_name(accounting)
    pol = make_policy(policy, random.Random(seed)) if isinstance(policy, str) else policy
    traces = load_day(str(day), workloads_dir, limit=vm_limit)
    outcome = Engine(traces, hosts, pol, acct, limit_s=limit_s, view_lag_ticks=view_lag_ticks).run(progress)
    slav = outcome.slatah * outcome.pdm
    return Result(
        day=str(day), policy=policy if isinstance(policy, str) else pol.name, hosts=hosts, vms=len(traces),
        energy_kwh=outcome.energy_kwh, migrations=outcome.migrations, slatah=outcome.slatah, pdm=outcome.pdm,
        slav=slav, esv=outcome.energy_kwh * slav, sla_overall=outcome.sla_overall,
        wall_seconds=time.perf_counter() - started, timeline=outcome.timeline, accounting=acct.name,
        centralized=bool(getattr(pol, "centralized", True)), migrations_rejected=outcome.migrations_rejected,
        vms_finished=outcome.vms_finished, host_shutdowns=outcome.host_shutdowns,
        host_views_per_interval=outcome.host_views_per_interval, simulated_s=outcome.simulated_s, seed=seed,
        view_lag_ticks=view_lag_ticks)
