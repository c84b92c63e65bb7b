"""One module a schema revision, named <revision>_<what it changes>.py (Alembic skips this file)."""
