"""Issue 12, finding 5: the Box checks the revocation of the platform's server certificates.

On real parts: a running boxd, enrolled through the real HTTPS endpoint (its answer carries the
CRL); the operator replaces the broker's certificate (`boxcloud pki reissue broker`: the old one is
revoked, the running broker takes the new one, the Box is given the new CRL over its MQTT session);
then the broker goes away and an impostor holding the *revoked* `localhost` certificate and its key
answers on the broker's port, over TLS 1.3. The Box must refuse every handshake with it.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from cloud.platform import Cloud
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import make_cloud, provision
from tests.support.simthread import SimThread
from tests.support.wait import wait_for
from trust import tls


class Impostor:
    """A TLS server with a stolen certificate and key on a port; records each handshake's outcome."""

    def __init__(self, port: int, cert: Path, key: Path) -> None:
        self.ctx = tls.server_context(cert, key)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.sock = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.sock.settimeout(0.2)
        self.outcomes: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Impostor:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(10)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as t:
                    t.recv(1)  # TLS 1.3: the client's verdict on our certificate arrives after the handshake
                    self.outcomes.append("accepted")
            except (ssl.SSLError, OSError) as e:
                self.outcomes.append(f"refused: {getattr(e, 'reason', None) or e}")


@pytest.fixture
def running_box(tmp_path: Path, mosquitto_available: None) -> Iterator[tuple[Cloud, BoxProcess]]:
    cloud = make_cloud(tmp_path / "cloud")
    cloud.start()
    with SimThread(update_interval_s=0.5) as sim:
        state = tmp_path / "box"
        provision(cloud, state, "CRL-1")
        conf = tmp_path / "boxd.toml"
        conf.write_text("[uplink]\nbatch_delay_ms = 100\nreconnect_max_s = 2\n\n" + sim.sim.points_toml(1.0))
        box = BoxProcess.start(state, conf)
        try:
            yield cloud, box
        finally:
            box.stop()
            cloud.stop()


def _listed(crl_file: Path, serial: int) -> bool:
    try:
        crl = x509.load_pem_x509_crl(crl_file.read_bytes())
    except (OSError, ValueError):
        return False
    return crl.get_revoked_certificate_by_serial_number(serial) is not None


def test_a_running_box_refuses_a_revoked_server_certificate(running_box: tuple[Cloud, BoxProcess],
                                                            tmp_path: Path) -> None:
    cloud, box = running_box
    box.wait_connected()
    assert (box.state / "crl.pem").exists(), "the enrollment answer carried no CRL"
    stolen = tmp_path / "stolen"
    stolen.mkdir()
    for f in ("broker.crt", "broker.key"):
        (stolen / f).write_bytes((cloud.pki.dir / f).read_bytes())
    old = x509.load_pem_x509_certificate((stolen / "broker.crt").read_bytes()).serial_number

    r = subprocess.run([sys.executable, "-m", "cloud.cli", "--home", str(cloud.home), "pki", "reissue", "broker"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: _listed(box.state / "crl.pem", old), 30, "the Box to get the CRL with the old certificate")
    box.wait_connected()  # it still works with the real, reissued broker

    cloud.broker.stop()
    with Impostor(cloud.settings.broker_port, stolen / "broker.crt", stolen / "broker.key") as impostor:
        wait_for(lambda: len(impostor.outcomes) >= 3, 60, "the Box to try the impostor three times")
    assert all(o.startswith("refused") for o in impostor.outcomes), impostor.outcomes
    assert "revoked" in box.log.read_text()
    assert not box.status().get("connected")
