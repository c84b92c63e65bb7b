"""A Box identity on disk for daemon tests that are not about TLS (self-signed; only its dates
and names are read)."""

from __future__ import annotations

import json
from pathlib import Path

from trust import identity


def pem(name: str) -> bytes:
    """A self-signed certificate valid for a year."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + timedelta(days=365)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def fake_identity(d: Path, cert: bytes, box_id: str = "B-1") -> None:
    """The identity files `trust.identity.load` reads, in directory `d`."""
    d.mkdir(parents=True)
    (d / "identity.json").write_text(json.dumps({"box_id": box_id, "broker_host": "localhost", "broker_port": 8883}))
    for name in ("box.key", "ca.crt"):
        (d / name).write_bytes(b"x")
    (d / "box.crt").write_bytes(cert)


def load_fake(state_dir: Path, box_id: str = "B-1") -> identity.Identity:
    """A fresh fake identity in `state_dir`, loaded."""
    fake_identity(state_dir / identity.IDENTITY_DIR, pem(box_id), box_id)
    return identity.load(state_dir)
