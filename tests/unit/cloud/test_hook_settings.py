"""The operator's webhook settings (`Settings.webhook_*`, `boxcloud init --webhook-*`): refused at
`init` when they would open what is never reached, kept in cloud.json as written."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from cloud.errors import CloudError
from cloud.platform import Cloud, Settings


@pytest.mark.parametrize(("change", "why"), [
    ({"webhook_allow_networks": ("169.254.0.0/16",)}, "never sent to"),
    ({"webhook_allow_networks": ("10.0.0.0/8", "every-host")}, "not a network in CIDR form"),
    ({"webhook_ports": (0,)}, "not port numbers"),
    ({"webhook_ca_file": "/nonexistent/ca.pem"}, "no such file"),
])
def test_init_refuses_webhook_settings_that_cannot_be_used_and_makes_nothing(tmp_path: Path, change: dict[str, object],
                                                                            why: str) -> None:
    home = tmp_path / "cloud"
    with pytest.raises(CloudError, match=why):
        Cloud(home).init(Settings("localhost", 18883, 18443, "127.0.0.1", 18444, **change))  # type: ignore[arg-type]
    assert not home.exists()


def test_the_settings_read_back_from_cloud_json_give_the_same_reach() -> None:
    s = Settings(webhook_allow_networks=("127.0.0.1/32",), webhook_ports=(9444,))
    again = Settings(**json.loads(json.dumps(asdict(s))))
    assert again == s and again.webhook_reach.networks == (ipaddress.ip_network("127.0.0.1/32"),)
    assert again.webhook_reach.ports == frozenset({9444})
    assert Settings().webhook_reach.networks == () and Settings().webhook_reach.ports == frozenset({443, 8443})
