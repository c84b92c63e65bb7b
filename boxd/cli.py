"""The `boxd` command: run the daemon, launch it from its software slot (`ota.launcher`), or
check a configuration file.

Errors an installer can fix (not provisioned, bad configuration) end with one
line on stderr and exit status 2; no traceback.
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

DEFAULT_STATE = Path("/var/lib/boxd")
DEFAULT_CONFIG = Path("/etc/boxd/boxd.toml")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="boxd", description="The Box supervisor daemon.")
    p.add_argument("--version", action="version", version=f"boxd {__version__}")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="identity, queue (default %(default)s)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="configuration file (default %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("run", help="run the daemon (the default)")
    sub.add_parser("launch", help="run the active software slot (A/B), roll back a new version that fails its "
                                  "trial; what systemd starts on a Box with updates (image/README.md)")
    c = sub.add_parser("check-config", help="validate a configuration file and exit")
    c.add_argument("file", type=Path, nargs="?", help="the file (default: --config)")
    return p


async def _run(state_dir: Path, config_path: Path) -> int:
    import asyncio

    from boxd import reconfig
    from boxd.daemon import Daemon

    try:
        probation_s = float(os.environ.get("BOXD_PROBATION_S", reconfig.DEFAULT_PROBATION_S))
    except ValueError:
        probation_s = reconfig.DEFAULT_PROBATION_S
    daemon = Daemon(state_dir, config_path, probation_s=max(0.1, probation_s),
                    reboot_command=os.environ.get("BOXD_REBOOT_COMMAND", "systemctl reboot"))

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await daemon.run()
    return daemon.exit_status


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `boxd` command."""
    args = _parser().parse_args(argv)
    if args.cmd == "check-config":
        from boxd import config  # pymodbus and the drivers: not for the launcher

        path = args.file or args.config
        try:
            cfg = config.load(path, args.state_dir / config.CACHE_FILE)
        except BoxdError as e:
            print(f"boxd: {e}", file=sys.stderr)
            return 2
        buses = len(cfg.modbus_tcp) + len(cfg.modbus_rtu) + len(cfg.bacnet)
        print(f"{path}: valid ({buses} bus(es): {len(cfg.modbus_tcp)} Modbus TCP, {len(cfg.modbus_rtu)} Modbus RTU, "
              f"{len(cfg.bacnet)} BACnet/IP; {cfg.point_count()} point(s))")
        return 0
    sdnotify.setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    if args.cmd == "launch":
        from ota import launcher

        return launcher.main(args.state_dir, args.config, args.verbose)
    try:
        import asyncio  # not for the launcher, which stays small: its memory is spent on every Box

        return asyncio.run(_run(args.state_dir, args.config))
    except BoxdError as e:
        logging.getLogger("boxd").error("%s", e)
        print(f"boxd: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
