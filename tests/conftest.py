"""Shared test helpers: deadlines instead of sleeps, in-process agents on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from agent.adapters.grpc_server import start_server
from agent.core.config import AgentConfig
from agent.runtime.agent import Agent
from hypervisor.host import HostSpec

# Fast but realistic pacing for loopback tests.
FAST = AgentConfig(gossip_interval_ms=100, peer_stale_ms=2_000, peer_forget_ms=10_000, policy_interval_ms=200,
                   domain_cooldown_ms=2_000, reservation_lease_ms=3_000, rpc_timeout_ms=1_000,
                   image_real_bytes_max=256 * 1024, transfer_chunk_bytes=64 * 1024).validate()


async def wait_until(cond: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


def wait_until_sync(cond: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


class LocalCluster:
    """Agents in this process, each with its own grpc.aio server on 127.0.0.1:0."""

    def __init__(self) -> None:
        self.agents: list[Agent] = []
        self.servers = []

    async def add(self, node_id: str, *, cores: float = 8.0, memory_mib: int = 16_384,
                  config: AgentConfig = FAST, seeds: tuple[str, ...] | None = None, loops: bool = True) -> Agent:
        if seeds is None:
            seeds = tuple(a.address for a in self.agents[:1])
        agent = Agent(node_id, HostSpec(cores, memory_mib, config.cpu_overcommit_ratio), config, seeds=seeds,
                      rng_seed=len(self.agents) + 1)
        server, address = await start_server(agent, "127.0.0.1:0")
        agent.bind(address)
        if loops:
            agent.start_loops()
        self.agents.append(agent)
        self.servers.append(server)
        return agent

    async def close(self) -> None:
        for agent in self.agents:
            await agent.stop()
        for server in self.servers:
            await server.stop(grace=None)


@pytest.fixture
async def local_cluster():
    cluster = LocalCluster()
    try:
        yield cluster
    finally:
        await cluster.close()

