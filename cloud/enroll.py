"""Enrollment: single-use tokens for a Box serial, and the HTTPS endpoint that signs a Box's CSR.

`new_token()` makes a token an installer can type (24 base32 characters in groups
of four, 120 bits); only its SHA-256 is stored. `POST /v1/enroll` with
`{"token", "csr", "serial"?}` answers `{"box_id", "certificate", "ca", "broker"}`
or `{"error"}` with 400/401/403/413/503. The Box's private key never travels: the
Box sends a CSR, and the subject of the certificate is set by the cloud (CN = the
serial the token was issued for), never taken from the CSR.

The server is TLS-only (the Box checks it against the platform CA it ships with);
it needs no client certificate since an enrolling Box has none yet: the token is
the credential. Tokens never appear in logs.

`POST /v1/renew` with `{"csr"}` renews a Box's certificate before it expires: the
credential is the Box's current certificate, presented in the TLS handshake (verified
against the platform CA, then checked in the database: the Box's current certificate, or
one it renewed away from that has not expired, and not revoked). The new certificate
names the same Box; the answer has the shape of an enrollment's. The old certificate
stays valid until it expires, so the Box keeps it until the new one works.

`GET /tuf/...` serves the TUF repository of Box software to Boxes (see `cloud.ota_server`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from boxd import tls
from boxd.identity import BOX_ID_RE
from cloud import ota_server
from cloud.broker import Broker
from cloud.errors import BrokerError, EnrollmentError, PkiError, StoreError
from cloud.pki import Pki
from cloud.store import Store

log = logging.getLogger("boxcloud.enroll")

MAX_BODY = 16 * 1024
_TOKEN_RE = re.compile(r"[A-Z2-7]{24}")


def new_token() -> str:
    """A fresh enrollment token, e.g. "K7QD-3MZP-TX4A-9..." (shown once, never stored)."""
    raw = base64.b32encode(secrets.token_bytes(15)).decode()
    return "-".join(raw[i : i + 4] for i in range(0, 24, 4))


def token_hash(token: str) -> str:
    """The stored form of a token; dashes, spaces and case do not matter.

    Raises:
        EnrollmentError: the text cannot be a token.
    """
    norm = re.sub(r"[\s-]", "", token).upper()
    if not _TOKEN_RE.fullmatch(norm):
        raise EnrollmentError("the enrollment token is malformed (24 letters and digits expected)", 401)
    return hashlib.sha256(norm.encode()).hexdigest()


def check_serial(serial: str) -> str:
    """Validate a Box serial (it becomes the Box ID and part of its MQTT topics).

    Raises:
        EnrollmentError: the serial has characters or a length a Box ID cannot have.
    """
    if not BOX_ID_RE.fullmatch(serial):
        raise EnrollmentError(
            f"invalid serial {serial!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return serial


@dataclass
class Enroller:
    """The enrollment logic, apart from HTTP.

    `revocations_changed` is called when certificates were put on the revocation list (the
    platform rewrites its CRL, reloads the broker and tells the Boxes).
    """

    pki: Pki
    store: Store
    broker: Broker
    revocations_changed: Callable[[], None] = lambda: None

    def enroll(self, token: str, csr_pem: str, serial: str | None) -> dict[str, object]:
        """Check the token, sign the CSR, give the Box its broker rights.

        Nothing is spent by a request that is malformed or whose token is not valid: the CSR is
        checked first, then the token is only read; it is claimed (a write) once both are good.
        Every certificate the Box had before ends here (re-enrolment replaces a Box).

        Raises:
            EnrollmentError: refused; the message says why (and is safe to show the installer).
        """
        h = token_hash(token)
        try:
            self.pki.load_box_csr(csr_pem)
        except PkiError as e:
            raise EnrollmentError(str(e)) from e
        box_serial = self.store.check_token(h)
        if serial is not None and serial != box_serial:
            self.store.claim_token(h)  # a token shown to the wrong Box is spent
            raise EnrollmentError(f"this token was issued for another Box (serial {box_serial})", 403)
        self.store.claim_token(h)
        try:
            chain, leaf = self.pki.sign_box_csr(csr_pem, box_serial)
            ended = self.store.enroll_box(
                box_serial, box_serial, leaf.serial_number, leaf.not_valid_after_utc.timestamp())
            if ended:  # the CRL first: a session of an old certificate kicked below cannot come back
                self.revocations_changed()
            try:
                self.broker.add_box(box_serial)
            except BrokerError as e:
                log.error("enrollment of %s: %s", box_serial, e)
                raise EnrollmentError("the platform broker is unavailable; try again in a minute", 503) from e
        except BaseException:
            self.store.release_token(h)  # our failure: the installer may try again with the same token
            raise
        log.info("enrolled Box %s (certificate serial %x%s)", box_serial, leaf.serial_number,
                 f"; {len(ended)} earlier certificate(s) revoked" if ended else "")
        return self._answer(box_serial, chain)

    def renew(self, peer: dict[str, object], csr_pem: str) -> dict[str, object]:
        """Sign a new certificate for the Box that presented `peer` (ssl's getpeercert()).

        Only the Box's current certificate, or its pending one (which then becomes current), may
        renew; the new certificate is pending until the Box uses it.

        Raises:
            EnrollmentError: no certificate, not a Box's, revoked or superseded, bad CSR.
        """
        box_id, serial = self.box_of(peer)
        try:
            self.pki.load_box_csr(csr_pem)
            chain, leaf = self.pki.sign_box_csr(csr_pem, box_id)
        except PkiError as e:
            raise EnrollmentError(str(e)) from e
        try:
            change = self.store.renew_cert(box_id, serial, leaf.serial_number, leaf.not_valid_after_utc.timestamp())
        except StoreError as e:
            raise EnrollmentError(f"renewal refused: {e}", 403) from e
        if change.revoked:
            self.revocations_changed()
        log.info("renewed the certificate of Box %s (serial %x -> %x, pending until used)", box_id, serial,
                 leaf.serial_number)
        return self._answer(box_id, chain)

    def confirm(self, peer: dict[str, object]) -> dict[str, object]:
        """The Box uses the certificate it presents: a pending one becomes current (the one before
        it is revoked).

        Raises:
            EnrollmentError: no certificate (401), not a Box's current or pending one (403).
        """
        box_id, serial = self.box_of(peer)
        try:
            change = self.store.confirm_cert(box_id, serial)
        except StoreError as e:
            raise EnrollmentError(f"confirmation refused: {e}", 403) from e
        if change.revoked:
            self.revocations_changed()
            log.info("Box %s uses its renewed certificate %x; the previous one is revoked", box_id, serial)
        return {"box_id": box_id, "certificate_serial": f"{serial:x}"}

    def box_of(self, peer: dict[str, object]) -> tuple[str, int]:
        """(Box ID, serial) of a verified client certificate that is a Box's current or pending one.

        Raises:
            EnrollmentError: no certificate (401); not a Box's, revoked, or one the Box no longer
                uses (403).
        """
        box_id, serial = _peer_identity(peer)
        if self.store.cert_state(box_id, serial) is None:
            raise EnrollmentError("the certificate presented is revoked or no longer this Box's", 403)
        return box_id, serial

    def _answer(self, box_id: str, chain: bytes) -> dict[str, object]:
        return {
            "box_id": box_id,
            "certificate": chain.decode(),
            "ca": self.pki.root_cert.read_text(),
            "broker": {"host": self.broker.host, "port": self.broker.port},
            "crl": self.pki.crl.read_text(),  # the Box checks the platform's servers against it
        }


def _peer_identity(peer: dict[str, object]) -> tuple[str, int]:
    """(Box ID, certificate serial) of a verified client certificate."""
    if not peer:
        raise EnrollmentError("this request needs the Box's current certificate in the TLS handshake", 401)
    cn = next((v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"), None)  # type: ignore[attr-defined]
    serial = peer.get("serialNumber")
    if not (isinstance(cn, str) and BOX_ID_RE.fullmatch(cn)) or not isinstance(serial, str):
        raise EnrollmentError("the certificate presented is not a Box's", 403)
    return cn, int(serial, 16)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "boxcloud"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/v1/health":
            self._answer(200, {"ok": True})
        elif self.path.startswith(ota_server.PREFIX) and self.server.tuf_repo is not None:
            ota_server.serve(self, self.server.tuf_repo, self.connection.getpeercert() or {},
                             self.server.enroller.box_of)
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path not in ("/v1/enroll", "/v1/renew", "/v1/renew/confirm"):
            self._answer(404, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._answer(411, {"error": "a Content-Length is required"})
            return
        if not 0 < length <= MAX_BODY:
            self._answer(413, {"error": f"the request must be 1..{MAX_BODY} bytes"})
            return
        try:
            req = json.loads(self.rfile.read(length))
            if not isinstance(req, dict):
                raise TypeError("the request must be a JSON object")
            if self.path == "/v1/renew/confirm":
                result = self.server.enroller.confirm(self.connection.getpeercert() or {})
            elif self.path == "/v1/renew":
                csr = req["csr"]
                if not isinstance(csr, str):
                    raise TypeError("csr must be text")
                peer = self.connection.getpeercert()
                result = self.server.enroller.renew(peer or {}, csr)
            else:
                token, csr, serial = req["token"], req["csr"], req.get("serial")
                if not (isinstance(token, str) and isinstance(csr, str) and isinstance(serial, str | None)):
                    raise TypeError("token, csr and serial must be text")
                result = self.server.enroller.enroll(token, csr, serial)
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            self._answer(400, {"error": f"malformed enrollment request: {e}"})
            return
        except EnrollmentError as e:
            log.warning("enrollment refused from %s: %s", self.client_address[0], e)
            self._answer(e.status, {"error": str(e)})
            return
        except (StoreError, PkiError) as e:
            log.error("enrollment failed: %s", e)
            self._answer(503, {"error": "the platform cannot enroll Boxes right now"})
            return
        self._answer(200, result)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], ctx: ssl.SSLContext, enroller: Enroller,
                 tuf_repo: Path | None) -> None:
        super().__init__(addr, _Handler)
        self.ctx, self.enroller, self.tuf_repo = ctx, enroller, tuf_repo

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = self.socket.accept()
        sock.settimeout(10)  # a slow or silent client cannot hold a thread for long
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request: socket.socket | tuple[bytes, socket.socket], client_address: object) -> None:
        assert isinstance(request, ssl.SSLSocket)
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError) as e:
            log.debug("TLS handshake with %s failed: %s", client_address, e)
            return
        super().finish_request(request, client_address)


class EnrollServer:
    """The HTTPS enrollment endpoint, in its own thread. The constructor does no I/O."""

    def __init__(self, enroller: Enroller, cert: Path, key: Path, bind: str, port: int, *,
                 client_ca: Path | None = None, tuf_repo: Path | None = None) -> None:
        self._enroller, self._cert, self._key, self._client_ca = enroller, cert, key, client_ca
        self._tuf_repo = tuf_repo  # served under /tuf/ to Boxes (cloud.ota_server)
        self._addr = (bind, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve in a thread."""
        ctx = tls.server_context(self._cert, self._key, self._client_ca, client_optional=True)
        self._server = _Server(self._addr, ctx, self._enroller, self._tuf_repo)
        self._thread = threading.Thread(target=self._server.serve_forever, name="enroll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
