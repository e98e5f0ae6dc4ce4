"""Three agents in this process, each its own grpc.aio server on 127.0.0.1:0:
gossip, balancing, migration with real bytes, and bad input over the wire."""

from __future__ import annotations

import math
from dataclasses import replace

import grpc
import pytest

from agent.adapters import grpc_codec as codec
from agent.adapters.control_client import ControlClient
from agent.adapters.limits import SEEN_FACTOR
from agent.core.messages import PrepareRequest
from agent.runtime.agent import Refused
from hypervisor.domain import DomainSpec
from hypervisor.workload import WorkloadSpec
from shoal.v1 import gossip_pb2, gossip_pb2_grpc, migration_pb2, migration_pb2_grpc, types_pb2
from tests.conftest import wait_until


def spec(i: int, level: float = 0.75, vcpus: int = 2, memory_mib: int = 1024) -> DomainSpec:
    return DomainSpec(domain_id=f"dom-{i}", vcpus=vcpus, memory_mib=memory_mib,
                      workload=WorkloadSpec("constant", (("level", level),)), image_seed=i)


ACTIVE = ("running", "migrating-out")


def holders(cluster, active_only: bool = False) -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for a in cluster.agents:
        for d in a.host.domains.values():
            if not active_only or d.state.value in ACTIVE:
                where.setdefault(d.domain_id, []).append(a.node_id)
    return where


def no_migrations_in_flight(cluster) -> bool:
    return all(not a.status()["migrations"] for a in cluster.agents)


async def test_three_agents_learn_each_other_and_balance_a_skewed_node(local_cluster):
    agents = [await local_cluster.add(f"n{i}") for i in range(3)]
    for i in range(9):  # 9 x 1.5 cores on an 8-core node: 169 %
        agents[0].create_domain(spec(i))
    await wait_until(lambda: all(len(a.dissemination.entries) == 2 for a in agents), 10, "full views")
    def balanced() -> bool:
        # Invariant 1 at every observation: never two active copies of a domain.
        assert all(len(h) == 1 for h in holders(local_cluster, active_only=True).values())
        return max(a.host.sample(a.model_time_s()).cpu_utilization for a in agents) <= 0.8

    await wait_until(balanced, 30, "balance under the watermark")
    for a in agents:
        a.balancing = False
    await wait_until(lambda: no_migrations_in_flight(local_cluster), 10, "in-flight migrations to finish")
    where = holders(local_cluster)
    assert sorted(where) == [f"dom-{i}" for i in range(9)]
    assert all(len(h) == 1 for h in where.values())
    moved = [d for a in agents[1:] for d in a.host.domains.values()]
    assert moved and all(d.epoch == 2 for d in moved)
    # the bytes really moved: the arrived image hashes equal to a fresh copy of the source's
    from hypervisor.memory import MemoryImage
    for d in moved:
        owner = next(a for a in agents if d.domain_id in a.host.domains)
        fresh = MemoryImage(d.spec.memory_mib, owner.config.image_real_bytes_max, seed=d.spec.image_seed)
        assert owner.images[d.domain_id].content_hash() == fresh.content_hash()


async def test_operator_migration_over_control_api_moves_domain_and_raises_epoch(local_cluster):
    a = await local_cluster.add("a")
    b = await local_cluster.add("b")
    a.balancing = b.balancing = False
    a.create_domain(spec(1, level=0.1))
    await wait_until(lambda: "b" in a.dissemination.entries, 10, "a to learn b")
    client = ControlClient(a.address)
    try:
        resp = await client.migrate("dom-1", "b")
        assert resp.migrated, resp.reason
        assert resp.epoch == 2 and resp.bytes_sent > 0
        # PREPARE and the transfer phase are disjoint parts of the whole migration.
        assert resp.prepare_s > 0 and resp.transfer_s > 0
        assert resp.prepare_s + resp.transfer_s <= resp.duration_s
        assert "dom-1" in b.host.domains and "dom-1" not in a.host.domains
        refused = await client.migrate("dom-1", "b")
        assert not refused.migrated and "no domain" in refused.reason
        st = await client.status()
        assert st["counters"]["migrations_succeeded"] == 1
    finally:
        await client.close()


async def test_prepare_answers_once_the_reserved_image_memory_is_faulted_in(local_cluster):
    from dataclasses import replace

    from agent.runtime import image_memory
    from tests.conftest import FAST

    real_bytes = 4 * image_memory.PREFAULT_BYTES_MIN  # big enough for the populating thread
    a = await local_cluster.add("a", config=replace(FAST, image_real_bytes_max=real_bytes), loops=False)
    channel = local_cluster.peer_channel(a.address, "src")
    try:
        stub = migration_pb2_grpc.MigrationStub(channel)
        req = PrepareRequest("m-pop", "src", spec(2, memory_mib=real_bytes // (1024 * 1024)), 1, 1.0, 8.0, 8.0,
                             real_bytes, False)
        resp = await stub.Prepare(codec.prepare_to_pb(req), timeout=5)
        assert resp.accepted, resp.reason
        buf = a.target.incoming["m-pop"].image.buffer
        if isinstance(buf, image_memory.PopulatingBuffer):  # Linux with libc: faulted in before the answer
            assert buf.populated.is_set()
        # A repeated PREPARE (idempotent) answers the same, with nothing left to wait for.
        assert (await stub.Prepare(codec.prepare_to_pb(req), timeout=5)).accepted
        assert await a.populate_reserved_image("m-unknown", 1.0) is False
    finally:
        await channel.close()


async def test_malformed_gossip_is_rejected_with_a_status_and_the_agent_keeps_running(local_cluster):
    a = await local_cluster.add("a", loops=False)
    channel = local_cluster.peer_channel(a.address, "evil")
    stub = gossip_pb2_grpc.GossipStub(channel)
    ok_channel = local_cluster.peer_channel(a.address, "ok")

    def entry(**over) -> types_pb2.NodeState:
        base = dict(schema_version=1, node_id="evil", address="127.0.0.1:9", heartbeat=1, cpu_capacity_cores=8,
                    cpu_demand_cores=1, memory_capacity_mib=1024, memory_used_mib=0)
        base.update(over)
        return types_pb2.NodeState(**base)

    try:
        cases = [entry(cpu_demand_cores=math.nan), entry(cpu_demand_cores=-2.0),
                 entry(cpu_demand_cores=8 * 101.0), entry(schema_version=7)]
        for bad in cases:
            req = gossip_pb2.ExchangeRequest(schema_version=1, sender_id="evil", sender_address="127.0.0.1:9",
                                             entries=[bad], averaging=gossip_pb2.Averaging())
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Exchange(req, timeout=2)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details()
        assert a.dissemination.entries == {}
        st = await ControlClient(a.address).status()
        assert sum(v for k, v in st["counters"].items() if k.startswith("rejected_inputs")) == len(cases)
        # a good exchange still works afterwards
        good = gossip_pb2.ExchangeRequest(schema_version=1, sender_id="ok", sender_address="127.0.0.1:9",
                                          entries=[entry(node_id="ok")], averaging=gossip_pb2.Averaging())
        reply = await gossip_pb2_grpc.GossipStub(ok_channel).Exchange(good, timeout=2)
        assert reply.responder_id == "a" and "ok" in a.dissemination.entries
    finally:
        await channel.close()
        await ok_channel.close()


async def test_oversized_messages_are_refused_counted_and_logged(local_cluster, caplog):
    a = await local_cluster.add("a", loops=False)
    limit = a.config.message_bytes_max
    channel = local_cluster.peer_channel(a.address, "x", options=[("grpc.max_send_message_length", 64 << 20)])

    def oversized() -> float:
        return a.metrics.counters.get("rejected_inputs{reason=oversized}", 0)

    def exchange(size: int) -> gossip_pb2.ExchangeRequest:
        return gossip_pb2.ExchangeRequest(schema_version=1, sender_id="x", sender_address="127.0.0.1:9",
                                          entries=[types_pb2.NodeState(node_id="x" * size)])

    async def one_chunk(size: int):
        yield migration_pb2.TransferChunk(migration_id="m-1", data=b"\0" * size)
    try:
        gossip = gossip_pb2_grpc.GossipStub(channel)
        # A unary request just over the limit: refused before decoding, with the limit named.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await gossip.Exchange(exchange(limit), timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"exceeds message_bytes_max={limit}" in info.value.details()
        assert oversized() == 1
        assert "x" * 64 not in str(a.dissemination.entries)
        # A message inside a client stream (a migration's memory chunks).
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await migration_pb2_grpc.MigrationStub(channel).Transfer(one_chunk(limit + 1), timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "message_bytes_max" in info.value.details()
        assert oversized() == 2
        assert any("refused a message of" in r.getMessage() and "node/x" in r.getMessage() for r in caplog.records)
        # Beyond SEEN_FACTOR x the limit gRPC's core refuses it unread (so a peer cannot make the
        # agent buffer more): still RESOURCE_EXHAUSTED, not counted as it was never seen.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await gossip.Exchange(exchange(SEEN_FACTOR * limit), timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in info.value.details()
        assert oversized() == 2
        # The agent is up and takes a message of the right size from the same peer.
        ok = gossip_pb2.ExchangeRequest(schema_version=1, sender_id="x", sender_address="127.0.0.1:9",
                                        averaging=gossip_pb2.Averaging())
        assert (await gossip.Exchange(ok, timeout=5)).responder_id == "a"
        assert (await ControlClient(a.address).status())["id"] == "a"
    finally:
        await channel.close()


async def test_prepare_that_would_exceed_target_memory_is_refused_over_grpc(local_cluster):
    a = await local_cluster.add("a", memory_mib=2048, loops=False)
    channel = local_cluster.peer_channel(a.address, "src")
    try:
        stub = migration_pb2_grpc.MigrationStub(channel)
        req = PrepareRequest("m-big", "src", spec(1, memory_mib=4096), 1, 1.0, 8.0, 8.0, 0, False)
        resp = await stub.Prepare(codec.prepare_to_pb(req), timeout=2)
        assert not resp.accepted and "memory" in resp.reason
        assert a.host.committed_memory_mib == 0
        chunk = migration_pb2.TransferChunk(migration_id="m-unknown", data=b"\0" * 4096)

        async def one():
            yield chunk
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Transfer(one(), timeout=2)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await channel.close()


async def test_create_domain_refusals_carry_status_codes(local_cluster):
    a = await local_cluster.add("a", memory_mib=2048, loops=False)
    client = ControlClient(a.address)
    try:
        await client.create_domain(spec(1, memory_mib=1024))
        for bad, code in [(spec(1), grpc.StatusCode.ALREADY_EXISTS),
                          (spec(2, memory_mib=4096), grpc.StatusCode.RESOURCE_EXHAUSTED),
                          (DomainSpec(domain_id="bad id", vcpus=1, memory_mib=10), grpc.StatusCode.INVALID_ARGUMENT)]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.create_domain(bad)
            assert info.value.code() == code, info.value.details()
    finally:
        await client.close()


async def test_status_reports_members_and_traffic_rates(local_cluster):
    agents = [await local_cluster.add(f"r{i}") for i in range(3)]
    await wait_until(lambda: all(sum(m.status.value == "alive" for m in a.membership.members()) == 3
                                 for a in agents), 10, "3 alive members everywhere")
    await wait_until(lambda: agents[0].traffic_rates()["messages_sent_per_s"] > 0, 10, "traffic rates")
    st = await ControlClient(agents[0].address).status()
    assert {m["id"] for m in st["members"]} == {"r0", "r1", "r2"}
    assert all(m["status"] == "alive" and m["incarnation"] >= 1 for m in st["members"])
    assert st["rates"]["messages_sent_per_s"] > 0 and st["rates"]["bytes_received_per_s"] > 0
    assert st["counters"]["membership_probes_sent"] > 0


async def test_incoming_reservation_is_listed_as_reserved_in(local_cluster):
    a = await local_cluster.add("a", loops=False)
    req = PrepareRequest("m-1", "src", spec(5, memory_mib=512), 1, 1.0, 8.0, 8.0,
                         MemoryImageForTest.bytes_for(512, a.config.image_real_bytes_max), False)
    assert a.on_prepare(req).accepted
    listed = {d["id"]: d for d in a.status()["domains"]}
    assert listed["dom-5"]["state"] == "reserved-in" and listed["dom-5"]["epoch"] == 2
    assert a.status()["migrations"][0]["direction"] == "in"


class MemoryImageForTest:
    @staticmethod
    def bytes_for(memory_mib: int, real_bytes_max: int) -> int:
        from hypervisor.memory import PAGE_SIZE, MemoryImage
        return MemoryImage.empty(memory_mib, real_bytes_max).real_page_count * PAGE_SIZE


async def test_garbage_membership_packets_are_rejected_and_counted(local_cluster):
    from shoal.v1 import membership_pb2, membership_pb2_grpc
    from agent.core import membership_codec
    from agent.core.membership_codec import MemberStatus, Ping, Update

    a = await local_cluster.add("a", loops=False)
    channel = local_cluster.peer_channel(a.address, "b")
    stub = membership_pb2_grpc.MembershipStub(channel)
    try:
        for payload in (b"", b"\x00\xff garbage", b"\x93\x01\x02"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Deliver(membership_pb2.MembershipPacket(payload=payload), timeout=2)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # a well-formed ping carrying a forged `dead` about the receiver: refuted, not obeyed
        before = a.membership.incarnation
        forged = Ping(sender_id="b", sender_address="127.0.0.1:9", seq=1, target_id="a",
                      updates=(Update(node_id="a", address=a.address, incarnation=before,
                                      status=MemberStatus.DEAD, source_id="b"),))
        await stub.Deliver(membership_pb2.MembershipPacket(payload=membership_codec.encode(forged)), timeout=2)
        assert a.membership.status_of("a") is MemberStatus.ALIVE and a.membership.incarnation > before
        st = a.status()
        assert sum(v for k, v in st["counters"].items() if k.startswith("rejected_inputs")) == 3
    finally:
        await channel.close()


async def test_affinity_groups_stay_together_and_anti_affinity_keeps_a_group_apart(local_cluster):
    a, b = await local_cluster.add("a"), await local_cluster.add("b")
    web, db = (("affinity", "web"),), (("anti-affinity", "db"),)
    b.create_domain(replace(spec(20, level=0.25), domain_id="db-1", labels=db))
    # a: 5 x 1.5 cores on 8 (94 %). The web pair is the cheapest to move (least memory), so
    # the rule would take it first if the group did not pin it.
    for i in (1, 2):
        a.create_domain(replace(spec(i, memory_mib=512), domain_id=f"web-{i}", labels=web))
    a.create_domain(replace(spec(3), domain_id="db-2", labels=db))
    for i in (4, 5):
        a.create_domain(spec(i))
    await wait_until(lambda: a.host.sample(a.model_time_s()).cpu_utilization <= 0.8, 30, "a under the watermark")
    a.balancing = b.balancing = False
    await wait_until(lambda: no_migrations_in_flight(local_cluster), 10, "in-flight migrations to finish")
    assert {"web-1", "web-2", "db-2"} <= set(a.host.domains) and "db-1" in b.host.domains
    assert {"dom-4", "dom-5"} & set(b.host.domains)
    # Anti-affinity is a hard rule at the target: a migration and a creation are refused with it.
    client = ControlClient(a.address)
    try:
        refused = await client.migrate("db-2", "b")
        assert not refused.migrated and "anti-affinity: 'db-1' of group 'db'" in refused.reason
    finally:
        await client.close()
    with pytest.raises(Refused, match="anti-affinity"):
        b.create_domain(replace(spec(6), domain_id="db-3", labels=db))
    # An HA restart runs it anyway (availability first).
    assert b.create_domain(replace(spec(6), domain_id="db-3", labels=db), anti_affinity=False).domain_id == "db-3"
