"""Limits on the gRPC server: per-peer rate limits (the buckets are
agent.core.rate_limit) and the largest message a handler will take.

A call is charged to the peer's certificate identity (`node/<id>`,
`operator/<name>`), so a peer cannot escape its bucket by reconnecting from
another port. Under --insecure there is no identity and the key is the
connection's address: good enough for a local experiment, not a defence.

A refused call ends RESOURCE_EXHAUSTED with the reason before any handler
runs, is counted as `rejected_inputs{reason=rate_limited}`, and is logged
at most once per peer every LOG_EVERY_S (a flood must not also flood the log).

Message size: gRPC's core refuses a message over its receive limit before
any Python code runs, so nobody could count or log it. The server's core
limit is therefore SEEN_FACTOR x `message_bytes_max` (what a hostile peer can
make an agent buffer), and MessageSizeInterceptor refuses, counts
(`rejected_inputs{reason=oversized}`) and logs every request message over
`message_bytes_max` itself, with RESOURCE_EXHAUSTED naming the limit. Only a
message over SEEN_FACTOR x the limit is still refused by the core unseen (the
caller gets RESOURCE_EXHAUSTED from it).
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable

import grpc

from agent.adapters.tls import guard_handler, peer_identity, stream_responses
from agent.core.rate_limit import RateLimiter

log = logging.getLogger("shoal.limits")
LOG_EVERY_S = 10.0
SEEN_FACTOR = 4


class ThrottledLog:
    """A warning per key at most every LOG_EVERY_S, saying how many were left out; bounded keys."""

    def __init__(self, keys_max: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.keys_max = keys_max
        self.clock = clock
        self._last_s: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args) -> None:
        now_s = self.clock()
        last = self._last_s.get(key)
        if last is not None and now_s - last < LOG_EVERY_S:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if key not in self._last_s and len(self._last_s) >= self.keys_max:
            self._last_s.clear()
            self._suppressed.clear()
        more = self._suppressed.pop(key, 0)
        self._last_s[key] = now_s
        log.warning(msg + ("; %d more refused since the last line" if more else ""), *args, *((more,) if more else ()))


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    """`limits` maps a method prefix to (name, RateLimiter); methods no prefix matches are not limited."""

    def __init__(self, limits: dict[str, tuple[str, RateLimiter]], *,
                 on_refused: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.on_refused = on_refused
        self.clock = clock
        self._log = ThrottledLog(max((lim.peers_max for _, lim in limits.values()), default=1024), clock)

    def limit_for(self, method: str) -> tuple[str, RateLimiter] | None:
        matches = [p for p in self.limits if method.startswith(p)]
        return self.limits[max(matches, key=len)] if matches else None

    @staticmethod
    def peer_key(context: grpc.aio.ServicerContext) -> str:
        identity = peer_identity(context)
        return f"{identity.kind}/{identity.name}" if identity is not None else context.peer()

    async def _check(self, method: str, name: str, limiter: RateLimiter, context: grpc.aio.ServicerContext) -> None:
        peer = self.peer_key(context)
        now_s = self.clock()
        verdict = limiter.on_call(peer, now_s)
        if verdict.allowed:
            return
        if self.on_refused is not None:
            self.on_refused(name, peer)
        self._log.warning(f"{name}:{peer}", "rate limited %s on %s: over %g calls/s (burst %g)", peer, method,
                          limiter.rate_per_s, limiter.burst)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"rate limited: {peer} exceeded {name}_rate_limit_per_s={limiter.rate_per_s:g} "
                            f"(burst {limiter.burst:g}); retry in {verdict.retry_after_s:.3f} s")

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        found = self.limit_for(method)
        if found is None:
            return handler
        name, limiter = found
        return guard_handler(handler, functools.partial(self._check, method, name, limiter))


class _Oversized:
    """Stands in for a request message that was too large to decode."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


class MessageSizeInterceptor(grpc.aio.ServerInterceptor):
    """Refuses request messages over `limit_bytes` with RESOURCE_EXHAUSTED, before decoding them;
    `on_refused(method, peer, size)` counts. The server's core limit must be above `limit_bytes`
    (SEEN_FACTOR x) or the core refuses them first, unseen."""

    def __init__(self, limit_bytes: int, *, on_refused: Callable[[str, str, int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_bytes = limit_bytes
        self.on_refused = on_refused
        self._log = ThrottledLog(1024, clock)

    def _deserializer(self, inner: Callable | None) -> Callable:
        limit = self.limit_bytes

        def deserialize(raw: bytes):
            if len(raw) > limit:
                return _Oversized(len(raw))
            return inner(raw) if inner is not None else raw
        return deserialize

    async def _refuse(self, method: str, size: int, context: grpc.aio.ServicerContext) -> None:
        peer = RateLimitInterceptor.peer_key(context)
        if self.on_refused is not None:
            self.on_refused(method, peer, size)
        self._log.warning(f"oversized:{peer}", "refused a message of %d bytes from %s on %s: over "
                          "message_bytes_max=%d", size, peer, method, self.limit_bytes)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"message of {size} bytes exceeds message_bytes_max={self.limit_bytes}")

    async def _checked(self, method: str, request, context, streaming: bool):
        """The request (or a checking iterator over the stream of them); refuses an oversized one."""
        if not streaming:
            if isinstance(request, _Oversized):
                await self._refuse(method, request.size, context)
            return request

        async def requests():
            async for item in request:
                if isinstance(item, _Oversized):
                    await self._refuse(method, item.size, context)
                yield item
        return requests()

    def _unary_response(self, method: str, behavior: Callable, streaming: bool) -> Callable:
        async def checked(request, context):
            result = behavior(await self._checked(method, request, context, streaming), context)
            return await result if inspect.isawaitable(result) else result
        return checked

    def _stream_response(self, method: str, behavior: Callable, streaming: bool) -> Callable:
        async def checked(request, context):
            async for response in stream_responses(behavior(await self._checked(method, request, context,
                                                                                streaming), context)):
                yield response
        return checked

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        deserialize = self._deserializer(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary_response(method, handler.unary_unary, False), deserialize, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary_response(method, handler.stream_unary, True), deserialize, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream_response(method, handler.unary_stream, False), deserialize,
                handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            self._stream_response(method, handler.stream_stream, True), deserialize, handler.response_serializer)
