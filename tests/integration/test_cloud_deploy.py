"""Deployments against a running cloud: `boxcloud release/deploy/box tag` through `cloud.cli.main`,
simulated Boxes that are real mTLS MQTT clients with provisioned identities (they receive their
`update` on boxes/<id>/down/cmd and answer with `ota` events on boxes/<id>/up/events), waves,
the halt, the emergency stop, and the scheduled TUF renewal.

The Boxes here play the contract by hand (the daemon's own OTA agent is tested end to end
elsewhere); the cloud, the broker, its ACL and the TUF repository are real.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
from tuf.api.metadata import Timestamp

from boxd import downlink
from cloud import tufrepo as repository
from cloud.cli import main as boxcloud
from cloud.platform import Cloud
from ota import client
from proto import topics
from proto.commands import Command
from proto.replies import reply
from proto.topics import Down, Up
from proto.wire import encode_doc
from tests.support.cloudkit import Client, mqtt_client, provision
from tests.support.wait import wait_for

VERSION = "1.2.0"


class SimBox:
    """A provisioned Box as an MQTT client: records its commands, publishes ota events."""

    def __init__(self, cloud: Cloud, tmp_path: Path, serial: str) -> None:
        ident = provision(cloud, tmp_path / serial, serial)
        self.box_id = ident.box_id
        self.mqtt: Client = mqtt_client(cloud, ident.box_id, ident.cert_file, ident.key_file)
        wait_for(self.mqtt.connected.is_set, 10, f"{serial} to connect")
        self.mqtt.client.subscribe(topics.down(ident.box_id, Down.CMD), 1)
        wait_for(lambda: self.mqtt.subacks, 10, f"{serial}'s subscription")

    def commands(self) -> list[Command]:
        out = []
        for topic, payload in list(self.mqtt.messages):
            if topics.parse(topic).leaf == Down.CMD:
                cmd = downlink.decode("cmd", payload)
                assert isinstance(cmd, Command)
                out.append(cmd)
        return out

    def wait_command(self, name: str, what: str) -> Command:
        """Wait (15 s) for a command called `name`; the first one received."""
        return wait_for(lambda: [c for c in self.commands() if c.name == name], 15, what)[0]

    def names(self) -> list[str]:
        return [c.name for c in self.commands()]

    def update(self) -> Command:
        """Wait for the update command and accept it (the reply is not the result)."""
        cmd = self.wait_command("update", f"{self.box_id}'s update command")
        self.mqtt.client.publish(topics.up(self.box_id, Up.REPLIES), reply(cmd.id, "ok"), 1)
        return cmd

    def event(self, deployment: str, state: str, detail: str = "", **extra: object) -> None:
        doc: dict[str, object] = {"v": 1, "kind": "ota", "ts": int(time.time() * 1000), "deployment": deployment,
                                  "version": VERSION, "state": state, "detail": detail, "running": "1.1.0", **extra}
        self.mqtt.client.publish(topics.up(self.box_id, Up.EVENTS), encode_doc(doc), 1)


def _publish(cloud: Cloud, tmp_path: Path) -> str:
    bundle = tmp_path / f"boxd-{VERSION}.tar.gz"
    bundle.write_bytes(b"not a real bundle: the simulated Boxes never download it")
    repository.publish_release(cloud.ota_repo, cloud.ota_keys, bundle, VERSION, ["generic-x86-64"])
    return bundle.name


def _state(cloud: Cloud, dep: str, box_id: str) -> str:
    return next(b.state for b in cloud.store.deployment_boxes(dep) if b.box_id == box_id)


def test_waves_advance_on_the_boxes_events_and_a_failure_halts(fresh_cloud: Cloud, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    cloud, home = fresh_cloud, ["--home", str(fresh_cloud.home)]
    target = _publish(cloud, tmp_path)
    boxes = [SimBox(cloud, tmp_path, f"DEP-{i}") for i in range(4)]
    for b in boxes:
        assert boxcloud([*home, "box", "tag", b.box_id, "site-a"]) == 0
    assert boxcloud([*home, "box", "list"]) == 0
    assert "site-a" in capsys.readouterr().out

    assert boxcloud([*home, "deploy", "create", target, "--tag", "site-a", "--waves", "1,2,100%"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"Deployment (d-[0-9a-f]+)", out)
    assert m, out
    dep = m[1]
    assert "1 + 1 + 2 Box(es)" in out
    first, second, *rest = sorted(boxes, key=lambda b: b.box_id)  # a tag's Boxes go in id order

    cmd = first.update()
    assert cmd.args() == {"deployment": dep, "target": target, "version": VERSION, "health_s": 300}
    first.event(dep, "downloading", progress=0.5)
    first.event(dep, "restarting", "switching to slot b")
    wait_for(lambda: _state(cloud, dep, first.box_id) == "restarting", 10, "the Box's progress")
    assert second.names() == [] and all(b.names() == [] for b in rest)  # wave 1 is not over
    first.event(dep, "committed", "healthy for 300 s")

    second.update()  # wave 2 starts only now
    second.event(dep, "rolled_back", "boxd crashed twice on 1.2.0")
    assert boxcloud([*home, "deploy", "watch", dep, "--timeout", "20"]) == 4
    out = capsys.readouterr().out
    assert f"{second.box_id} rolled_back (boxd crashed twice on 1.2.0)" in out
    assert f"Deployment {dep} halted" in out

    assert boxcloud([*home, "deploy", "show", dep]) == 0
    out = capsys.readouterr().out
    assert "halted" in out and "committed" in out and "LAST EVENT" in out
    assert all(_state(cloud, dep, b.box_id) == "cancelled" for b in rest)  # with the halt, in one transaction
    assert all(b.names() == [] for b in rest)  # the rest was never sent the update
    assert boxcloud([*home, "deploy", "list"]) == 0
    assert dep in capsys.readouterr().out

    # a Box in a running deployment cannot be in another; an ended one does not count
    assert boxcloud([*home, "deploy", "create", VERSION, "--box", rest[0].box_id, "--box", rest[1].box_id,
                     "--waves", "100%"]) == 0
    dep2 = re.search(r"Deployment (d-[0-9a-f]+)", capsys.readouterr().out)[1]  # type: ignore[index]
    assert boxcloud([*home, "deploy", "create", target, "--box", rest[0].box_id]) == 1
    assert "already in a running deployment" in capsys.readouterr().err

    # the emergency stop: both were sent the update; the one downloading is told to abort, and says so
    for b in rest:
        b.update()
    rest[0].event(dep2, "downloading", progress=0.1)
    wait_for(lambda: _state(cloud, dep2, rest[0].box_id) == "downloading", 10, "the download")
    assert boxcloud([*home, "deploy", "stop", dep2, "--reason", "bad build"]) == 0
    assert "stopped (bad build)" in capsys.readouterr().out
    assert boxcloud([*home, "deploy", "stop", dep2, "--reason", "twice"]) == 0  # ended: said in words, nothing done
    assert f"Deployment {dep2} had already ended: stopped (bad build); nothing changed" in capsys.readouterr().out
    for b in rest:
        abort = b.wait_command("update_abort", f"{b.box_id}'s update_abort")
        assert abort.args() == {"deployment": dep2}
    rest[0].event(dep2, "aborted", "aborted the download of " + target)
    wait_for(lambda: _state(cloud, dep2, rest[0].box_id) == "aborted", 10, "the abort")
    assert boxcloud([*home, "deploy", "watch", dep2, "--timeout", "5"]) == 4
    assert cloud.deployment(dep2).status == "stopped"
    for b in boxes:
        b.mqtt.close()


def test_watch_exits_0_when_every_box_committed(fresh_cloud: Cloud, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cloud, home = fresh_cloud, ["--home", str(fresh_cloud.home)]
    target = _publish(cloud, tmp_path)
    box = SimBox(cloud, tmp_path, "DONE-1")
    assert boxcloud([*home, "deploy", "create", target, "--version", VERSION, "--box", box.box_id]) == 0
    dep = cloud.deployments()[0].id
    box.update()
    box.event(dep, "committed", f"already running {VERSION}")
    assert boxcloud([*home, "deploy", "watch", dep, "--timeout", "20"]) == 0
    out = capsys.readouterr().out
    assert f"Deployment {dep} completed: 1 of 1 Box(es) committed" in out
    box.mqtt.close()


def test_the_running_cloud_renews_the_timestamp_before_it_expires(fresh_cloud: Cloud) -> None:
    cloud = fresh_cloud
    before = repository.load(cloud.ota_repo, "timestamp", Timestamp).signed.version
    assert cloud.renew_tuf_metadata(time.time()) == []  # fresh: nothing due
    cloud.clock = lambda: time.time() + 13 * 3600  # 11 of its 24 hours left
    cloud.tuf_renew_check_s = 0
    wait_for(lambda: repository.load(cloud.ota_repo, "timestamp", Timestamp).signed.version > before, 15,
             "a renewed timestamp")
    assert repository.expiries(cloud.ota_repo)["timestamp"].timestamp() > time.time() + 36 * 3600


def test_release_build_publish_and_list(fresh_cloud: Cloud, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(fresh_cloud.home)]
    bundle = tmp_path / "boxd-2.0.0.tar.gz"
    assert boxcloud([*home, "release", "build", "--version", "2.0.0", "--hardware", "box-a1", "-o", str(bundle)]) == 0
    assert bundle.exists()
    assert boxcloud([*home, "release", "publish", str(bundle)]) == 0
    assert "version 2.0.0 for box-a1" in capsys.readouterr().out
    assert boxcloud([*home, "release", "publish", str(bundle)]) == 1  # the same version again
    assert "not greater" in capsys.readouterr().err
    assert boxcloud([*home, "release", "list"]) == 0
    out = capsys.readouterr().out
    assert "boxd-2.0.0.tar.gz" in out and "box-a1" in out and "timestamp" in out


def test_watch_of_an_unknown_deployment_is_an_error(fresh_cloud: Cloud, capsys: pytest.CaptureFixture[str]) -> None:
    assert boxcloud(["--home", str(fresh_cloud.home), "deploy", "watch", "d-nothere", "--timeout", "1"]) == 1
    assert "no deployment 'd-nothere'" in capsys.readouterr().err




def test_a_rotated_key_is_followed_by_a_box_and_needs_the_offline_root_keys(
        fresh_cloud: Cloud, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(fresh_cloud.home)]
    state = tmp_path / "box"
    ident = provision(fresh_cloud, state, "ROTATE-1")
    (state / "ota").mkdir()
    shutil.copyfile(fresh_cloud.ota_repo / "metadata" / "1.root.json", state / "ota" / "root.json")  # the image's
    target = _publish(fresh_cloud, tmp_path)
    url = f"https://localhost:{fresh_cloud.settings.enroll_port}"
    assert client.check_for_update(state, url, "0.0.1", "generic-x86-64", target, ident=ident) is not None

    for role in ("targets", "timestamp", "root"):
        assert boxcloud([*home, "release", "rotate-key", role]) == 0
        assert f"The {role} role now uses key" in capsys.readouterr().out
    # The Box walks from the root of its image to the new one and verifies the release with the new keys.
    release = client.check_for_update(state, url, "0.0.1", "generic-x86-64", target, ident=ident)
    assert release is not None and release.name == target
    assert len(list((fresh_cloud.ota_keys / "retired").iterdir())) == 3

    offline = fresh_cloud.ota_keys / "offline"
    offline.rename(tmp_path / "usb-stick")  # the root keys live offline
    assert boxcloud([*home, "release", "rotate-key", "snapshot"]) == 1
    assert "cannot rotate the snapshot key" in capsys.readouterr().err
