"""Every subcommand of `boxd`, `boxctl` and `boxcloud` met with bad arguments: ONE line on stderr,
a non-zero exit, no traceback, and nothing created where nothing was set up.

The subcommands are read from the commands' own argparse parsers, so a new subcommand is
covered the day it is added. Run in-process (the commands' `main`), so that a bug shows as exit
70 (`clikit.EXIT_BUG`, "unexpected error") rather than hiding in a subprocess's output; the
entry points themselves are run as processes once each (`--version`, a closed pipe).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from boxd import cli as boxd_cli
from boxkit import clikit
from cloud import cli as cloud_cli
from cloud.platform import Cloud, Settings
from provisioning import cli as boxctl_cli

HOSTILE = "nope/../../etc/passwd\u202e;$(reboot)"
COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Callable[[list[str]], int]]] = {
    "boxd": (boxd_cli._parser, boxd_cli.main),
    "boxctl": (boxctl_cli._parser, boxctl_cli.main),
    "boxcloud": (cloud_cli._parser, cloud_cli.main),
}


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                                                         argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs or not subs[0].required:
        yield path, parser  # runnable as it is (`boxd`, `boxcloud alerts`)
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaves(child, (*path, name))


def _required_positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
            and a.nargs not in ("?", "*")]


CASES = [(prog, path) for prog, (make, _) in COMMANDS.items() for path, _ in _leaves(make())]


def test_the_walk_finds_every_subcommand() -> None:
    found = {f"{prog} {' '.join(path)}".strip() for prog, path in CASES}
    # spot checks that the walk goes deep (a new subcommand needs no change here)
    assert {"boxd run", "boxd check-config", "boxctl scan modbus-rtu", "boxctl discover bacnet",
            "boxcloud box decommission", "boxcloud alerts", "boxcloud alerts ack", "boxcloud config diff",
            "boxcloud deploy watch", "boxcloud release rotate-key"} <= found
    assert len(found) >= 37


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    home = root / "cloud"
    Cloud(home).init(Settings("localhost", 18883, 18443, "127.0.0.1"))
    (root / "a-file").write_text("not a directory\n")
    (root / "state").mkdir()
    return {"root": root, "home": home, "state": root / "state", "nowhere": root / "nowhere",
            "under-file": root / "a-file" / "x"}


def _globals(prog: str, places: dict[str, Path], initialised: bool) -> list[str]:
    if prog == "boxcloud":
        return ["--home", str(places["home"] if initialised else places["under-file"])]
    state = places["state"] if initialised else places["nowhere"]
    config = ["--config", str(places["nowhere"] / "boxd.toml")]
    return ["--state-dir", str(state), *config] if prog == "boxd" else ["--state-dir", str(state)]


def _run(prog: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        status = COMMANDS[prog][1](argv)
    except SystemExit as e:  # argparse: usage errors and --help
        status = int(e.code or 0)
    err = capsys.readouterr().err
    return status, err


def _one_line(prog: str, argv: list[str], status: int, err: str) -> None:
    shown = f"{prog} {' '.join(argv)}: exit {status}, stderr {err!r}"
    assert status != 0, shown
    assert status != clikit.EXIT_BUG, shown  # an unexpected error is a bug, even said in one line
    assert "Traceback" not in err, shown
    assert len(err.strip().splitlines()) == 1, shown
    assert err.startswith(f"{prog}"), shown


@pytest.mark.parametrize(("prog", "path"), CASES, ids=[f"{p} {' '.join(s)}".strip() for p, s in CASES])
def test_bad_arguments_are_one_line_and_a_non_zero_exit(prog: str, path: tuple[str, ...], places: dict[str, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    parser = dict(_leaves(COMMANDS[prog][0]()))[path]
    # an option that does not exist
    argv = [*_globals(prog, places, True), *path, "--no-such-option"]
    status, err = _run(prog, argv, capsys)
    _one_line(prog, argv, status, err)
    assert status == clikit.EXIT_USAGE
    # nothing given, where nothing was set up: refused (missing arguments, or no cloud / Box here)
    argv = [*_globals(prog, places, False), *path]
    status, err = _run(prog, argv, capsys)
    _one_line(prog, argv, status, err)
    assert not places["nowhere"].exists(), f"{argv} created {places['nowhere']}"
    # hostile values where ids, files and hosts go, on a cloud and a state directory that exist
    positionals = _required_positionals(parser)
    if positionals:
        argv = [*_globals(prog, places, True), *path, *[HOSTILE] * len(positionals)]
        status, err = _run(prog, argv, capsys)
        _one_line(prog, argv, status, err)
    assert not places["nowhere"].exists()
    # a hostile value for each of its options that takes one (numbers, durations, choices, paths, hosts)
    filler = ["127.0.0.1"] * len(positionals)
    for action in _valued_options(parser):
        for value in (HOSTILE, "-1"):
            argv = [*_globals(prog, places, True), *path, *filler, action.option_strings[-1], value]
            status, err = _run(prog, argv, capsys)
            if status == 0 and value == "-1":
                continue  # free text ("--reason -1") is no bad argument
            _one_line(prog, argv, status, err)
            assert len(err) < 400, err  # one readable line, not a list of a thousand choices
    assert not places["nowhere"].exists()


def _valued_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.nargs != 0 and not a.required
            and not isinstance(a, argparse._HelpAction | argparse._VersionAction)]


def _process(*argv: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=60, **kw)  # type: ignore[call-overload, no-any-return]


@pytest.mark.parametrize("module", ["boxd.cli", "provisioning.cli", "cloud.cli"])
def test_version_and_help_with_exit_statuses(module: str) -> None:
    r = _process(module, "--version")
    assert r.returncode == 0 and r.stdout.strip().endswith(__import__("boxd").__version__)
    r = _process(module, "--help")
    assert r.returncode == 0 and "exit status:" in r.stdout and "examples:" in r.stdout


def test_output_into_a_closed_pipe_ends_quietly(places: dict[str, Path]) -> None:
    """`boxcloud box list --json | head -0`: the reader is gone before anything is written."""
    p = subprocess.Popen([sys.executable, "-m", "cloud.cli", "--home", str(places["home"]), "release", "list"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(60) == clikit.EXIT_PIPE and err == "", err
