"""The operator's side of the users' API: `boxcloud account|user|key|audit` bootstrap an account
with secrets never on the command line, and `boxcloud run` serves the API on its own port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from cloud.api import _secrets
from tests.support.apikit import PASSWORD, add_box
from tests.support.cloudkit import make_cloud
from tests.support.wait import wait_for


def boxcloud(home: Path, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloud.cli", "--home", str(home), *argv], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_an_operator_bootstraps_an_account_and_boxcloud_run_serves_the_api(tmp_path: Path) -> None:
    cloud = make_cloud(tmp_path / "cloud")
    home = cloud.home
    r = boxcloud(home, "account", "create", "acme", "--owner", "ops@acme", stdin="short\n")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "12 to 1024 characters" in r.stderr
    r = boxcloud(home, "account", "create", "acme", "--owner", "ops@acme", stdin=PASSWORD + "\n")
    assert r.returncode == 0 and "Account acme created" in r.stdout, r.stderr
    (tmp_path / "pw").write_text(PASSWORD)
    r = boxcloud(home, "account", "create", "acme", "--owner", "other@acme", "--password-file", str(tmp_path / "pw"))
    assert r.returncode == 1 and "exists already" in r.stderr
    add_box(cloud, "SN-1", None)
    assert boxcloud(home, "account", "assign", "SN-1", "acme").returncode == 0
    r = boxcloud(home, "account", "assign", "SN-9", "acme")
    assert r.returncode == 1 and "no Box 'SN-9'" in r.stderr
    r = boxcloud(home, "key", "create", "ops@acme", "--name", "ci", "--scope", "box.read", "--scope", "box.data.read")
    assert r.returncode == 0 and "shown once" in r.stderr
    key = r.stdout.strip()
    assert _secrets.parse_key(key) is not None
    r = boxcloud(home, "user", "reset-2fa", "ops@acme")
    assert r.returncode == 0 and "nothing changed" in r.stdout
    r = boxcloud(home, "audit", "verify")
    assert r.returncode == 0 and "Audit trail intact: 3 records" in r.stdout
    assert "ops@acme" in boxcloud(home, "user", "list", "acme").stdout

    run = subprocess.Popen([sys.executable, "-m", "cloud.cli", "--home", str(home), "run"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    try:
        assert run.stdout is not None
        lines = [run.stdout.readline() for _ in range(3)]
        assert f"users' API on https://localhost:{cloud.settings.api_port}/v1" in lines[2], lines
        s = requests.Session()
        s.trust_env, s.verify = False, str(cloud.pki.root_cert)
        url = f"https://localhost:{cloud.settings.api_port}/v1/boxes"
        r2 = wait_for(lambda: _get(s, url, key), 30, "the users' API")
        assert [b["id"] for b in r2.json()["items"]] == ["SN-1"]
    finally:
        run.terminate()
        run.wait(30)
    r = boxcloud(home, "audit", "list", "--account", "acme", "--json")
    assert r.returncode == 0 and '"action": "key.create"' in r.stdout and key not in r.stdout


def _get(s: requests.Session, url: str, key: str) -> requests.Response | None:
    try:
        return s.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=5)
    except requests.ConnectionError:
        return None
