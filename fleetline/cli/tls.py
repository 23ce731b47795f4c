"""A private certificate authority and the gateway's certificate, made with `cryptography`
for `fleetline up --tls` and `fleetline secrets`: ca.pem (what agents, the CLI and the
console are given), ca.key (0600, signs gateway certificates), gateway.pem and gateway.key
(0600). ECDSA P-256: every TLS client takes it (browsers do not take Ed25519 certificates).

Made once and kept: a certificate is made again only when it lacks a host name or address
it must serve, or expires within 30 days.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleetline.private_files import write_private

CA_DAYS = 3650
CERT_DAYS = 397
RENEW_WITHIN = dt.timedelta(days=30)
# Always served: what a process on the same machine calls the gateway.
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _make_ca(directory: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fleetline local CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    write_private(directory / "ca.key", _key_pem(key))
    _public_file(directory / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))


def _make_cert(directory: Path, hosts: list[str]) -> None:
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{directory / 'ca.key'} is not the P-256 key Fleetline's CA is made with")
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=CERT_DAYS))
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    write_private(directory / "gateway.key", _key_pem(key))
    _public_file(directory / "gateway.pem", cert.public_bytes(serialization.Encoding.PEM))


def _public_file(path: Path, data: bytes) -> None:
    """A certificate: public, written whole (a reader never sees half of one)."""
    partial = path.with_name(path.name + ".new")
    partial.write_bytes(data)
    partial.chmod(0o644)
    partial.replace(path)


def _covers(cert_file: Path, hosts: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    served = {str(n) for n in names.get_values_for_type(x509.DNSName)}
    served |= {str(a) for a in names.get_values_for_type(x509.IPAddress)}
    wanted = {str(ipaddress.ip_address(h)) if _is_ip(h) else h for h in hosts}
    return wanted <= served and cert.not_valid_after_utc - _now() > RENEW_WITHIN


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def ensure_tls(directory: Path, hosts: Sequence[str] = ()) -> TlsFiles:
    """The CA and a gateway certificate for `hosts` (plus the local names) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = list(dict.fromkeys([*hosts, *LOCAL_NAMES]))
    if not (directory / "ca.pem").exists() or not (directory / "ca.key").exists():
        _make_ca(directory)
    if not (directory / "gateway.key").exists() or not _covers(directory / "gateway.pem", wanted):
        _make_cert(directory, wanted)
    return TlsFiles(directory / "ca.pem", directory / "gateway.pem", directory / "gateway.key")
