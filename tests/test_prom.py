"""Per-agent Prometheus metrics: the flat-counter bridge, and /metrics over HTTP linted by promtool."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.adapters.prom import AgentMetrics, parse_counter_key
from agent.runtime.metrics import Metrics


def samples(metrics: AgentMetrics) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: AgentMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def test_parse_counter_key_reads_the_flat_key_format_of_agent_metrics():
    flat = Metrics()
    flat.inc("migrations_failed", reason="rejected")
    flat.inc("messages", type="gossip", direction="in")
    keys = list(flat.snapshot())
    assert [parse_counter_key(k) for k in keys] == [
        ("messages", {"direction": "in", "type": "gossip"}), ("migrations_failed", {"reason": "rejected"})]
    assert parse_counter_key("no spaces{a=b}") is None
    assert parse_counter_key("x{novalue}") is None


def test_sync_counters_maps_the_agents_counters_and_adds_only_increases():
    flat, prom = Metrics(), AgentMetrics()
    flat.inc("migrations_started", 3)
    flat.inc("migrations_succeeded", 2)
    flat.inc("migrations_failed", reason="rejected")
    flat.inc("rejected_inputs", reason="non_finite")
    flat.inc("gossip_exchanges_sent", 7)
    flat.inc("gossip_exchanges_received", 5)
    flat.inc("migration_bytes_sent", 4096)
    flat.inc("migration_bytes_received", 1024)
    assert prom.sync_counters(flat.snapshot()) == []
    flat.inc("migrations_started")
    flat.inc("gossip_exchanges_sent", 3)
    prom.sync_counters(flat.snapshot())
    prom.sync_counters(flat.snapshot())  # no change: adds nothing
    assert value(prom, "shoal_migrations_started_total") == 4
    assert value(prom, "shoal_migrations_succeeded_total") == 2
    assert value(prom, "shoal_migrations_failed_total", reason="rejected") == 1
    assert value(prom, "shoal_rejected_inputs_total", reason="non_finite") == 1
    assert value(prom, "shoal_messages_total", type="gossip", direction="out") == 10
    assert value(prom, "shoal_messages_total", type="gossip", direction="in") == 5
    assert value(prom, "shoal_bytes_total", type="migration", direction="out") == 4096
    assert value(prom, "shoal_bytes_total", type="migration", direction="in") == 1024


def test_unmapped_counters_are_exported_under_their_own_name_and_clashes_are_reported():
    prom = AgentMetrics()
    skipped = prom.sync_counters({"gossip_failed{code=UNAVAILABLE}": 3, "peers_forgotten": 1,
                                  "domains": 9, "migrations_failed{reason=x,extra=y}": 1})
    assert value(prom, "shoal_gossip_failed_total", code="UNAVAILABLE") == 3
    assert value(prom, "shoal_peers_forgotten_total") == 1
    # `domains` would clash with the gauge; an extra label doesn't fit migrations_failed.
    assert skipped == ["domains", "migrations_failed{reason=x,extra=y}"]
    assert value(prom, "shoal_domains") == 0


def test_a_counter_that_went_back_to_zero_counts_as_restarted():
    prom = AgentMetrics()
    prom.sync_counters({"migrations_started": 5})
    prom.sync_counters({"migrations_started": 2})
    assert value(prom, "shoal_migrations_started_total") == 7


def test_gauges_histograms_and_status():
    prom = AgentMetrics(node_id="node-1", cluster="lab")
    prom.update_from_status({"cpu_utilization": 0.625, "memory_utilization": 0.5,
                             "domains": [{"id": "a"}, {"id": "b"}], "counters": {"migrations_started": 1}})
    prom.set_members({"alive": 4, "suspect": 1})
    prom.set_members({"alive": 5})
    prom.observe_migration(1.5, downtime_s=0.08)
    prom.observe_migration(0.3)
    assert value(prom, "shoal_cpu_utilization") == 0.625
    assert value(prom, "shoal_memory_utilization") == 0.5
    assert value(prom, "shoal_domains") == 2
    assert value(prom, "shoal_migrations_started_total") == 1
    assert value(prom, "shoal_members", status="alive") == 5
    assert value(prom, "shoal_members", status="suspect") == 0
    assert value(prom, "shoal_migration_duration_seconds_count") == 2
    assert value(prom, "shoal_migration_duration_seconds_sum") == pytest.approx(1.8)
    assert value(prom, "shoal_migration_downtime_seconds_count") == 1
    assert value(prom, "shoal_migration_downtime_seconds_bucket", le="0.1") == 1
    assert value(prom, "shoal_node_info", node_id="node-1", cluster="lab") == 1


def test_two_agents_in_one_process_keep_separate_registries():
    a, b = AgentMetrics(node_id="a"), AgentMetrics(node_id="b")
    a.sync_counters({"migrations_started": 3})
    assert value(a, "shoal_migrations_started_total") == 3
    assert value(b, "shoal_migrations_started_total") == 0


def test_metrics_over_http_pass_promtool_lint():
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required for this test: apt-get install -y prometheus"
    prom = AgentMetrics(node_id="node-1", cluster="lab")
    prom.set_load(0.7, 0.4, 3)
    prom.set_members({"alive": 3})
    prom.observe_migration(2.0, 0.05)
    prom.sync_counters({"migrations_failed{reason=rejected}": 1, "gossip_exchanges_sent": 4,
                        "gossip_failed{code=DEADLINE_EXCEEDED}": 2, "rejected_inputs{reason=bad_id}": 1})
    server, port = prom.start_http("127.0.0.1", 0)
    try:
        assert port > 0 and server.url == f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            body = resp.read()
    finally:
        server.stop()
    text = body.decode()
    assert 'shoal_migrations_failed_total{reason="rejected"} 1.0' in text
    assert 'shoal_messages_total{direction="out",type="gossip"} 4.0' in text
    assert "shoal_migration_duration_seconds_bucket" in text
    lint = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), \
        f"promtool check metrics: rc={lint.returncode}\n{lint.stdout.decode()}{lint.stderr.decode()}"
    # The server is really gone: a new connection is refused.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
