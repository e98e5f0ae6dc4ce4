"""Shared test helpers: deadlines instead of sleeps, in-process agents on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from agent.adapters import certs, tls
from agent.adapters.client_config import CLIENT_CONFIG_ENV, write_client_config
from agent.adapters.grpc_server import start_server
from agent.adapters.tls import TlsFiles
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


class ClusterPki:
    """A cluster CA in a folder, issuing node and operator certificates on demand."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        certs.init_ca(self.dir)
        self.ca = str(self.dir / certs.CA_CERT_FILE)

    def node(self, node_id: str, **kw) -> TlsFiles:
        paths = certs.issue_node(self.dir, node_id, force=True, **kw)
        return TlsFiles((self.ca,), paths.cert, paths.key)

    def operator(self, name: str = "tester", **kw) -> TlsFiles:
        paths = certs.issue_operator(self.dir, name, force=True, **kw)
        return TlsFiles((self.ca,), paths.cert, paths.key)

    def client_config(self, name: str = "tester") -> Path:
        op = self.operator(name)
        return write_client_config(self.dir / f"client-{name}.toml", op.ca[0], op.cert, op.key)


def secure_channel(address: str, files: TlsFiles, options=()) -> grpc.aio.Channel:
    """A channel that presents `files` (its own connection: no sharing with other test channels)."""
    return grpc.aio.secure_channel(address, tls.channel_credentials(files.ca, files.cert, files.key),
                                   options=[*options, ("grpc.use_local_subchannel_pool", 1),
                                            *tls.secure_channel_options()])


class LocalCluster:
    """Agents in this process, each with its own grpc.aio server on 127.0.0.1:0.

    With a `pki` (the default of the local_cluster fixture) every agent runs
    mutual TLS with its own node certificate, as real agents do.
    """

    def __init__(self, pki: ClusterPki | None = None) -> None:
        self.agents: list[Agent] = []
        self.servers = []
        self.pki = pki

    def peer_channel(self, address: str, node_id: str, options=()) -> grpc.aio.Channel:
        """A channel as node `node_id` would open it (plaintext if the cluster is insecure)."""
        if self.pki is None:
            return grpc.aio.insecure_channel(address, options=list(options))
        return secure_channel(address, self.pki.node(node_id), options)

    async def add(self, node_id: str, *, cores: float = 8.0, memory_mib: int = 16_384,
                  config: AgentConfig = FAST, seeds: tuple[str, ...] | None = None, loops: bool = True) -> Agent:
        if seeds is None:
            seeds = tuple(a.address for a in self.agents[:1])
        agent = Agent(node_id, HostSpec(cores, memory_mib, config.cpu_overcommit_ratio), config, seeds=seeds,
                      rng_seed=len(self.agents) + 1)
        server, address = await start_server(agent, "127.0.0.1:0",
                                             self.pki.node(node_id) if self.pki is not None else None)
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
async def local_cluster(tmp_path, monkeypatch):
    """Agents with mutual TLS; ControlClient finds the operator certificate through SHOAL_CLIENT_CONFIG."""
    pki = ClusterPki(tmp_path / "pki")
    monkeypatch.setenv(CLIENT_CONFIG_ENV, str(pki.client_config()))
    cluster = LocalCluster(pki)
    try:
        yield cluster
    finally:
        await cluster.close()

