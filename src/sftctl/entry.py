"""The console script's entry point. It imports nothing heavy before it can handle Ctrl-C:
an interrupt while Python loads the CLI ends sftctl quietly with 130, as one during a
command does."""

import sys


def main() -> None:
    try:
        from sftctl.cli import main as cli_main
    except KeyboardInterrupt:
        sys.exit(130)
    cli_main()
