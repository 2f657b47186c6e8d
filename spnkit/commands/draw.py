"""``spnkit draw``: draw a region graph, a compiled circuit or a saved model.

See :data:`EPILOG` (the ``--help`` text) for examples, and docs/visualization.md.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

__all__ = ["add_parser", "EPILOG"]

EPILOG = """examples:
  spnkit draw random --num-vars 16 --depth 2 --repetitions 2 -o rg.svg
  spnkit draw poon-domingos --height 8 --width 8 --delta 4 -o pd.png
  spnkit draw quad-tree --height 8 --width 8 --depth 2 -o qt.svg
  spnkit draw random --num-vars 8 --depth 2 --circuit --num-sums 2 --num-leaves 2 --level node -o spn.svg
  spnkit draw model model.spn -o model.svg --summary
  spnkit draw model model.spn --level node --node-limit 150 -o nodes.svg

The format follows the suffix of -o (.svg .png .pdf .dot). Circuits are drawn
with what their parameters say: sum weights, how much each region entry is
used, and means (thumbnails of image-shaped circuits). A circuit with more
nodes than --max-nodes is drawn collapsed to its --node-limit most used nodes.
Without Graphviz's dot program, the DOT source and a matplotlib drawing are
written instead, with one message saying so.
"""

_LEAVES = ("normal", "bernoulli", "categorical")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``draw`` and its structure subcommands; each sets ``func``."""
    output = argparse.ArgumentParser(add_help=False)
    g = output.add_argument_group("output")
    g.add_argument("-o", "--output", required=True, type=Path, help="file to write; format from the suffix: .svg .png .pdf .dot")
    g.add_argument("--max-nodes", type=_int_at_least(0), default=2000,
                   help="region graphs with more nodes are refused, circuits drawn collapsed to their --node-limit most used nodes "
                        "(0: no limit; default 2000)")
    g.add_argument("--level", choices=("auto", "node", "region"), default="auto",
                   help="circuit drawing: every node, or one box per region vector; auto picks node level up to --node-limit nodes")
    g.add_argument("--node-limit", type=_int_at_least(1), default=300,
                   help="largest circuit drawn at node level by --level auto, and the nodes a collapsed drawing keeps (default 300)")
    g.add_argument("--root", type=_int_at_least(0), default=None,
                   help="circuits with several root sums: the class whose use and means to show (default: all, uniformly)")
    g.add_argument("--summary", action="store_true", help="also print the circuit's layer table (spn.summary())")
    g.add_argument("--thumbnails", action=argparse.BooleanOptionalAction, default=None,
                   help="image structures: draw the pixels each region covers, or a circuit region's mean (default: automatic)")

    circuit = argparse.ArgumentParser(add_help=False)
    c = circuit.add_argument_group("circuit")
    c.add_argument("--circuit", action="store_true", help="compile the structure into an SPN and draw the circuit")
    c.add_argument("--leaf", choices=_LEAVES, default="normal", help="leaf family (default normal)")
    c.add_argument("--num-categories", type=_int_at_least(2), default=2, help="categories of categorical leaves (default 2)")
    c.add_argument("--num-sums", type=_int_at_least(1), default=2, help="sums per inner region (default 2)")
    c.add_argument("--num-leaves", type=_int_at_least(1), default=2, help="leaf distributions per leaf region (default 2)")
    c.add_argument("--num-classes", type=_int_at_least(1), default=1, help="root sums (default 1)")
    c.add_argument("--seed", type=int, default=0, help="seed of random structures and of the circuit's initial weights (default 0)")

    p = subparsers.add_parser("draw", help="draw a region graph, circuit or saved model",
                              description="Draw a region graph, a compiled circuit or a saved model.",
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = p.add_subparsers(dest="structure", metavar="{random,poon-domingos,quad-tree,model}")
    p.set_defaults(func=partial(_missing_structure, p))

    r = sub.add_parser("random", parents=[circuit, output], help="RAT-SPN random binary trees")
    r.add_argument("--num-vars", type=_int_at_least(2), required=True)
    r.add_argument("--depth", type=_int_at_least(1), required=True)
    r.add_argument("--repetitions", type=_int_at_least(1), default=1)
    r.set_defaults(func=partial(_run_structure, r, _random))

    pd = sub.add_parser("poon-domingos", parents=[circuit, output], help="Poon-Domingos rectangles over an image")
    pd.add_argument("--height", type=_int_at_least(1), required=True)
    pd.add_argument("--width", type=_int_at_least(1), required=True)
    pd.add_argument("--delta", type=_int_at_least(1), nargs="+", default=[4], metavar="DELTA",
                    help="cut spacing: one int, or two (rows, columns)")
    pd.add_argument("--channels", type=_int_at_least(1), default=1)
    pd.add_argument("--max-depth", type=_int_at_least(1), default=None)
    pd.set_defaults(func=partial(_run_structure, pd, _poon_domingos))

    q = sub.add_parser("quad-tree", parents=[circuit, output], help="quad tree over an image, binary products")
    q.add_argument("--height", type=_int_at_least(1), required=True)
    q.add_argument("--width", type=_int_at_least(1), required=True)
    q.add_argument("--channels", type=_int_at_least(1), default=1)
    q.add_argument("--depth", type=_int_at_least(1), default=None, help="quad levels (default: down to single pixels)")
    q.set_defaults(func=partial(_run_structure, q, _quad_tree))

    m = sub.add_parser("model", parents=[output], help="a model saved by spnkit.save")
    m.add_argument("file", type=Path, help="the saved model")
    m.set_defaults(func=partial(_run_model, m))
    return p


# ----------------------------------------------------------------- builders
def _random(args: argparse.Namespace):
    from spnkit import RegionGraph

    return RegionGraph.random(args.num_vars, args.depth, args.repetitions, seed=args.seed)


def _poon_domingos(args: argparse.Namespace):
    from spnkit import RegionGraph

    if len(args.delta) > 2:
        raise ValueError(f"--delta takes one or two integers, got {len(args.delta)}")
    delta = args.delta[0] if len(args.delta) == 1 else tuple(args.delta)
    return RegionGraph.poon_domingos(args.height, args.width, delta, channels=args.channels, max_depth=args.max_depth)


def _quad_tree(args: argparse.Namespace):
    from spnkit import RegionGraph

    return RegionGraph.quad_tree(args.height, args.width, channels=args.channels, depth=args.depth)


def _leaf(args: argparse.Namespace):
    import spnkit

    if args.leaf == "categorical":
        return spnkit.Categorical(args.num_categories)
    return spnkit.Bernoulli() if args.leaf == "bernoulli" else spnkit.Normal()


# ------------------------------------------------------------------ running
def _fail(parser: argparse.ArgumentParser, message: str) -> int:
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return 2


def _missing_structure(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    return _fail(parser, "choose what to draw: random, poon-domingos, quad-tree or model")


def _run_structure(parser: argparse.ArgumentParser, build: Callable, args: argparse.Namespace) -> int:
    if not args.circuit:
        for flag, used in (("--level", args.level != "auto"), ("--summary", args.summary), ("--root", args.root is not None)):
            if used:
                return _fail(parser, f"{flag} applies to circuits; add --circuit")
    try:
        rg = build(args)
        obj = rg
        if args.circuit:
            import torch

            import spnkit

            torch.manual_seed(args.seed)  # reproducible initial weights, hence reproducible drawings
            obj = spnkit.SPN(rg, leaf=_leaf(args), num_sums=args.num_sums, num_leaves=args.num_leaves, num_classes=args.num_classes)
    except ValueError as err:  # invalid structure parameters
        return _fail(parser, str(err))
    return _draw(parser, obj, args)


def _run_model(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import spnkit

    load = getattr(spnkit, "load", None)
    if load is None:
        print(f"{parser.prog}: this version of spnkit has no spnkit.load, so it cannot read {args.file}", file=sys.stderr)
        return 1
    if not args.file.is_file():
        return _fail(parser, f"no such file: {args.file}")
    try:
        obj = load(args.file)
    except (ValueError, OSError, RuntimeError) as err:
        return _fail(parser, f"cannot load {args.file}: {err}")
    if not isinstance(obj, (spnkit.SPN, spnkit.RegionGraph)):
        return _fail(parser, f"{args.file} holds a {type(obj).__name__}, not an SPN or region graph")
    return _draw(parser, obj, args)


def _draw(parser: argparse.ArgumentParser, obj, args: argparse.Namespace) -> int:
    import spnkit
    from spnkit.viz import draw

    if args.summary and isinstance(obj, spnkit.SPN):
        print(obj.summary())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the one message below replaces any library warning
            result = draw(
                obj,
                args.output,
                level=args.level,
                thumbnails=args.thumbnails,
                node_limit=args.node_limit,
                max_nodes=args.max_nodes or None,
                root=args.root if isinstance(obj, spnkit.SPN) else None,
            )
    except ValueError as err:
        return _fail(parser, str(err))
    except RuntimeError as err:  # Graphviz itself failed
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    if result.fallback:
        print(f"{parser.prog}: note: {result.message}", file=sys.stderr)
    else:
        what = result.level if result.level == "region graph" else f"circuit, {result.level} level"
        if result.collapsed:
            what += f", collapsed: {result.collapsed:,} nodes not drawn"
        print(f"wrote {result.files[0]} ({what})")
    return 0
