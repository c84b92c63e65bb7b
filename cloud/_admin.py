"""What an operator does to the fleet through `cloud.platform.Cloud`: Boxes added (tokens), revoked,
decommissioned and tagged, configurations pushed, commands sent, deployments made.

`Administration` is the part of `Cloud` that works whether or not the services run in this
process: everything goes through the database (the running cloud's outbox thread publishes what
is queued), but a revocation, which also reloads the broker. It is a base class of `Cloud` only,
split off to keep each module readable; what it needs of `Cloud` is declared below.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import ec

import boxconfig
from cloud import deploy
from cloud.enroll import check_serial, new_token, token_hash
from cloud.errors import BrokerError, CloudError, NothingChangedError, PkiError, UnknownError
from cloud.pki import Pki
from cloud.store import BoxRow, DeploymentRow, Store
from proto.commands import DEFAULT_HEALTH_S
from proto.downlink import MAX_CONFIG_PAYLOAD, MAX_CONFIG_TEXT, ConfigPush, command
from proto.errors import RejectedError, WireError

if TYPE_CHECKING:
    from cloud.broker_api import BrokerControl
    from cloud.platform import Settings

log = logging.getLogger("boxcloud")


def no_box(box_id: str) -> str:
    """The one wording of an unknown Box id, for every command."""
    return f"no Box {box_id!r} here ('boxcloud box list' shows them)"


def _local(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M %Z")



class Administration:
    """The fleet's administration (see the module's docstring); `Cloud` provides what is declared here."""

    store: Store
    deployer: deploy.Deployments
    pki: Pki

    @property
    def settings(self) -> Settings:
        raise NotImplementedError

    @property
    def broker(self) -> BrokerControl:
        raise NotImplementedError

    def write_crl(self) -> None:
        raise NotImplementedError

    def revocations_changed(self) -> None:
        raise NotImplementedError

    def enroll_keys(self, keys: Sequence[tuple[str, ec.EllipticCurvePublicKey]]) -> list[bytes]:
        """Bulk enrolment: certificates for many Boxes at once from their public keys (a factory's
        batch, a fleet simulator), each Box recorded and, when the broker runs, given its rights in a
        few messages (otherwise the broker reads them from the database when it starts). Returns
        each Box's certificate chain (PEM), in the order given. A Box enrolled before is replaced
        (its earlier certificates revoked), as with a token.

        Raises:
            CloudError: a malformed Box ID or a weak key (nothing enrolled), or the broker refused.
        """
        for box_id, _ in keys:
            check_serial(box_id)
        try:
            signed = self.pki.sign_box_keys(keys)
        except PkiError as e:
            raise CloudError(f"bulk enrolment refused, nothing enrolled: {e}") from e
        ended = False
        for (box_id, _), (_, leaf) in zip(keys, signed, strict=True):
            ended |= bool(self.store.enroll_box(box_id, box_id, leaf.serial_number,
                                                leaf.not_valid_after_utc.timestamp()))
        if ended:
            self.revocations_changed()
        if self.broker.running():
            try:
                self.broker.add_boxes([box_id for box_id, _ in keys])
            except BrokerError as e:
                raise CloudError(f"{len(keys)} Boxes enrolled, but the broker did not take their rights: {e} "
                                 "(they get them when 'boxcloud run' restarts)") from e
        log.info("bulk enrolment: %d Boxes", len(keys))
        return [chain for chain, _ in signed]

    def add_box(self, serial: str, ttl_s: float, *, replace: bool = False) -> tuple[str, float]:
        """Issue a single-use enrollment token for `serial` (its earlier live tokens are cancelled:
        a Box has one live token at most); returns (token, expiry time).

        Raises:
            CloudError: the Box is enrolled (and not revoked) and `replace` is not set: enrolling
                with the token ends every certificate the Box has now.
        """
        check_serial(serial)
        self.settings  # noqa: B018 - fail early when there is no cloud here
        row = self.store.box(serial)
        if row is not None and row.revoked is None and not replace:
            state = "online" if row.online else "offline"
            raise CloudError(f"Box {serial} is enrolled and {state} (status since "
                             f"{datetime.fromtimestamp(row.status_ts or row.enrolled, UTC):%Y-%m-%d %H:%M} UTC): "
                             "enrolling it again ends every certificate it has now. To replace it, add --replace")
        token = new_token()
        expires, _cancelled = self.store.add_token(token_hash(token), serial, ttl_s)
        return token, expires

    def push_config(self, box_id: str, toml_text: str, *, check: bool = True, allow_empty: bool = False) -> int:
        """Queue a whole configuration for a Box; returns its version. The running cloud sends it.

        Raises:
            CloudError: unknown Box, too big, or (with `check`) not a valid configuration: the
                message lists every reason (the Box validates it again in any case).
        """
        self._known_box(box_id)
        push = ConfigPush(1, toml_text, allow_empty)
        payload = push.encode()
        if len(payload) > MAX_CONFIG_PAYLOAD or len(toml_text.encode()) > MAX_CONFIG_TEXT:
            raise CloudError(f"the configuration is too big to send ({len(payload)} bytes compressed, at most "
                             f"{MAX_CONFIG_PAYLOAD})")
        if check:
            try:
                boxconfig.check_push(push)
            except RejectedError as e:
                reasons = list(e.reasons) or [str(e).removeprefix("config: ")]
                if len(reasons) == 1:
                    raise CloudError(f"not sent: {reasons[0]}") from None
                err = CloudError(f"not sent: {len(reasons)} problems")
                err.reasons = reasons  # type: ignore[attr-defined]
                raise err from None
        return self.store.add_config(box_id, toml_text, allow_empty)

    def send_command(self, box_id: str, name: str, args: dict[str, object], ttl_s: float = 300) -> str:
        """Queue a command for a Box; returns its id. The running cloud sends it.

        Raises:
            CloudError: unknown Box, or a command the Box would refuse (name, arguments).
        """
        self._known_box(box_id)
        cmd_id = f"c-{secrets.token_hex(8)}"
        expires = time.time() + ttl_s
        try:
            command(cmd_id, name, expires, args)
        except WireError as e:
            raise CloudError(str(e)) from None
        self.store.add_command(cmd_id, box_id, name, args, expires)
        return cmd_id

    def _known_box(self, box_id: str) -> None:
        row = self._require_box(box_id)
        if row.revoked is not None:
            raise CloudError(f"Box {box_id} is revoked: it can no longer be sent anything")

    def revoke(self, box_id: str) -> bool:
        """Revoke a Box: CRL, broker reload, then its live session is cut.

        Returns:
            whether the running broker confirmed the cut (False when no broker runs).
        """
        row = self._require_box(box_id)
        if row.revoked is not None:
            raise NothingChangedError(f"Box {box_id} was already revoked (on {_local(row.revoked)}): nothing changed")
        self.store.revoke(box_id)
        self.write_crl()
        self.store.set_status(box_id, False, datetime.now(UTC).timestamp(), "revoked", None)
        if not self.broker.running():
            return False
        self.broker.crl_changed()  # new handshakes now see the CRL ...
        try:
            self.broker.cut_off(box_id)  # ... and the open session ends, with its rights
            self.broker.clear_retained(box_id)  # ... and what it left retained ("online") goes
        except BrokerError as e:
            raise CloudError(f"Box {box_id} is revoked, but its live session could not be ended: {e}") from e
        return True

    def decommission(self, box_id: str, *, delete_data: bool = False) -> list[str]:
        """Take a Box out of the fleet: revoked (its session ended, its retained status and point
        table cleared), its retained configuration cleared on the broker (by the running cloud),
        its tags and queued commands dropped, and
        with `delete_data` everything stored about it. Returns what was done, in words.

        Raises:
            CloudError: unknown Box, or (without `delete_data`) it was decommissioned already.
        """
        row = self._require_box(box_id)
        done = []
        if row.revoked is None:
            cut = self.revoke(box_id)
            done.append("certificate revoked" + (", live session ended" if cut else "")
                        + ", its retained status and point table cleared")
        elif not delete_data and not self.tags(box_id) and not self.store.configs(box_id, 1):
            raise NothingChangedError(f"Box {box_id} was already decommissioned: nothing changed "
                                 "(--delete-data also deletes its data)")
        else:
            done.append("already revoked")
        self.store.untag_box(box_id, self.tags(box_id))
        for cmd in self.store.unpublished_commands(time.time()):
            if cmd.box_id == box_id:
                self.store.cancel_command(cmd.id)
        self.store.request_clear_retained(box_id)
        running = self.broker.running()
        done.append("its retained configuration " + ("is being cleared" if running else
                                                     "will be cleared when 'boxcloud run' runs"))
        if delete_data:
            self.store.delete_box(box_id)
            done.append("its data deleted")
        else:
            done.append("its data kept ('--delete-data' deletes it)")
        log.info("Box %s decommissioned (%s)", box_id, "data deleted" if delete_data else "data kept")
        return done

    # -- tags and deployments --------------------------------------------------------------------

    def tag(self, box_id: str, tags: Sequence[str]) -> None:
        """Give a Box tags (deployments can target a tag).

        Raises:
            CloudError: unknown Box or a malformed tag.
        """
        self._require_box(box_id)
        self.store.tag_box(box_id, [deploy.check_tag(t) for t in tags])

    def untag(self, box_id: str, tags: Sequence[str]) -> int:
        """Take tags off a Box; returns how many it had."""
        self._require_box(box_id)
        return self.store.untag_box(box_id, tags)

    def tags(self, box_id: str) -> list[str]:
        """A Box's tags, sorted."""
        return self.store.tags().get(box_id, [])

    def create_deployment(self, target: str, *, boxes: Sequence[str] = (), tag: str | None = None,
                          version: str | None = None, waves: str = deploy.DEFAULT_WAVES,
                          max_failures: str | int = 0, health_s: int = DEFAULT_HEALTH_S,
                          box_timeout_s: float = deploy.DEFAULT_BOX_TIMEOUT_S) -> DeploymentRow:
        """Create a deployment of a published release (see `cloud.deploy.Deployments.create`); the running
        cloud sends it wave by wave.

        Raises:
            CloudError: why not (the message says).
        """
        self.settings  # noqa: B018 - fail early when there is no cloud here
        return self.deployer.create(target, boxes=boxes, tag=tag, version=version, waves=waves,
                                       max_failures=max_failures, health_s=health_s, box_timeout_s=box_timeout_s,
                                       now=time.time())

    def stop_deployment(self, dep_id: str, reason: str = "stopped by the operator") -> DeploymentRow:
        """The emergency stop of a deployment (see `cloud.deploy.Deployments.stop`)."""
        return self.deployer.stop(dep_id, reason, time.time())

    def deployments(self) -> list[DeploymentRow]:
        """Every deployment, newest first."""
        return self.store.deployments()

    def deployment(self, dep_id: str) -> DeploymentRow:
        """One deployment; CloudError when there is none of this id."""
        return self.deployer.get(dep_id)

    def _require_box(self, box_id: str) -> BoxRow:
        """The Box, or the one wording of "no such Box" every command uses."""
        row = self.store.box(box_id)
        if row is None:
            raise UnknownError(no_box(box_id))
        return row

    def box(self, box_id: str) -> BoxRow:
        """One Box; `UnknownError` (the one wording) when there is none of this id."""
        return self._require_box(box_id)
