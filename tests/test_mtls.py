"""Mutual TLS between real agents over loopback (grpc.aio servers on 127.0.0.1:0):
who may connect, who may call what, identity binding, expiry, per-peer rate
limits, the CLI's TLS errors, and a CA rotation of running agent processes
driven by SIGHUP."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import grpc
import pytest

from agent.adapters import grpc_codec as codec
from agent.adapters.certs import CertError
from agent.adapters.control_client import ControlClient
from agent.adapters.grpc_server import reload_tls, start_server
from agent.adapters.tls import TlsFiles
from agent.core.config import ConfigError
from agent.core.messages import PrepareRequest
from agent.runtime.agent import Agent
from agent.runtime.launcher import Node, spawn_agent, stop_processes, wait_ready
from hypervisor.domain import DomainSpec
from hypervisor.host import HostSpec
from hypervisor.workload import WorkloadSpec
from shoal import cli
from shoal.v1 import gossip_pb2, gossip_pb2_grpc, membership_pb2, membership_pb2_grpc, migration_pb2_grpc, types_pb2
from tests.conftest import FAST, ClusterPki, secure_channel, wait_until

NOW = dt.datetime.now(dt.timezone.utc)


def spec(i: int, level: float = 0.75, vcpus: int = 2, memory_mib: int = 512) -> DomainSpec:
    return DomainSpec(domain_id=f"dom-{i}", vcpus=vcpus, memory_mib=memory_mib,
                      workload=WorkloadSpec("constant", (("level", level),)), image_seed=i)


def exchange_from(sender_id: str) -> gossip_pb2.ExchangeRequest:
    state = types_pb2.NodeState(schema_version=1, node_id=sender_id, address="127.0.0.1:9", heartbeat=1,
                                cpu_capacity_cores=8, cpu_demand_cores=1, memory_capacity_mib=1024, memory_used_mib=0)
    return gossip_pb2.ExchangeRequest(schema_version=1, sender_id=sender_id, sender_address="127.0.0.1:9",
                                      entries=[state], averaging=gossip_pb2.Averaging())


def rejected(agent: Agent, reason: str) -> int:
    return agent.metrics.counters.get(f"rejected_inputs{{reason={reason}}}", 0)


async def rpc_code(coro) -> grpc.StatusCode:
    try:
        await coro
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture
def other_pki(tmp_path) -> ClusterPki:
    return ClusterPki(tmp_path / "other-ca")


# -- who may connect ------------------------------------------------------------------
async def test_a_peer_from_another_ca_can_neither_gossip_nor_see_anything(local_cluster, other_pki):
    a = await local_cluster.add("a")
    b = await local_cluster.add("b")
    a.create_domain(spec(1))
    await wait_until(lambda: "b" in a.dissemination.entries and "a" in b.dissemination.entries, 10, "a and b")
    # The stranger trusts our CA too, so only its own certificate is at fault.
    stranger_files = other_pki.node("a")  # even claiming a member's id does not help
    trusting_both = TlsFiles((*stranger_files.ca, local_cluster.pki.ca), stranger_files.cert, stranger_files.key)
    channel = secure_channel(a.address, trusting_both)
    try:
        assert await rpc_code(gossip_pb2_grpc.GossipStub(channel).Exchange(exchange_from("a"), timeout=2)) \
            == grpc.StatusCode.UNAVAILABLE
        req = PrepareRequest("m-1", "a", spec(9), 1, 1.0, 8.0, 8.0, 0, False)
        assert await rpc_code(migration_pb2_grpc.MigrationStub(channel).Prepare(codec.prepare_to_pb(req), timeout=2)) \
            == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()
    op = other_pki.operator("eve")
    stranger_operator = ControlClient(a.address, TlsFiles((*op.ca, local_cluster.pki.ca), op.cert, op.key))
    plaintext = ControlClient(a.address, None)
    try:
        for client, said in ((stranger_operator, "did not accept our certificate"),
                             (plaintext, "requires mutual TLS")):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.status(timeout_s=2)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert said in client.describe(info.value)
    finally:
        await stranger_operator.close()
        await plaintext.close()

    # A whole agent with a foreign certificate, seeded with a: it never learns anything.
    stranger = Agent("stranger", HostSpec(8, 16_384, FAST.cpu_overcommit_ratio), FAST, seeds=(a.address,), rng_seed=9)
    files = other_pki.node("stranger")
    server, address = await start_server(stranger, "127.0.0.1:0",
                                         TlsFiles((*files.ca, local_cluster.pki.ca), files.cert, files.key))
    stranger.bind(address)
    stranger.start_loops()
    try:
        await wait_until(lambda: stranger.metrics.counters.get("membership_send_failed{code=UNAVAILABLE}", 0) >= 3,
                         10, "the stranger's join attempts to fail")
        assert stranger.dissemination.entries == {}
        assert {m.node_id for m in stranger.membership.members()} == {"stranger"}
        assert "stranger" not in a.dissemination.entries and "stranger" not in b.dissemination.entries
        assert all(m.node_id != "stranger" for m in a.membership.members())
    finally:
        await stranger.stop()
        await server.stop(grace=None)
    assert a.host.domains.keys() == {"dom-1"}


async def test_an_expired_node_certificate_is_refused(local_cluster):
    a = await local_cluster.add("a", loops=False)
    expired = local_cluster.pki.node("old", days=1, not_before=NOW - dt.timedelta(days=10))
    fresh = local_cluster.pki.node("new")
    for files, code in ((expired, grpc.StatusCode.UNAVAILABLE), (fresh, grpc.StatusCode.OK)):
        channel = secure_channel(a.address, files)
        try:
            sender = "old" if files is expired else "new"
            assert await rpc_code(gossip_pb2_grpc.GossipStub(channel).Exchange(exchange_from(sender), timeout=2)) \
                == code
        finally:
            await channel.close()
    assert "old" not in a.dissemination.entries and "new" in a.dissemination.entries


async def test_an_agent_refuses_to_start_with_a_certificate_for_another_node(local_cluster):
    agent = Agent("x", HostSpec(8, 16_384, FAST.cpu_overcommit_ratio), FAST)
    with pytest.raises(CertError, match="not node 'x'"):
        await start_server(agent, "127.0.0.1:0", local_cluster.pki.node("y"))


# -- who may call what ----------------------------------------------------------------------
async def test_a_node_certificate_may_not_create_or_migrate_domains(local_cluster):
    a = await local_cluster.add("a", loops=False)
    await local_cluster.add("b", loops=False)
    a.create_domain(spec(1))
    as_node = ControlClient(a.address, local_cluster.pki.node("b"))
    try:
        for call in (as_node.create_domain(spec(2)), as_node.migrate("dom-1", "b", timeout_s=5),
                     as_node.status(), as_node.set_balancing(False)):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "not an operator certificate" in info.value.details()
        assert "not an operator certificate" in as_node.describe(info.value)
    finally:
        await as_node.close()
    assert set(a.host.domains) == {"dom-1"} and a.balancing
    assert rejected(a, "unauthorized") == 4
    # The operator of the same cluster may.
    operator = ControlClient(a.address)  # SHOAL_CLIENT_CONFIG, set by the fixture
    try:
        await operator.create_domain(spec(2))
    finally:
        await operator.close()
    assert set(a.host.domains) == {"dom-1", "dom-2"}


async def test_an_operator_certificate_may_not_gossip(local_cluster):
    a = await local_cluster.add("a", loops=False)
    channel = secure_channel(a.address, local_cluster.pki.operator("alice"))
    try:
        assert await rpc_code(gossip_pb2_grpc.GossipStub(channel).Exchange(exchange_from("alice"), timeout=2)) \
            == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await channel.close()
    assert a.dissemination.entries == {}


async def test_a_node_claiming_another_id_is_refused_counted_and_logged(local_cluster, caplog):
    from agent.core import membership_codec
    from agent.core.membership_codec import Ping

    a = await local_cluster.add("a", loops=False)
    channel = local_cluster.peer_channel(a.address, "mallory")
    try:
        with caplog.at_level(logging.WARNING, logger="shoal.grpc"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await gossip_pb2_grpc.GossipStub(channel).Exchange(exchange_from("b"), timeout=2)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "claims node id 'b'" in info.value.details() and "mallory" in info.value.details()
            forged = Ping(sender_id="b", sender_address="127.0.0.1:9", seq=1, target_id="a")
            assert await rpc_code(membership_pb2_grpc.MembershipStub(channel).Deliver(
                membership_pb2.MembershipPacket(payload=membership_codec.encode(forged)), timeout=2)) \
                == grpc.StatusCode.PERMISSION_DENIED
            req = PrepareRequest("m-1", "b", spec(9), 1, 1.0, 8.0, 8.0, 0, False)
            assert await rpc_code(migration_pb2_grpc.MigrationStub(channel).Prepare(
                codec.prepare_to_pb(req), timeout=2)) == grpc.StatusCode.PERMISSION_DENIED
        # Its own id goes through.
        assert await rpc_code(gossip_pb2_grpc.GossipStub(channel).Exchange(exchange_from("mallory"), timeout=2)) \
            == grpc.StatusCode.OK
    finally:
        await channel.close()
    assert rejected(a, "identity_mismatch") == 3
    assert "b" not in a.dissemination.entries and "mallory" in a.dissemination.entries
    assert a.membership.status_of("b") is None and a.host.committed_memory_mib == 0
    assert sum("identity_mismatch" in r.getMessage() for r in caplog.records) == 3


async def test_a_node_dials_a_member_as_that_member_and_refuses_another_cluster_node_there(local_cluster):
    a = await local_cluster.add("a")
    b = await local_cluster.add("b")
    c = await local_cluster.add("c", loops=False)
    await wait_until(lambda: a.clients.expected(b.address) == "b", 10, "a learns b's address from membership")
    probe = a.dissemination.make_exchange(a.now_s())
    # c holds a valid cluster certificate, but it is not b: dialled as b, its handshake fails
    # before any handler runs, so c never hears a's exchange.
    a.clients.expect(c.address, "b")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await a.clients.exchange(c.address, probe)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "a" not in c.dissemination.entries
    a.clients.expect(c.address, "c")  # what membership would say: the same call goes through
    reply, _, _ = await a.clients.exchange(c.address, probe)
    assert reply.sender_id == "c" and "a" in c.dissemination.entries


# -- per-peer rate limits ------------------------------------------------------------------
async def test_a_gossip_flood_from_one_peer_is_refused_while_others_get_through(local_cluster):
    # 1 token a second after a burst of 20: whatever the machine's speed, the flood mostly bounces.
    config = FAST.replace(gossip_rate_limit_per_s=1.0, gossip_rate_burst=20)
    a = await local_cluster.add("a", config=config, loops=False)
    flood = local_cluster.peer_channel(a.address, "flood")
    calm = local_cluster.peer_channel(a.address, "calm")

    async def one(stub) -> grpc.aio.AioRpcError | None:
        try:
            await stub.Exchange(exchange_from("flood"), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc
        return None
    try:
        stub = gossip_pb2_grpc.GossipStub(flood)
        errors = [e for e in await asyncio.gather(*(one(stub) for _ in range(200))) if e is not None]
        assert {e.code() for e in errors} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert 100 <= len(errors) <= 180  # the burst of 20 got through, and what refilled meanwhile
        assert "rate limited: node/flood" in errors[0].details()
        assert "gossip_rate_limit_per_s" in errors[0].details()
        # Another peer has its own bucket, and the agent is up.
        assert await rpc_code(gossip_pb2_grpc.GossipStub(calm).Exchange(exchange_from("calm"), timeout=2)) \
            == grpc.StatusCode.OK
        assert (await ControlClient(a.address).status())["id"] == "a"
    finally:
        await flood.close()
        await calm.close()
    assert rejected(a, "rate_limited") == len(errors)
    assert a.metrics.counters["rate_limited{limit=gossip}"] == len(errors)
    assert "flood" in a.dissemination.entries and "calm" in a.dissemination.entries


async def test_control_calls_are_rate_limited_per_operator(local_cluster):
    config = FAST.replace(control_rate_limit_per_s=5.0, control_rate_burst=5)
    a = await local_cluster.add("a", config=config, loops=False)
    alice = ControlClient(a.address, local_cluster.pki.operator("alice"))
    bob = ControlClient(a.address, local_cluster.pki.operator("bob"))
    try:
        codes = await asyncio.gather(*(rpc_code(alice.status()) for _ in range(60)))
        assert codes.count(grpc.StatusCode.OK) >= 5 and codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 30
        assert await rpc_code(bob.status()) == grpc.StatusCode.OK
    finally:
        await alice.close()
        await bob.close()
    assert a.metrics.counters["rate_limited{limit=control}"] >= 30


# -- the CLI ---------------------------------------------------------------------------------
def test_an_agent_without_certificates_or_insecure_does_not_start(capsys):
    assert cli.main(["agent", "--id", "x", "--listen", "127.0.0.1:0"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "mutual TLS is on by default" in err and "--insecure" in err
    assert cli.main(["agent", "--id", "x", "--listen", "127.0.0.1:0", "--insecure", "--cert", "c.pem"]) \
        == cli.EXIT_USAGE
    assert "contradicts" in capsys.readouterr().err


def test_tls_settings_come_from_the_config_file_relative_to_it(tmp_path):
    from agent.runtime.process import resolve_tls

    pki = ClusterPki(tmp_path / "pki")
    files = pki.node("n1")
    conf = tmp_path / "agent.toml"
    conf.write_text(f'high_watermark = 0.7\n[tls]\nca = ["pki/ca.crt"]\ncert = "pki/{Path(files.cert).name}"\n'
                    f'key = "pki/{Path(files.key).name}"\n')
    assert resolve_tls([], None, None, False, str(conf)) == TlsFiles((files.ca[0],), files.cert, files.key)
    conf.write_text("[tls]\ninsecure = true\n")
    assert resolve_tls([], None, None, False, str(conf)) is None
    conf.write_text('[tls]\ncert = "missing.crt"\nkey = "missing.key"\nca = "missing.crt"\n')
    with pytest.raises(ConfigError, match="missing"):
        resolve_tls([], None, None, False, str(conf))


async def test_client_commands_say_when_tls_failed(local_cluster, other_pki, tmp_path, monkeypatch, capsys):
    a = await local_cluster.add("a", loops=False)
    # An operator of another cluster that trusts ours: the agent refuses its certificate.
    op = other_pki.operator("eve")
    foreign = tmp_path / "foreign.toml"
    foreign.write_text(f'ca = ["{op.ca[0]}", "{local_cluster.pki.ca}"]\ncert = "{op.cert}"\nkey = "{op.key}"\n')
    # Our own operator certificate, but trusting only the other CA: we refuse the agent.
    ours = local_cluster.pki.operator("alice")
    distrust = tmp_path / "distrust.toml"
    distrust.write_text(f'ca = "{op.ca[0]}"\ncert = "{ours.cert}"\nkey = "{ours.key}"\n')
    monkeypatch.delenv("SHOAL_CLIENT_CONFIG")
    for args, expected in ((["--client-config", str(foreign)], "did not accept our certificate"),
                           (["--client-config", str(distrust)], "CERTIFICATE_VERIFY_FAILED"),
                           ([], "requires mutual TLS")):
        code = await asyncio.to_thread(cli.main, ["status", "--target", a.address, *args])
        err = capsys.readouterr().err
        assert code == cli.EXIT_ERROR and expected in err, err
        if args:
            assert f"TLS handshake with {a.address} failed" in err
    monkeypatch.setenv("SHOAL_CLIENT_CONFIG", str(local_cluster.pki.client_config()))
    assert await asyncio.to_thread(cli.main, ["status", "--target", a.address, "--json"]) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)["id"] == "a"


# -- rotation ---------------------------------------------------------------------------------
async def test_reload_takes_a_new_ca_and_refuses_the_rotated_out_one(local_cluster, tmp_path):
    """In-process: reload_tls reads the same files again (what SIGHUP does)."""
    new = ClusterPki(tmp_path / "new-ca")
    a = await local_cluster.add("a", loops=False)
    bundle = Path(a.server_tls.ca_paths[0])
    old_node = local_cluster.pki.node("old-peer")
    new_node = new.node("new-peer")
    assert await exchange_ok(a.address, new_node, "new-peer", extra_ca=local_cluster.pki.ca) is False
    bundle.write_bytes(Path(local_cluster.pki.ca).read_bytes() + Path(new.ca).read_bytes())
    reload_tls(a)
    assert await exchange_ok(a.address, new_node, "new-peer", extra_ca=local_cluster.pki.ca)
    assert await exchange_ok(a.address, old_node, "old-peer")
    bundle.write_bytes(Path(new.ca).read_bytes())
    replace_pair(new.node("a"), a.server_tls.cert, a.server_tls.key)
    assert reload_tls(a) == 2
    assert await exchange_ok(a.address, old_node, "old-peer") is False
    assert await exchange_ok(a.address, new_node, "new-peer")


async def test_a_bad_reload_keeps_the_running_certificates(local_cluster):
    a = await local_cluster.add("a", loops=False)
    key = Path(a.server_tls.key)
    good = key.read_bytes()
    key.write_bytes(b"not a key")
    with pytest.raises(CertError):
        reload_tls(a)
    key.write_bytes(good)
    assert await exchange_ok(a.address, local_cluster.pki.node("p"), "p")


async def exchange_ok(address: str, files: TlsFiles, sender: str, extra_ca: str | None = None) -> bool:
    if extra_ca:
        files = TlsFiles((*files.ca, extra_ca), files.cert, files.key)
    channel = secure_channel(address, files)
    try:
        return await rpc_code(gossip_pb2_grpc.GossipStub(channel).Exchange(exchange_from(sender), timeout=2)) \
            == grpc.StatusCode.OK
    finally:
        await channel.close()


def replace_pair(files: TlsFiles, cert: str, key: str) -> None:
    """Puts a newly issued certificate and key where an agent reads its own (each file atomically)."""
    for src, dst in ((files.key, key), (files.cert, cert)):
        tmp = Path(dst).with_suffix(".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


async def wait_for(cond, timeout_s: float, what: str) -> None:
    """Polls an async condition (an RPC failing meanwhile counts as not yet) until a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            if await cond():
                return
        except grpc.aio.AioRpcError:
            pass
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.2)


async def test_a_running_cluster_of_processes_rotates_to_a_new_ca_and_keeps_balancing(tmp_path):
    """Three agent processes move from CA 1 to CA 2 node by node with SIGHUP:
    trust both, then new certificates, then trust only CA 2. Gossip and
    balancing go on throughout; CA 1 certificates are refused at the end."""
    old, new = ClusterPki(tmp_path / "ca1"), ClusterPki(tmp_path / "ca2")
    ids = ["r0", "r1", "r2"]
    nodes: list[Node] = []
    config = tmp_path / "agent.toml"
    config.write_text("gossip_interval_ms = 200\npeer_stale_ms = 2000\npolicy_interval_ms = 500\n"
                      "domain_cooldown_ms = 2000\n")
    both = (old.ca, new.ca)
    op1, op2 = old.operator("ops"), new.operator("ops")
    old_operator, new_operator = TlsFiles(both, op1.cert, op1.key), TlsFiles(both, op2.cert, op2.key)

    async def statuses(operator: TlsFiles) -> list[dict]:
        clients = [ControlClient(n.address, operator) for n in nodes]
        try:
            return list(await asyncio.gather(*(c.status() for c in clients)))
        finally:
            for c in clients:
                await c.close()

    async def all_gossiping(operator: TlsFiles, reloads: int | None = None) -> bool:
        for s in await statuses(operator):
            if reloads is not None and s["counters"].get("tls_reloads", 0) != reloads:
                return False
            if {p["id"] for p in s["peers"] if p["age_s"] < 1.5} != set(ids) - {s["id"]}:
                return False
            if sorted(m["status"] for m in s["members"]) != ["alive"] * 3:
                return False
        return True

    async def balanced(operator: TlsFiles) -> bool:
        st = await statuses(operator)
        return max(s["cpu_utilization"] for s in st) <= 0.8 and not any(s["migrations"] for s in st)

    async def step(node: Node, operator: TlsFiles, reloads: int) -> None:
        node.proc.send_signal(signal.SIGHUP)

        async def reloaded() -> bool:
            client = ControlClient(node.address, operator)
            try:
                return (await client.status())["counters"].get("tls_reloads", 0) == reloads
            finally:
                await client.close()
        await wait_for(reloaded, 10, f"{node.name} to reload ({reloads})")

    try:
        for node_id in ids:
            node_dir = tmp_path / node_id
            node_dir.mkdir()
            shutil.copyfile(old.ca, node_dir / "trust.pem")
            issued = old.node(node_id)
            shutil.copyfile(issued.cert, node_dir / "node.crt")
            shutil.copyfile(issued.key, node_dir / "node.key")
            cmd = [sys.executable, "-m", "shoal", "agent", "--id", node_id, "--listen", "127.0.0.1:0",
                   "--ready-file", str(node_dir / "ready.json"), "--cpu-cores", "8", "--memory-mib", "16384",
                   "--config", str(config), "--ca", str(node_dir / "trust.pem"),
                   "--cert", str(node_dir / "node.crt"), "--key", str(node_dir / "node.key")]
            proc = spawn_agent(node_id, cmd, [nodes[0].address] if nodes else [], node_dir, detach=False)
            node = Node("", "", proc.pid, proc, node_id, str(node_dir), cmd)
            await wait_ready([node])
            nodes.append(node)
        await wait_for(lambda: all_gossiping(old_operator, 0), 30, "gossip under CA 1")
        # Load on r0, so balancing migrations run while the cluster rotates.
        client = ControlClient(nodes[0].address, old_operator)
        try:
            for i in range(6):
                await client.create_domain(spec(i))
        finally:
            await client.close()

        for node in nodes:  # 1: trust CA 1 and CA 2
            (Path(node.state_dir) / "trust.pem").write_bytes(Path(old.ca).read_bytes() + Path(new.ca).read_bytes())
            await step(node, old_operator, 1)
        for node in nodes:  # 2: certificates from CA 2
            replace_pair(new.node(node.name), str(Path(node.state_dir) / "node.crt"),
                         str(Path(node.state_dir) / "node.key"))
            await step(node, old_operator, 2)
        await wait_for(lambda: all_gossiping(old_operator, 2), 20, "gossip with CA 2 certificates")
        for node in nodes:  # 3: trust CA 2 only
            shutil.copyfile(new.ca, Path(node.state_dir) / "trust.pem")
            await step(node, new_operator, 3)
        await wait_for(lambda: all_gossiping(new_operator, 3), 20, "gossip under CA 2 alone")
        await wait_for(lambda: balanced(new_operator), 60, "r0's load to spread")

        # CA 1 is gone: its certificates are refused, whoever holds them.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await statuses(old_operator)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        old_peer = old.node("r9")
        assert await exchange_ok(nodes[0].address, TlsFiles(both, old_peer.cert, old_peer.key), "r9") is False
        # ...and so is an expired certificate of the current CA. The handshakes never become
        # calls: the agent counts them from gRPC core's log (agent/runtime/core_log.py).
        expired = new.node("r8", days=1, not_before=NOW - dt.timedelta(days=10))
        assert await exchange_ok(nodes[0].address, TlsFiles((new.ca,), expired.cert, expired.key), "r8") is False

        async def handshakes_counted() -> bool:
            counters = (await statuses(new_operator))[0]["counters"]
            return (counters.get("rejected_inputs{reason=tls_untrusted_ca}", 0) >= 1
                    and counters.get("rejected_inputs{reason=tls_certificate_expired}", 0) >= 1)
        await wait_for(handshakes_counted, 10, "refused handshakes to be counted")
        agent_log = (Path(nodes[0].state_dir) / "agent.log").read_text(errors="replace")
        assert "refused a TLS handshake (tls_certificate_expired)" in agent_log
        assert "refused a TLS handshake (tls_untrusted_ca)" in agent_log

        # And balancing goes on under CA 2: load put on r1 now spreads too.
        client = ControlClient(nodes[1].address, new_operator)
        try:
            for i in range(6, 12):
                await client.create_domain(spec(i))
        finally:
            await client.close()
        before = sum(s["counters"].get("migrations_succeeded", 0) for s in await statuses(new_operator))
        await wait_for(lambda: balanced(new_operator), 60, "r1's load to spread")
        st = await statuses(new_operator)
        assert sum(s["counters"].get("migrations_succeeded", 0) for s in st) > before
        held = sorted(d["id"] for s in st for d in s["domains"] if d["state"] != "reserved-in")
        assert held == sorted(f"dom-{i}" for i in range(12))
        assert all(s["counters"].get("tls_reload_failed", 0) == 0 for s in st)
    finally:
        stop_processes(nodes)
