"""Make a new schema revision: ``python -m cloud.store.migrations "what it changes"``.

Written by Alembic's autogenerate from the difference between the store's tables
(`cloud.store.metadata`) and a scratch SQLite database at the newest revision, into
`cloud/store/migrations/versions/<number>_<what it changes>.py`. Read it and complete it before
committing: Alembic cannot tell a rename from a drop and an add, and does not move data. Then
set `HEAD` in `cloud/store/_migrate.py` to the new number (a test checks it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from cloud.store import Store, _migrate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cloud.store.migrations", description=__doc__.splitlines()[0])
    p.add_argument("message", help="what the revision changes, e.g. 'samples: a column for the source'")
    args = p.parse_args(argv)
    from alembic import command

    number = f"{int(_migrate.revisions()[-1]) + 1:04d}"
    with tempfile.TemporaryDirectory(prefix="store-revision-") as tmp:
        store = Store(Path(tmp) / "scratch.db")
        store.migrate()
        with store.engine.connect() as conn:
            command.revision(_migrate.config(conn), message=args.message, autogenerate=True, rev_id=number)
    print(f"now set HEAD = {number!r} in cloud/store/_migrate.py, and read the new revision through")
    return 0


if __name__ == "__main__":
    sys.exit(main())
