"""The one place that builds TLS contexts, for the Box and for the reference cloud.

Verification is always on: there is no way to ask this module for an unverified
context. (One narrow exception lives in `boxd.uplink`: while the Box's clock is
implausible, certificate *dates* are not checked; chain, name and CRL still are.) A Box's
contexts carry the platform's CRL (`trust.crl`): a revoked server certificate is refused.
TLS 1.2 is the floor. Clients always check the server's name. `explain` says in a person's
words why a connection failed. This module loads files; it opens no connection.

Resumption (`ResumingContext`, the Box's MQTT uplink): a reconnection offers the TLS session of
the last one (a TLS 1.3 ticket), so neither side sends its certificate chain again, with a fresh
ECDHE exchange still (forward secrecy kept). A resumed handshake verifies no certificate: the
session is forgotten whenever what the last full handshake checked could now be judged otherwise
(a newer CRL, certificate dates checked again); the broker's side: docs/architecture.md,
"TLS session resumption and revocation".
"""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

MIN_VERSION = ssl.TLSVersion.TLSv1_2
# TLS 1.2 suites: forward-secret key exchange and AEAD ciphers only (no CBC, no SHA-1 MAC);
# TLS 1.3 suites are all AEAD. The same list is the broker's (cloud.broker).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
NO_CHECK_TIME = 0x200000  # OpenSSL's X509_V_FLAG_NO_CHECK_TIME; only boxd.uplink sets it, see boxd.clock


def client_context(
    ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None, *, crl_file: Path | None = None,
    resume: bool = False,
) -> ssl.SSLContext:
    """A context for connecting to a server that must chain to `ca_file`.

    Args:
        ca_file: the trust anchors (the platform CA shipped with the Box).
        cert_file: our certificate chain, for mutual TLS; None before enrollment.
        key_file: the private key of `cert_file`.
        crl_file: the platform's revocation list (PEM); when the file exists, the server's
            certificate is checked against it in every full handshake (a revoked one is refused).
        resume: return a `ResumingContext` (its connections resume the last one's TLS session).

    Raises:
        ssl.SSLError, OSError: the files are missing or do not match.
    """
    ctx = (ResumingContext if resume else ssl.SSLContext)(ssl.PROTOCOL_TLS_CLIENT)  # verified by default
    ctx.minimum_version = MIN_VERSION
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.load_verify_locations(cafile=str(ca_file))
    if cert_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    if crl_file is not None and crl_file.exists():
        add_crl(ctx, crl_file)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    return ctx


def client_context_pem(ca_pem: str | None, cert_pem: str | None = None, key_pem: str | None = None, *,
                       system_ca: Path) -> ssl.SSLContext:
    """A context for a server whose trust anchors come as PEM text (a customer's CA given through the
    API), else the system's (`system_ca`); with our certificate chain and key as PEM text (mutual TLS).
    The key never touches a file system: it is loaded from an anonymous memory file (memfd).

    Raises:
        ssl.SSLError, OSError: the PEM text is not a certificate, or the key does not match.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verified by default
    ctx.minimum_version = MIN_VERSION
    ctx.set_ciphers(TLS12_CIPHERS)
    if ca_pem:
        ctx.load_verify_locations(cadata=ca_pem)
    else:
        ctx.load_verify_locations(cafile=str(system_ca))
    if cert_pem:
        fds = [os.memfd_create("tls-cert"), os.memfd_create("tls-key")]
        try:
            for fd, text in zip(fds, (cert_pem, key_pem or ""), strict=True):
                os.write(fd, text.encode())
            ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
        finally:
            for fd in fds:
                os.close(fd)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    return ctx


def add_crl(ctx: ssl.SSLContext, crl_file: Path) -> None:
    """Check servers against the CRL in this PEM file from now on (OpenSSL uses the newest it holds);
    a `ResumingContext` forgets its session, so the next handshake is a full one that checks it."""
    ctx.load_verify_locations(cafile=str(crl_file))
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if isinstance(ctx, ResumingContext):
        ctx.forget()


class ResumingContext(ssl.SSLContext):
    """A client context that offers the TLS session of its last connection to the same server again.

    paho-mqtt builds the socket itself (``context.wrap_socket(sock, server_hostname=host, ...)``), so
    the session is handed over here, in `wrap_socket`, rather than by the caller. The owner calls
    `remember` once a connection has received its first bytes after the handshake (with TLS 1.3 the
    server's ticket comes after it) and `forget` when a full handshake must check everything again.
    Only one thread may use it (the uplink's I/O thread). Python cannot save a session to disk:
    resumption spans the reconnections of one process, not a restart.
    """

    _session: ssl.SSLSession | None = None
    _server: str | None = None

    def wrap_socket(self, sock: socket.socket, server_side: bool = False,  # noqa: PLR0917 - ssl.SSLContext's
                    do_handshake_on_connect: bool = True,
                    suppress_ragged_eofs: bool = True, server_hostname: str | bytes | None = None,
                    session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
        """`ssl.SSLContext.wrap_socket`, offering the remembered session to the server it came from."""
        if session is None and server_hostname is not None and server_hostname == self._server:
            session = self._session
        return super().wrap_socket(sock, server_side, do_handshake_on_connect, suppress_ragged_eofs,
                                   server_hostname, session)

    def remember(self, sock: ssl.SSLSocket) -> None:
        """Keep `sock`'s session (its newest ticket) for the next connection to the same server."""
        session = sock.session
        # TLS 1.3 resumes with a ticket only; TLS 1.2 also with the session id of the server's cache
        if session is not None and (session.has_ticket or (sock.version() != "TLSv1.3" and bool(session.id))):
            self._session, self._server = session, sock.server_hostname
        else:
            self.forget()

    def forget(self) -> None:
        """The next handshake is a full one (certificates sent and verified)."""
        self._session = self._server = None

    @property
    def has_session(self) -> bool:
        """Whether the next connection will offer a session."""
        return self._session is not None


def server_context(
    cert_file: Path, key_file: Path, client_ca_file: Path | None = None, *, client_optional: bool = False
) -> ssl.SSLContext:
    """A context for a server; with `client_ca_file`, clients must present a certificate.

    Args:
        cert_file: the server's certificate chain.
        key_file: its private key.
        client_ca_file: when given, client certificates are required and verified.
        client_optional: a client may also come without one (a certificate it sends is
            still verified, and the handshake fails if it does not chain to `client_ca_file`).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.load_cert_chain(str(cert_file), str(key_file))
    if client_ca_file is not None:
        ctx.load_verify_locations(cafile=str(client_ca_file))
        ctx.verify_mode = ssl.CERT_OPTIONAL if client_optional else ssl.CERT_REQUIRED
    return ctx


def explain(e: BaseException, where: str) -> str:
    """Say in an installer's words why a connection to `where` failed (`e`: the root cause, an
    `ssl.SSLError` or `OSError`; `trust.https.root_cause` digs it out of an HTTP client's)."""
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
