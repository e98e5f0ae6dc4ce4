"""Metric arithmetic against hand-computed values: energy, SLATAH, PDM, overall SLA violation.

The engine-level cases use tiny synthetic days (constant traces written to
tmp_path) and scripted policies, so every number below can be worked out on
paper from shared/BENCHMARKS.md section 1 and CloudSim's rules.
"""

from __future__ import annotations

import pytest

from experiment.planetlab import CLOUDSIM, STRICT, Migration, run
from experiment.planetlab.catalog import G4_POWER
from experiment.planetlab.metrics import HostMeter, VmMeter, interval_energy_j, pdm, sla_overall, slatah

G4 = (86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117)
G5 = (93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135)


def spec(table, u):
    """The SPECpower line by hand: the two surrounding 10 % points, linearly."""
    i = min(int(u * 10), 9)
    return table[i] + (table[i + 1] - table[i]) * (u * 10 - i)


def write_day(tmp_path, percents, day="20990101"):
    folder = tmp_path / day
    folder.mkdir()
    for i, p in enumerate(percents):
        (folder / f"vm{i:02d}").write_text(f"{p}\n" * 288)
    return tmp_path, day


class Scripted:
    """A test policy: fixed placement, fixed migrations per tick."""

    centralized = False
    power_aware = True

    def __init__(self, placement, moves=None, name="scripted"):
        self.placement = placement
        self.moves = moves or {}
        self.name = name

    def initial_placement(self, ctx):
        return self.placement

    def on_interval(self, ctx):
        return [Migration(v, h) for v, h in self.moves.get(ctx.tick, [])]


# --------------------------------------------------------------- pure formulas

def test_energy_of_an_interval_is_the_trapezoid_of_the_specpower_curve():
    # G4 from 25 % to 35 % over 300 s: P(25 %) = 94.3 W, P(35 %) = 97.75 W.
    assert interval_energy_j(G4_POWER, 0.25, 0.35, 300.0) == pytest.approx((94.3 + 97.75) / 2 * 300)
    # CloudSim: a host that was at 0 % at the start of the interval was off.
    assert interval_energy_j(G4_POWER, 0.0, 0.35, 300.0) == 0.0
    # ... but one that ends at 0 % still pays the idle end of the trapezoid.
    assert interval_energy_j(G4_POWER, 0.35, 0.0, 300.0) == pytest.approx((97.75 + 86) / 2 * 300)
    assert interval_energy_j(G4_POWER, 0.0, 0.0, 300.0, zero_is_off=False) == pytest.approx(86 * 300)


def test_slatah_pools_violation_time_over_active_time():
    a, b = HostMeter(), HostMeter()
    a.record(0, 100, 100, True)
    a.record(100, 50, 100, True)     # short from 100 s ...
    a.record(100, 60, 100, True)     # (same time: replaces the entry)
    a.record(250, 0, 0, False)       # ... to 250 s, then off
    a.record(400, 10, 10, True)
    a.record(500, 10, 10, True)      # active 100 + 150 + 100 s, short 150 s
    b.record(0, 5, 10, True)
    b.record(50, 5, 5, True)         # active 50 s, short 50 s; its last entry counts nothing
    assert (a.active_s, a.violation_s) == (350, 150)
    assert slatah([a, b]) == pytest.approx((150 + 50) / (350 + 50))


def test_pdm_counts_only_the_shortfall_flagged_as_migration():
    v, w = VmMeter(), VmMeter()
    v.record(0, 1000, 1000, False)
    v.record(300, 900, 1000, True)       # migrating: 90 % for 13.92 s
    v.record(313.92, 1000, 1000, False)
    v.record(600, 1000, 1000, False)
    w.record(0, 400, 500, False)         # short, but not because of a migration
    w.record(600, 400, 500, False)
    requested = 1000 * 600 + 500 * 600
    assert pdm([v, w]) == pytest.approx(100 * 13.92 / requested)
    assert sla_overall([v, w]) == pytest.approx((100 * 13.92 + 100 * 600) / requested)


# ------------------------------------------------------------ engine, by hand

def test_dvfs_energy_of_one_host_at_constant_load(tmp_path):
    # One VM (type 0: 2500 MIPS, only a G5 core holds it) at 40 % on host 1.
    base, day = write_day(tmp_path, [40])
    r = run(day, "dvfs", hosts=2, workloads_dir=base, limit_s=3600)
    # Ticks at 300.1, 600.1, ..., 3300.1; [0, 300.1] is not metered (utilization 0 before).
    u = 1000 / 5320
    assert r.energy_kwh == pytest.approx(spec(G5, u) * 3000.0 / 3.6e6, rel=1e-9)
    assert (r.migrations, r.slatah, r.pdm, r.sla_overall) == (0, 0.0, 0.0, 0.0)
    assert len(r.timeline) == 11 and r.timeline[0].active_hosts == 1


def test_npa_charges_every_host_its_peak_from_0_to_the_last_tick(tmp_path):
    base, day = write_day(tmp_path, [40])
    r = run(day, "npa", hosts=2, workloads_dir=base, limit_s=3600)
    assert r.energy_kwh == pytest.approx((117 + 135) * 3300.1 / 3.6e6, rel=1e-9)


def test_zero_demand_retires_the_vm_in_cloudsim_but_not_in_strict(tmp_path):
    folder = tmp_path / "20990101"
    folder.mkdir()
    (folder / "a").write_text("40\n" * 288)
    (folder / "b").write_text("0\n" * 288)
    cloudsim = run("20990101", "dvfs", hosts=4, workloads_dir=tmp_path, limit_s=3600)
    strict = run("20990101", "dvfs", hosts=4, workloads_dir=tmp_path, accounting="strict", limit_s=3600)
    assert cloudsim.vms_finished == 1 and strict.vms_finished == 0


def test_migration_onto_a_full_host_hand_computed(tmp_path):
    """Two hosts, four VMs at 100 %, one migration that oversubscribes the destination.

    Host 0 (G4, 3720 MIPS): VM2 (1000 MIPS, 1740 MB) and VM3 (500). Host 1 (G5,
    5320): VM0 (2500) and VM1 (2000). At the first tick (300.1 s) VM2 moves to
    host 1; the copy takes 1740 / 62.5 = 27.84 s. Run until 900 s: ticks at
    300.1 and 600.1, so everything is measured over [300.1, 600.1].
    """
    base, day = write_day(tmp_path, [100, 100, 100, 100])
    policy = Scripted([1, 1, 0, 0], {1: [(2, 1)]})
    r = run(day, policy, hosts=2, workloads_dir=base, limit_s=900)
    copy_s, rest_s = 27.84, 300.0 - 27.84
    assert r.migrations == 1

    # Host 1 while copying: 2500 + 2000 + 10 % of 1000 granted, 5500 requested -> short.
    # After: 5500 > 5320, each VM gets floor(request x 5320 / 5500) -> still short.
    # Host 0 while copying: VM2 at 90 % counted at its full share, 1500 of 1500 -> fine.
    assert r.slatah == pytest.approx(300.0 / 600.0)

    requested = (2500 + 2000 + 1000 + 500) * 300.0
    assert r.pdm == pytest.approx(100 * copy_s / requested)
    after = (2500 - 2418) + (2000 - 1934) + (1000 - 967)
    assert r.sla_overall == pytest.approx((100 * copy_s + after * rest_s) / requested)
    assert r.slav == pytest.approx(r.slatah * r.pdm)

    e_host1 = spec(G5, 4600 / 5320) * copy_s + spec(G5, 5319 / 5320) * rest_s
    e_host0 = spec(G4, 1500 / 3720) * copy_s + spec(G4, 500 / 3720) * rest_s
    assert r.energy_kwh == pytest.approx((e_host1 + e_host0) / 3.6e6, rel=1e-9)
    assert r.esv == pytest.approx(r.energy_kwh * r.slav)


def test_strict_charges_standby_and_meters_the_whole_day(tmp_path):
    base, day = write_day(tmp_path, [40])
    r = run(day, "dvfs", hosts=2, workloads_dir=base, accounting="strict", limit_s=3600)
    # Host 0 has no VM: suspended from t = 0. Host 1 runs the VM from 0 to 3600 s.
    expected_j = STRICT.standby_power_w * 3600 + spec(G5, 1000 / 5320) * 3600
    assert r.energy_kwh == pytest.approx(expected_j / 3.6e6, rel=1e-9)
    assert r.accounting == "strict" and CLOUDSIM.zero_util_is_off and not STRICT.zero_util_is_off


def test_strict_wakes_a_sleeping_destination_before_copying(tmp_path):
    # VM0 (2500 MIPS, 870 MB) at 40 % moves from host 1 to sleeping host 3 at 300.1 s:
    # host 3 wakes for 30 s, then the copy takes 870 / 62.5 = 13.92 s at 90 %.
    base, day = write_day(tmp_path, [40])
    policy = Scripted([1], {1: [(0, 3)]})
    r = run(day, policy, hosts=4, workloads_dir=base, accounting="strict", limit_s=3600)
    assert r.migrations == 1
    assert r.pdm == pytest.approx(0.1 * 13.92 / 3600)
    assert r.slatah == 0.0
    # Beside staying put the move costs at least the wake: 30 s at peak instead of standby
    # (plus the copy's CPU on both ends and two hosts on while it lasts).
    stay = run(day, Scripted([1]), hosts=4, workloads_dir=base, accounting="strict", limit_s=3600)
    assert r.energy_kwh - stay.energy_kwh > 30 * (135 - STRICT.standby_power_w) / 3.6e6


def test_strict_rejects_a_migration_without_ram(tmp_path):
    # Host 3 (G5) holds VM1 (870 MB) and VM4 (1740 MB): VM2 (1740 MB) would need 4350 MB of 4096.
    # CloudSim never checks RAM after creation, so there the move goes ahead.
    base, day = write_day(tmp_path, [10, 10, 10, 10, 10, 10, 10, 10])   # types 0,0,1,1,2,2,3,3
    placement = [1, 3, 1, 5, 3, 5, 0, 0]
    moves = {1: [(2, 3)]}
    strict = run(day, Scripted(placement, moves), hosts=6, workloads_dir=base, accounting="strict",
                 limit_s=900)
    loose = run(day, Scripted(placement, moves), hosts=6, workloads_dir=base, limit_s=900)
    assert (strict.migrations, strict.migrations_rejected) == (0, 1)
    assert (loose.migrations, loose.migrations_rejected) == (1, 0)
