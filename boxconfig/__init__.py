"""boxconfig: the Box's configuration schema and its validation, for the Box and for the cloud.

`schema`: the TOML file parsed and validated into typed values (`BoxConfig`), with every problem
and where it is; built on the drivers' own parsers (`drivers.modbus`, `drivers.bacnet`, the latter
imported only when a ``[[bacnet]]`` section exists). `push`: a configuration the platform pushes,
checked the same way on both sides. Imports `drivers`, `proto` and `boxkit`; never `boxd` or `cloud`.
"""

from boxconfig.errors import ConfigError
from boxconfig.push import check_push
from boxconfig.schema import (
    CACHE_FILE,
    MAX_FILE_BYTES,
    BoxConfig,
    QueueSettings,
    UplinkSettings,
    file_problems,
    load,
    parse,
    problems,
)

__all__ = [
    "CACHE_FILE", "MAX_FILE_BYTES", "BoxConfig", "ConfigError", "QueueSettings", "UplinkSettings", "check_push",
    "file_problems", "load", "parse", "problems",
]
