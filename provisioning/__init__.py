"""Provisioning: `boxctl`, the installer's CLI on the Box (identity, enrollment, status).

Public face: `provisioning.cli.main`; `enroll()` and `check_link()` for tests.
"""
