"""Telemetry from real agent processes: MQTT (embedded amqtt and Mosquitto),
a broker that dies and comes back, and Prometheus metrics linted by promtool."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.request

import aiomqtt
import pytest

from tests.conftest import wait_until_sync
from tests.test_cluster_multiprocess import kill_all, pids_in, shoal


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mosquitto(tmp_path, port: int) -> subprocess.Popen:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    assert shutil.which(exe) or exe, "mosquitto is missing: `make system-deps` installs it"
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_until_sync(listening, 10, "mosquitto to listen")
    return proc


def create_hot_domains(address: str, count: int, prefix: str) -> None:
    for i in range(count):
        out = shoal("domain", "create", "--target", address, "--id", f"{prefix}-{i}", "--vcpus", "2", "--memory-mib",
                    "256", "--workload", "constant:level=0.9", timeout=30)
        assert out.returncode == 0, out.stderr


async def collect(host: str, port: int, cluster: str, until, timeout_s: float, on_ready=None) -> list[tuple[str, dict]]:
    got: list[tuple[str, dict]] = []
    async with aiomqtt.Client(host, port) as client:
        await client.subscribe(f"shoal/{cluster}/+/state")
        await client.subscribe(f"shoal/{cluster}/+/events")
        if on_ready is not None:
            await asyncio.to_thread(on_ready)
        async with asyncio.timeout(timeout_s):
            async for msg in client.messages:
                got.append((str(msg.topic), json.loads(msg.payload)))
                if until(got):
                    return got
    return got


def test_embedded_broker_carries_state_and_migration_events(tmp_path, monkeypatch):
    state = tmp_path / "tele"
    monkeypatch.setenv("SHOAL_CLIENT_CONFIG", str(state / "client.toml"))  # mutual TLS: the cluster's operator
    try:
        up = shoal("cluster", "up", "--nodes", "3", "--domains", "0", "--detach", "--state-dir", str(state),
                   "--cluster", "tele", timeout=120)
        assert up.returncode == 0, up.stderr[-3000:]
        cluster = json.loads((state / "cluster.json").read_text())
        host, port = cluster["mqtt"].rsplit(":", 1)
        ids = {n["id"] for n in cluster["nodes"]}

        def done(got) -> bool:
            states = {json.loads(json.dumps(p))["node"] for t, p in got if t.endswith("/state")}
            finished = [p for t, p in got if t.endswith("/events") and p["event"] == "migration_finished"]
            return states == ids and bool(finished)

        got = asyncio.run(collect(host, int(port), "tele", done, 40,
                                  on_ready=lambda: create_hot_domains(cluster["nodes"][0]["address"], 10, "hot")))
        finished = next(p for t, p in got if t.endswith("/events") and p["event"] == "migration_finished")
        assert finished["rounds"] >= 1 and finished["bytes"] > 0 and "downtime_ms" in finished
        state_msg = next(p for t, p in got if t.endswith("/state"))
        assert {"cpu_utilization", "domains", "members"} <= set(state_msg)
    finally:
        shoal("cluster", "down", "--state-dir", str(state), timeout=60)
        kill_all(pids_in(state) if state.exists() else [])


def test_mosquitto_broker_and_mosquitto_sub_see_agent_state(tmp_path):
    port = free_port()
    broker = start_mosquitto(tmp_path, port)
    state = tmp_path / "mosq"
    try:
        up = shoal("cluster", "up", "--nodes", "2", "--domains", "4", "--detach", "--state-dir", str(state),
                   "--mqtt", f"mqtt://127.0.0.1:{port}", "--cluster", "mosq", timeout=120)
        assert up.returncode == 0, up.stderr[-3000:]
        sub = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", "shoal/mosq/+/state",
                              "-C", "2", "-W", "20"], capture_output=True, text=True, timeout=30)
        assert sub.returncode == 0, sub.stderr
        nodes = {json.loads(line)["node"] for line in sub.stdout.splitlines()}
        assert nodes <= {n["id"] for n in json.loads((state / "cluster.json").read_text())["nodes"]} and nodes
    finally:
        shoal("cluster", "down", "--state-dir", str(state), timeout=60)
        kill_all(pids_in(state) if state.exists() else [])
        broker.kill()
        broker.wait()


def test_agents_keep_balancing_while_the_broker_is_down_and_report_again_when_it_returns(tmp_path, monkeypatch):
    port = free_port()
    broker = start_mosquitto(tmp_path, port)
    state = tmp_path / "outage"
    monkeypatch.setenv("SHOAL_CLIENT_CONFIG", str(state / "client.toml"))  # mutual TLS: the cluster's operator
    try:
        up = shoal("cluster", "up", "--nodes", "3", "--domains", "0", "--detach", "--state-dir", str(state),
                   "--mqtt", f"mqtt://127.0.0.1:{port}", "--cluster", "outage", timeout=120)
        assert up.returncode == 0, up.stderr[-3000:]
        cluster = json.loads((state / "cluster.json").read_text())
        broker.kill()
        broker.wait()
        hot = cluster["nodes"][0]
        create_hot_domains(hot["address"], 10, "hot")

        def balanced() -> bool:
            st = json.loads(shoal("status", "--target", hot["address"], "--json", timeout=30).stdout)
            return st["cpu_utilization"] <= 0.8
        wait_until_sync(balanced, 30, "balancing with the broker down")
        broker = start_mosquitto(tmp_path, port)
        ids = {n["id"] for n in cluster["nodes"]}
        got = asyncio.run(collect("127.0.0.1", port, "outage",
                                  lambda g: {p["node"] for t, p in g if t.endswith("/state")} == ids, 40))
        assert {p["node"] for t, p in got if t.endswith("/state")} == ids
    finally:
        shoal("cluster", "down", "--state-dir", str(state), timeout=60)
        kill_all(pids_in(state) if state.exists() else [])
        broker.kill()
        broker.wait()


def test_promtool_accepts_a_live_agents_metrics(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make system-deps` installs Debian's prometheus package")
    state = tmp_path / "prom"
    try:
        up = shoal("cluster", "up", "--nodes", "2", "--domains", "6", "--placement", "single", "--detach",
                   "--state-dir", str(state), timeout=120)
        assert up.returncode == 0, up.stderr[-3000:]
        node = json.loads((state / "cluster.json").read_text())["nodes"][0]
        url = f"http://{node['metrics']}/metrics"

        def scrape() -> bytes:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.read()
        def ready() -> bool:
            body = scrape()
            return b"shoal_migrations_succeeded_total" in body and b'shoal_members{status="alive"} 2.0' in body
        wait_until_sync(ready, 20, "migration and membership metrics")
        body = scrape()
        lint = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
        assert lint.returncode == 0, lint.stdout + lint.stderr
        assert b"shoal_migration_duration_seconds_bucket" in body
    finally:
        shoal("cluster", "down", "--state-dir", str(state), timeout=60)
        kill_all(pids_in(state) if state.exists() else [])
