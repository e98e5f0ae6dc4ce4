"""Workload specs (text form, validation) and every demand-source kind."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypervisor.workload import WorkloadError, WorkloadSpec, make_demand

PLANETLAB_DIR = Path(__file__).parent / "data" / "planetlab"
# First samples 24, 34, 29 ... last sample 51 (percent, 300 s apart).
VARIED_TRACE = PLANETLAB_DIR / "146-179_surfsnel_dsl_internl_net_colostate_557"
# A real PlanetLab file name with a space in it.
SPACED_TRACE = PLANETLAB_DIR / "ttu2-1_nodes_planet-lab_org_ rnp_dcc_ufjf"


def read_samples(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


# -- constant, sine, flash ----------------------------------------------------


def test_constant_returns_its_level_at_every_time():
    source = make_demand(WorkloadSpec.parse("constant:level=0.7"))
    assert [source.fraction_at(t) for t in (0.0, 1.5, 1e6)] == [0.7, 0.7, 0.7]


def test_sine_is_at_mean_at_phase_and_at_peak_a_quarter_period_later():
    source = make_demand(WorkloadSpec.parse("sine:mean=0.5,amplitude=0.3,period_s=100,phase_s=10"))
    assert source.fraction_at(10.0) == pytest.approx(0.5)
    assert source.fraction_at(35.0) == pytest.approx(0.8)
    assert source.fraction_at(85.0) == pytest.approx(0.2)


def test_diurnal_sine_repeats_after_one_day():
    source = make_demand(WorkloadSpec.parse("sine:period_s=86400"))
    for t in (0.0, 3600.0, 50_000.0):
        assert source.fraction_at(t + 86400.0) == pytest.approx(source.fraction_at(t))
    assert source.fraction_at(21600.0) == pytest.approx(0.8)  # defaults: mean 0.5, amplitude 0.3


def test_sine_exceeding_the_unit_range_is_clamped():
    source = make_demand(WorkloadSpec.parse("sine:mean=0.9,amplitude=0.5,period_s=4"))
    assert source.fraction_at(1.0) == 1.0
    assert source.fraction_at(3.0) == pytest.approx(0.4)


def test_flash_rises_holds_peak_and_falls_back_to_base():
    source = make_demand(WorkloadSpec.parse("flash:base=0.2,peak=1,start_s=60,duration_s=30,ramp_s=10"))
    assert source.fraction_at(0.0) == 0.2
    assert source.fraction_at(59.9) == 0.2
    assert source.fraction_at(65.0) == pytest.approx(0.6)  # half-way up the ramp
    assert source.fraction_at(70.0) == 1.0
    assert source.fraction_at(99.9) == 1.0
    assert source.fraction_at(105.0) == pytest.approx(0.6)  # half-way down
    assert source.fraction_at(110.0) == 0.2
    assert source.fraction_at(1e6) == 0.2


def test_flash_without_ramp_is_a_step():
    source = make_demand(WorkloadSpec.parse("flash:base=0.1,peak=0.9,start_s=10,duration_s=5,ramp_s=0"))
    assert [source.fraction_at(t) for t in (9.999, 10.0, 14.999, 15.0)] == [0.1, 0.9, 0.9, 0.1]


# -- walk -----------------------------------------------------------------------


def test_walk_starts_at_start_and_moves_at_most_step_per_interval():
    source = make_demand(WorkloadSpec.parse("walk:start=0.5,step=0.05,interval_s=10,seed=7"))
    assert source.fraction_at(0.0) == 0.5
    levels = [source.fraction_at(k * 10.0) for k in range(2000)]
    assert all(abs(b - a) <= 0.05 + 1e-12 for a, b in zip(levels, levels[1:]))
    assert len(set(levels)) > 1000  # it really moves


def test_walk_gives_the_same_value_whatever_order_times_are_asked_in():
    text = "walk:start=0.3,step=0.2,interval_s=7,seed=42"
    forward, backward = make_demand(WorkloadSpec.parse(text)), make_demand(WorkloadSpec.parse(text))
    times = [k * 3.3 for k in range(500)]
    ahead = [forward.fraction_at(t) for t in times]
    behind = [backward.fraction_at(t) for t in reversed(times)]
    assert ahead == list(reversed(behind))


def test_walks_with_different_seeds_differ():
    one = make_demand(WorkloadSpec.parse("walk:seed=1"))
    two = make_demand(WorkloadSpec.parse("walk:seed=2"))
    assert [one.fraction_at(t) for t in range(0, 1000, 10)] != [two.fraction_at(t) for t in range(0, 1000, 10)]


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(0.0, 1.0),
    step=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
    t_s=st.floats(-1e3, 1e5, allow_nan=False),
)
def test_walk_stays_within_unit_range(start, step, seed, t_s):
    spec = WorkloadSpec("walk", (("start", start), ("step", step), ("interval_s", 10.0), ("seed", float(seed))))
    assert 0.0 <= make_demand(spec).fraction_at(t_s) <= 1.0


# -- trace ---------------------------------------------------------------------


def trace_spec(path: Path, interval_s: float = 300) -> WorkloadSpec:
    return WorkloadSpec.parse(f"trace:interval_s={interval_s},path={path}")


def test_trace_at_sample_times_is_the_percent_over_100():
    samples = read_samples(VARIED_TRACE)
    source = make_demand(trace_spec(VARIED_TRACE))
    assert len(samples) == 288
    assert [source.fraction_at(300.0 * k) for k in range(288)] == pytest.approx([s / 100 for s in samples])


def test_trace_interpolates_linearly_between_samples():
    source = make_demand(trace_spec(VARIED_TRACE))
    assert source.fraction_at(150.0) == pytest.approx((24 + 34) / 200)
    assert source.fraction_at(375.0) == pytest.approx((34 * 0.75 + 29 * 0.25) / 100)


def test_trace_wraps_past_its_end_and_last_interval_leads_back_to_first_sample():
    source = make_demand(trace_spec(VARIED_TRACE))
    day_s = 288 * 300.0
    assert source.fraction_at(day_s) == pytest.approx(0.24)
    assert source.fraction_at(3 * day_s + 450.0) == pytest.approx(source.fraction_at(450.0))
    assert source.fraction_at(day_s - 150.0) == pytest.approx((51 + 24) / 200)


def test_trace_file_name_with_space_parses_and_reads():
    spec = trace_spec(SPACED_TRACE)
    assert spec.path == str(SPACED_TRACE)
    assert make_demand(spec).fraction_at(0.0) == pytest.approx(read_samples(SPACED_TRACE)[0] / 100)


@pytest.mark.parametrize("path", sorted(PLANETLAB_DIR.iterdir()), ids=lambda p: p.name)
def test_every_bundled_planetlab_trace_has_the_files_daily_mean(path):
    samples = read_samples(path)
    source = make_demand(trace_spec(path))
    values = [source.fraction_at(300.0 * k) for k in range(288)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert math.fsum(values) / 288 == pytest.approx(sum(samples) / 288 / 100)


def test_trace_values_above_100_percent_are_clamped_to_one(tmp_path):
    path = tmp_path / "hot"
    path.write_text("150\n50\n")
    source = make_demand(trace_spec(path, interval_s=10))
    assert source.fraction_at(0.0) == 1.0
    assert source.fraction_at(10.0) == 0.5


def test_trace_path_may_contain_commas_and_equals_signs(tmp_path):
    path = tmp_path / "a,b=c d"
    shutil.copy(VARIED_TRACE, path)
    spec = WorkloadSpec.parse(f"trace:interval_s=60,path={path}")
    assert spec.path == str(path)
    assert spec.param("interval_s", 0.0) == 60.0
    assert WorkloadSpec.parse(spec.to_text()) == spec


def test_trace_with_a_non_number_line_names_the_line(tmp_path):
    path = tmp_path / "bad"
    path.write_text("10\n20\nabc\n")
    with pytest.raises(WorkloadError, match="line 3"):
        make_demand(trace_spec(path))


def test_empty_trace_file_is_refused(tmp_path):
    path = tmp_path / "empty"
    path.write_text("")
    with pytest.raises(WorkloadError, match="no samples"):
        make_demand(trace_spec(path))


# -- text form -----------------------------------------------------------------


def test_to_text_prints_whole_numbers_without_decimal_point():
    spec = WorkloadSpec.parse("sine:mean=0.5,amplitude=0.3,period_s=86400,phase_s=0")
    assert spec.to_text() == "sine:mean=0.5,amplitude=0.3,period_s=86400,phase_s=0"
    assert spec.param("period_s", 1.0) == 86400.0


def test_kind_without_params_uses_the_defaults():
    spec = WorkloadSpec.parse("flash")
    assert spec == WorkloadSpec("flash")
    assert spec.to_text() == "flash"
    assert make_demand(spec).fraction_at(0.0) == 0.2
    assert make_demand(spec).fraction_at(70.0) == 0.95


def test_param_returns_default_when_absent():
    spec = WorkloadSpec.parse("walk:step=0.1")
    assert spec.param("step", 0.0) == 0.1
    assert spec.param("seed", 99.0) == 99.0


_UNIT = st.floats(0.0, 1.0)
_POSITIVE = st.floats(1e-3, 1e9)
_ANY = st.floats(-1e9, 1e9)
_PARAM_VALUES = {
    "constant": {"level": _UNIT},
    "sine": {"mean": _UNIT, "amplitude": _UNIT, "period_s": _POSITIVE, "phase_s": _ANY},
    "walk": {"start": _UNIT, "step": _UNIT, "interval_s": _POSITIVE, "seed": st.integers(0, 2**53).map(float)},
    "flash": {
        "base": _UNIT,
        "peak": _UNIT,
        "start_s": _ANY,
        "duration_s": st.floats(0.0, 1e9),
        "ramp_s": st.floats(0.0, 1e9),
    },
}


@st.composite
def synthetic_specs(draw):
    kind = draw(st.sampled_from(sorted(_PARAM_VALUES)))
    names = draw(st.permutations(sorted(_PARAM_VALUES[kind])))
    chosen = names[: draw(st.integers(0, len(names)))]
    return WorkloadSpec(kind, tuple((name, draw(_PARAM_VALUES[kind][name])) for name in chosen))


@given(synthetic_specs())
def test_parse_of_to_text_gives_back_the_same_spec(spec):
    assert WorkloadSpec.parse(spec.to_text()) == spec


@given(st.floats(1e-3, 1e6))
def test_trace_spec_round_trips_through_text(interval_s):
    spec = WorkloadSpec("trace", (("interval_s", interval_s),), str(SPACED_TRACE))
    assert WorkloadSpec.parse(spec.to_text()) == spec


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no kind"),
        ("burst:level=1", "unknown workload kind 'burst'"),
        ("constant:lvl=0.5", "unknown param 'lvl'"),
        ("constant:level=0.5,level=0.6", "given twice"),
        ("constant:level=nan", "level must be finite"),
        ("constant:level=inf", "level must be finite"),
        ("constant:level=1.5", "level must be <= 1"),
        ("constant:level=-0.1", "level must be >= 0"),
        ("constant:level=high", "level is not a number"),
        ("constant:level", "expected 'name=value'"),
        ("constant:level=0.5,", "expected 'name=value'"),
        ("sine:period_s=0", "period_s must be > 0"),
        ("walk:seed=1.5", "seed must be an integer"),
        ("walk:step=2", "step must be <= 1"),
        ("flash:duration_s=-1", "duration_s must be >= 0"),
        ("trace:interval_s=300", "path= is required"),
        ("trace:interval_s=300,path=", "path= is empty"),
        ("trace:interval_s=300,path=/no/such/trace file", "file not found: '/no/such/trace file'"),
        ("trace:interval_s=0,path=/no/such/file", "interval_s must be > 0"),
        ("constant:path=/etc/hostname", "takes no path"),
    ],
)
def test_bad_spec_raises_workload_error_naming_the_problem(text, problem):
    with pytest.raises(WorkloadError) as caught:
        WorkloadSpec.parse(text)
    assert problem in str(caught.value)


def test_path_before_other_params_is_refused_with_a_hint():
    text = f"trace:path={VARIED_TRACE},interval_s=300"
    with pytest.raises(WorkloadError, match="must be the last param"):
        WorkloadSpec.parse(text)


def test_workload_error_is_a_value_error():
    assert issubclass(WorkloadError, ValueError)


def test_make_demand_refuses_a_directly_built_bad_spec():
    with pytest.raises(WorkloadError, match="unknown param 'level'"):
        make_demand(WorkloadSpec("sine", (("level", 0.5),)))
