"""Membership under chaos with real agent processes: SIGKILL 3 of 10.

Every survivor must mark each killed agent dead within the bound the
membership config implies (under 10 s with the `local` profile), no live
agent may ever be marked dead, and the survivors keep balancing.
"""

from __future__ import annotations

import asyncio
import json
import time

from agent.adapters.client_config import load_client_config
from agent.adapters.control_client import ControlClient
from agent.core.membership_config import MembershipConfig, detection_bound_s
from hypervisor.domain import DomainSpec
from hypervisor.workload import WorkloadSpec
from tests.test_cluster_multiprocess import kill_all, pids_in, shoal

NODES, KILLS = 10, 3
# Status polls are 0.2 s apart and each fetch takes a little: that much slack on top.
POLL_SLACK_S = 1.0


async def statuses(clients: dict[str, ControlClient]) -> dict[str, dict]:
    async def one(c: ControlClient):
        return await c.status(timeout_s=3.0)
    results = await asyncio.gather(*(one(c) for c in clients.values()))
    return dict(zip(clients, results))


async def scenario(state) -> None:
    cluster = json.loads((state / "cluster.json").read_text())
    nodes = {n["id"]: n for n in cluster["nodes"]}
    operator = load_client_config(cluster["client_config"])  # agents run mutual TLS, as by default
    clients = {nid: ControlClient(n["address"], operator) for nid, n in nodes.items()}
    try:
        deadline = time.monotonic() + 30
        while True:  # full membership first
            st = await statuses(clients)
            if all(sum(m["status"] == "alive" for m in s["members"]) == NODES for s in st.values()):
                break
            assert time.monotonic() < deadline, "membership did not converge on 10 alive members in 30 s"
            await asyncio.sleep(0.2)

        out = await asyncio.to_thread(shoal, "cluster", "chaos", "--state-dir", str(state), "--kill", str(KILLS),
                                      "--seed", "11", "--json", timeout=60)
        assert out.returncode == 0, out.stderr
        killed_at = time.monotonic()
        victims = {a["id"] for a in json.loads(out.stdout)["actions"]}
        assert len(victims) == KILLS
        for v in victims:
            await clients.pop(v).close()

        bound_s = detection_bound_s(MembershipConfig.profile("local"), NODES)
        assert bound_s < 10.0
        detected_s = None
        while detected_s is None:
            st = await statuses(clients)
            for s in st.values():
                views = {m["id"]: m["status"] for m in s["members"]}
                # no live agent is ever marked dead by anyone
                assert not [nid for nid in clients if views.get(nid) == "dead"], views
            if all(all({m["id"]: m["status"] for m in s["members"]}.get(v) == "dead" for v in victims)
                   for s in st.values()):
                detected_s = time.monotonic() - killed_at
            else:
                assert time.monotonic() - killed_at < bound_s + POLL_SLACK_S, \
                    f"not every survivor marked the killed agents dead within {bound_s:.1f} s"
                await asyncio.sleep(0.2)
        print(f"all {len(clients)} survivors marked {KILLS} killed agents dead after {detected_s:.2f} s "
              f"(bound {bound_s:.1f} s)")

        # Survivors keep balancing: overload one of them and watch it shed load to live peers only.
        hot_id, hot = next(iter(clients.items()))
        for i in range(14):
            await hot.create_domain(DomainSpec(domain_id=f"hot-{i}", vcpus=2, memory_mib=512,
                                               workload=WorkloadSpec("constant", (("level", 0.9),))))
        deadline = time.monotonic() + 30
        while True:
            st = await statuses(clients)
            if st[hot_id]["cpu_utilization"] <= 0.8:
                break
            assert time.monotonic() < deadline, f"hot node still at {st[hot_id]['cpu_utilization']:.2f}"
            await asyncio.sleep(0.3)
        moved = {d["id"] for nid, s in st.items() if nid != hot_id for d in s["domains"]
                 if d["id"].startswith("hot-") and d["state"] != "reserved-in"}
        assert moved, "no hot domain moved to a survivor"
        assert st[hot_id]["counters"].get("migrations_succeeded", 0) >= len(moved)
    finally:
        for c in clients.values():
            await c.close()


def test_killed_agents_are_declared_dead_by_every_survivor_within_the_bound(tmp_path):
    state = tmp_path / "chaos10"
    try:
        # No background domains: `cluster up` sizes them to half the capacity of all 10 nodes, and high
        # availability restarts the killed agents' share on the 7 survivors (71 % of their capacity),
        # which would leave no room to take the hot node below the watermark.
        up = shoal("cluster", "up", "--nodes", str(NODES), "--domains", "0", "--placement", "random", "--detach",
                   "--state-dir", str(state), timeout=180)
        assert up.returncode == 0, up.stderr[-3000:]
        asyncio.run(scenario(state))
        assert shoal("cluster", "down", "--state-dir", str(state), timeout=60).returncode == 0
    finally:
        if (state / "cluster.json").exists():  # a failure above: still stop the agents and the broker
            shoal("cluster", "down", "--state-dir", str(state), timeout=60)
        kill_all(pids_in(state) if state.exists() else [])
