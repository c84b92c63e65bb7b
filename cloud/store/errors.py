"""Errors of the cloud store, by whose fault they are.

`StoreError` (defined with the cloud's other errors, `cloud.errors`, and the base of these) is
the database refusing or failing an operation: ours, and often transient (a full disk, a lock
held too long): the receiver does not acknowledge a batch it could not store, so the broker
sends it again. `SchemaError` is the operator's to fix: the database's schema is not the one
this code knows (made by a newer version, or older and not upgraded yet); nothing was changed.
"""

from __future__ import annotations

from cloud.errors import StoreError


class SchemaError(StoreError):
    """The database's schema is not this code's: newer (refused, never changed) or not upgraded yet."""


__all__ = ["SchemaError", "StoreError"]
