"""The audit trail: append-only and hash-chained.

Table `audit`. Each record carries the hash of the one before (`prev`) and its own (`hash`, SHA-256
over its fields and `prev`), so an edited record no longer matches its hash, and a deleted one
breaks the chain at the next (`verify`). Records are appended in a write transaction (which holds
the database's write lock: two writers never chain onto the same record) and never updated.

What a chain in the same database cannot show alone: the newest records cut off the end. `verify`
returns the head (count and hash) so that an operator can note it elsewhere and compare later.
No network I/O.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from cloud.store._base import BIGINT, SECONDS, AnyRow, StoreBase, metadata

GENESIS = "0" * 64

audit = sa.Table(
    "audit", metadata,
    sa.Column("seq", BIGINT, primary_key=True, autoincrement=False),
    sa.Column("ts", SECONDS, nullable=False),
    sa.Column("account_id", BIGINT),  # None: the platform's (a failed login of no known user)
    sa.Column("actor", sa.Text, nullable=False),  # "user:NAME", "key:ID", "operator" (boxcloud), "-"
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),  # "ok", "denied", "failed"
    sa.Column("detail", sa.Text, nullable=False),  # JSON
    sa.Column("prev", sa.Text, nullable=False),
    sa.Column("hash", sa.Text, nullable=False),
    sa.Index("audit_by_account", "account_id", "seq"),
)


@dataclass(frozen=True)
class AuditRow:
    seq: int
    ts: float
    account_id: int | None
    actor: str
    action: str
    target: str
    outcome: str
    detail: dict[str, object]
    prev: str
    hash: str

    @classmethod
    def of(cls, r: AnyRow) -> AuditRow:
        m = r._mapping
        return cls(int(m["seq"]), float(m["ts"]), m["account_id"], m["actor"], m["action"], m["target"], m["outcome"],
                   json.loads(m["detail"]), m["prev"], m["hash"])

    def public(self) -> dict[str, object]:
        return {"seq": self.seq, "ts": self.ts, "actor": self.actor, "action": self.action, "target": self.target,
                "outcome": self.outcome, "detail": self.detail, "hash": self.hash}


def record_hash(seq: int, ts: float, account_id: int | None, actor: str, action: str,  # noqa: PLR0917
                target: str, outcome: str, detail: str, prev: str) -> str:
    """A record's hash: SHA-256 over its fields, in one canonical encoding, and the previous hash."""
    canon = json.dumps([seq, repr(ts), account_id, actor, action, target, outcome, detail, prev],
                       separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode()).hexdigest()


class Audit(StoreBase):
    """The audit trail (a part of `Store`)."""

    def audit(self, account_id: int | None, actor: str, action: str, target: str, outcome: str = "ok",
              **detail: object) -> int:
        """Append a record; returns its sequence number."""
        text = json.dumps(detail, sort_keys=True, separators=(",", ":"), default=str)
        ts = time.time()
        with self._tx() as db:
            last = db.execute(sa.select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)).first()
            seq, prev = (int(last.seq) + 1, str(last.hash)) if last else (1, GENESIS)
            db.execute(audit.insert().values(
                seq=seq, ts=ts, account_id=account_id, actor=actor, action=action, target=target, outcome=outcome,
                detail=text, prev=prev,
                hash=record_hash(seq, ts, account_id, actor, action, target, outcome, text, prev)))
        return seq

    def audit_records(self, account_id: int | None, after: int, limit: int) -> list[AuditRow]:
        """An account's records (None: all), oldest first, after `after` (paging), at most `limit`."""
        query = sa.select(audit).where(audit.c.seq > after)
        if account_id is not None:
            query = query.where(audit.c.account_id == account_id)
        with self._read() as db:
            return [AuditRow.of(r) for r in db.execute(query.order_by(audit.c.seq).limit(limit))]

    def verify_audit(self) -> tuple[int, str, list[str]]:
        """Walk the whole chain. Returns (records, head hash, problems): no problems means no record was
        edited, inserted or deleted (but at the end: compare the head with one noted earlier)."""
        problems: list[str] = []
        n, prev, expected_seq = 0, GENESIS, 1
        for r in self._all_audit():
            m = r._mapping
            n += 1
            if m["seq"] != expected_seq:
                problems.append(f"record {expected_seq}..{m['seq'] - 1} deleted (the sequence jumps to {m['seq']})")
            if m["prev"] != prev:
                problems.append(f"record {m['seq']}: does not follow the record before it (one was edited, "
                                "deleted or inserted before it)")
            h = record_hash(int(m["seq"]), float(m["ts"]), m["account_id"], m["actor"], m["action"], m["target"],
                            m["outcome"], m["detail"], m["prev"])
            if h != m["hash"]:
                problems.append(f"record {m['seq']}: edited (its content does not match its hash)")
            prev, expected_seq = str(m["hash"]), int(m["seq"]) + 1
        return n, prev, problems

    def _all_audit(self) -> Iterator[AnyRow]:
        after = 0
        while True:
            with self._read() as db:
                rows = list(db.execute(sa.select(audit).where(audit.c.seq > after).order_by(audit.c.seq).limit(5000)))
            yield from rows
            if len(rows) < 5000:
                return
            after = int(rows[-1].seq)
