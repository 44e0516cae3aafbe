"""`python -m ophora generate`: one clip from an instruction, or a batch from a prompt CSV.

Examples:
  python -m ophora generate "Inject balanced salt solution under the capsule rim" --out clip.mp4
  python -m ophora generate --phase hydrodissection --seed 7 --out hydro.mp4
  python -m ophora generate "..." --model tiny --seed 7 --steps 2 --frames 9 --out clip.mp4
  python -m ophora generate --csv prompts.csv --out-dir clips/        (resumable)
  accelerate launch -m ophora generate --csv prompts.csv --out-dir clips/   (one process per GPU)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ophora.generation.options import (DEFAULT_MODEL, MEMORY_MODES, PRECISIONS, QUANTIZATIONS, SCHEDULERS, SPEEDS,
                                       THRESHOLD_SPEEDS)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Model-loading flags shared by the CLI, the app's launcher and the benchmarks."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=DEFAULT_MODEL,
                       help=f"hub id, local pipeline folder, or 'tiny' (random weights, for trying things out); "
                            f"default {DEFAULT_MODEL}")
    group.add_argument("--transformer", help="fine-tuned transformer folder to use instead of the model's own")
    group.add_argument("--revision", help="hub branch, tag or commit of --model")
    group.add_argument("--precision", choices=PRECISIONS, default="auto")
    group.add_argument("--quantization", choices=QUANTIZATIONS, default="auto",
                       help="int8: bitsandbytes on CUDA, optimum-quanto on CPU; auto picks from GPU memory")
    group.add_argument("--memory", choices=MEMORY_MODES, default="auto", help="CPU offload mode")
    group.add_argument("--scheduler", choices=SCHEDULERS, default="dpm",
                       help="dpm: the published sampler (CogVideoXDPMScheduler, trailing); checkpoint: as saved")
    group.add_argument("--device", help="cuda, cuda:1 or cpu (default: CUDA if available)")
    group.add_argument("--no-vae-slicing", action="store_true")
    group.add_argument("--no-vae-tiling", action="store_true")
    group.add_argument("--local-files-only", action="store_true", help="never contact the model hub")
    group.add_argument("--deterministic", action="store_true",
                       help="torch deterministic algorithms and cuDNN: the same clip on the same GPU and software "
                            "every time (slower). A seed alone fixes the initial noise, not GPU kernels")


def load_options_from_args(args: argparse.Namespace, device: str | None = None):
    from ophora.generation.options import LoadOptions

    return LoadOptions(model=args.model, transformer=args.transformer, revision=args.revision,
                       precision=args.precision, quantization=args.quantization, memory=args.memory,
                       scheduler=args.scheduler, vae_slicing=not args.no_vae_slicing,
                       vae_tiling=not args.no_vae_tiling, device=device or args.device,
                       local_files_only=args.local_files_only, deterministic=args.deterministic)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ophora generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="?", help="the surgical instruction to show")
    parser.add_argument("--phase", help="use the team's template for this phase (see assets/phases.yaml)")
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--seed", type=int, default=12345,
                        help="fixes the initial noise (drawn on the CPU, the same on every machine); GPU kernels "
                             "can still differ in the last bits between machines (see --deterministic)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=6.0)
    parser.add_argument("--no-dynamic-cfg", action="store_true", help="constant guidance instead of dynamic CFG")
    parser.add_argument("--frames", type=int, help="8N+1, at most 49 (leave out for the model's native 49)")
    parser.add_argument("--height", type=int, help="multiple of 16 (leave out for the model's native 480)")
    parser.add_argument("--width", type=int, help="multiple of 16 (leave out for the model's native 720)")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--speed", choices=SPEEDS, default="exact",
                        help="exact: the published sampler (default). The others reuse work between denoising steps "
                             "through diffusers' caches: faster, and a little different from the exact clip "
                             "(measured in docs/gpu.md); magcache needs `python -m ophora calibrate-magcache` once")
    parser.add_argument("--speed-threshold", type=float,
                        help=f"{' and '.join(THRESHOLD_SPEEDS)} only: skip a step when it changes less than this "
                             f"(defaults 0.05 and 0.06; higher is faster and further from exact)")
    parser.add_argument("--no-mark", action="store_true",
                        help="no visible SYNTHETIC corner label (the metadata still says synthetic); "
                             "use for clips that feed metrics such as FID/FVD")
    parser.add_argument("--out", type=Path, help="output MP4 for a single clip (its sidecar is <out>.json)")
    batch = parser.add_argument_group("batch")
    batch.add_argument("--csv", type=Path, help="prompt CSV in the Ophora sampler format")
    batch.add_argument("--out-dir", type=Path, help="folder for the batch's clips and manifest.csv")
    batch.add_argument("--prompt-column", default="caption prompt")
    batch.add_argument("--id-column", default="clip id")
    batch.add_argument("--overwrite", action="store_true", help="replace clips made with other settings")
    add_model_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def _request_from_args(args: argparse.Namespace, prompt: str):
    from ophora.generation.request import GenerationRequest

    return GenerationRequest(prompt=prompt, negative_prompt=args.negative_prompt, seed=args.seed,
                             num_inference_steps=args.steps, guidance_scale=args.guidance,
                             use_dynamic_cfg=not args.no_dynamic_cfg, num_frames=args.frames,
                             height=args.height, width=args.width, fps=args.fps, speed=args.speed,
                             speed_threshold=args.speed_threshold)


def _resolve_prompt(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    from ophora.vocabulary import find_phase, load_phases

    if args.prompt:
        return args.prompt
    if args.phase:
        phase = find_phase(args.phase)
        if phase is None:
            parser.error(f"unknown phase {args.phase!r}; known: {', '.join(p.id for p in load_phases())}")
        return phase.templates[0]
    parser.error("give an instruction (PROMPT), --phase, or --csv for a batch")
    raise AssertionError  # parser.error exits


def _run_single(args, parser) -> int:
    from ophora.generation.preflight import check_output_file, preflight
    from ophora.generation.speed import check_speed_before_load

    if args.out is None:
        parser.error("--out FILE.mp4 is required for a single clip")
    request = _request_from_args(args, _resolve_prompt(args, parser))
    options = load_options_from_args(args)
    check_output_file(args.out)  # before anything loads: an unwritable --out must not cost a generation
    _, _, request = preflight(options, request)
    check_speed_before_load(options, request)

    from tqdm import tqdm

    from ophora.generation.engine import generate, resolve_request, validate_request
    from ophora.generation.loading import load_pipeline
    from ophora.generation.video import write_clip

    loaded = load_pipeline(options)
    print(loaded.report, file=sys.stderr)
    # Before the first step (a long instruction is cut at 226 T5 tokens): the user can stop and shorten it.
    request = resolve_request(loaded, request)  # native sizes of a hub model that was not in the cache
    for warning in validate_request(loaded, request):
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    with tqdm(total=request.num_inference_steps, desc="denoising", unit="step") as bar:
        def on_step(p):
            bar.update(p.step - bar.n)
            bar.set_postfix_str(f"ETA {p.eta_s:.0f}s" if p.eta_s is not None else "")
        result = generate(loaded, request, progress=on_step)
    path = write_clip(result.frames, args.out, fps=result.request.fps, provenance=result.provenance,
                      synthetic_mark=not args.no_mark)
    print(f"wrote {path} and {path.with_suffix('.json')} ({result.seconds:.1f} s)")
    return 0


def _run_batch(args, parser) -> int:
    from ophora.generation.batch import read_prompt_csv
    from ophora.generation.preflight import check_output_folder, preflight
    from ophora.generation.speed import check_speed_before_load

    if args.out_dir is None:
        parser.error("--out-dir is required with --csv")
    items = read_prompt_csv(args.csv, prompt_column=args.prompt_column, id_column=args.id_column)
    check_output_folder(args.out_dir, "--out-dir")
    preflight(load_options_from_args(args), _request_from_args(args, items[0].prompt))
    check_speed_before_load(load_options_from_args(args), _request_from_args(args, items[0].prompt))

    import torch
    from accelerate import PartialState
    from tqdm import tqdm

    from ophora.generation.batch import run_batch, write_manifest
    from ophora.generation.loading import load_pipeline

    # One process per GPU under `accelerate launch` / torchrun (several CPU processes where there is no GPU).
    state = PartialState(cpu=not torch.cuda.is_available() or args.device == "cpu")
    device = str(state.device) if state.num_processes > 1 and state.device.type == "cuda" else None
    loaded = load_pipeline(load_options_from_args(args, device=device))
    if state.is_main_process:
        print(loaded.report, file=sys.stderr)
    mine = len(items[state.process_index::state.num_processes])
    with tqdm(total=mine, desc=f"clips (process {state.process_index})", unit="clip",
              disable=not state.is_local_main_process) as bar:
        status = run_batch(loaded, items, args.out_dir, _request_from_args(args, "placeholder"),
                           synthetic_mark=not args.no_mark, overwrite=args.overwrite,
                           on_clip=lambda item, s: (bar.update(1), bar.set_postfix_str(f"{item.clip_id}: {s[:40]}")),
                           process_index=state.process_index, num_processes=state.num_processes)
    state.wait_for_everyone()
    failed = [clip for clip, s in status.items() if s.startswith("failed")]
    if state.is_main_process:
        manifest = write_manifest(items, args.out_dir)
        counts = {k: sum(1 for s in status.values() if s.startswith(k)) for k in ("done", "skipped", "failed")}
        print(f"wrote {manifest}: {counts['done']} generated, {counts['skipped']} already done, "
              f"{counts['failed']} failed (this process)")
    for clip in failed:
        print(f"failed: {clip}: {status[clip]}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    from ophora.generation.batch import BatchInputError
    from ophora.generation.options import ModelLoadError
    from ophora.generation.request import GenerationInputError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return _run_batch(args, parser) if args.csv else _run_single(args, parser)
    except (GenerationInputError, BatchInputError, ModelLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
