"""Enrollment and renewal from the Box's side: key, CSR, HTTPS to the platform, identity written atomically.

The private key is generated here and never leaves the Box. The enrollment server is verified
against the platform CA shipped with the Box (never against what the server sends), over
`trust.https` (requests, the one context of `trust.tls`, at most `MAX_RESPONSE` bytes of answer).
The identity directory is written whole to a temporary directory, synced, and renamed into place
(`trust.identity.stage`): a failure at any point leaves the previous state (none, or the old
identity) untouched.

The daemon renews in a process of its own (``python -m trust.enroll renew|confirm``, run by
`trust.renewal`): the HTTPS client and the `cryptography` package never stay in its memory.
"""

from __future__ import annotations

import itertools
import json
import ssl
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from boxkit.files import write_atomic
from proto import names
from trust import crl, https, identity, tls
from trust.crl import CRL_FILE
from trust.errors import CrlError, EnrollError, IdentityError

MAX_RESPONSE = 64 * 1024


def _parse_server(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme != "https" or not parts.hostname or not names.is_host(parts.hostname):
        raise EnrollError(f"the server must be an https:// address, e.g. https://platform.example:8443, "
                          f"not {url!r}")
    try:
        port = parts.port or 443
    except ValueError:
        raise EnrollError(f"the server address {url!r} has an invalid port") from None
    return parts.hostname, port


def _post(host: str, port: int, ca_file: Path, body: dict[str, object], timeout: float, *,
          path: str = "/v1/enroll", client: tuple[Path, Path] | None = None,
          crl_file: Path | None = None) -> dict[str, object]:
    try:
        ctx = tls.client_context(ca_file, *(client or (None, None)), crl_file=crl_file)
    except (OSError, ssl.SSLError) as e:
        raise EnrollError(f"cannot load the platform CA {ca_file}: {getattr(e, 'strerror', None) or e}") from e
    where = f"https://{host}:{port}"
    with https.session(ctx) as s:
        try:
            resp = s.post(f"{where}{path}", data=json.dumps(body), headers={"Content-Type": "application/json"},
                          timeout=timeout, stream=True, allow_redirects=False)
            with resp:
                raw = https.read_capped(resp, MAX_RESPONSE)
        except https.CapExceededError:
            raise EnrollError(f"{where} sent an oversized answer") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
            raise EnrollError(tls.explain(https.root_cause(e), where)) from e
    try:
        answer = json.loads(raw)
        if not isinstance(answer, dict):
            raise TypeError("not an object")
    except (ValueError, TypeError):
        raise EnrollError(f"{where} answered HTTP {resp.status_code} with something that is not JSON") from None
    if resp.status_code != 200:
        what = "renewal" if path.startswith("/v1/renew") else "enrollment"
        raise EnrollError(f"the platform refused the {what}: {answer.get('error', f'HTTP {resp.status_code}')}")
    return answer


def _check_answer(
    answer: dict[str, object], key: ec.EllipticCurvePrivateKey, ca_file: Path
) -> tuple[str, bytes, str, int]:
    box_id, chain_pem, broker = answer.get("box_id"), answer.get("certificate"), answer.get("broker")
    if not names.BOX_ID.fullmatch(box_id):
        raise EnrollError("the platform's answer holds no valid Box ID")
    if not (isinstance(broker, dict) and isinstance(broker.get("host"), str) and names.is_host(broker["host"])
            and isinstance(broker.get("port"), int) and not isinstance(broker["port"], bool)):
        raise EnrollError("the platform's answer holds no valid broker address")
    if not isinstance(chain_pem, str):
        raise EnrollError("the platform's answer holds no certificate")
    try:
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
        roots = x509.load_pem_x509_certificates(ca_file.read_bytes())
    except ValueError as e:
        raise EnrollError(f"the platform sent an unreadable certificate: {e}") from e
    leaf = chain[0]
    if leaf.public_key() != key.public_key():
        raise EnrollError("the certificate the platform sent is not for this Box's key")
    if leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value != box_id:
        raise EnrollError("the certificate the platform sent does not name this Box")
    try:  # the chain must lead to the platform CA shipped with the Box
        for child, parent in itertools.pairwise(chain):
            child.verify_directly_issued_by(parent)
        top = chain[-1]
        if not any(_issued_by(top, r) for r in roots):
            raise InvalidSignature
    except (InvalidSignature, ValueError, TypeError):
        raise EnrollError("the certificate the platform sent does not chain to the platform CA") from None
    assert isinstance(box_id, str)
    return box_id, chain_pem.encode(), str(broker["host"]), int(broker["port"])


def _issued_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
    if cert == root:
        return True
    try:
        cert.verify_directly_issued_by(root)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _new_key_and_csr(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _stage(state_dir: Path, key: ec.EllipticCurvePrivateKey, chain: bytes, ca: bytes, meta: dict[str, object], *,
           name: str, keep_old: bool = False) -> Path:
    try:
        return identity.stage(state_dir, _pem(key), chain, ca, meta, name=name, keep_old=keep_old)
    except IdentityError as e:
        raise EnrollError(str(e)) from e


def enroll(
    state_dir: Path, server: str, token: str, ca_file: Path, serial: str | None = None,
    *, force: bool = False, timeout: float = 20.0,
) -> str:
    """Enroll this Box; returns its Box ID.

    Raises:
        EnrollError: nothing was written; the message says why.
    """
    final = state_dir / identity.IDENTITY_DIR
    if final.exists() and not force:
        raise EnrollError(f"this Box is already provisioned ({final}); use --force to replace its identity")
    if not ca_file.is_file():
        raise EnrollError(f"the platform CA file {ca_file} does not exist")
    host, port = _parse_server(server)
    key, csr = _new_key_and_csr(serial or "box")
    body: dict[str, object] = {"token": token, "csr": csr}
    if serial:
        body["serial"] = serial
    answer = _post(host, port, ca_file, body, timeout, crl_file=state_dir / CRL_FILE)
    box_id, chain, broker_host, broker_port = _check_answer(answer, key, ca_file)
    _keep_crl(state_dir, answer.get("crl"), ca_file, chain)
    _stage(state_dir, key, chain, ca_file.read_bytes(), {
        "box_id": box_id, "broker_host": broker_host, "broker_port": broker_port,
        "enrolled_at": int(time.time()), "server": f"https://{host}:{port}",
    }, name=identity.IDENTITY_DIR, keep_old=True)
    return box_id


def renew(state_dir: Path, *, timeout: float = 20.0) -> Path:
    """Get a new certificate for a new key, authenticated by the current certificate.

    The new identity is staged whole in `identity.next/` beside the current one, which stays
    in use: `trust.identity.activate_next` switches to it once it is to be tried, and
    `revert` goes back if it does not work. Returns the staged directory.

    Raises:
        EnrollError: nothing was staged; the message says why.
    """
    try:
        ident = identity.load(state_dir)
        meta = json.loads((ident.directory / "identity.json").read_text())
    except (IdentityError, OSError, ValueError) as e:
        raise EnrollError(f"cannot renew: {e}") from e
    server = meta.get("server")
    if not isinstance(server, str):
        raise EnrollError("cannot renew: the identity does not say where the enrollment server is")
    host, port = _parse_server(server)
    key, csr = _new_key_and_csr(ident.box_id)
    answer = _post(host, port, ident.ca_file, {"csr": csr}, timeout, path="/v1/renew",
                   client=(ident.cert_file, ident.key_file), crl_file=ident.crl_file)
    box_id, chain, _, _ = _check_answer(answer, key, ident.ca_file)
    if box_id != ident.box_id:
        raise EnrollError(f"the platform renewed another Box ({box_id}), not {ident.box_id}")
    return _stage(state_dir, key, chain, ident.ca_file.read_bytes(), {**meta, "renewed_at": int(time.time())},
                  name=identity.NEXT_DIR)


def confirm(state_dir: Path, *, timeout: float = 20.0) -> None:
    """Tell the platform that this Box now uses its renewed certificate (authenticated by it): the
    platform then revokes the one before. Until then both stay valid.

    Raises:
        EnrollError: the platform could not be told; the message says why.
    """
    try:
        ident = identity.load(state_dir)
        host, port = _parse_server(identity.server_url(state_dir))
    except IdentityError as e:
        raise EnrollError(f"cannot confirm the renewal: {e}") from e
    _post(host, port, ident.ca_file, {}, timeout, path="/v1/renew/confirm", client=(ident.cert_file, ident.key_file),
          crl_file=ident.crl_file)


def _keep_crl(state_dir: Path, pem: object, ca_file: Path, chain: bytes) -> None:
    """Keep the platform's CRL from the enrollment answer (`trust.crl`): checked before it is kept."""
    if not isinstance(pem, str):
        return  # an older platform: the Box gets it at its first connection
    current = state_dir / CRL_FILE
    if current.exists() and current.read_text() == pem:
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=state_dir) as tmp:
        candidate, chain_file = Path(tmp) / "crl.pem", Path(tmp) / "chain.pem"
        candidate.write_text(pem)
        chain_file.write_bytes(chain)
        try:
            crl.verify(candidate, ca_file, chain_file, current if current.exists() else None)
        except CrlError as e:
            raise EnrollError(f"the platform sent a revocation list that is not valid: {e}") from None
        write_atomic(current, pem.encode())


def main(argv: list[str]) -> int:
    """``python -m trust.enroll renew|confirm STATE_DIR``: what the daemon runs (`trust.renewal`).

    Prints one JSON line: ``{"ok": "<what was done>"}`` (exit 0) or ``{"error": "<why>"}`` (exit 1).
    """
    if len(argv) != 2 or argv[0] not in ("renew", "confirm"):
        print("usage: python -m trust.enroll renew|confirm STATE_DIR", file=sys.stderr)
        return 2
    state_dir = Path(argv[1])
    try:
        if argv[0] == "renew":
            done = f"staged in {renew(state_dir)}"
        else:
            confirm(state_dir)
            done = "confirmed"
    except EnrollError as e:
        print(json.dumps({"error": str(e)}), flush=True)
        return 1
    print(json.dumps({"ok": done}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
