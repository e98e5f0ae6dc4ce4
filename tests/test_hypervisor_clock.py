"""Scaled clock: wall seconds to model seconds and back."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hypervisor.clock import ScaledClock


def test_scale_288_plays_a_day_in_five_minutes():
    clock = ScaledClock(origin_wall_s=1000.0, scale=288.0)
    assert clock.model_time(1000.0) == 0.0
    assert clock.model_time(1300.0) == 86400.0
    assert clock.wall_time(86400.0) == 1300.0


def test_model_origin_offsets_model_time():
    clock = ScaledClock(origin_wall_s=50.0, scale=2.0, origin_model_s=3600.0)
    assert clock.model_time(60.0) == 3620.0
    assert clock.wall_time(3600.0) == 50.0


@given(
    origin_wall_s=st.floats(-1e9, 1e9),
    scale=st.floats(1e-3, 1e4),
    origin_model_s=st.floats(-1e9, 1e9),
    wall_s=st.floats(-1e9, 1e9),
)
def test_wall_to_model_to_wall_round_trips(origin_wall_s, scale, origin_model_s, wall_s):
    clock = ScaledClock(origin_wall_s, scale, origin_model_s)
    assert clock.wall_time(clock.model_time(wall_s)) == pytest.approx(wall_s, rel=1e-9, abs=1e-3)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, math.nan])
def test_scale_must_be_positive_and_finite(scale):
    with pytest.raises(ValueError, match="scale"):
        ScaledClock(origin_wall_s=0.0, scale=scale)


def test_origin_must_be_finite():
    with pytest.raises(ValueError, match="origin_wall_s"):
        ScaledClock(origin_wall_s=math.inf)
