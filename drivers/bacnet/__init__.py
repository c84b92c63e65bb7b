"""BACnet/IP: network configuration, the `PointSource` adapter, discovery for installers.

The public face of the package; everything else is private. bacpypes3 (0.0.110,
pinned) is imported only inside this package (and by the simulator in `drivers.sim`).

- `parse_bacnet_network(raw)`: one ``[[bacnet]]`` table into a `BacnetNetwork` (the raw
  format is documented in `drivers.bacnet._config`);
- `BacnetSource(network)`: the network's devices as one `PointSource` (Who-Is/I-Am,
  ReadPropertyMultiple with ReadProperty fallback, COV with polling fallback,
  WriteProperty with priorities);
- `drivers.bacnet.discover`: `discover_devices`, `read_objects`, `objects_to_toml` for
  ``boxctl discover bacnet``;
- `plan_batches` / `PropertyRead` and `CovTracker`: the pure decisions (how reads become
  requests, when subscriptions are renewed), exposed for tests and benchmarks;
- errors: `drivers.bacnet.errors`.
"""

from drivers.bacnet._config import (
    MAX_DEVICES,
    MAX_POINTS,
    BacnetDevice,
    BacnetNetwork,
    BacnetPoint,
    ObjectRef,
    check_network,
    parse_bacnet_network,
    parse_object,
)
from drivers.bacnet._cov import CovTracker, Subscription, SubState, renew_margin
from drivers.bacnet._plan import PropertyRead, plan_batches, response_budget
from drivers.bacnet._source import BacnetSource

__all__ = [
    "MAX_DEVICES",
    "MAX_POINTS",
    "BacnetDevice",
    "BacnetNetwork",
    "BacnetPoint",
    "BacnetSource",
    "CovTracker",
    "ObjectRef",
    "PropertyRead",
    "SubState",
    "Subscription",
    "check_network",
    "parse_bacnet_network",
    "parse_object",
    "plan_batches",
    "renew_margin",
    "response_budget",
]
