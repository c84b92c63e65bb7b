"""The reference cloud (`boxcloud`): CA and enrollment, a Mosquitto broker with mTLS,
per-Box ACL and CRL, the receiver and its storage.

Public face: `cloud.platform.Cloud` and `cloud.cli.main`. It exists so that every Box
feature is tested end to end against real parts.
"""
