"""Telemetry over MQTT: an agent's state and events, published without ever blocking it.

Theory of operation. The agent calls `publish_state` / `publish_event`,
which encode the message at once (so a value that can't be encoded fails in
the caller, where the bug is) and append it to a bounded buffer; they never
wait for the network. One background task owns the MQTT connection
(aiomqtt): it connects, sends the buffer oldest first, and when the broker
goes away it reconnects with exponential backoff and jitter, capped. While
disconnected the buffer keeps at most `buffer_max` messages: a new one
pushes out the oldest, and every message pushed out is counted in
`dropped`. A message whose send failed goes back to the head of the buffer,
so a broker restart loses nothing that still fits.

Topics: shoal/<cluster>/<node>/state (retained: a new subscriber sees the
last state at once) and shoal/<cluster>/<node>/events (not retained).
Payloads are one JSON object or one msgpack map; `decode` reads either.

`EmbeddedBroker` runs an amqtt broker in-process, for `shoal cluster up`
and for tests; any MQTT 3.1.1 broker (mosquitto) works the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from dataclasses import dataclass
from random import Random
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import msgpack

from agent.core.validation import ID_RE

log = logging.getLogger("shoal.telemetry")

FORMATS = ("json", "msgpack")
DEFAULT_PORT = 1883


class TelemetryError(ValueError):
    """The publisher was configured wrongly (bad URL, id or format)."""


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    retain: bool


def encode(fmt: str, message: dict[str, Any]) -> bytes:
    if not isinstance(message, dict):
        raise TypeError(f"telemetry messages are dicts, got {type(message).__name__}")
    if fmt == "json":
        # allow_nan=False: NaN is not JSON, and a subscriber in another language would choke on it.
        return json.dumps(message, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
    return msgpack.packb(message, use_bin_type=True)


def decode(fmt: str, payload: bytes) -> dict[str, Any]:
    if fmt == "json":
        return json.loads(payload)
    return msgpack.unpackb(payload, raw=False)


def parse_broker_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise TelemetryError(f"broker URL {url!r} is not mqtt://HOST[:PORT]")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise TelemetryError(f"broker URL {url!r}: {exc}") from exc
    return parts.hostname, port


class TelemetryPublisher:
    """Publishes one node's state and events to an MQTT broker; see the module docstring.

    Call `publish_*` from the event loop's thread. Counters: `published`,
    `dropped`, `connect_failures`, `disconnects`, `connected` (see `stats()`).
    """

    def __init__(self, broker_url: str, cluster: str, node_id: str, fmt: str = "json", buffer_max: int = 1000, *,
                 qos: int = 1, backoff_initial_s: float = 0.1, backoff_max_s: float = 10.0,
                 connect_timeout_s: float = 5.0, publish_timeout_s: float = 5.0, keepalive_s: int = 30,
                 flush_timeout_s: float = 2.0, rng: Random | None = None) -> None:
        self.host, self.port = parse_broker_url(broker_url)
        for what, value in (("cluster", cluster), ("node id", node_id)):
            if not isinstance(value, str) or not ID_RE.match(value):
                raise TelemetryError(f"{what} {value!r} is not 1-128 characters of [A-Za-z0-9._:-]")
        if fmt not in FORMATS:
            raise TelemetryError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if buffer_max < 1:
            raise TelemetryError(f"buffer_max must be at least 1, got {buffer_max}")
        if qos not in (0, 1):
            raise TelemetryError(f"qos must be 0 or 1, got {qos}")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise TelemetryError("need 0 < backoff_initial_s <= backoff_max_s")
        self.cluster, self.node_id, self.fmt = cluster, node_id, fmt
        self.buffer_max, self.qos = buffer_max, qos
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.connect_timeout_s, self.publish_timeout_s = connect_timeout_s, publish_timeout_s
        self.keepalive_s, self.flush_timeout_s = keepalive_s, flush_timeout_s
        self.rng = rng or Random()
        self.state_topic = f"shoal/{cluster}/{node_id}/state"
        self.events_topic = f"shoal/{cluster}/{node_id}/events"
        self._buffer: deque[Outgoing] = deque()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.published = 0
        self.dropped = 0
        self.connect_failures = 0
        self.connects = 0
        self.disconnects = 0
        self.connected = False

    # -- the caller's side: never blocks --------------------------------------------------
    def publish_state(self, state: dict[str, Any]) -> None:
        self._enqueue(Outgoing(self.state_topic, encode(self.fmt, state), retain=True))

    def publish_event(self, event: dict[str, Any]) -> None:
        self._enqueue(Outgoing(self.events_topic, encode(self.fmt, event), retain=False))

    def _enqueue(self, msg: Outgoing) -> None:
        if len(self._buffer) >= self.buffer_max:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(msg)
        self._wake.set()

    def _requeue(self, msg: Outgoing) -> None:
        """A message whose send failed goes back first, unless newer ones filled its place."""
        if len(self._buffer) >= self.buffer_max:
            self.dropped += 1
        else:
            self._buffer.appendleft(msg)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def stats(self) -> dict[str, int | bool]:
        return {"published": self.published, "dropped": self.dropped, "buffered": self.buffered,
                "connect_failures": self.connect_failures, "connects": self.connects,
                "disconnects": self.disconnects, "connected": self.connected}

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("telemetry publisher already started")
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"telemetry-{self.node_id}")

    async def stop(self) -> None:
        """Sends what is buffered if connected (for at most flush_timeout_s), then disconnects."""
        if self._task is None:
            return
        self._stop.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=self.flush_timeout_s)
        except asyncio.TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self.connected = False
        if self._buffer:
            log.info("%s: telemetry stopped with %d messages undelivered", self.node_id, len(self._buffer))

    # -- the connection's side ---------------------------------------------------------------
    async def _run(self) -> None:
        backoff_s = self.backoff_initial_s
        while not self._stop.is_set():
            established = False
            try:
                client = aiomqtt.Client(self.host, self.port, identifier=f"shoal-{self.cluster}-{self.node_id}",
                                        keepalive=self.keepalive_s, timeout=self.connect_timeout_s,
                                        clean_session=True)
                async with client:
                    established = True
                    self.connected = True
                    self.connects += 1
                    backoff_s = self.backoff_initial_s
                    log.info("%s: telemetry connected to mqtt://%s:%d", self.node_id, self.host, self.port)
                    await self._send_until_disconnected(client)
            except aiomqtt.MqttError as exc:
                if established:
                    self.disconnects += 1
                    log.warning("%s: telemetry connection to mqtt://%s:%d lost: %s", self.node_id, self.host,
                                self.port, exc)
                else:
                    self.connect_failures += 1
                    log.debug("%s: telemetry cannot connect to mqtt://%s:%d: %s", self.node_id, self.host,
                              self.port, exc)
            finally:
                self.connected = False
            if self._stop.is_set():
                return
            # Equal jitter: agents that lost the same broker don't all come back at once.
            delay_s = backoff_s * (0.5 + 0.5 * self.rng.random())
            backoff_s = min(backoff_s * 2, self.backoff_max_s)
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=delay_s)
            except asyncio.TimeoutError:
                pass

    async def _send_until_disconnected(self, client: aiomqtt.Client) -> None:
        """Sends the buffer as it fills; returns once stopping and empty; raises MqttError on a lost connection."""
        watcher = asyncio.ensure_future(_wait_disconnected(client))
        try:
            while True:
                if not self._buffer:
                    if self._stop.is_set():
                        return
                    self._wake.clear()
                    await _first(self._wake.wait(), watcher)
                    continue
                msg = self._buffer.popleft()
                sending = asyncio.ensure_future(client.publish(msg.topic, msg.payload, qos=self.qos,
                                                               retain=msg.retain, timeout=self.publish_timeout_s))
                try:
                    await _first(sending, watcher)
                except BaseException:
                    self._requeue(msg)
                    raise
                self.published += 1
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


async def _wait_disconnected(client: aiomqtt.Client) -> None:
    # We subscribe to nothing, so the message iterator yields nothing and
    # raises MqttError exactly when the connection drops.
    async for _ in client.messages:
        pass
    raise aiomqtt.MqttError("message iterator ended")


async def _first(work: Any, watcher: asyncio.Future) -> None:
    """Awaits `work` unless `watcher` (the disconnection) finishes first; re-raises either's error."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    if task in done:
        task.result()
        return
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    watcher.result()  # raises the MqttError of the lost connection
    raise aiomqtt.MqttError("disconnected")


class EmbeddedBroker:
    """An amqtt MQTT broker in this process on HOST:PORT (port 0 picks one); anonymous, no persistence."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._broker = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> str:
        """Starts listening; returns the broker URL (with the bound port)."""
        from amqtt.broker import Broker  # imported here: only the launcher and tests need a broker

        if self._broker is not None:
            raise RuntimeError("broker already started")
        config = {"listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                  "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
        broker = Broker(config)
        await broker.start()
        self._broker = broker
        if self.port == 0:
            # amqtt has no public accessor for the bound port; its listener is an asyncio.Server.
            self.port = broker._servers["default"].instance.sockets[0].getsockname()[1]
        log.info("embedded MQTT broker listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        """Closes every client connection and the listener; start() may be called again (same port)."""
        if self._broker is None:
            return
        broker, self._broker = self._broker, None
        await broker.shutdown()

    async def __aenter__(self) -> "EmbeddedBroker":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
