"""The ``spnkit`` command line: ``spnkit draw``, ``spnkit fit``, ``spnkit inpaint``, ``spnkit classify``.

Each subcommand lives in its own module with ``add_parser(subparsers)``, which
registers the subcommand and sets ``func`` to the function that runs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser"]

#: modules that contribute subcommands
_COMMAND_MODULES = ("spnkit.commands.draw", "spnkit.commands.density")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spnkit", description="Sum-product networks: draw structures, fit densities, inpaint, classify.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_usage(sys.stderr)
        print("spnkit: error: choose a command", file=sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
