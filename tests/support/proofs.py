"""What "nothing lost, nothing twice" means, checked on the cloud's storage of one Box.

Two levels, both on what the cloud stored:

- **batches** (`assert_exactly_once`): every batch number of the queue's epoch present from 1 up
  (or reported evicted), no batch number re-used for other content, no sample twice at one time;
- **samples** (`tally`, `assert_every_sample`): every value the simulator served
  (`drivers.sim._served.ServedLog`), point by point, against the samples the cloud stored.

What the Box owes. The promise is "a reading acknowledged to a bus is on disk": a bus hands a
finished device poll to the daemon (`emit`), which returns only once the readings are committed
to the queue, and only then does the bus go on to its next request. Modbus has no
acknowledgement on the wire, so the proof reads it from the bus's behaviour, a poll at a time
(`poll_numbers`): a device's reads in one life of the Box fall into polls, a new one beginning
where a request (unit, function, address, count) comes again (a poll never repeats a request);
every read of a poll is *owed* once a later poll of the same device has begun in the same life
(its first request went out, so the poll before was emitted). The last poll of each device
before a crash is served but not owed, all of it: the Box may have died before its last reply
arrived or before the emission was committed, and a crash between two requests of a poll
leaves the poll before owed whole (its first requests came again, its later ones not yet).
Everything owed must be stored (else *lost*); nothing may be stored more often than it was
served (else *duplicated*). Values are compared as multisets per point. The "reads" counter points
(`BuildingSimulator(counters=True)`) serve each value once, which makes the check exact: a poll
lost or stored twice shows in its device's counter, and the counter of each stored poll tells
whether the Box owed that poll, so that a repeated value (a setpoint, a status bit) of a poll
it did not owe cannot hide the loss of the same value in one it owed.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from cloud.store import Store
from drivers.sim._served import Served, ServedLog

COUNTER = ".reads"  # the simulator's counter point of each device (`drivers.sim._building.counter_point`)


def assert_exactly_once(store: Store, box_id: str) -> dict[str, int]:
    """Every batch of every epoch present from 1 up (no gap), no sample stored twice.

    Returns figures: batches, samples, epochs, duplicates (0), missing batches (0).
    """
    keys = store.batch_keys(box_id)
    by_epoch: dict[int, list[int]] = {}
    for e, s in keys:
        by_epoch.setdefault(e, []).append(s)
    missing = []
    for e, seqs in by_epoch.items():
        evicted: set[int] = set()  # batches the Box evicted (and said so) are not lost
        for a, b in store.evicted_ranges(box_id, e):
            evicted.update(range(a, b + 1))
        have = set(seqs)
        missing += [(e, s) for s in range(1, max(seqs) + 1) if s not in have and s not in evicted]
    samples = store.samples(box_id)
    dupes = [k for k, n in Counter((p, t) for p, t, _, _ in samples).items() if n > 1]
    assert not missing, f"batches lost: {missing[:10]}"
    conflicts = store.conflicts(box_id)
    assert not conflicts, f"batch numbers re-used for other data (lost queue state): {conflicts[:10]}"
    assert not dupes, f"samples stored twice: {dupes[:10]}"
    return {"batches": len(keys), "samples": len(samples), "epochs": len(by_epoch), "duplicates": 0, "lost": 0}


def assert_counters_monotonic(store: Store, box_id: str, point: str) -> int:
    """A counter point (e.g. an energy meter's kWh) never goes backwards in time order."""
    values = [v for _, _, v, q in store.samples(box_id, point) if q == 0]
    assert values, f"no good sample of {point}"
    numbers = [v for v in values if isinstance(v, int | float)]
    assert numbers == values, f"{point} is not a number"
    assert all(a <= b for a, b in itertools.pairwise(numbers)), f"{point} went backwards"
    return len(values)


# -- samples ------------------------------------------------------------------------------------


@dataclass
class PointTally:
    """One point's (or all points') samples: served by the simulator, owed by the Box, stored by
    the cloud, and the differences."""

    served: int = 0
    owed: int = 0
    stored: int = 0  # good samples
    lost: int = 0  # owed, not stored
    duplicated: int = 0  # stored more often than served
    faults: int = 0  # samples stored with a fault quality (no answer, not connected, ...)

    def add(self, other: PointTally) -> None:
        for name in ("served", "owed", "stored", "lost", "duplicated", "faults"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Tally:
    """The sample accounting of one Box, per point."""

    points: dict[str, PointTally] = field(default_factory=dict)
    missing: dict[str, list[object]] = field(default_factory=dict)  # owed values not stored, per point
    extra: dict[str, list[object]] = field(default_factory=dict)  # values stored more often than served

    @property
    def total(self) -> PointTally:
        out = PointTally()
        for t in self.points.values():
            out.add(t)
        return out

    def figures(self) -> dict[str, int]:
        t = self.total
        return {"served": t.served, "owed": t.owed, "stored": t.stored, "lost": t.lost,
                "duplicated": t.duplicated}

    def describe(self, limit: int = 6, *, lost_only: bool = False) -> str:
        """The points with lost (or duplicated) samples, worst first, with examples of the values."""
        bad = sorted(((t.lost + (0 if lost_only else t.duplicated), p, t) for p, t in self.points.items()),
                     key=lambda x: (-x[0], x[1]))
        bad = [b for b in bad if b[0]]
        lines = [f"{p}: {t.lost} lost {sorted(self.missing[p], key=str)[:5]}"
                 + ("" if lost_only else f", {t.duplicated} duplicated {sorted(self.extra[p], key=str)[:5]}")
                 + f" (served {t.served}, owed {t.owed}, stored {t.stored})"
                 for _, p, t in bad[:limit]]
        return "; ".join(lines) + (f"; and {len(bad) - limit} more points" if len(bad) > limit else "")


def poll_numbers(reads: Sequence[Served]) -> list[int]:
    """For each read, the number of its device's poll (from 0 in each life of the Box, per unit): a
    new poll begins at a request already served in the current one. Exact when every poll of a
    device begins with the same request, as the bus's smallest-first order makes it for the
    simulated building. A poll that began with a request the one before did not have (a slow
    interval group falling due alone, first in the order) is counted with the one before until a
    request comes again: its first reads may be owed too soon, which can report a loss that was
    none, never hide one (what is owed and what is kept are counted by the same polls)."""
    numbers: list[int] = []
    current: dict[tuple[int, int], tuple[int, set[tuple[int, int, int]]]] = {}
    for r in reads:
        n, keys = current.get((r.life, r.unit), (-1, set()))
        if n < 0 or r.key in keys:
            n, keys = n + 1, set()
            current[r.life, r.unit] = (n, keys)
        keys.add(r.key)
        numbers.append(n)
    return numbers


def owed_reads(reads: Sequence[Served]) -> list[bool]:
    """For each read, whether the Box owes it: a later poll of its device began in the same life of
    the Box (see the module docstring)."""
    numbers = poll_numbers(reads)
    last = {(r.life, r.unit): n for r, n in zip(reads, numbers, strict=True)}
    return [n < last[r.life, r.unit] for r, n in zip(reads, numbers, strict=True)]


def tally(reads: Sequence[Served], samples: Sequence[tuple[str, int, object, int]],
          served_reads: Sequence[Served] | None = None) -> Tally:
    """Count the values owed in `reads` and served in `served_reads` (default: the same reads; a
    later, longer log of the same simulator) against the samples stored, per point.

    Losses are counted against the stored polls the Box owed: a stored poll (one device, one time)
    whose counter value is not an owed read is left out of that side (the last poll before a crash,
    a poll after `reads` ended), so that a value repeated there cannot stand in for a lost one.
    Duplicates are counted against every stored sample.
    """
    served: dict[str, Counter[object]] = {}
    owed: dict[str, Counter[object]] = {}
    owed_polls: set[tuple[str, object]] = set()  # (device, counter value) of the polls owed
    for r, is_owed in zip(reads, owed_reads(reads), strict=True):
        for name, value in r.values:
            if is_owed:
                owed.setdefault(name, Counter())[value] += 1
                if name.endswith(COUNTER):
                    owed_polls.add((name[: -len(COUNTER)], value))
    for r in reads if served_reads is None else served_reads:
        for name, value in r.values:
            served.setdefault(name, Counter())[value] += 1
    poll_of: dict[tuple[str, int], object] = {}  # (device, time) -> the counter value stored in that poll
    for point, ts, got, quality in samples:
        if point.endswith(COUNTER) and not quality:
            poll_of[point[: -len(COUNTER)], ts] = got
    stored: dict[str, Counter[object]] = {}  # every good sample
    kept: dict[str, Counter[object]] = {}  # the good samples of owed polls
    faults: Counter[str] = Counter()
    for point, ts, got, quality in samples:
        if quality:
            faults[point] += 1
            continue
        stored.setdefault(point, Counter())[got] += 1
        device = point.partition(".")[0]
        counter = poll_of.get((device, ts))
        if counter is None or (device, counter) in owed_polls:
            kept.setdefault(point, Counter())[got] += 1
    out = Tally()
    for point in sorted(served.keys() | stored.keys() | faults.keys()):
        s, o, k = served.get(point, Counter()), owed.get(point, Counter()), stored.get(point, Counter())
        missing, extra = o - kept.get(point, Counter()), k - s
        out.points[point] = PointTally(s.total(), o.total(), k.total(), missing.total(), extra.total(),
                                       faults[point])
        out.missing[point] = list(missing.elements())
        out.extra[point] = list(extra.elements())
    return out


def assert_every_sample(store: Store, box_id: str, reads: Sequence[Served], *, evicted: int = 0,
                        log: ServedLog | None = None) -> dict[str, int]:
    """Every sample owed in `reads` stored, none stored more often than served (by the time the
    samples were read, in `log`, by default in `reads`); with `evicted` (the samples the Box reported
    evicting), the losses must be no more than that. Returns the figures."""
    samples = store.samples(box_id)  # first: every value stored was served before the log is read
    t = tally(reads, samples, log.reads() if log is not None else None)
    total = t.total
    assert total.owed > 0, "the simulator served nothing the Box owed: the proof proved nothing"
    if evicted:
        assert total.lost <= evicted, f"{total.lost} samples lost, {evicted} evicted: {t.describe()}"
    else:
        assert total.lost == 0, f"{total.lost} samples lost: {t.describe()}"
    assert total.duplicated == 0, f"{total.duplicated} samples duplicated: {t.describe()}"
    return t.figures()


def assert_nothing_lost(store: Store, box_id: str, reads: Sequence[Served], *, evicted: int = 0,
                        log: ServedLog | None = None) -> dict[str, int]:
    """Both levels: samples (`assert_every_sample`) and batches (`assert_exactly_once`). Returns the
    figures: samples served, owed, stored, lost and duplicated; batches and epochs stored."""
    figures = assert_every_sample(store, box_id, reads, evicted=evicted, log=log)
    batches = assert_exactly_once(store, box_id)
    return {**figures, "batches": batches["batches"], "epochs": batches["epochs"]}


def wait_stored(store: Store, box_id: str, reads: Sequence[Served], timeout: float = 60.0,
                evicted: int = 0) -> Tally:
    """Wait until the cloud holds every sample owed in `reads` (all but `evicted`); fail with the
    accounting after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (t := tally(reads, store.samples(box_id))).total.lost > evicted:
        assert time.monotonic() < deadline, f"{t.total.lost} owed samples never arrived: {t.describe(lost_only=True)}"
        time.sleep(0.2)
    return t
