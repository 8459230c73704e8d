"""Certificates for tests of etcd over TLS: a CA, a server certificate for loopback signed by it, a
client certificate signed by it, and a second CA that signed nothing etcd knows (the "wrong CA").

Generated with ``cryptography`` into a directory (PEM files; EC P-256 keys, which are quick to make),
valid from an hour ago for a day. Public through :mod:`etcdcron.testing`::

    certs = make_certs(tmp / "pki")
    etcd = EtcdCluster(tmp / "etcd", size=1, tls=certs).start()
    store = EtcdStore(etcd.endpoints, ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Certs:
    """Paths of the PEM files :func:`make_certs` wrote."""

    ca: Path  # the CA etcd trusts for clients, and that signed its server certificate
    server_cert: Path  # SAN 127.0.0.1, ::1 and localhost
    server_key: Path
    client_cert: Path  # CN "etcdcron" (etcd maps a client certificate's CN to a user when auth is on)
    client_key: Path
    other_ca: Path  # an unrelated CA: trusting it instead of ``ca`` must fail the handshake
    other_client_cert: Path  # a client certificate signed by ``other_ca``: etcd must refuse it
    other_client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "etcdcron tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: str, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1)))


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    cert = (_builder(cn, _name(cn), key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(cn: str, ca: x509.Certificate, ca_key, usages: list, sans: list | None = None):
    key = _key()
    b = (_builder(cn, ca.subject, key.public_key())
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                      crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def _write(path: Path, cert: x509.Certificate | None = None, key=None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)
    return path


def make_certs(directory: Path) -> Certs:
    """Write a fresh CA, server and client certificates (and an unrelated CA) into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("etcdcron test CA")
    other, other_key = _ca("unrelated test CA")
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1"))]
    # etcd uses its server certificate as a client too (towards itself and its peers): both usages.
    server, server_key = _leaf("etcd", ca, ca_key, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], sans)
    client, client_key = _leaf("etcdcron", ca, ca_key, [ExtendedKeyUsageOID.CLIENT_AUTH])
    stranger, stranger_key = _leaf("etcdcron", other, other_key, [ExtendedKeyUsageOID.CLIENT_AUTH])
    return Certs(
        ca=_write(d / "ca.pem", ca), server_cert=_write(d / "server.pem", server),
        server_key=_write(d / "server-key.pem", key=server_key), client_cert=_write(d / "client.pem", client),
        client_key=_write(d / "client-key.pem", key=client_key), other_ca=_write(d / "other-ca.pem", other),
        other_client_cert=_write(d / "other-client.pem", stranger),
        other_client_key=_write(d / "other-client-key.pem", key=stranger_key),
    )
