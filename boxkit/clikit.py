"""What the three commands (`boxd`, `boxctl`, `boxcloud`) share in front of a person or a script.

- `Parser`: argparse whose usage errors are ONE line on stderr (``boxctl: unknown unit 'x'
  (see 'boxctl scan --help')``) with exit status 2, and whose every parser has `--help` with
  its examples and the command's exit statuses (`subcommand`).
- `run_main`: the outermost frame of a command: output piped into `head` ends quietly
  (no BrokenPipeError), Ctrl-C is one line and 130, and anything unexpected is one line and
  `EXIT_BUG` (70) rather than a traceback (the traceback is shown with ``<PROG>_TRACEBACK=1``:
  a bug to report, never an installer's problem).

Only the standard library: `boxctl` and `boxd` run on a small Box and import this at start.
It does not format tables or colours (the cloud does that with rich, `cloud._out`).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

EXIT_USAGE = 2
EXIT_BUG = 70  # EX_SOFTWARE: an error this program did not expect (a bug)
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141  # what a shell shows for a command ended by SIGPIPE


def count(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `lo` to `hi` (said in one short line when it is not)."""
    def parse(text: str) -> int:
        if not text.strip().isdigit() or not lo <= int(text) <= hi:
            raise argparse.ArgumentTypeError(f"not a number from {lo} to {hi}: {text!r}")
        return int(text)
    return parse


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line; subparsers are of the same class."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print ONE line (what is wrong, where to read more) and exit with status 2."""
        message = " ".join(message.split())
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def epilog(examples: Sequence[str], exits: str = "") -> str:
    """The end of a `--help`: examples, then the exit statuses."""
    text = "examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else ""
    if exits:
        text += ("\n\n" if text else "") + "exit status:\n" + exits
    return text


def subcommand(sub: argparse._SubParsersAction[Parser], name: str, help_: str, examples: Sequence[str], *,
               description: str | None = None, exits: str = "", aliases: Sequence[str] = ()) -> Parser:
    """A subcommand whose `--help` has its description, examples and exit statuses."""
    return sub.add_parser(name, help=help_, description=description or help_[:1].upper() + help_[1:] + ".",
                          epilog=epilog(examples, exits), aliases=list(aliases))


def run_main(prog: str, main: Callable[[], int]) -> int:
    """Run a command's `main` so that a person never meets a traceback (see the module's doc)."""
    try:
        status = main()
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # the reader (`head`, a pager) went away: stop quietly, and keep Python's exit-time
        # flush from failing once more on the closed pipe
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - the command's top: one line to the person, details on demand
        if os.environ.get(f"{prog.upper()}_TRACEBACK") == "1":
            traceback.print_exc()
        text = " ".join(str(e).split())[:300]
        print(f"{prog}: unexpected error ({type(e).__name__}: {text}); this is a bug, please report it "
              f"(details: {prog.upper()}_TRACEBACK=1)", file=sys.stderr)
        return EXIT_BUG
