"""The `boxd` command: run the daemon, launch it from its software slot (`ota.launcher`: choose
the slot, then become its daemon), or check a configuration file.

Errors an installer can fix (not provisioned, bad configuration, another boxd on the same
state directory) end with one line on stderr (a configuration's problems each on a line of
their own) and exit status 2; no traceback. One daemon per state directory: `run` and
`launch` hold ``<state>/boxd.lock`` (a daemon its launcher exec'ed into keeps the launcher's
lock: `ota.launcher.inherited_lock`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from boxd import __version__, sdnotify
from boxd.errors import BoxdError
from boxkit import clikit
from boxkit.errors import AlreadyRunningError
from boxkit.files import pid_lock
from trust.errors import IdentityError, TrustError

DEFAULT_STATE = Path("/var/lib/boxd")
DEFAULT_CONFIG = Path("/etc/boxd/boxd.toml")
LOCK_FILE = "boxd.lock"
EXITS = """  0   stopped cleanly (run, launch); the file is valid (check-config)
  2   cannot start or not valid: bad arguments, not provisioned, configuration invalid,
      another boxd runs on this state directory
  75  (run) stopped to be started again: a restart command or an update (systemd restarts it)
  70  an unexpected error (a bug: please report it)"""


def _parser() -> argparse.ArgumentParser:
    p = clikit.Parser(prog="boxd", description="The Box supervisor daemon: reads the field buses, publishes to the "
                                               "platform over MQTT with mutual TLS, takes configurations, commands "
                                               "and updates.",
                      epilog=clikit.epilog(["boxd launch                      # what systemd starts on a Box",
                                            "boxd --state-dir demo-data/box --config demo-data/box/boxd.toml run",
                                            "boxd check-config /etc/boxd/boxd.toml"], EXITS))
    p.add_argument("--version", action="version", version=f"boxd {__version__}")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="identity, queue (default %(default)s)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="configuration file (default %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    clikit.subcommand(sub, "run", "run the daemon (the default)", ["boxd --state-dir /var/lib/boxd run"],
                      exits=EXITS)
    clikit.subcommand(sub, "launch", "run the active software slot (A/B), roll back a new version that fails its "
                                     "trial; what systemd starts on a Box with updates (image/README.md)",
                      ["boxd launch", "boxd --state-dir demo-data/box --config demo-data/box/boxd.toml launch"],
                      exits=EXITS)
    c = clikit.subcommand(sub, "check-config", "validate a configuration file and exit (every problem, each with "
                                               "where it is)",
                          ["boxd check-config /etc/boxd/boxd.toml", "boxd --config new.toml check-config"],
                          exits="  0   valid\n  2   not valid (every problem is listed) or unreadable")
    c.add_argument("file", type=Path, nargs="?", help="the file (default: --config)")
    return p


def _check_config(path: Path, state_dir: Path) -> int:
    import boxconfig as config  # pymodbus and the drivers: not for the launcher

    try:
        cfg = config.load(path, state_dir / config.CACHE_FILE if state_dir.is_dir() else None)
    except config.ConfigError as e:
        reasons = config.file_problems(path) or [str(e)]
        if len(reasons) == 1:
            print(f"boxd: {reasons[0] if str(path) in reasons[0] else f'{path}: {reasons[0]}'}", file=sys.stderr)
        else:
            print(f"boxd: {path}: {len(reasons)} problems:", file=sys.stderr)
            for r in reasons:
                print(f"  - {r}", file=sys.stderr)
        return 2
    buses = len(cfg.modbus_tcp) + len(cfg.modbus_rtu) + len(cfg.bacnet)
    print(f"{path}: valid ({buses} bus(es): {len(cfg.modbus_tcp)} Modbus TCP, {len(cfg.modbus_rtu)} Modbus RTU, "
          f"{len(cfg.bacnet)} BACnet/IP; {cfg.point_count()} point(s))")
    if not cfg.point_count():
        print("note: no points: boxd would read nothing (a Box waits like this for its first configuration)")
    return 0


def _lock(state_dir: Path) -> int:
    """One daemon per state directory: the lock's descriptor (the launcher's, inherited across its exec).

    Raises:
        IdentityError: no state directory (not provisioned).
        BoxdError: another boxd holds it.
    """
    if not state_dir.is_dir():
        raise IdentityError(f"this Box is not provisioned (no {state_dir}); run 'boxctl provision' "
                            "(or give --state-dir)")
    path = state_dir / LOCK_FILE
    from ota.launcher import inherited_lock

    inherited = inherited_lock(path)
    if inherited is not None:
        return inherited
    try:
        return pid_lock(path)
    except AlreadyRunningError as e:
        raise BoxdError(f"boxd is already running on {state_dir} (pid {e.pid or '?'}); one daemon per state "
                        "directory: stop it first (systemctl stop boxd)") from None
    except OSError as e:
        raise BoxdError(f"cannot lock {path}: {e.strerror}") from None


async def _run(state_dir: Path, config_path: Path) -> int:
    import asyncio

    from boxd import reconfig
    from boxd.daemon import Daemon

    try:
        probation_s = float(os.environ.get("BOXD_PROBATION_S", reconfig.DEFAULT_PROBATION_S))
    except ValueError:
        probation_s = reconfig.DEFAULT_PROBATION_S
    from ota import image

    daemon = Daemon(state_dir, config_path, probation_s=max(0.1, probation_s),
                    reboot_command=os.environ.get("BOXD_REBOOT_COMMAND", ""), release=image.release_version())

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await daemon.run()
    return daemon.exit_status


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "check-config":
        return _check_config(args.file or args.config, args.state_dir)
    try:
        lock = _lock(args.state_dir)  # held for the process's life (and across the launcher's exec)
    except (BoxdError, TrustError) as e:
        print(f"boxd: {e}", file=sys.stderr)
        return _last_words(2, str(e))
    sdnotify.setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    if args.cmd == "launch":
        from ota import launcher

        return launcher.main(args.state_dir, args.config, args.verbose, lock)
    import asyncio  # not for the launcher, which stays small: its memory is spent on every Box

    from boxconfig.errors import ConfigError

    try:
        return asyncio.run(_run(args.state_dir, args.config))
    except (BoxdError, TrustError, ConfigError) as e:
        if os.environ.get("JOURNAL_STREAM"):  # under systemd: in the journal with the daemon's other lines
            logging.getLogger("boxd").error("%s", e)
        print(f"boxd: {e}", file=sys.stderr)
        return _last_words(2, str(e))


def _last_words(status: int, words: str = "") -> int:
    """A daemon of `boxd launch` tells the next launch how it ended (its trial's outcome: `ota.launcher`)."""
    slot = os.environ.get("BOXD_SLOT", "")
    if os.environ.get("BOXD_LAUNCHED") == "1" and slot and os.environ.get("BOXD_SOFTWARE_DIR"):
        from ota import launcher

        launcher.note_exit(Path(os.environ["BOXD_SOFTWARE_DIR"]), slot, status, f"boxd: {words}" if words else "")
    return status


def _main_noted(argv: list[str] | None) -> int:
    try:
        return _last_words(_main(argv))
    except Exception as e:  # clikit prints it (status 70); the trial hears of it first
        _last_words(clikit.EXIT_BUG, f"unexpected error ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
        raise


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `boxd` command."""
    return clikit.run_main("boxd", lambda: _main_noted(argv))


if __name__ == "__main__":
    sys.exit(main())
