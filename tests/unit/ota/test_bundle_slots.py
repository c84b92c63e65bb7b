"""Bundles as untrusted input, and the A/B slot state through updates, rollbacks and power cuts
(no network: the launcher's decisions are checked on its state file)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from cloud import release
from ota import bundle, launcher, slots
from ota.errors import SlotError
from ota.launcher import Launcher
from proto.release import MANIFEST

SOURCE = Path(__file__).resolve().parents[3]
HW = "generic-test"


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release.build(SOURCE, tmp_path_factory.mktemp("b"), "1.2.0", [HW])


def _tar(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], manifest: dict[str, object]) -> Path:
    out = tmp_path / "evil.tar.gz"
    with out.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for info, content in members:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return out


def _manifest(files: dict[str, bytes]) -> dict[str, object]:
    return {"format": 1, "name": "boxd", "version": "1.2.0", "hardware": [HW],
            "files": {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}}


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_a_bundle_is_reproducible_and_unpacks_to_what_its_manifest_lists(good: Path, tmp_path: Path) -> None:
    again = release.build(SOURCE, tmp_path, "1.2.0", [HW])
    assert again.read_bytes() == good.read_bytes()  # same tree, same bytes: a release can be rebuilt and checked
    m = bundle.read_manifest(good)
    assert m.version == "1.2.0" and m.hardware == (HW,) and "boxd/__init__.py" in m.files
    assert not any("__pycache__" in f for f in m.files)
    bundle.extract(good, tmp_path / "x")
    assert bundle.verify(tmp_path / "x") == m
    assert '__version__ = "1.2.0"' in (tmp_path / "x" / "boxd" / "__init__.py").read_text()


@pytest.mark.parametrize(("case", "expected"), [
    ("traversal", "not an acceptable file name"),
    ("absolute", "outside payload/"),
    ("symlink", "links refused"),
    ("unlisted", "not in its manifest"),
    ("lying", "does not match the manifest"),
    ("missing", "missing from the bundle"),
])
def test_a_hostile_bundle_is_refused_and_leaves_nothing(tmp_path: Path, case: str, expected: str) -> None:
    files = {"boxd/__init__.py": b'__version__ = "1.2.0"\n', "boxd/daemon.py": b"pass\n"}
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [_file(f"payload/{k}", v) for k, v in files.items()]
    if case == "traversal":
        members.append(_file("payload/../../etc/cron.d/evil", b"* * * * * root sh\n"))
    elif case == "absolute":
        members.append(_file("/etc/passwd", b"x"))
    elif case == "symlink":
        link = tarfile.TarInfo("payload/boxd/link.py")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        members.append((link, None))
    elif case == "unlisted":
        members.append(_file("payload/boxd/extra.py", b"import os\n"))
    elif case == "lying":
        members[1] = _file("payload/boxd/daemon.py", b"import os; os.system('sh')\n")
    elif case == "missing":
        members.pop()
    evil = _tar(tmp_path, members, _manifest(files))
    with pytest.raises(bundle.BundleError, match=expected):
        bundle.extract(evil, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


# ids: the same on every xdist worker (a gzip stream carries the time it was made)
@pytest.mark.parametrize("raw", [b"", b"not gzip", gzip.compress(b"not a tar")],
                         ids=["empty", "not gzip", "gzip of no tar"])
def test_something_that_is_not_a_bundle_is_refused_in_words(tmp_path: Path, raw: bytes) -> None:
    p = tmp_path / "junk.tar.gz"
    p.write_bytes(raw)
    with pytest.raises(bundle.BundleError, match="not a readable bundle"):
        bundle.read_manifest(p)


def test_install_switch_and_commit_keep_the_previous_version(good: Path, tmp_path: Path) -> None:
    sw = tmp_path / "sw"
    assert slots.load(sw) == slots.SlotState()  # nothing installed: the factory software
    slots.install(sw, good, "1.2.0", HW)
    state = slots.switch(sw, "1.2.0", "d-1", 60)
    assert state.active == "1.2.0" and state.previous == slots.FACTORY and state.trial is not None
    assert slots.commit(sw) is not None and slots.load(sw).trial is None

    with pytest.raises(SlotError, match="the one running"):
        slots.install(sw, good, "1.2.0", HW)
    other = release.build(SOURCE, tmp_path / "o", "1.3.0", ["other-hw"])
    with pytest.raises(SlotError, match=f"the bundle is for other-hw, this Box is {HW}"):
        slots.install(sw, other, "1.3.0", HW)
    assert sorted(p.name for p in (sw / "releases").iterdir()) == ["1.2.0"]  # no half install left


def test_a_bundle_that_is_not_the_announced_version_is_not_installed(good: Path, tmp_path: Path) -> None:
    with pytest.raises(SlotError, match=r"says it is version 1\.2\.0, the deployment says 1\.3\.0"):
        slots.install(tmp_path / "sw", good, "1.3.0", HW)
    assert list((tmp_path / "sw" / "releases").iterdir()) == []


def _on_trial(good: Path, sw: Path) -> None:
    slots.install(sw, good, "1.2.0", HW)
    slots.switch(sw, "1.2.0", "d-9", 60)


def test_power_cuts_during_the_trial_end_in_a_rollback(good: Path, tmp_path: Path) -> None:
    sw = tmp_path / "sw"
    _on_trial(good, sw)
    for start in range(1, slots.MAX_STARTS + 1):  # each start on trial, in a boot of its own, is counted
        state = Launcher(tmp_path, tmp_path / "boxd.toml", software=sw, boot=f"boot-{start}")._prepare()
        assert state.active == "1.2.0" and state.trial is not None and state.trial.starts == start
    state = Launcher(tmp_path, tmp_path / "boxd.toml", software=sw, boot="boot-9")._prepare()  # cut again: enough
    assert state.active == slots.FACTORY and state.trial is None
    assert state.report == {"deployment": "d-9", "version": "1.2.0", "state": "rolled_back",
                            "detail": f"version 1.2.0 was started {slots.MAX_STARTS} times without becoming healthy"}
    assert not (sw / "releases" / "1.2.0").exists()


def test_a_trial_whose_daemon_stopped_in_this_boot_rolls_back_unless_it_was_a_planned_stop(
        good: Path, tmp_path: Path) -> None:
    sw = tmp_path / "sw"

    def launch() -> slots.SlotState:
        return Launcher(tmp_path, tmp_path / "boxd.toml", software=sw, boot="boot-1")._prepare()

    _on_trial(good, sw)
    assert launch().trial is not None
    launcher.note_exit(sw, "1.2.0", 0, "")  # systemctl restart: a start like any other
    state = launch()
    assert state.active == "1.2.0" and state.trial is not None and state.trial.starts == 2
    launcher.note_exit(sw, "1.2.0", 70, "boxd: unexpected error (RuntimeError: broken)")
    state = launch()
    assert state.active == slots.FACTORY and state.report is not None
    assert state.report["detail"] == ("version 1.2.0 exited with status 70 before it was healthy: "
                                      "boxd: unexpected error (RuntimeError: broken)")
    _on_trial(good, sw)
    launch()
    state = launch()  # killed, a crash in C, the watchdog: no last words
    assert state.active == slots.FACTORY and state.report is not None
    assert "stopped before it was healthy without saying why" in state.report["detail"]


def test_a_release_damaged_on_disk_is_not_started(good: Path, tmp_path: Path) -> None:
    sw = tmp_path / "sw"
    _on_trial(good, sw)
    (sw / "releases" / "1.2.0" / "boxd" / "daemon.py").write_text("corrupted by the flash")
    state = Launcher(tmp_path, tmp_path / "boxd.toml", software=sw)._prepare()
    assert state.active == slots.FACTORY and state.report is not None
    assert "damaged on disk" in state.report["detail"] and "boxd/daemon.py differs" in state.report["detail"]

    slots.install(sw, good, "1.2.0", HW)  # committed releases are checked at each start too
    slots.switch(sw, "1.2.0", "d-10", 60)
    slots.commit(sw)
    (sw / "releases" / "1.2.0" / "boxd" / "__init__.py").unlink()
    state = Launcher(tmp_path, tmp_path / "boxd.toml", software=sw)._prepare()
    assert state.active == slots.FACTORY


def test_an_unreadable_state_file_runs_the_factory_software(tmp_path: Path) -> None:
    sw = tmp_path / "sw"
    sw.mkdir()
    for junk in (b"{", b"[]", b'{"active": "../../bin"}', b'{"active": "1.0.0", "trial": {"version": 1}}'):
        (sw / slots.SLOT_FILE).write_bytes(junk)
        state = slots.load(sw)
        assert state.active == slots.FACTORY and state.problems, junk
