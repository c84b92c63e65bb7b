"""Connectors: signed webhooks to customers' endpoints, from a durable outbox in the cloud's database.

- `signing` (pure): the item HMAC and the Standard Webhooks headers; `items` (pure): what a
  delivery carries; `policy` (pure): retries, the circuit breaker, giving up, disabling;
  `targets`: the SSRF defence (where the platform may send);
- `client`: HTTPS pinned to the address checked, Basic and OAuth 2.0 client credentials;
- `worker`: `HookWorker`, the feed into each connector's outbox and each endpoint's deliveries.

The rows are `cloud.store._connectors`'; the API's routes `cloud.api._connectors`.
Not here: the MQTT connector to a customer's broker (`cloud.mqttconn`).
"""

from cloud.hooks.worker import HookWorker, Limits

__all__ = ["HookWorker", "Limits"]
