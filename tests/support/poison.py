"""A batch the database itself refuses: a real trigger on `batches`, made by a test (not by the store),
that raises for one sequence number, on SQLite or PostgreSQL. `at_commit` (PostgreSQL): a deferred
constraint trigger, so that the statements pass and the COMMIT fails."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from cloud.store import Store


def add(where: Path | str, seq: int, *, at_commit: bool = False) -> None:
    """Make the database refuse any batch numbered `seq` (at COMMIT with `at_commit`: PostgreSQL only)."""
    with Store(where).engine.begin() as db:
        if db.dialect.name == "sqlite":
            assert not at_commit, "SQLite has no deferred triggers"
            db.exec_driver_sql(f"CREATE TRIGGER poison BEFORE INSERT ON batches WHEN NEW.seq = {int(seq)} "
                               "BEGIN SELECT RAISE(ABORT, 'poison batch (the test''s trigger)'); END")
            return
        db.exec_driver_sql(f"""CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.seq = {int(seq)} THEN RAISE EXCEPTION 'poison batch (the test''s trigger)'; END IF;
            RETURN NEW; END $$""")
        db.exec_driver_sql("CREATE CONSTRAINT TRIGGER poison AFTER INSERT ON batches DEFERRABLE INITIALLY DEFERRED "
                           "FOR EACH ROW EXECUTE FUNCTION poison()" if at_commit else
                           "CREATE TRIGGER poison BEFORE INSERT ON batches FOR EACH ROW EXECUTE FUNCTION poison()")


def remove(where: Path | str) -> None:
    """The database takes that batch again."""
    with Store(where).engine.begin() as db:
        if db.dialect.name == "sqlite":
            db.exec_driver_sql("DROP TRIGGER poison")
        else:
            db.exec_driver_sql("DROP TRIGGER poison ON batches")
            db.exec_driver_sql("DROP FUNCTION poison()")


def engine_of(where: Path | str) -> str:
    """"sqlite" or "postgresql"."""
    return sa.make_url(where if isinstance(where, str) else f"sqlite:///{where}").get_backend_name()
