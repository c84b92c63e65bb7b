"""The Box's TUF client (ota/client.py) against a real reference cloud: the repository is served
over HTTPS on the enrollment port, only to Boxes (client certificate), and every refusal leaves
nothing in the Box's download directory."""

from __future__ import annotations

import hashlib
import http.client
import shutil
from pathlib import Path

import pytest
from tuf.api.metadata import Targets

from cloud import tufrepo as repo
from cloud.endpoint import EnrollServer
from cloud.enroll import Enroller
from cloud.platform import Cloud
from ota import client
from tests.support.cloudkit import provision
from tests.support.wait import free_port
from trust import identity, tls

HW = "boxd-x86"


def _box(cloud: Cloud, tmp_path: Path, serial: str) -> tuple[Path, identity.Identity]:
    state = tmp_path / "box"
    ident = provision(cloud, state, serial)
    (state / "ota").mkdir()
    shutil.copyfile(cloud.ota_repo / "metadata" / "1.root.json", state / "ota" / "root.json")  # shipped in the image
    return state, ident


def _publish(cloud: Cloud, tmp_path: Path, version: str, hardware: list[str] | None = None) -> Path:
    bundle = tmp_path / f"boxd-{version}.tar.gz"
    bundle.write_bytes(version.encode() * 5000)
    repo.publish_release(cloud.ota_repo, cloud.ota_keys, bundle, version, hardware or [HW])
    return bundle


def _url(cloud: Cloud, port: int | None = None) -> str:
    return f"https://localhost:{port or cloud.settings.enroll_port}"


def _downloads(state: Path) -> list[str]:
    d = state / "ota" / "downloads"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_a_box_sees_and_downloads_a_release_over_https(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    state, ident = _box(cloud, tmp_path, "OTA-1")
    bundle = _publish(cloud, tmp_path, "1.1.0")
    release = client.check_for_update(state, _url(cloud), "1.0.0", HW, bundle.name, ident=ident)
    assert release is not None and release.version == "1.1.0" and release.hardware == (HW,)
    assert client.check_for_update(state, _url(cloud), "1.0.0", HW, "absent.tar.gz", ident=ident) is None

    (state / "ota" / "downloads" / f".{bundle.name}.part").write_bytes(b"cut by a power loss")
    got, path = client.download(state, _url(cloud), "1.0.0", HW, bundle.name)  # the identity in `state`
    assert path.read_bytes() == bundle.read_bytes()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == got.sha256 == release.sha256
    assert _downloads(state) == [bundle.name]  # the leftover temporary file is gone


def test_the_repository_is_only_for_boxes(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    _state, ident = _box(cloud, tmp_path, "OTA-2")

    def get(path: str, with_cert: bool, cert: tuple[Path, Path] | None = None) -> int:
        cert = cert or (ident.cert_file, ident.key_file)
        ctx = (tls.client_context(ident.ca_file, *cert) if with_cert else tls.client_context(cloud.pki.root_cert))
        conn = http.client.HTTPSConnection("localhost", cloud.settings.enroll_port, context=ctx, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    assert get("/tuf/metadata/timestamp.json", False) == 401
    assert get("/tuf/metadata/timestamp.json", True) == 200
    svc = (cloud.pki.dir / "svc-admin.crt", cloud.pki.dir / "svc-admin.key")  # a platform service is no Box
    assert get("/tuf/metadata/timestamp.json", True, svc) == 403
    assert get("/tuf/metadata/absent.json", True) == 404
    for bad in ("/tuf/metadata/../../cloud.json", "/tuf/metadata/..", "/tuf/metadata/%2e%2e%2fcloud.json",
                "/tuf/keys/x.pem", "/tuf/metadata/.hidden"):
        assert get(bad, True) == 404, bad
    cloud.revoke("OTA-2")
    assert get("/tuf/metadata/timestamp.json", True) == 403  # a revoked Box gets nothing


def test_a_downgrade_instruction_is_refused(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    state, ident = _box(cloud, tmp_path, "OTA-3")
    bundle = _publish(cloud, tmp_path, "1.1.0")
    for running in ("1.1.0", "1.2.0"):
        with pytest.raises(client.OtaError, match="downgrade"):
            client.download(state, _url(cloud), running, HW, bundle.name, ident=ident)
    assert _downloads(state) == []


def test_a_target_for_other_hardware_is_refused(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    state, ident = _box(cloud, tmp_path, "OTA-4")
    bundle = _publish(cloud, tmp_path, "1.1.0", ["boxd-arm64"])
    with pytest.raises(client.OtaError, match="hardware"):
        client.download(state, _url(cloud), "1.0.0", HW, bundle.name, ident=ident)
    assert _downloads(state) == []


def test_endless_data_is_refused(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    state, ident = _box(cloud, tmp_path, "OTA-5")
    bundle = _publish(cloud, tmp_path, "1.1.0")
    (served,) = (cloud.ota_repo / "targets").glob(f"*.{bundle.name}")
    served.write_bytes(bundle.read_bytes() + b"x" * 1_000_000)
    with pytest.raises(client.OtaError, match="more data than the signed metadata allows"):
        client.download(state, _url(cloud), "1.0.0", HW, bundle.name, ident=ident)
    assert _downloads(state) == []
    # the Box's own cap per request holds whatever the metadata says
    with pytest.raises(client.OtaError, match="more than the Box reads in one request"):
        client.check_for_update(state, _url(cloud), "1.0.0", HW, bundle.name,
                                fetcher=client.BoxFetcher(ident, max_bytes=100))


def test_a_malicious_mirror_is_refused(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    state, ident = _box(cloud, tmp_path, "OTA-6")
    rogue = tmp_path / "rogue"
    repo.init_repository(rogue / "repo", rogue / "keys")  # same layout, other keys
    bundle = tmp_path / "boxd-9.9.9.tar.gz"
    bundle.write_bytes(b"evil" * 1000)
    repo.publish_release(rogue / "repo", rogue / "keys", bundle, "9.9.9", [HW])
    mirror = EnrollServer(Enroller(cloud.pki, cloud.store, cloud.broker), cloud.pki.dir / "enroll.crt",
                          cloud.pki.dir / "enroll.key", "127.0.0.1", free_port(), client_ca=cloud.pki.root_cert,
                          tuf_repo=rogue / "repo")
    mirror.start()
    try:
        with pytest.raises(client.OtaError, match="not signed by enough trusted keys"):
            client.download(state, _url(cloud, mirror.port), "1.0.0", HW, bundle.name, ident=ident)
    finally:
        mirror.stop()
    assert _downloads(state) == []


def test_mix_and_match_is_refused(fresh_cloud: Cloud, tmp_path: Path) -> None:
    cloud = fresh_cloud
    state, ident = _box(cloud, tmp_path, "OTA-7")
    _publish(cloud, tmp_path, "1.1.0")
    bundle = _publish(cloud, tmp_path, "1.2.0")
    meta = cloud.ota_repo / "metadata"
    newest = repo.load(cloud.ota_repo, "targets", Targets).signed.version
    # the snapshot names targets version N; the mirror serves version N-1's targets under that name
    shutil.copyfile(meta / f"{newest - 1}.targets.json", meta / f"{newest}.targets.json")
    with pytest.raises(client.OtaError, match="mix-and-match"):
        client.download(state, _url(cloud), "1.0.0", HW, bundle.name, ident=ident)
    assert _downloads(state) == []
