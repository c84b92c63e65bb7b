"""`boxctl provision` and `boxctl status` as an installer meets them, against the real cloud."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cloud.pki import Pki
from cloud.platform import Cloud
from tests.support.wait import free_port


def boxctl(state: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioning.cli", "--state-dir", str(state), *args],
        capture_output=True, text=True, timeout=60, input=stdin,
    )


def provision(cloud: Cloud, state: Path, token: str, *extra: str, server: str | None = None,
              ca: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`boxctl provision --token -`, the token on standard input (never on the command line)."""
    return boxctl(state, "provision", "--server", server or f"https://localhost:{cloud.settings.enroll_port}",
                  "--token", "-", "--ca", str(ca or cloud.pki.root_cert), *extra, stdin=token + "\n")


def assert_clean_failure(r: subprocess.CompletedProcess[str], state: Path, words: str) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert not (state / "identity").exists(), "a half-written identity was left behind"
    assert not list(state.glob(".identity-*")) if state.exists() else True


def test_provision_then_status(cloud: Cloud, tmp_path: Path) -> None:
    token, _ = cloud.add_box("SN-PROV-1", 600)
    r = provision(cloud, tmp_path, token, "--serial", "SN-PROV-1")
    assert r.returncode == 0, r.stderr
    assert "this Box is SN-PROV-1" in r.stdout
    ident = tmp_path / "identity"
    assert (ident / "box.key").stat().st_mode & 0o777 == 0o600
    assert (ident / "box.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY")
    s = boxctl(tmp_path, "status")
    assert s.returncode == 0, s.stdout + s.stderr
    assert "SN-PROV-1" in s.stdout and "days left" in s.stdout
    assert "TLS:" in s.stdout and "OK" in s.stdout and "can log in" in s.stdout


def test_reused_token_is_refused(cloud: Cloud, tmp_path: Path) -> None:
    token, _ = cloud.add_box("SN-PROV-2", 600)
    assert provision(cloud, tmp_path / "first", token).returncode == 0
    r = provision(cloud, tmp_path / "second", token)
    assert_clean_failure(r, tmp_path / "second", "already been used")


def test_wrong_token_is_refused(cloud: Cloud, tmp_path: Path) -> None:
    r = provision(cloud, tmp_path, "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF")
    assert_clean_failure(r, tmp_path, "not valid")
    r = provision(cloud, tmp_path, "hello")
    assert_clean_failure(r, tmp_path, "malformed")


def test_expired_token_is_refused(cloud: Cloud, tmp_path: Path) -> None:
    token, _ = cloud.add_box("SN-PROV-3", -1)
    assert_clean_failure(provision(cloud, tmp_path, token), tmp_path, "expired")


def test_token_for_another_serial_is_refused(cloud: Cloud, tmp_path: Path) -> None:
    token, _ = cloud.add_box("SN-PROV-4", 600)
    r = provision(cloud, tmp_path, token, "--serial", "SN-SOMEONE-ELSE")
    assert_clean_failure(r, tmp_path, "another Box")


def test_server_with_a_certificate_from_another_ca_is_refused(cloud: Cloud, tmp_path: Path) -> None:
    other = Pki(tmp_path / "other-ca")
    other.init()
    token, _ = cloud.add_box("SN-PROV-5", 600)
    r = provision(cloud, tmp_path / "box", token, ca=other.root_cert)
    assert_clean_failure(r, tmp_path / "box", "platform CA does not vouch")
    # the token was not spent by the refused attempt: the real server never saw it
    assert provision(cloud, tmp_path / "box", token).returncode == 0


def test_no_network_is_a_clear_error(cloud: Cloud, tmp_path: Path) -> None:
    token, _ = cloud.add_box("SN-PROV-6", 600)
    r = provision(cloud, tmp_path, token, server=f"https://127.0.0.1:{free_port()}")
    assert_clean_failure(r, tmp_path, "refused the connection")
    r = provision(cloud, tmp_path, token, server="https://platform.invalid:8443")
    assert_clean_failure(r, tmp_path, "cannot resolve")


def test_bad_arguments_are_clear(cloud: Cloud, tmp_path: Path) -> None:
    r = provision(cloud, tmp_path, "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF", server="http://localhost:1")
    assert_clean_failure(r, tmp_path, "https://")
    r = provision(cloud, tmp_path, "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF", ca=tmp_path / "missing.crt")
    assert_clean_failure(r, tmp_path, "does not exist")


def test_status_of_an_unprovisioned_box(tmp_path: Path) -> None:
    r = boxctl(tmp_path, "status")
    assert r.returncode != 0 and "not provisioned" in r.stderr and "Traceback" not in r.stderr


def test_status_of_a_revoked_box_says_so(cloud: Cloud, tmp_path: Path) -> None:
    token, _ = cloud.add_box("SN-PROV-7", 600)
    assert provision(cloud, tmp_path, token).returncode == 0
    cloud.revoke("SN-PROV-7")
    r = boxctl(tmp_path, "status")
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
    assert "revoked" in r.stdout


def test_existing_identity_is_kept_without_force(cloud: Cloud, tmp_path: Path) -> None:
    token, _ = cloud.add_box("SN-PROV-8", 600)
    assert provision(cloud, tmp_path, token).returncode == 0
    before = (tmp_path / "identity" / "box.key").read_bytes()
    token2, _ = cloud.add_box("SN-PROV-8", 600, replace=True)
    r = provision(cloud, tmp_path, token2)
    assert r.returncode != 0 and "--force" in r.stderr
    assert (tmp_path / "identity" / "box.key").read_bytes() == before
    r = provision(cloud, tmp_path, token2, "--force")
    assert r.returncode == 0
    assert (tmp_path / "identity" / "box.key").read_bytes() != before


def test_the_token_can_come_from_a_file_and_never_from_the_command_line(cloud: Cloud, tmp_path: Path) -> None:
    token, _ = cloud.add_box("SN-PROV-9", 600)
    f = tmp_path / "token.txt"
    f.write_text(f"  {token}\n")
    f.chmod(0o600)
    state = tmp_path / "box"
    r = boxctl(state, "provision", "--server", f"https://localhost:{cloud.settings.enroll_port}",
               "--token-file", str(f), "--ca", str(cloud.pki.root_cert))
    assert r.returncode == 0, r.stderr
    assert "SN-PROV-9" in r.stdout
    r = boxctl(tmp_path / "b2", "provision", "--server", "https://localhost:1", "--token", "-",
               "--ca", str(cloud.pki.root_cert), stdin="")
    assert r.returncode != 0 and "no enrollment token" in r.stderr and "Traceback" not in r.stderr
