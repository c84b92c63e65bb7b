"""The platform PKI: chain shape, key protection, CSR checks, CRL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud.errors import PkiError
from cloud.pki import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    p = Pki(tmp_path_factory.mktemp("pki"))
    p.init()
    return p


def csr(key: ec.EllipticCurvePrivateKey, cn: str = "evil") -> bytes:
    req = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])).sign(key, hashes.SHA256())
    return req.public_bytes(serialization.Encoding.PEM)


def test_chain_shape_and_key_modes(pki: Pki) -> None:
    root = x509.load_pem_x509_certificate(pki.root_cert.read_bytes())
    issuing = x509.load_pem_x509_certificate(pki.issuing_cert.read_bytes())
    issuing.verify_directly_issued_by(root)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert issuing.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    for key in (pki.root_key, pki.issuing_key):
        assert key.stat().st_mode & 0o777 == 0o600
    assert pki.root_key.parent.stat().st_mode & 0o777 == 0o700


def test_box_certificate_names_the_box_not_the_csr(pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    chain, leaf = pki.sign_box_csr(csr(key, "cloud:admin"), "SN-1")
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "SN-1"
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc > dt.timedelta(days=300)
    assert chain.count(b"BEGIN CERTIFICATE") == 2


def test_weak_or_forged_csrs_are_refused(pki: Pki) -> None:
    with pytest.raises(PkiError, match="not a valid PEM"):
        pki.sign_box_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "X")
    weak = ec.generate_private_key(ec.SECP192R1())
    with pytest.raises(PkiError, match="P-256"):
        pki.sign_box_csr(csr(weak), "X")


def test_crl_lists_revoked_serials(pki: Pki) -> None:
    pki.write_crl([(1234, dt.datetime.now(dt.UTC))])
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(1234) is not None
    issuing = x509.load_pem_x509_certificate(pki.issuing_cert.read_bytes())
    key = issuing.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    assert crl.is_signature_valid(key)


def test_init_refuses_to_overwrite(pki: Pki) -> None:
    with pytest.raises(PkiError, match="already exists"):
        pki.init()


def test_server_certificate_names(tmp_path: Path, pki: Pki) -> None:
    files = pki.issue_server("test", ["broker.example", "10.0.0.1"])
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
