"""`python -m ophora COMMAND ...`: one entry point, one module per command.

Each command lives in its own subpackage's ``cli.py`` with a ``main(argv) -> int``; it is imported only
when asked for, so `python -m ophora study ...` never pays for importing torch.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("ophora.generation.cli", "generate clips from instructions (one prompt or a CSV batch)"),
    "calibrate-magcache": ("ophora.generation.calibrate_cli",
                           "measure MagCache's ratios on a model once, so `--speed magcache` can be used with it"),
    "tiny": ("ophora.generation.tiny_cli", "build the tiny random-weight pipeline used for previews and tests"),
    "study": ("ophora.study.cli", "create, import, run and report blinded reader studies"),
    "curate": ("ophora.curation.cli", "run the curation pipeline over a manifest of narrated videos"),
    "train": ("ophora.training.cli", "pre-encode latents and run TPT / P2FT training stages"),
    "eval": ("ophora.eval.cli", "FID, FVD and CLIPScore of generated against real clips"),
}


def _usage() -> str:
    lines = ["usage: python -m ophora COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<18} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `python -m ophora COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
