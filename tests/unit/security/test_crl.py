"""Issue 12, finding 5: the Box keeps only a CRL signed by the platform's issuing CA and newer than
the one it has (a replayed older list would un-revoke a server), and its TLS contexts use it."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import ssl
from pathlib import Path

import pytest

from cloud.pki import Pki
from trust import tls
from trust.crl import CrlKeeper


@pytest.fixture
def pkis(tmp_path: Path) -> tuple[Pki, Pki, Path]:
    """The platform's PKI, another one (a forger's), and a Box's state with an identity from the first."""
    real, other = Pki(tmp_path / "real"), Pki(tmp_path / "other")
    real.init()
    other.init()
    files = real.issue_service("box-like")
    state = tmp_path / "box"
    (state / "identity").mkdir(parents=True)
    shutil.copy(real.root_cert, state / "identity" / "ca.crt")
    shutil.copy(files.cert, state / "identity" / "box.crt")
    return real, other, state


def _take(state: Path, pem: bytes) -> tuple[bool, list[Path]]:
    loaded: list[Path] = []
    kept = asyncio.run(CrlKeeper(state, loaded.append).take(pem))
    return kept, loaded


def test_only_a_newer_crl_signed_by_the_platform_is_kept(pkis: tuple[Pki, Pki, Path]) -> None:
    real, other, state = pkis
    real.write_crl([])
    first = real.crl.read_bytes()
    assert _take(state, first) == (True, [state / "crl.pem"])
    other.write_crl([(123, dt.datetime.now(dt.UTC))])
    assert _take(state, other.crl.read_bytes())[0] is False  # forged: another CA's signature
    real.write_crl([(456, dt.datetime.now(dt.UTC))])
    newer = real.crl.read_bytes()
    assert _take(state, newer)[0] is True
    assert _take(state, first)[0] is False  # replayed: older than the one kept
    assert (state / "crl.pem").read_bytes() == newer
    assert _take(state, b"not a crl")[0] is False


def test_a_context_built_with_the_crl_checks_the_leaf(pkis: tuple[Pki, Pki, Path]) -> None:
    real, _, state = pkis
    real.write_crl([])
    ctx = tls.client_context(real.root_cert, crl_file=real.crl)
    assert ctx.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF and ctx.cert_store_stats()["crl"] == 1
    assert not tls.client_context(real.root_cert, crl_file=state / "absent.pem").verify_flags \
        & ssl.VERIFY_CRL_CHECK_LEAF


def test_every_tls_context_of_the_box_is_given_the_crl() -> None:
    """Each place where the Box (daemon, OTA client, boxctl) builds a client context passes its CRL."""
    root = Path(__file__).resolve().parents[3]
    calls = []
    for package in ("boxd", "trust", "ota", "provisioning"):
        for f in (root / package).rglob("*.py"):
            text = f.read_text()
            start = 0
            while (i := text.find("client_context(", start)) >= 0:
                start = i + 1
                if text[i - 4:i] == "def ":
                    continue
                depth, j = 0, i + len("client_context")
                while True:  # to the matching parenthesis
                    depth += {"(": 1, ")": -1}.get(text[j], 0)
                    j += 1
                    if depth == 0:
                        break
                call = text[i:j]
                calls.append((f.name, "crl_file=" in call, call))
    assert len(calls) >= 5
    assert all(ok for _, ok, _ in calls), [c for c in calls if not c[1]]
