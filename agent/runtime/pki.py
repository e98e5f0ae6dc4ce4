"""A throwaway PKI for a local cluster, so `shoal cluster up` is secure by default.

In the cluster's state dir:

    pki/ca.crt, pki/ca.key                   the cluster CA (kept if it exists)
    pki/node-<id>.crt/.key                   one per node; <id> is the UUID the launcher
                                             writes to node-I/node-id before the first start
    pki/operator-shoal.crt/.key              the operator certificate of every client command
    client.toml                              ca, cert, key of that operator (relative paths)

The node id is fixed before the agent first runs, so the certificate names
the id the agent will claim in gossip (agents refuse a mismatch).
"""

from __future__ import annotations

from pathlib import Path

from agent.adapters.certs import CA_CERT_FILE, init_ca, issue_node, issue_operator
from agent.adapters.client_config import CLIENT_CONFIG_FILE, write_client_config
from agent.adapters.tls import TlsFiles
from agent.runtime.identity import ensure_node_id

PKI_DIR = "pki"
OPERATOR_NAME = "shoal"


def ensure_ca(state_dir: Path) -> Path:
    pki = state_dir / PKI_DIR
    if not (pki / CA_CERT_FILE).exists():
        init_ca(pki, name="local")
    return pki


def issue_node_files(state_dir: Path, node_dir: Path) -> TlsFiles:
    """The node's certificate for the id kept in node_dir (made now if new), from the cluster CA."""
    pki = ensure_ca(state_dir)
    paths = issue_node(pki, ensure_node_id(node_dir), force=True)
    return TlsFiles((paths.ca,), paths.cert, paths.key)


def write_operator_config(state_dir: Path) -> Path:
    """A fresh operator certificate and STATE_DIR/client.toml naming it."""
    pki = ensure_ca(state_dir)
    op = issue_operator(pki, OPERATOR_NAME, force=True)
    return write_client_config(state_dir / CLIENT_CONFIG_FILE, op.ca, op.cert, op.key)


def tls_args(files: TlsFiles) -> list[str]:
    """The agent command-line flags for these files."""
    args = []
    for ca in files.ca:
        args += ["--ca", ca]
    return args + ["--cert", files.cert, "--key", files.key]
