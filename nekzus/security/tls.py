"""TLS for the listener: a self-signed certificate made once (mode auto), given files, or none.

In ``auto`` mode the certificate and key live in the data directory and are reused, so mobile apps
can pin the SHA-256 fingerprint that the gateway logs at every start.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..config import Config, ConfigError

log = logging.getLogger(__name__)

CERT_FILE = "tls/cert.pem"
KEY_FILE = "tls/key.pem"
VALIDITY_DAYS = 825


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's DER form, as colon-separated hex (what apps pin)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _alt_names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    hostname = socket.gethostname()
    if hostname and hostname != "localhost":
        names.append(x509.DNSName(hostname))
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host and host != "localhost":
            names.append(x509.DNSName(host))
    else:
        if not address.is_unspecified and x509.IPAddress(address) not in names:
            names.append(x509.IPAddress(address))
    return names


def generate_self_signed(host: str) -> tuple[bytes, bytes]:
    """A P-256 key and a self-signed certificate for ``host``, localhost and loopback."""
    return self_signed(_alt_names(host))


def self_signed(
    names: Sequence[x509.GeneralName], *, common_name: str = "nekzus gateway", days: int = VALIDITY_DAYS
) -> tuple[bytes, bytes]:
    """A self-signed server certificate (PEM) for ``names`` (no SAN when empty) and its P-256 key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), key_pem


def certificate_names(config: Config) -> list[str]:
    """The DNS names and addresses in the listener's certificate (none without TLS).

    In ``auto`` mode before the first start, these are the names the certificate will be made for.
    """
    tls = config.server.tls
    if tls.mode == "off":
        return []
    path = tls.cert if tls.mode == "files" else config.server.data_dir / CERT_FILE
    assert path is not None  # enforced by TLSConfig
    if tls.mode == "auto" and not path.exists():
        general_names = _alt_names(config.server.host)
    else:
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            general_names = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            return []
        except (OSError, ValueError) as exc:
            raise ConfigError(f"server.tls: cannot read the certificate {path}: {exc}") from exc
    return [str(name.value) for name in general_names if isinstance(name, x509.DNSName | x509.IPAddress)]


def _auto_files(config: Config) -> tuple[Path, Path]:
    cert_path = config.server.data_dir / CERT_FILE
    key_path = config.server.data_dir / KEY_FILE
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    cert_pem, key_pem = generate_self_signed(config.server.host)
    try:
        cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_pem)
        cert_path.write_bytes(cert_pem)
    except OSError as exc:
        raise ConfigError(f"server.data_dir: cannot store the TLS certificate: {exc}") from exc
    log.info("generated a self-signed TLS certificate in %s", cert_path)
    return cert_path, key_path


def server_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The listener's TLS context, or None for plain HTTP; logs the certificate's fingerprint."""
    tls = config.server.tls
    if tls.mode == "off":
        return None
    if tls.mode == "auto":
        cert_path, key_path = _auto_files(config)
    else:
        assert tls.cert is not None and tls.key is not None  # enforced by TLSConfig
        cert_path, key_path = tls.cert, tls.key
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_path, key_path)
        cert_pem = cert_path.read_bytes()
        digest = fingerprint(cert_pem)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"server.tls: cannot load {cert_path} / {key_path}: {exc}") from exc
    log.info("TLS certificate %s, SHA-256 fingerprint %s", cert_path, digest)
    return context
