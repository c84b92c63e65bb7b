"""A virtual Box's bench: the reference cloud it trusts, on an address it can reach, and its enrollment.

Shared by the image tests (tests/image) and the HIL suite's `vm` target (tests/hil): both boot the
image under QEMU (`tests.support.qemu.Vm`) against a copy of the development platform the image
trusts (`boximage.vm_platform`), listening on an address of this machine that QEMU's user
networking lets the guest reach (`boximage.host_address`). The Box enrolls at first boot from the
``boxd.enroll`` credential (the key is made inside the VM) and gets its configuration pushed by
the cloud once it is known there (`configure_when_enrolled`).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cloud.platform import Cloud
from tests.support import boximage


@dataclass(frozen=True)
class Bench:
    address: str  # the cloud's (and the host's simulators') address, as the VM reaches it
    cloud: Cloud

    def enroll_credential(self, box_id: str, ttl_s: float = 3600) -> dict[str, str]:
        """The ``boxd.enroll`` system credential of a new Box (a one-time token of the cloud's)."""
        token, _ = self.cloud.add_box(box_id, ttl_s)
        return {"boxd.enroll": json.dumps({"server": f"https://{self.address}:{self.cloud.settings.enroll_port}",
                                           "token": token, "serial": box_id})}


@contextlib.contextmanager
def bench(image: boximage.Image, work: Path) -> Iterator[Bench]:
    """A started reference cloud that a VM booted from `image` trusts and reaches; stopped on exit."""
    with boximage.host_address() as address:
        cloud = boximage.vm_platform(image, work / "cloud", address)
        cloud.start()
        try:
            yield Bench(address, cloud)
        finally:
            cloud.stop()


def configure_when_enrolled(cloud: Cloud, box_id: str, toml_text: str, pushed: list[int]) -> bool:
    """Push `toml_text` to the Box once it has enrolled (once: the version goes into `pushed`);
    True once pushed. For a polling loop (`wait_for`)."""
    if not pushed and cloud.store.box(box_id) is not None:
        pushed.append(cloud.push_config(box_id, toml_text))
    return bool(pushed)


def image_release(image: boximage.Image, work: Path, version: str, *, broken: bool = False,
                  boot_tries: int = 3) -> Path:
    """An image release (cloud.image_release) of the built root file system, as version `version`.

    The root image is `make image`'s release artefact with its release file saying `version`
    (edited with debugfs, no mount); `broken`: with a drop-in that keeps boxd from ever starting
    (``ExecStart=/bin/false``): a release that boots and never becomes healthy.
    """
    from cloud.image_release import build_image

    root = work / f"root-{version}.img"
    subprocess.run(["cp", "--sparse=always", str(image.release), str(root)], check=True, timeout=120)
    (work / "release.json").write_text(json.dumps({"version": version}) + "\n")
    script = ["rm /usr/share/boxd/release.json",
              f"write {work / 'release.json'} /usr/share/boxd/release.json"]
    if broken:
        (work / "99-broken.conf").write_text("[Service]\nExecStart=\nExecStart=/bin/false\n")
        script += [f"write {work / '99-broken.conf'} /usr/lib/systemd/system/boxd.service.d/99-broken.conf"]
    r = subprocess.run(["debugfs", "-w", "-f", "-", str(root)], input="\n".join(script) + "\n",
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or "rror" in r.stderr.replace("debugfs 1.", ""):
        raise AssertionError(f"debugfs on {root}: {r.stderr}")
    try:
        return build_image(root, work / "releases", version, ["generic-x86-64"], boot_tries=boot_tries, level=1)
    finally:
        root.unlink()
