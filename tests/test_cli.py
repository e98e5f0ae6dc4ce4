"""The command line: bad flags and configs fail clearly with non-zero exits."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shoal.cli import main


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True, text=True, timeout=timeout)


def test_help_explains_every_command():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("agent", "cluster", "status"):
        assert cmd in out.stdout
    up = run("cluster", "up", "--help")
    assert "--placement" in up.stdout and "--detach" in up.stdout and "--json" in up.stdout


@pytest.mark.parametrize("argv", [
    ["--bogus"],
    ["agent", "--id", "a", "--listen", "nohostport"],
    ["agent", "--id", "a", "--listen", "127.0.0.1:0", "--cpu-cores", "-3"],
    ["agent", "--id", "a", "--listen", "127.0.0.1:0", "--cpu-cores", "nan"],
    ["cluster", "up", "--nodes", "0"],
    ["cluster", "up", "--placement", "diagonal"],
    ["domain", "create", "--target", "127.0.0.1:1", "--vcpus", "1", "--memory-mib", "64", "--label", "novalue"],
    ["domain", "create", "--target", "127.0.0.1:1", "--vcpus", "1", "--memory-mib", "64", "--label", "=x"],
])
def test_bad_flags_exit_2_with_a_message(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_bad_node_id_is_refused(capsys):
    assert main(["agent", "--id", "has space", "--listen", "127.0.0.1:0"]) == 2
    assert "--id" in capsys.readouterr().err


@pytest.mark.parametrize("content,needle", [
    ("gossip_interval_ms = 100\nbogus_setting = 3\n", "unknown setting(s) bogus_setting"),
    ("high_watermark = 1.5\n", "high_watermark"),
    ("peer_stale_ms = 100\ngossip_interval_ms = 500\n", "peer_stale_ms must be at least"),
    ("gossip_interval_ms = 'fast'\n", "gossip_interval_ms"),
    ("this is not toml", "config file"),
])
def test_broken_config_exits_2_and_names_the_problem(tmp_path, capsys, content, needle):
    path = tmp_path / "agent.toml"
    path.write_text(content)
    assert main(["agent", "--id", "a", "--listen", "127.0.0.1:0", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bad configuration" in err and needle in err


def test_missing_config_file_is_reported(capsys):
    assert main(["agent", "--id", "a", "--listen", "127.0.0.1:0", "--config", "/nonexistent.toml"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_detach_without_state_dir_is_refused(capsys):
    assert main(["cluster", "up", "--detach"]) == 1
    assert "--state-dir" in capsys.readouterr().err


def test_status_of_an_unreachable_agent_fails_clearly():
    out = run("status", "--target", "127.0.0.1:1", timeout=30)
    assert out.returncode == 1
    assert "cannot get status from 127.0.0.1:1" in out.stderr


def test_cluster_down_without_a_cluster_file_fails_clearly(tmp_path, capsys):
    assert main(["cluster", "down", "--state-dir", str(tmp_path)]) == 1
    assert "no cluster.json" in capsys.readouterr().err


def test_listen_on_a_taken_port_fails_clearly(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run("agent", "--id", "a", "--listen", f"127.0.0.1:{port}", "--insecure", timeout=30)
    assert out.returncode != 0
    assert "127.0.0.1" in out.stderr


def test_wildcard_listen_without_advertise_is_refused(capsys):
    assert main(["agent", "--id", "a", "--listen", "0.0.0.0:7946", "--insecure"]) == 2
    assert "--advertise" in capsys.readouterr().err


def test_advertised_address_keeps_the_bound_port_for_port_zero():
    from agent.runtime.process import advertised_address
    assert advertised_address("0.0.0.0:4321", "10.1.2.3:0") == "10.1.2.3:4321"
    assert advertised_address("0.0.0.0:4321", "shoal-0.shoal:7946") == "shoal-0.shoal:7946"
    assert advertised_address("127.0.0.1:4321", None) == "127.0.0.1:4321"


def test_json_log_format_writes_one_object_per_line():
    import json
    out = run("--log-format", "json", "status", "--target", "127.0.0.1:1", timeout=30)
    assert out.returncode == 1
    out2 = run("--log-format", "json", "agent", "--id", "x", "--listen", "127.0.0.1:0", "--cpu-cores", "1",
               "--config", "/nonexistent.toml", timeout=30)
    assert out2.returncode == 2
    from shoal.cli import JsonFormatter
    import logging
    line = JsonFormatter().format(logging.LogRecord("shoal.agent", logging.WARNING, __file__, 1, "hello %s", ("x",),
                                                    None))
    assert json.loads(line) == {"ts": json.loads(line)["ts"], "level": "WARNING", "logger": "shoal.agent",
                                "message": "hello x"}


def test_certs_init_and_issue_make_a_ca_node_and_operator_certificate(tmp_path):
    from agent.adapters.certs import identity_from_pem
    d = tmp_path / "ca"
    assert main(["certs", "init", "--dir", str(d)]) == 0
    assert main(["certs", "issue", "--dir", str(d), "--node", "node-a", "--ip", "127.0.0.1", "--dns", "a.local"]) == 0
    assert main(["certs", "issue", "--dir", str(d), "--operator", "alice"]) == 0
    node = next(d.glob("node-node-a.crt")).read_bytes()
    op = next(d.glob("operator-alice.crt")).read_bytes()
    assert tuple(identity_from_pem(node)) == ("node", "node-a")
    assert tuple(identity_from_pem(op)) == ("operator", "alice")
    assert oct((d / "ca.key").stat().st_mode & 0o777) == "0o600"


def test_certs_refuse_to_overwrite_or_to_issue_without_a_ca(tmp_path, capsys):
    d = tmp_path / "ca"
    assert main(["certs", "issue", "--dir", str(d), "--node", "n1"]) == 1
    assert "no cluster CA" in capsys.readouterr().err
    assert main(["certs", "init", "--dir", str(d)]) == 0
    assert main(["certs", "init", "--dir", str(d)]) == 1
    assert "force" in capsys.readouterr().err


def test_config_whose_agent_section_is_not_a_table_is_refused(tmp_path, capsys):
    path = tmp_path / "agent.toml"
    path.write_text("agent = 5\n")
    assert main(["agent", "--id", "a", "--listen", "127.0.0.1:0", "--config", str(path)]) == 2
    assert "[agent] must be a table" in capsys.readouterr().err


def test_a_label_given_twice_is_refused_before_any_call(capsys):
    argv = ["domain", "create", "--target", "127.0.0.1:1", "--vcpus", "1", "--memory-mib", "64",
            "--label", "anti-affinity=db", "--label", "anti-affinity=web"]
    assert main(argv) == 2
    assert "label 'anti-affinity' given twice" in capsys.readouterr().err
