"""THR-MMT and LR-MMT decisions on small cases worked out by hand from CloudSim 3.0.3's code.

Power numbers use the SPECpower tables (W at 0, 10, ..., 100 %):
G4: 86 89.4 92.6 96 99.5 102 106 108 112 114 117 (3720 MIPS)
G5: 93.7 97 101 105 110 116 121 125 129 133 135 (5320 MIPS)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from experiment.planetlab import HostView, IntervalContext, Migration, VmView, run
from experiment.planetlab.catalog import G4_POWER, G5_POWER
from experiment.planetlab.policies import CloudSimMigrationPolicy, make_policy

SLICE = Path(__file__).parent / "data" / "planetlab_slice"


def vm(vm_id, mips, ram, req, history=()):
    return (vm_id, mips, ram, req, tuple(history))


def host(host_id, kind, vms):
    power, pe, total = (G4_POWER, 1860.0, 3720.0) if kind == "G4" else (G5_POWER, 2660.0, 5320.0)
    views = tuple(VmView(i, m, r, 0, q, q, host_id, False, False, h) for i, m, r, q, h in vms)
    used = sum(q for *_, q, _ in vms)
    return HostView(host_id, kind, 2, pe, total, 4096, 4096, power, "on", used / total, used, used, views)


def decide(policy, hosts):
    by_id = {h.host_id: h for h in hosts}
    ctx = IntervalContext(300.1, 1, 300.0, tuple(sorted(by_id)), False, 62.5, by_id.__getitem__)
    return policy.on_interval(ctx), ctx


def test_thr_mmt_hand_worked_case():
    """h0 is over 80 %; MMT empties it by RAM; BFD places by least power increase; then consolidation.

    h0 (G5): a 2500/870 MB at 2500, b 1000/1740 at 1000, c 500/613 at 500, d 2000/1740 at 800
             -> 4800 / 5320 = 90 % > 80 %. MMT takes c (613 MB): 4300 / 5320 = 80.8 %, still over;
             then a (870 MB): 1800 / 5320 = 34 %, done. Sorted by MIPS: a (2500), c (500).
    h1 (G4): e at 1000 (26.9 %).  h2 (G5): f 2000 MIPS at 1000 (18.8 %).  h3 (G4), h4 (G5): off.
    a -> G4 hosts cannot hold 2500 on one core. h2: P(3500/5320) - P(18.8 %) = 123.32 - 100.52
         = 22.80 W; h4 (off): P(2500/5320) - P(0) = 114.20 - 93.7 = 20.50 W  -> h4.
    c -> h1: 99.58 - 94.94 = 4.64 W; h2: 104.28 - 100.52 = 3.76 W; h3: 90.50 - 86 = 4.50 W;
         h4 (now holding a, still "0 %" at the tick): 119.20 - 93.7 = 25.50 W  -> h2.
    Under-utilized, least first among active hosts: h2 (18.8 %) holds f and, tentatively, c.
    CloudSim does not exclude step-3 targets here, so it moves both: f -> h1 (the only active
    host left: 2000 / 3720 = 54 %), c -> h1 (2500 / 3720 = 67 %). h1 becomes a target: done.
    """
    hosts = [
        host(0, "G5", [vm(10, 2500, 870, 2500), vm(11, 1000, 1740, 1000), vm(12, 500, 613, 500),
                       vm(13, 2000, 1740, 800)]),
        host(1, "G4", [vm(14, 1000, 1740, 1000)]),
        host(2, "G5", [vm(15, 2000, 1740, 1000)]),
        host(3, "G4", []),
        host(4, "G5", []),
    ]
    plan, ctx = decide(make_policy("thr-mmt"), hosts)
    assert plan == [Migration(10, 4), Migration(12, 2), Migration(15, 1), Migration(12, 1)]
    assert ctx.views_read == 5


def test_thr_mmt_empties_the_least_utilized_host_only_if_all_its_vms_fit():
    # h0 (G4) at 2800 / 3720 = 75 %, h1 (G5) at 1500 / 5320 = 28 %. h1 is tried first: its VM needs
    # 1500 MIPS but h0 has only 920 free, so h1 stays; then h0: no active host is left to take it.
    hosts = [host(0, "G4", [vm(1, 1000, 1740, 1000), vm(2, 1000, 1740, 800), vm(3, 1000, 1740, 1000)]),
             host(1, "G5", [vm(4, 2000, 1740, 1500)])]
    plan, _ = decide(make_policy("thr-mmt"), hosts)
    assert plan == []
    # h0 at 1000 / 3720 = 26.9 % is now the least utilized, and both its VMs fit on h1
    # (1500 + 500 + 500 = 2500 / 5320 = 47 % <= 80 %).
    hosts[0] = host(0, "G4", [vm(1, 1000, 1740, 500), vm(2, 1000, 1740, 500)])
    plan, _ = decide(make_policy("thr-mmt"), hosts)
    assert plan == [Migration(1, 1), Migration(2, 1)]


def linear_history(first, step, vms=2, vm_mips=2500.0, total_mips=5320.0):
    """Each VM's history (newest first) so that the host's series is first, first + step, ..."""
    series = [first + step * k for k in range(10)]                  # oldest first, x = 1..10
    return [y * total_mips / (vms * vm_mips) for y in reversed(series)]


@pytest.mark.parametrize("step, over", [(0.06, True), (0.03, False)])
def test_lr_predicts_one_migration_interval_ahead_with_safety_1_2(step, over):
    # The least-squares line through x = 1..10 is exact here; CloudSim predicts at
    # x = 10 + ceil(27.84 s / 300 s) = 11: 0.30 + 10 x step, times the safety 1.2.
    # step 0.06: 0.90 x 1.2 = 1.08 >= 1 -> over.  step 0.03: 0.60 x 1.2 = 0.72 -> not over.
    hist = linear_history(0.30, step)
    hosts = [host(0, "G5", [vm(1, 2500, 870, 100, hist), vm(2, 2500, 870, 100, hist)]),
             host(1, "G5", [])]
    plan, _ = decide(make_policy("lr-mmt"), hosts)
    # Over: MMT takes the first 870 MB VM (the series halves, 0.54 < 1) to the idle G5.
    # Not over: host 0 is under-utilized, but the only other host is off, so nothing moves.
    assert plan == ([Migration(1, 1)] if over else [])


def test_lr_falls_back_to_a_static_threshold_of_0_7_with_less_than_10_samples():
    short = [0.99] * 9
    calm = [host(0, "G5", [vm(1, 2000, 1740, 1000, short)]), host(1, "G5", [])]
    busy = [host(0, "G5", [vm(1, 2500, 870, 2000, short), vm(2, 2000, 1740, 1800, short)]),
            host(1, "G5", [])]
    assert decide(make_policy("lr-mmt"), calm)[0] == []
    # 3800 / 5320 = 71 % > 70 %: MMT picks the 870 MB VM.
    assert decide(make_policy("lr-mmt"), busy)[0] == [Migration(1, 1)]


def test_policy_names_and_parameters():
    assert make_policy("thr-mmt").name == "thr-mmt-0.8"
    assert make_policy("thr-mmt-1.0").threshold == 1.0
    assert make_policy("lr-mmt").safety == 1.2
    assert isinstance(make_policy("lr-mmt"), CloudSimMigrationPolicy)
    with pytest.raises(ValueError):
        make_policy("nope")


def test_engine_runs_a_double_migration_as_cloudsim_does(tmp_path):
    """A VM listed twice in one plan ends on the second destination and counts twice."""
    folder = tmp_path / "20990101"
    folder.mkdir()
    for i in range(4):
        (folder / f"vm{i}").write_text("20\n" * 288)

    class Twice:
        name, centralized, power_aware = "twice", False, True

        def initial_placement(self, ctx):
            return [1, 3, 0, 0]

        def on_interval(self, ctx):
            if ctx.tick == 1:
                return [Migration(3, 2), Migration(3, 4)]
            if ctx.tick == 2:
                self.seen = {h.host_id: [v.vm_id for v in h.vms] for h in ctx.hosts()}
            return []

    policy = Twice()
    r = run("20990101", policy, hosts=6, workloads_dir=tmp_path, limit_s=900)
    assert r.migrations == 2
    assert policy.seen[4] == [3] and policy.seen[2] == [] and policy.seen[0] == [2]


def test_thr_mmt_on_the_slice_consolidates_and_pays_in_sla():
    kw = dict(hosts=24, workloads_dir=SLICE, limit_s=4 * 3600)
    dvfs = run("20110303", "dvfs", **kw)
    thr = run("20110303", "thr-mmt", **kw)
    again = run("20110303", "thr-mmt", **kw)
    assert thr.migrations > 0 and thr.slatah > 0 and thr.pdm > 0
    assert thr.energy_kwh < 0.6 * dvfs.energy_kwh
    assert dvfs.slatah == 0 and dvfs.migrations == 0
    assert thr.timeline[-1].active_hosts < thr.timeline[0].active_hosts
    assert (thr.energy_kwh, thr.migrations, thr.slatah) == (again.energy_kwh, again.migrations, again.slatah)
    assert thr.host_views_per_interval == 24 and thr.centralized
