"""The `shoal` command line. Every failure is a clear message and a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
import time

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A user-facing error: printed as `shoal: error: ...`, exit code EXIT_ERROR or given."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _non_negative_int(text: str) -> int:
    value = _positive_int(text) if text.strip() != "0" else 0
    return value


def _address(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text


def _seeds(text: str) -> tuple[str, ...]:
    return tuple(_address(s.strip()) for s in text.split(",") if s.strip())


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shoal",
        description="Shoal: self-managing node agents that gossip utilization over gRPC and live-migrate "
                    "guest domains by local rules, so the cluster balances itself with no central manager.")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="log verbosity (logs go to stderr)")
    p.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="text lines, or one JSON object per line (ts, level, logger, message)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    a = sub.add_parser("agent", help="run one node agent in the foreground",
                       description="Run one node agent: serves gossip, migration and control over gRPC, "
                                   "models this node's hypervisor, and balances with its neighbours.")
    a.add_argument("--id", help="node id (1-128 of [A-Za-z0-9._:-]); with --state-dir, a UUID is made on first "
                               "start and kept there")
    a.add_argument("--state-dir", help="folder for this node's identity (node-id, incarnation); "
                                       "restarting with the same folder keeps the node's id")
    a.add_argument("--listen", required=True, type=_address,
                   help="HOST:PORT to serve on; port 0 picks a free port (see --ready-file)")
    a.add_argument("--advertise", type=_address,
                   help="HOST:PORT peers should dial when it differs from --listen (containers: the pod or "
                        "service address); port 0 means the bound port")
    a.add_argument("--seeds", type=_seeds, default=(), help="comma-separated HOST:PORT of agents to join through")
    a.add_argument("--cpu-cores", type=_positive_float, default=16.0, help="CPU capacity in cores (default 16)")
    a.add_argument("--memory-mib", type=_positive_int, default=65536, help="memory capacity in MiB (default 65536)")
    a.add_argument("--config", help="TOML file of agent settings (see README: Configuration)")
    a.add_argument("--profile", choices=["local", "lan", "wan"], help="settings profile (default local)")
    a.add_argument("--ready-file", help="write {id, address, pid, metrics} as JSON here once listening")
    a.add_argument("--metrics-listen", type=_address,
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (port 0 picks one)")
    a.add_argument("--mqtt", help="publish telemetry to this MQTT broker, mqtt://HOST:PORT (never blocks the agent)")
    a.add_argument("--cluster", default="shoal", help="cluster name in telemetry topics shoal/CLUSTER/NODE/...")
    a.add_argument("--telemetry-format", choices=["json", "msgpack"], default="json",
                   help="payload format of telemetry messages (default json)")
    a.add_argument("--clock-origin", type=float, help="wall-clock unix time of model time 0 (shared by a cluster)")
    a.add_argument("--rng-seed", type=int, help="seed of this agent's random choices (default: random)")
    a.add_argument("--ca", action="append", default=[],
                   help="PEM bundle of the cluster CA to trust (repeatable: trust an old and a new CA during a "
                        "rotation); SIGHUP re-reads it")
    a.add_argument("--cert", help="this node's certificate (SAN shoal://node/ID, from `shoal certs issue --node`)")
    a.add_argument("--key", help="the certificate's private key")
    a.add_argument("--insecure", action="store_true",
                   help="plaintext gRPC with no authentication (mutual TLS is on by default); local experiments only")

    c = sub.add_parser("cluster", help="run a local multi-process cluster",
                       description="Start or stop a local cluster of agent processes on 127.0.0.1.")
    csub = c.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND", required=True)
    up = csub.add_parser("up", help="start N agents, create M domains, watch them balance, stop",
                         description="Start N agents as separate OS processes on 127.0.0.1 (free ports), create "
                                     "M domains placed as asked (total CPU demand about half the cluster's "
                                     "capacity), show a live table, then print a summary and stop every agent.")
    up.add_argument("--nodes", type=_positive_int, default=8, help="number of agents (default 8)")
    up.add_argument("--domains", type=_non_negative_int, default=48, help="number of domains (default 48)")
    up.add_argument("--placement", choices=["skewed", "random", "single"], default="skewed",
                    help="initial placement: skewed (first quarter of the nodes), random, or single (node-0); "
                         "default skewed")
    up.add_argument("--workload", choices=["constant", "sine", "walk"], default="constant",
                    help="CPU demand of each domain over time (default constant)")
    up.add_argument("--seed", type=int, default=1, help="seed for sizing and placement (default 1)")
    up.add_argument("--duration", type=_positive_float, default=60.0, help="seconds to run (default 60)")
    up.add_argument("--cpu-cores", type=_positive_float, default=16.0, help="cores per node (default 16)")
    up.add_argument("--memory-mib", type=_positive_int, default=65536, help="MiB per node (default 65536)")
    up.add_argument("--config", help="TOML agent settings passed to every agent")
    up.add_argument("--mqtt", help="telemetry broker mqtt://HOST:PORT (default: an embedded broker is started)")
    up.add_argument("--cluster", default="shoal", help="cluster name in telemetry topics (default shoal)")
    up.add_argument("--json", action="store_true", help="print only a JSON summary on stdout (live table on stderr)")
    up.add_argument("--detach", action="store_true", help="leave the cluster running (needs --state-dir)")
    up.add_argument("--state-dir", help="folder for cluster.json, agent logs and ready files")
    up.add_argument("--insecure", action="store_true",
                    help="plaintext agents; by default a throwaway CA in the state dir gives every agent a node "
                         "certificate and writes client.toml (an operator certificate) for client commands")
    down = csub.add_parser("down", help="stop a detached cluster",
                           description="Stop every agent listed in DIR/cluster.json (SIGTERM, then SIGKILL).")
    down.add_argument("--state-dir", required=True, help="the folder given to `cluster up --detach`")

    chaos = csub.add_parser("chaos", help="SIGKILL random agents of a detached cluster (optionally restart them)",
                            description="Kill K random live agents of a detached local cluster with SIGKILL, all at "
                                        "once or one every --every seconds; with --restart-after, restart each from "
                                        "its state dir (same node id, new port, higher incarnation). Prints what "
                                        "it did.")
    chaos.add_argument("--state-dir", required=True, help="the folder given to `cluster up --detach`")
    chaos.add_argument("--kill", required=True, type=_positive_int, help="how many agents to kill")
    chaos.add_argument("--every", type=_positive_float, help="seconds between kills (default: all at once)")
    chaos.add_argument("--restart-after", type=_positive_float, help="restart each killed agent after this many s")
    chaos.add_argument("--seed", type=int, help="seed of the choice of victims (default: random)")
    chaos.add_argument("--json", action="store_true", help="print the actions as one JSON object")

    dom = sub.add_parser("domain", help="create or migrate domains through one agent",
                         description="Operate on guest domains through one agent's control API.")
    dsub = dom.add_subparsers(dest="domain_command", metavar="SUBCOMMAND", required=True)
    create = dsub.add_parser("create", help="create a domain on that agent (refused with a reason if it won't fit)",
                             description="Create a domain on the agent at --target. Refused with the agent's reason "
                                         "(exit 1) if it does not fit its memory or vCPU capacity.")
    create.add_argument("--target", required=True, type=_address, help="the agent's HOST:PORT")
    create.add_argument("--id", help="domain id (default: a new UUID)")
    create.add_argument("--vcpus", required=True, type=_positive_int, help="virtual CPUs")
    create.add_argument("--memory-mib", required=True, type=_positive_int, help="memory in MiB")
    create.add_argument("--workload", default="constant:level=0.5",
                        help="CPU demand source, e.g. constant:level=0.5, sine:mean=0.5,amplitude=0.2,period_s=600, "
                             "walk:start=0.5,step=0.05,interval_s=10,seed=1, flash:base=0.2,peak=0.9,start_s=60,"
                             "duration_s=30,ramp_s=5, trace:interval_s=300,path=FILE (path last)")
    create.add_argument("--dirty-rate-mib-s", type=float, default=0.0,
                        help="rate the guest rewrites memory in its writable working set (drives pre-copy)")
    create.add_argument("--wws-mib", type=float, default=None,
                        help="writable working set (default: 4 MiB, or the memory if smaller, when dirtying)")
    create.add_argument("--cpu-weight", type=_positive_int, default=256, help="proportional share weight (default 256)")
    create.add_argument("--cpu-cap-pct", type=int, default=0, help="cap in percent of one core; 0 = uncapped")
    create.add_argument("--label", type=_label, action="append", default=[], metavar="KEY=VALUE",
                        help="a label (repeatable). affinity=G: domains of group G stay together (the balancing "
                             "rule moves none away from another member); anti-affinity=G: no two domains of "
                             "group G share a node (creation, migration and HA restart are refused there)")
    save = dsub.add_parser("save", help="write a domain (spec, epoch, state, memory image) to one msgpack file",
                           description="Write a consistent snapshot of one domain held by the agent at --target "
                                       "(spec, epoch, state and memory image) to one msgpack file. The domain keeps "
                                       "running.")
    save.add_argument("--target", required=True, type=_address, help="HOST:PORT of the agent holding the domain")
    save.add_argument("--domain", required=True, help="the domain's id")
    save.add_argument("--out", required=True, help="file to write")
    restore = dsub.add_parser("restore", help="bring a saved domain back on an agent",
                              description="Restore a domain saved with `shoal domain save` on the agent at --target, "
                                          "at the saved epoch + 1. Refused if a live member already runs that "
                                          "domain at an equal or higher epoch, or if the file is damaged.")
    restore.add_argument("--target", required=True, type=_address, help="HOST:PORT of the agent to restore on")
    restore.add_argument("--file", required=True, help="a file written by `shoal domain save`")
    migrate = dsub.add_parser("migrate", help="ask an agent to migrate one of its domains to a node",
                              description="Ask the agent at --target to live-migrate one of its domains to the node "
                                          "with id --to, wait for the outcome and report it (or the refusal).")
    migrate.add_argument("--target", required=True, type=_address, help="HOST:PORT of the agent holding the domain")
    migrate.add_argument("--domain", required=True, help="the domain's id")
    migrate.add_argument("--to", required=True, help="the destination node's id")
    migrate.add_argument("--bandwidth-mib-s", type=float, default=0.0,
                         help="bandwidth cap of this migration (default: the agent's migration_bandwidth_mib_s)")
    migrate.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                         help="wait for the outcome (default); --no-wait returns once it has started")
    migrate.add_argument("--json", action="store_true", help="print the outcome as JSON")

    bench = sub.add_parser("bench", help="benchmarks on real agent processes",
                           description="Benchmarks that start real agent processes on 127.0.0.1 and print a table "
                                       "(or one JSON object with --json).")
    bsub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    bm = bsub.add_parser("migration", help="live-migrate one domain between two agents vs a raw TCP socket",
                         description="Start two agents, create one domain whose whole memory image is real bytes, "
                                     "live-migrate it with pre-copy while it dirties pages, and send the same "
                                     "bytes over a raw asyncio TCP socket in the same run. Reports throughput "
                                     "over the transfer phase (round 1's first page to the stop-and-copy's last, "
                                     "PREPARE and COMMIT excluded) and over the whole migration, raw TCP "
                                     "throughput, their ratios, rounds, downtime, transfer/prepare/total times "
                                     "and whether the image hashed equal on both sides.")
    bm.add_argument("--size-mib", type=_positive_int, default=256, help="domain memory, all real bytes (default 256)")
    bm.add_argument("--dirty-rate-mib-s", type=float, default=20.0, help="guest dirty rate (default 20)")
    bm.add_argument("--wws-mib", type=float, default=4.0, help="writable working set (default 4)")
    bm.add_argument("--bandwidth-mib-s", type=float, default=0.0,
                    help="per-migration bandwidth cap (default: the agent's migration_bandwidth_mib_s)")
    bm.add_argument("--xen-rate", action="store_true", help="use Xen's dynamic rate limiting (100-500 Mbit/s)")
    bm.add_argument("--insecure", action="store_true",
                    help="plaintext agents and a plaintext raw socket (default: mutual TLS on both paths)")
    bm.add_argument("--json", action="store_true", help="print one JSON object")

    bmem = bsub.add_parser("membership", help="message load and failure detection of real agent clusters",
                           description="For each cluster size: start N agents, measure messages and bytes sent per "
                                       "node per second over the quiet first half of --duration, then SIGKILL "
                                       "--kills agents one by one and time how long until every survivor marks "
                                       "each dead; count live agents ever marked dead (false positives).")
    bmem.add_argument("--nodes", default="8,16,32", help="comma-separated cluster sizes (default 8,16,32)")
    bmem.add_argument("--duration", type=_positive_float, default=60.0, help="seconds per cluster size (default 60)")
    bmem.add_argument("--kills", type=_positive_int, default=3, help="agents killed per size (default 3)")
    bmem.add_argument("--seed", type=int, default=1, help="seed of the choice of victims")
    bmem.add_argument("--json", action="store_true", help="print one JSON object")

    br = sub.add_parser("broker", help="run an embedded MQTT broker (amqtt) in the foreground",
                        description="Run the embedded MQTT broker that `cluster up` uses for telemetry, until "
                                    "SIGTERM. Anonymous, no persistence: for local clusters and tests.")
    br.add_argument("--listen", type=_address, default="127.0.0.1:1883", help="HOST:PORT (port 0 picks one)")
    br.add_argument("--ready-file", help="write {url, pid} as JSON here once listening")

    top = sub.add_parser("top", help="live terminal view of the cluster as one agent sees it",
                         description="A live view from one agent's status: a row per known node (utilization bar, "
                                     "domains, membership state, migrations in flight) and a scrolling event log, "
                                     "refreshed every --interval seconds. Ctrl-C quits.")
    top.add_argument("--target", required=True, type=_address, help="the agent's HOST:PORT")
    top.add_argument("--interval", type=_positive_float, default=1.0, help="seconds between refreshes (default 1)")
    top.add_argument("--iterations", type=_positive_int, help="stop after this many refreshes (default: run on)")

    exp = sub.add_parser("experiment", help="reproducible experiments on real traces",
                         description="Experiments that run Shoal's policies on recorded workloads.")
    esub = exp.add_subparsers(dest="experiment_command", metavar="EXPERIMENT", required=True)
    pl = esub.add_parser("planetlab", help="Beloglazov & Buyya's PlanetLab day: decentralized vs CloudSim's policies",
                         description="Replay one PlanetLab day (one VM per trace, 300 s intervals, CloudSim's hosts "
                                     "and power tables) under a policy and print energy, migrations, SLATAH, PDM, "
                                     "SLAV, ESV and the overall SLA violation. npa, dvfs, thr-mmt, lr-mmt and drs "
                                     "are centralized (they read every host); balance and consolidate are Shoal's "
                                     "agents, each seeing only its neighbour view.")
    pl.add_argument("--day", default="20110303", help="day folder under the workloads (default 20110303)")
    pl.add_argument("--policy", default="consolidate",
                    help="npa, dvfs, thr-mmt[-T], lr-mmt[-S], drs, balance, consolidate[:key=value,...] "
                         "(default consolidate)")
    pl.add_argument("--compare", action="store_true", help="run every policy on the day and print one table")
    pl.add_argument("--hosts", type=_positive_int, default=800, help="hosts (default 800)")
    pl.add_argument("--accounting", choices=["cloudsim", "strict"], default="cloudsim",
                    help="cloudsim (its RAM quirk and free switch-off) or strict (RAM enforced, standby power, "
                         "wake-up and migration costs); default cloudsim")
    pl.add_argument("--no-lookahead", action="store_true",
                    help="decisions see only the previous interval's sample")
    pl.add_argument("--seed", type=int, default=0, help="seed of the decentralized policies' random choices")
    pl.add_argument("--hours", type=_positive_float, default=24.0, help="replay only this many hours (default 24)")
    pl.add_argument("--workloads-dir", help="folder of day folders (default ../shared/workloads/planetlab, or "
                                            "SHOAL_PLANETLAB_DIR)")
    pl.add_argument("--plot", help="draw active hosts, utilization spread and migrations to this PNG")
    pl.add_argument("--json", action="store_true", help="print JSON instead of the table")

    certs = sub.add_parser("certs", help="make a cluster CA and node or operator certificates",
                           description="Certificate tooling for mutual TLS: a cluster CA, node certificates whose "
                                       "identity is the node id (SAN shoal://node/ID), and operator certificates "
                                       "(SAN shoal://operator/NAME) for the control API.")
    csub2 = certs.add_subparsers(dest="certs_command", metavar="SUBCOMMAND", required=True)
    cinit = csub2.add_parser("init", help="make a cluster CA (ca.crt, ca.key) in DIR")
    cinit.add_argument("--dir", required=True, help="folder for the CA (created if missing)")
    cinit.add_argument("--days", type=_positive_int, default=3650, help="validity (default 3650)")
    cinit.add_argument("--force", action="store_true", help="replace an existing CA")
    cissue = csub2.add_parser("issue", help="issue a node or an operator certificate from the CA in DIR")
    cissue.add_argument("--dir", required=True, help="the CA's folder; the certificate is written there too")
    who = cissue.add_mutually_exclusive_group(required=True)
    who.add_argument("--node", help="node id (the agent's --id or the UUID in its state dir)")
    who.add_argument("--operator", help="operator name (control API client)")
    cissue.add_argument("--ip", action="append", default=[], help="IP SAN for a node (repeatable; default 127.0.0.1)")
    cissue.add_argument("--dns", action="append", default=[], help="DNS SAN for a node (repeatable; default localhost)")
    cissue.add_argument("--days", type=_positive_int, default=825, help="validity (default 825)")
    cissue.add_argument("--force", action="store_true", help="replace an existing certificate")

    _add_sim_parser(sub)

    s = sub.add_parser("status", help="show one agent's view of itself and its peers",
                       description="Ask one agent for its state: utilization, domains, known peers with their "
                                   "last reported utilization and age, migrations and counters.")
    s.add_argument("--target", required=True, type=_address, help="the agent's HOST:PORT")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    for client in (s, top, create, save, restore, migrate):
        _add_client_config(client)
    return p


def _add_client_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client-config", metavar="FILE",
                        help="client.toml with ca, cert and key of an operator certificate (a folder: its "
                             "client.toml, e.g. a `cluster up` state dir); default $SHOAL_CLIENT_CONFIG, else "
                             "plaintext (agents started with --insecure)")


def _cmd_agent(args: argparse.Namespace) -> int:
    from agent.core.config import ConfigError
    from agent.core.validation import ID_RE
    from agent.runtime.identity import load_identity
    from agent.runtime.process import (AgentOptions, host_spec, load_config_file, load_membership_config,
                                       resolve_tls, serve)

    if args.id is not None and not ID_RE.match(args.id):
        raise CliError(f"--id {args.id!r} must be 1-128 characters of [A-Za-z0-9._:-]", EXIT_USAGE)
    if args.id is None and args.state_dir is None and not args.cert:
        raise CliError("give --id, or --state-dir where the node keeps its id (or --cert: the id it names)",
                       EXIT_USAGE)
    try:
        config = load_config_file(args.config, {"profile": args.profile} if args.profile else None)
        membership = load_membership_config(args.config, config.profile)
        host_spec(args.cpu_cores, args.memory_mib, config)
    except ConfigError as exc:
        raise CliError(f"bad configuration: {exc}", EXIT_USAGE) from None
    try:
        tls = resolve_tls(args.ca, args.cert, args.key, args.insecure, args.config)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if tls is not None:
        # The certificate names the node: without --id, that is the id (a fresh state dir adopts it).
        named = tls.check()
        if named.kind != "node":
            raise CliError(f"{tls.cert} is an {named.kind} certificate; an agent needs a node certificate "
                           "(`shoal certs issue --node ID`)", EXIT_USAGE)
        if args.id is not None and args.id != named.name:
            raise CliError(f"--id {args.id} differs from the node id {named.name} that {tls.cert} names; "
                           "peers would refuse this agent", EXIT_USAGE)
        args.id = named.name
    if args.id is None and args.state_dir is None:
        raise CliError("give --id, or --state-dir where the node keeps its id", EXIT_USAGE)
    try:
        if args.state_dir:
            identity = load_identity(args.state_dir, args.id)
            node_id, incarnation = identity.node_id, identity.incarnation
        else:
            # No state dir: nothing survives a restart, so the start time stands
            # in for an incarnation that only ever rises.
            node_id, incarnation = args.id, int(time.time())
    except ConfigError as exc:
        raise CliError(f"bad configuration: {exc}", EXIT_USAGE) from None
    opts = AgentOptions(node_id=node_id, incarnation=incarnation, membership=membership, listen=args.listen,
                        seeds=args.seeds,
                        cpu_cores=args.cpu_cores,
                        memory_mib=args.memory_mib, config=config, ready_file=args.ready_file,
                        rng_seed=args.rng_seed, clock_origin_s=args.clock_origin, advertise=args.advertise,
                        state_dir=args.state_dir, metrics_listen=args.metrics_listen, mqtt_url=args.mqtt,
                        cluster=args.cluster, telemetry_format=args.telemetry_format, tls=tls,
                        tap_core_log=True)
    if args.mqtt:
        from agent.adapters.telemetry import TelemetryError, parse_broker_url
        try:
            parse_broker_url(args.mqtt)
        except TelemetryError as exc:
            raise CliError(f"--mqtt: {exc}", EXIT_USAGE) from None
    if not ID_RE.match(args.cluster):
        raise CliError(f"--cluster {args.cluster!r} must be 1-128 characters of [A-Za-z0-9._:-]", EXIT_USAGE)
    if args.listen.rsplit(":", 1)[0] in ("0.0.0.0", "[::]", "::") and not args.advertise:
        raise CliError(f"--listen {args.listen} needs --advertise HOST:PORT: peers cannot dial a wildcard address",
                       EXIT_USAGE)
    try:
        asyncio.run(serve(opts))
    except ConfigError as exc:
        raise CliError(f"agent {node_id}: {exc}", EXIT_USAGE) from None
    except OSError as exc:
        raise CliError(f"agent {node_id}: {exc}") from None
    return EXIT_OK


def _cmd_cluster(args: argparse.Namespace) -> int:
    from agent.runtime.launcher import ClusterOptions, LaunchError, cluster_chaos, cluster_down, cluster_up

    try:
        if args.cluster_command == "down":
            return cluster_down(args.state_dir)
        if args.cluster_command == "chaos":
            actions = asyncio.run(cluster_chaos(args.state_dir, args.kill, args.every, args.restart_after,
                                                args.seed, out=sys.stderr if args.json else sys.stdout))
            if args.json:
                print(json.dumps({"actions": actions}, indent=2))
            return EXIT_OK
        opts = ClusterOptions(nodes=args.nodes, domains=args.domains, placement=args.placement, seed=args.seed,
                              duration_s=args.duration, cpu_cores=args.cpu_cores, memory_mib=args.memory_mib,
                              workload=args.workload, config_file=args.config, state_dir=args.state_dir,
                              detach=args.detach, json_output=args.json, mqtt_url=args.mqtt, cluster=args.cluster,
                              insecure=args.insecure)
        result = asyncio.run(cluster_up(opts))
    except LaunchError as exc:
        raise CliError(str(exc)) from None
    if result is None:
        return EXIT_OK
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_format_summary(result))
    return EXIT_OK if not (result["lost_domains"] or result["duplicate_domains"]) else EXIT_ERROR


def _format_summary(r: dict) -> str:
    lines = ["", "summary", f"{'node':<10}{'cpu%':>7}{'mem%':>7}{'domains':>9}  {'address':<22}id"]
    for n in r["nodes"]:
        if n["cpu_utilization"] is None:
            lines.append(f"{n['name']:<10}{'--':>7}{'--':>7}{'--':>9}  {n['address']:<22}{n['id']} (unreachable)")
        else:
            lines.append(f"{n['name']:<10}{n['cpu_utilization'] * 100:7.1f}{n['memory_utilization'] * 100:7.1f}"
                         f"{n['domains']:9d}  {n['address']:<22}{n['id']}")
    lines += [f"domains: {r['domains_total']}   migrations: {r['migrations']} (failed or refused: "
              f"{r['migrations_failed']})",
              f"cpu utilization CoV: {r['initial_cov']:.3f} -> {r['final_cov']:.3f}   "
              f"max cpu: {(r['max_cpu_utilization'] or 0) * 100:.1f}%   balanced after: "
              f"{str(r['converged_s']) + ' s' if r.get('converged_s') is not None else 'not reached'}",
              f"lost domains: {r['lost_domains'] or 'none'}   duplicate domains: {r['duplicate_domains'] or 'none'}"]
    return "\n".join(lines)


def _cmd_broker(args: argparse.Namespace) -> int:
    from agent.runtime.process import run_broker

    try:
        asyncio.run(run_broker(args.listen, args.ready_file))
    except OSError as exc:
        raise CliError(f"broker on {args.listen}: {exc}") from None
    return EXIT_OK


def _cmd_experiment(args: argparse.Namespace) -> int:
    from experiment.planetlab.cli import COMPARE_POLICIES, run_experiment

    policies = list(COMPARE_POLICIES) if args.compare else [args.policy]
    try:
        run_experiment(args.day, policies, hosts=args.hosts, accounting=args.accounting, seed=args.seed,
                       lookahead=not args.no_lookahead, hours=args.hours, workloads_dir=args.workloads_dir,
                       json_output=args.json, plot_path=args.plot)
    except FileNotFoundError as exc:
        raise CliError(f"workloads not found: {exc}") from None
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    return EXIT_OK


def _cmd_certs(args: argparse.Namespace) -> int:
    from agent.adapters.certs import CertError, init_ca, issue_node, issue_operator

    try:
        if args.certs_command == "init":
            paths = init_ca(args.dir, days=args.days, force=args.force)
        elif args.node:
            paths = issue_node(args.dir, args.node, ips=tuple(args.ip) or ("127.0.0.1",),
                               dns=tuple(args.dns) or ("localhost",), days=args.days, force=args.force)
        else:
            paths = issue_operator(args.dir, args.operator, days=args.days, force=args.force)
    except CertError as exc:
        raise CliError(str(exc)) from None
    print(f"certificate {paths.cert}\nkey         {paths.key}\nca          {paths.ca}")
    return EXIT_OK


def _client_tls(args: argparse.Namespace):
    """The operator's TLS files from --client-config or $SHOAL_CLIENT_CONFIG; None: plaintext."""
    from agent.adapters.client_config import ClientConfigError, resolve_client_tls

    try:
        return resolve_client_tls(args.client_config)
    except ClientConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def _rpc_failure(exc, target: str, tls) -> str:
    from agent.adapters.client_config import describe_rpc_error

    return describe_rpc_error(exc, target, tls is not None)


def _cmd_top(args: argparse.Namespace) -> int:
    import grpc

    from agent.runtime.top import run_top

    tls = _client_tls(args)
    try:
        return asyncio.run(run_top(args.target, args.interval, args.iterations, tls=tls))
    except grpc.aio.AioRpcError as exc:
        raise CliError(f"cannot get status from {args.target}: {_rpc_failure(exc, args.target, tls)}") from None


def _cmd_status(args: argparse.Namespace) -> int:
    import grpc

    from agent.adapters.control_client import ControlClient

    tls = _client_tls(args)

    async def fetch() -> dict:
        client = ControlClient(args.target, tls)
        try:
            return await client.status()
        finally:
            await client.close()
    try:
        s = asyncio.run(fetch())
    except grpc.aio.AioRpcError as exc:
        raise CliError(f"cannot get status from {args.target}: {_rpc_failure(exc, args.target, tls)}") from None
    if args.json:
        print(json.dumps(s, indent=2))
        return EXIT_OK
    print(f"node {s['id']} at {s['address']}: cpu {s['cpu_utilization'] * 100:.1f}% "
          f"({s['cpu_demand_cores']:.2f}/{s['cpu_capacity_cores']:g} cores, unserved {s['cpu_unserved_cores']:.2f}), "
          f"memory {s['memory_utilization'] * 100:.1f}%, cluster mean estimate "
          f"{s['mean_utilization_estimate'] * 100:.1f}%, balancing {'on' if s['balancing'] else 'paused'}")
    print(f"\n{'domain':<14}{'epoch':>6}  {'state':<14}{'cpu':>7}{'mem MiB':>9}  labels")
    for d in s["domains"]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(d.get("labels", {}).items()))
        print(f"{d['id']:<14}{d['epoch']:>6}  {d['state']:<14}{d['cpu_demand_cores']:7.2f}{d['memory_mib']:9d}  "
              f"{labels}".rstrip())
    print(f"\n{'peer':<14}{'cpu%':>7}{'mem%':>7}{'age s':>8}  address")
    for p in s["peers"]:
        print(f"{p['id']:<14}{p['cpu_utilization'] * 100:7.1f}{p['memory_utilization'] * 100:7.1f}"
              f"{p['age_s']:8.1f}  {p['address']}")
    if s["migrations"]:
        print("\nmigrations in flight:")
        for m in s["migrations"]:
            print(f"  {m['direction']:<4}{m['domain_id']:<14}{m['peer_id']:<14}{m['state']}")
    ha = s["ha"]
    print(f"\nhigh availability: {ha['replicas']} replicas held (factor {ha['replicas_factor']}), "
          f"{ha['restarts']} restarts, {ha['fenced']} copies fenced, {len(ha['unplaced'])} unplaced; "
          f"checkpoints: {ha['checkpoints_held']} held for others, {ha['checkpointed']} of own domains held by buddies")
    for u in ha["unplaced"]:
        print(f"  unplaced {u['id']} of dead {u['owner']}: {u['reason']}")
    print("\ncounters: " + ", ".join(f"{k}={v}" for k, v in s["counters"].items()))
    return EXIT_OK


def _cmd_domain(args: argparse.Namespace) -> int:
    import uuid

    import grpc

    from agent.adapters.control_client import ControlClient
    from hypervisor.domain import DomainSpec, DomainSpecError
    from hypervisor.workload import WorkloadError, WorkloadSpec

    tls = _client_tls(args)

    async def call(fn):
        client = ControlClient(args.target, tls)
        try:
            return await fn(client)
        finally:
            await client.close()

    try:
        if args.domain_command == "create":
            try:
                wws = args.wws_mib if args.wws_mib is not None else (
                    min(4.0, float(args.memory_mib)) if args.dirty_rate_mib_s > 0 else 0.0)
                spec = DomainSpec(domain_id=args.id or str(uuid.uuid4()), vcpus=args.vcpus,
                                  memory_mib=args.memory_mib, cpu_weight=args.cpu_weight,
                                  cpu_cap_pct=args.cpu_cap_pct, workload=WorkloadSpec.parse(args.workload),
                                  wws_mib=wws, dirty_rate_mib_s=args.dirty_rate_mib_s,
                                  labels=tuple(sorted(args.label)))
                spec.validate()
            except (DomainSpecError, WorkloadError) as exc:
                raise CliError(str(exc), EXIT_USAGE) from None
            asyncio.run(call(lambda c: c.create_domain(spec)))
            print(f"created domain {spec.domain_id} on {args.target}")
            return EXIT_OK
        if args.domain_command == "save":
            blob = asyncio.run(call(lambda c: c.save_domain(args.domain)))
            try:
                with open(args.out, "wb") as fh:
                    fh.write(blob)
            except OSError as exc:
                raise CliError(f"cannot write {args.out}: {exc}") from None
            print(f"saved domain {args.domain} ({len(blob)} bytes) to {args.out}")
            return EXIT_OK
        if args.domain_command == "restore":
            try:
                with open(args.file, "rb") as fh:
                    blob = fh.read()
            except OSError as exc:
                raise CliError(f"cannot read {args.file}: {exc}") from None
            restored = asyncio.run(call(lambda c: c.restore_domain(blob)))
            print(f"restored domain {restored['id']} on {args.target} at epoch {restored['epoch']}")
            return EXIT_OK
        if not (args.bandwidth_mib_s >= 0 and math.isfinite(args.bandwidth_mib_s)):
            raise CliError("--bandwidth-mib-s must be a finite number >= 0", EXIT_USAGE)
        resp = asyncio.run(call(lambda c: c.migrate(args.domain, args.to, bandwidth_mib_s=args.bandwidth_mib_s,
                                                    wait=args.wait)))
        if not args.wait:
            if resp.migration_id:
                print(json.dumps({"started": True, "migration_id": resp.migration_id}) if args.json else
                      f"migration {resp.migration_id} of {args.domain} to {args.to} started")
                return EXIT_OK
            print(f"shoal: error: migration of {args.domain} not started: {resp.reason}", file=sys.stderr)
            return EXIT_ERROR
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:  # unreachable, or TLS failed: say which
            raise CliError(_rpc_failure(exc, args.target, tls)) from None
        raise CliError(f"{args.target} refused: {exc.code().name}: {exc.details()}") from None
    result = {"migrated": resp.migrated, "reason": resp.reason, "migration_id": resp.migration_id,
              "epoch": resp.epoch, "bytes_sent": resp.bytes_sent, "duration_s": round(resp.duration_s, 4),
              "prepare_s": round(resp.prepare_s, 4), "transfer_s": round(resp.transfer_s, 4),
              "rounds": resp.rounds, "downtime_ms": round(resp.downtime_ms, 3), "stop_reason": resp.stop_reason,
              "accounted_bytes": resp.accounted_bytes, "hash_equal": resp.hash_equal}
    if args.json:
        print(json.dumps(result, indent=2))
    elif resp.migrated:
        print(f"migrated {args.domain} to {args.to} at epoch {resp.epoch}: {resp.rounds} rounds, "
              f"{resp.bytes_sent} bytes in {resp.duration_s:.3f} s (transfer {resp.transfer_s:.3f} s), "
              f"downtime {resp.downtime_ms:.1f} ms "
              f"(pre-copy stopped: {resp.stop_reason})")
    else:
        print(f"shoal: error: migration of {args.domain} not done: {resp.reason}", file=sys.stderr)
    return EXIT_OK if resp.migrated else EXIT_ERROR


def _cmd_bench(args: argparse.Namespace) -> int:
    from agent.runtime.bench import (MembershipBenchOptions, MigrationBenchOptions, bench_membership,
                                     bench_migration, format_membership, format_migration, print_json)
    from agent.runtime.launcher import LaunchError

    if args.bench_command == "membership":
        try:
            sizes = tuple(int(x) for x in args.nodes.split(",") if x.strip())
        except ValueError:
            raise CliError(f"--nodes {args.nodes!r} is not a comma-separated list of sizes", EXIT_USAGE) from None
        try:
            result = asyncio.run(bench_membership(
                MembershipBenchOptions(sizes, args.duration, args.kills, args.seed),
                say=lambda line: print(line, file=sys.stderr)))
        except LaunchError as exc:
            raise CliError(str(exc)) from None
        print(json.dumps(result, indent=2) if args.json else format_membership(result))
        return EXIT_OK
    try:
        opts = MigrationBenchOptions(size_mib=args.size_mib, dirty_rate_mib_s=args.dirty_rate_mib_s,
                                     wws_mib=args.wws_mib, bandwidth_mib_s=args.bandwidth_mib_s,
                                     xen_rate_adaptation=args.xen_rate, insecure=args.insecure)
        result = asyncio.run(bench_migration(opts))
    except LaunchError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print_json(result)
    else:
        print(format_migration(result))
    return EXIT_OK


# -- shoal sim (deterministic simulation: agent/runtime/simulator.py) -------------------------------------
def _add_sim_parser(sub) -> None:
    sim = sub.add_parser(
        "sim", help="deterministic simulation: N agents' real cores, a virtual clock, seeded faults",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run N agents in one process on an in-memory network with a virtual clock: the same "
                    "membership, gossip, policy, handoff and pre-copy cores as the gRPC agents. One seed drives "
                    "every random choice and every fault, so a failing run replays exactly from its seed.",
        epilog="Fault classes: none; crash (crash, optionally at a journal append losing or keeping the "
               "unsynced record, restart from the journal at a higher incarnation, some permanent); partition "
               "(isolate one, random split, asymmetric, then heal); network (loss, duplication, reordering, "
               "delay, a slow node, failed migration transfers); all (every one of them).\n\n"
               "Safety checkers run after every step: at most one active copy of a domain, epochs and "
               "incarnations only rise, no host over its memory incl. reservations, message sizes within "
               "bounds, no domain vanishing. Then the faults stop and, within a bound the run reports, "
               "membership must converge, handoffs finish, every domain with a live holder run exactly once "
               "(domains whose holders all died are counted as lost) and the utilization CoV fall under "
               "--cov-target.\n\nExit code 1 on any violation or liveness failure; the seed, the invariant, "
               "the trace tail and a reproduce command are printed.\n\n"
               "  shoal sim --nodes 64 --domains 512 --seeds 1-200 --faults all --json\n"
               "  shoal sim --nodes 10000 --domains 50000 --duration 600 --faults none --json")
    sim.add_argument("--nodes", type=_positive_int, default=16, help="agents (default 16)")
    sim.add_argument("--domains", type=_non_negative_int, default=64,
                     help="domains, first placed on a quarter of the nodes (default 64)")
    which = sim.add_mutually_exclusive_group()
    which.add_argument("--seed", type=int, default=1, help="the seed of one run (default 1)")
    which.add_argument("--seeds", help="a sweep: A-B (inclusive) or a comma list; one run per seed")
    sim.add_argument("--duration", type=_positive_float, default=120.0,
                     help="model seconds with faults on, before the liveness phase (default 120)")
    sim.add_argument("--faults", choices=("none", "crash", "partition", "network", "all"), default="none",
                     help="fault class (default none)")
    sim.add_argument("--workload", choices=("sine", "constant"), default="sine",
                     help="domain demand: sine keeps load shifting (default), constant balances once")
    sim.add_argument("--cov-target", type=_positive_float, default=0.2,
                     help="utilization CoV the cluster must fall under once faults stop (default 0.2)")
    sim.add_argument("--settle-max", type=_positive_float, default=None,
                     help="model seconds allowed to settle after the faults stop (default: derived from the "
                          "membership and agent configuration, reported as settle_bound_s)")
    sim.add_argument("--start", choices=("auto", "join", "formed"), default="auto",
                     help="join: every node joins through seeds at the start (O(N^2) membership updates in "
                          "all); formed: the nodes start as a cluster that converged long ago; auto (default): "
                          "join below 1000 nodes, formed from 1000")
    sim.add_argument("--jobs", type=_positive_int, default=1,
                     help="runs of a sweep at once, one process each (default 1); output stays in seed order")
    sim.add_argument("--progress", action="store_true",
                     help="a line on stderr every 10 model seconds: model and wall time, messages per node "
                          "per second, migrations (for long runs)")
    sim.add_argument("--trace-tail", type=_non_negative_int, default=25,
                     help="trace lines printed for a failing run (default 25)")
    sim.add_argument("--json", action="store_true", help="print one JSON object (runs, violations, ...)")


def _run_sim_or_error(run_sim, opts):
    try:
        return run_sim(opts)
    except ValueError as exc:  # a plan that cannot be placed: reported, not a traceback
        return exc


def _sim_results(run_sim, options: list, jobs: int):
    """Results in the order of `options`, each as soon as it and those before it are done."""
    if jobs == 1 or len(options) == 1:
        for opts in options:
            yield _run_sim_or_error(run_sim, opts)
        return
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    with ProcessPoolExecutor(max_workers=min(jobs, len(options))) as pool:
        yield from pool.map(partial(_run_sim_or_error, run_sim), options)


def _cmd_sim(args: argparse.Namespace) -> int:
    from agent.runtime.simulator import SimOptions, parse_seeds, run_sim, summarize

    try:
        seeds = parse_seeds(args.seeds) if args.seeds else [args.seed]
    except ValueError as exc:
        raise CliError(f"--seeds: {exc}", EXIT_USAGE) from None
    options = [SimOptions(nodes=args.nodes, domains=args.domains, seed=seed, duration_s=args.duration,
                          faults=args.faults, cov_target=args.cov_target, settle_s_max=args.settle_max,
                          workload=args.workload, start=args.start, progress=args.progress) for seed in seeds]
    try:
        for opts in options:
            opts.validate()
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    results = []
    for seed, result in zip(seeds, _sim_results(run_sim, options, args.jobs)):
        if isinstance(result, ValueError):
            raise CliError(str(result), EXIT_USAGE)
        results.append(result)
        failed = result.violation is not None or result.liveness_failure is not None
        if failed:
            what = (f"violation of {result.violation.invariant}: {result.violation.detail} "
                    f"(at model time {result.violation.time_s:.3f} s)" if result.violation
                    else f"liveness failure: {result.liveness_failure}")
            print(f"seed {seed}: {what}", file=sys.stderr)
            if args.trace_tail:
                print("trace tail:", file=sys.stderr)
                for line in result.trace_tail[-args.trace_tail:]:
                    print(f"  {line}", file=sys.stderr)
            print(f"reproduce with: shoal sim --nodes {args.nodes} --domains {args.domains} --duration "
                  f"{args.duration:g} --faults {args.faults} --workload {args.workload} --start {result.start} "
                  f"--seed {seed}", file=sys.stderr)
        if not args.json:
            r = result
            print(f"seed {seed}: {'FAIL' if failed else 'ok'}  model {r.model_seconds:.0f} s, wall "
                  f"{r.wall_seconds:.2f} s, {r.messages_per_node_per_s:.2f} msgs/node/s, {r.migrations} "
                  f"migrations ({r.migrations_failed} failed), CoV {r.final_cov:.3f}, lost {r.lost}, settled "
                  f"{'-' if r.settle_s is None else f'{r.settle_s:.0f} s'} (bound {r.settle_bound_s:.0f} s), "
                  f"faults {sum(r.faults_injected.values())}")
    summary = summarize(results)
    if args.json:
        if len(results) > 1:
            summary.pop("per_run")
            summary["seeds"] = f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else seeds
        print(json.dumps(summary, indent=2))
    elif len(results) > 1:
        print(f"{summary['runs']} runs: {len(summary['violations'])} violations, "
              f"{len(summary['liveness_failures'])} liveness failures, {summary['lost']} domains lost, "
              f"wall {summary['wall_seconds']:.1f} s")
    return EXIT_ERROR if summary["violations"] or summary["liveness_failures"] else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if args.log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level, handlers=[handler])
    for chatty in ("amqtt", "matplotlib"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLevelName(args.log_level)))
    handlers = {"agent": _cmd_agent, "cluster": _cmd_cluster, "status": _cmd_status, "domain": _cmd_domain,
                "bench": _cmd_bench, "broker": _cmd_broker,
                "top": _cmd_top, "experiment": _cmd_experiment, "certs": _cmd_certs,
                "sim": _cmd_sim}
    try:
        return handlers[args.command](args)
    except CliError as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("shoal: interrupted", file=sys.stderr)
        return 130
