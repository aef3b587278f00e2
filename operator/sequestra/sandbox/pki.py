"""Certificates and keys for the sandbox's control plane, made once per sandbox state directory."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

VALIDITY = dt.timedelta(days=365)
APISERVER_SANS = ("kubernetes", "kubernetes.default", "kubernetes.default.svc", "localhost")
APISERVER_IPS = ("127.0.0.1", "10.96.0.1")
APISERVER_KUBELET_CLIENT = "kube-apiserver-kubelet-client"


@dataclass(frozen=True)
class Pki:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def service_account_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.directory / "sa.pub"

    def client_cert(self, user: str) -> tuple[Path, Path]:
        return self.directory / f"user-{user}.crt", self.directory / f"user-{user}.key"

    def server_cert(self, name: str) -> tuple[Path, Path]:
        return self.directory / f"server-{name}.crt", self.directory / f"server-{name}.key"


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _load_ca(pki: Pki) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return cert, key


def _builder(subject: x509.Name, issuer: x509.Name, public_key: rsa.RSAPublicKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def ensure_ca(pki: Pki) -> None:
    if pki.ca_cert.exists() and pki.ca_key.exists():
        return
    pki.directory.mkdir(parents=True, exist_ok=True)
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sequestra-sandbox-ca")])
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(key, pki.ca_key)
    pki.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(pki: Pki, subject: x509.Name, cert_path: Path, key_path: Path, *, server: bool,
           dns_names: tuple[str, ...] = APISERVER_SANS, ips: tuple[str, ...] = APISERVER_IPS) -> None:
    ca_cert, ca_key = _load_ca(pki)
    key = _new_key()
    builder = _builder(subject, ca_cert.subject, key.public_key()).add_extension(
        x509.ExtendedKeyUsage(
            [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
        ),
        critical=False,
    )
    if server:
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(key, key_path)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_apiserver_cert(pki: Pki) -> None:
    if pki.apiserver_cert.exists() and pki.apiserver_key.exists():
        return
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
    _issue(pki, subject, pki.apiserver_cert, pki.apiserver_key, server=True)


def ensure_client_cert(pki: Pki, user: str, groups: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A client certificate is how the apiserver learns a user's name (CN) and groups (O)."""
    cert_path, key_path = pki.client_cert(user)
    if not (cert_path.exists() and key_path.exists()):
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
        attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        _issue(pki, x509.Name(attributes), cert_path, key_path, server=False)
    return cert_path, key_path


def ensure_server_cert(pki: Pki, name: str, dns_names: tuple[str, ...], ips: tuple[str, ...]) -> tuple[Path, Path]:
    """A serving certificate for `name` (a kubelet's), valid for the given host names and addresses."""
    cert_path, key_path = pki.server_cert(name)
    if not (cert_path.exists() and key_path.exists()):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        _issue(pki, subject, cert_path, key_path, server=True, dns_names=dns_names, ips=ips)
    return cert_path, key_path


def ensure_service_account_key(pki: Pki) -> None:
    if pki.service_account_key.exists() and pki.service_account_pub.exists():
        return
    key = _new_key()
    _write_key(key, pki.service_account_key)
    pki.service_account_pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def ensure_all(pki: Pki) -> None:
    ensure_ca(pki)
    ensure_apiserver_cert(pki)
    ensure_service_account_key(pki)
    ensure_client_cert(pki, "sequestra-admin", ("system:masters",))
    # What kube-apiserver shows a kubelet when it fetches logs or runs exec (--kubelet-client-certificate).
    ensure_client_cert(pki, APISERVER_KUBELET_CLIENT, ("system:masters",))
