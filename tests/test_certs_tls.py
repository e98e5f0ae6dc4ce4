"""Cluster certificates and mutual TLS over a real grpc.aio server on 127.0.0.1:0."""

from __future__ import annotations

import datetime as dt
import os
import stat
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.adapters import certs, tls
from agent.adapters.certs import CertError, Identity

CALL_TIMEOUT_S = 5.0
NOW = dt.datetime.now(dt.timezone.utc)


def load(path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


@pytest.fixture
def pki(tmp_path):
    """Two independent CAs: the cluster's, and another one."""
    cluster, other = tmp_path / "cluster", tmp_path / "other"
    return {
        "ca": certs.init_ca(cluster),
        "server": certs.issue_node(cluster, "node-a"),
        "client": certs.issue_node(cluster, "7f9c2d1e-0b1a-4c55-9e0f-3d2a1b0c9e8f"),
        "operator": certs.issue_operator(cluster, "alice"),
        "expired": certs.issue_node(cluster, "old-node", days=1, not_before=NOW - dt.timedelta(days=10)),
        "other_ca": certs.init_ca(other),
        "stranger": certs.issue_node(other, "stranger"),
        "dir": cluster,
        "other_dir": other,
    }


# -- certificates -----------------------------------------------------------------------
def test_init_ca_makes_a_ten_year_p256_ca_with_a_private_key_file(tmp_path):
    paths = certs.init_ca(tmp_path / "ca")
    assert stat.S_IMODE(os.stat(paths.key).st_mode) == 0o600
    cert = load(paths.cert)
    assert cert.public_key().curve.name == "secp256r1"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=3649) < lifetime <= dt.timedelta(days=3651)


def test_init_ca_refuses_to_overwrite_an_existing_ca_without_force(tmp_path):
    first = certs.init_ca(tmp_path)
    before = Path(first.cert).read_bytes()
    with pytest.raises(CertError, match="already exist"):
        certs.init_ca(tmp_path)
    assert Path(first.cert).read_bytes() == before
    certs.init_ca(tmp_path, force=True)
    assert Path(first.cert).read_bytes() != before


def test_issuing_without_a_ca_says_to_make_one(tmp_path):
    with pytest.raises(CertError, match="no cluster CA"):
        certs.issue_node(tmp_path, "n1")
    with pytest.raises(CertError, match="no cluster CA"):
        certs.issue_operator(tmp_path, "alice")


def test_issuing_a_node_twice_needs_force(pki):
    with pytest.raises(CertError, match="already exist"):
        certs.issue_node(pki["dir"], "node-a")
    assert certs.issue_node(pki["dir"], "node-a", force=True).cert == pki["server"].cert


def test_node_certificate_names_the_node_id_and_serves_both_ways(pki):
    cert = load(pki["client"].cert)
    node_id = "7f9c2d1e-0b1a-4c55-9e0f-3d2a1b0c9e8f"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"shoal://node/{node_id}" in san.get_values_for_type(x509.UniformResourceIdentifier)
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == node_id
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", certs.NODE_TLS_NAME,
                                                          certs.node_tls_name(node_id)}
    usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert stat.S_IMODE(os.stat(pki["client"].key).st_mode) == 0o600
    assert cert.issuer == load(pki["ca"].cert).subject


def test_node_certificate_takes_extra_ip_and_dns_sans(pki):
    paths = certs.issue_node(pki["dir"], "n2", ips=("10.0.0.7", "::1"), dns=("n2.example",))
    san = load(paths.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"10.0.0.7", "::1"}
    assert "n2.example" in san.get_values_for_type(x509.DNSName)


def test_operator_certificate_is_for_clients_only(pki):
    cert = load(pki["operator"].cert)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert certs.identity_from_pem(Path(pki["operator"].cert).read_bytes()) == ("operator", "alice")


def test_identity_reads_the_san_uri_from_pem_and_der(pki):
    pem = Path(pki["client"].cert).read_text()
    der = load(pki["client"].cert).public_bytes(serialization.Encoding.DER)
    expected = Identity("node", "7f9c2d1e-0b1a-4c55-9e0f-3d2a1b0c9e8f")
    assert certs.identity_from_pem(pem) == expected
    assert certs.identity_from_der(der) == expected


def test_a_ca_certificate_has_no_identity_and_garbage_is_not_a_certificate(pki):
    with pytest.raises(CertError, match="expected exactly one"):
        certs.identity_from_pem(Path(pki["ca"].cert).read_bytes())
    with pytest.raises(CertError, match="not a DER certificate"):
        certs.identity_from_der(b"\x30\x03garbage")


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "x" * 129, "sp ace"])
def test_unsafe_names_are_refused(pki, bad):
    with pytest.raises(CertError, match="name"):
        certs.issue_node(pki["dir"], bad)


def test_validity_must_be_positive_and_expired_certs_are_possible(pki):
    with pytest.raises(CertError, match="positive"):
        certs.issue_node(pki["dir"], "n3", days=0)
    assert load(pki["expired"].cert).not_valid_after_utc < NOW


# -- mutual TLS over a real server ---------------------------------------------------------
class Recorder:
    """Generic handlers: /t.Peer/Whoami and /t.Control/Whoami (open unless a test installs the
    interceptor), /t.Inline/Operator (require_kind inside), /t.Inline/Node (@tls.requires)."""

    def __init__(self) -> None:
        self.calls: list[Identity | None] = []

    async def whoami(self, request: bytes, context) -> bytes:
        identity = tls.peer_identity(context)
        self.calls.append(identity)
        return f"{identity.kind}/{identity.name}".encode() if identity else b"anonymous"

    async def operator_only(self, request: bytes, context) -> bytes:
        identity = await tls.require_kind(context, "operator")
        self.calls.append(identity)
        return identity.name.encode()

    async def upload(self, request_iterator, context) -> bytes:
        total = 0
        async for chunk in request_iterator:
            total += len(chunk)
        self.calls.append(tls.peer_identity(context))
        return str(total).encode()

    @tls.requires("node")
    async def node_only(self, request: bytes, context) -> bytes:
        self.calls.append(tls.peer_identity(context))
        return b"ok"

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        unary = grpc.unary_unary_rpc_method_handler
        upload = grpc.stream_unary_rpc_method_handler(self.upload)
        return [grpc.method_handlers_generic_handler("t.Peer", {"Whoami": unary(self.whoami), "Upload": upload}),
                grpc.method_handlers_generic_handler("t.Control", {"Whoami": unary(self.whoami)}),
                grpc.method_handlers_generic_handler("t.Inline", {"Operator": unary(self.operator_only),
                                                                  "Node": unary(self.node_only)})]


@asynccontextmanager
async def serving(credentials: grpc.ServerCredentials, interceptors=()):
    recorder = Recorder()
    server = grpc.aio.server(interceptors=list(interceptors))
    server.add_generic_rpc_handlers(recorder.handlers())
    port = server.add_secure_port("127.0.0.1:0", credentials)
    assert port != 0
    await server.start()
    try:
        yield recorder, f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


async def call(address: str, creds: grpc.ChannelCredentials, method: str = "/t.Peer/Whoami",
               override: bool = True) -> bytes | grpc.StatusCode:
    # A local subchannel pool: every client makes its own connection (and handshake).
    options = [("grpc.use_local_subchannel_pool", 1)] + (tls.secure_channel_options() if override else [])
    async with grpc.aio.secure_channel(address, creds, options=options) as channel:
        try:
            return await channel.unary_unary(method)(b"", timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            return exc.code()


def client_creds(pki, who: str, trust=("ca",)) -> grpc.ChannelCredentials:
    return tls.channel_credentials([pki[t].cert for t in trust], pki[who].cert, pki[who].key)


def server_creds(pki, trust=("ca",)) -> grpc.ServerCredentials:
    return tls.server_credentials([pki[t].cert for t in trust], pki["server"].cert, pki["server"].key)


async def test_a_cluster_client_gets_through_and_is_known_by_its_node_id(pki):
    async with serving(server_creds(pki)) as (recorder, address):
        assert await call(address, client_creds(pki, "client")) == \
            b"node/7f9c2d1e-0b1a-4c55-9e0f-3d2a1b0c9e8f"
        # Without the name override the IP SAN 127.0.0.1 verifies the server.
        assert await call(address, client_creds(pki, "client"), override=False) == \
            b"node/7f9c2d1e-0b1a-4c55-9e0f-3d2a1b0c9e8f"
    assert recorder.calls == [Identity("node", "7f9c2d1e-0b1a-4c55-9e0f-3d2a1b0c9e8f")] * 2


async def test_a_client_from_another_ca_is_refused_before_any_handler_runs(pki):
    async with serving(server_creds(pki)) as (recorder, address):
        # It trusts our CA, so only its own certificate is at fault.
        assert await call(address, client_creds(pki, "stranger", trust=("ca", "other_ca"))) == \
            grpc.StatusCode.UNAVAILABLE
    assert recorder.calls == []


async def test_a_client_without_a_certificate_is_refused(pki):
    creds = grpc.ssl_channel_credentials(root_certificates=Path(pki["ca"].cert).read_bytes())
    async with serving(server_creds(pki)) as (recorder, address):
        assert await call(address, creds) == grpc.StatusCode.UNAVAILABLE
    assert recorder.calls == []


async def test_an_expired_client_certificate_is_refused(pki):
    async with serving(server_creds(pki)) as (recorder, address):
        assert await call(address, client_creds(pki, "expired")) == grpc.StatusCode.UNAVAILABLE
        assert await call(address, client_creds(pki, "client")) != grpc.StatusCode.UNAVAILABLE
    assert len(recorder.calls) == 1


async def test_a_client_refuses_a_server_from_another_ca(pki):
    creds = tls.server_credentials([pki["ca"].cert, pki["other_ca"].cert], pki["stranger"].cert,
                                   pki["stranger"].key)
    async with serving(creds) as (recorder, address):
        assert await call(address, client_creds(pki, "client")) == grpc.StatusCode.UNAVAILABLE
    assert recorder.calls == []


async def test_a_server_name_that_is_not_in_the_certificate_is_refused(pki):
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.ssl_target_name_override", "not-shoal")]
    async with serving(server_creds(pki)) as (recorder, address):
        async with grpc.aio.secure_channel(address, client_creds(pki, "client"), options=options) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary("/t.Peer/Whoami")(b"", timeout=CALL_TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert recorder.calls == []


def test_per_node_names_are_dns_safe_and_differ_between_ids():
    names = {certs.node_tls_name(n) for n in ("a", "b", "10.0.0.1:7001", "x" * 128, "A")}
    assert len(names) == 5
    for name in names:
        label, _, rest = name.partition(".")
        assert rest == certs.NODE_TLS_NAME and len(label) == 32 and label.isalnum() and label.islower()


async def test_a_client_that_knows_whom_it_dials_refuses_another_cluster_node(pki):
    # The server holds a valid cluster certificate, but for node-a: a client told that the
    # address belongs to another node fails the handshake; told node-a, it gets through.
    async def call_as(name: str):
        options = [("grpc.use_local_subchannel_pool", 1), *tls.secure_channel_options(name)]
        async with grpc.aio.secure_channel(address, client_creds(pki, "client"), options=options) as channel:
            try:
                return await channel.unary_unary("/t.Peer/Whoami")(b"", timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                return exc.code()

    async with serving(server_creds(pki)) as (recorder, address):
        assert await call_as(certs.node_tls_name("node-b")) == grpc.StatusCode.UNAVAILABLE
        assert await call_as(certs.node_tls_name("node-a")) == b"node/7f9c2d1e-0b1a-4c55-9e0f-3d2a1b0c9e8f"
    assert len(recorder.calls) == 1


async def test_the_interceptor_keeps_nodes_off_operator_methods_and_operators_off_peer_methods(pki):
    denied = []
    interceptor = tls.AuthorizationInterceptor({"/t.Peer/": ["node"], "/t.Control/": ["operator"],
                                                "/t.Inline/": ["node", "operator"]},
                                               on_denied=lambda m, who, code: denied.append((m, who, code)))
    async with serving(server_creds(pki), [interceptor]) as (recorder, address):
        node, operator = client_creds(pki, "client"), client_creds(pki, "operator")
        assert await call(address, node, "/t.Control/Whoami") == grpc.StatusCode.PERMISSION_DENIED
        assert await call(address, operator, "/t.Control/Whoami") == b"operator/alice"
        assert await call(address, operator, "/t.Peer/Whoami") == grpc.StatusCode.PERMISSION_DENIED
        assert await call(address, node, "/t.Peer/Whoami") == b"node/7f9c2d1e-0b1a-4c55-9e0f-3d2a1b0c9e8f"
    assert [(m, who.kind, code) for m, who, code in denied] == [
        ("/t.Control/Whoami", "node", grpc.StatusCode.PERMISSION_DENIED),
        ("/t.Peer/Whoami", "operator", grpc.StatusCode.PERMISSION_DENIED)]
    assert [who.kind for who in recorder.calls] == ["operator", "node"]


async def test_the_interceptor_guards_client_streams_too(pki):
    interceptor = tls.AuthorizationInterceptor({"/t.Peer/": ["node"]})

    async def upload(who: str):
        options = [("grpc.use_local_subchannel_pool", 1)] + tls.secure_channel_options()
        async with grpc.aio.secure_channel(address, client_creds(pki, who), options=options) as channel:
            async def chunks():
                for size in (10, 20, 30):
                    yield b"x" * size
            try:
                return await channel.stream_unary("/t.Peer/Upload")(chunks(), timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                return exc.code()

    async with serving(server_creds(pki), [interceptor]) as (recorder, address):
        assert await upload("operator") == grpc.StatusCode.PERMISSION_DENIED
        assert await upload("client") == b"60"
    assert [who.kind for who in recorder.calls] == ["node"]


async def test_the_interceptor_refuses_methods_without_a_rule(pki):
    interceptor = tls.AuthorizationInterceptor({"/t.Peer/": ["node"]})
    async with serving(server_creds(pki), [interceptor]) as (recorder, address):
        assert await call(address, client_creds(pki, "client"), "/t.Control/Whoami") == \
            grpc.StatusCode.PERMISSION_DENIED
    assert recorder.calls == []


async def test_require_kind_aborts_with_permission_denied_and_a_reason(pki):
    async with serving(server_creds(pki)) as (recorder, address):
        options = [("grpc.use_local_subchannel_pool", 1)] + tls.secure_channel_options()
        async with grpc.aio.secure_channel(address, client_creds(pki, "client"), options=options) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary("/t.Inline/Operator")(b"", timeout=CALL_TIMEOUT_S)
        assert await call(address, client_creds(pki, "operator"), "/t.Inline/Operator") == b"alice"
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "node" in info.value.details() and "operator" in info.value.details()
    assert recorder.calls == [Identity("operator", "alice")]


async def test_the_requires_decorator_guards_a_servicer_method(pki):
    async with serving(server_creds(pki)) as (recorder, address):
        assert await call(address, client_creds(pki, "operator"), "/t.Inline/Node") == \
            grpc.StatusCode.PERMISSION_DENIED
        assert await call(address, client_creds(pki, "client"), "/t.Inline/Node") == b"ok"
    assert [who.kind for who in recorder.calls] == ["node"]


async def test_trusting_old_and_new_ca_accepts_clients_of_both(pki):
    # Rotation midway: the server trusts both CAs; each client trusts both too.
    async with serving(server_creds(pki, trust=("ca", "other_ca"))) as (recorder, address):
        assert await call(address, client_creds(pki, "client", trust=("ca", "other_ca"))) == \
            b"node/7f9c2d1e-0b1a-4c55-9e0f-3d2a1b0c9e8f"
        assert await call(address, client_creds(pki, "stranger", trust=("ca", "other_ca"))) == b"node/stranger"
    assert len(recorder.calls) == 2


async def test_reload_with_only_the_new_ca_refuses_old_ca_clients(pki):
    both = ("ca", "other_ca")
    creds = tls.ReloadableServerCredentials([pki["ca"].cert, pki["other_ca"].cert], pki["server"].cert,
                                            pki["server"].key)
    async with serving(creds.credentials) as (recorder, address):
        assert await call(address, client_creds(pki, "client", trust=both)) != grpc.StatusCode.UNAVAILABLE
        # The rotation is done: the server gets a certificate from the new CA and trusts only it.
        new_server = certs.issue_node(pki["other_dir"], "node-a")
        assert creds.reload([pki["other_ca"].cert], new_server.cert, new_server.key) == 1
        assert await call(address, client_creds(pki, "client", trust=both)) == grpc.StatusCode.UNAVAILABLE
        assert await call(address, client_creds(pki, "stranger", trust=both)) == b"node/stranger"
        # A client that trusts only the old CA no longer trusts the server either.
        assert await call(address, client_creds(pki, "stranger", trust=("ca",))) == grpc.StatusCode.UNAVAILABLE
    assert creds.applied_generation == 1
    assert [who.name for who in recorder.calls] == ["7f9c2d1e-0b1a-4c55-9e0f-3d2a1b0c9e8f", "stranger"]


async def test_a_failed_reload_keeps_the_running_configuration(pki, tmp_path):
    creds = tls.ReloadableServerCredentials([pki["ca"].cert], pki["server"].cert, pki["server"].key)
    (tmp_path / "broken.crt").write_text("not a certificate")
    async with serving(creds.credentials) as (recorder, address):
        with pytest.raises(CertError, match="broken.crt"):
            creds.reload([str(tmp_path / "broken.crt")])
        with pytest.raises(CertError, match="is not the key of"):
            creds.reload(cert=pki["server"].cert, key=pki["client"].key)
        assert await call(address, client_creds(pki, "client")) == b"node/7f9c2d1e-0b1a-4c55-9e0f-3d2a1b0c9e8f"
    assert creds.generation == 0 and creds.ca_paths == [pki["ca"].cert]


def test_credentials_need_at_least_one_readable_ca(pki, tmp_path):
    with pytest.raises(CertError, match="at least one"):
        tls.server_credentials([], pki["server"].cert, pki["server"].key)
    with pytest.raises(CertError, match="cannot read CA bundle"):
        tls.channel_credentials([str(tmp_path / "missing.crt")], pki["client"].cert, pki["client"].key)
    # A single path given as a string is one file, not a list of characters.
    assert tls.read_bundle(pki["ca"].cert) == Path(pki["ca"].cert).read_bytes()
