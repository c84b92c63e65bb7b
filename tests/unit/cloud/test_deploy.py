"""Deployment rules (cloud.deploy) on a real store, a recording `send` and a clock of the test's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud import tufrepo as repository
from cloud.deploy import DeployError, Deployments, EndedError, OutOfReachError, parse_max_failures, parse_waves
from cloud.errors import CloudError
from cloud.store import BoxScope, Store
from proto.errors import WireError
from proto.uplink import OtaEvent, decode_event
from proto.wire import encode_doc

T0 = 1_800_000_000.0
VERSION = "1.2.0"
TARGET = "boxd-1.2.0.tar.gz"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tuf")
    repository.init_repository(d / "repo", d / "keys")
    bundle = d / TARGET
    bundle.write_bytes(b"a bundle")
    repository.publish_release(d / "repo", d / "keys", bundle, VERSION, ["generic-x86-64"])
    return d / "repo"


class Fleet:
    """A store with Boxes, the rules, and every command they queued."""

    def __init__(self, store: Store, repo: Path, n: int) -> None:
        self.store = store
        self.sent: list[tuple[str, str, dict[str, object]]] = []
        self.boxes = [f"box-{i:02d}" for i in range(n)]
        for i, b in enumerate(self.boxes):
            self.store.enroll_box(b, f"SN-{i}", 1000 + i, T0 + 86400 * 365)
        self.rules = Deployments(self.store, repo, self.send)
        self.now = T0

    def send(self, box_id: str, name: str, args: dict[str, object], ttl_s: float) -> str:
        box = self.store.box(box_id)
        if box is None or box.revoked is not None:
            raise CloudError(f"Box {box_id} is revoked")
        cmd_id = f"c-{len(self.sent)}"
        self.store.add_command(cmd_id, box_id, name, args, self.now + ttl_s)
        self.sent.append((box_id, name, args))
        return cmd_id

    def updates(self) -> list[str]:
        return [b for b, name, _ in self.sent if name == "update"]

    def aborts(self) -> list[str]:
        return [b for b, name, _ in self.sent if name == "update_abort"]

    def tick(self, dt: float = 1.0) -> None:
        self.now += dt
        self.rules.tick(self.now)

    def event(self, box_id: str, dep: str, state: str, detail: str = "", **extra: object) -> None:
        doc: dict[str, object] = {"v": 1, "kind": "ota", "ts": int(self.now * 1000), "deployment": dep,
                                  "version": VERSION, "state": state, "detail": detail, "running": "1.1.0", **extra}
        event = decode_event(encode_doc(doc))
        assert isinstance(event, OtaEvent)
        self.rules.on_event(box_id, event, self.now)

    def states(self, dep: str) -> dict[str, str]:
        return {b.box_id: b.state for b in self.store.deployment_boxes(dep)}

    def publish_all(self) -> None:
        for cmd in self.store.unpublished_commands(self.now):
            assert self.store.claim_command(cmd.id)


def test_waves_are_cumulative_counts_or_percents_each_adding_a_box() -> None:
    assert parse_waves("1,10%,50%,100%", 20) == [1, 2, 10, 20]
    assert parse_waves("1,10%,50%,100%", 5) == [1, 2, 3, 5]  # 10 % of 5 rounds up to 1: one more than wave 1
    assert parse_waves("1,10%,50%,100%", 1) == [1]
    assert parse_waves("2,50%", 10) == [2, 5, 10]  # the last wave always takes everyone
    assert parse_waves("100%", 3) == [3]
    assert parse_waves("5,100", 3) == [3]


@pytest.mark.parametrize(("spec", "words"), [
    ("", "comma-separated"), ("1,,50%", "comma-separated"), ("abc", "neither a number"), ("0", "at least 1"),
    ("1.5", "whole number"), ("150%", "at most 100"), ("0%", "above 0"), ("10,5", "smaller than a wave before"),
    ("50%,10%", "smaller"),
])
def test_bad_wave_specs_say_what_is_wrong(spec: str, words: str) -> None:
    with pytest.raises(DeployError, match=words):
        parse_waves(spec, 20)


def test_max_failures_as_a_count_or_a_percent_of_the_fleet() -> None:
    assert parse_max_failures("0", 50) == 0
    assert parse_max_failures(3, 50) == 3
    assert parse_max_failures("5%", 50) == 2
    for bad in ("x", "-1", "1.5", "120%"):
        with pytest.raises(DeployError, match="max failures"):
            parse_max_failures(bad, 50)


def test_waves_advance_only_when_the_wave_before_is_all_terminal(store: Store, repo: Path) -> None:
    f = Fleet(store, repo, 4)
    d = f.rules.create(TARGET, boxes=f.boxes, waves="1,50%", max_failures=1, now=f.now)
    assert d.waves == [1, 2, 4] and d.version == VERSION
    f.tick()
    assert f.updates() == ["box-00"]
    (_, _, args) = f.sent[0]
    assert args == {"deployment": d.id, "target": TARGET, "version": VERSION, "health_s": 300}
    f.event("box-00", d.id, "downloading", progress=0.5)
    f.event("box-00", d.id, "restarting")
    f.tick()
    assert f.updates() == ["box-00"]  # not terminal yet
    f.event("box-00", d.id, "committed", "healthy for 300 s")
    f.tick()
    assert f.updates() == ["box-00", "box-01"]
    f.event("box-01", d.id, "failed", "TUF: expired metadata")  # one failure is allowed
    f.tick()
    assert f.updates() == ["box-00", "box-01", "box-02", "box-03"]
    f.event("box-02", d.id, "committed")
    f.tick()
    assert f.store.deployment(d.id).status == "running"  # type: ignore[union-attr]
    f.event("box-03", d.id, "committed", "already running 1.2.0")
    f.tick()
    done = f.store.deployment(d.id)
    assert done is not None and done.status == "completed" and "3 of 4" in (done.reason or "")
    f.tick()
    assert len(f.updates()) == 4


def test_the_first_failure_in_wave_one_halts_and_nothing_else_is_sent(store: Store, repo: Path) -> None:
    f = Fleet(store, repo, 5)
    d = f.rules.create(TARGET, boxes=f.boxes, waves="2,100%", now=f.now)
    f.tick()
    assert f.updates() == ["box-00", "box-01"]
    f.publish_all()
    f.event("box-01", d.id, "downloading")
    f.event("box-00", d.id, "rolled_back", "not healthy before the deadline: boxd crashed")
    f.tick()
    halted = f.store.deployment(d.id)
    assert halted is not None and halted.status == "halted"
    assert "box-00 rolled_back (not healthy before the deadline: boxd crashed)" in (halted.reason or "")
    assert f.aborts() == ["box-01"]  # still downloading: told to abort
    assert f.states(d.id) == {"box-00": "rolled_back", "box-01": "downloading", "box-02": "cancelled",
                              "box-03": "cancelled", "box-04": "cancelled"}
    f.event("box-01", d.id, "aborted", "aborted the download")
    for _ in range(5):
        f.tick(600)
    assert f.updates() == ["box-00", "box-01"]
    assert f.states(d.id)["box-01"] == "aborted"


def test_a_box_silent_past_its_timeout_counts_as_a_failure(store: Store, repo: Path) -> None:
    f = Fleet(store, repo, 3)
    d = f.rules.create(TARGET, boxes=f.boxes, waves="1,100%", box_timeout_s=600, now=f.now)
    f.tick()
    f.event("box-00", d.id, "installing")
    f.tick(599)
    assert f.store.deployment(d.id).status == "running"  # type: ignore[union-attr]
    f.tick(2)
    row = f.store.deployment(d.id)
    assert row is not None and row.status == "halted" and "box-00 timeout" in (row.reason or "")
    assert "last: installing" in (row.reason or "")
    assert f.updates() == ["box-00"]
    f.event("box-00", d.id, "committed")  # too late: it stays a failure
    assert f.states(d.id)["box-00"] == "timeout"


def test_emergency_stop(store: Store, repo: Path) -> None:
    f = Fleet(store, repo, 5)
    d = f.rules.create(TARGET, boxes=f.boxes, waves="4,100%", max_failures=2, now=f.now)
    f.tick()
    assert f.updates() == ["box-00", "box-01", "box-02", "box-03"]
    for b in ("box-00", "box-01", "box-02"):  # the outbox published these; box-03's is still queued
        assert f.store.claim_command(next(c.id for c in f.store.commands(b)))
    f.event("box-01", d.id, "downloading")
    f.event("box-02", d.id, "restarting")  # past the point of no return
    stopped = f.rules.stop(d.id, "bad release", f.now)
    assert stopped.status == "stopped" and stopped.reason == "bad release"
    assert sorted(f.aborts()) == ["box-00", "box-01"]
    states = f.states(d.id)
    assert states == {"box-00": "sent", "box-01": "downloading", "box-02": "restarting", "box-03": "cancelled",
                      "box-04": "cancelled"}
    assert [c.name for c in f.store.unpublished_commands(f.now)] == ["update_abort", "update_abort"]
    assert f.store.command(f.store.commands("box-03")[0].id).status == "cancelled"  # type: ignore[union-attr]
    f.event("box-01", d.id, "aborted")
    f.event("box-02", d.id, "committed")  # it finished: its state follows its events
    f.tick(7200)
    assert f.updates() == ["box-00", "box-01", "box-02", "box-03"]
    assert f.states(d.id) == {"box-00": "timeout", "box-01": "aborted", "box-02": "committed",
                              "box-03": "cancelled", "box-04": "cancelled"}
    with pytest.raises(EndedError, match=f"deployment {d.id} has already ended: stopped \\(bad release\\)") as e:
        f.rules.stop(d.id, "again", f.now)  # nothing changes, and the caller is told
    assert e.value.deployment.reason == "bad release" and store.deployment(d.id).reason == "bad release"  # type: ignore[union-attr]


def test_repeated_late_and_backwards_events_are_ignored(store: Store, repo: Path) -> None:
    f = Fleet(store, repo, 2)
    d = f.rules.create(TARGET, boxes=f.boxes, waves="100%", now=f.now)
    f.event("box-00", d.id, "committed")  # not sent yet: ignored
    assert f.states(d.id)["box-00"] == "pending"
    f.tick()
    f.event("box-00", d.id, "installing")
    f.event("box-00", d.id, "downloading")
    assert f.states(d.id)["box-00"] == "installing"
    f.event("box-00", d.id, "committed", "healthy")
    f.event("box-00", d.id, "committed", "again")
    f.event("box-00", d.id, "failed", "late")
    f.event("box-00", d.id, "downloading")
    row = next(b for b in f.store.deployment_boxes(d.id) if b.box_id == "box-00")
    assert (row.state, row.detail) == ("committed", "healthy")
    f.event("box-01", "d-unknown", "failed")
    f.event("box-99", d.id, "failed")  # not in it
    f.event("box-01", d.id, "failed", version="9.9.9")  # another version
    assert f.states(d.id)["box-01"] == "sent"
    assert f.store.ota_events(d.id)["box-00"][1]["state"] == "downloading"  # the last one received is kept


@pytest.mark.parametrize("bad", [
    {"state": "exploded"}, {"ts": "yesterday"}, {"ts": True}, {"deployment": 7}, {"version": None},
    {"detail": ["x"]}, {"running": ""}, {"progress": 1.5}, {"progress": "half"}, {"v": 2},
])
def test_bad_event_documents_are_refused(store: Store, repo: Path, bad: dict[str, object]) -> None:
    f = Fleet(store, repo, 1)
    d = f.rules.create(TARGET, boxes=f.boxes, now=f.now)
    f.tick()
    doc: dict[str, object] = {"v": 1, "kind": "ota", "ts": 1, "deployment": d.id, "version": VERSION,
                              "state": "failed", "detail": "", "running": "1.1.0"}
    doc.update(bad)
    with pytest.raises(WireError):  # the receiver refuses it (logged there): the rules never see it
        decode_event(encode_doc(doc))
    assert f.states(d.id)["box-00"] == "sent"


def test_a_tag_targets_its_unrevoked_boxes(store: Store, repo: Path) -> None:
    f = Fleet(store, repo, 4)
    f.store.tag_box("box-01", ["site-a"])
    f.store.tag_box("box-02", ["site-a", "beta"])
    f.store.tag_box("box-03", ["site-a"])
    f.store.revoke("box-03")
    d = f.rules.create(VERSION, tag="site-a", now=f.now)  # the release named by its version
    assert d.target == TARGET and d.selector == {"tag": "site-a"}
    assert sorted(f.states(d.id)) == ["box-01", "box-02"]
    with pytest.raises(DeployError, match="no unrevoked Box has the tag 'nowhere'"):
        f.rules.create(TARGET, tag="nowhere", now=f.now)


def test_creation_is_refused_with_the_reason(store: Store, repo: Path) -> None:
    f = Fleet(store, repo, 3)
    f.store.revoke("box-02")
    cases = [
        ({"target": "boxd-9.tar.gz", "boxes": ["box-00"]}, "no published release 'boxd-9.tar.gz'"),
        ({"target": TARGET, "version": "1.3.0", "boxes": ["box-00"]}, "is version 1.2.0, not 1.3.0"),
        ({"target": TARGET}, "name the Boxes"),
        ({"target": TARGET, "boxes": ["box-00"], "tag": "x"}, "not both"),
        ({"target": TARGET, "boxes": ["nope"]}, "no Box 'nope'"),
        ({"target": TARGET, "boxes": ["box-02"]}, "revoked"),
        ({"target": TARGET, "boxes": ["box-00"], "health_s": 5}, "health time"),
        ({"target": TARGET, "boxes": ["box-00"], "box_timeout_s": 100, "health_s": 300}, "Box timeout"),
        ({"target": TARGET, "boxes": ["box-00"], "waves": "x"}, "neither a number"),
    ]
    for kwargs, words in cases:
        with pytest.raises(DeployError, match=words):
            f.rules.create(now=f.now, **kwargs)  # type: ignore[arg-type]
    assert f.store.deployments() == []


def test_a_box_in_a_running_deployment_is_refused_by_another(store: Store, repo: Path) -> None:
    f = Fleet(store, repo, 3)
    first = f.rules.create(TARGET, boxes=["box-00", "box-01"], now=f.now)
    with pytest.raises(DeployError, match=f"already in a running deployment: box-01 \\({first.id}\\)"):
        f.rules.create(TARGET, boxes=["box-02", "box-01"], now=f.now)
    assert len(f.store.deployments()) == 1
    f.rules.stop(first.id, "operator", f.now)
    second = f.rules.create(TARGET, boxes=["box-02", "box-01"], now=f.now)
    f.tick()
    assert f.updates() == ["box-02"]  # the order given is the order they go
    assert f.store.deployment(second.id).status == "running"  # type: ignore[union-attr]


def test_a_cancelled_command_is_never_published(store: Store) -> None:
    s = store
    s.add_command("c-1", "box", "update", {}, T0 + 60)
    s.add_command("c-2", "box", "update", {}, T0 + 60)
    assert s.cancel_command("c-1")
    assert [c.id for c in s.unpublished_commands(T0)] == ["c-2"]
    assert not s.claim_command("c-1")
    assert s.claim_command("c-2")
    assert not s.cancel_command("c-2")  # published: too late to withdraw


def test_a_scoped_caller_reaches_its_boxes_only_and_each_account_audits_its_part(store: Store, repo: Path) -> None:
    f = Fleet(store, repo, 4)
    acme, globex = store.add_account("acme"), store.add_account("globex")
    for b, account in zip(f.boxes, (acme, acme, globex, globex), strict=True):
        store.assign_box(b, account)
    store.tag_box("box-01", ["pilot"])
    store.tag_box("box-02", ["pilot"])  # another account's Box with the same tag
    mine = BoxScope(acme, everything=True)
    with pytest.raises(OutOfReachError, match="no Box 'box-02' here"):
        f.rules.create(TARGET, boxes=["box-00", "box-02"], now=f.now, scope=mine, actor="user:ann")
    with pytest.raises(OutOfReachError, match="no Box 'nope' here"):  # unknown: the same answer
        f.rules.create(TARGET, boxes=["nope"], now=f.now, scope=mine, actor="user:ann")
    d = f.rules.create(TARGET, tag="pilot", now=f.now, scope=mine, actor="user:ann")
    assert [b.box_id for b in store.deployment_boxes(d.id)] == ["box-01"]
    assert store.deployment_in(mine, d.id) is not None
    assert store.deployment_in(BoxScope(acme, box_ids=frozenset({"box-00"})), d.id) is None
    f.rules.stop(d.id, "changed my mind", f.now, actor="user:ann")
    # the operator's deployment over both accounts: halted by a failure in wave 1
    d = f.rules.create(TARGET, boxes=["box-00", "box-02", "box-03"], waves="2,100%", now=f.now)
    assert store.deployment_in(mine, d.id) is None and store.deployments_in(mine, None, 10) == [
        r for r in store.deployments() if r.id != d.id]
    f.tick()
    f.publish_all()
    f.event("box-02", d.id, "failed", "no space left")
    f.tick()

    def trail(account: int) -> list[tuple[str, str, object]]:
        return [(r.actor, r.action, r.detail["account_boxes"]) for r in store.audit_records(account, 0, 100)
                if r.target == f"deployment:{d.id}"]

    assert trail(acme) == [("operator", "deployment.create", ["box-00"]), ("platform", "deployment.wave", ["box-00"]),
                           ("platform", "deployment.halt", ["box-00"])]
    assert trail(globex) == [("operator", "deployment.create", ["box-02", "box-03"]),
                             ("platform", "deployment.wave", ["box-02"]),
                             ("platform", "deployment.halt", ["box-02", "box-03"])]
