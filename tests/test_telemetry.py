"""Telemetry publisher against real brokers on 127.0.0.1: the embedded amqtt one, and mosquitto.

Subscribers here match topics exactly on receipt: amqtt has been seen
delivering retained messages to filters that don't match them.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest

from agent.adapters.telemetry import EmbeddedBroker, TelemetryError, TelemetryPublisher, decode
from tests.conftest import wait_until

CLUSTER, NODE = "c1", "node-7"
STATE, EVENTS = f"shoal/{CLUSTER}/{NODE}/state", f"shoal/{CLUSTER}/{NODE}/events"
DEADLINE_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Subscriber:
    """An aiomqtt client collecting (topic, payload, retain) for shoal/<cluster>/#."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes, bool]] = []

    def on(self, topic: str) -> list[tuple[bytes, bool]]:
        return [(payload, retain) for t, payload, retain in self.received if t == topic]


@asynccontextmanager
async def subscribed(port: int, topic_filter: str = f"shoal/{CLUSTER}/#"):
    sub = Subscriber()
    async with aiomqtt.Client("127.0.0.1", port, timeout=DEADLINE_S) as client:
        await client.subscribe(topic_filter, qos=1)  # returns after the SUBACK: subscribed from here on

        async def collect() -> None:
            async for m in client.messages:
                sub.received.append((str(m.topic), bytes(m.payload), bool(m.retain)))

        task = asyncio.create_task(collect())
        try:
            yield sub
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def publishing(url: str, **kwargs):
    kwargs.setdefault("backoff_initial_s", 0.05)
    kwargs.setdefault("backoff_max_s", 0.2)
    pub = TelemetryPublisher(url, CLUSTER, NODE, **kwargs)
    await pub.start()
    try:
        yield pub
    finally:
        await asyncio.wait_for(pub.stop(), timeout=DEADLINE_S)


@asynccontextmanager
async def broker(port: int = 0):
    b = EmbeddedBroker("127.0.0.1", port)
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_a_subscriber_receives_state_and_events(fmt):
    state = {"node_id": NODE, "cpu_utilization": 0.42, "domains": 3}
    event = {"kind": "migration_succeeded", "domain_id": "dom-1", "bytes": 1 << 20}
    async with broker() as b, subscribed(b.port) as sub, publishing(b.url, fmt=fmt) as pub:
        pub.publish_state(state)
        pub.publish_event(event)
        await wait_until(lambda: sub.on(STATE) and sub.on(EVENTS), DEADLINE_S, "state and event at the subscriber")
        assert decode(fmt, sub.on(STATE)[0][0]) == state
        assert decode(fmt, sub.on(EVENTS)[0][0]) == event
        assert pub.stats()["published"] == 2 and pub.stats()["connected"] is True
        # A subscriber that comes later gets the state (retained) but not the old event.
        async with subscribed(b.port) as late:
            await wait_until(lambda: late.on(STATE), DEADLINE_S, "retained state at a late subscriber")
            pub.publish_event({"kind": "marker"})
            await wait_until(lambda: late.on(EVENTS), DEADLINE_S, "marker event at the late subscriber")
        # (amqtt may hand the retained message over twice: one subscription, two deliveries.)
        assert set(late.on(STATE)) == {(sub.on(STATE)[0][0], True)}
        assert [decode(fmt, p) for p, _ in late.on(EVENTS)] == [{"kind": "marker"}]
    assert pub.stats()["dropped"] == 0


async def test_with_the_broker_down_the_publisher_buffers_drops_oldest_and_delivers_later():
    port = free_port()
    async with publishing(f"mqtt://127.0.0.1:{port}", buffer_max=5) as pub:
        for seq in range(8):
            pub.publish_state({"seq": seq})  # returns at once: nothing is listening
        assert (pub.buffered, pub.dropped, pub.published) == (5, 3, 0)
        await wait_until(lambda: pub.connect_failures >= 2, DEADLINE_S, "failed connection attempts")
        assert not pub.connected
        async with broker(port):
            await wait_until(lambda: pub.published == 5 and pub.buffered == 0, DEADLINE_S, "buffer delivered")
            assert pub.connected
            # Sent oldest first: the state the broker keeps is the newest one.
            async with subscribed(port) as late:
                await wait_until(lambda: late.on(STATE), DEADLINE_S, "retained state")
            assert decode("json", late.on(STATE)[0][0]) == {"seq": 7}
    assert pub.dropped == 3


async def test_after_the_broker_restarts_the_publisher_reconnects_and_resumes():
    async with broker() as first:
        port = first.port
        async with publishing(first.url) as pub:
            async with subscribed(port) as sub:
                pub.publish_event({"n": 1})
                await wait_until(lambda: sub.on(EVENTS), DEADLINE_S, "event before the restart")
            await first.stop()
            await wait_until(lambda: not pub.connected, DEADLINE_S, "publisher noticing the broker is gone")
            pub.publish_state({"phase": "outage"})  # accepted while disconnected
            assert pub.buffered == 1
            await wait_until(lambda: pub.connect_failures >= 1, DEADLINE_S, "a failed reconnection")
            async with broker(port):
                await wait_until(lambda: pub.connected and pub.buffered == 0, DEADLINE_S, "reconnection")
                async with subscribed(port) as after:
                    await wait_until(lambda: after.on(STATE), DEADLINE_S, "state from the outage")
                    pub.publish_event({"n": 2})
                    await wait_until(lambda: after.on(EVENTS), DEADLINE_S, "event after the restart")
                assert decode("json", after.on(STATE)[0][0]) == {"phase": "outage"}
                assert [decode("json", p) for p, _ in after.on(EVENTS)] == [{"n": 2}]
                assert (pub.connects, pub.disconnects, pub.published, pub.dropped) == (2, 1, 3, 0)


class DroppingBroker:
    """A minimal MQTT server: CONNACKs everyone, drops the first connection at its first PUBLISH
    (no PUBACK), PUBACKs on later connections. Records every PUBLISH payload it reads."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.connections = 0

    async def _packet(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        header = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return header, await reader.readexactly(length)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first = self.connections == 1
        try:
            while True:
                header, body = await self._packet(reader)
                kind = header >> 4
                if kind == 1:  # CONNECT
                    writer.write(bytes([0x20, 2, 0, 0]))
                elif kind == 3:  # PUBLISH, QoS 1: topic, packet id, payload
                    topic_len = int.from_bytes(body[:2], "big")
                    packet_id = body[2 + topic_len:4 + topic_len]
                    self.payloads.append(body[4 + topic_len:])
                    if first:
                        return
                    writer.write(bytes([0x40, 2]) + packet_id)
                elif kind == 12:  # PINGREQ
                    writer.write(bytes([0xD0, 0]))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_a_message_whose_send_was_cut_off_is_sent_again_after_reconnecting():
    fake = DroppingBroker()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with publishing(f"mqtt://127.0.0.1:{port}") as pub:
            pub.publish_event({"kind": "precious"})
            await wait_until(lambda: pub.published == 1, DEADLINE_S, "the event acknowledged")
            assert (pub.connects, pub.disconnects, pub.buffered, pub.dropped) == (2, 1, 0, 0)
    finally:
        server.close()
        await server.wait_closed()
    assert [decode("json", p) for p in fake.payloads] == [{"kind": "precious"}] * 2


async def test_stop_returns_promptly_while_the_broker_is_unreachable():
    pub = TelemetryPublisher(f"mqtt://127.0.0.1:{free_port()}", CLUSTER, NODE, backoff_initial_s=5.0,
                             backoff_max_s=30.0)
    await pub.start()
    pub.publish_event({"kind": "lost"})
    await wait_until(lambda: pub.connect_failures >= 1, DEADLINE_S, "a failed connection")
    started = time.monotonic()
    await asyncio.wait_for(pub.stop(), timeout=DEADLINE_S)
    # Stop interrupts the 2.5-5 s backoff sleep rather than waiting it out (a generous bound: it catches a hang).
    assert time.monotonic() - started < 2.5
    assert pub.stats() == {"published": 0, "dropped": 0, "buffered": 1, "connect_failures": pub.connect_failures,
                           "connects": 0, "disconnects": 0, "connected": False}


async def test_a_message_that_cannot_be_encoded_fails_in_the_caller_and_is_not_buffered():
    pub = TelemetryPublisher("mqtt://127.0.0.1:1883", CLUSTER, NODE, fmt="json")
    with pytest.raises(ValueError):
        pub.publish_state({"cpu_utilization": float("nan")})
    with pytest.raises(TypeError):
        pub.publish_event(["not", "a", "dict"])
    assert pub.buffered == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"broker_url": "http://127.0.0.1:1883"}, "mqtt://"),
    ({"broker_url": "mqtt://127.0.0.1:99999"}, "broker URL"),
    ({"cluster": "a/b"}, "cluster"),
    ({"node_id": "n+1"}, "node id"),
    ({"fmt": "xml"}, "format"),
    ({"buffer_max": 0}, "buffer_max"),
    ({"qos": 2}, "qos"),
])
def test_bad_configuration_is_refused_with_a_reason(kwargs, match):
    args = {"broker_url": "mqtt://127.0.0.1", "cluster": CLUSTER, "node_id": NODE} | kwargs
    with pytest.raises(TelemetryError, match=match):
        TelemetryPublisher(**args)


# -- mosquitto ----------------------------------------------------------------------------
async def _wait_listening(port: int, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        assert proc.returncode is None, "mosquitto exited at start"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"mosquitto did not listen on {port} within {DEADLINE_S} s")
            await asyncio.sleep(0.05)


async def _stop(proc: asyncio.subprocess.Process | None) -> None:
    if proc is None or proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout=5)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()


async def test_mosquitto_and_mosquitto_sub_read_what_the_publisher_sends(tmp_path: Path):
    mosquitto, mosquitto_sub = shutil.which("mosquitto"), shutil.which("mosquitto_sub")
    assert mosquitto and mosquitto_sub, (
        "mosquitto and mosquitto_sub are required for this test: apt-get install -y mosquitto mosquitto-clients")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker_proc = sub_proc = None
    try:
        broker_proc = await asyncio.create_subprocess_exec(mosquitto, "-c", str(conf),
                                                           stdout=asyncio.subprocess.DEVNULL,
                                                           stderr=asyncio.subprocess.DEVNULL)
        await _wait_listening(port, broker_proc)
        async with publishing(f"mqtt://127.0.0.1:{port}", fmt="json") as pub:
            pub.publish_state({"cpu_utilization": 0.5})
            pub.publish_event({"kind": "early"})
            await wait_until(lambda: pub.published == 2, DEADLINE_S, "first messages published")
            # One SUBSCRIBE for both topics; %r prints the retain flag.
            sub_proc = await asyncio.create_subprocess_exec(
                mosquitto_sub, "-h", "127.0.0.1", "-p", str(port), "-t", STATE, "-t", EVENTS, "-C", "2",
                "-F", "%r %t %p", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            first = await asyncio.wait_for(sub_proc.stdout.readline(), timeout=DEADLINE_S)
            # The retained state arrived, so the subscription is in place; the early event was not kept.
            pub.publish_event({"kind": "late"})
            second = await asyncio.wait_for(sub_proc.stdout.readline(), timeout=DEADLINE_S)
            assert await asyncio.wait_for(sub_proc.wait(), timeout=DEADLINE_S) == 0
        assert first.decode().strip() == f'1 {STATE} {{"cpu_utilization":0.5}}'
        assert second.decode().strip() == f'0 {EVENTS} {{"kind":"late"}}'
    finally:
        await _stop(sub_proc)
        await _stop(broker_proc)
