"""The topic namespace and the name patterns (`proto.topics`, `proto.names`): one definition each,
built and parsed in one place, matched whole; and nowhere else in the project's code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proto import names, topics
from proto.errors import TopicError
from proto.topics import Down, Up

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("proto", "boxkit", "trust", "drivers", "boxconfig", "boxd", "ota", "provisioning", "cloud")


@pytest.mark.parametrize("leaf", list(Up))
def test_every_uplink_topic_parses_back(leaf: Up) -> None:
    where = topics.parse(topics.up("SN-0042", leaf))
    assert (where.box_id, where.direction, where.leaf) == ("SN-0042", topics.UP, leaf)


@pytest.mark.parametrize("leaf", list(Down))
def test_every_downlink_topic_parses_back(leaf: Down) -> None:
    where = topics.parse(topics.down("SN-0042", leaf))
    assert (where.box_id, where.direction, where.leaf) == ("SN-0042", topics.DOWN, leaf)


@pytest.mark.parametrize("topic", ["boxes/SN-1/up", "boxes/SN-1/up/data/x", "crates/SN-1/up/data", "boxes/SN-1/in/data",
                                   "boxes/-x/up/data", "boxes//up/data", f"boxes/{'a' * 65}/up/data", "boxes/+/up/data",
                                   "boxes/#"])
def test_a_topic_outside_the_namespace_is_refused(topic: str) -> None:
    with pytest.raises(TopicError, match="unexpected topic"):
        topics.parse(topic)


def test_an_unknown_leaf_parses_with_no_leaf() -> None:
    where = topics.parse("boxes/SN-1/up/telemetry")
    assert where.leaf is None and where.raw_leaf == "telemetry"  # a newer Box's leaf: ignored, not refused


def test_filters_and_retained_leaves() -> None:
    assert topics.up_filter() == "boxes/+/up/#" and topics.down_filter("SN-1") == "boxes/SN-1/down/#"
    assert set(topics.RETAINED_UP) == {Up.STATUS, Up.META}
    assert not topics.UP_RULES[Up.LIMITS].from_box  # only the broker publishes a Box's limits notice


def test_the_guard_plugin_is_compiled_with_the_leaves_of_proto() -> None:
    header = topics.guard_header()
    rows = dict(re.findall(r'\{"(\w+)", (\d+)u, (?:true|false)\}', header))
    assert rows == {str(leaf): str(rule.max_bytes) for leaf, rule in topics.UP_RULES.items() if rule.from_box}
    assert f"#define MAX_ID {names.MAX_BOX_ID}" in header and f'#define TOPIC_ROOT "{topics.ROOT}"' in header
    source = (ROOT / "cloud" / "boxguard.c").read_text()
    code = re.sub(r"/\*.*?\*/", "", source, flags=re.S)  # the comments may name leaves, the code may not
    assert not re.findall(r'"(?:boxes|up|data|meta|status|health|events|replies|limits)\b', code)
    assert '#include "boxguard_rules.h"' in source


def _python_sources() -> list[Path]:
    return [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]


def test_no_topic_string_is_written_outside_proto_topics() -> None:
    """Every topic of the project's code is built by `proto.topics` (the broker's ACL and the
    receiver's subscription included): a literal ``boxes/...`` or ``/up/`` ``/down/`` elsewhere is a
    second definition."""
    literal = re.compile(r"""["'](?:boxes/|[^"'\n]*/(?:up|down)/)""")
    found = [f"{p.relative_to(ROOT)}:{n}" for p in _python_sources() if p != ROOT / "proto" / "topics.py"
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if literal.search(line.split("#", 1)[0]) and not line.lstrip().startswith(("#", '"""', "`"))]
    assert found == []


def test_each_name_pattern_is_defined_once() -> None:
    """No module but `proto.names` compiles a pattern of one of the contract's names (a format's
    documentation may quote one)."""
    patterns = {n.pattern for n in (names.BOX_ID, names.NAME, names.POINT, names.COMMAND_ID, names.DEPLOYMENT,
                                    names.TARGET, names.VERSION, names.HARDWARE, names.HOST)}
    fragments = ["[a-z0-9][a-z0-9_-]{0,31}", "[A-Za-z0-9][A-Za-z0-9._-]{0,63}", "[A-Za-z0-9._:-]{1,64}",
                 "[A-Za-z0-9][A-Za-z0-9._+-]{0,127}", "[a-z0-9][a-z0-9-]{0,31}", "[a-z0-9-]{1,32}",
                 r"[0-9]+\.[0-9]+\.[0-9]+"]
    assert patterns  # the fragments below are theirs
    found = [f"{p.relative_to(ROOT)}: {line.strip()}" for p in _python_sources() if p != ROOT / "proto" / "names.py"
             for line in p.read_text().splitlines()
             if re.search(r"\bre\.(compile|fullmatch|match|search)\(", line) and any(f in line for f in fragments)]
    assert found == []


@pytest.mark.parametrize(("name", "good", "bad"), [
    (names.BOX_ID, ["SN-0042", "a", "B.1_x", "x" * 64], ["", "-a", ".a", "a/b", "a b", "x" * 65, "é", "a\n"]),
    (names.NAME, ["ahu1", "supply_temp", "a-b", "0"], ["", "Ahu", "_a", "a.b", "x" * 33, "a\n"]),
    (names.POINT, ["ahu1.supply_temp", "d.p"], ["ahu1", "a.b.c", "A.b", ".b", "a.", "a/b", "a.b\n"]),
    (names.COMMAND_ID, ["c-1a2b", "a:b.c_d"], ["", "a/b", "x" * 65, "a b"]),
    (names.DEPLOYMENT, ["d-1a2b3c4d"], ["", "-d", "d/1"]),
    (names.TARGET, ["boxd-0.2.0.tar.gz", "a+b"], ["", ".hidden", "../x", "a/b", "x" * 129]),
    (names.VERSION, ["0.1.0", "1.10.0", "1.2.3-rc.1", "2.0.0-beta-2"],
     ["1.2", "01.2.3", "1.2.3-", "1.2.3-a..b", "v1.2.3", "1.2.3 ", "1.2.3-" + "a" * 60]),
    (names.HARDWARE, ["generic-x86-64", "box-a1"], ["", "-x", "Generic", "x_86", "x" * 33]),
    (names.HOST, ["localhost", "platform.example", "box-1.example.com."], ["", "-x", "a..b", "a b", "x" * 254]),
])
def test_names_match_whole_and_only_what_they_should(name: names.Name, good: list[str], bad: list[str]) -> None:
    assert all(name.fullmatch(v) for v in good), [v for v in good if not name.fullmatch(v)]
    assert not any(name.fullmatch(v) for v in bad), [v for v in bad if name.fullmatch(v)]
    assert not name.fullmatch(None) and not name.fullmatch(5)


def test_hosts_and_versions() -> None:
    assert names.is_host("10.0.0.5") and names.is_host("::1") and not names.is_host("10.0.0.5/24")
    assert names.version_greater("1.3.0", "1.3.0-rc.2") and names.version_greater("1.3.0-rc.10", "1.3.0-rc.2")
    assert names.version_greater("1.10.0", "1.9.9") and not names.version_greater("1.0.0", "1.0.0")
    with pytest.raises(ValueError, match="not a semantic version"):
        names.version_key("1.2")
