"""The platform PKI: a root CA, an issuing CA, server and client certificates, the CRL.

Chain shape (see docs/architecture.md, "Trust chain")::

    Box Platform Root CA   (EC P-384, 20 years; its key belongs offline: pki/offline/)
      └─ Box Issuing CA    (EC P-256, 5 years, path length 0; online, signs everything below)
           ├─ server certificates (broker, enrollment API; serverAuth, DNS/IP names)
           ├─ Box certificates    (CN = Box ID, clientAuth only, 1 year)
           └─ service identities  (CN = "cloud:<role>", clientAuth only)

A Box trusts only the root, shipped in its image. The issuing CA's key lives on
the platform and can be replaced (new issuing CA signed by the root) without
touching a single Box. The CRL is signed by the issuing CA.

Keys are written 0600. This module does no network I/O.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from boxkit.files import write_atomic, write_secret
from cloud.errors import PkiError
from trust import tls

BOX_CERT_DAYS = 365
SERVER_CERT_DAYS = 825
# The CRL is re-signed every day and at every revocation; its nextUpdate is far, because Boxes
# check it in every handshake and one that expired would lock out a Box offline that long (see
# docs/architecture.md, "Trust chain"): longer than a Box certificate lives.
CRL_DAYS = 400
_SKEW = dt.timedelta(minutes=5)  # backdate notBefore a little for Boxes with a slow clock


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class IssuedFiles:
    """Where an issued identity's files are."""

    cert: Path  # leaf + issuing CA
    key: Path


class Pki:
    """The CA files under one directory. The constructor does no I/O."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.root_cert = directory / "root.crt"
        self.root_key = directory / "offline" / "root.key"
        self.issuing_cert = directory / "issuing.crt"
        self.issuing_key = directory / "issuing.key"
        self.ca_bundle = directory / "ca-bundle.crt"  # root + issuing, for the broker
        self.crl = directory / "crl.pem"

    def service_context(self, role: str) -> ssl.SSLContext:
        """The TLS context of a cloud service ("receiver", "admin") connecting to the broker: its own
        identity, the platform CA, and the CRL (a revoked broker certificate is refused here too)."""
        return tls.client_context(self.root_cert, self.dir / f"svc-{role}.crt", self.dir / f"svc-{role}.key",
                                  crl_file=self.crl)

    def exists(self) -> bool:
        """Whether `init()` has been run."""
        return self.issuing_key.exists() and self.root_cert.exists()

    def init(self) -> None:
        """Create the root and issuing CAs and an empty CRL (refuses to overwrite)."""
        if self.exists():
            raise PkiError(f"a PKI already exists in {self.dir}")
        (self.dir / "offline").mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        (self.dir / "offline").chmod(0o700)
        root_key = ec.generate_private_key(ec.SECP384R1())
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Box Platform Root CA")])
        root = self._build(
            root_name, root_name, root_key.public_key(), root_key, 20 * 365,
            ca_path_len=1, eku=None,
        )
        iss_key = ec.generate_private_key(ec.SECP256R1())
        iss_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Box Issuing CA")])
        issuing = self._build(
            iss_name, root_name, iss_key.public_key(), root_key, 5 * 365,
            ca_path_len=0, eku=None, issuer_key_id=root_key.public_key(),
        )
        write_secret(self.root_key, _pem_key(root_key))
        write_secret(self.issuing_key, _pem_key(iss_key))
        write_atomic(self.root_cert, _pem(root))
        write_atomic(self.issuing_cert, _pem(issuing))
        write_atomic(self.ca_bundle, _pem(root) + _pem(issuing))
        self.write_crl([])

    # -- issuing --------------------------------------------------------------------------

    def _issuer(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        try:
            cert = x509.load_pem_x509_certificate(self.issuing_cert.read_bytes())
            key = serialization.load_pem_private_key(self.issuing_key.read_bytes(), None)
        except (OSError, ValueError) as e:
            raise PkiError(f"cannot load the issuing CA from {self.dir}: {e}") from e
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key

    def _build(
        self,
        subject: x509.Name,
        issuer: x509.Name,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        signing_key: ec.EllipticCurvePrivateKey,
        days: int,
        *,
        ca_path_len: int | None,
        eku: x509.ObjectIdentifier | None,
        sans: Iterable[x509.GeneralName] = (),
        issuer_key_id: ec.EllipticCurvePublicKey | None = None,
    ) -> x509.Certificate:
        now = _now()
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key_id or signing_key.public_key()),
                critical=False,
            )
        )
        is_ca = ca_path_len is not None
        b = b.add_extension(x509.BasicConstraints(ca=is_ca, path_length=ca_path_len), critical=True)
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=not is_ca, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=is_ca, crl_sign=is_ca,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        if eku is not None:
            b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        sans = list(sans)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(signing_key, hashes.SHA256() if days < 3650 else hashes.SHA384())

    def issue_server(self, name: str, hosts: Iterable[str]) -> IssuedFiles:
        """Issue (or re-issue) the server certificate `name` for the given DNS names / IPs."""
        sans: list[x509.GeneralName] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        key = ec.generate_private_key(ec.SECP256R1())
        files = IssuedFiles(self.dir / f"{name}.crt", self.dir / f"{name}.key")
        cert = self._sign(f"{name} server", key.public_key(), SERVER_CERT_DAYS, ExtendedKeyUsageOID.SERVER_AUTH, sans)
        write_secret(files.key, _pem_key(key))
        write_atomic(files.cert, cert)
        return files

    def issue_service(self, role: str) -> IssuedFiles:
        """Issue a client identity "cloud:<role>" for a cloud service (receiver, admin)."""
        key = ec.generate_private_key(ec.SECP256R1())
        files = IssuedFiles(self.dir / f"svc-{role}.crt", self.dir / f"svc-{role}.key")
        cert = self._sign(f"cloud:{role}", key.public_key(), SERVER_CERT_DAYS, ExtendedKeyUsageOID.CLIENT_AUTH)
        write_secret(files.key, _pem_key(key))
        write_atomic(files.cert, cert)
        return files

    @staticmethod
    def load_box_csr(csr_pem: str | bytes) -> x509.CertificateSigningRequest:
        """Parse and check a Box's CSR (PEM) before anything is signed or spent.

        Raises:
            PkiError: the CSR is malformed, badly signed, or its key is not one a Box may have.
        """
        try:
            raw = csr_pem.encode("ascii") if isinstance(csr_pem, str) else csr_pem
            csr = x509.load_pem_x509_csr(raw)
            if not csr.is_signature_valid:
                raise PkiError("the certificate request's signature is invalid")
            pub = csr.public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:  # UnicodeError is a ValueError
            raise PkiError("the certificate request is not a valid PEM CSR") from e
        if isinstance(pub, ec.EllipticCurvePublicKey):
            if pub.curve.key_size < 256:
                raise PkiError("the Box key must be EC P-256 or stronger")
        elif isinstance(pub, rsa.RSAPublicKey):
            if not 3072 <= pub.key_size <= 8192:
                raise PkiError("an RSA Box key must be 3072 to 8192 bits")
        else:
            raise PkiError("the Box key must be EC (P-256 or stronger) or RSA")
        return csr

    def sign_box_csr(self, csr_pem: str | bytes, box_id: str) -> tuple[bytes, x509.Certificate]:
        """Sign a Box's CSR: the subject is set from `box_id`, never taken from the CSR.

        Returns:
            the certificate chain (leaf + issuing CA) as PEM, and the leaf.

        Raises:
            PkiError: the CSR is malformed, badly signed, or its key is too weak.
        """
        pub = self.load_box_csr(csr_pem).public_key()
        assert isinstance(pub, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
        chain = self._sign(box_id, pub, BOX_CERT_DAYS, ExtendedKeyUsageOID.CLIENT_AUTH)
        leaf = x509.load_pem_x509_certificate(chain)
        return chain, leaf

    def sign_box_keys(
        self, keys: Iterable[tuple[str, ec.EllipticCurvePublicKey]]
    ) -> list[tuple[bytes, x509.Certificate]]:
        """Sign many Boxes' public keys at once (bulk enrolment: a factory, a fleet simulator): the
        issuing CA loaded once, no CSR to parse; the subject is each Box ID. The Boxes' private keys
        never come here. Returns (chain PEM, leaf) in the order given.

        Raises:
            PkiError: a key weaker than P-256, or the issuing CA cannot be loaded.
        """
        issuing, key = self._issuer()
        tail = _pem(issuing)
        out = []
        for box_id, pub in keys:
            if pub.curve.key_size < 256:
                raise PkiError(f"the key of Box {box_id} must be EC P-256 or stronger")
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, box_id)])
            leaf = self._build(subject, issuing.subject, pub, key, BOX_CERT_DAYS, ca_path_len=None,
                               eku=ExtendedKeyUsageOID.CLIENT_AUTH)
            out.append((_pem(leaf) + tail, leaf))
        return out

    def _sign(
        self,
        cn: str,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        days: int,
        eku: x509.ObjectIdentifier,
        sans: Iterable[x509.GeneralName] = (),
    ) -> bytes:
        issuing, key = self._issuer()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        cert = self._build(subject, issuing.subject, public_key, key, days, ca_path_len=None, eku=eku, sans=sans)
        return _pem(cert) + _pem(issuing)

    @staticmethod
    def cert_serial(path: Path) -> int:
        """The serial number of the (first) certificate in a PEM file."""
        return x509.load_pem_x509_certificate(path.read_bytes()).serial_number

    @staticmethod
    def cert_names(path: Path) -> list[str]:
        """The DNS names and IP addresses a server certificate is for."""
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return [*sans.get_values_for_type(x509.DNSName), *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))]

    # -- revocation -----------------------------------------------------------------------

    def write_crl(self, revoked: Iterable[tuple[int, dt.datetime]], days: int = CRL_DAYS) -> None:
        """Write the CRL listing `revoked` (serial, revocation time), valid for `days`."""
        if not self.issuing_key.exists():
            raise PkiError(f"no issuing CA in {self.dir}")
        issuing, key = self._issuer()
        now = _now()
        last = now - _SKEW
        try:  # strictly later than the list before (to the second: X.509 times have no less), so that
            # a Box keeps the newest (it refuses an older one) and OpenSSL uses the newest it holds
            prev = x509.load_pem_x509_crl(self.crl.read_bytes()).last_update_utc
            last = max(last, prev + dt.timedelta(seconds=1))
        except (OSError, ValueError):
            pass
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuing.subject)
            .last_update(last)
            .next_update(now + dt.timedelta(days=days))
        )
        for serial, when in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        crl = b.sign(key, hashes.SHA256())
        write_atomic(self.crl, crl.public_bytes(serialization.Encoding.PEM))
