"""`espresso demo` (work in progress)."""
import argparse


def add_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=None)


def cmd_demo(args: argparse.Namespace) -> int:
    raise SystemExit("not yet")
