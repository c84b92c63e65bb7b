"""Field-bus drivers and the modem, each behind a small interface of our own.

pymodbus, bacpypes3 and pyserial are imported only inside the adapters in this
package; the daemon sees `PointSource`, `Sample` and `PointInfo`.
"""

from drivers._types import Emit, PointInfo, PointSource, Quality, Sample, Value

__all__ = ["Emit", "PointInfo", "PointSource", "Quality", "Sample", "Value"]
