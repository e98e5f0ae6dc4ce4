"""Client side of the peer protocols: one cached grpc.aio channel per address."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import grpc

from agent.adapters import grpc_codec as codec
from agent.core.config import AgentConfig
from agent.core.messages import CommitDecision, Exchange, PrepareDecision, PrepareRequest
from shoal.v1 import gossip_pb2_grpc, membership_pb2, membership_pb2_grpc, migration_pb2, migration_pb2_grpc


def channel_options(config: AgentConfig) -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", config.message_bytes_max),
            ("grpc.max_receive_message_length", config.message_bytes_max)]


class PeerClients:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._channels: dict[str, grpc.aio.Channel] = {}

    @property
    def timeout_s(self) -> float:
        return self.config.rpc_timeout_ms / 1000

    def _channel(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            ch = grpc.aio.insecure_channel(address, options=channel_options(self.config))
            self._channels[address] = ch
        return ch

    async def forget(self, address: str) -> None:
        ch = self._channels.pop(address, None)
        if ch is not None:
            await ch.close()

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close(grace=None)
        self._channels.clear()

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
        stub = migration_pb2_grpc.MigrationStub(self._channel(address))
        loop = asyncio.get_running_loop()

        async def stream() -> AsyncIterator[migration_pb2.TransferChunk]:
            start, sent = loop.time(), 0
            for first_page, data in chunks:
                yield migration_pb2.TransferChunk(migration_id=migration_id, round=round_no,
                                                  first_page=first_page, data=data)
                sent += len(data)
                if rate_bytes_s:
                    ahead_s = sent / rate_bytes_s - (loop.time() - start)
                    if ahead_s > 0:
                        await asyncio.sleep(ahead_s)

        # The stream may be long; its deadline is the lease, not one RPC timeout.
        resp = await stub.Transfer(stream(), timeout=self.config.reservation_lease_ms / 1000)
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
