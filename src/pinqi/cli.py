"""The ``pinqi`` command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def _demo(args: argparse.Namespace) -> None:
    from pinqi.demo import run_demo

    run_demo(args.out, size=args.size, acceleration=args.acceleration, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per task."""
    parser = argparse.ArgumentParser(
        prog="pinqi",
        description="PINQI: physics-informed, learned quantitative MRI reconstruction.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="simulate a small T1-mapping problem, run both optimization layers, write a PNG",
        description="Simulate undersampled multi-coil k-space of a head phantom, reconstruct "
        "images with the CG data-consistency layer, fit T1 with the signal-fit layer (newton "
        "and lbfgs), print what they did and write DIR/demo.png.",
    )
    demo.add_argument("--out", type=Path, default=Path("pinqi-demo"), help="output folder")
    demo.add_argument("--size", type=int, default=96, help="image size in pixels")
    demo.add_argument("--acceleration", type=float, default=4.0, help="undersampling factor")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``pinqi`` command line."""
    args = build_parser().parse_args(argv)
    args.run(args)
