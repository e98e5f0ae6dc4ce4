"""Client side of the peer protocols: one cached grpc.aio channel per address."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import grpc

from agent.adapters import grpc_codec as codec
from agent.adapters import replica_codec
from agent.adapters.certs import NODE_TLS_NAME, node_tls_name
from agent.adapters.tls import TlsFiles, channel_credentials, secure_channel_options
from agent.core.config import AgentConfig
from agent.core.replicas import Conflict, Replica, ReplicaPush
from agent.core.messages import CommitDecision, Exchange, PrepareDecision, PrepareRequest
from shoal.v1 import (gossip_pb2_grpc, membership_pb2, membership_pb2_grpc, migration_pb2, migration_pb2_grpc,
                      replica_pb2, replica_pb2_grpc)


def channel_options(config: AgentConfig) -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", config.message_bytes_max),
            ("grpc.max_receive_message_length", config.message_bytes_max)]


class PeerClients:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._channels: dict[str, grpc.aio.Channel] = {}
        # address -> the node id membership says answers there: that node's certificate is required
        # of the server (its per-node DNS SAN), not just any cluster node's (see `expect`).
        self._expected: dict[str, str] = {}
        # Mutual TLS: set by use_tls (the agent's own node certificate); None is plaintext (--insecure).
        self.tls: TlsFiles | None = None
        self._credentials: grpc.ChannelCredentials | None = None
        self._tls_generation = 0
        self._retiring: set[asyncio.Task] = set()

    @property
    def timeout_s(self) -> float:
        return self.config.rpc_timeout_ms / 1000

    def use_tls(self, tls: TlsFiles | None) -> None:
        """Dials peers with this certificate and trust from now on (None: plaintext).

        Re-reads the files, so it is also the reload on SIGHUP: cached channels
        are replaced, and the old ones close once their in-flight calls end (a
        running migration keeps its stream), so every new call handshakes anew.
        Raises CertError and keeps the current credentials if a file is bad.
        """
        credentials = channel_credentials(tls.ca, tls.cert, tls.key) if tls is not None else None
        self.tls, self._credentials = tls, credentials
        self._tls_generation += 1
        old, self._channels = self._channels, {}
        for ch in old.values():
            self._retire(ch)

    def expect(self, address: str, node_id: str) -> None:
        """Membership says `node_id` answers at `address`: from now on a call there verifies that
        the server's certificate is that node's (`certs.node_tls_name`), so a cluster node that
        took over the address (or a misrouted connection) fails the handshake instead of being
        talked to as `node_id`. Unknown addresses (seeds at join) verify "a cluster node"."""
        if self._expected.get(address) == node_id:
            return
        self._expected[address] = node_id
        ch = self._channels.pop(address, None)
        if ch is not None:
            self._retire(ch)

    def expected(self, address: str) -> str | None:
        return self._expected.get(address)

    def _retire(self, ch: grpc.aio.Channel) -> None:
        # Grace: the longest call a channel can carry, a transfer stream within its lease.
        task = asyncio.ensure_future(ch.close(grace=self.config.reservation_lease_ms / 1000))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _channel(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            if self._credentials is None:
                ch = grpc.aio.insecure_channel(address, options=channel_options(self.config))
            else:
                node_id = self._expected.get(address)
                name = NODE_TLS_NAME if node_id is None else node_tls_name(node_id)
                # The generation keeps a reloaded channel off connections made with the old certificate.
                options = [*channel_options(self.config), *secure_channel_options(name),
                           ("shoal.tls_generation", self._tls_generation)]
                ch = grpc.aio.secure_channel(address, self._credentials, options=options)
            self._channels[address] = ch
        return ch

    async def forget(self, address: str) -> None:
        self._expected.pop(address, None)
        ch = self._channels.pop(address, None)
        if ch is not None:
            await ch.close()

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close(grace=None)
        self._channels.clear()
        for task in list(self._retiring):
            task.cancel()

    async def exchange(self, address: str, ex: Exchange) -> tuple[Exchange, int, int]:
        """One push-pull; returns the answer and the bytes sent and received."""
        stub = gossip_pb2_grpc.GossipStub(self._channel(address))
        req = codec.exchange_request_to_pb(ex)
        resp = await stub.Exchange(req, timeout=self.timeout_s)
        return codec.exchange_response_from_pb(resp, address), req.ByteSize(), resp.ByteSize()

    async def deliver(self, address: str, payload: bytes, timeout_s: float) -> None:
        """Sends one encoded membership message (fire and forget, like SWIM's UDP)."""
        stub = membership_pb2_grpc.MembershipStub(self._channel(address))
        await stub.Deliver(membership_pb2.MembershipPacket(payload=payload), timeout=timeout_s)

    async def prepare(self, address: str, req: PrepareRequest) -> PrepareDecision:
        stub = migration_pb2_grpc.MigrationStub(self._channel(address))
        resp = await stub.Prepare(codec.prepare_to_pb(req), timeout=self.timeout_s)
        return PrepareDecision(resp.accepted, resp.reason, resp.lease_ms)

    async def transfer(self, address: str, migration_id: str, chunks: Iterable[tuple[int, bytes]],
                       round_no: int = 1, rate_bytes_s: float | None = None) -> tuple[int, str]:
        """Streams one pre-copy round; paces it to rate_bytes_s (the bandwidth limit)."""
        # Transfer encoded by hand: a chunk's pages are copied once, not three times (grpc_codec).
        call = self._channel(address).stream_unary(
            "/shoal.v1.Migration/Transfer", request_serializer=codec.encode_transfer_chunk,
            response_deserializer=migration_pb2.TransferResponse.FromString)
        loop = asyncio.get_running_loop()

        async def stream() -> AsyncIterator[codec.TransferChunkView]:
            start, sent = loop.time(), 0
            for first_page, data in chunks:
                yield codec.TransferChunkView(migration_id, round_no, first_page, data)
                sent += len(data)
                if rate_bytes_s:
                    ahead_s = sent / rate_bytes_s - (loop.time() - start)
                    if ahead_s > 0:
                        await asyncio.sleep(ahead_s)

        # The stream may be long; its deadline is the lease, not one RPC timeout.
        resp = await call(stream(), timeout=self.config.reservation_lease_ms / 1000)
        return resp.bytes_received, resp.image_hash

    async def commit(self, address: str, migration_id: str, epoch: int, image_hash: str) -> CommitDecision:
        stub = migration_pb2_grpc.MigrationStub(self._channel(address))
        resp = await stub.Commit(migration_pb2.CommitRequest(migration_id=migration_id, epoch=epoch,
                                                             image_hash=image_hash), timeout=self.timeout_s)
        return CommitDecision(resp.committed, resp.reason, resp.epoch)

    async def abort(self, address: str, migration_id: str, reason: str) -> str:
        stub = migration_pb2_grpc.MigrationStub(self._channel(address))
        resp = await stub.Abort(migration_pb2.AbortRequest(migration_id=migration_id, reason=reason),
                                timeout=self.timeout_s)
        return codec.outcome_from_pb(resp.outcome)

    async def locate(self, address: str, domain_id: str) -> tuple[bool, int]:
        stub = migration_pb2_grpc.MigrationStub(self._channel(address))
        resp = await stub.Locate(migration_pb2.LocateRequest(domain_id=domain_id), timeout=self.timeout_s)
        return resp.held, resp.epoch

    async def query(self, address: str, migration_id: str) -> tuple[str, int]:
        stub = migration_pb2_grpc.MigrationStub(self._channel(address))
        resp = await stub.Query(migration_pb2.QueryRequest(migration_id=migration_id), timeout=self.timeout_s)
        return codec.outcome_from_pb(resp.outcome), resp.epoch

    async def replicate(self, address: str, push: ReplicaPush) -> tuple[list[Conflict], int, int]:
        """Pushes a buddy its full replica set (agent.core.replicas.ReplicaPush); returns the
        conflicts it answered and the bytes sent and received."""
        stub = replica_pb2_grpc.ReplicaStub(self._channel(address))
        req = replica_pb2.ReplicateRequest(owner_id=push.owner_id,
                                           replicas=[replica_codec.replica_to_pb(r) for r in push.replicas])
        resp = await stub.Replicate(req, timeout=self.timeout_s)
        return [replica_codec.conflict_from_pb(c) for c in resp.conflicts], req.ByteSize(), resp.ByteSize()

    async def adopt(self, address: str, replica: Replica, epoch: int, coordinator_id: str) -> tuple[bool, str]:
        """Asks a peer to restart a dead owner's domain at `epoch`; returns (adopted, reason)."""
        stub = replica_pb2_grpc.ReplicaStub(self._channel(address))
        resp = await stub.Adopt(replica_pb2.AdoptRequest(replica=replica_codec.replica_to_pb(replica), epoch=epoch,
                                                         coordinator_id=coordinator_id), timeout=self.timeout_s)
        return resp.adopted, resp.reason

    async def put_checkpoint(self, address: str, owner_id: str, domain_id: str, epoch: int, taken_model_s: float,
                             document: bytes, dead_owner_id: str = "") -> tuple[bool, str]:
        """Sends a buddy a checkpoint of one of my domains (a saved-domain document) in pieces of
        transfer_chunk_bytes, or with `dead_owner_id` forwards a dead owner's to the peer about
        to adopt it; returns (stored, reason). The deadline is the reservation lease, as for a
        migration's stream. `owner_id` is always the sender."""
        stub = replica_pb2_grpc.ReplicaStub(self._channel(address))
        step = self.config.transfer_chunk_bytes
        view = memoryview(document)

        def pieces():
            yield replica_pb2.CheckpointPiece(owner_id=owner_id, domain_id=domain_id, epoch=epoch,
                                              taken_model_s=taken_model_s, data=bytes(view[:step]),
                                              dead_owner_id=dead_owner_id)
            for start in range(step, len(view), step):
                yield replica_pb2.CheckpointPiece(data=bytes(view[start:start + step]))
        resp = await stub.PutCheckpoint(pieces(), timeout=self.config.reservation_lease_ms / 1000)
        return resp.stored, resp.reason

    async def holds(self, address: str, domain_id: str) -> bool:
        """Does the node at `address` hold a replica of the domain or run it?"""
        stub = replica_pb2_grpc.ReplicaStub(self._channel(address))
        resp = await stub.Holds(replica_pb2.HoldsRequest(domain_id=domain_id), timeout=self.timeout_s)
        return resp.replica or resp.running
