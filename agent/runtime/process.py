"""One agent as an OS process: config, server, loops, signals, shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.adapters.certs import CertError
from agent.adapters.grpc_server import reload_tls, start_server
from agent.adapters.tls import TlsFiles
from agent.adapters.journal import Journal, JournalError
from agent.adapters.prom import AgentMetrics
from agent.adapters.telemetry import TelemetryPublisher
from agent.core.ownership import fold
from agent.runtime.identity import save_incarnation
from agent.core.config import AgentConfig, ConfigError, config_from_mapping
from agent.core.membership_config import MembershipConfig
from agent.runtime.agent import Agent
from agent.runtime.core_log import CoreLogTap
from hypervisor.host import HostSpec, HostSpecError

log = logging.getLogger("shoal.agent")
JOURNAL_FILE = "journal"


@dataclass(frozen=True)
class AgentOptions:
    node_id: str
    incarnation: int
    listen: str
    seeds: tuple[str, ...]
    cpu_cores: float
    memory_mib: int
    config: AgentConfig
    membership: MembershipConfig | None = None
    ready_file: str | None = None
    state_dir: str | None = None  # holds the journal; None: nothing survives a restart
    metrics_listen: str | None = None  # Prometheus /metrics on HOST:PORT
    mqtt_url: str | None = None  # telemetry broker, mqtt://HOST:PORT
    cluster: str = "shoal"
    telemetry_format: str = "json"
    advertise: str | None = None  # the address peers should use, when it differs from --listen
    rng_seed: int | None = None
    clock_origin_s: float | None = None
    tls: TlsFiles | None = None  # mutual TLS material; None only with an explicit --insecure
    # Count the TLS handshakes gRPC's core refuses by reading its stderr (agent/runtime/core_log.py);
    # only for an agent that owns its process (`shoal agent`), never for in-process test agents.
    tap_core_log: bool = False


def _read_toml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def load_config_file(path: str | None, overrides: dict[str, Any] | None = None) -> AgentConfig:
    """Reads agent settings from a TOML file (top-level keys or an [agent] table,
    beside an optional [membership] table); raises ConfigError."""
    data = _read_toml(path)
    section = data.get("agent", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [agent] must be a table of settings, got {section!r}")
    values = dict(section)
    values.pop("membership", None)
    values.pop("tls", None)
    values.update(overrides or {})
    try:
        return config_from_mapping(values)
    except TypeError as exc:  # a value of the wrong kind reached the dataclass
        raise ConfigError(str(exc)) from None


def load_membership_config(path: str | None, profile: str) -> MembershipConfig:
    """The [membership] table of the same file, over the agent's profile; raises ConfigError."""
    values = _read_toml(path).get("membership", {})
    if not isinstance(values, dict):
        raise ConfigError("[membership] must be a table")
    known = {f.name for f in dataclasses.fields(MembershipConfig)} - {"profile_name"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown membership setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return dataclasses.replace(MembershipConfig.profile(profile), **values).validate()
    except TypeError as exc:
        raise ConfigError(f"membership: {exc}") from None


TLS_KEYS = ("ca", "cert", "key", "insecure")


def load_tls_settings(path: str | None) -> dict[str, Any]:
    """The [tls] table of the config file (ca: path or list, cert, key, insecure),
    with relative paths resolved against the file's folder; raises ConfigError."""
    table = _read_toml(path).get("tls", {})
    if not isinstance(table, dict):
        raise ConfigError("[tls] must be a table")
    unknown = sorted(set(table) - set(TLS_KEYS))
    if unknown:
        raise ConfigError(f"unknown tls setting(s) {', '.join(unknown)}; known: {', '.join(TLS_KEYS)}")
    base = Path(path).resolve().parent if path else Path.cwd()
    out: dict[str, Any] = {}
    if "insecure" in table:
        if not isinstance(table["insecure"], bool):
            raise ConfigError(f"tls.insecure: expected true or false, got {table['insecure']!r}")
        out["insecure"] = table["insecure"]
    for key in ("ca", "cert", "key"):
        if key not in table:
            continue
        value = table[key]
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items) \
                or (key != "ca" and len(items) != 1):
            raise ConfigError(f"tls.{key}: expected a path{' or a list of paths' if key == 'ca' else ''}, "
                              f"got {value!r}")
        paths = [str(base / v) for v in items]  # an absolute v stays itself
        out[key] = paths if key == "ca" else paths[0]
    return out


def resolve_tls(ca: list[str] | None, cert: str | None, key: str | None, insecure: bool,
                config_path: str | None = None) -> TlsFiles | None:
    """The agent's mutual TLS material from flags over the config file's [tls] table.

    On by default: without --ca, --cert and --key (or their [tls] keys) the agent
    does not start unless --insecure says plaintext on purpose. Raises ConfigError.
    """
    file = load_tls_settings(config_path)
    if insecure and (ca or cert or key):
        raise ConfigError("--insecure contradicts --ca/--cert/--key: choose mutual TLS or plaintext")
    if insecure or (file.get("insecure") and not (ca or cert or key)):
        return None
    ca_paths = tuple(ca or file.get("ca") or ())
    cert, key = cert or file.get("cert"), key or file.get("key")
    missing = [flag for flag, v in (("--ca", ca_paths), ("--cert", cert), ("--key", key)) if not v]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(f"mutual TLS is on by default and {', '.join(missing)} {verb} missing: give --ca CA.crt "
                          "--cert NODE.crt --key NODE.key (make them with `shoal certs init` and "
                          "`shoal certs issue --node ID`), or --insecure for a plaintext local experiment")
    files = TlsFiles(ca_paths, cert, key)
    try:
        files.check()
    except CertError as exc:
        raise ConfigError(f"tls: {exc}") from None
    return files


def host_spec(cpu_cores: float, memory_mib: int, config: AgentConfig) -> HostSpec:
    spec = HostSpec(cpu_cores=cpu_cores, memory_mib=memory_mib, cpu_overcommit_ratio=config.cpu_overcommit_ratio)
    try:
        spec.validate()
    except HostSpecError as exc:
        raise ConfigError(str(exc)) from None
    return spec


def advertised_address(bound: str, advertise: str | None) -> str:
    """What peers dial: --advertise if given (port 0 there means the bound port);
    else the bound address, which must then not be a wildcard."""
    bound_host, bound_port = bound.rsplit(":", 1)
    if advertise:
        host, port = advertise.rsplit(":", 1)
        return f"{host}:{bound_port if port == '0' else port}"
    if bound_host in ("0.0.0.0", "[::]", "::", ""):
        raise ConfigError(f"listening on {bound} needs --advertise HOST:PORT: peers cannot dial a wildcard address")
    return bound


def write_ready_file(path: str, payload: dict) -> None:
    """Atomically writes the bound address, so a launcher never reads half a file."""
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


async def serve(opts: AgentOptions, stop: asyncio.Event | None = None) -> None:
    journal, recovered = None, None
    if opts.state_dir:
        try:
            journal, records = Journal.open(Path(opts.state_dir) / JOURNAL_FILE)
        except (JournalError, OSError) as exc:
            raise ConfigError(f"journal in {opts.state_dir}: {exc}") from None
        recovered = fold(records)
    agent = Agent(opts.node_id, host_spec(opts.cpu_cores, opts.memory_mib, opts.config), opts.config,
                  journal=journal, recovered=recovered,
                  persist_incarnation=(lambda inc: save_incarnation(opts.state_dir, inc)) if opts.state_dir else None,
                  seeds=opts.seeds, rng_seed=opts.rng_seed, clock_origin_s=opts.clock_origin_s,
                  incarnation=opts.incarnation, membership_config=opts.membership)
    tap = None
    if opts.tap_core_log and opts.tls is not None:
        tap = CoreLogTap(asyncio.get_running_loop(), lambda reason, line: _handshake_refused(agent, reason, line))
        tap.start()
    if opts.tls is None:
        log.warning("%s: --insecure: plaintext gRPC, no peer authentication; any process that reaches %s can "
                    "gossip, take domains and call the control API. For local experiments only.",
                    opts.node_id, opts.listen)
    try:
        server, bound = await start_server(agent, opts.listen, opts.tls)
    except CertError as exc:
        raise ConfigError(f"tls: {exc}") from None
    address = advertised_address(bound, opts.advertise)
    agent.bind(address)
    metrics_server, metrics_address = None, ""
    if opts.metrics_listen:
        agent.prom = AgentMetrics(node_id=opts.node_id, cluster=opts.cluster)
        host, port = opts.metrics_listen.rsplit(":", 1)
        metrics_server, bound_port = agent.prom.start_http(host, int(port))
        metrics_address = f"{host}:{bound_port}"
    if opts.mqtt_url:
        agent.telemetry = TelemetryPublisher(opts.mqtt_url, opts.cluster, opts.node_id, opts.telemetry_format)
        await agent.telemetry.start()
    agent.start_loops()
    log.info("%s: serving on %s (incarnation %d, %g cores, %d MiB, seeds %s)", opts.node_id, address,
             opts.incarnation, opts.cpu_cores, opts.memory_mib, ",".join(opts.seeds) or "none")
    if opts.ready_file:
        write_ready_file(opts.ready_file, {"id": opts.node_id, "address": address, "pid": os.getpid(),
                                           "metrics": metrics_address})
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass  # not the main thread (tests run agents in-process)
    try:
        loop.add_signal_handler(signal.SIGHUP, on_sighup, agent)
    except (NotImplementedError, RuntimeError):
        pass
    try:
        await stop.wait()
    finally:
        log.info("%s: stopping", opts.node_id)
        await agent.stop()
        await server.stop(grace=1.0)
        if agent.telemetry is not None:
            await agent.telemetry.stop()
        if metrics_server is not None:
            metrics_server.stop()
        if tap is not None:
            tap.stop()


def _handshake_refused(agent: Agent, reason: str, line: str) -> None:
    """A TLS handshake gRPC's core refused (either direction): counted and logged here."""
    agent.metrics.inc("rejected_inputs", reason=reason)
    # Never repeat the core's own words ("Handshake failed"): this line passes the tap too.
    detail = line.split("Handshake failed with ", 1)[-1].strip()
    log.warning("%s: refused a TLS handshake (%s): %s", agent.node_id, reason, detail[:300])


def on_sighup(agent: Agent) -> None:
    """SIGHUP: re-read the CA bundle(s), certificate and key; a bad file keeps the running ones."""
    if agent.server_tls is None:
        log.warning("%s: SIGHUP: running with --insecure, no certificates to reload", agent.node_id)
        return
    try:
        reload_tls(agent)
    except (CertError, OSError) as exc:
        agent.metrics.inc("tls_reload_failed")
        log.error("%s: SIGHUP: TLS reload refused, keeping the running certificates: %s", agent.node_id, exc)


async def run_broker(listen: str, ready_file: str | None, stop: asyncio.Event | None = None) -> None:
    """The embedded MQTT broker as a process of its own (for detached clusters)."""
    from agent.adapters.telemetry import EmbeddedBroker

    logging.getLogger("amqtt").setLevel(logging.WARNING)  # it logs every connection at INFO
    logging.getLogger("transitions").setLevel(logging.WARNING)  # amqtt's session state machine
    host, port = listen.rsplit(":", 1)
    broker = EmbeddedBroker(host, int(port))
    url = await broker.start()
    if ready_file:
        write_ready_file(ready_file, {"url": url, "pid": os.getpid()})
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await broker.stop()
