"""Mutual TLS for grpc.aio: credentials, peer identity, authorisation, reload.

Theory of operation.
- Both ends present a certificate from the cluster CA and verify the other's
  (`require_client_auth=True`). A peer without one fails the handshake: its
  call ends UNAVAILABLE and no handler on the server ever runs.
- Trust is the concatenation of one or more CA bundles. To rotate a CA,
  trust old+new everywhere, re-issue every leaf from the new CA, then drop
  the old one; each step is a `reload()` on SIGHUP, no restart.
- Who the peer is comes from its certificate's SAN URI (`certs.identity_of`),
  never from an address. `AuthorizationInterceptor` (or `require_kind` in a
  handler) turns "has a cluster certificate" into "may call this method".
- Server-name check on the client: peers are dialled by the address gossip
  carries and node ids are not DNS names, so every node certificate also holds
  two DNS SANs, `certs.NODE_TLS_NAME` ("a cluster node") and
  `certs.node_tls_name(id)` ("this node"), and clients verify the server
  against one of them through `grpc.ssl_target_name_override`
  (`secure_channel_options`). An agent dials a member as that member
  (`PeerClients.expect`, fed by membership), so another cluster node at the
  address fails the handshake; an address nobody is known at yet (a seed) and
  operator clients check "a cluster node". Which node a client is, the server
  proves to itself with `peer_identity`. The IP SAN 127.0.0.1 (and DNS
  localhost) lets a client without the override reach a local agent.
- A reloaded certificate or trust applies to new connections only; an
  established HTTP/2 connection keeps what it was handshaken with.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509

from agent.adapters.certs import NODE_TLS_NAME, CertError, Identity, check_pair, identity_from_pem, identity_of

log = logging.getLogger("shoal.tls")


# -- the files --------------------------------------------------------------------------
@dataclass(frozen=True)
class TlsFiles:
    """Where one end's mTLS material lives: trusted CA bundle(s), its certificate and key."""

    ca: tuple[str, ...]
    cert: str
    key: str

    def check(self) -> Identity:
        """Reads everything now (not at the first handshake); returns the certificate's identity.

        Raises CertError naming the file at fault.
        """
        read_bundle(self.ca)
        return identity_of(check_pair(self.cert, self.key))


# -- credentials ----------------------------------------------------------------------
def read_bundle(ca_paths: Sequence[str]) -> bytes:
    """The concatenated PEM of one or more CA files, each checked to hold certificates."""
    if isinstance(ca_paths, (str, Path)):
        ca_paths = [str(ca_paths)]
    if not ca_paths:
        raise CertError("no CA certificate given: mutual TLS needs at least one cluster CA")
    parts = []
    for path in ca_paths:
        try:
            data = Path(path).read_bytes()
            x509.load_pem_x509_certificates(data)
        except (OSError, ValueError) as exc:
            raise CertError(f"cannot read CA bundle {path}: {exc}") from exc
        parts.append(data if data.endswith(b"\n") else data + b"\n")
    return b"".join(parts)


def _read_pair(cert: str, key: str) -> tuple[bytes, bytes]:
    check_pair(cert, key)
    return Path(key).read_bytes(), Path(cert).read_bytes()


def server_credentials(ca_paths: Sequence[str], cert: str, key: str) -> grpc.ServerCredentials:
    """Static mTLS server credentials; prefer ReloadableServerCredentials for an agent."""
    return grpc.ssl_server_credentials([_read_pair(cert, key)], root_certificates=read_bundle(ca_paths),
                                       require_client_auth=True)


def channel_credentials(ca_paths: Sequence[str], cert: str, key: str) -> grpc.ChannelCredentials:
    """Client credentials: trust the cluster CA(s), present our own certificate."""
    private_key, chain = _read_pair(cert, key)
    return grpc.ssl_channel_credentials(root_certificates=read_bundle(ca_paths), private_key=private_key,
                                        certificate_chain=chain)


def secure_channel_options(target_name: str = NODE_TLS_NAME) -> list[tuple[str, str]]:
    """Channel options that verify the server as a cluster node whatever address was dialled."""
    return [("grpc.ssl_target_name_override", target_name)]


class ReloadableServerCredentials:
    """Server credentials whose certificate, key and trusted CAs can be re-read (on SIGHUP).

    gRPC calls the fetcher before every new handshake; it hands over a staged
    configuration once, then None ("no change"). `reload()` reads and checks
    everything before staging, so a bad file leaves the running config alone.
    """

    def __init__(self, ca_paths: Sequence[str], cert: str, key: str) -> None:
        self._lock = threading.Lock()
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self.ca_paths, self.cert, self.key = list(ca_paths), cert, key
        self.generation = 0  # how many reloads were staged
        self.applied_generation = 0  # how many of those gRPC has picked up
        initial = self._load(self.ca_paths, cert, key)
        self.credentials: grpc.ServerCredentials = grpc.dynamic_ssl_server_credentials(
            initial, self._fetch, require_client_authentication=True)

    @staticmethod
    def _load(ca_paths: Sequence[str], cert: str, key: str) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([_read_pair(cert, key)],
                                                         root_certificates=read_bundle(ca_paths))

    def reload(self, ca_paths: Sequence[str] | None = None, cert: str | None = None,
               key: str | None = None) -> int:
        """Re-reads the files (or new paths); new connections use them. Returns the generation.

        Raises CertError and keeps the current configuration if anything is unreadable.
        """
        ca_paths = list(ca_paths) if ca_paths is not None else self.ca_paths
        cert, key = cert or self.cert, key or self.key
        config = self._load(ca_paths, cert, key)
        with self._lock:
            self._pending = config
            self.ca_paths, self.cert, self.key = ca_paths, cert, key
            self.generation += 1
            return self.generation

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Runs on a gRPC core thread, once per new connection.
        with self._lock:
            config, self._pending = self._pending, None
            if config is not None:
                self.applied_generation = self.generation
            return config


# -- identity and authorisation ------------------------------------------------------------
def peer_identity(context: grpc.aio.ServicerContext) -> Identity | None:
    """The shoal identity in the peer's verified certificate; None without one (insecure, or no SAN URI)."""
    auth = context.auth_context() or {}
    pems = auth.get("x509_pem_cert") or []
    if not pems:
        return None
    try:
        return identity_from_pem(pems[0])
    except CertError as exc:
        log.warning("peer %s presented a certificate without a shoal identity: %s", context.peer(), exc)
        return None


async def require_kind(context: grpc.aio.ServicerContext, *kinds: str) -> Identity:
    """Returns the caller's identity if its kind is one of `kinds`; otherwise aborts the RPC.

    No identity -> UNAUTHENTICATED; the wrong kind -> PERMISSION_DENIED. Both carry a reason.
    """
    identity = peer_identity(context)
    if identity is None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                            "unauthenticated: this method needs a shoal cluster certificate")
    if identity.kind not in kinds:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                            f"permission denied: {identity.kind} {identity.name!r} may not call this method "
                            f"(not {' or '.join('an ' + k if k[0] in 'aeiou' else 'a ' + k for k in kinds)} "
                            "certificate)")
    return identity


def requires(*kinds: str) -> Callable:
    """Decorator for servicer methods `(self, request_or_iterator, context)`: `require_kind` first."""
    def wrap(method: Callable) -> Callable:
        @functools.wraps(method)
        async def guarded(self, request, context):
            await require_kind(context, *kinds)
            return await method(self, request, context)
        return guarded
    return wrap


class AuthorizationInterceptor(grpc.aio.ServerInterceptor):
    """Checks the caller's certificate kind before any handler runs.

    `rules` maps a method prefix ("/shoal.v1.Control/" or a full method name)
    to the kinds allowed; the longest matching prefix wins. A method that no
    rule matches is refused unless `default_kinds` allows it (deny by default:
    a new service must be given a rule). `on_denied(method, identity, code)`
    lets the runtime count and log refusals.
    """

    def __init__(self, rules: dict[str, Iterable[str]], *, default_kinds: Iterable[str] = (),
                 on_denied: Callable[[str, Identity | None, grpc.StatusCode], None] | None = None) -> None:
        self.rules = {prefix: tuple(kinds) for prefix, kinds in rules.items()}
        self.default_kinds = tuple(default_kinds)
        self.on_denied = on_denied

    def kinds_for(self, method: str) -> tuple[str, ...]:
        matches = [p for p in self.rules if method.startswith(p)]
        return self.rules[max(matches, key=len)] if matches else self.default_kinds

    async def _check(self, method: str, context: grpc.aio.ServicerContext) -> None:
        kinds = self.kinds_for(method)
        identity = peer_identity(context)
        if identity is not None and identity.kind in kinds:
            return
        code = grpc.StatusCode.UNAUTHENTICATED if identity is None else grpc.StatusCode.PERMISSION_DENIED
        log.warning("refused %s from %s (%s): needs %s", method, context.peer(),
                    f"{identity.kind} {identity.name}" if identity else "no identity", " or ".join(kinds) or "nothing")
        if self.on_denied is not None:
            self.on_denied(method, identity, code)
        await require_kind(context, *kinds)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return guard_handler(handler, functools.partial(self._check, handler_call_details.method))


def guard_handler(handler: grpc.RpcMethodHandler, check: Callable) -> grpc.RpcMethodHandler:
    """The same handler with `await check(context)` before its behaviour runs (any of the four kinds)."""
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _guard_unary(handler.unary_unary, check), handler.request_deserializer, handler.response_serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _guard_unary(handler.stream_unary, check), handler.request_deserializer, handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _guard_stream(handler.unary_stream, check), handler.request_deserializer, handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(
        _guard_stream(handler.stream_stream, check), handler.request_deserializer, handler.response_serializer)


def _guard_unary(behavior: Callable, check: Callable) -> Callable:
    async def guarded(request, context):
        await check(context)
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result
    return guarded


def _guard_stream(behavior: Callable, check: Callable) -> Callable:
    async def guarded(request, context):
        await check(context)
        async for response in stream_responses(behavior(request, context)):
            yield response
    return guarded


async def stream_responses(result):
    """The responses of a response-streaming behaviour's result, whichever of its three forms."""
    if inspect.isasyncgen(result):
        async for response in result:
            yield response
    elif inspect.isawaitable(result):
        await result  # a handler that writes with context.write()
    else:
        for response in result:
            yield response
