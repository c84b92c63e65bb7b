"""The attacks TUF is there for, staged against the reference cloud's own repository (the one it
serves over HTTPS to Boxes) and refused by one real Box run by `boxd launch`, through the
platform's ``update`` command. Every attack ends the same way: the Box's ``ota`` outcome is
``failed`` with a detail that names the attack, nothing is installed (no release unpacked, the
factory software still active, nothing left in ``<state>/ota/downloads``), and the Box still runs
the factory version, connected. The served repository is put back as it was after each attack, so
the next one starts from a good repository; the last test proves it, and proves the refusals left
the Box's trusted metadata sound: the Box takes the newest release.

Each attack, how it is staged, and the words of the Box's report (ota/client.py `_MEANINGS`, then
python-tuf's own message):

1. tampered target (test_a_tampered_target_is_refused): one byte of the served bundle changed.
   "a file does not match the length or hash in the signed metadata (tampered or mixed versions):
   Observed hash ... does not match expected hash ..."
2. wrong length (test_a_target_of_the_wrong_length_is_refused): the served bundle truncated.
   "a file does not match the length or hash in the signed metadata (tampered or mixed versions):
   Observed length ... does not match expected length ..."
3. endless data (test_endless_data_is_refused): the served bundle followed by 2 MiB more.
   "the server sent more data than the signed metadata allows (endless data): Downloaded ... bytes
   exceeding the maximum allowed length of ..."
4. rollback (test_metadata_rolled_back_is_refused): the Box has seen timestamp N (it asked for a
   target the repository does not hold: "offers no target"), then the server serves the older
   timestamp.json saved before the last release.
   "metadata is older than what the Box already trusts, or versions do not match (rollback or
   mix-and-match): New timestamp version ... must be >= N"
5. freeze, an expired timestamp (test_an_expired_timestamp_is_refused): a new timestamp version
   re-signed with the online timestamp key, expired an hour ago.
   "metadata has expired (the repository is frozen or the Box's clock is wrong): timestamp.json is
   expired"
6. mix-and-match (test_mix_and_match_is_refused): the snapshot names targets version N; the
   server's N.targets.json is version N-1.
   "metadata is older than what the Box already trusts, or versions do not match (rollback or
   mix-and-match): Expected targets vN, got vN-1."
7. a root under the threshold (test_a_root_signed_under_the_threshold_is_refused): root N+1, with
   an attacker's targets key, signed by 1 root key (the threshold is 2).
   "metadata is not signed by enough trusted keys (forged, or from a malicious mirror): root was
   signed by 1/2 keys"
8. a malicious mirror (test_a_malicious_mirror_is_refused): the served metadata and targets
   replaced by another repository (cloud.tufrepo.init_repository, other keys) holding a release
   of the same name.
   "metadata is not signed by enough trusted keys (forged, or from a malicious mirror): timestamp
   was signed by 0/1 keys"

A downgrade instruction is refused in tests/integration/test_ota_update.py.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import Signer
from tuf.api.metadata import Root, Targets, Timestamp

import boxd
from boxkit.machine import hardware_id
from cloud import tufrepo as repo
from cloud.platform import Cloud
from cloud.tufrepo import _meta as repo_meta
from ota import slots
from tests.support.otakit import HEAD, LaunchedBox, publish
from tests.support.simthread import SimThread

FACTORY = boxd.__version__
HW = hardware_id()


@pytest.fixture(scope="module")
def building() -> Iterator[SimThread]:
    with SimThread(update_interval_s=0.2) as s:
        yield s


@pytest.fixture(scope="module")
def box(cloud: Cloud, building: SimThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedBox]:
    """One Box for every attack (each leaves it as it was: factory software, nothing installed)."""
    b = LaunchedBox(cloud, tmp_path_factory.mktemp("attacked"), "OTA-ATTACKED", HEAD + building.sim.points_toml(0.5))
    try:
        b.wait_running(FACTORY)
        yield b
    finally:
        b.stop()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


# -- the served repository, kept aside and put back -------------------------------------------


@pytest.fixture
def served(cloud: Cloud, tmp_path: Path) -> Iterator[Callable[[], None]]:
    """`served()` keeps the served repository aside (call it once the good state is published); it is
    put back after the test. Meanwhile the cloud's scheduled renewal of expiring metadata is held:
    an attacker's mirror would not re-sign anything (and it must not write over a staged attack)."""
    saved = tmp_path / "good-repo"
    check_s = cloud.tuf_renew_check_s

    def keep() -> None:
        for sub in ("metadata", "targets"):
            shutil.copytree(cloud.ota_repo / sub, saved / sub)

    cloud.tuf_renew_check_s = float("inf")
    try:
        yield keep
    finally:
        if saved.exists():
            for sub in ("metadata", "targets"):
                live, good = cloud.ota_repo / sub, saved / sub
                for p in live.iterdir():
                    if p.is_file() and not (good / p.name).exists():
                        p.unlink()
                for p in good.iterdir():
                    if not (live / p.name).exists() or (live / p.name).read_bytes() != p.read_bytes():
                        shutil.copyfile(p, live / p.name)
        cloud.tuf_renew_check_s = check_s


def _served_target(cloud: Cloud, release: Path) -> Path:
    digest = hashlib.sha256(release.read_bytes()).hexdigest()
    path = cloud.ota_repo / "targets" / f"{digest}.{release.name}"
    assert path.is_file()
    return path


def _online(cloud: Cloud, role: str) -> list[Signer]:
    root = repo.load(cloud.ota_repo, "root", Root).signed
    return repo.role_signers(cloud.ota_keys, root, role)


# -- the Box's side ---------------------------------------------------------------------------


def _outcome(box: LaunchedBox, deployment: str, target: str, version: str,
             timeout: float = 60) -> tuple[str, str]:
    """Send the platform's `update` command; the Box's outcome (state, detail)."""
    reply = box.send_update(deployment, target, version)
    assert reply["status"] == "ok", reply
    return box.outcome(deployment, timeout)


def _refused(box: LaunchedBox, deployment: str, release: Path, version: str) -> str:
    """The update of `release` is refused and nothing is installed; returns the Box's detail."""
    state, detail = _outcome(box, deployment, release.name, version)
    assert state == "failed" and "nothing installed" in detail, (state, detail)
    assert box.releases() == []
    assert box.slot().active == slots.FACTORY and box.slot().trial is None
    assert not list((box.state / "ota" / "downloads").iterdir())
    assert box.running() == FACTORY, box.text()[-3000:]
    return detail


TAMPERED = "does not match the length or hash in the signed metadata (tampered or mixed versions)"
ENDLESS = "the server sent more data than the signed metadata allows (endless data)"
ROLLBACK = ("metadata is older than what the Box already trusts, or versions do not match "
            "(rollback or mix-and-match)")
FROZEN = "metadata has expired (the repository is frozen or the Box's clock is wrong)"
FORGED = "metadata is not signed by enough trusted keys (forged, or from a malicious mirror)"


# -- the attacks --------------------------------------------------------------------------------


def test_a_tampered_target_is_refused(cloud: Cloud, box: LaunchedBox, served: Callable[[], None],
                                      out: Path) -> None:
    release = publish(cloud, out, "0.2.0")
    served()
    path = _served_target(cloud, release)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, one byte changed
    path.write_bytes(bytes(data))

    detail = _refused(box, "a-tampered", release, "0.2.0")
    assert TAMPERED in detail and "Observed hash" in detail, detail


def test_a_target_of_the_wrong_length_is_refused(cloud: Cloud, box: LaunchedBox, served: Callable[[], None],
                                                 out: Path) -> None:
    release = publish(cloud, out, "0.3.0")
    served()
    path = _served_target(cloud, release)
    path.write_bytes(path.read_bytes()[:-1000])  # truncated: served whole, with its own Content-Length

    detail = _refused(box, "a-short", release, "0.3.0")
    assert TAMPERED in detail and "Observed length" in detail, detail


def test_endless_data_is_refused(cloud: Cloud, box: LaunchedBox, served: Callable[[], None], out: Path) -> None:
    release = publish(cloud, out, "0.4.0")
    served()
    path = _served_target(cloud, release)
    path.write_bytes(path.read_bytes() + b"\0" * (2 << 20))  # far more than the signed length

    detail = _refused(box, "a-endless", release, "0.4.0")
    assert ENDLESS in detail, detail


def test_metadata_rolled_back_is_refused(cloud: Cloud, box: LaunchedBox, served: Callable[[], None],
                                         out: Path, tmp_path: Path) -> None:
    older = (cloud.ota_repo / "metadata" / "timestamp.json").read_bytes()
    release = publish(cloud, out, "0.5.0")
    served()
    # The Box refreshes its metadata (the newest timestamp and snapshot) asking for a target the
    # repository does not hold ...
    state, detail = _outcome(box, "a-look", "boxd-9.9.9.tar.gz", "9.9.9")
    assert state == "failed" and "offers no target" in detail, detail
    newest = repo.load(cloud.ota_repo, "timestamp", Timestamp).signed.version
    assert (box.state / "ota" / "metadata" / "timestamp.json").read_bytes() == (
        cloud.ota_repo / "metadata" / "timestamp.json").read_bytes()
    # ... then a mirror serves the timestamp it saw before the release.
    (cloud.ota_repo / "metadata" / "timestamp.json").write_bytes(older)

    detail = _refused(box, "a-rollback", release, "0.5.0")
    assert ROLLBACK in detail and f">= {newest}" in detail, detail


def test_an_expired_timestamp_is_refused(cloud: Cloud, box: LaunchedBox, served: Callable[[], None],
                                         out: Path) -> None:
    release = publish(cloud, out, "0.6.0")
    served()
    # A frozen repository: a timestamp signed by the right (online) key, but out of date.
    ts = repo.load(cloud.ota_repo, "timestamp", Timestamp)
    ts.signed.version += 1
    ts.signed.expires = repo_meta._now() - timedelta(hours=1)
    repo.sign_and_write(cloud.ota_repo, ts, _online(cloud, "timestamp"))

    detail = _refused(box, "a-frozen", release, "0.6.0")
    assert FROZEN in detail and "timestamp.json is expired" in detail, detail


def test_mix_and_match_is_refused(cloud: Cloud, box: LaunchedBox, served: Callable[[], None], out: Path) -> None:
    release = publish(cloud, out, "0.7.0")  # targets N, which the Box has not seen yet
    served()
    meta = cloud.ota_repo / "metadata"
    newest = repo.load(cloud.ota_repo, "targets", Targets).signed.version
    # the snapshot names targets version N; the server gives version N-1's targets under that name
    shutil.copyfile(meta / f"{newest - 1}.targets.json", meta / f"{newest}.targets.json")

    detail = _refused(box, "a-mixed", release, "0.7.0")
    assert ROLLBACK in detail and f"Expected targets v{newest}, got v{newest - 1}" in detail, detail


def test_a_root_signed_under_the_threshold_is_refused(cloud: Cloud, box: LaunchedBox,
                                                      served: Callable[[], None], out: Path,
                                                      tmp_path: Path) -> None:
    release = publish(cloud, out, "0.8.0")
    served()
    # An attacker holding one root key (the threshold is 2) makes the next root, with a targets
    # key of its own.
    root_md = repo.load(cloud.ota_repo, "root", Root)
    root = root_md.signed
    one = repo.role_signers(cloud.ota_keys, root, "root")[:1]
    assert root.roles["root"].threshold == 2 and len(one) == 1
    root.revoke_key(root.roles["targets"].keyids[0], "targets")
    root.add_key(repo_meta._new_key(tmp_path / "evil-keys", "targets"), "targets")
    root.version += 1
    repo.sign_and_write(cloud.ota_repo, root_md, one)
    assert (cloud.ota_repo / "metadata" / f"{root.version}.root.json").is_file()

    detail = _refused(box, "a-root", release, "0.8.0")
    assert FORGED in detail and "root" in detail.split(FORGED)[1], detail


def test_a_malicious_mirror_is_refused(cloud: Cloud, box: LaunchedBox, served: Callable[[], None], out: Path,
                                      tmp_path: Path) -> None:
    release = publish(cloud, out, "0.9.0")
    served()
    # Another repository, same layout, other keys, a release of the same name (and a higher version).
    rogue = tmp_path / "rogue"
    repo.init_repository(rogue / "repo", rogue / "keys")
    evil = rogue / release.name
    evil.write_bytes(b"evil" * 4096)
    repo.publish_release(rogue / "repo", rogue / "keys", evil, "9.9.9", [HW])
    for sub in ("metadata", "targets"):
        for p in (cloud.ota_repo / sub).iterdir():
            if p.is_file():
                p.unlink()
        for p in (rogue / "repo" / sub).iterdir():
            shutil.copyfile(p, cloud.ota_repo / sub / p.name)

    detail = _refused(box, "a-mirror", release, "0.9.0")
    assert FORGED in detail and "timestamp" in detail.split(FORGED)[1], detail


def test_after_every_attack_the_box_takes_a_good_release(cloud: Cloud, box: LaunchedBox, out: Path) -> None:
    """The repository was put back each time and the Box's trust was not spoilt: a real release is taken."""
    release = publish(cloud, out, "0.10.0")
    state, detail = _outcome(box, "a-good", release.name, "0.10.0", timeout=120)
    assert state == "committed", (state, detail, box.events())
    box.wait_committed("0.10.0")
    assert box.releases() == ["0.10.0"] and box.slot().previous == slots.FACTORY
