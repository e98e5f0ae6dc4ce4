"""Lifeguard under CPU starvation: 16 agents beside a busy-loop process for
2 minutes on this 2-core machine, and no live agent is ever declared dead."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from agent.adapters.client_config import load_client_config
from agent.adapters.control_client import ControlClient
from tests.test_cluster_multiprocess import kill_all, pids_in, shoal

NODES = 16
STARVE_S = 120.0


async def watch(state) -> tuple[set[tuple[str, str]], int, dict]:
    cluster = json.loads((state / "cluster.json").read_text())
    operator = load_client_config(cluster["client_config"])  # agents run mutual TLS, as by default
    clients = [ControlClient(n["address"], operator) for n in cluster["nodes"]]
    false_dead: set[tuple[str, str]] = set()
    polls = 0
    try:
        deadline = time.monotonic() + 60
        while True:  # full membership before the starvation starts
            st = await asyncio.gather(*(c.status(timeout_s=5) for c in clients))
            if all(sum(m["status"] == "alive" for m in s["members"]) == NODES for s in st):
                break
            assert time.monotonic() < deadline, "16 agents did not converge in 60 s"
            await asyncio.sleep(0.5)
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            end = time.monotonic() + STARVE_S
            while time.monotonic() < end:
                results = await asyncio.gather(*(c.status(timeout_s=10) for c in clients), return_exceptions=True)
                for s in results:
                    if isinstance(s, dict):
                        false_dead |= {(s["id"], m["id"]) for m in s["members"] if m["status"] == "dead"}
                polls += 1
                await asyncio.sleep(1.0)
        finally:
            hog.kill()
            hog.wait()
        totals: dict[str, int] = {}
        for s in await asyncio.gather(*(c.status(timeout_s=10) for c in clients)):
            for k in ("membership_suspicions_raised", "membership_refutations", "membership_false_suspicions"):
                totals[k] = totals.get(k, 0) + s["counters"].get(k, 0)
        return false_dead, polls, totals
    finally:
        for c in clients:
            await c.close()


def test_no_false_dead_verdicts_under_cpu_starvation(tmp_path):
    state = tmp_path / "starved"
    try:
        up = shoal("cluster", "up", "--nodes", str(NODES), "--domains", "32", "--placement", "random", "--detach",
                   "--state-dir", str(state), timeout=300)
        assert up.returncode == 0, up.stderr[-3000:]
        false_dead, polls, totals = asyncio.run(watch(state))
        print(f"{polls} polls over {STARVE_S:.0f} s of starvation; {totals}")
        assert polls >= STARVE_S / 5  # the watcher itself kept running
        assert false_dead == set(), f"live agents declared dead: {sorted(false_dead)}"
        assert shoal("cluster", "down", "--state-dir", str(state), timeout=120).returncode == 0
    finally:
        if (state / "cluster.json").exists():  # a failure above: stop the agents and the broker too
            shoal("cluster", "down", "--state-dir", str(state), timeout=120)
        kill_all(pids_in(state) if state.exists() else [])
