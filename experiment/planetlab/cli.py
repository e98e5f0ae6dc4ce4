"""`shoal experiment planetlab`: the PlanetLab day as the issue asks for it.

One policy (`--policy`) prints its metric table; `--compare` runs every
policy, centralized and decentralized, on the same day and prints one table.
`--plot` draws active hosts, utilization spread and migrations over the day.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from .accounting import ACCOUNTINGS
from .engine import DAY_S
from .policies import DECENTRALIZED_NAMES, POLICY_NAMES
from .result import Result
from .runner import run

COMPARE_POLICIES = ("npa", "dvfs", "thr-mmt", "lr-mmt", "drs", "balance", "consolidate")
HEADER = (f"{'policy':<13}{'kind':<15}{'energy kWh':>11}{'migrations':>11}{'SLATAH %':>10}{'PDM %':>8}"
          f"{'SLAV':>10}{'ESV':>10}{'SLA viol %':>11}{'wall s':>8}")


def row(r: Result) -> str:
    kind = "centralized" if r.centralized else "decentralized"
    return (f"{r.policy:<13}{kind:<15}{r.energy_kwh:11.2f}{r.migrations:11d}{r.slatah * 100:10.2f}"
            f"{r.pdm * 100:8.3f}{r.slav:10.3g}{r.esv:10.3g}{r.sla_overall * 100:11.3f}{r.wall_seconds:8.1f}")


def plot(results: list[Result], path: str) -> None:
    """Active hosts, utilization mean +- std, and migrations per interval over the day."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    for r in results:
        hours = [s.time_s / 3600 for s in r.timeline]
        axes[0].plot(hours, [s.active_hosts for s in r.timeline], label=r.policy)
        mean = [s.util_mean for s in r.timeline]
        std = [s.util_std for s in r.timeline]
        axes[1].plot(hours, mean, label=r.policy)
        axes[1].fill_between(hours, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)], alpha=0.2)
        axes[2].plot(hours, [s.migrations for s in r.timeline], label=r.policy)
    axes[0].set_ylabel("active hosts")
    axes[1].set_ylabel("host CPU utilization\n(mean ± std)")
    axes[2].set_ylabel("migrations / interval")
    axes[2].set_xlabel("hour of the day")
    axes[0].set_title(f"PlanetLab {results[0].day}, {results[0].hosts} hosts, {results[0].accounting} accounting")
    axes[0].legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_experiment(day: str, policies: list[str], hosts: int = 800, accounting: str = "cloudsim",
                   seed: int = 0, lookahead: bool = True, hours: float = DAY_S / 3600,
                   workloads_dir: str | None = None, json_output: bool = False, plot_path: str | None = None,
                   out: TextIO = sys.stdout, progress_out: TextIO = sys.stderr) -> list[Result]:
    """Runs the policies one after another; prints a table (or JSON) and optionally a plot."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if accounting not in ACCOUNTINGS:
        raise ValueError(f"--accounting must be one of {', '.join(sorted(ACCOUNTINGS))}")
    results = []
    from rich.console import Console
    console = Console(file=progress_out)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not progress_out.isatty()) as bar:
        for name in policies:
            task = bar.add_task(f"{day} {name}", total=None)
            result = run(day, name, hosts=hosts, accounting=accounting, workloads_dir=workloads_dir,
                         progress=lambda done, total, t=task: bar.update(t, completed=done, total=total),
                         limit_s=hours * 3600, view_lag_ticks=0 if lookahead else 1, seed=seed)
            results.append(result)
    if json_output:
        docs = [json.loads(r.to_json()) for r in results]
        for d in docs:
            d.pop("timeline", None)  # kept for --plot; too long for a terminal
        print(json.dumps(docs[0] if len(docs) == 1 else {"day": day, "results": docs}, indent=2), file=out)
    else:
        print(f"PlanetLab {day}: {results[0].vms} VMs on {hosts} hosts, {accounting} accounting, "
              f"{'interval sample' if lookahead else 'previous sample only'}", file=out)
        print(HEADER, file=out)
        for r in results:
            print(row(r), file=out)
    if plot_path:
        plot(results, plot_path)
    return results


ALL_POLICIES = POLICY_NAMES + DECENTRALIZED_NAMES
