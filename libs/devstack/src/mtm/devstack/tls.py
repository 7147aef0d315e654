"""A local certificate authority for the dev stack: one CA per data directory, server certificates it signs.

The embedded NATS and Postgres speak TLS only; clients verify them against this CA (`ca.pem`), the way production
clients verify the operator's certificates (`MTM_NATS_TLS_CA`, `sslrootcert`). Keys are files readable by their
owner only. `python -m mtm.devstack.tls DIR HOST...` makes a CA and a server certificate for trying the compose
deployment.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=825)
LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner may read (a key, a password, a configuration naming them)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _subject_alt_names(hosts: tuple[str, ...]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


class LocalCA:
    """`ca.pem` and `ca.key` under `directory`, made on first use; `issue` signs server or client certificates."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def cert_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def _key_file(self) -> Path:
        return self.directory / "ca.key"

    def ensure(self) -> LocalCA:
        if self.cert_file.exists() and self._key_file.exists():
            return self
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mtm local development CA")])
        now = dt.datetime.now(dt.UTC)
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(self._key_file, _key_pem(key))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return self

    def issue(self, name: str, hosts: tuple[str, ...] = LOOPBACK_NAMES, *, client: bool = False) -> Issued:
        """`<name>.pem` and `<name>.key`, signed by this CA, for `hosts` (server) or as a client certificate.

        Kept once made, unless the CA changed since (a certificate is always one this CA signed).
        """
        self.ensure()
        issued = Issued(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        ca_cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        if issued.cert.exists() and issued.key.exists():
            existing = x509.load_pem_x509_certificate(issued.cert.read_bytes())
            if existing.issuer == ca_cert.subject and _signed_by(existing, ca_cert):
                return issued
        ca_key = serialization.load_pem_private_key(self._key_file.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + LEAF_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if not client:
            builder = builder.add_extension(_subject_alt_names(hosts), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        write_private(issued.key, _key_pem(key))
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return issued


def _signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Make a local CA and a server certificate signed by it.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("hosts", nargs="+", help="names and addresses the server is reached by")
    parser.add_argument("--name", default="server", help="file name of the certificate (NAME.pem, NAME.key)")
    args = parser.parse_args(argv)
    issued = LocalCA(args.directory).issue(args.name, tuple(args.hosts))
    print(f"CA {args.directory / 'ca.pem'}\ncertificate {issued.cert}\nkey {issued.key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
