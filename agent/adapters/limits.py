"""Per-peer rate limits on the gRPC server (the buckets are agent.core.rate_limit).

A call is charged to the peer's certificate identity (`node/<id>`,
`operator/<name>`), so a peer cannot escape its bucket by reconnecting from
another port. Under --insecure there is no identity and the key is the
connection's address: good enough for a local experiment, not a defence.

A refused call ends RESOURCE_EXHAUSTED with the reason before any handler
runs, is counted as `rejected_inputs{reason=rate_limited}`, and is logged
at most once per peer every LOG_EVERY_S (a flood must not also flood the log).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import grpc

from agent.adapters.tls import guard_handler, peer_identity
from agent.core.rate_limit import RateLimiter

log = logging.getLogger("shoal.limits")
LOG_EVERY_S = 10.0


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    """`limits` maps a method prefix to (name, RateLimiter); methods no prefix matches are not limited."""

    def __init__(self, limits: dict[str, tuple[str, RateLimiter]], *,
                 on_refused: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.on_refused = on_refused
        self.clock = clock
        self._last_log_s: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

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
        self._maybe_log(peer, name, method, limiter, now_s)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"rate limited: {peer} exceeded {name}_rate_limit_per_s={limiter.rate_per_s:g} "
                            f"(burst {limiter.burst:g}); retry in {verdict.retry_after_s:.3f} s")

    def _maybe_log(self, peer: str, name: str, method: str, limiter: RateLimiter, now_s: float) -> None:
        key = f"{name}:{peer}"
        last = self._last_log_s.get(key)
        if last is not None and now_s - last < LOG_EVERY_S:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if len(self._last_log_s) >= limiter.peers_max:  # bounded like the buckets
            self._last_log_s.clear()
            self._suppressed.clear()
        more = self._suppressed.pop(key, 0)
        self._last_log_s[key] = now_s
        log.warning("rate limited %s on %s: over %g calls/s (burst %g)%s", peer, method, limiter.rate_per_s,
                    limiter.burst, f"; {more} more refused since the last line" if more else "")

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
