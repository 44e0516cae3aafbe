"""`python -m ophora tiny --out DIR`: save the tiny random-weight pipeline (for tests, CI and previews)."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from ophora.generation.tiny import TINY_NOTICE, default_tiny_dir, save_tiny_pipeline

    parser = argparse.ArgumentParser(prog="python -m ophora tiny", description=__doc__)
    parser.add_argument("--out", type=Path, default=None, help=f"folder (default: {default_tiny_dir()})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = save_tiny_pipeline(args.out or default_tiny_dir(), seed=args.seed)
    print(f"saved {path}\n{TINY_NOTICE}")
    return 0
