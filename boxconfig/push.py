"""A configuration pushed by the platform, checked by its meaning (both sides run the same check).

`proto.downlink.decode_config` takes the message apart (version, TOML text, allow_empty); `check_push`
parses the TOML and validates it against the schema (`boxconfig.schema`) with every reason, and
refuses a configuration without points unless the operator said so. The cloud runs it before it
queues a push (`boxcloud config push`), the Box again when it receives one.
"""

from __future__ import annotations

import tomllib

from boxconfig.errors import ConfigError
from boxconfig.schema import BoxConfig, parse, problems
from proto.downlink import ConfigPush
from proto.errors import RejectedError
from proto.replies import MAX_REASON
from proto.text import clip


def check_push(push: ConfigPush) -> BoxConfig:
    """The configuration a push carries, validated.

    Raises:
        RejectedError: with every reason found in `reasons` (the TOML, and each section's or
            device's configuration problem).
    """
    try:
        raw = tomllib.loads(push.toml_text)
    except tomllib.TOMLDecodeError as e:
        raise RejectedError(f"config: toml is not valid TOML: {e}") from None
    except (ValueError, RecursionError) as e:  # integers of > 4300 digits, arrays nested ~1000 deep
        raise RejectedError(f"config: toml is not valid TOML: {clip(str(e), 200)}") from None
    try:
        parsed = parse(raw)
    except ConfigError as e:
        reasons = problems(raw)
        summary = reasons[0] if len(reasons) == 1 else f"{len(reasons)} problems, the first: {reasons[0]}"
        raise RejectedError(f"config: {clip(summary, MAX_REASON)}", reasons) from e
    if not parsed.point_count() and not push.allow_empty:
        raise RejectedError("config: it has no points: applied, it would silence every device of the Box "
                            "(send it with allow_empty, 'boxcloud config push --allow-empty', if that is meant)")
    return parsed
