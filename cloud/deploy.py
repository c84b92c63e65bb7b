"""Deployments of Box software in waves: the rules (issue 7, cloud side).

A deployment sends one release (a TUF target) to a set of Boxes, a wave at a time. Each
Box goes ``pending -> sent -> downloading -> installing -> restarting ->`` one terminal
state: ``committed`` (success), ``rolled_back``, ``failed``, ``timeout`` (the failures),
``aborted`` or ``cancelled`` (stopped before it was sent). The next wave starts when every
Box of the current one is terminal and the failures are within the deployment's threshold;
one failure more halts the deployment and aborts the rest as `stop` (the emergency stop)
does. The Boxes report with `ota` events (see /tmp/ota_contract.md and
docs/architecture.md), which arrive at least once, possibly late: a state never goes back.

This module does no network I/O: it works over the `Store`, with the time passed in and a
`send(box_id, name, args, ttl_s) -> command id` callable that queues a command (the
platform passes `Cloud.send_command`; its outbox publishes). It does not read the Boxes'
hardware (the Box refuses a target for other hardware: a `failed` event).

What happens to a deployment is in the audit trail of each account whose Boxes are in it: its
creation and emergency stop (by whom: a user of the API, or the operator), and what the running
cloud does by itself (a wave started, the deployment halted or completed; actor ``platform``).
A caller of the users' API passes its `BoxScope`: a tag then reaches only the Boxes in that scope,
and a named Box out of it is refused as if it did not exist (`OutOfReachError`).
"""

from __future__ import annotations

import logging
import math
import re
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

from cloud import tufrepo as repository
from cloud.errors import CloudError
from cloud.store import BoxScope, DeploymentBoxRow, DeploymentRow, Store
from proto.commands import DEFAULT_HEALTH_S, MAX_HEALTH_S, MIN_HEALTH_S
from proto.uplink import OtaEvent

log = logging.getLogger("boxcloud.deploy")

Send = Callable[[str, str, dict[str, object], float], str]

DEFAULT_WAVES = "1,10%,50%,100%"
DEFAULT_BOX_TIMEOUT_S = 3600.0
MIN_BOX_TIMEOUT_S = 60.0

# The per-Box states, in order: an event never moves a Box back.
PROGRESS = ("downloading", "installing", "restarting")
BOX_TERMINAL = frozenset({"committed", "rolled_back", "failed", "aborted", "timeout", "cancelled"})
FAILURES = frozenset({"rolled_back", "failed", "timeout"})
_RANK = {"pending": 0, "sent": 1, "downloading": 2, "installing": 3, "restarting": 4}
ABORTABLE = ("sent", "downloading")  # where update_abort can still stop a Box
ENDED = frozenset({"completed", "halted", "stopped"})
OPERATOR = "operator"  # the actor of what `boxcloud` does on the cloud host
PLATFORM = "platform"  # the actor of what the running cloud does by itself

_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


class DeployError(CloudError):
    """A deployment refused or not found (the operator's input; the message says why)."""


class ConflictError(DeployError):
    """Some of the Boxes are in another running deployment: `conflicts` has (Box, deployment) of each."""

    def __init__(self, conflicts: list[tuple[str, str]]) -> None:
        super().__init__("already in a running deployment: " + ", ".join(f"{b} ({d})" for b, d in conflicts)
                         + " ('boxcloud deploy stop ID' ends one)")
        self.conflicts = conflicts


class EndedError(DeployError):
    """A deployment asked to stop has already ended (completed, halted or stopped): nothing changed.
    `deployment` is it as it is."""

    def __init__(self, d: DeploymentRow) -> None:
        super().__init__(f"deployment {d.id} has already ended: {d.status}" + (f" ({d.reason})" if d.reason else "")
                         + "; nothing changed")
        self.deployment = d


class OutOfReachError(DeployError):
    """A named Box is outside the caller's scope (or does not exist: the two are not told apart)."""

    def __init__(self, box_id: str) -> None:
        super().__init__(f"no Box {box_id!r} here")
        self.box_id = box_id


def check_tag(tag: str) -> str:
    """A tag as given, or DeployError: letters, digits, '.', '_', ':' and '-', 1..64."""
    if not _TAG.fullmatch(tag):
        raise DeployError(f"tag {tag!r}: letters, digits, '.', '_', ':' and '-', 1 to 64 characters")
    return tag


def parse_waves(spec: str, fleet: int) -> list[int]:
    """Resolve a wave spec ("1,10%,50%,100%") for `fleet` Boxes into cumulative Box counts.

    Each item is a count or a percent of the fleet (rounded up), cumulative; each wave adds at
    least one Box, and the last wave takes every Box (waves past the whole fleet are dropped).

    Raises:
        DeployError: an item that is neither, zero, over 100 %, or smaller than the one before.
    """
    if fleet < 1:
        raise DeployError("a deployment needs at least one Box")
    items = [i.strip() for i in spec.split(",")]
    if not spec.strip() or any(not i for i in items):
        raise DeployError(f"waves {spec!r}: a comma-separated list of counts or percents, like {DEFAULT_WAVES}")
    out: list[int] = []
    before = {"": 0.0, "%": 0.0}  # the last count, the last percent (a count and a percent compare per fleet)
    for n, item in enumerate(items, 1):
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(%?)", item)
        if m is None:
            raise DeployError(f"wave {n} ({item!r}) is neither a number of Boxes nor a percent (like 10%)")
        value = float(m[1])
        if m[2] and not 0 < value <= 100:
            raise DeployError(f"wave {n} ({item}) must be a percent above 0 and at most 100")
        if not m[2] and (value < 1 or value != int(value)):
            raise DeployError(f"wave {n} ({item}) must be a whole number of Boxes, at least 1")
        if value < before[m[2]]:
            raise DeployError(f"wave {n} ({item}) is smaller than a wave before: waves are cumulative "
                              "(each counts the Boxes of the waves before it too)")
        before[m[2]] = value
        if out and out[-1] >= fleet:
            break
        asked = value * fleet / 100 if m[2] else value
        out.append(min(fleet, max(math.ceil(asked - 1e-9), out[-1] + 1 if out else 1)))
    if out[-1] < fleet:
        out.append(fleet)
    return out


def parse_max_failures(spec: str | int, fleet: int) -> int:
    """A failure threshold: a count ("2") or a percent of the fleet ("5%", rounded down)."""
    text = str(spec).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(%?)", text)
    if m is None or (not m[2] and "." in m[1]) or (m[2] and float(m[1]) > 100):
        raise DeployError(f"max failures {spec!r}: a number of Boxes (0: the first failure halts) or a percent "
                          "of the fleet, like 5%")
    return math.floor(float(m[1]) * fleet / 100 + 1e-9) if m[2] else int(m[1])


def find_target(repo: Path, target: str, version: str | None) -> tuple[str, str]:
    """(target name, version) of a published release named by its target name or its version.

    Raises:
        DeployError: nothing published matches, or the given version is not the target's.
    """
    try:
        published = repository.published_targets(repo)
    except (OSError, ValueError) as e:
        raise DeployError(f"cannot read the TUF repository in {repo}: {e}") from e
    if target in published:
        have = published[target][0]
        if version is not None and version != have:
            raise DeployError(f"target {target} is version {have}, not {version}")
        return target, have
    by_version = [name for name, (v, _, _) in published.items() if v == target]
    if len(by_version) == 1 and version in (None, target):
        return by_version[0], target
    known = ", ".join(f"{n} ({v})" for n, (v, _, _) in sorted(published.items())) or "none yet"
    raise DeployError(f"no published release {target!r} (published: {known}; 'boxcloud release publish' adds one)")


class Deployments:
    """Deployment rules over the store. The constructor does no I/O."""

    def __init__(self, store: Store, repo: Path, send: Send) -> None:
        self.store, self.repo, self.send = store, repo, send

    # -- operator actions ---------------------------------------------------------------------

    def create(self, target: str, *, boxes: Sequence[str] = (), tag: str | None = None,
               version: str | None = None, waves: str = DEFAULT_WAVES, max_failures: str | int = 0,
               health_s: int = DEFAULT_HEALTH_S, box_timeout_s: float = DEFAULT_BOX_TIMEOUT_S,
               now: float, scope: BoxScope | None = None, actor: str = OPERATOR) -> DeploymentRow:
        """Create a running deployment (its first wave is sent by the next `tick`).

        Args:
            target: the TUF target name of the release (or its version, when one target has it).
            boxes: the Boxes, in the order they go (the first ones in the first wave); or
            tag: every unrevoked Box with this tag (by id).
            version: when given, must be the target's version.
            waves: cumulative counts or percents of the Boxes (see `parse_waves`).
            max_failures: more failures than this (a count or a percent) halts the deployment.
            health_s: the deadline for each Box to become healthy on the new version (connected, every bus
                polling, data acknowledged) and commit it; past it, the Box rolls back by itself.
            box_timeout_s: a Box with no final answer this long after it was sent counts as failed.
            now: the time.
            scope: the Boxes the caller may deploy to (a user of the API); None: every Box (the operator).
            actor: who creates it (for the audit trail).

        Raises:
            OutOfReachError: a named Box out of `scope` (or unknown, with a scope).
            ConflictError: a Box is in another running deployment.
            DeployError: why else the deployment cannot be created.
        """
        if bool(boxes) == (tag is not None):
            raise DeployError("name the Boxes (--box ID ...) or a tag (--tag T), not both and not neither")
        if not isinstance(health_s, int) or not MIN_HEALTH_S <= health_s <= MAX_HEALTH_S:
            raise DeployError(f"health time {health_s} s: from {MIN_HEALTH_S} to {MAX_HEALTH_S} s")
        if not box_timeout_s >= max(MIN_BOX_TIMEOUT_S, health_s):
            raise DeployError(f"Box timeout {box_timeout_s:g} s: at least {MIN_BOX_TIMEOUT_S:g} s and the health "
                              f"time ({health_s} s)")
        name, ver = find_target(self.repo, target, version)
        chosen = self._boxes(list(boxes), tag, scope)
        wave_counts = parse_waves(waves, len(chosen))
        limit = parse_max_failures(max_failures, len(chosen))
        dep_id = f"d-{secrets.token_hex(4)}"
        row = DeploymentRow(dep_id, name, ver, {"tag": tag} if tag is not None else {"boxes": chosen},
                            wave_counts, limit, health_s, float(box_timeout_s), "running", None, now, now)
        assignment = [(box_id, next(w for w, c in enumerate(wave_counts, 1) if i < c))
                      for i, box_id in enumerate(chosen)]
        conflicts = self.store.add_deployment(row, assignment)
        if conflicts:
            raise ConflictError(conflicts)
        log.info("deployment %s of %s (%s) to %d Box(es) in waves %s created", dep_id, name, ver, len(chosen),
                 wave_counts)
        self._audit(row, chosen, actor, "deployment.create", release=name, version=ver, tag=tag,
                    waves=wave_counts, max_failures=limit)
        return row

    def _boxes(self, boxes: list[str], tag: str | None, scope: BoxScope | None) -> list[str]:
        if tag is not None:
            check_tag(tag)
            tagged = self.store.tagged(tag)
            reached = set(tagged) if scope is None else self.store.boxes_reached(scope, tagged)
            chosen = [b for b in tagged if b in reached and (r := self.store.box(b)) and r.revoked is None]
            if not chosen:
                raise DeployError(f"no unrevoked Box has the tag {tag!r}" + (
                    f" ('boxcloud box tag BOX {tag}')" if scope is None else " within your reach"))
            return chosen
        if scope is not None:
            reached = self.store.boxes_reached(scope, boxes)
            beyond = next((b for b in boxes if b not in reached), None)
            if beyond is not None:
                raise OutOfReachError(beyond)
        seen: list[str] = []
        for b in boxes:
            r = self.store.box(b)
            if r is None:
                raise DeployError(f"no Box {b!r} here ('boxcloud box list' shows them)")
            if r.revoked is not None:
                raise DeployError(f"Box {b} is revoked")
            if b not in seen:
                seen.append(b)
        return seen

    def get(self, dep_id: str) -> DeploymentRow:
        d = self.store.deployment(dep_id)
        if d is None:
            raise DeployError(f"no deployment {dep_id!r} ('boxcloud deploy list' shows them)")
        return d

    def stop(self, dep_id: str, reason: str, now: float, actor: str = OPERATOR) -> DeploymentRow:
        """The emergency stop: no Box is sent the update any more; those downloading are told to abort.

        Pending Boxes are cancelled (never sent), those whose command is still queued too (the
        command is cancelled); those sent or downloading get an `update_abort` and keep following
        their events (one past the point of no return finishes).

        Raises:
            DeployError: no such deployment.
            EndedError: it had ended already (checked in the transaction that would stop it).
        """
        d = self.get(dep_id)
        if not self.store.end_deployment(dep_id, "stopped", reason, now,
                                         cancel_pending="deployment stopped before it was sent"):
            raise EndedError(self.get(dep_id))
        log.warning("deployment %s stopped: %s", dep_id, reason)
        self._audit(d, None, actor, "deployment.stop", reason=reason)
        self._abort_rest(d, "stopped", now)
        return self.get(dep_id)

    def _abort_rest(self, d: DeploymentRow, why: str, now: float) -> None:
        for b in self.store.deployment_boxes(d.id):  # the pending ones were cancelled with the status change
            if b.state in ABORTABLE:
                if b.cmd_id is not None and b.state == "sent" and self.store.cancel_command(b.cmd_id):
                    self.store.set_box_state(d.id, b.box_id, "cancelled", f"deployment {why}: the queued update "
                                             "was withdrawn", now, only_from=("sent",))
                else:
                    self._send_abort(d, b)

    def _send_abort(self, d: DeploymentRow, b: DeploymentBoxRow) -> None:
        try:
            self.send(b.box_id, "update_abort", {"deployment": d.id}, d.box_timeout_s)
        except CloudError as e:  # e.g. revoked meanwhile: nothing can reach it anyway
            log.warning("cannot tell %s to abort deployment %s: %s", b.box_id, d.id, e)

    # -- the running cloud ----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Advance every running deployment: timeouts, halt, next wave, completion."""
        for d in self.store.deployments("running"):
            self._tick_one(d, now)
        for d in self.store.ended_with_open_boxes():  # their Boxes still time out, for the record
            self._timeouts(d, self.store.deployment_boxes(d.id), now)

    def _timeouts(self, d: DeploymentRow, boxes: list[DeploymentBoxRow], now: float) -> bool:
        changed = False
        for b in boxes:
            if b.state not in BOX_TERMINAL and b.sent is not None and now >= b.sent + d.box_timeout_s:
                changed |= self.store.set_box_state(
                    d.id, b.box_id, "timeout", f"no final answer {d.box_timeout_s:g} s after the update was sent"
                    + (f" (last: {b.state}{': ' + b.detail if b.detail else ''})" if b.state != "sent" else ""),
                    now, only_from=(b.state,))
        return changed

    def _tick_one(self, d: DeploymentRow, now: float) -> None:
        boxes = self.store.deployment_boxes(d.id)
        if self._timeouts(d, boxes, now):
            boxes = self.store.deployment_boxes(d.id)
        failed = [b for b in boxes if b.state in FAILURES]
        if len(failed) > d.max_failures:
            reason = (f"{len(failed)} failure(s), more than the {d.max_failures} allowed: "
                      + "; ".join(f"{b.box_id} {b.state}" + (f" ({b.detail})" if b.detail else "") for b in failed))
            if self.store.end_deployment(d.id, "halted", reason[:2000], now,
                                         cancel_pending="deployment halted before it was sent"):
                log.error("deployment %s halted: %s", d.id, reason)
                self._audit(d, [b.box_id for b in boxes], PLATFORM, "deployment.halt", reason=reason[:2000])
                self._abort_rest(d, "halted", now)
            return
        open_boxes = [b for b in boxes if b.state not in BOX_TERMINAL]
        if not open_boxes:
            done = sum(b.state == "committed" for b in boxes)
            if self.store.end_deployment(d.id, "completed", f"{done} of {len(boxes)} Box(es) committed", now):
                log.info("deployment %s completed: %d of %d committed", d.id, done, len(boxes))
                self._audit(d, [b.box_id for b in boxes], PLATFORM, "deployment.complete", committed=done)
            return
        wave = min(b.wave for b in open_boxes)
        in_wave = [b for b in boxes if b.wave == wave]
        if all(b.state == "pending" for b in in_wave):  # the wave starts now
            self._audit(d, [b.box_id for b in in_wave], PLATFORM, "deployment.wave", wave=wave,
                        of=len(d.waves), boxes=len(in_wave))
        for b in open_boxes:
            if b.wave == wave and b.state == "pending":
                self._send_update(d, b, now)

    def _audit(self, d: DeploymentRow, box_ids: list[str] | None, actor: str, action: str, **detail: object) -> None:
        """A record in the audit trail of each account with Boxes among `box_ids` (None: the deployment's),
        naming that account's Boxes only."""
        ids = [b.box_id for b in self.store.deployment_boxes(d.id)] if box_ids is None else box_ids
        for account, its in self.store.accounts_of(ids).items():
            self.store.audit(account, actor, action, f"deployment:{d.id}", "ok", **detail, account_boxes=its[:100],
                             account_box_count=len(its))

    def _send_update(self, d: DeploymentRow, b: DeploymentBoxRow, now: float) -> None:
        args: dict[str, object] = {"deployment": d.id, "target": d.target, "version": d.version,
                                   "health_s": d.health_s}
        try:
            cmd_id = self.send(b.box_id, "update", args, d.box_timeout_s)
        except CloudError as e:  # revoked since the deployment was created: a failure of that Box
            self.store.set_box_state(d.id, b.box_id, "failed", f"not sent: {e}", now, only_from=("pending",))
            return
        if self.store.set_box_state(d.id, b.box_id, "sent", "", now, only_from=("pending",), cmd_id=cmd_id):
            log.info("deployment %s: update sent to %s (wave %d)", d.id, b.box_id, b.wave)
            return
        # stopped meanwhile (another process): the command must not go, or must be aborted
        if not self.store.cancel_command(cmd_id):
            self.store.set_box_state(d.id, b.box_id, "sent", "sent as the deployment was stopped", now,
                                     only_from=("cancelled",), cmd_id=cmd_id)
            self._send_abort(d, b)

    def on_event(self, box_id: str, ev: OtaEvent, now: float) -> None:
        """An `ota` event from a Box (decoded and checked by `proto.uplink`): moves the Box forward in
        its deployment. Never raises."""
        try:
            self._on_event(box_id, ev, now)
        except Exception:  # a Box's message never breaks the receiver
            log.exception("cannot handle an ota event from %s", box_id)

    def _on_event(self, box_id: str, ev: OtaEvent, now: float) -> None:
        d = self.store.deployment(ev.deployment)
        row = next((b for b in self.store.deployment_boxes(ev.deployment) if b.box_id == box_id), None)
        if d is None or row is None:
            log.warning("ignoring an ota event from %s for deployment %s: %s", box_id, ev.deployment,
                        "no such deployment" if d is None else "the Box is not in it")
            return
        if ev.version != d.version:
            log.warning("ignoring an ota event from %s: version %s, deployment %s is of %s", box_id, ev.version,
                        d.id, d.version)
            return
        self.store.put_ota_event(d.id, box_id, ev.to_doc(), now)
        before = [s for s, r in _RANK.items() if 0 < r < _RANK.get(ev.state, 99)]
        detail = ev.detail if ev.progress is None else f"{ev.progress:.0%}" + (f" {ev.detail}" if ev.detail else "")
        if self.store.set_box_state(d.id, box_id, ev.state, detail, now, only_from=before):
            log.info("deployment %s: %s %s%s", d.id, box_id, ev.state, f" ({ev.detail})" if ev.detail else "")
        elif ev.state == row.state == "downloading":  # progress of the same state
            self.store.set_box_state(d.id, box_id, ev.state, detail, now, only_from=("downloading",))
        else:
            log.info("deployment %s: %s's %s event ignored (it is %s)", d.id, box_id, ev.state, row.state)
