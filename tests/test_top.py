"""`shoal top` renders the cluster in a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

from agent.runtime.top import diff_events, rows
from tests.test_cluster_multiprocess import kill_all, pids_in, shoal


def run_in_pty(argv: list[str], timeout_s: float = 30.0) -> str:
    """Runs argv with a pseudo-terminal as its stdout; returns what it drew."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    assert proc.returncode == 0, proc.stderr.read().decode()
    return out.decode(errors="replace")


def test_top_draws_a_row_per_node_and_events_in_a_terminal(tmp_path):
    state = tmp_path / "top"
    try:
        up = shoal("cluster", "up", "--nodes", "3", "--domains", "6", "--placement", "single", "--detach",
                   "--state-dir", str(state), timeout=120)
        assert up.returncode == 0, up.stderr[-3000:]
        nodes = json.loads((state / "cluster.json").read_text())["nodes"]
        screen = run_in_pty([sys.executable, "-m", "shoal", "top", "--target", nodes[0]["address"],
                             "--client-config", str(state / "client.toml"), "--interval", "0.5", "--iterations", "4"])
        assert "shoal top" in screen and "events" in screen
        for n in nodes:
            assert n["id"][:13] in screen
        assert "watching" in screen
        assert "\x1b[" in screen  # it drew with terminal escapes, as in a real terminal
    finally:
        shoal("cluster", "down", "--state-dir", str(state), timeout=60)
        kill_all(pids_in(state) if state.exists() else [])


def test_rows_and_events_come_from_status_changes():
    before = {"id": "a", "address": "x:1", "members": [{"id": "b", "status": "alive"}], "peers": [],
              "counters": {"migrations_succeeded": 1}, "domains": [], "migrations": [], "cpu_utilization": 0.5,
              "memory_utilization": 0.1}
    after = dict(before, members=[{"id": "b", "status": "dead"}], counters={"migrations_succeeded": 3,
                                                                            "migrations_failed{reason=rejected}": 2})
    lines = diff_events(before, after)
    assert "member b alive -> dead" in lines and "migrated out 2 domain(s)" in lines
    assert "2 migration(s) refused or failed" in lines
    assert [r["id"] for r in rows(after)] == ["a", "b"] and rows(after)[1]["state"] == "dead"
