"""The ``spnkit`` command line: ``spnkit draw``, and the subcommands of installed applications.

``draw`` is the library's own. Applications add subcommands through the
entry-point group ``spnkit.commands``: each entry point names a function
``add_parsers(subparsers)`` that registers its subcommands and sets ``func``
on each (the ``spnkit-mnist`` application adds ``fit``, ``inpaint`` and
``classify``).
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from .commands import draw

__all__ = ["main", "build_parser", "ENTRY_POINT_GROUP"]

#: entry-point group through which installed applications add subcommands
ENTRY_POINT_GROUP = "spnkit.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spnkit", description="Sum-product networks: draw structures and circuits; "
                                     "installed applications add their own commands.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    draw.add_parser(sub)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        ep.load()(sub)
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
