"""`shoal bench ...`: benchmarks that run real agent processes and print a table
or one JSON object. Timings are measurements, never assertions."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agent.adapters.client_config import load_client_config
from agent.adapters.control_client import ControlClient
from agent.adapters.tls import TlsFiles, read_bundle
from agent.runtime.pki import issue_node_files, tls_args, write_operator_config
from agent.runtime import image_memory
from agent.runtime.launcher import LaunchError, Node, spawn_agent, stop_processes, wait_ready
from hypervisor.domain import DomainSpec
from hypervisor.workload import WorkloadSpec

MIB = 1024 * 1024
RAW_CHUNK_BYTES = 256 * 1024
STATUS_POLL_S = 0.25


@dataclass(frozen=True)
class MigrationBenchOptions:
    size_mib: int = 256
    dirty_rate_mib_s: float = 20.0
    wws_mib: float = 4.0
    bandwidth_mib_s: float = 0.0  # 0: the agent default
    xen_rate_adaptation: bool = False
    insecure: bool = False  # plaintext agents and a plaintext reference; default: mutual TLS on both

    def validate(self) -> None:
        if not 1 <= self.size_mib <= 8192:
            raise LaunchError(f"--size-mib must be 1..8192, got {self.size_mib}")
        if self.dirty_rate_mib_s < 0 or self.wws_mib < 0 or self.wws_mib > self.size_mib:
            raise LaunchError("--dirty-rate-mib-s must be >= 0 and --wws-mib within 0..size")
        if self.bandwidth_mib_s < 0:
            raise LaunchError("--bandwidth-mib-s must be >= 0")


def _tls_contexts(files: TlsFiles) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server and client contexts for the raw reference: mutual TLS with the agents' own files."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(files.cert, files.key)
    server.load_verify_locations(cadata=read_bundle(files.ca).decode())
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    client.load_cert_chain(files.cert, files.key)
    client.load_verify_locations(cadata=read_bundle(files.ca).decode())
    client.check_hostname = False  # node certificates name the node id, not 127.0.0.1
    return server, client


async def raw_tcp_mb_s(total_bytes: int, tls: TlsFiles | None = None) -> float:
    """Sends total_bytes over a loopback asyncio TCP socket; returns MB/s (10^6).

    With `tls`, the socket runs mutual TLS with those files, as the agents' gRPC
    channel does: the ratio then compares two paths that both encrypt, and
    measures what gRPC, the codec and the pre-copy loop cost on top of a socket.
    With the allocator tuned as the agents tune it for migrations (freed chunk
    buffers reused, not refaulted): the reference gets every trick the gRPC
    path gets, which makes it faster, never slower."""
    image_memory.tune_allocator()
    server_ctx, client_ctx = _tls_contexts(tls) if tls is not None else (None, None)
    done = asyncio.get_running_loop().create_future()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = 0
        while got < total_bytes:
            data = await reader.read(1 << 20)
            if not data:
                break
            got += len(data)
        writer.close()
        if not done.done():
            done.set_result(got)

    server = await asyncio.start_server(sink, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        chunk = bytes(RAW_CHUNK_BYTES)
        start = time.perf_counter()
        sent = 0
        while sent < total_bytes:
            writer.write(chunk[: min(RAW_CHUNK_BYTES, total_bytes - sent)])
            sent += min(RAW_CHUNK_BYTES, total_bytes - sent)
            await writer.drain()
        got = await asyncio.wait_for(done, 120)
        elapsed = time.perf_counter() - start
        writer.close()
        return got / elapsed / 1e6
    finally:
        server.close()
        await server.wait_closed()


async def bench_migration(opts: MigrationBenchOptions) -> dict:
    """Migrates one domain between two agent processes; reports throughput vs raw TCP
    (mutual TLS on both paths by default, plaintext on both with `insecure`).

    What each number covers:
    - `total_s`: the whole migration as the source times it, PREPARE sent to
      COMMIT acknowledged: PREPARE (the target reserves, allocates and faults in
      the image's memory), every pre-copy round, the stop-and-copy, both image
      hashes and the COMMIT round trip;
    - `prepare_s`: PREPARE's part of it;
    - `transfer_s`: the transfer phase, round 1's first page sent to the
      stop-and-copy's last page acknowledged by the target (the pause, journaled
      with fsync, and the dirtying between rounds included);
    - `throughput_mb_s` = bytes_sent / transfer_s, the rate the bytes crossed;
      `throughput_total_mb_s` = bytes_sent / total_s;
    - `raw_tcp_mb_s`: the same byte count through one asyncio TCP connection,
      first write to last byte read, connection set up beforehand (as transfer_s
      excludes PREPARE): both ends in this process, the reader discarding what
      it reads (no image to fill, no hashing);
    - `ratio` = throughput_mb_s / raw_tcp_mb_s; `ratio_total` uses
      throughput_total_mb_s.
    - `downtime_ms`: pause to COMMIT acknowledged."""
    opts.validate()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        root = Path(tmp)
        config = root / "agent.toml"
        config.write_text(
            f"image_real_bytes_max = {opts.size_mib * MIB}\n"
            f"message_bytes_max = {8 * MIB}\n"
            f"migration_xen_rate_adaptation = {'true' if opts.xen_rate_adaptation else 'false'}\n"
            # the domain is moved by hand: no balancing moves in the way
            "high_watermark = 1.0\nmean_margin = 0.99\n"
            # a large image takes long to stream: the lease must outlast it
            "reservation_lease_ms = 600000\n")
        nodes: list[Node] = []
        node_tls: TlsFiles | None = None
        try:
            for i, name in enumerate(("source", "target")):
                node_dir = root / name
                if opts.insecure:
                    security = ["--insecure"]
                else:  # mutual TLS, as a cluster runs
                    node_tls = issue_node_files(root, node_dir)
                    security = tls_args(node_tls)
                cmd = [sys.executable, "-m", "shoal", "agent", "--state-dir", str(node_dir), "--listen", "127.0.0.1:0",
                       "--ready-file", str(node_dir / "ready.json"), "--config", str(config),
                       "--cpu-cores", "16", "--memory-mib", str(max(4096, 2 * opts.size_mib)), *security]
                seeds = [nodes[0].address] if nodes else []
                proc = spawn_agent(name, cmd, seeds, node_dir, detach=False)
                node = Node("", "", proc.pid, proc, name, str(node_dir), cmd)
                await wait_ready([node])
                nodes.append(node)
            source, target = nodes
            client = ControlClient(source.address,
                                   None if opts.insecure else load_client_config(write_operator_config(root)))
            try:
                spec = DomainSpec(domain_id="bench-guest", vcpus=1, memory_mib=opts.size_mib,
                                  workload=WorkloadSpec("constant", (("level", 0.1),)), image_seed=7,
                                  wws_mib=opts.wws_mib, dirty_rate_mib_s=opts.dirty_rate_mib_s)
                await client.create_domain(spec, timeout_s=120)
                deadline = time.monotonic() + 30
                while True:  # the source must know the target (gossip) before it can migrate to it
                    st = await client.status()
                    if any(p["id"] == target.node_id for p in st["peers"]):
                        break
                    if time.monotonic() > deadline:
                        raise LaunchError("source never learned the target through gossip")
                    await asyncio.sleep(0.1)
                resp = await client.migrate("bench-guest", target.node_id, bandwidth_mib_s=opts.bandwidth_mib_s)
            finally:
                await client.close()
            if not resp.migrated:
                raise LaunchError(f"migration failed: {resp.reason}")
            if resp.transfer_s <= 0:
                raise LaunchError("the source agent did not report transfer_s (an older agent?)")
            raw = await raw_tcp_mb_s(resp.bytes_sent, node_tls)
            throughput = resp.bytes_sent / resp.transfer_s / 1e6
            throughput_total = resp.bytes_sent / resp.duration_s / 1e6
            return {
                "size_mib": opts.size_mib, "dirty_rate_mib_s": opts.dirty_rate_mib_s, "wws_mib": opts.wws_mib,
                "transport": "plaintext" if opts.insecure else "mtls",
                "throughput_mb_s": round(throughput, 1), "raw_tcp_mb_s": round(raw, 1),
                "ratio": round(throughput / raw, 3), "rounds": resp.rounds,
                "downtime_ms": round(resp.downtime_ms, 2), "transfer_s": round(resp.transfer_s, 3),
                "prepare_s": round(resp.prepare_s, 3), "total_s": round(resp.duration_s, 3),
                "throughput_total_mb_s": round(throughput_total, 1), "ratio_total": round(throughput_total / raw, 3),
                "bytes_sent": resp.bytes_sent, "stop_reason": resp.stop_reason, "hash_equal": resp.hash_equal,
            }
        finally:
            stop_processes(nodes)


def format_migration(r: dict) -> str:
    keys = ["size_mib", "dirty_rate_mib_s", "transport", "throughput_mb_s", "raw_tcp_mb_s", "ratio", "rounds", "downtime_ms",
            "transfer_s", "prepare_s", "total_s", "throughput_total_mb_s", "ratio_total", "stop_reason", "hash_equal"]
    return "\n".join(f"{k:<22}{r[k]}" for k in keys)


def print_json(obj: dict) -> None:
    print(json.dumps(obj, indent=2))


# -- membership ------------------------------------------------------------------------
@dataclass(frozen=True)
class MembershipBenchOptions:
    nodes: tuple[int, ...] = (8, 16, 32)
    duration_s: float = 60.0
    kills: int = 3
    seed: int = 1

    def validate(self) -> None:
        if not self.nodes or any(n < 4 or n > 128 for n in self.nodes):
            raise LaunchError("--nodes takes sizes of 4..128, e.g. 8,16,32")
        if self.duration_s < 20:
            raise LaunchError("--duration must be at least 20 s (half quiet, half kills)")
        if not 1 <= self.kills <= min(self.nodes) // 2:
            raise LaunchError(f"--kills must be 1..{min(self.nodes) // 2}")


def _sent(counters: dict) -> tuple[int, int]:
    msgs = sum(v for k, v in counters.items() if k.startswith("messages_sent"))
    size = sum(v for k, v in counters.items() if k.startswith("bytes_sent"))
    return msgs, size


async def _statuses(clients: dict) -> dict:
    async def one(c):
        try:
            return await c.status(timeout_s=3.0)
        except Exception:  # noqa: BLE001 - a killed agent
            return None
    return dict(zip(clients, await asyncio.gather(*(one(c) for c in clients.values()))))


async def bench_membership_once(n: int, opts: MembershipBenchOptions, root: Path, say) -> dict:
    """One cluster of n agents: steady-state load over the quiet half, then kills."""
    from random import Random
    import os
    import signal
    import statistics

    from agent.runtime.launcher import ClusterOptions, operator_tls, start_agents

    cluster = ClusterOptions(nodes=n, domains=0, seed=opts.seed, duration_s=opts.duration_s)
    nodes = await start_agents(cluster, root / f"n{n}")
    tls, _ = operator_tls(cluster, root / f"n{n}")
    clients = {node.node_id: ControlClient(node.address, tls) for node in nodes}
    names = {node.node_id: node.name for node in nodes}
    try:
        deadline = time.monotonic() + 60
        while True:
            st = await _statuses(clients)
            if all(s and sum(m["status"] == "alive" for m in s["members"]) == n for s in st.values()):
                break
            if time.monotonic() > deadline:
                raise LaunchError(f"{n} agents did not converge on full membership in 60 s")
            await asyncio.sleep(0.25)
        quiet_s = opts.duration_s / 2
        before = {nid: _sent(s["counters"]) for nid, s in st.items()}
        t0 = time.monotonic()
        await asyncio.sleep(quiet_s)
        st = await _statuses(clients)
        window_s = time.monotonic() - t0
        after = {nid: _sent(s["counters"]) for nid, s in st.items()}
        msgs = [(after[i][0] - before[i][0]) / window_s for i in clients]
        size = [(after[i][1] - before[i][1]) / window_s for i in clients]
        say(f"n={n}: {statistics.fmean(msgs):.1f} msgs/node/s, {statistics.fmean(size):.0f} B/node/s")

        rng = Random(opts.seed * 7919 + n)
        victims = rng.sample(nodes, opts.kills)
        gap_s = (opts.duration_s - quiet_s) / opts.kills
        detections: list[float] = []
        false_positives: set[tuple[str, str]] = set()
        dead: set[str] = set()
        for victim in victims:
            os.kill(victim.pid, signal.SIGKILL)
            victim.proc.wait()
            dead.add(victim.node_id)
            await clients.pop(victim.node_id).close()
            killed = time.monotonic()
            detected = None
            while time.monotonic() - killed < max(gap_s, 30.0):
                st = await _statuses(clients)
                for observer, s in st.items():
                    for m in (s or {}).get("members", []):
                        if m["status"] == "dead" and m["id"] not in dead and (observer, m["id"]) not in false_positives:
                            false_positives.add((observer, m["id"]))
                            say(f"n={n}: FALSE POSITIVE: {names[observer]} marked live {names.get(m['id'], m['id'])} "
                                f"dead ({time.monotonic() - killed:.1f} s after killing {victim.name})")
                if detected is None and all(
                        s and any(m["id"] == victim.node_id and m["status"] == "dead" for m in s["members"])
                        for s in st.values()):
                    detected = time.monotonic() - killed
                    say(f"n={n}: {victim.name} dead everywhere after {detected:.2f} s")
                if detected is not None and time.monotonic() - killed >= gap_s:
                    break
                # Polling 32 agents costs CPU on a 2-core machine: not faster than this.
                await asyncio.sleep(STATUS_POLL_S)
            detections.append(detected if detected is not None else float("inf"))
        return {"nodes": n, "messages_per_node_per_s": round(statistics.fmean(msgs), 2),
                "bytes_per_node_per_s": round(statistics.fmean(size), 1),
                "detection_s_median": round(statistics.median(detections), 2),
                "detection_s_max": round(max(detections), 2), "false_positives": len(false_positives),
                "kills": opts.kills}
    finally:
        for c in clients.values():
            await c.close()
        stop_processes(nodes)


async def bench_membership(opts: MembershipBenchOptions, say=lambda line: None) -> dict:
    opts.validate()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-members-") as tmp:
        results = [await bench_membership_once(n, opts, Path(tmp), say) for n in opts.nodes]
    return {"results": results}


def format_membership(r: dict) -> str:
    head = f"{'nodes':>6}{'msgs/node/s':>13}{'bytes/node/s':>14}{'detect med s':>14}{'detect max s':>14}{'false +':>9}"
    rows = [f"{x['nodes']:>6}{x['messages_per_node_per_s']:>13}{x['bytes_per_node_per_s']:>14}"
            f"{x['detection_s_median']:>14}{x['detection_s_max']:>14}{x['false_positives']:>9}" for x in r["results"]]
    return "\n".join([head, *rows])
