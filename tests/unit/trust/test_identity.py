"""The daemon reads its certificate's expiry without the cryptography package: same date, clear errors."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from trust.identity import cert_not_after


def _pem(not_after: dt.datetime, serial: int = 1) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "BOX-1")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(dt.datetime(2020, 1, 1)).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("when", [
    dt.datetime(2027, 11, 24, 12, 0, 1),  # UTCTime
    dt.datetime(2049, 12, 31, 23, 59, 59),  # the last UTCTime year
    dt.datetime(2050, 1, 1, 0, 0, 0),  # GeneralizedTime from 2050 on
])
def test_expiry_matches_what_cryptography_reads(when: dt.datetime) -> None:
    pem = _pem(when, serial=2**159 - 1)  # a long serial number: long DER lengths
    assert cert_not_after(pem) == x509.load_pem_x509_certificate(pem).not_valid_after_utc


def test_the_leaf_of_a_chain_counts() -> None:
    leaf, issuer = _pem(dt.datetime(2028, 1, 1)), _pem(dt.datetime(2040, 1, 1))
    assert cert_not_after(leaf + issuer).year == 2028


@pytest.mark.parametrize("junk", [
    b"", b"not a certificate",
    b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
    b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----",
])
def test_junk_is_a_value_error(junk: bytes) -> None:
    with pytest.raises(ValueError):
        cert_not_after(junk)


def test_a_truncated_certificate_is_a_value_error() -> None:
    pem = _pem(dt.datetime(2030, 1, 1)).decode()
    body = "".join(pem.splitlines()[1:-1])
    cut = f"-----BEGIN CERTIFICATE-----\n{body[:120]}\n-----END CERTIFICATE-----\n".encode()
    with pytest.raises(ValueError):
        cert_not_after(cut)
