"""proto: the contract between a Box and the platform, one pure package that both sides import.

- `wire`: the framing (version byte, optional raw deflate, CBOR), the bounded decoder of untrusted
  payloads (`unframe_untrusted`, used in both directions), batches and point tables;
- `topics`: the topic namespace: builds and parses every topic name, the uplink leaves' sizes and
  retain rules (the broker's guard plugin is compiled from them);
- `names`: the name patterns (Box id, point, command id, deployment, target, version, hardware,
  host), each defined once and matched whole; the order of versions;
- `points`: `Quality`, `PointInfo`, `Value`: what a point is on the wire;
- `uplink`: `Status`, `Health`, the events (`Evicted`, `OtaEvent`), the broker's `LimitsNotice`;
- `modem`: the 4G modem's report in the heartbeat (`ModemReport`) and its events (`ModemEvent`, `WanEvent`);
- `replies`: a Box's answers to commands and configurations;
- `downlink`: `ConfigPush`, `TimeNotice`, the CRL, and the way in for commands;
- `commands`: one dataclass per command, the tagged union `Command`;
- `release`: a software bundle's manifest (what the cloud builds and a Box unpacks);
- `errors`: `RejectedError` and its `WireError`, `TopicError`, `ManifestError`.

No I/O, no threads, nothing of the project's other packages: only the standard library and
cbor2 (pinned exactly: the golden byte tests hold its output to ours).
"""
