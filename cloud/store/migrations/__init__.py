"""The cloud store's schema migrations (Alembic): `env.py`, and one file a revision in `versions/`.

Run by `cloud.store` (`Store.migrate`, `boxcloud init` and `run`); a new revision is made with
``python -m cloud.store.migrations "what it changes"`` (see docs/architecture.md, "Storage in the cloud").
"""
