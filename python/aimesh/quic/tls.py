"""TLS material for the QUIC server.

When no certificate is configured (``AIMESH_TLS_CERT``/``AIMESH_TLS_KEY``),
a self-signed one is made in the data directory on first start and reused
afterwards. Clients trust it by pinning: they pass that certificate file as
their CA (``QuicClient(cafile=...)``), so only this server is accepted.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aimesh.errors import ValidationError

CERT_NAME = "quic-cert.pem"
KEY_NAME = "quic-key.pem"
#: A self-signed certificate is renewed when it has less than this left.
RENEW_BEFORE = datetime.timedelta(days=7)
VALIDITY = datetime.timedelta(days=365)


def ensure_certificate(data_dir: str | Path, cert: str = "", key: str = "") -> tuple[Path, Path]:
    """Paths of the certificate and key to serve: the configured pair, or
    the self-signed pair in ``data_dir`` (made or renewed when needed)."""
    if cert or key:
        cert_path, key_path = Path(cert), Path(key)
        for p in (cert_path, key_path):
            if not p.is_file():
                raise ValidationError("invalid_config", f"TLS file {p} not found")
        return cert_path, key_path
    directory = Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    if not _still_valid(cert_path) or not key_path.is_file():
        _write_self_signed(cert_path, key_path)
    return cert_path, key_path


def fingerprint(cert_path: str | Path) -> str:
    """SHA-256 fingerprint of a PEM certificate, hex with colons (as
    ``openssl x509 -fingerprint -sha256`` prints it)."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _still_valid(cert_path: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    now = datetime.datetime.now(datetime.timezone.utc)
    return cert.not_valid_after_utc - now > RENEW_BEFORE


def _write_self_signed(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    hostname = socket.gethostname()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aimesh self-signed")])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt_names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    if hostname and hostname != "localhost":
        alt_names.append(x509.DNSName(hostname))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The key is written 0600 before any byte of it lands on disk.
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    os.replace(tmp_key, key_path)
    tmp_cert = cert_path.with_suffix(".tmp")
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_cert, cert_path)
