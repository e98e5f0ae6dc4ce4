"""`shoal bench migration`: two real agent processes and a raw socket reference.

Timings are not asserted (they are measurements); what is asserted is that the
run migrates the domain, that both images hashed equal, that the reference
carried the same bytes over the same kind of transport, and the report's shape.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.runtime.bench import raw_tcp_mb_s
from agent.runtime.pki import issue_node_files

REPO = Path(__file__).resolve().parent.parent
KEYS = {"size_mib", "dirty_rate_mib_s", "transport", "throughput_mb_s", "raw_tcp_mb_s", "ratio", "rounds",
        "downtime_ms", "transfer_s", "prepare_s", "total_s", "throughput_total_mb_s", "ratio_total", "bytes_sent",
        "stop_reason", "hash_equal"}


@pytest.mark.parametrize("extra,transport", [((), "mtls"), (("--insecure",), "plaintext")])
def test_bench_migration_reports_a_verified_migration(extra: tuple[str, ...], transport: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "shoal", "bench", "migration", "--size-mib", "16",
                           "--dirty-rate-mib-s", "20", "--json", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert KEYS <= set(report)
    assert report["transport"] == transport
    assert report["hash_equal"] is True
    assert report["rounds"] >= 1
    assert report["bytes_sent"] >= 16 * 1024 * 1024  # round 1 sends every page
    assert report["throughput_mb_s"] > 0 and report["raw_tcp_mb_s"] > 0
    assert report["ratio"] == pytest.approx(report["throughput_mb_s"] / report["raw_tcp_mb_s"], abs=0.01)
    # The transfer phase and PREPARE are parts of the whole migration, and each
    # throughput is the bytes over its own span (the values are rounded).
    assert 0 < report["transfer_s"] <= report["total_s"]
    assert 0 < report["prepare_s"] and report["prepare_s"] + report["transfer_s"] <= report["total_s"] + 0.002
    assert report["throughput_mb_s"] == pytest.approx(report["bytes_sent"] / report["transfer_s"] / 1e6, rel=0.05)
    assert report["throughput_total_mb_s"] == pytest.approx(report["bytes_sent"] / report["total_s"] / 1e6,
                                                            rel=0.05)
    assert report["throughput_total_mb_s"] <= report["throughput_mb_s"] * 1.05
    assert report["ratio_total"] == pytest.approx(report["throughput_total_mb_s"] / report["raw_tcp_mb_s"], abs=0.01)


def test_raw_reference_runs_mutual_tls_with_the_node_files(tmp_path: Path) -> None:
    files = issue_node_files(tmp_path, tmp_path / "node")
    assert asyncio.run(raw_tcp_mb_s(4 * 1024 * 1024, files)) > 0


def test_bench_migration_refuses_a_bad_size() -> None:
    proc = subprocess.run([sys.executable, "-m", "shoal", "bench", "migration", "--size-mib", "99999"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "--size-mib" in proc.stderr
