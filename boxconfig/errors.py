"""Errors of `boxconfig`: a configuration that does not validate.

One class: the message says where and why (`[[modbus_tcp]] #2 "meter1": ...`). Whose fault it is
depends on where the text came from, which only the caller knows: the Box's own file (a person
fixes it; `boxd check-config`), or a push from the platform (answered "rejected" with every
reason, `boxconfig.check_push`, which raises `proto.errors.RejectedError` instead).
"""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration is invalid; the message says where and why."""
