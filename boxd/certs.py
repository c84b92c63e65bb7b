"""The Box's certificate in the daemon: renewal (the ``renew_cert`` command) and its trial.

`Certificates` owns the identity in use. A renewal gets a new key and certificate
(`trust.renewal`, in a process of its own, authenticated by the current certificate) and tries
it on the broker: kept if the Box connects with it within `RENEW_TRIAL_S`, otherwise the
previous identity comes back. A renewed certificate not yet proven when the daemon starts (it
stopped during a trial) gets the same trial (`trial_at_start`, a job of the supervisor). Once
kept, the platform is told, so that it revokes the previous one.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from boxd.errors import CommandFailedError
from boxd.link import Link
from trust import identity, renewal
from trust.errors import EnrollError, IdentityError

log = logging.getLogger("boxd")

RENEW_TRIAL_S = 45.0  # how long a renewed certificate has to connect before the previous one comes back


class Certificates:
    """The identity in use and its renewal. The constructor does no I/O; `load` reads the identity."""

    def __init__(self, state_dir: Path, link: Link) -> None:
        self.state_dir = state_dir
        self.link = link
        self.ident: identity.Identity | None = None
        self.on_trial = False  # a renewed certificate is in use and not yet proven

    def load(self) -> identity.Identity:
        """The identity to start with (finishing a switch cut by a power loss).

        Raises:
            IdentityError: the Box has no usable identity; the message says why.
        """
        recovered = identity.recover(self.state_dir)
        if recovered:
            log.warning("identity: %s", recovered)
        self.ident = identity.load(self.state_dir)
        self.on_trial = (self.state_dir / identity.PREV_DIR).is_dir()
        if self.on_trial:
            log.warning("identity: a renewed certificate is in use and not yet proven; the previous one is kept "
                        "until it connects")
        return self.ident

    async def renew(self) -> str:
        """Renew and try the new certificate; what was done.

        Raises:
            CommandFailedError: the renewal was refused or the new certificate did not work.
        """
        try:
            await renewal.renew(self.state_dir)
        except EnrollError as e:
            raise CommandFailedError(f"the renewal failed: {e}") from e
        identity.activate_next(self.state_dir)
        new = identity.load(self.state_dir)
        log.info("identity: trying the renewed certificate (valid until %s)", f"{new.not_after():%Y-%m-%d}")
        trial_s = RENEW_TRIAL_S
        if await self.link.switch(new, trial_s):
            identity.commit(self.state_dir)
            self.ident = new
            log.info("identity: the renewed certificate works; the previous one is dropped")
            await self._confirm()
            return f"renewed: the new certificate is valid until {new.not_after():%Y-%m-%d %H:%M} UTC"
        error = self.link.state.last_error
        identity.revert(self.state_dir)
        old = identity.load(self.state_dir)
        log.error("identity: the renewed certificate did not connect (%s); back to the previous one", error)
        await self.link.switch(old, 0)
        raise CommandFailedError(f"the new certificate did not connect within {trial_s:.0f} s ({error}); "
                                 "the previous one is in use again")

    async def trial_at_start(self) -> None:
        """Keep an unproven renewed certificate if it connects within the trial, else go back."""
        try:
            async with asyncio.timeout(RENEW_TRIAL_S):  # not wait_for: 3.11's can swallow a cancellation
                await self.link.up.wait()
        except TimeoutError:
            error = self.link.state.last_error
            log.error("identity: the renewed certificate did not connect (%s); back to the previous one", error)
            try:
                identity.revert(self.state_dir)
                self.ident = old = identity.load(self.state_dir)
            except IdentityError as e:
                log.error("identity: cannot go back to the previous one: %s", e)
                return
            await self.link.switch(old, 0)
            return
        finally:
            self.on_trial = False
        identity.commit(self.state_dir)
        log.info("identity: the renewed certificate works; the previous one is dropped")
        await self._confirm()

    async def _confirm(self) -> None:
        """Tell the platform the renewed certificate is in use, so that it revokes the previous one.
        A failure is only logged: the platform accepts both until the Box's next renewal."""
        try:
            await renewal.confirm(self.state_dir)
        except EnrollError as e:
            log.warning("identity: the platform was not told that the renewed certificate is in use (%s); "
                        "it keeps the previous one valid until the next renewal", e)
            return
        log.info("identity: the platform revoked the previous certificate")
