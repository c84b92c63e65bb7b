"""Enrollment from the Box's side: key, CSR, HTTPS to the platform, identity written atomically.

The private key is generated here and never leaves the Box. The enrollment server
is verified against the platform CA shipped with the Box (never against what the
server sends). The identity directory is written whole to a temporary directory,
synced, and renamed into place: a failure at any point leaves the previous state
(none, or the old identity) untouched.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import shutil
import socket
import ssl
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from boxd import clikit, crl, tls
from boxd.crl import CRL_FILE
from boxd.files import fsync_dir, write_atomic, write_secret
from boxd.identity import BOX_ID_RE, IDENTITY_DIR
from provisioning.errors import ProvisionError

MAX_RESPONSE = 64 * 1024


def explain_network_error(e: BaseException, where: str) -> str:
    """Say in an installer's words why a connection to `where` failed."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return (f"{where} presented a certificate that the platform CA does not vouch for "
                f"({e.verify_message}): wrong server, or wrong CA file")
    if isinstance(e, ssl.SSLError):
        reason = str(e.reason or e)
        if "REVOKED" in reason:
            return f"{where} refused this Box: the platform has revoked its certificate (re-provision it)"
        if "EXPIRED" in reason:
            return f"{where} refused this Box: its certificate has expired (renew or re-provision it)"
        if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason:
            return f"{where} does not accept this Box's certificate (re-provision it)"
        return f"the secure connection to {where} failed ({reason})"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve the name of {where}: check DNS / the address, or is there no network?"
    if isinstance(e, ConnectionRefusedError):
        return f"{where} refused the connection: wrong port, or the service is down"
    if isinstance(e, TimeoutError | socket.timeout):
        return f"{where} did not answer in time: no network, or a firewall in the way?"
    if isinstance(e, OSError) and e.errno in (101, 113):  # ENETUNREACH, EHOSTUNREACH
        return f"{where} is unreachable: no network route (is the WAN / 4G link up?)"
    return f"cannot talk to {where}: {e}"


def _parse_server(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme != "https" or not parts.hostname or not clikit.is_host(parts.hostname):
        raise ProvisionError(f"the server must be an https:// address, e.g. https://platform.example:8443, "
                             f"not {url!r}")
    try:
        port = parts.port or 443
    except ValueError:
        raise ProvisionError(f"the server address {url!r} has an invalid port") from None
    return parts.hostname, port


def _post(host: str, port: int, ca_file: Path, body: dict[str, object], timeout: float, *,
          path: str = "/v1/enroll", client: tuple[Path, Path] | None = None,
          crl_file: Path | None = None) -> dict[str, object]:
    try:
        ctx = tls.client_context(ca_file, *(client or (None, None)), crl_file=crl_file)
    except (OSError, ssl.SSLError) as e:
        raise ProvisionError(f"cannot load the platform CA {ca_file}: {getattr(e, 'strerror', None) or e}") from e
    where = f"https://{host}:{port}"
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read(MAX_RESPONSE + 1)
    except (OSError, http.client.HTTPException) as e:
        raise ProvisionError(explain_network_error(e, where)) from e
    finally:
        conn.close()
    if len(raw) > MAX_RESPONSE:
        raise ProvisionError(f"{where} sent an oversized answer")
    try:
        answer = json.loads(raw)
        if not isinstance(answer, dict):
            raise TypeError("not an object")
    except (ValueError, TypeError):
        raise ProvisionError(f"{where} answered HTTP {resp.status} with something that is not JSON") from None
    if resp.status != 200:
        what = "renewal" if path.startswith("/v1/renew") else "enrollment"
        raise ProvisionError(f"the platform refused the {what}: {answer.get('error', f'HTTP {resp.status}')}")
    return answer


def _check_answer(
    answer: dict[str, object], key: ec.EllipticCurvePrivateKey, ca_file: Path
) -> tuple[str, bytes, str, int]:
    box_id, chain_pem, broker = answer.get("box_id"), answer.get("certificate"), answer.get("broker")
    if not (isinstance(box_id, str) and BOX_ID_RE.fullmatch(box_id)):
        raise ProvisionError("the platform's answer holds no valid Box ID")
    if not (isinstance(broker, dict) and isinstance(broker.get("host"), str) and isinstance(broker.get("port"), int)):
        raise ProvisionError("the platform's answer holds no valid broker address")
    if not isinstance(chain_pem, str):
        raise ProvisionError("the platform's answer holds no certificate")
    try:
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
        roots = x509.load_pem_x509_certificates(ca_file.read_bytes())
    except ValueError as e:
        raise ProvisionError(f"the platform sent an unreadable certificate: {e}") from e
    leaf = chain[0]
    if leaf.public_key() != key.public_key():
        raise ProvisionError("the certificate the platform sent is not for this Box's key")
    if leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value != box_id:
        raise ProvisionError("the certificate the platform sent does not name this Box")
    try:  # the chain must lead to the platform CA shipped with the Box
        for child, parent in itertools.pairwise(chain):
            child.verify_directly_issued_by(parent)
        top = chain[-1]
        if not any(_issued_by(top, r) for r in roots):
            raise InvalidSignature
    except (InvalidSignature, ValueError, TypeError):
        raise ProvisionError("the certificate the platform sent does not chain to the platform CA") from None
    return box_id, chain_pem.encode(), str(broker["host"]), int(broker["port"])


def _issued_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
    if cert == root:
        return True
    try:
        cert.verify_directly_issued_by(root)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def enroll(
    state_dir: Path, server: str, token: str, ca_file: Path, serial: str | None = None,
    *, force: bool = False, timeout: float = 20.0,
) -> str:
    """Enroll this Box; returns its Box ID.

    Raises:
        ProvisionError: nothing was written; the message says why.
    """
    final = state_dir / IDENTITY_DIR
    if final.exists() and not force:
        raise ProvisionError(f"this Box is already provisioned ({final}); use --force to replace its identity")
    if not ca_file.is_file():
        raise ProvisionError(f"the platform CA file {ca_file} does not exist")
    host, port = _parse_server(server)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial or "box")]))
        .sign(key, hashes.SHA256())
    )
    body: dict[str, object] = {"token": token, "csr": csr.public_bytes(serialization.Encoding.PEM).decode()}
    if serial:
        body["serial"] = serial
    answer = _post(host, port, ca_file, body, timeout, crl_file=state_dir / CRL_FILE)
    box_id, chain, broker_host, broker_port = _check_answer(answer, key, ca_file)
    _keep_crl(state_dir, answer.get("crl"), ca_file, chain)
    _install(state_dir, key, chain, ca_file.read_bytes(), {
        "box_id": box_id, "broker_host": broker_host, "broker_port": broker_port,
        "enrolled_at": int(time.time()), "server": f"https://{host}:{port}",
    })
    return box_id


def renew(state_dir: Path, *, timeout: float = 20.0) -> Path:
    """Get a new certificate for a new key, authenticated by the current certificate.

    The new identity is staged whole in `identity.next/` beside the current one, which stays
    in use: `boxd.identity.activate_next` switches to it once it is to be tried, and
    `revert` goes back if it does not work. Returns the staged directory.

    Raises:
        ProvisionError: nothing was staged; the message says why.
    """
    from boxd import identity as box_identity
    from boxd.errors import IdentityError

    try:
        ident = box_identity.load(state_dir)
        meta = json.loads((ident.directory / "identity.json").read_text())
    except (IdentityError, OSError, ValueError) as e:
        raise ProvisionError(f"cannot renew: {e}") from e
    server = meta.get("server")
    if not isinstance(server, str):
        raise ProvisionError("cannot renew: the identity does not say where the enrollment server is")
    host, port = _parse_server(server)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ident.box_id)]))
           .sign(key, hashes.SHA256()))
    answer = _post(host, port, ident.ca_file, {"csr": csr.public_bytes(serialization.Encoding.PEM).decode()},
                   timeout, path="/v1/renew", client=(ident.cert_file, ident.key_file), crl_file=ident.crl_file)
    box_id, chain, _, _ = _check_answer(answer, key, ident.ca_file)
    if box_id != ident.box_id:
        raise ProvisionError(f"the platform renewed another Box ({box_id}), not {ident.box_id}")
    return _stage(state_dir, key, chain, ident.ca_file.read_bytes(), {**meta, "renewed_at": int(time.time())},
                  name=box_identity.NEXT_DIR)


def confirm(state_dir: Path, *, timeout: float = 20.0) -> None:
    """Tell the platform that this Box now uses its renewed certificate (authenticated by it): the
    platform then revokes the one before. Until then both stay valid.

    Raises:
        ProvisionError: the platform could not be told; the message says why.
    """
    from boxd import identity as box_identity
    from boxd.errors import IdentityError

    try:
        ident = box_identity.load(state_dir)
        host, port = _parse_server(box_identity.server_url(state_dir))
    except IdentityError as e:
        raise ProvisionError(f"cannot confirm the renewal: {e}") from e
    _post(host, port, ident.ca_file, {}, timeout, path="/v1/renew/confirm", client=(ident.cert_file, ident.key_file),
          crl_file=ident.crl_file)


def _keep_crl(state_dir: Path, pem: object, ca_file: Path, chain: bytes) -> None:
    """Keep the platform's CRL from the enrollment answer (`boxd.crl`): checked before it is kept."""
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
        except ValueError as e:
            raise ProvisionError(f"the platform sent a revocation list that is not valid: {e}") from None
        write_atomic(current, pem.encode())


def _give_to_owner_of(state_dir: Path, tmp: Path) -> None:
    """boxctl runs as root, boxd as its own user: the identity belongs to the state directory's owner."""
    if os.geteuid() != 0:
        return
    st = state_dir.stat()
    for p in (tmp, *tmp.iterdir()):
        os.chown(p, st.st_uid, st.st_gid)


def _install(
    state_dir: Path, key: ec.EllipticCurvePrivateKey, chain: bytes, ca: bytes, meta: dict[str, object]
) -> None:
    _stage(state_dir, key, chain, ca, meta, name=IDENTITY_DIR, keep_old=True)


def _stage(state_dir: Path, key: ec.EllipticCurvePrivateKey, chain: bytes, ca: bytes, meta: dict[str, object], *,
           name: str, keep_old: bool = False) -> Path:
    """Write a whole identity directory as `state_dir/name`, atomically (temporary directory,
    fsync, rename); what was there is kept aside (`keep_old`) or replaced."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".identity-", dir=state_dir))
    try:
        tmp.chmod(0o700)
        write_secret(tmp / "box.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        write_atomic(tmp / "box.crt", chain)
        write_atomic(tmp / "ca.crt", ca)
        write_atomic(tmp / "identity.json", json.dumps(meta, indent=1).encode())
        _give_to_owner_of(state_dir, tmp)
        final = state_dir / name
        if final.exists():
            if keep_old:
                final.rename(state_dir / f"{name}.old-{int(time.time())}")
            else:
                shutil.rmtree(final)
        tmp.rename(final)
        fsync_dir(state_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ProvisionError(f"cannot write the identity in {state_dir}: {e.strerror or e}") from e
    return final
