"""The crash proofs' rig: a Box polling the simulated building, reaching the broker through the
fault proxy, killed or powered off at chosen moments, and the sample accounting at the end. The
platform plays either one before stored notices (its receiver's `notices` off: the Box deletes a
batch at the broker's PUBACK, an older platform's path, still supported) or today's (`notices`: the
Box holds a batch after its PUBACK until the platform's "stored up to" notice, and a crash while it
holds some sends them again: the platform keeps each once). The receivers' own deaths are
test_receiver_kill.py's.

Aims (`Rig.life`), each ending with the Box frozen (SIGSTOP: every thread stops at once, as at
the first instant of a crash or power cut), then for a power cut the LazyFS state directory
dropping what was not synced, then SIGKILL:

- ``random``: a random moment (0-0.5 s) after new data reached the cloud;
- ``unsent``: the proxy holds everything the Box sends (UP stalled) while it goes on polling,
  writing readings, sealing batches and publishing them into a link that delivers nothing;
- ``unacked``: the proxy holds what the broker sends back (DOWN stalled): the cloud stores
  batches whose acknowledgement (PUBACK) never reaches the Box, which sends them again after
  the restart (counted: `Rig.expected_resends`);
- ``<kind>-<before|after>:<n>``: a crash point in the queue (`tests.support.crashpoint`): e.g.
  ``seal-before:3`` inside the third seal transaction, ``ack-before:3`` once the broker's
  acknowledgement arrived and before the batch's removal is committed (it is sent again).

After a kill the proxy resets the held connections (what they held is lost on the wire), and
the simulator starts counting the Box's next life (`SimThread.end_life`).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from types import TracebackType

from cloud.platform import Cloud
from drivers.sim._served import Served
from tests.support.boxproc import BoxProcess
from tests.support.cloudkit import provision
from tests.support.crashpoint import is_stopped
from tests.support.faultproxy import Direction, FaultProxy
from tests.support.lazyfs import LazyFS
from tests.support.proofs import assert_nothing_lost, wait_stored
from tests.support.simthread import SimThread
from tests.support.wait import wait_for
from tests.support.wan import retarget

UPLINK = "[uplink]\nbatch_delay_ms = 20\nreconnect_max_s = 1\nmax_batch_samples = 200\n\n"
UNACKED_RESENDS = 3  # batches the cloud holds, unacknowledged to the Box, before an "unacked" kill


class Rig:
    """A provisioned Box on `state` (or on a LazyFS over it, with `power`), the building, the proxy."""

    def __init__(self, cloud: Cloud, tmp: Path, box_id: str, *, power: bool = False, seed: int = 0,
                 notices: bool = False) -> None:
        self.cloud, self.box_id, self.power, self.notices = cloud, box_id, power, notices
        if cloud.receiver is not None:
            # without `notices`, the platform plays one before stored notices (the Box deletes at the
            # broker's PUBACK; compatibility); with them, today's: the Box deletes at the stored notice
            cloud.receiver.notices = notices
        self.rng = random.Random(seed)
        self.backing = tmp / ("disk" if power else "box")
        ident = provision(cloud, self.backing, box_id)
        self.building = SimThread(update_interval_s=0.05, counters=True, record=True)
        self.proxy = FaultProxy("127.0.0.1", cloud.settings.broker_port)
        self.conf = tmp / "boxd.toml"
        self.expected_resends = 0
        self.recovery: list[float] = []  # seconds from (re)start or power-on to new data in the cloud
        self._fs: LazyFS | None = None
        self._box: BoxProcess | None = None
        self._ident_dir = ident.directory

    def __enter__(self) -> Rig:
        self.building.__enter__()
        self.proxy.start()
        retarget(self._ident_dir, "localhost", self.proxy.port)
        # counters, and no retry: a read the Box gave up on would be served again as if it were its next poll
        self.conf.write_text(UPLINK + self.building.sim.points_toml(0.1, timeout_s=10.0, retries=0))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self._box is not None and self._box.proc.poll() is None:
                self._box.kill()
            if self._fs is not None and self._fs.mounted:
                self._fs.crash()
        finally:
            self.proxy.stop()
            self.building.__exit__(exc_type, exc, tb)

    # -- lives ----------------------------------------------------------------------------------

    def batches(self) -> int:
        return len(self.cloud.store.batch_keys(self.box_id))

    def _start(self, crashpoint: str | None = None) -> BoxProcess:
        started = time.monotonic()
        state = self.backing
        if self.power:
            self._fs = LazyFS(self.backing)
            state = self._fs.mount()
        before = self.batches()
        box = self._box = BoxProcess.start(state, self.conf, crashpoint=crashpoint)
        if crashpoint is None:  # (one at a crash point may freeze before it says it is connected)
            box.wait_connected()
            wait_for(lambda: self.batches() > before, 30, "new batches")
            self.recovery.append(time.monotonic() - started)
        return box

    def life(self, aim: str) -> None:
        """Start the Box, let it run into `aim`, and crash it there (see the module docstring)."""
        box = self._start(crashpoint=aim if ":" in aim else None)
        if aim == "random":
            time.sleep(self.rng.uniform(0.0, 0.5))  # the random moment of the crash (fault injection, not a wait)
        elif aim == "unsent":
            self.proxy.stall(Direction.UP)
            served = len(self.building.served)
            wait_for(lambda: len(self.building.served) > served + 60, 30, "polls while nothing gets out")
        elif aim == "unacked":
            self.proxy.stall(Direction.DOWN)
            stored = self.batches()
            wait_for(lambda: self.batches() >= stored + 2 * UNACKED_RESENDS, 30, "batches stored, not acknowledged")
            self.expected_resends += UNACKED_RESENDS
        else:
            wait_for(lambda: is_stopped(box.proc.pid) or box.proc.poll() is not None, 30, f"the crash point {aim}")
            assert box.proc.poll() is None, box.log.read_text()[-2000:]
            if aim.startswith("ack-before"):  # acknowledged by the broker, still in the queue: sent again
                self.expected_resends += 1
        self._crash(box)

    def _crash(self, box: BoxProcess) -> None:
        box.freeze()
        if self._fs is not None:
            self._fs.crash()  # the disk loses what was not synced ...
        box.kill()  # ... and the Box dies with it
        self.proxy.reset_all()
        self.proxy.heal()
        self.building.end_life()

    def last_life(self) -> tuple[list[Served], BoxProcess]:
        """Start the Box once more and wait until the cloud holds every sample owed so far; returns
        those reads (the Box runs on: `finish` stops it)."""
        box = self._start()
        reads = self.building.served.reads()
        wait_stored(self.cloud.store, self.box_id, reads)
        return reads, box

    def finish(self, reads: list[Served], box: BoxProcess) -> dict[str, int]:
        """Stop the Box cleanly and prove: nothing owed lost, nothing stored twice."""
        box.stop()
        if self._fs is not None:
            self._fs.unmount()
        figures = assert_nothing_lost(self.cloud.store, self.box_id, reads,
                                      log=self.building.served)
        resent = self.cloud.receiver.counters.duplicates if self.cloud.receiver else 0
        # with stored notices, those queued in the Box's session while it was down arrive before its
        # first publication: it sends again none of what was stored, whatever the aims (0 is right)
        if not self.notices:
            assert resent >= self.expected_resends, f"{resent} batches resent, {self.expected_resends} expected"
        figures["resent"] = resent
        return figures
