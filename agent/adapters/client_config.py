"""How an operator's client finds its TLS material, and what it says when TLS fails.

A client config is a small TOML file, as `shoal cluster up` writes it:

    ca = "pki/ca.crt"                  # or a list: trust an old and a new CA
    cert = "pki/operator-shoal.crt"
    key = "pki/operator-shoal.key"

Relative paths are resolved against the file's own folder, so a cluster's
state dir can be moved or mounted elsewhere. Every client command takes
`--client-config FILE` (a folder means FILE/client.toml), else the variable
SHOAL_CLIENT_CONFIG; with neither it speaks plaintext, which only an agent
started with `--insecure` answers.

A failed handshake reaches a gRPC client as UNAVAILABLE with a transport
string; `describe_rpc_error` turns it into a sentence that says TLS failed and
what to check.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import grpc

from agent.adapters.certs import CertError
from agent.adapters.tls import TlsFiles

CLIENT_CONFIG_ENV = "SHOAL_CLIENT_CONFIG"
CLIENT_CONFIG_FILE = "client.toml"


class ClientConfigError(ValueError):
    """The client config cannot be used; the message names the file and why."""


def _paths(value, base: Path, what: str, source: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise ClientConfigError(f"{source}: `{what}` must be a path or a list of paths")
    return tuple(str((base / v) if not Path(v).is_absolute() else Path(v)) for v in items)


def load_client_config(path: str | os.PathLike) -> TlsFiles:
    """Reads a client.toml (or DIR/client.toml) and checks its files; raises ClientConfigError."""
    p = Path(path)
    if p.is_dir():
        p = p / CLIENT_CONFIG_FILE
    try:
        with open(p, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ClientConfigError(f"client config {p} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ClientConfigError(f"client config {p}: {exc}") from None
    unknown = sorted(set(data) - {"ca", "cert", "key"})
    missing = [k for k in ("ca", "cert", "key") if k not in data]
    if unknown or missing:
        raise ClientConfigError(f"client config {p}: needs keys ca, cert and key"
                                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                                + (f"; missing: {', '.join(missing)}" if missing else ""))
    base = p.resolve().parent
    files = TlsFiles(_paths(data["ca"], base, "ca", str(p)), _paths(data["cert"], base, "cert", str(p))[0],
                     _paths(data["key"], base, "key", str(p))[0])
    try:
        files.check()
    except CertError as exc:
        raise ClientConfigError(f"client config {p}: {exc}") from None
    return files


def resolve_client_tls(flag: str | None = None) -> TlsFiles | None:
    """--client-config, else $SHOAL_CLIENT_CONFIG, else None (plaintext)."""
    path = flag or os.environ.get(CLIENT_CONFIG_ENV) or None
    return load_client_config(path) if path else None


def write_client_config(path: str | os.PathLike, ca: str | os.PathLike, cert: str | os.PathLike,
                        key: str | os.PathLike) -> Path:
    """Writes a client.toml whose paths are relative to its folder when they lie below it."""
    p = Path(path)
    base = p.resolve().parent

    def rel(x: str | os.PathLike) -> str:
        full = Path(x).resolve()
        return str(full.relative_to(base)) if full.is_relative_to(base) else str(full)
    p.write_text(f'# mutual TLS material of an operator client (shoal status/domain/top ...)\n'
                 f'ca = "{rel(ca)}"\ncert = "{rel(cert)}"\nkey = "{rel(key)}"\n')
    return p


_OPENSSL_REASON = re.compile(r"OPENSSL_internal:([A-Z_]+)(?::\s*([^:]+))?")


def is_tls_failure(exc: grpc.aio.AioRpcError) -> bool:
    details = exc.details() or ""
    return exc.code() == grpc.StatusCode.UNAVAILABLE and (
        "handshake" in details.lower() or "Socket closed" in details or "SSL" in details)


def describe_rpc_error(exc: grpc.aio.AioRpcError, address: str, tls: bool) -> str:
    """A user-facing sentence for a failed call; says so plainly when TLS was the cause."""
    details = exc.details() or ""
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE and tls:
        m = _OPENSSL_REASON.search(details)
        if m and m.group(1) == "WRONG_VERSION_NUMBER":
            return (f"TLS handshake with {address} failed: the agent does not speak TLS (started with --insecure?); "
                    f"call it without --client-config / {CLIENT_CONFIG_ENV}")
        if m:
            reason = m.group(1) + (f": {m.group(2).strip()}" if m.group(2) else "")
            hint = (" (the agent's certificate is not signed by a CA in our client config)"
                    if m.group(1) == "CERTIFICATE_VERIFY_FAILED" else "")
            return f"TLS handshake with {address} failed: {reason}{hint}"
        if "Socket closed" in details or "handshake" in details.lower():
            return (f"TLS handshake with {address} failed: the agent closed the connection during the handshake, "
                    "so it did not accept our certificate (not from its cluster CA, expired, or revoked by a CA "
                    "rotation)")
    if code == grpc.StatusCode.UNAVAILABLE and not tls and "Socket closed" in details:
        return (f"{address} closed the connection: it probably requires mutual TLS; give --client-config FILE "
                f"or set {CLIENT_CONFIG_ENV} (cluster up writes STATE_DIR/{CLIENT_CONFIG_FILE})")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return f"{address} refused the call: PERMISSION_DENIED: {details}"
    return f"{address}: {code.name}: {details}"
