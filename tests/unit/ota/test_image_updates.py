"""Image updates on a Box image, the parts that run without a VM: what the daemon reports at start
after the installer's reboot (committed trial, rollback and why, an install that failed), the
installer's checks of its request and of the bundle (image/scripts/install.py), and the image
release the platform builds (cloud/image_release.py). The whole path runs in tests/hil (vm)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import tarfile
import threading
import time
from pathlib import Path

import pytest

from boxd import updates
from boxd.supervisor import Supervisor
from cloud import image_release
from cloud.release import ReleaseError
from ota import image
from proto.commands import Update
from proto.uplink import OtaEvent
from tests.support import imagescripts

install = imagescripts.load("install")


def _agent(state: Path, running: str, events: list[OtaEvent]) -> updates.UpdateAgent:
    return updates.UpdateAgent(state, running, events.append, Supervisor(), launched=False, hardware="generic-test",
                               on_image=True, install_poll_s=0.01)


def _pending(state: Path, version: str = "9.0.1", entry: str = "box-b+3.conf") -> None:
    (state / "boot").mkdir(parents=True, exist_ok=True)
    (state / image.PENDING).write_text(json.dumps({"deployment": "d-1", "version": version, "slot": "b",
                                                   "entry": entry, "previous": "0.1.0", "trial_s": 120}))


# -- the daemon at start ------------------------------------------------------------------------------

def test_the_new_release_booted_is_on_trial_and_commits_once_healthy(tmp_path: Path) -> None:
    _pending(tmp_path)
    events: list[OtaEvent] = []
    a = _agent(tmp_path, "9.0.1", events)
    a.at_start(lambda: "")
    assert events == [] and a.trial is not None and (a.trial.version, a.trial.health_s) == ("9.0.1", 120)
    asyncio.run(a.watch_trial(lambda: ""))
    assert [(e.deployment, e.version, e.state) for e in events] == [("d-1", "9.0.1", "committed")]
    assert not (tmp_path / image.PENDING).exists()


def test_a_fall_back_is_reported_rolled_back_with_the_boot_checks_reason(tmp_path: Path) -> None:
    _pending(tmp_path, "9.0.2", "box-a+1.conf")
    (tmp_path / image.TRIAL_FAILED).write_text(json.dumps({"entry": "box-a+1.conf", "reason": "boxd is not running",
                                                           "trial_s": 30}))
    events: list[OtaEvent] = []
    a = _agent(tmp_path, "9.0.1", events)  # the boot loader fell back: the old release runs
    a.at_start(lambda: "")
    assert [(e.version, e.state) for e in events] == [("9.0.2", "rolled_back")] and a.trial is None
    assert events[0].detail == "the boot trial of 9.0.2 failed: boxd is not running"
    assert not (tmp_path / image.PENDING).exists() and not (tmp_path / image.TRIAL_FAILED).exists()


def test_a_release_that_never_reached_its_boot_check_is_reported_rolled_back(tmp_path: Path) -> None:
    _pending(tmp_path, "9.0.2", "box-a+3.conf")  # e.g. its kernel panicked on every try
    events: list[OtaEvent] = []
    _agent(tmp_path, "9.0.1", events).at_start(lambda: "")
    assert [e.state for e in events] == ["rolled_back"] and "never completed a boot" in events[0].detail


def test_an_install_the_installer_refused_is_reported_failed_and_nothing_switches(tmp_path: Path) -> None:
    bundle = tmp_path / "ota" / "downloads" / "box-image-9.0.1.tar"
    bundle.parent.mkdir(parents=True)
    bundle.write_bytes(b"verified by TUF")
    events: list[OtaEvent] = []
    a = _agent(tmp_path, "0.1.0", events)

    async def run() -> None:
        job = updates._Job("d-1", "9.0.1", threading.Event())
        task = asyncio.create_task(a._install_image(job, bundle, 120))
        req = tmp_path / image.REQUEST
        while not req.exists():  # noqa: ASYNC110 - a file; the request is made, now the installer answers
            await asyncio.sleep(0.01)
        assert json.loads(req.read_text()) == {"deployment": "d-1", "version": "9.0.1", "bundle": str(bundle),
                                               "trial_s": 120}
        (tmp_path / image.FAILED).write_text(json.dumps({"deployment": "d-1", "version": "9.0.1",
                                                         "reason": "the root image written is not the manifest's"}))
        await asyncio.wait_for(task, 10)
    asyncio.run(run())
    assert [e.state for e in events] == ["installing", "failed"]
    assert events[1].detail.startswith("the root image written is not the manifest's; 0.1.0 keeps running")


def test_a_daemon_restarted_while_the_installer_writes_the_slot_does_not_call_the_update_failed(
        tmp_path: Path) -> None:
    # the update's job and the installer's request are on disk: then boxd was restarted (the watchdog
    # of a starved machine, a crash) while the installer, another unit, went on writing the other slot
    (tmp_path / "ota").mkdir()
    (tmp_path / "ota" / updates.JOB_FILE).write_text(json.dumps({"deployment": "d-1", "version": "9.0.1"}))
    image.request_install(tmp_path, "d-1", "9.0.1", tmp_path / "ota" / "downloads" / "b.tar", 120)
    events: list[OtaEvent] = []
    sup = Supervisor()
    a = updates.UpdateAgent(tmp_path, "0.1.0", events.append, sup, launched=False, hardware="generic-test",
                            on_image=True, install_poll_s=0.01)
    a.at_start(lambda: "")
    assert [(e.state, e.detail) for e in events] == [  # not failed: the installer's reboot or failure decides
        ("installing", "the Box or boxd restarted before the installer began writing 9.0.1: it writes it now, "
                       "then reboots on trial")] and a.past_no_return
    events.clear()

    async def run() -> None:
        task = asyncio.create_task(sup.run())
        (tmp_path / image.FAILED).write_text(json.dumps({"deployment": "d-1", "version": "9.0.1",
                                                         "reason": "the slot could not be written"}))
        while not events:  # noqa: ASYNC110 - the agent's job polls the installer's file
            await asyncio.sleep(0.01)
        task.cancel()
    asyncio.run(run())
    assert [(e.deployment, e.state) for e in events] == [("d-1", "failed")]
    assert events[0].detail == "the slot could not be written; 0.1.0 keeps running" and not a.past_no_return


@pytest.mark.parametrize(("boot", "says"), [
    ("boot-1", "boxd restarted while the installer writes 9.0.1 into slot B (25 % written): the install goes on"),
    ("boot-2", "the Box lost power or was reset with 25 % of 9.0.1 written into slot B: the installer writes it "
               "again from the start, then reboots on trial")])
def test_an_install_cut_short_is_reported_with_how_far_it_got(tmp_path: Path, boot: str, says: str) -> None:
    (tmp_path / "ota").mkdir()
    image.request_install(tmp_path, "d-1", "9.0.1", tmp_path / "ota" / "downloads" / "b.tar", 120)
    (tmp_path / image.PROGRESS).write_text(json.dumps({"deployment": "d-1", "version": "9.0.1", "slot": "b",
                                                       "written": 100, "size": 400, "boot_id": "boot-1"}))
    assert image.interrupted_install(tmp_path, "9.0.1", boot) == says
    # the installer started over in this boot before boxd started: its record keeps the cut write's
    (tmp_path / image.PROGRESS).write_text(json.dumps({
        "deployment": "d-1", "version": "9.0.1", "slot": "b", "written": 0, "size": 400, "boot_id": "boot-2",
        "cut": {"written": 100, "size": 400, "boot_id": "boot-1"}}))
    assert image.interrupted_install(tmp_path, "9.0.1", "boot-2").startswith(
        "the Box lost power or was reset with 25 % of 9.0.1 written into slot B: the installer writes it again")
    (tmp_path / image.PROGRESS).write_text("{")  # unreadable: as good as none
    assert image.interrupted_install(tmp_path, "9.0.1", boot).startswith("the Box or boxd restarted before")


def test_an_update_is_accepted_on_a_box_image(tmp_path: Path) -> None:
    events: list[OtaEvent] = []

    a = _agent(tmp_path, "0.1.0", events)  # not started by 'boxd launch': the image's installer switches
    detail = a.start(Update("c-1", time.time() + 60, "d-1", "box-image-9.0.1.tar", "9.0.1", 60))
    assert detail.startswith("updating to 9.0.1") and a._job is not None and a._job.version == "9.0.1"


# -- the installer's checks ----------------------------------------------------------------------------

def _bundle(root: bytes, version: str = "9.0.1", **manifest: object) -> tarfile.TarFile:
    doc = {"format": 1, "name": "box-image", "version": version, "hardware": ["x"], "boot_tries": 3,
           "root": {"size": len(root), "sha256": hashlib.sha256(root).hexdigest()}, **manifest}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("manifest.json", json.dumps(doc).encode()), ("root.img.gz", gzip.compress(root))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return tarfile.open(fileobj=buf, mode="r:")


def test_the_installer_checks_its_request() -> None:
    good = {"deployment": "d-1", "version": "9.0.1", "bundle": f"{install.DOWNLOADS}/box-image-9.0.1.tar",
            "trial_s": 120}
    assert install.read_request(json.dumps(good).encode())["bundle"] == install.DOWNLOADS / "box-image-9.0.1.tar"
    for bad, why in (({"bundle": "/etc/shadow"}, "must be a file of"), ({"bundle": f"{install.DOWNLOADS}/../x"},
                     "must be a file of"), ({"trial_s": 5}, "10..86400"), ({"trial_s": True}, "10..86400"),
                     ({"version": "latest"}, "bad version"), ({"deployment": "../d"}, "bad deployment")):
        with pytest.raises(install.InstallError, match=why):
            install.read_request(json.dumps({**good, **bad}).encode())
    with pytest.raises(install.InstallError, match="not JSON"):
        install.read_request(b"{")


def test_the_installer_writes_only_a_root_image_that_matches_its_manifest(tmp_path: Path) -> None:
    root = b"ext4" * 5000
    device = tmp_path / "slot"
    device.write_bytes(b"\0" * 40000)
    manifest, member = install.read_manifest(_bundle(root), "9.0.1", 40000)
    assert manifest == {"size": len(root), "sha256": hashlib.sha256(root).hexdigest(), "tries": 3}
    tar = _bundle(root)
    m, member = install.read_manifest(tar, "9.0.1", 40000)
    src = tar.extractfile(member)
    assert src is not None
    install.write_slot(src, device, m["size"], m["sha256"])
    assert device.read_bytes()[:len(root)] == root
    tar = _bundle(root)
    m, member = install.read_manifest(tar, "9.0.1", 40000)
    src = tar.extractfile(member)
    assert src is not None
    with pytest.raises(install.InstallError, match="is not the manifest's"):
        install.write_slot(src, device, m["size"], "0" * 64)  # corrupted on the way, or a lying manifest
    for bundle, slot, version, why in ((_bundle(root), 100, "9.0.1", "does not fit the slot"),
                                       (_bundle(root), 40000, "9.0.2", "the update says 9.0.2"),
                                       (_bundle(root, boot_tries=9), 40000, "9.0.1", "boot_tries must be 1..5"),
                                       (_bundle(root, name="boxd"), 40000, "9.0.1", "not an image release")):
        with pytest.raises(install.InstallError, match=why):
            install.read_manifest(bundle, version, slot)


def test_the_installer_says_how_far_it_got_and_whether_an_earlier_boot_cut_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = bytes(range(256)) * 4096  # 1 MiB: four chunks of the installer's
    tar = _bundle(root)
    m, member = install.read_manifest(tar, "9.0.1", len(root))
    src = tar.extractfile(member)
    assert src is not None
    device = tmp_path / "slot"
    device.write_bytes(b"\0" * len(root))
    seen: list[int] = []
    monkeypatch.setattr(install, "CHUNK", len(root) // 8)
    install.write_slot(src, device, m["size"], m["sha256"], seen.append)
    assert seen == [0, len(root) // 4, len(root) // 2, 3 * len(root) // 4]  # the start and each quarter
    req = {"deployment": "d-1", "version": "9.0.1"}
    earlier = {"deployment": "d-1", "version": "9.0.1", "slot": "b", "written": 300, "size": 400, "boot_id": "boot-1"}
    assert install.cut_short(earlier, req, "boot-2") == (
        "the install of 9.0.1 into slot B was cut with 75 % written (a power loss or a reset): writing it again "
        "from the start")
    assert install.cut_short(earlier, req, "boot-1") is None  # this boot's own record
    assert install.cut_short(earlier, {**req, "deployment": "d-2"}, "boot-2") is None  # another update's
    assert install.cut_short(None, req, "boot-2") is None


def test_the_installer_targets_the_slot_that_does_not_run() -> None:
    layout = {"cmdline": "ro console=ttyS0", "partitions": {"root-a": {"partuuid": "aaaa", "size_mib": 640},
                                                            "root-b": {"partuuid": "bbbb", "size_mib": 640}}}
    assert install.slots(layout, "root=PARTUUID=aaaa ro") == ("a", "b")
    assert install.slots(layout, "root=PARTUUID=BBBB ro") == ("b", "a")
    with pytest.raises(install.InstallError, match="not a slot"):
        install.slots(layout, "root=/dev/sda1")
    entry = install.entry(layout, "b", "9.0.1", 120)
    assert "version 9.0.1\n" in entry and "options root=PARTUUID=bbbb ro console=ttyS0 boxd.trial_s=120\n" in entry


# -- the platform's image release ------------------------------------------------------------------------

def test_an_image_release_carries_the_root_image_and_its_hash(tmp_path: Path) -> None:
    root = tmp_path / "root.img"
    root.write_bytes(b"\0" * 100000 + b"ext4")
    built = image_release.build_image(root, tmp_path / "out", "9.0.1", ["box-a1"], boot_tries=2)
    assert image_release.is_image_release(built)
    assert image_release.read_manifest(built) == ("9.0.1", ["box-a1"])
    with tarfile.open(built, "r:") as tar:
        m, _ = install.read_manifest(tar, "9.0.1", 200000)  # what the Box reads
    assert m == {"size": 100004, "sha256": hashlib.sha256(root.read_bytes()).hexdigest(), "tries": 2}
    with pytest.raises(ReleaseError, match=r"must look like 1\.2\.3"):
        image_release.build_image(root, tmp_path / "out", "latest", ["box-a1"])
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    with pytest.raises(ReleaseError, match="not a readable image release"):
        image_release.read_manifest(tmp_path / "junk.tar")
