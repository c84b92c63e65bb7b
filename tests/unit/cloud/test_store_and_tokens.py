"""Enrollment tokens and exactly-once storage of batches (the database, without a broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from boxd import wire
from cloud.enroll import check_serial, new_token, token_hash
from cloud.errors import EnrollmentError
from cloud.store import Store
from drivers import PointInfo

TABLE = [PointInfo("a.t", "degC", "float32"), PointInfo("a.on", "", "bool")]


def test_tokens_are_single_use_and_expire(tmp_path: Path) -> None:
    s = Store(tmp_path / "c.db")
    tok = new_token()
    s.add_token(token_hash(tok), "SN-1", 60)
    assert s.claim_token(token_hash(tok.lower().replace("-", ""))) == "SN-1"
    with pytest.raises(EnrollmentError, match="already been used"):
        s.claim_token(token_hash(tok))
    old = new_token()
    s.add_token(token_hash(old), "SN-2", -1)
    with pytest.raises(EnrollmentError, match="expired"):
        s.claim_token(token_hash(old))
    with pytest.raises(EnrollmentError, match="not valid"):
        s.claim_token(token_hash(new_token()))


def test_a_released_token_can_be_used_again(tmp_path: Path) -> None:
    s = Store(tmp_path / "c.db")
    tok = new_token()
    s.add_token(token_hash(tok), "SN-1", 60)
    s.claim_token(token_hash(tok))
    s.release_token(token_hash(tok))
    assert s.claim_token(token_hash(tok)) == "SN-1"


@pytest.mark.parametrize("serial", ["", "a/b", "a+b", "#", "x" * 65, "-lead", "a b"])
def test_serials_that_would_break_topics_are_refused(serial: str) -> None:
    with pytest.raises(EnrollmentError, match="invalid serial"):
        check_serial(serial)


def test_each_batch_is_stored_once(tmp_path: Path) -> None:
    s = Store(tmp_path / "c.db")
    s.enroll_box("SN-1", "SN-1", 42, 2e9)
    tid = wire.table_id(TABLE)
    s.put_table("SN-1", tid, TABLE)
    batch = wire.decode_batch(wire.encode_batch(5, 1, tid, 1000, [wire.encode_group(0, 0, [21.5, True], {})]))
    assert s.store_batch("SN-1", batch, TABLE) is True
    assert s.store_batch("SN-1", batch, TABLE) is False
    assert sorted(s.samples("SN-1")) == [("a.on", 1000, True, 0), ("a.t", 1000, 21.5, 0)]
    other_epoch = wire.decode_batch(wire.encode_batch(6, 1, tid, 2000, [wire.encode_group(0, 0, [22.0, False], {})]))
    assert s.store_batch("SN-1", other_epoch, TABLE) is True
    assert {p: v for p, _, v, _, _ in s.latest("SN-1")} == {"a.t": 22.0, "a.on": False}


def test_reenrollment_revokes_the_old_certificate(tmp_path: Path) -> None:
    s = Store(tmp_path / "c.db")
    assert s.enroll_box("SN-1", "SN-1", 1, 2e9) is None
    assert s.enroll_box("SN-1", "SN-1", 2, 2e9) == 1
    assert [serial for serial, _ in s.revoked_certs()] == [1]
