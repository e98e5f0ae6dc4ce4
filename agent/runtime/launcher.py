"""`shoal cluster up/down`: a local cluster of agent OS processes on 127.0.0.1.

The launcher is not part of the cluster: it starts agents, creates the
domains, watches, and at the end quiesces balancing, counts every domain by
asking every agent, and stops every process (SIGTERM, then SIGKILL), also on
errors and Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import TextIO

import grpc

from agent.adapters.certs import CertError
from agent.adapters.client_config import ClientConfigError, load_client_config
from agent.adapters.control_client import ControlClient
from agent.adapters.tls import TlsFiles
from agent.core.config import ConfigError
from hypervisor.domain import DomainSpec
from hypervisor.workload import WorkloadSpec

PLACEMENTS = ("skewed", "random", "single")
WORKLOADS = ("constant", "sine", "walk")
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0
QUIESCE_TIMEOUT_S = 20.0
CREATE_ATTEMPTS_MAX = 8
# The launcher sizes domains so total CPU demand is this share of capacity.
DEMAND_SHARE = 0.5
# "Balanced" for the converged_s figure: every node under the default high
# watermark and the CoV down to this share of where it started.
BALANCED_MAX_UTILIZATION = 0.80
BALANCED_COV_SHARE = 0.3


class LaunchError(RuntimeError):
    """The cluster could not be started as asked; the message says why."""


@dataclass
class Node:
    node_id: str
    address: str
    pid: int
    proc: subprocess.Popen | None = None
    name: str = ""
    state_dir: str = ""
    cmd: list[str] = field(default_factory=list)
    metrics: str = ""  # HOST:PORT of its Prometheus endpoint

    def to_json(self) -> dict:
        return {"id": self.node_id, "name": self.name, "address": self.address, "pid": self.pid,
                "metrics": self.metrics, "state_dir": self.state_dir, "cmd": self.cmd}

    @classmethod
    def from_json(cls, d: dict) -> "Node":
        return cls(d["id"], d["address"], int(d["pid"]), None, d.get("name", d["id"]), d.get("state_dir", ""),
                   list(d.get("cmd", [])), d.get("metrics", ""))


@dataclass(frozen=True)
class ClusterOptions:
    nodes: int = 8
    domains: int = 48
    placement: str = "skewed"
    seed: int = 1
    duration_s: float = 60.0
    cpu_cores: float = 16.0
    memory_mib: int = 65536
    workload: str = "constant"
    config_file: str | None = None
    state_dir: str | None = None
    detach: bool = False
    json_output: bool = False
    mqtt_url: str | None = None  # None: start an embedded broker
    cluster: str = "shoal"
    insecure: bool = False  # plaintext agents; by default a throwaway CA in the state dir secures them

    def validate(self) -> None:
        if not 1 <= self.nodes <= 256:
            raise LaunchError(f"--nodes must be 1..256, got {self.nodes}")
        if not 0 <= self.domains <= 100_000:
            raise LaunchError(f"--domains must be 0..100000, got {self.domains}")
        if self.placement not in PLACEMENTS:
            raise LaunchError(f"--placement must be one of {', '.join(PLACEMENTS)}")
        if self.workload not in WORKLOADS:
            raise LaunchError(f"--workload must be one of {', '.join(WORKLOADS)}")
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise LaunchError(f"--duration must be a positive number of seconds, got {self.duration_s}")
        if not (self.cpu_cores > 0 and math.isfinite(self.cpu_cores)) or self.memory_mib <= 0:
            raise LaunchError("--cpu-cores and --memory-mib must be positive")
        if self.detach and not self.state_dir:
            raise LaunchError("--detach needs --state-dir DIR (where cluster.json is written)")
        if self.config_file and not Path(self.config_file).is_file():
            raise LaunchError(f"config file {self.config_file} does not exist")


# -- domain sizing and placement ---------------------------------------------------
def plan_domains(opts: ClusterOptions) -> list[tuple[DomainSpec, int]]:
    """Domain specs and their node index: total demand ~DEMAND_SHARE of capacity.

    Memory is sized so every domain fits one node (the `single` placement
    overloads that node's CPU, never its memory).
    """
    if opts.domains == 0:
        return []
    rng = Random(opts.seed)
    total_demand = DEMAND_SHARE * opts.nodes * opts.cpu_cores
    mean_demand = total_demand / opts.domains
    vcpus = max(1, math.ceil(mean_demand / 0.6))
    memory_mib = max(64, min(4096, int(0.9 * opts.memory_mib / opts.domains) // 64 * 64))
    if memory_mib * opts.domains > opts.memory_mib:
        raise LaunchError(f"{opts.domains} domains of at least 64 MiB do not fit one node of {opts.memory_mib} MiB")
    weights = [0.5 + rng.random() for _ in range(opts.domains)]
    scale = total_demand / sum(weights)
    levels = [min(1.0, w * scale / vcpus) for w in weights]
    if opts.placement == "single":
        hosts = [0] * opts.domains
    elif opts.placement == "skewed":
        loaded = max(1, math.ceil(opts.nodes / 4))
        hosts = [i % loaded for i in range(opts.domains)]
    else:
        hosts = [rng.randrange(opts.nodes) for _ in range(opts.domains)]
    plans = []
    for i, level in enumerate(levels):
        if opts.workload == "sine":
            workload = WorkloadSpec("sine", (("amplitude", round(0.3 * level, 4)), ("mean", round(level, 4)),
                                             ("period_s", 120.0), ("phase_s", float(rng.randrange(120)))))
        elif opts.workload == "walk":
            workload = WorkloadSpec("walk", (("interval_s", 5.0), ("seed", float(rng.randrange(1 << 30))),
                                             ("start", round(level, 4)), ("step", 0.03)))
        else:
            workload = WorkloadSpec("constant", (("level", round(level, 4)),))
        spec = DomainSpec(domain_id=f"dom-{i:04d}", vcpus=vcpus, memory_mib=memory_mib, name=f"guest {i}",
                          workload=workload, image_seed=opts.seed * 100_003 + i)
        plans.append((spec, hosts[i]))
    return plans


# -- processes ------------------------------------------------------------------------
def _agent_cmd(opts: ClusterOptions, node_dir: Path, origin_s: float, seed: int, mqtt_url: str | None,
               tls: TlsFiles | None = None) -> list[str]:
    """The agent's command line, without --seeds (added at each start from who is up)."""
    from agent.runtime.pki import tls_args

    cmd = [sys.executable, "-m", "shoal", "agent", "--state-dir", str(node_dir), "--listen", "127.0.0.1:0",
           "--cpu-cores", str(opts.cpu_cores), "--memory-mib", str(opts.memory_mib),
           "--ready-file", str(node_dir / "ready.json"), "--clock-origin", repr(origin_s), "--rng-seed", str(seed),
           "--metrics-listen", "127.0.0.1:0", "--cluster", opts.cluster]
    if mqtt_url:
        cmd += ["--mqtt", mqtt_url]
    if opts.config_file:
        cmd += ["--config", str(Path(opts.config_file).resolve())]
    return cmd + (tls_args(tls) if tls is not None else ["--insecure"])


def node_tls(opts: ClusterOptions, state_dir: Path, node_dir: Path) -> TlsFiles | None:
    """The node's certificate from the cluster's throwaway CA (None with --insecure)."""
    if opts.insecure:
        return None
    from agent.runtime.pki import issue_node_files
    try:
        return issue_node_files(state_dir, node_dir)
    except (CertError, ConfigError) as exc:
        raise LaunchError(f"cannot make the certificate of {node_dir.name}: {exc}") from None


def operator_tls(opts: ClusterOptions, state_dir: Path) -> tuple[TlsFiles | None, Path | None]:
    """The launcher's own operator certificate and the client.toml naming it (None, None with --insecure)."""
    if opts.insecure:
        return None, None
    from agent.runtime.pki import write_operator_config
    try:
        path = write_operator_config(state_dir)
        return load_client_config(path), path
    except (CertError, ClientConfigError) as exc:
        raise LaunchError(f"cannot make the operator certificate: {exc}") from None


def spawn_agent(name: str, cmd: list[str], seeds: list[str], node_dir: Path, detach: bool) -> subprocess.Popen:
    """Starts one agent process; its output goes to NODE_DIR/agent.log."""
    node_dir.mkdir(parents=True, exist_ok=True)
    (node_dir / "ready.json").unlink(missing_ok=True)
    full = cmd + (["--seeds", ",".join(seeds)] if seeds else [])
    with open(node_dir / "agent.log", "ab") as log:
        return subprocess.Popen(full, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=detach)


async def wait_ready(pending: list[Node], timeout_s: float = READY_TIMEOUT_S) -> list[Node]:
    """Waits until every node wrote its ready file; fills in id, address and pid."""
    deadline = time.monotonic() + timeout_s
    waiting = list(pending)
    while waiting:
        for node in list(waiting):
            ready = Path(node.state_dir) / "ready.json"
            if node.proc is not None and node.proc.poll() is not None:
                log_path = Path(node.state_dir) / "agent.log"
                tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
                raise LaunchError(f"agent {node.name} exited with code {node.proc.returncode} during start-up:\n{tail}")
            if ready.exists():
                info = json.loads(ready.read_text())
                node.node_id, node.address, node.pid = info["id"], info["address"], info["pid"]
                node.metrics = info.get("metrics", "")
                waiting.remove(node)
        if waiting and time.monotonic() > deadline:
            raise LaunchError(f"agents {', '.join(n.name for n in waiting)} not ready within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)
    return pending


async def start_agents(opts: ClusterOptions, state_dir: Path, mqtt_url: str | None = None) -> list[Node]:
    """Starts node-0, then the others seeded with it; returns them once all listen."""
    origin_s = time.time()
    nodes: list[Node] = []
    try:
        for batch in ([0], list(range(1, opts.nodes))):
            seeds = [n.address for n in nodes[:3]]
            group = []
            for i in batch:
                name = f"node-{i}"
                node_dir = state_dir / name
                cmd = _agent_cmd(opts, node_dir, origin_s, opts.seed * 1000 + i, mqtt_url,
                                 node_tls(opts, state_dir, node_dir))
                proc = spawn_agent(name, cmd, seeds, node_dir, opts.detach)
                group.append(Node("", "", proc.pid, proc, name, str(node_dir), cmd))
            nodes += group
            await wait_ready(group)
        return nodes
    except BaseException:
        stop_processes(nodes)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _is_shoal_process(pid: int, role: bytes) -> bool:
    """Guards `cluster down` against a recycled pid: only signal our own agents or broker."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False  # gone meanwhile, or not ours to read
    return b"shoal" in b" ".join(cmdline) and role in cmdline


def _is_shoal_agent(pid: int) -> bool:
    return _is_shoal_process(pid, b"agent")


def stop_processes(nodes: list[Node], grace_s: float = STOP_GRACE_S) -> list[str]:
    """SIGTERM every agent, SIGKILL what is left after grace_s; returns a line per node."""
    report = []
    for n in nodes:
        if n.proc is not None and n.proc.poll() is None:
            n.proc.send_signal(signal.SIGTERM)
        elif n.proc is None and _alive(n.pid) and _is_shoal_agent(n.pid):
            os.kill(n.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for n in nodes:
        how = "stopped"
        if n.proc is not None:
            try:
                n.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait()
                how = "killed"
        else:
            while _alive(n.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(n.pid) and _is_shoal_agent(n.pid):
                os.kill(n.pid, signal.SIGKILL)
                how = "killed"
        report.append(f"{n.name or n.node_id} (pid {n.pid}) {how}")
    return report


# -- observation -------------------------------------------------------------------------
def cov(values: list[float]) -> float:
    """Coefficient of variation (population std / mean); 0 for an idle cluster."""
    if not values:
        return 0.0
    mean = statistics.fmean(values)
    return statistics.pstdev(values) / mean if mean > 0 else 0.0


async def gather_status(clients: list[ControlClient]) -> list[dict | None]:
    async def one(c: ControlClient):
        try:
            return await c.status(timeout_s=3.0)
        except Exception:  # noqa: BLE001 - a dead agent shows as a gap, not a crash
            return None
    return list(await asyncio.gather(*(one(c) for c in clients)))


def render_table(statuses: list[dict | None], nodes: list[Node], elapsed_s: float, duration_s: float) -> str:
    lines = [f"shoal cluster: {len(nodes)} nodes  t={elapsed_s:5.1f}/{duration_s:.0f}s",
             f"{'node':<10}{'cpu%':>7}{'mem%':>7}{'domains':>9}{'migr out':>10}{'migr in':>9}  load"]
    for node, s in zip(nodes, statuses):
        if s is None:
            lines.append(f"{node.name:<10}{'--':>7}{'--':>7}{'--':>9}{'--':>10}{'--':>9}  unreachable")
            continue
        c = s["counters"]
        cpu = s["cpu_utilization"]
        bar = "#" * min(40, int(round(cpu * 20)))
        lines.append(f"{node.name:<10}{cpu * 100:7.1f}{s['memory_utilization'] * 100:7.1f}{len(held(s)):9d}"
                     f"{c.get('migrations_succeeded', 0):10d}{c.get('migrations_received', 0):9d}  {bar}")
    cpus = [s["cpu_utilization"] for s in statuses if s]
    if cpus:
        lines.append(f"cov {cov(cpus):.3f}   max cpu {max(cpus) * 100:.1f}%")
    return "\n".join(lines)


ACTIVE_STATES = ("running", "migrating-out")


def account_domains(expected: list[str], statuses: list[dict | None]) -> tuple[list[str], list[str]]:
    """(lost, duplicate) domain ids, by asking every agent what it holds.

    Lost: held nowhere, not even paused. Duplicate: more than one *active*
    copy (a paused source copy waiting for its commit answer is not active).
    """
    held: set[str] = set()
    active: dict[str, int] = {}
    for s in statuses:
        for d in (s or {}).get("domains", []):
            if d["state"] == "reserved-in":
                continue  # a reservation, not a copy
            held.add(d["id"])
            if d["state"] in ACTIVE_STATES:
                active[d["id"]] = active.get(d["id"], 0) + 1
    lost = sorted(d for d in expected if d not in held)
    dup = sorted(d for d, count in active.items() if count > 1)
    return lost, dup


def held(status: dict) -> list[dict]:
    """The domains a node holds (an incoming reservation is not one yet)."""
    return [d for d in status["domains"] if d["state"] != "reserved-in"]


def summary(nodes: list[Node], statuses: list[dict | None], expected: list[str], initial_cov: float,
            wall_s: float) -> dict:
    cpus = [s["cpu_utilization"] for s in statuses if s]
    lost, dup = account_domains(expected, statuses)
    return {
        "nodes": [{"id": n.node_id, "name": n.name, "address": n.address,
                   "cpu_utilization": s["cpu_utilization"] if s else None,
                   "memory_utilization": s["memory_utilization"] if s else None,
                   "domains": len(held(s)) if s else None} for n, s in zip(nodes, statuses)],
        "domains_total": sum(len(held(s)) for s in statuses if s),
        "migrations": sum(s["counters"].get("migrations_succeeded", 0) for s in statuses if s),
        "migrations_failed": sum(v for s in statuses if s for k, v in s["counters"].items()
                                 if k.startswith("migrations_failed")),
        "initial_cov": round(initial_cov, 4),
        "final_cov": round(cov(cpus), 4),
        "max_cpu_utilization": round(max(cpus), 4) if cpus else None,
        "lost_domains": lost,
        "duplicate_domains": dup,
        "unreachable_nodes": [n.name for n, s in zip(nodes, statuses) if s is None],
        "wall_seconds": round(wall_s, 2),
    }


async def quiesce(clients: list[ControlClient]) -> None:
    """Pauses balancing everywhere and waits for in-flight migrations to settle."""
    await asyncio.gather(*(c.set_balancing(False) for c in clients), return_exceptions=True)
    deadline = time.monotonic() + QUIESCE_TIMEOUT_S
    while time.monotonic() < deadline:
        statuses = await gather_status(clients)
        if all(s is None or not s["migrations"] for s in statuses):
            return
        await asyncio.sleep(0.1)


# -- commands ------------------------------------------------------------------------------
async def create_domains(nodes: list[Node], plans: list[tuple[DomainSpec, int]],
                         tls: TlsFiles | None = None) -> None:
    clients = [ControlClient(n.address, tls) for n in nodes]
    try:
        sem = asyncio.Semaphore(16)

        async def one(spec: DomainSpec, idx: int) -> None:
            async with sem:
                for attempt in range(CREATE_ATTEMPTS_MAX):
                    try:
                        await clients[idx].create_domain(spec)
                        return
                    except grpc.aio.AioRpcError as exc:
                        # The agent's control rate limit: back off and retry, as any client should.
                        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or attempt == CREATE_ATTEMPTS_MAX - 1:
                            raise
                        await asyncio.sleep(min(2.0, 0.05 * 2 ** attempt))
        await asyncio.gather(*(one(spec, idx) for spec, idx in plans))
    finally:
        for c in clients:
            await c.close()


def write_cluster_file(state_dir: Path, nodes: list[Node], extra: dict | None = None) -> Path:
    """Writes cluster.json; top-level keys other than nodes (mqtt, broker_pid, ...) are kept."""
    path = state_dir / "cluster.json"
    tmp = path.with_suffix(".tmp")
    doc = {k: v for k, v in json.loads(path.read_text()).items() if k != "nodes"} if path.exists() else {}
    doc.update(extra or {})
    doc["nodes"] = [n.to_json() for n in nodes]
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)
    return path


async def cluster_up(opts: ClusterOptions, out: TextIO = sys.stdout, live: TextIO | None = None) -> dict | None:
    """Runs `cluster up`; returns the summary (None when detached)."""
    opts.validate()
    plans = plan_domains(opts)
    live = live or (sys.stderr if opts.json_output else out)
    tmp = None
    if opts.state_dir:
        state_dir = Path(opts.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="shoal-cluster-")
        state_dir = Path(tmp.name)
    nodes: list[Node] = []
    broker, broker_proc = None, None
    started = time.monotonic()
    try:
        mqtt_url = opts.mqtt_url
        if mqtt_url is None and opts.detach:
            broker_proc, mqtt_url = await start_broker_process(state_dir)
        elif mqtt_url is None:
            from agent.adapters.telemetry import EmbeddedBroker
            logging.getLogger("amqtt").setLevel(logging.WARNING)
            logging.getLogger("transitions").setLevel(logging.WARNING)  # amqtt's session state machine
            broker = EmbeddedBroker("127.0.0.1", 0)
            mqtt_url = await broker.start()
        tls, client_config = operator_tls(opts, state_dir)
        nodes = await start_agents(opts, state_dir, mqtt_url)
        try:
            await create_domains(nodes, plans, tls)
        except grpc.aio.AioRpcError as exc:
            raise LaunchError(f"creating the domains failed: {exc.code().name}: {exc.details()}") from None
        if opts.detach:
            path = write_cluster_file(state_dir, nodes, {
                "cluster": opts.cluster, "mqtt": mqtt_url.removeprefix("mqtt://"),
                "broker_pid": broker_proc.pid if broker_proc else None,
                "client_config": str(client_config.resolve()) if client_config else None})
            print(f"cluster of {len(nodes)} agents running; state in {path}", file=out)
            if client_config:
                print(f"client commands: export SHOAL_CLIENT_CONFIG={client_config.resolve()}", file=out)
            print(f"stop it with: shoal cluster down --state-dir {state_dir}", file=out)
            nodes, broker_proc = [], None  # detached: leave them running
            return None
        clients = [ControlClient(n.address, tls) for n in nodes]
        try:
            first = await gather_status(clients)
            initial_cov = cov([s["cpu_utilization"] for s in first if s])
            tty = live.isatty()
            t0 = time.monotonic()
            last_print = -1e9
            converged_s = None
            while (elapsed := time.monotonic() - t0) < opts.duration_s:
                statuses = await gather_status(clients)
                cpus = [s["cpu_utilization"] for s in statuses if s]
                if converged_s is None and cpus and max(cpus) <= BALANCED_MAX_UTILIZATION \
                        and cov(cpus) <= BALANCED_COV_SHARE * initial_cov:
                    converged_s = round(elapsed, 1)
                table = render_table(statuses, nodes, elapsed, opts.duration_s)
                if tty:
                    live.write("\x1b[H\x1b[2J" + table + "\n")
                    live.flush()
                elif elapsed - last_print >= 5.0:
                    live.write(table + "\n\n")
                    live.flush()
                    last_print = elapsed
                await asyncio.sleep(min(1.0, max(0.0, opts.duration_s - (time.monotonic() - t0))))
            await quiesce(clients)
            final = await gather_status(clients)
        finally:
            for c in clients:
                await c.close()
        result = summary(nodes, final, [spec.domain_id for spec, _ in plans], initial_cov,
                         time.monotonic() - started)
        result["converged_s"] = converged_s
        return result
    finally:
        if nodes:
            stop_processes(nodes)
        if broker is not None:
            await broker.stop()
        if broker_proc is not None:
            stop_processes([Node("broker", "", broker_proc.pid, broker_proc, "broker")])
        if tmp is not None:
            tmp.cleanup()


async def start_broker_process(state_dir: Path) -> tuple[subprocess.Popen, str]:
    """The embedded broker as a detached process (a detached cluster outlives the launcher)."""
    ready = state_dir / "broker.json"
    ready.unlink(missing_ok=True)
    with open(state_dir / "broker.log", "ab") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "shoal", "broker", "--listen", "127.0.0.1:0",
                                 "--ready-file", str(ready)], stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.exists():
        if proc.poll() is not None:
            raise LaunchError(f"MQTT broker exited with code {proc.returncode}; see {state_dir / 'broker.log'}")
        if time.monotonic() > deadline:
            proc.kill()
            raise LaunchError("MQTT broker not ready in time")
        await asyncio.sleep(0.05)
    return proc, json.loads(ready.read_text())["url"]


def cluster_down(state_dir: str, out: TextIO = sys.stdout) -> int:
    path, nodes = read_cluster_file(state_dir)
    for line in stop_processes(nodes):
        print(line, file=out)
    broker_pid = json.loads(path.read_text()).get("broker_pid")
    if broker_pid and _alive(broker_pid) and _is_shoal_process(broker_pid, b"broker"):
        os.kill(broker_pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while _alive(broker_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(broker_pid):
            os.kill(broker_pid, signal.SIGKILL)
        print(f"broker (pid {broker_pid}) stopped", file=out)
    path.unlink()
    return 0


def read_cluster_file(state_dir: str) -> tuple[Path, list[Node]]:
    path = Path(state_dir) / "cluster.json"
    if not path.is_file():
        raise LaunchError(f"no cluster.json in {state_dir} (was the cluster started with --detach there?)")
    try:
        return path, [Node.from_json(n) for n in json.loads(path.read_text())["nodes"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise LaunchError(f"{path} is not a cluster file: {exc}") from None


async def cluster_chaos(state_dir: str, kill: int, every_s: float | None = None,
                        restart_after_s: float | None = None, seed: int | None = None,
                        out: TextIO = sys.stdout) -> list[dict]:
    """SIGKILLs `kill` random live agents (one every `every_s`, else all at once),
    restarting each after `restart_after_s` from its own state dir (same id, new
    port, higher incarnation). Prints and returns what it did."""
    path, nodes = read_cluster_file(state_dir)
    live = [n for n in nodes if _alive(n.pid) and _is_shoal_agent(n.pid)]
    if kill < 1 or kill > len(live):
        raise LaunchError(f"--kill must be 1..{len(live)} (live agents), got {kill}")
    rng = Random(seed)
    victims = rng.sample(live, kill)
    t0 = time.monotonic()
    actions: list[dict] = []

    def say(action: dict) -> None:
        action["t_s"] = round(time.monotonic() - t0, 2)
        actions.append(action)
        print(f"t={action['t_s']:6.2f}s {action['action']:<9} {action['name']} (id {action['id']}, "
              f"pid {action['pid']}{', at ' + action['address'] if action.get('address') else ''})", file=out)

    async def restart_later(victim: Node) -> None:
        await asyncio.sleep(restart_after_s or 0.0)
        seeds = [n.address for n in nodes if n is not victim and _alive(n.pid)][:3]
        proc = spawn_agent(victim.name, victim.cmd, seeds, Path(victim.state_dir), detach=True)
        victim.proc = proc
        await wait_ready([victim])
        victim.proc = None  # detached: the cluster file, not this process, owns it now
        say({"action": "restarted", "name": victim.name, "id": victim.node_id, "pid": victim.pid,
             "address": victim.address})

    restarts = []
    for k, victim in enumerate(victims):
        if k and every_s:
            await asyncio.sleep(every_s)
        os.kill(victim.pid, signal.SIGKILL)
        say({"action": "killed", "name": victim.name, "id": victim.node_id, "pid": victim.pid})
        if restart_after_s is not None:
            if not victim.cmd:
                raise LaunchError(f"{path} has no command line for {victim.name}; cannot restart it")
            restarts.append(asyncio.create_task(restart_later(victim)))
    await asyncio.gather(*restarts)
    write_cluster_file(Path(state_dir), nodes)
    return actions
