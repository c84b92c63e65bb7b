"""The platform's certificate revocation list on the Box: received, verified, kept, used.

The Box checks the platform's server certificates (broker, enrollment and update endpoint)
against the platform's CRL in every TLS handshake (`tls.client_context(..., crl_file=...)`, with
OpenSSL's leaf CRL check). The CRL comes with the enrollment answer, then on
`boxes/<id>/down/crl` when the Box comes online holding another one (its status names the one
it holds: `proto.uplink.crl_digest`) and whenever it changes. A CRL authenticates
itself (signed by the platform's issuing CA), so the channel does not matter; it is kept only if
its signature verifies against the issuing CA of the Box's own chain, that CA chains to the
platform root the Box ships with, and it is newer than the one kept (a replayed older list would
un-revoke). The check runs in a child process (`python -m trust.crl verify ...`): the
`cryptography` package never enters the daemon (see "Start-up and memory").

Files: `<state>/crl.pem` (the CRL in use). This module does I/O on those files and runs the
checker; the daemon decides when.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from boxkit.files import temp_path, write_atomic
from proto.downlink import MAX_CRL, decode_crl
from proto.errors import WireError
from trust.errors import CrlError

log = logging.getLogger("boxd.crl")

CRL_FILE = "crl.pem"
CHECK_TIMEOUT_S = 60.0


class CrlKeeper:
    """Takes CRLs from the platform for one state directory. The constructor does no I/O."""

    def __init__(self, state_dir: Path, on_new: Callable[[Path], None]) -> None:
        self.path = state_dir / CRL_FILE
        self._identity = state_dir / "identity"
        self._on_new = on_new  # the uplink loads it into its TLS context (for the next handshakes)

    async def take(self, pem: bytes) -> bool:
        """Check a CRL from the platform and keep it if it is valid and newer; whether it was kept."""
        try:
            pem = decode_crl(pem)
        except WireError:
            log.warning("ignoring a revocation list that is not a PEM CRL of at most %d bytes", MAX_CRL)
            return False
        if self.path.exists() and self.path.read_bytes() == pem:
            return False
        candidate = temp_path(self.path)
        write_atomic(candidate, pem)
        try:
            args = [sys.executable, "-m", "trust.crl", "verify", str(candidate), str(self._identity / "ca.crt"),
                    str(self._identity / "box.crt")]
            if self.path.exists():
                args.append(str(self.path))
            r = await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True,
                                        timeout=CHECK_TIMEOUT_S, stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                log.warning("the platform's revocation list was not kept: %s", (r.stderr or r.stdout).strip()[-300:])
                return False
            candidate.replace(self.path)
        finally:
            candidate.unlink(missing_ok=True)
        log.info("the platform's revocation list was updated (%s)", r.stdout.strip())
        self._on_new(self.path)
        return True


def verify(candidate: Path, root_file: Path, chain_file: Path, current: Path | None) -> str:
    """Check a CRL (see the module's docstring); returns a line about it.

    Raises:
        CrlError: why it must not be used.
        OSError: a file cannot be read.
    """
    try:
        return _verify(candidate, root_file, chain_file, current)
    except ValueError as e:  # cryptography's: not PEM, not a CRL, not certificates
        raise CrlError(str(e)) from e


def _verify(candidate: Path, root_file: Path, chain_file: Path, current: Path | None) -> str:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    crl = x509.load_pem_x509_crl(candidate.read_bytes())
    roots = x509.load_pem_x509_certificates(root_file.read_bytes())
    issuers = [c for c in x509.load_pem_x509_certificates(chain_file.read_bytes())[1:] if c.subject == crl.issuer]
    issuers += [r for r in roots if r.subject == crl.issuer]
    for issuer in issuers:
        if issuer not in roots and not any(_issued_by(issuer, r, InvalidSignature) for r in roots):
            continue
        if crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            break
    else:
        raise CrlError("its signature does not verify against the platform's CA")
    if current is not None:
        kept = x509.load_pem_x509_crl(current.read_bytes())
        if crl.last_update_utc <= kept.last_update_utc:
            raise CrlError(f"it is not newer than the one kept (issued {crl.last_update_utc:%Y-%m-%d %H:%M:%S}, "
                             f"kept {kept.last_update_utc:%Y-%m-%d %H:%M:%S})")
    return f"issued {crl.last_update_utc:%Y-%m-%d %H:%M:%S} UTC, {len(crl)} revoked certificate(s)"


def _issued_by(cert: object, root: object, invalid: type[Exception]) -> bool:
    try:
        cert.verify_directly_issued_by(root)  # type: ignore[attr-defined]
    except (invalid, ValueError, TypeError):
        return False
    return True


def main(argv: list[str]) -> int:
    """`python -m trust.crl verify CANDIDATE ROOT CHAIN [CURRENT]`: exit 0 and a line, or 1 and why."""
    if len(argv) not in (4, 5) or argv[0] != "verify":
        print("usage: python -m trust.crl verify CANDIDATE ROOT CHAIN [CURRENT]", file=sys.stderr)
        return 2
    try:
        print(verify(Path(argv[1]), Path(argv[2]), Path(argv[3]), Path(argv[4]) if len(argv) == 5 else None))
    except (OSError, CrlError) as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
