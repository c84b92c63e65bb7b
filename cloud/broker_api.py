"""What the platform asks of its MQTT broker beyond MQTT 5 itself: the interface between the
enrolment and revocation code and a broker's own administration.

The Boxes and the receivers speak plain MQTT 5 over mutual TLS and need nothing else from a
broker. The platform needs four things more, which every broker does its own way:

  - each Box's rights: publish only under its own uplink, read only its own downlink
    (`add_box`, `add_boxes`), default deny for everyone else;
  - revoked certificates refused at the next handshake (`crl_changed`, after the platform
    rewrote its CRL);
  - a revoked Box's open session ended at once, its rights gone (`cut_off`): a CRL only
    stops new handshakes;
  - what a revoked Box left retained removed (`clear_retained`).

`cloud.broker.Broker` is the implementation for the embedded Mosquitto (its dynamic-security
plugin, SIGHUP, its retained store). docs/brokers.md maps each method to EMQX, HiveMQ and
VerneMQ for a clustered deployment. This module is the interface only: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class BrokerControl(Protocol):
    """The broker's administration, as the platform uses it. Every method raises
    `cloud.errors.BrokerError` when the broker cannot be reached or refuses."""

    host: str  # where Boxes connect (given to a Box at enrolment)
    port: int

    def running(self) -> bool:
        """Whether a broker runs to be told anything (False: it learns the state when it starts)."""
        ...

    def add_box(self, box_id: str) -> None:
        """Give one newly enrolled Box its rights in the running broker."""
        ...

    def add_boxes(self, box_ids: Sequence[str]) -> None:
        """Give many Boxes their rights at once (bulk enrolment): a few round trips, not one a Box."""
        ...

    def crl_changed(self) -> None:
        """The CRL file changed: return once a new handshake is checked against the new list."""
        ...

    def cut_off(self, box_id: str) -> None:
        """End a Box's live session and take its rights away (after `crl_changed`: it cannot come back)."""
        ...

    def clear_retained(self, box_id: str) -> None:
        """Remove what a Box left retained on its uplink (its status, its point table)."""
        ...
