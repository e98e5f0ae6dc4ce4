"""PlanetLab traces, VM/host catalogue and the SPECpower tables, checked by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiment.planetlab.catalog import (G4_POWER, G5_POWER, HOST_TYPES, host_type_for, migration_time_s,
                                          vm_type_for)
from experiment.planetlab.workload import (ENV_DIR, default_workloads_dir, load_day, parse_trace,
                                           trace_files, utilization_at)

SLICE = Path(__file__).parent / "data" / "planetlab_slice"


def test_slice_loads_in_sorted_name_order_including_names_with_spaces():
    traces = load_day("20110303", SLICE)
    names = [t.name for t in traces]
    assert len(traces) == 41
    assert names == sorted(names)
    assert "pl2_eng_monash_edu_au_ rnp_dcc_ufjf" in names
    assert [p.name for p in trace_files(SLICE / "20110303")] == names


def test_a_trace_has_289_fractions_with_the_last_sample_repeated():
    trace = load_day("20110303", SLICE)[0]
    raw = (SLICE / "20110303" / trace.name).read_text().split()
    assert len(trace.samples) == 289
    assert trace.samples[0] == int(raw[0]) / 100.0
    assert trace.samples[287] == int(raw[287]) / 100.0
    assert trace.samples[288] == trace.samples[287]


def test_utilization_interpolates_linearly_between_300_s_samples():
    samples = [0.0] * 289
    samples[1], samples[2] = 0.2, 0.5
    assert utilization_at(samples, 300.0) == 0.2
    assert utilization_at(samples, 450.0) == pytest.approx(0.35)
    # CloudSim's ticks fall at 300.1 s: a tenth of a second past the sample.
    assert utilization_at(samples, 300.1) == pytest.approx(0.2 + 0.3 * 0.1 / 300)
    assert utilization_at(samples, 600.0) == 0.5


def test_parse_rejects_a_short_or_out_of_range_trace():
    with pytest.raises(ValueError, match="287 samples"):
        parse_trace("short", "5\n" * 287)
    with pytest.raises(ValueError, match="outside"):
        parse_trace("big", "5\n" * 287 + "101\n")


def test_missing_day_names_the_environment_variable(tmp_path):
    with pytest.raises(FileNotFoundError, match=ENV_DIR):
        load_day("19990101", tmp_path)


def test_default_workloads_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    assert default_workloads_dir() == tmp_path
    monkeypatch.delenv(ENV_DIR)
    assert default_workloads_dir().parts[-3:] == ("shared", "workloads", "planetlab")


def test_vm_i_has_type_i_over_ceil_n_over_4():
    # N = 10: ceil(10 / 4) = 3 VMs per type, the last type gets one.
    assert [vm_type_for(i, 10).mips for i in range(10)] == [2500, 2500, 2500, 2000, 2000, 2000,
                                                           1000, 1000, 1000, 500]
    assert [vm_type_for(i, 10).ram_mb for i in (0, 3, 6, 9)] == [870, 1740, 1740, 613]
    # The day of the paper: 1052 VMs, 263 of each type.
    assert vm_type_for(262, 1052).mips == 2500 and vm_type_for(263, 1052).mips == 2000


def test_hosts_alternate_g4_and_g5():
    assert [host_type_for(i).name for i in range(4)] == ["G4", "G5", "G4", "G5"]
    assert [h.total_mips for h in HOST_TYPES] == [3720.0, 5320.0]
    assert all(h.ram_mb == 4096 and h.pes == 2 for h in HOST_TYPES)


def test_specpower_tables_interpolate_linearly_between_10_percent_steps():
    assert G4_POWER.watts(0.0) == 86.0 and G4_POWER.watts(1.0) == 117.0
    assert G5_POWER.watts(0.0) == 93.7 and G5_POWER.watts(1.0) == 135.0
    assert G4_POWER.watts(0.55) == pytest.approx(102 + 0.5 * (106 - 102))
    assert G5_POWER.watts(0.25) == pytest.approx(101 + 0.5 * (105 - 101))
    assert G5_POWER.watts(0.3) == pytest.approx(105.0)
    with pytest.raises(ValueError):
        G4_POWER.watts(1.2)


def test_migration_lasts_ram_over_62_5_mb_per_s():
    assert migration_time_s(1740) == pytest.approx(27.84)
    assert migration_time_s(613) == pytest.approx(9.808)
