"""Provisioning: `boxctl`, the installer's CLI on the Box (identity, enrollment, status).

Public face: `provisioning.cli.main`. Enrollment itself is `trust.enroll` (shared with the
daemon's renewal).
"""
