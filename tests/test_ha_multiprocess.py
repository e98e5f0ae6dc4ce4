"""High availability with real agent processes (agent/runtime/ha.py, agent/core/replicas.py).

1. Eight agents, replicas 2, checkpoints every second: SIGKILL two owners; every domain they held runs
   again exactly once on a survivor, at a higher epoch, within a bound derived
   from the config (membership detection bound + replica push period + two RPC
   deadlines for the pre-restart checks + polling slack), and stays that way.
   Then one killed owner restarts from its journal (a node thought dead comes
   back) with its stale copies: it fences them, the survivors' copies stay.
2. A real partition: agents in two network namespaces joined by a veth pair;
   the link is cut, each side restarts the other side's domains, the link is
   restored, and after the heal exactly one copy of every domain remains.

Balancing is switched off by the config (watermark 1.0) so ownership only
changes through HA. Agents run mutual TLS as `cluster up` sets them up (a
throwaway CA; the test is the operator). Every process and namespace is
removed in `finally`, even on failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agent.adapters.client_config import load_client_config
from agent.adapters.control_client import ControlClient
from agent.adapters.tls import TlsFiles
from agent.core.config import AgentConfig
from agent.core.membership_config import MembershipConfig, detection_bound_s
from agent.core.replicas import buddies_for
from agent.runtime.launcher import Node, spawn_agent
from agent.runtime.pki import issue_node_files, tls_args, write_operator_config
from hypervisor.domain import DomainSpec
from hypervisor.workload import WorkloadSpec
from tests.test_cluster_multiprocess import alive, kill_all, pids_in, shoal

NODES, KILLS, DOMAINS_PER_VICTIM, OTHER_DOMAINS = 8, 2, 4, 4
RPC_TIMEOUT_MS = 1000
CONFIG = (f"high_watermark = 1.0\nmean_margin = 0.99\nha_replicas = 2\nrpc_timeout_ms = {RPC_TIMEOUT_MS}\n"
          "image_real_bytes_max = 65536\n")
# Scenario 1 also checkpoints every second: restarts run on the checkpoint's memory.
CHECKPOINTS = "ha_checkpoints = true\nha_checkpoint_interval_ms = 1000\n"
# Status polls are ~0.3 s apart and a poll of 8 agents takes a little: that much slack on top.
POLL_SLACK_S = 2.0
# After the last restart, watch this long (two replica refreshes) that nothing runs twice.
STABLE_S = 2 * AgentConfig().ha_refresh_ms / 1000


def failover_bound_s(n: int) -> float:
    cfg = AgentConfig(rpc_timeout_ms=RPC_TIMEOUT_MS)
    # Detection, then the next HA round, then two checks that may each wait one RPC deadline
    # for an unreachable member: Holds (members ranked ahead) and Locate (the dead owner included).
    return (detection_bound_s(MembershipConfig.profile("local"), n) + cfg.ha_push_interval_ms / 1000
            + 2 * cfg.rpc_timeout_ms / 1000 + POLL_SLACK_S)


async def poll(clients: dict[str, ControlClient]) -> dict[str, dict]:
    async def one(c: ControlClient):
        try:
            return await c.status(timeout_s=3.0)
        except Exception:  # noqa: BLE001 - an agent that is gone or unreachable answers nothing
            return None
    results = await asyncio.gather(*(one(c) for c in clients.values()))
    return {nid: s for nid, s in zip(clients, results) if s is not None}


def copies(statuses: dict[str, dict]) -> dict[str, list[tuple[str, int]]]:
    """Domain id -> [(node, epoch)] of every active copy (reservations are not copies)."""
    out: dict[str, list[tuple[str, int]]] = {}
    for nid, s in statuses.items():
        for d in s["domains"]:
            if d["state"] != "reserved-in":
                out.setdefault(d["id"], []).append((nid, d["epoch"]))
    return out


def small(dom: str) -> DomainSpec:
    return DomainSpec(domain_id=dom, vcpus=1, memory_mib=256, workload=WorkloadSpec("constant", (("level", 0.2),)))


async def wait_converged(clients: dict[str, ControlClient], n: int, timeout_s: float = 40) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        st = await poll(clients)
        if len(st) == len(clients) and all(sum(m["status"] == "alive" for m in s["members"]) == n
                                           for s in st.values()):
            return
        assert time.monotonic() < deadline, f"membership did not converge on {n} alive members"
        await asyncio.sleep(0.3)


async def wait_replicated(clients: dict[str, ControlClient], domains: int, r: int, timeout_s: float = 30,
                          what: str = "replicas") -> None:
    """Every domain's replica (or with what="checkpoints_held", checkpoint) held by each of its r buddies."""
    deadline = time.monotonic() + timeout_s
    while True:
        st = await poll(clients)
        held = sum(s["ha"][what] for s in st.values())
        if held == domains * r:
            return
        assert time.monotonic() < deadline, f"{held} {what}, expected {domains} x {r}"
        await asyncio.sleep(0.3)


# -- 1. SIGKILL two owners -----------------------------------------------------------------------------

async def kill_owners_scenario(state: Path) -> None:
    cluster = json.loads((state / "cluster.json").read_text())
    nodes = {n["id"]: n for n in cluster["nodes"]}
    # `cluster up` secures the agents with a throwaway CA and names the operator's client config.
    tls = load_client_config(cluster["client_config"])
    clients = {nid: ControlClient(n["address"], tls) for nid, n in nodes.items()}
    try:
        await wait_converged(clients, NODES)
        ids = sorted(nodes)
        victims, survivors = ids[:KILLS], ids[KILLS:]
        owned: dict[str, str] = {}
        for v in victims:
            for i in range(DOMAINS_PER_VICTIM):
                dom = f"ha-{nodes[v]['name']}-{i}"
                await clients[v].create_domain(small(dom))
                owned[dom] = v
        for i in range(OTHER_DOMAINS):
            await clients[survivors[i % len(survivors)]].create_domain(small(f"ha-other-{i}"))
        total = len(owned) + OTHER_DOMAINS
        await wait_replicated(clients, total, 2)
        await wait_replicated(clients, total, 2, what="checkpoints_held")
        before = copies(await poll(clients))
        assert {d: [n for n, _ in c] for d, c in before.items() if d in owned} == {d: [v] for d, v in owned.items()}

        for v in victims:
            os.kill(nodes[v]["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        for v in victims:
            await clients.pop(v).close()

        bound_s = failover_bound_s(NODES)
        restarted_s = None
        while True:
            st = await poll(clients)
            now = copies(st)
            for dom, cs in now.items():
                assert len(cs) <= 1, f"{dom} runs twice: {cs}"
            done = all(dom in now and now[dom][0][0] in survivors for dom in owned)
            elapsed = time.monotonic() - killed_at
            if done and restarted_s is None:
                restarted_s = elapsed
                print(f"all {len(owned)} domains of {KILLS} killed owners run again after {restarted_s:.2f} s "
                      f"(bound {bound_s:.1f} s)")
            if restarted_s is None:
                assert elapsed < bound_s, (f"after {elapsed:.1f} s (bound {bound_s:.1f} s) not restarted: "
                                           f"{sorted(d for d in owned if d not in now)}")
            elif elapsed > restarted_s + STABLE_S:
                break
            await asyncio.sleep(0.3)

        final = copies(await poll(clients))
        assert set(final) == set(owned) | {f"ha-other-{i}" for i in range(OTHER_DOMAINS)}
        for dom, cs in final.items():
            assert len(cs) == 1, (dom, cs)
            if dom in owned:
                assert cs[0][1] >= 2, f"{dom} restarted at epoch {cs[0][1]}, not above its old epoch 1"
        st = await poll(clients)
        assert len(st) == len(clients)
        assert sum(s["ha"]["restarts"] for s in st.values()) == len(owned)
        # Every restart ran on the dead owner's last checkpoint (its buddies held one each).
        assert sum(s["counters"].get("ha_restarts_from_checkpoint", 0) for s in st.values()) == len(owned)
        assert all(s["ha"]["unplaced"] == [] for s in st.values())

        # A node thought dead comes back: victim 0 restarts from its journal with its domains at
        # epoch 1, meets the newer copies through its replica pushes, and destroys its own.
        back = Node.from_json(nodes[victims[0]])
        spawn_agent(back.name, back.cmd, [nodes[s]["address"] for s in survivors[:2]], Path(back.state_dir),
                    detach=True)
        ready = await wait_for_ready_file(Path(back.state_dir) / "ready.json")
        clients[back.node_id] = ControlClient(ready["address"], tls)
        returned = {d for d, v in owned.items() if v == back.node_id}
        deadline = time.monotonic() + 60
        while True:
            st = await poll(clients)
            now = copies(st)
            if (back.node_id in st and st[back.node_id]["ha"]["fenced"] == len(returned)
                    and all(len(cs) == 1 for cs in now.values()) and set(now) == set(final)):
                break
            assert time.monotonic() < deadline, f"the returned node's stale copies were not fenced: {now}"
            await asyncio.sleep(0.3)
        assert all(now[d] == final[d] for d in final), "a surviving copy changed when the old owner came back"
        print(f"the restarted owner fenced its {len(returned)} stale copies")
    finally:
        for c in clients.values():
            await c.close()


async def wait_for_ready_file(path: Path, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path} after {timeout_s} s"
        await asyncio.sleep(0.1)
    return json.loads(path.read_text())


def test_domains_of_two_killed_owners_run_again_exactly_once_within_the_bound(tmp_path):
    state = tmp_path / "ha8"
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG + CHECKPOINTS)
    try:
        up = shoal("cluster", "up", "--nodes", str(NODES), "--domains", "0", "--detach", "--state-dir", str(state),
                   "--config", str(config), timeout=180)
        assert up.returncode == 0, up.stderr[-3000:]
        asyncio.run(kill_owners_scenario(state))
    finally:
        if (state / "cluster.json").exists():
            shoal("cluster", "down", "--state-dir", str(state), timeout=60)
        kill_all(pids_in(state) if state.exists() else [])


# -- 2. a partition across two network namespaces -------------------------------------------------------

def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


class TwoNamespaces:
    """Two network namespaces, each a "site" whose agents advertise a cluster address
    on the site's loopback (10.77.S.1), routed to the other site over one veth pair
    (10.77.0.1 <-> 10.77.0.2). `cut` downs that pair, which takes the routes between
    the sites with it; `heal` brings it up and puts the routes back. The test, in the
    root namespace, reaches each site's agents over a management veth (10.78.S.2),
    and no site has a route to the other through the root namespace."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.names = (f"shoal-ha-1-{tag}", f"shoal-ha-2-{tag}")
        self.cluster_ip = ("10.77.1.1", "10.77.2.1")
        self.mgmt_ip = ("10.78.1.2", "10.78.2.2")
        self.link = (f"shl1{tag}", f"shl2{tag}")  # the inter-site veth pair
        self.mgmt = (f"shm1{tag}", f"shm2{tag}")  # site side of each management pair (root side: +r)
        self.created: list[str] = []

    def create(self) -> None:
        for ns in self.names:
            ip("netns", "add", ns)
            self.created.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", self.link[0], "type", "veth", "peer", "name", self.link[1])
        for i, ns in enumerate(self.names):
            ip("link", "set", self.link[i], "netns", ns)
            ip("-n", ns, "addr", "add", f"10.77.0.{i + 1}/30", "dev", self.link[i])
            ip("-n", ns, "addr", "add", f"{self.cluster_ip[i]}/32", "dev", "lo")
            ip("link", "add", self.mgmt[i] + "r", "type", "veth", "peer", "name", self.mgmt[i])
            ip("link", "set", self.mgmt[i], "netns", ns)
            ip("addr", "add", f"10.78.{i + 1}.1/30", "dev", self.mgmt[i] + "r")
            ip("link", "set", self.mgmt[i] + "r", "up")
            ip("-n", ns, "addr", "add", f"{self.mgmt_ip[i]}/30", "dev", self.mgmt[i])
            ip("-n", ns, "link", "set", self.mgmt[i], "up")
        self.heal()

    def cut(self) -> None:
        for i, ns in enumerate(self.names):
            ip("-n", ns, "link", "set", self.link[i], "down")

    def heal(self) -> None:
        for i, ns in enumerate(self.names):
            ip("-n", ns, "link", "set", self.link[i], "up")
        for i, ns in enumerate(self.names):
            other = 1 - i
            ip("-n", ns, "route", "replace", f"{self.cluster_ip[other]}/32", "via", f"10.77.0.{other + 1}")

    def reachable(self, address: str, within_s: float = 0.0) -> bool:
        """Does a TCP connection from site 1 to `address` (a site-2 agent) succeed, trying
        for up to within_s (a veth just set up needs a moment for its carrier)?"""
        host, port = address.rsplit(":", 1)
        probe = f"import socket; socket.create_connection(({host!r}, {port}), timeout=1).close()"
        deadline = time.monotonic() + within_s
        while True:
            out = subprocess.run(["ip", "netns", "exec", self.names[0], sys.executable, "-c", probe],
                                 capture_output=True, timeout=20)
            if out.returncode == 0 or time.monotonic() >= deadline:
                return out.returncode == 0

    def destroy(self) -> None:
        for ns in self.created:
            ip("netns", "del", ns, check=False)  # takes its veth ends (and their peers) with it
        for dev in self.mgmt:
            ip("link", "del", dev + "r", check=False)


def start_agent(ns: str, cluster_ip: str, node_dir: Path, config: Path, seeds: list[str],
                origin_s: float, tls: TlsFiles) -> subprocess.Popen:
    node_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "shoal", "agent", "--state-dir", str(node_dir),
           "--listen", "0.0.0.0:0", "--advertise", f"{cluster_ip}:0", "--ready-file", str(node_dir / "ready.json"),
           "--config", str(config), "--cpu-cores", "16", "--memory-mib", "65536", "--clock-origin", repr(origin_s),
           *tls_args(tls)]
    if seeds:
        cmd += ["--seeds", ",".join(seeds)]
    with open(node_dir / "stdout.log", "ab") as log:  # the agent logs to DIR/agent.log itself
        # `ip netns exec` execs the agent in place: the pid is the agent's.
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=Path(__file__).resolve().parent.parent)


def wait_ready_file(path: Path, proc: subprocess.Popen, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, f"agent exited with {proc.returncode}; see {path.parent}/*.log"
        assert time.monotonic() < deadline, f"no {path} after {timeout_s} s"
        time.sleep(0.05)
    return json.loads(path.read_text())


PER_SIDE, DOMAINS_PER_NODE = 3, 2
# Faster reconnection after the heal (the local profile's 10 s would dominate the test).
PARTITION_CONFIG = CONFIG + "\n[membership]\nreconnect_interval_ms = 2000\nsync_interval_ms = 3000\n"


async def partition_scenario(ns: TwoNamespaces, mgmt: dict[str, str], cluster: dict[str, str],
                             sides: dict[str, int], tls: TlsFiles) -> None:
    clients = {nid: ControlClient(a, tls) for nid, a in mgmt.items()}
    try:
        await wait_converged(clients, len(clients))
        owner: dict[str, str] = {}
        for nid in sorted(clients):
            for i in range(DOMAINS_PER_NODE):
                dom = f"part-{sides[nid]}-{nid[:8]}-{i}"
                await clients[nid].create_domain(small(dom))
                owner[dom] = nid
        await wait_replicated(clients, len(owner), 2)
        # Which domains the far side holds a replica of, hence restarts during the split:
        # the same rendezvous ranking the agents compute, over the full view before the cut.
        expect_doubled = {d for d, o in owner.items()
                          if any(sides[b] != sides[o] for b in buddies_for(d, o, list(clients), 2))}
        assert expect_doubled, "no domain has a buddy across the cut (vanishingly unlikely); nothing to test"

        far = next(cluster[n] for n in cluster if sides[n] == 1)
        assert ns.reachable(far), "site 1 cannot reach site 2 before the cut"
        ns.cut()
        assert not ns.reachable(far), "the sites still reach each other after the cut"
        cut_at = time.monotonic()
        bound_s = failover_bound_s(PER_SIDE * 2)
        while True:
            now = copies(await poll(clients))
            for dom, cs in now.items():
                assert len({n for n, _ in cs}) == len(cs) and len(cs) <= 2, (dom, cs)
                assert len({sides[n] for n, _ in cs}) == len(cs), f"{dom} runs twice on one side: {cs}"
                assert len({e for _, e in cs}) == len(cs), f"{dom}: two active copies share an epoch: {cs}"
            doubled = {d for d, cs in now.items() if len(cs) == 2}
            assert doubled <= expect_doubled, doubled - expect_doubled
            if doubled == expect_doubled:
                break
            assert time.monotonic() - cut_at < bound_s, (f"split for {bound_s:.1f} s and still not restarted on the "
                                                         f"far side: {sorted(expect_doubled - doubled)}")
            await asyncio.sleep(0.3)
        epochs = {d: max(e for _, e in cs) for d, cs in now.items()}
        print(f"partition: {len(doubled)} of {len(owner)} domains ran on both sides after "
              f"{time.monotonic() - cut_at:.1f} s (bound {bound_s:.1f} s)")

        ns.heal()
        assert ns.reachable(far, within_s=10), "the sites do not reach each other after the heal"
        healed_at = time.monotonic()
        while True:
            st = await poll(clients)
            now = copies(st)
            if (len(st) == len(clients) and set(now) == set(owner) and all(len(cs) == 1 for cs in now.values())
                    and all(sum(m["status"] == "alive" for m in s["members"]) == len(clients) for s in st.values())):
                break
            assert time.monotonic() - healed_at < 60, f"60 s after the heal: {now}"
            await asyncio.sleep(0.5)
        fenced = sum(s["ha"]["fenced"] for s in st.values())
        print(f"healed: one copy of each of {len(now)} domains after {time.monotonic() - healed_at:.1f} s; "
              f"{fenced} copies fenced")
        assert fenced == len(doubled)
        for dom, cs in now.items():
            assert cs[0][1] == epochs[dom], f"{dom}: the copy at epoch {cs[0][1]} survived, not the newest"
        end = time.monotonic() + STABLE_S  # and it stays that way
        while time.monotonic() < end:
            now = copies(await poll(clients))
            assert set(now) == set(owner) and all(len(cs) == 1 for cs in now.values()), now
            await asyncio.sleep(0.5)
    finally:
        for c in clients.values():
            await c.close()


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 5
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def test_after_a_partition_heals_exactly_one_copy_of_each_domain_remains(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add)")
    ns = TwoNamespaces()
    procs: list[subprocess.Popen] = []
    try:
        try:
            ns.create()
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            pytest.skip(f"this machine refuses network namespaces: {getattr(exc, 'stderr', '') or exc}")
        config = tmp_path / "agent.toml"
        config.write_text(PARTITION_CONFIG)
        origin_s = time.time()
        mgmt: dict[str, str] = {}
        cluster: dict[str, str] = {}
        sides: dict[str, int] = {}
        seeds: list[str] = []
        for i in range(2 * PER_SIDE):
            side = i % 2
            node_dir = tmp_path / f"site{side + 1}-{i}"
            proc = start_agent(ns.names[side], ns.cluster_ip[side], node_dir, config, seeds, origin_s,
                               issue_node_files(tmp_path, node_dir))
            procs.append(proc)
            ready = wait_ready_file(node_dir / "ready.json", proc)
            port = ready["address"].rsplit(":", 1)[1]
            mgmt[ready["id"]] = f"{ns.mgmt_ip[side]}:{port}"
            cluster[ready["id"]] = ready["address"]
            sides[ready["id"]] = side
            seeds = seeds or [ready["address"]]
        operator = load_client_config(write_operator_config(tmp_path))
        asyncio.run(partition_scenario(ns, mgmt, cluster, sides, operator))
    finally:
        stop(procs)
        ns.destroy()
