"""`python -m ophora calibrate-magcache`: measure MagCache's magnitude ratios on a model and save them beside it.

Why a command: MagCache skips denoising steps by how much the transformer's output is known to change from
one step to the next, and that is a property of the weights: diffusers measures it with
``MagCacheConfig(calibrate=True)`` over one full clip. This runs that clip once (nothing is skipped, the clip
is discarded) and saves the ratios as ``magcache_ratios.json`` in the model (or fine-tuned transformer) folder;
after that ``--speed magcache`` works for this model, and is refused again if its weights change.

  python -m ophora calibrate-magcache --model models/Ophora
  python -m ophora calibrate-magcache --model tiny --steps 4
"""

from __future__ import annotations

import argparse
import sys

CALIBRATION_PROMPT = ("Inject balanced salt solution under the capsule rim with a cannula until a fluid wave frees "
                      "the nucleus.")


def build_parser() -> argparse.ArgumentParser:
    from ophora.generation.cli import add_model_arguments

    parser = argparse.ArgumentParser(prog="python -m ophora calibrate-magcache", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", default=CALIBRATION_PROMPT, help="the instruction of the calibration clip")
    parser.add_argument("--steps", type=int, default=50,
                        help="denoising steps of the calibration clip (50, the published setting; other step "
                             "counts reuse the ratios by interpolation)")
    parser.add_argument("--seed", type=int, default=12345)
    add_model_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ophora.generation.cli import load_options_from_args
    from ophora.generation.options import ModelLoadError
    from ophora.generation.preflight import preflight
    from ophora.generation.request import GenerationInputError, GenerationRequest

    args = build_parser().parse_args(argv)
    request = GenerationRequest(prompt=args.prompt, seed=args.seed, num_inference_steps=args.steps)
    options = load_options_from_args(args)
    try:
        _, _, request = preflight(options, request)  # a bad folder or step count is answered before loading
        from ophora.generation.loading import load_pipeline
        from ophora.generation.speed import calibrate_magcache

        loaded = load_pipeline(options)
        print(loaded.report, file=sys.stderr)
        path = calibrate_magcache(loaded, request)
    except (GenerationInputError, ModelLoadError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}: `--speed magcache` can now be used with this model")
    return 0
