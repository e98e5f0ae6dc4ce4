"""`shoal experiment planetlab` on the small slice of real traces in tests/data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SLICE = Path(__file__).resolve().parent / "data" / "planetlab_slice"


def shoal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shoal", "experiment", "planetlab", "--workloads-dir", str(SLICE),
                           *args], capture_output=True, text=True, timeout=300)


def test_one_policy_prints_the_metrics_as_fractions_in_json():
    out = shoal("--day", "20110303", "--policy", "consolidate", "--hosts", "40", "--hours", "4", "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    for key in ("day", "policy", "hosts", "vms", "energy_kwh", "migrations", "slatah", "pdm", "slav", "esv",
                "sla_overall", "wall_seconds"):
        assert key in r
    assert r["policy"].startswith("consolidate") and r["hosts"] == 40 and r["vms"] > 10
    assert 0 <= r["slatah"] <= 1 and 0 <= r["pdm"] <= 1 and abs(r["slav"] - r["slatah"] * r["pdm"]) < 1e-12
    assert r["centralized"] is False


def test_compare_prints_every_policy_and_plots_a_png(tmp_path):
    png = tmp_path / "day.png"
    out = shoal("--day", "20110303", "--compare", "--hosts", "40", "--hours", "3", "--plot", str(png))
    assert out.returncode == 0, out.stderr
    for policy in ("npa", "dvfs", "thr-mmt", "lr-mmt", "drs", "balance", "consolidate"):
        assert f"\n{policy} " in out.stdout
    assert "decentralized" in out.stdout and "centralized" in out.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_bad_policy_and_missing_day_fail_clearly():
    bad = shoal("--policy", "telepathy", "--hosts", "4", "--hours", "1")
    assert bad.returncode == 2 and "unknown policy" in bad.stderr
    missing = shoal("--day", "19990101", "--hosts", "4", "--hours", "1")
    assert missing.returncode != 0 and "19990101" in missing.stderr
