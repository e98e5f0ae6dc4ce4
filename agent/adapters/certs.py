"""The cluster's certificates: one CA, node certificates, operator certificates.

Theory of operation. A cluster trusts one CA (two while it rotates, see
`agent.adapters.tls`). Every certificate names exactly one identity in a
SAN URI, which is what authorisation reads, never an address:

    shoal://node/<node-id>        serverAuth + clientAuth (agents talk both ways)
    shoal://operator/<name>       clientAuth only (the control API)

A node certificate also carries the DNS name `NODE_TLS_NAME`, the same in
every node certificate, so a client can verify "this server holds a cluster
node certificate" whatever address it dialled (peers are reached by the
address gossip carries, and node ids may hold characters DNS names can't).
The default IP SAN 127.0.0.1 and DNS SAN localhost let ordinary tools
(grpcurl, openssl s_client) verify a local agent without an override.

Keys are EC P-256, written 0600 through a temporary file and a rename, so
a reload never reads half a key. Nothing is overwritten without `force`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.core.validation import ID_RE

# The DNS SAN every node certificate carries; clients pass it as
# grpc.ssl_target_name_override (see tls.secure_channel_options) when they do not know
# which node answers at an address. `node_tls_name(id)` is the one of a single node.
NODE_TLS_NAME = "shoal-node"
URI_SCHEME = "shoal"
KINDS = ("node", "operator")
CA_DAYS = 3650  # ten years: a CA is rotated deliberately, not by expiry
LEAF_DAYS = 825  # the CA/Browser ceiling, a habit worth keeping for leaves
# Back-date notBefore so a peer whose clock runs a little behind accepts a fresh cert.
CLOCK_SKEW = dt.timedelta(minutes=5)
CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"


class CertError(Exception):
    """A certificate operation cannot be done as asked; the message says why and what to do."""


class Identity(NamedTuple):
    kind: str  # "node" | "operator"
    name: str


@dataclass(frozen=True)
class CertPaths:
    cert: str
    key: str
    ca: str  # the CA certificate that signed it (for a CA, itself)


# -- writing ------------------------------------------------------------------------
def _check_writable(paths: list[Path], force: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise CertError(f"{', '.join(existing)} already exist(s); pass force=True (--force) to overwrite")


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _validity(days: int, not_before: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    if days <= 0:
        raise CertError(f"validity must be a positive number of days, got {days} "
                        "(for an expired certificate pass an old not_before)")
    start = not_before if not_before is not None else dt.datetime.now(dt.timezone.utc) - CLOCK_SKEW
    if start.tzinfo is None:
        raise CertError("not_before must be timezone-aware (UTC)")
    return start, start + dt.timedelta(days=days)


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not ID_RE.match(name):
        raise CertError(f"{kind} name {name!r} is not 1-128 characters of [A-Za-z0-9._:-]")


# -- the CA ---------------------------------------------------------------------------
def init_ca(directory: str | os.PathLike, *, name: str = "cluster", days: int = CA_DAYS,
            not_before: dt.datetime | None = None, force: bool = False) -> CertPaths:
    """Makes a cluster CA (EC P-256) in `directory`: ca.crt and ca.key (0600)."""
    _check_name("CA", name)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = d / CA_CERT_FILE, d / CA_KEY_FILE
    _check_writable([cert_path, key_path], force)
    start, end = _validity(days, not_before)
    key = ec.generate_private_key(ec.SECP256R1())
    # A random suffix keeps subjects distinct, so an old and a new CA trusted
    # together during a rotation never look like the same issuer.
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shoal"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"shoal {name} CA {secrets.token_hex(4)}")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    _write_atomic(key_path, _key_pem(key), 0o600)
    _write_atomic(cert_path, _cert_pem(cert), 0o644)
    return CertPaths(str(cert_path), str(key_path), str(cert_path))


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    if not cert_path.is_file() or not key_path.is_file():
        raise CertError(f"no cluster CA in {directory} (expected {CA_CERT_FILE} and {CA_KEY_FILE}); "
                        "make one first with `shoal certs init`")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError as exc:
        raise CertError(f"cannot read the CA in {directory}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CertError(f"{key_path} is not the key of {cert_path}")
    return cert, key


# -- leaves ------------------------------------------------------------------------------
def _issue(directory: str | os.PathLike, stem: str, kind: str, name: str, *, server: bool,
           ips: tuple[str, ...], dns: tuple[str, ...], days: int, not_before: dt.datetime | None,
           force: bool) -> CertPaths:
    d = Path(directory)
    ca_cert, ca_key = _load_ca(d)
    cert_path, key_path = d / f"{stem}.crt", d / f"{stem}.key"
    _check_writable([cert_path, key_path], force)
    start, end = _validity(days, not_before)
    try:
        ip_sans = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    except ValueError as exc:
        raise CertError(f"bad IP address for a SAN: {exc}") from exc
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(f"{URI_SCHEME}://{kind}/{name}")]
    sans += [x509.DNSName(n) for n in dns] + ip_sans
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server \
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shoal"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_atomic(key_path, _key_pem(key), 0o600)
    _write_atomic(cert_path, _cert_pem(cert), 0o644)
    return CertPaths(str(cert_path), str(key_path), str(d / CA_CERT_FILE))


def node_tls_name(node_id: str) -> str:
    """The DNS SAN that names one node in its certificate, for a client that knows whom it dials.

    Node ids may hold characters a DNS name may not (and a ':' would read as a port in the
    target name), so the name is a digest of the id (128 bits: nobody finds another id with
    the same name) under NODE_TLS_NAME."""
    return f"{hashlib.sha256(node_id.encode()).hexdigest()[:32]}.{NODE_TLS_NAME}"


def issue_node(directory: str | os.PathLike, node_id: str, ips: tuple[str, ...] = ("127.0.0.1",),
               dns: tuple[str, ...] = ("localhost",), *, days: int = LEAF_DAYS,
               not_before: dt.datetime | None = None, force: bool = False) -> CertPaths:
    """Issues node-<id>.crt/.key from the CA in `directory`: SAN shoal://node/<id>, DNS SANs
    NODE_TLS_NAME and node_tls_name(id) besides `dns`, server+client auth."""
    _check_name("node", node_id)
    dns_all = tuple(dict.fromkeys((*dns, NODE_TLS_NAME, node_tls_name(node_id))))
    return _issue(directory, f"node-{node_id}", "node", node_id, server=True, ips=tuple(ips), dns=dns_all,
                  days=days, not_before=not_before, force=force)


def issue_operator(directory: str | os.PathLike, name: str, *, days: int = LEAF_DAYS,
                   not_before: dt.datetime | None = None, force: bool = False) -> CertPaths:
    """Issues operator-<name>.crt/.key: SAN shoal://operator/<name>, client auth only."""
    _check_name("operator", name)
    return _issue(directory, f"operator-{name}", "operator", name, server=False, ips=(), dns=(),
                  days=days, not_before=not_before, force=force)


# -- reading identities ---------------------------------------------------------------
def identity_of(cert: x509.Certificate) -> Identity:
    """The one shoal:// identity a certificate names; CertError if none or several."""
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    found = set()
    for uri in uris:
        prefix = f"{URI_SCHEME}://"
        if not uri.startswith(prefix):
            continue
        kind, _, name = uri[len(prefix):].partition("/")
        if kind in KINDS and ID_RE.match(name):
            found.add(Identity(kind, name))
    if len(found) != 1:
        raise CertError(f"certificate {cert.subject.rfc4514_string()} names {len(found)} shoal identities, "
                        "expected exactly one SAN URI shoal://node/<id> or shoal://operator/<name>")
    return found.pop()


def identity_from_der(der: bytes) -> Identity:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertError(f"not a DER certificate: {exc}") from exc
    return identity_of(cert)


def identity_from_pem(pem: bytes | str) -> Identity:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise CertError(f"not a PEM certificate: {exc}") from exc
    return identity_of(cert)


def check_pair(cert_path: str, key_path: str) -> x509.Certificate:
    """Loads a certificate and its key and checks they belong together (before a server uses them)."""
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise CertError(f"cannot read {cert_path} / {key_path}: {exc}") from exc
    if key.public_key() != cert.public_key():
        raise CertError(f"{key_path} is not the key of {cert_path}")
    return cert
