"""The engine's policy API: views on demand, neighbour-only knowledge, results and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiment.planetlab import IntervalStats, Migration, Result, run
from experiment.planetlab.__main__ import main
from experiment.planetlab.policies.placement import power_aware

SLICE = Path(__file__).parent / "data" / "planetlab_slice"
KW = dict(hosts=24, workloads_dir=SLICE, limit_s=3 * 3600)


class RingNeighbours:
    """A stand-in for a decentralized policy: each host reads itself and the next host only,
    and pushes one VM to that neighbour when it is hotter by more than 20 points."""

    name, centralized, power_aware = "ring", False, True

    def __init__(self):
        self.max_views = 0
        self.ram_free_min = None

    def initial_placement(self, ctx):
        return power_aware(ctx)

    def on_interval(self, ctx):
        out = []
        n = len(ctx.host_ids)
        for hid in ctx.host_ids:
            me, right = ctx.hosts([hid, (hid + 1) % n])
            for h in (me, right):
                self.ram_free_min = h.ram_free_mb if self.ram_free_min is None else min(self.ram_free_min,
                                                                                          h.ram_free_mb)
            movable = [v for v in me.vms if not v.migrating and not v.incoming]
            if movable and me.utilization - right.utilization > 0.2 and right.state != "waking":
                out.append(Migration(min(movable, key=lambda v: v.ram_mb).vm_id, right.host_id))
        self.max_views = max(self.max_views, ctx.views_read)
        return out


def test_a_policy_may_read_only_its_neighbours_and_the_engine_counts_what_it_read():
    policy = RingNeighbours()
    r = run("20110303", policy, **KW)
    # Every host ends up read (as itself or as a neighbour) but nobody asked for ctx.hosts().
    assert r.host_views_per_interval == 24
    assert not r.centralized and r.policy == "ring"
    assert r.migrations > 0


def test_views_are_built_only_when_asked():
    class Lazy:
        name, centralized, power_aware = "lazy", False, True

        def initial_placement(self, ctx):
            return power_aware(ctx)

        def on_interval(self, ctx):
            ctx.host(0)
            ctx.host(0)
            return []

    r = run("20110303", Lazy(), **KW)
    assert r.host_views_per_interval == 1


def test_strict_never_lets_ram_run_out():
    # The ring policy ignores RAM: strict accounting refuses the moves that do not fit.
    policy = RingNeighbours()
    r = run("20110303", policy, accounting="strict", **KW)
    assert policy.ram_free_min is not None and policy.ram_free_min >= 0
    assert r.migrations_rejected > 0 and r.vms_finished == 0
    # The same policy under cloudsim accounting sees RAM as never charged, and nothing is refused.
    loose = RingNeighbours()
    r_loose = run("20110303", loose, **KW)
    assert loose.ram_free_min == 4096 and r_loose.migrations_rejected == 0


def test_every_reference_policy_runs_under_both_accountings():
    seen = {}
    for name in ("npa", "dvfs", "thr-mmt", "lr-mmt", "drs"):
        for acct in ("cloudsim", "strict"):
            r = run("20110303", name, accounting=acct, **KW)
            seen[name, acct] = r
            assert r.energy_kwh > 0 and r.vms == 41 and r.accounting == acct
            assert len(r.timeline) == 35          # ticks 300.1 ... 10 500.1 s
    assert seen["npa", "cloudsim"].energy_kwh > seen["dvfs", "cloudsim"].energy_kwh
    # Strict pays idle power for VMs at 0 % and standby for empty hosts: never cheaper.
    for name in ("dvfs", "thr-mmt", "lr-mmt"):
        assert seen[name, "strict"].energy_kwh > seen[name, "cloudsim"].energy_kwh


def test_result_json_round_trips_and_uses_fractions():
    r = run("20110303", "thr-mmt", **KW)
    d = json.loads(r.to_json())
    assert {"day", "policy", "hosts", "vms", "energy_kwh", "migrations", "slatah", "pdm", "slav", "esv",
            "sla_overall", "wall_seconds", "timeline"} <= set(d)
    assert 0 < d["slatah"] < 1 and d["slav"] == pytest.approx(d["slatah"] * d["pdm"])
    assert set(d["timeline"][0]) == {f for f in IntervalStats.__slots__}
    back = Result.from_json(r.to_json())
    assert back == r


def test_cli_prints_one_json_object_per_policy(capsys):
    code = main(["20110303", "dvfs", "thr-mmt", "--hosts", "24", "--hours", "1", "--json",
                 "--workloads-dir", str(SLICE)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and [json.loads(x)["policy"] for x in lines] == ["dvfs", "thr-mmt"]


def test_cli_reports_a_missing_day(capsys, tmp_path):
    assert main(["19990101", "dvfs", "--workloads-dir", str(tmp_path)]) == 2
    assert "no PlanetLab day folder" in capsys.readouterr().err


def test_too_few_hosts_is_a_clear_error():
    with pytest.raises(ValueError, match="add hosts"):
        run("20110303", "dvfs", hosts=4, workloads_dir=SLICE, limit_s=900)


def test_reference_policies_are_marked_centralized():
    from experiment.planetlab import POLICY_NAMES, make_policy
    assert all(make_policy(name).centralized for name in POLICY_NAMES)


def test_the_simulator_core_reads_no_clock_no_environment_and_no_global_randomness():
    import ast
    package = Path(__file__).parents[1] / "experiment" / "planetlab"
    core = [package / f for f in ("engine.py", "metrics.py", "view.py", "catalog.py", "accounting.py")]
    core += sorted((package / "policies").glob("*.py"))
    for path in core:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not {n.split(".")[0] for n in names} & {"time", "os", "asyncio", "socket"}, path
                if isinstance(node, ast.Import):
                    assert "random" not in names, path
