"""Crash matrix (multi-process, hard exit): kill the source, then separately the
target, at each phase of a live migration; restart the dead agent from its
journal; the domain must end up running on exactly one node at the highest
epoch seen, and a reservation that never got its commit must have expired.

The crash is injected with SHOAL_CRASH_AT (agent/runtime/agent.py), which
calls os._exit at that point: no cleanup runs, exactly as with SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.adapters.control_client import ControlClient
from agent.runtime.launcher import Node, read_cluster_file, spawn_agent, wait_ready, write_cluster_file
from tests.test_cluster_multiprocess import alive, kill_all, pids_in

# (crash point, where the domain must end: "source" keeps it at epoch 1, "target" holds it at 2,
#  "either" when the crash races the commit and both outcomes are correct)
CASES = [
    ("source:after_prepare", "source"), ("source:mid_precopy", "source"), ("source:after_pause", "source"),
    ("source:after_commit_sent", "either"), ("source:after_commit_ack", "target"),
    ("target:after_prepare", "source"), ("target:mid_precopy", "source"), ("target:after_pause", "source"),
    ("target:after_commit_sent", "target"), ("target:after_commit_ack", "target"),
]
LEASE_MS = 2000
CONFIG = (f"reservation_lease_ms = {LEASE_MS}\nrpc_timeout_ms = 1000\nimage_real_bytes_max = 1048576\n"
          "high_watermark = 1.0\nmean_margin = 0.99\n")  # no balancing moves: only the one we ask for


def shoal(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


async def settle(source: Node, target: Node, domain: str, deadline_s: float = 40.0) -> dict[str, dict]:
    """Waits until no handoff is in flight, one copy runs, and no reservation is left."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        out = {}
        for node in (source, target):
            client = ControlClient(node.address)
            try:
                out[node.name] = await client.status(timeout_s=2)
            except Exception:  # noqa: BLE001 - still restarting
                pass
            finally:
                await client.close()
        last = out
        if len(out) == 2 and not any(s["migrations"] for s in out.values()):
            copies = [(n, d) for n, s in out.items() for d in s["domains"] if d["id"] == domain]
            used = {n: s["memory_used_mib"] for n, s in out.items()}
            if len(copies) == 1 and copies[0][1]["state"] == "running":
                holder = copies[0][0]
                other = "target" if holder == "source" else "source"
                if used[other] == 0:  # any reservation there expired or was released
                    return out
        await asyncio.sleep(0.2)
    raise AssertionError(f"did not settle within {deadline_s} s: {json.dumps(last)[:3000]}")


@pytest.mark.parametrize("point,ends_on", CASES)
def test_crash_at_every_handoff_phase_leaves_exactly_one_copy(tmp_path, monkeypatch, point, ends_on):
    state = tmp_path / "crash"
    # The cluster runs mutual TLS; every client here (CLI subprocesses, ControlClient) uses its operator.
    monkeypatch.setenv("SHOAL_CLIENT_CONFIG", str(state / "client.toml"))
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG)
    env = {**os.environ, "SHOAL_CRASH_AT": point}
    try:
        up = shoal("cluster", "up", "--nodes", "2", "--domains", "0", "--detach", "--state-dir", str(state),
                   "--config", str(config), env=env, timeout=120)
        assert up.returncode == 0, up.stderr[-3000:]
        _, (source, target) = read_cluster_file(str(state))
        source.name, target.name = "source", "target"
        made = shoal("domain", "create", "--target", source.address, "--id", "vm", "--vcpus", "1",
                     "--memory-mib", "256", timeout=30)
        assert made.returncode == 0, made.stderr

        deadline = time.monotonic() + 20
        while True:  # the source must know the target before it will migrate to it
            st = json.loads(shoal("status", "--target", source.address, "--json", timeout=30).stdout)
            if any(p["id"] == target.node_id for p in st["peers"]):
                break
            assert time.monotonic() < deadline, "the source never learned the target"
            time.sleep(0.2)
        # In the background: when the target dies after the pause, the source keeps
        # the call open while it resolves the handoff (until the target is back).
        migrating = subprocess.Popen([sys.executable, "-m", "shoal", "domain", "migrate", "--target", source.address,
                                      "--domain", "vm", "--to", target.node_id], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        victim = source if point.startswith("source") else target
        deadline = time.monotonic() + 20
        while alive(victim.pid):
            assert time.monotonic() < deadline, f"{point}: the {victim.name} never crashed"
            time.sleep(0.05)

        # Restart the victim from its state dir (its journal), without the crash hook.
        survivor = target if victim is source else source
        proc = spawn_agent(victim.name, victim.cmd, [survivor.address], Path(victim.state_dir), detach=True)
        victim.proc = proc
        asyncio.run(wait_ready([victim]))
        victim.proc = None
        write_cluster_file(state, [source, target])

        final = asyncio.run(settle(source, target, "vm"))
        migrating.wait(timeout=30)
        holder = next(n for n, s in final.items() for d in s["domains"] if d["id"] == "vm")
        epoch = next(d["epoch"] for s in final.values() for d in s["domains"] if d["id"] == "vm")
        if ends_on != "either":
            assert holder == ends_on, f"{point}: domain on {holder}, expected {ends_on}"
        assert epoch == (1 if holder == "source" else 2)
        # no stale copy anywhere, paused or not
        assert sum(d["id"] == "vm" for s in final.values() for d in s["domains"]) == 1
    finally:
        if "migrating" in locals() and migrating.poll() is None:
            migrating.kill()
        shoal("cluster", "down", "--state-dir", str(state), timeout=60)
        kill_all(pids_in(state) if state.exists() else [])
