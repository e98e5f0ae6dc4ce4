"""python -m experiment.planetlab DAY POLICY [POLICY ...] [--hosts N] [--accounting A] [--no-lookahead] [--json]"""

from __future__ import annotations

import argparse
import sys

from .accounting import ACCOUNTINGS
from .engine import DAY_S
from .runner import run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiment.planetlab",
                                description="Replay one PlanetLab day under a consolidation policy.")
    p.add_argument("day", help="day folder, e.g. 20110303")
    p.add_argument("policies", nargs="+",
                   help="npa, dvfs, thr-mmt[-T], lr-mmt[-S], drs (centralized); balance, "
                        "consolidate[:key=value,...] (decentralized)")
    p.add_argument("--hosts", type=int, default=800)
    p.add_argument("--accounting", choices=sorted(ACCOUNTINGS), default="cloudsim")
    p.add_argument("--workloads-dir", default=None)
    p.add_argument("--hours", type=float, default=DAY_S / 3600)
    p.add_argument("--json", action="store_true", help="one JSON object per line, with the timeline")
    p.add_argument("--no-lookahead", action="store_true",
                   help="policies see the previous tick's demand sample, not the current one")
    p.add_argument("--seed", type=int, default=0, help="seed of the policy's random choices")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    for name in args.policies:
        def progress(done: int, total: int) -> None:
            if done % 24 == 0 or done == total:
                print(f"  {name}: {done}/{total} ticks", file=sys.stderr, flush=True)
        try:
            result = run(args.day, name, hosts=args.hosts, accounting=args.accounting,
                         workloads_dir=args.workloads_dir, progress=progress if args.progress else None,
                         limit_s=args.hours * 3600, view_lag_ticks=1 if args.no_lookahead else 0,
                         seed=args.seed)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(result.to_json() if args.json else result.summary_row(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
