"""The deployment files name only flags the agent really has."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from shoal.cli import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _expand(args: list[str]) -> list[str]:
    # Kubernetes expands $(VAR) from the pod's env; stand in a plausible value.
    return [re.sub(r"\$\((\w+)\)", "x", a) for a in args]


def test_compose_agents_parse_and_advertise_their_service_name():
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    assert len(services) == 3
    for name, svc in services.items():
        args = build_parser().parse_args(svc["command"])
        assert args.command == "agent" and args.state_dir == "/var/lib/shoal"
        assert args.advertise == f"{name}:7946"
        # mutual TLS: the node certificate named after the service (its node id), from a mounted folder
        assert not args.insecure and args.ca and args.cert == f"/etc/shoal/tls/node-{name}.crt"
        assert any(v.endswith(":/etc/shoal/tls:ro") for v in svc["volumes"])
        for seed in args.seeds:
            assert seed.split(":")[0] in services


def test_kubernetes_statefulset_agent_parses_and_seeds_its_own_pods():
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "shoal.yaml").read_text()))
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    svc = next(d for d in docs if d["kind"] == "Service")
    assert svc["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == svc["metadata"]["name"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(_expand(container["args"]))
    assert args.command == "agent" and args.listen == "0.0.0.0:7946" and args.advertise
    assert not args.insecure and args.ca and args.cert and args.key  # mutual TLS from the shoal-tls Secret
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert args.cert.startswith(mounts["tls"]) and volumes["tls"]["secret"]["secretName"] == "shoal-tls"
    replicas = sts["spec"]["replicas"]
    assert all(int(s.split(".")[0].rsplit("-", 1)[1]) < replicas for s in args.seeds)


def test_dockerfile_default_command_parses():
    text = re.sub(r"\\\n\s*", "", (DEPLOY / "Dockerfile").read_text())  # join continued lines
    cmd = re.search(r'^CMD (\[.*\])$', text, re.M).group(1)
    import json
    args = build_parser().parse_args(json.loads(cmd))
    assert args.command == "agent" and args.state_dir == "/var/lib/shoal"
    assert args.ca and args.cert and args.key and not args.insecure  # mutual TLS by default
