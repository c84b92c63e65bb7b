"""What the three commands share (`boxkit.clikit`): one-line usage errors, a quiet end on a closed pipe,
one line for an unexpected error; and a configuration's every problem with where it is."""

from __future__ import annotations

from pathlib import Path

import pytest

import boxconfig as config
from boxkit import clikit
from proto import names


def test_a_usage_error_is_one_line_naming_where_to_read_more(capsys: pytest.CaptureFixture[str]) -> None:
    p = clikit.Parser(prog="tool")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = clikit.subcommand(sub, "go", "go somewhere", ["tool go north"], exits="  0  went")
    s.add_argument("where", choices=["north", "south"])
    with pytest.raises(SystemExit) as e:
        p.parse_args(["go", "west"])
    assert e.value.code == clikit.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tool go: argument where: invalid choice: 'west'")
    assert err.rstrip().endswith("(see 'tool go --help')")
    assert "examples:\n  tool go north" in s.format_help() and "exit status:\n  0  went" in s.format_help()


def test_an_unexpected_error_is_one_line_and_exit_70(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOL_TRACEBACK", raising=False)

    def broken() -> int:
        raise KeyError("x")

    assert clikit.run_main("tool", broken) == clikit.EXIT_BUG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected error (KeyError" in err and "Traceback" not in err


def test_hosts(tmp_path: Path) -> None:
    assert all(map(names.is_host, ["10.0.0.5", "::1", "platform.example", "box-1"]))
    assert not any(map(names.is_host, ["", "a b", "nope/../x", "-x", "a" * 300, "x..y"]))


FOUR = """
[uplink]
keepalive_s = 5
[[modbus_tcp]]
name = "ahu1"
host = "127.0.0.1"
poll_interval_s = 1.0
[[modbus_tcp.points]]
name = "a"
table = "holding"
address = 0
type = "float33"
[[modbus_tcp.points]]
name = "b"
table = "holding"
address = 2
type = "uint16"
[[modbus_tcp.points]]
name = "c"
table = "holdin"
address = 3
type = "uint16"
[[modbus_tcp]]
name = "ahu1"
host = "127.0.0.1"
poll_interval_s = 1.0
[[modbus_tcp.points]]
name = "a"
table = "holding"
address = 0
type = "uint16"
"""


def test_every_problem_of_a_file_is_said_with_where_it_is(tmp_path: Path) -> None:
    f = tmp_path / "four.toml"
    f.write_text(FOUR)
    problems = config.file_problems(f)
    assert len(problems) == 4, problems
    assert problems[0].startswith("[uplink] keepalive_s")
    assert 'device "ahu1" point "a": type' in problems[1] and 'device "ahu1" point "c": table' in problems[2]
    assert problems[3] == '[[modbus_tcp]] #2: device name "ahu1" is used twice'
