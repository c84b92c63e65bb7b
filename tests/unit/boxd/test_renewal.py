"""A renewed certificate that does not connect is dropped and the previous identity comes back."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from boxd import certs
from boxd.certs import Certificates
from boxd.errors import CommandFailedError
from boxd.link import Link
from boxd.uplink import Uplink
from tests.support.fakeident import fake_identity, pem
from tests.support.fakeuplink import FakeUplink
from trust import identity

OLD, NEW = pem("old"), pem("new")


def links(connects: bool) -> tuple[Link, list[bytes]]:
    """A link whose uplinks connect (or not), and the certificates they were made with."""
    made: list[bytes] = []

    def make(ident: identity.Identity) -> Uplink:
        made.append(ident.cert_file.read_bytes())
        return FakeUplink(ident, on_connected=link.on_connected, connects=connects)

    link = Link(make)
    return link, made


def test_a_renewed_certificate_that_does_not_connect_is_reverted(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    fake_identity(tmp_path / identity.IDENTITY_DIR, OLD)

    async def renew(state_dir: Path) -> str:  # what `python -m trust.enroll renew` leaves
        fake_identity(state_dir / identity.NEXT_DIR, NEW)
        return f"staged in {state_dir / identity.NEXT_DIR}"

    monkeypatch.setattr("trust.renewal.renew", renew)
    monkeypatch.setattr(certs, "RENEW_TRIAL_S", 0.2)
    link, tried = links(connects=False)
    with pytest.raises(CommandFailedError, match="did not connect"):
        asyncio.run(Certificates(tmp_path, link).renew())
    assert tried == [NEW, OLD]
    assert (tmp_path / identity.IDENTITY_DIR / "box.crt").read_bytes() == OLD
    assert not (tmp_path / identity.PREV_DIR).exists()
    shutil.rmtree(tmp_path / f"{identity.IDENTITY_DIR}.failed")


def test_at_start_an_unproven_renewed_certificate_is_kept_if_it_connects_else_reverted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(certs, "RENEW_TRIAL_S", 0.2)

    async def renewal_confirmed(state_dir: Path) -> None:
        return None

    monkeypatch.setattr("trust.renewal.confirm", renewal_confirmed)
    for connects in (True, False):
        state = tmp_path / str(connects)
        fake_identity(state / identity.IDENTITY_DIR, NEW)
        fake_identity(state / identity.PREV_DIR, OLD)
        link, made = links(connects)
        owner = Certificates(state, link)

        async def main(owner: Certificates = owner, link: Link = link) -> None:
            await link.start(owner.load())
            assert owner.on_trial
            await owner.trial_at_start()

        asyncio.run(main())
        assert not (state / identity.PREV_DIR).exists()
        assert (state / identity.IDENTITY_DIR / "box.crt").read_bytes() == (NEW if connects else OLD)
        assert made == ([NEW] if connects else [NEW, OLD])
        assert not owner.on_trial
