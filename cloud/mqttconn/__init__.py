"""The MQTT connector: the Boxes' data to a customer's own broker over TLS, property commands back.

- `messages` (pure): topic templates, the data messages of a stored batch, commands checked,
  replies, loops refused (`overlap`);
- `link`: the broker's address checked (the webhooks' SSRF defence) and pinned, TLS contexts;
- `_link_thread`: `Link`, one connector's thread (its connection, PUBACKs, commands, backoff);
- `worker`: `MqttWorker`, the feed into each connector's durable queue, and the links.

The queue's rows are `cloud.store._mqtt_queue`'s; the API's part `cloud.api._mqtt_connectors`.
Not here: webhooks (`cloud.hooks`), which share the connector resource, the feed and the SSRF rules.
"""

from cloud.mqttconn._link_thread import Backoff
from cloud.mqttconn.worker import MqttWorker

__all__ = ["Backoff", "MqttWorker"]
