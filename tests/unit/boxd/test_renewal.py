"""A renewed certificate that does not connect is dropped and the previous identity comes back."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from boxd.commands import CommandFailed
from boxd.daemon import Daemon
from trust import identity


def pem(name: str) -> bytes:
    """A self-signed certificate (only its dates are read here)."""
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


OLD, NEW = pem("old"), pem("new")


def fake_identity(d: Path, cert: bytes) -> None:
    d.mkdir(parents=True)
    (d / "identity.json").write_text(json.dumps({"box_id": "B-1", "broker_host": "localhost", "broker_port": 8883}))
    for name in ("box.key", "ca.crt"):
        (d / name).write_bytes(b"x")
    (d / "box.crt").write_bytes(cert)


def test_a_renewed_certificate_that_does_not_connect_is_reverted(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    fake_identity(tmp_path / identity.IDENTITY_DIR, OLD)

    async def renew(state_dir: Path) -> str:  # what `python -m trust.enroll renew` leaves
        fake_identity(state_dir / identity.NEXT_DIR, NEW)
        return f"staged in {state_dir / identity.NEXT_DIR}"

    monkeypatch.setattr("trust.renewal.renew", renew)
    d = Daemon(tmp_path, tmp_path / "boxd.toml")
    tried: list[bytes] = []

    async def switch(ident: identity.Identity, trial_s: float) -> bool:
        tried.append(ident.cert_file.read_bytes())
        return trial_s <= 0  # the trial fails; the way back "works"

    d._switch_uplink = switch  # type: ignore[method-assign]
    with pytest.raises(CommandFailed, match="did not connect"):
        asyncio.run(d.renew_certificate())
    assert tried == [NEW, OLD]
    assert (tmp_path / identity.IDENTITY_DIR / "box.crt").read_bytes() == OLD
    assert not (tmp_path / identity.PREV_DIR).exists()
    shutil.rmtree(tmp_path / f"{identity.IDENTITY_DIR}.failed")


def test_at_start_an_unproven_renewed_certificate_is_kept_if_it_connects_else_reverted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boxd.daemon

    monkeypatch.setattr(boxd.daemon, "RENEW_TRIAL_S", 0.2)
    for connects in (True, False):
        state = tmp_path / str(connects)
        fake_identity(state / identity.IDENTITY_DIR, NEW)
        fake_identity(state / identity.PREV_DIR, OLD)
        d = Daemon(state, state / "boxd.toml")
        switched: list[bytes] = []

        async def switch(ident: identity.Identity, trial_s: float, out: list[bytes] = switched) -> bool:
            out.append(ident.cert_file.read_bytes())
            return True

        d._switch_uplink = switch  # type: ignore[method-assign]

        async def main(d: Daemon = d, connects: bool = connects) -> None:
            if connects:
                d._link_up.set()
            await d._trial_at_start()

        asyncio.run(main())
        assert not (state / identity.PREV_DIR).exists()
        assert (state / identity.IDENTITY_DIR / "box.crt").read_bytes() == (NEW if connects else OLD)
        assert switched == ([] if connects else [OLD])
